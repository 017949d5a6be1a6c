"""The layers: Linear, activations, Dropout, BatchNorm1d, LayerNorm, Sequential, Residual."""
from __future__ import annotations

import math

import numpy as np

from .. import checks, kernels
from .. import random as _random
from ..backend import device as _device
from ..errors import ArgumentError, IndexingError, ShapeError
from ..tensor import Tensor, get_default_dtype
from . import functional as F
from .module import Module, Parameter, _check_device


def _param_dtype(dtype, where):
    """A layer's parameter dtype: floating only, since parameters need gradients."""
    why = "only floating tensors have gradients"
    return checks.dtype(dtype, where, floating=True, why=why) if dtype is not None else get_default_dtype()


def _uniform(shape, bound, dtype, device):
    dev = _device(device)
    dt = _param_dtype(dtype, "Linear")
    return Parameter(Tensor._make(_random.generator(dev).uniform(shape, dt, -bound, bound), dev, True, None, 0))


def _filled(shape, value, dtype, device, cls=Parameter):
    dev = _device(device)
    dt = np.dtype(dtype) if dtype is not None else get_default_dtype()
    t = Tensor._make(dev.xp.full(shape, value, dtype=dt), dev, False, None, 0)
    return cls(t) if cls is Parameter else t


class Linear(Module):
    """y = x Wᵀ + b with W of shape (out_features, in_features), initialised as PyTorch does.

    PyTorch's default (kaiming_uniform with a=√5) draws W and b from U(-1/√in, 1/√in).
    ``activation="relu"`` or ``"tanh"`` applies it in the same node (``F.linear``):
    the numbers of ``Linear`` then ``ReLU``/``Tanh``, in fewer passes over memory.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None, activation=None):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            checks.integer(n, "Linear", name)
        if in_features <= 0 or out_features <= 0:
            raise ShapeError(f"Linear: features must be positive, got in={in_features}, out={out_features}")
        if activation is not None and activation not in kernels.ACTIVATIONS:
            raise ArgumentError(f"Linear: activation must be None, 'relu' or 'tanh', got {activation!r}; "
                                "add other activations as their own layer")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        bound = 1.0 / math.sqrt(in_features)
        self.weight = _uniform((out_features, in_features), bound, dtype, device)
        self.bias = _uniform((out_features,), bound, dtype, device) if bias else None

    def forward(self, x):
        _check_device(self, x)
        return F.linear(x, self.weight, self.bias, self.activation)

    def extra_repr(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}{act}"


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    """tanh(x)."""

    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        return x.sigmoid()


class GELU(Module):
    """x·Φ(x); ``approximate="tanh"`` for the tanh formula."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ArgumentError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)


class Dropout(Module):
    """Zero elements with probability p in training (masks replay exactly under checkpointing)."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = checks.real(p, "Dropout", "p", 0.0, 1.0)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class BatchNorm1d(Module):
    """Batch normalisation of (N, C) or (N, C, L) inputs, with PyTorch's numbers.

    Buffers ``running_mean`` (zeros), ``running_var`` (ones, updated with the
    unbiased batch variance) and ``num_batches_tracked``; momentum 0.1, eps 1e-5.
    Running statistics change once per real forward in training, never during
    checkpoint recompute.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=None, device=None):
        super().__init__()
        checks.integer(num_features, "BatchNorm1d", "num_features", minimum=1)
        checks.real(eps, "BatchNorm1d", "eps", 0.0)
        if momentum is None:   # PyTorch's cumulative average: not implemented here
            raise ArgumentError("BatchNorm1d: momentum=None (a cumulative average of all batches) is not supported; "
                                "pass a number in [0, 1] such as momentum=0.1")
        checks.real(momentum, "BatchNorm1d", "momentum", 0.0, 1.0)
        dtype = _param_dtype(dtype, "BatchNorm1d")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = _filled((num_features,), 1.0, dtype, device)
        self.bias = _filled((num_features,), 0.0, dtype, device)
        if not affine:
            self.weight.requires_grad = self.bias.requires_grad = False
        self.register_buffer("running_mean", _filled((num_features,), 0.0, dtype, device, cls=None))
        self.register_buffer("running_var", _filled((num_features,), 1.0, dtype, device, cls=None))
        self.register_buffer("num_batches_tracked", _filled((), 0, np.int64, device, cls=None))

    def forward(self, x):
        _check_device(self, x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps, num_batches_tracked=self.num_batches_tracked)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm(Module):
    """Normalise each sample over its last dimensions, then scale and shift (weight 1, bias 0)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, dtype=None, device=None):
        super().__init__()
        shape = F._normalized_shape(normalized_shape, "LayerNorm")
        checks.real(eps, "LayerNorm", "eps", 0.0)
        dtype = _param_dtype(dtype, "LayerNorm")
        self.normalized_shape, self.eps = shape, eps
        self.weight = _filled(shape, 1.0, dtype, device)
        self.bias = _filled(shape, 0.0, dtype, device)
        if not elementwise_affine:
            self.weight.requires_grad = self.bias.requires_grad = False

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Sequential(Module):
    """Modules applied in order; indexable, sliceable and iterable (a chain for checkpointing)."""

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            _check_module(layer, i)
            setattr(self, str(i), layer)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        layers = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*layers[i])
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -len(layers) <= i < len(layers):
            raise IndexingError(f"Sequential: index {i!r} does not name one of its {len(layers)} layers; use an "
                                f"integer in [{-len(layers)}, {len(layers) - 1}] or a slice")
        return layers[i]

    def append(self, layer):
        """Add a layer at the end."""
        _check_module(layer, len(self))
        setattr(self, str(len(self)), layer)
        return self

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x


def _check_module(layer, i):
    if not isinstance(layer, Module):
        raise ArgumentError(f"Sequential: layer {i} is of type {type(layer).__name__}, not a Module; wrap a function "
                            "in a Module subclass whose forward calls it (its parameters would not be found "
                            "otherwise)")


class Residual(Module):
    """x + fn(x): a skip connection around a module."""

    def __init__(self, fn):
        super().__init__()
        if not isinstance(fn, Module):
            raise ArgumentError(f"Residual: fn must be a Module (its parameters are found through it), got "
                                f"{type(fn).__name__}; wrap a function in a Module subclass")
        self.fn = fn

    def forward(self, x):
        return x + self.fn(x)


class SelfAttention(Module):
    """Single-head self-attention over (batch, tokens, dim): softmax(Q Kᵀ / √d) V, then a projection.

    Its (batch, tokens, tokens) attention weights grow with the square of the
    sequence length: the activations that dominate a transformer's memory.
    """

    def __init__(self, dim, dtype=None, device=None):
        super().__init__()
        self.dim = checks.integer(dim, "SelfAttention", "dim", minimum=1)
        self.query = Linear(dim, dim, dtype=dtype, device=device)
        self.key = Linear(dim, dim, dtype=dtype, device=device)
        self.value = Linear(dim, dim, dtype=dtype, device=device)
        self.out = Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x):
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ShapeError(f"SelfAttention: expects (batch, tokens, {self.dim}) input, got {x.shape}")
        q, k, v = self.query(x), self.key(x), self.value(x)
        scores = (q @ k.transpose(0, 2, 1)) * (1.0 / math.sqrt(self.dim))
        weights = F.softmax(scores, axis=-1)
        return self.out(weights @ v)

    def extra_repr(self):
        return f"dim={self.dim}"


class TransformerBlock(Module):
    """A pre-norm transformer block: x + attention(LN(x)), then + MLP(LN(·)) with a GELU."""

    def __init__(self, dim, hidden=None, dtype=None, device=None):
        super().__init__()
        checks.integer(dim, "TransformerBlock", "dim", minimum=1)
        hidden = checks.integer(hidden, "TransformerBlock", "hidden", minimum=1) if hidden is not None else 4 * dim
        self.norm1 = LayerNorm(dim, dtype=dtype, device=device)
        self.attention = SelfAttention(dim, dtype=dtype, device=device)
        self.norm2 = LayerNorm(dim, dtype=dtype, device=device)
        self.mlp = Sequential(Linear(dim, hidden, dtype=dtype, device=device), GELU(approximate="tanh"),
                              Linear(hidden, dim, dtype=dtype, device=device))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))
