"""Optimizers with PyTorch's update rules, updating parameters in place.

Each update is one call into ``minigrad.kernels``: NumPy's expressions on the
CPU, one fused kernel per parameter on CuPy. Everything an update reads or
writes stays where it is (parameters, moments, Adam's step count on the
device), so a training step can be captured as a CUDA graph and replayed
(``minigrad.cuda_graph``).
"""
from __future__ import annotations

import warnings

import numpy as np

from . import checks, kernels, profiler
from .errors import ArgumentError, DTypeError, MinigradError
from .tensor import Tensor


class Optimizer:
    """Base class: holds the parameter list and per-parameter state."""

    def __init__(self, params, lr):
        self.params = _parameter_list(params, type(self).__name__)
        if not self.params:
            raise MinigradError(f"{type(self).__name__}: got an empty parameter list; pass model.parameters()")
        self.lr = checks.real(lr, type(self).__name__, "lr", 0.0, low_open=True)
        self.state: dict = {}   # id(param) -> dict of arrays

    def zero_grad(self):
        """Forget every parameter's gradient (the next backward assigns fresh ones)."""
        for p in self.params:
            p.grad = None

    def _gradients(self):
        """(parameter, gradient array) for each parameter that has a gradient."""
        for p in self.params:
            if p.grad is not None:
                yield p, p.grad.data

    @staticmethod
    def _updated(p):
        """Tell the tape that ``p`` changed in place (arrays saved from it are now out of date)."""
        p._set_data(p._data)

    def step(self):
        raise NotImplementedError


def _parameter_list(params, where):
    """The parameters as a list, each once (in first-seen order): a parameter listed twice is stepped once."""
    if isinstance(params, Tensor) or not hasattr(params, "__iter__"):
        raise ArgumentError(f"{where}: params must be an iterable of tensors, got {type(params).__name__}; "
                            f"pass model.parameters() or a list such as [w, b]")
    out, seen = [], set()
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ArgumentError(f"{where}: params[{i}] is a {type(p).__name__}, not a Tensor; pass "
                                "model.parameters() or a list of tensors")
        if p.dtype.kind != "f":
            raise DTypeError(f"{where}: params[{i}] has dtype {p.dtype}; only floating tensors can be optimized")
        if not p.is_leaf:
            raise ArgumentError(f"{where}: params[{i}] was computed by an op, not a leaf; an optimizer updates "
                                "leaves (parameters, or tensors made with requires_grad=True)")
        if id(p) in seen:
            warnings.warn(f"{where}: params[{i}] is listed more than once; it is updated once per step",
                          stacklevel=3)
            continue
        seen.add(id(p))
        out.append(p)
    return out


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and weight decay (PyTorch's formulas).

    g ← grad + weight_decay·p; with momentum: buf ← momentum·buf + g (buf = g on the
    first step); p ← p − lr·buf (or g without momentum).
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        checks.real(momentum, "SGD", "momentum", 0.0)
        checks.real(weight_decay, "SGD", "weight_decay", 0.0)
        self.momentum, self.weight_decay = momentum, weight_decay

    def step(self):
        """Update every parameter that has a gradient."""
        for p, g in self._gradients():
            st = self.state.get(id(p)) if self.momentum else None
            if self.momentum and st is None:   # the first step: the buffer starts as the (decayed) gradient
                buf = profiler.track((g + self.weight_decay * p.data if self.weight_decay else g).copy())
                self.state[id(p)] = {"momentum_buffer": buf}
                kernels.sgd_(p.data, buf, None, self.lr, 0.0, 0.0)
            else:
                kernels.sgd_(p.data, g, None if st is None else st["momentum_buffer"], self.lr, self.momentum,
                             self.weight_decay)
            self._updated(p)


class Adam(Optimizer):
    """Adam (Kingma & Ba), computed in the same order as PyTorch's single-tensor Adam."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ArgumentError(f"Adam: betas must be a pair (beta1, beta2) in [0, 1), got {betas!r}; "
                                "pass e.g. betas=(0.9, 0.999)")
        for i, b in enumerate(betas):
            checks.real(b, "Adam", f"betas[{i}]", 0.0, 1.0, high_open=True)
        checks.real(eps, "Adam", "eps", 0.0)
        checks.real(weight_decay, "Adam", "weight_decay", 0.0)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def step(self):
        """Update every parameter that has a gradient.

        The step count is a Python int for NumPy parameters and a one-element device
        array for CuPy ones, counted on the device (Note [Adam's step count on the
        device] in ``minigrad.kernels``).
        """
        for p, g in self._gradients():
            st = self.state.get(id(p))
            if st is None:
                xp = p.device.xp
                st = self.state[id(p)] = {"step": 0 if xp is np else profiler.track(xp.zeros(1, np.int64)),
                                          "exp_avg": profiler.track(xp.zeros_like(p.data)),
                                          "exp_avg_sq": profiler.track(xp.zeros_like(p.data))}
            st["step"] += 1
            kernels.adam_(p.data, g, st["exp_avg"], st["exp_avg_sq"], st["step"], self.lr, self.betas, self.eps,
                          self.weight_decay)
            self._updated(p)
