"""Module and Parameter: containers that find their parameters and buffers by attribute."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..backend import device as _device, is_array, to_device, xp_of
from ..errors import ArgumentError, DeviceError, DTypeError, ShapeError, StateDictError
from ..tensor import Tensor, tensor


class Parameter(Tensor):
    """A leaf tensor that a Module owns and an optimizer updates (``requires_grad=True``)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        t = data if isinstance(data, Tensor) else tensor(data)
        if requires_grad and t.dtype.kind != "f":
            raise DTypeError(f"Parameter: only floating tensors can have gradients, this one is {t.dtype}; "
                             "convert it (np.asarray(data, dtype=np.float32)) or pass requires_grad=False")
        self._data, self.grad, self.requires_grad = t.data, None, requires_grad
        self._node, self._idx, self._device = None, 0, t.device

    def __repr__(self):
        return "Parameter(" + super().__repr__()[len("tensor("):]


class Module:
    """Base class of layers and models: subclass it, set parameters/sub-modules as attributes, define forward."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- attribute registration -------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for table in ("_parameters", "_modules", "_buffers"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def register_buffer(self, name, value):
        """Register state that is saved and moved with the module but is not a parameter."""
        if not isinstance(name, str) or not (value is None or isinstance(value, Tensor)):
            raise StateDictError(f"register_buffer: needs a name (str) and a Tensor or None, got {name!r} and "
                                 f"{type(value).__name__}; wrap data with mg.tensor(...)")
        self._buffers[name] = value

    # --- traversal ----------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(name, module) for this module and every sub-module, depth first."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = list(m._modules.items())
            for child_name, child in reversed(children):
                stack.append((f"{name}.{child_name}" if name else child_name, child))

    def modules(self):
        """This module and every sub-module."""
        return [m for _, m in self.named_modules()]

    def children(self):
        """The direct sub-modules."""
        return list(self._modules.values())

    def named_parameters(self):
        """(dotted name, Parameter) for every parameter, each once."""
        seen = set()
        for prefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        """Every parameter, each once (a list, ready for an optimizer)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        """(dotted name, tensor) for every buffer."""
        for prefix, m in self.named_modules():
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{prefix}.{name}" if prefix else name), b

    def buffers(self):
        """Every buffer (running statistics and the like)."""
        return [b for _, b in self.named_buffers()]

    # --- modes and state ----------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout active, BatchNorm uses and updates batch statistics)."""
        if not isinstance(mode, bool):
            raise ArgumentError(f"train: mode must be True or False, got {mode!r}; use model.eval() for False")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def zero_grad(self):
        """Forget every parameter's gradient."""
        for p in self.parameters():
            p.grad = None

    def to(self, device):
        """Move parameters and buffers to ``device`` in place (parameters keep their identity)."""
        dev = _device(device)
        for p in self.parameters():
            p._set_data(to_device(p.data, dev), dev)
            if p.grad is not None:
                p.grad = p.grad.to(dev)
        for b in self.buffers():
            b._set_data(to_device(b.data, dev), dev)
        return self

    def state_dict(self):
        """An ordered {name: array copy} of every parameter and buffer."""
        out = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = p.data.copy()
        for name, b in self.named_buffers():
            out[name] = b.data.copy()
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays (or tensors, lists, numbers) from ``state`` into parameters and buffers.

        Shapes must match; a cast that would lose values (complex to real, 2.7 into an integer) is refused.
        """
        if not hasattr(state, "keys"):
            raise StateDictError(f"load_state_dict: expects a dict of name -> array such as state_dict() returns, "
                                 f"got {type(state).__name__}")
        own = OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise StateDictError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}; "
                                 "load a state dict saved from the same architecture, or pass strict=False")
        for name, t in own.items():
            if name not in state:
                continue
            value = _state_value(name, state[name], t.dtype)
            if tuple(value.shape) != t.shape:
                raise ShapeError(f"load_state_dict: {name!r} has shape {t.shape} here but {tuple(value.shape)} "
                                 "in the state dict")
            t._set_data(to_device(value, t.device).astype(t.dtype, copy=True))
        return self

    # --- calling ------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


def _state_value(name, value, dtype):
    """A state-dict entry as an array, refusing data that would not survive the cast to ``dtype``."""
    value = value.data if isinstance(value, Tensor) else value
    if not is_array(value):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise DTypeError(f"load_state_dict: {name!r} cannot become an array ({exc}); pass an array, a "
                             "tensor, a list of numbers or a number") from None
    kind = value.dtype.kind
    if kind not in "biufc":
        raise DTypeError(f"load_state_dict: {name!r} holds {value.dtype} data, not numbers; pass an array, a "
                         "tensor, a list of numbers or a number")
    if kind == "c" and dtype.kind != "c":
        lost = "the imaginary part"
    elif kind == "f" and dtype.kind in "biu" and not bool(xp_of(value).isfinite(value).all()
                                                          and (value == value.round()).all()):
        lost = "the fractional part (or a nan or inf)"
    else:
        return value
    raise DTypeError(f"load_state_dict: {name!r} is {dtype} here but the state dict holds {value.dtype} values; "
                     f"casting would drop {lost}. Load values that fit, or convert them explicitly first")


def _check_device(module, x):
    if not isinstance(x, Tensor):
        raise DTypeError(f"{type(module).__name__}: the input must be a Tensor, got {type(x).__name__}; "
                         "wrap it with mg.tensor(...)")
    if x._data.dtype.kind != "f":
        raise DTypeError(f"{type(module).__name__}: the input has dtype {x.dtype} but the layer computes in floating "
                         "point; cast it first, x.astype(np.float32)")
    for p in module._parameters.values():
        if p.device != x.device:
            raise DeviceError(f"{type(module).__name__}: input is on {x.device} but parameters are on {p.device}; "
                              f"call model.to('{x.device}') or x.to('{p.device}')")
        break
