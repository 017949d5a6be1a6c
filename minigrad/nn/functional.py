"""Stateless layer functions: ``mg.nn.functional`` (imported as ``F``)."""
from __future__ import annotations

from .. import autograd, checks, kernels, ops
from .. import random as _random
from ..errors import ArgumentError, DTypeError, ShapeError
from ..tensor import Tensor, tensor


def _t(x):
    return x if isinstance(x, Tensor) else tensor(x)


def relu(x):
    """max(x, 0)."""
    return ops.ReLU.apply(_t(x))


def gelu(x, approximate="none"):
    """x·Φ(x) with the exact erf (``approximate="tanh"`` for the tanh formula), as in PyTorch."""
    if approximate not in ("none", "tanh"):
        raise ArgumentError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return ops.GELU.apply(_t(x), approximate=approximate)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, computed stably."""
    return ops.Softmax.apply(_t(x), axis=axis)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed stably."""
    return ops.LogSoftmax.apply(_t(x), axis=axis)


def cross_entropy(logits, target, reduction="mean"):
    """Cross-entropy of (N, C) logits against (N,) integer class indices; reduction mean|sum|none."""
    if reduction not in ("mean", "sum", "none"):
        raise ArgumentError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    target = target.data if isinstance(target, Tensor) else _t(logits).device.xp.asarray(target)
    return ops.CrossEntropy.apply(_t(logits), target=target, reduction=reduction)


def mse_loss(pred, target, reduction="mean"):
    """Mean (or sum) of squared differences; pred and target must have the same shape."""
    pred = _t(pred)
    shape = getattr(target, "shape", None)
    if shape is not None and tuple(shape) != pred.shape:
        # PyTorch only warns; broadcasting (N, 1) against (N,) gives an (N, N) loss that trains on nonsense
        raise ShapeError(f"mse_loss: pred has shape {pred.shape} but target has shape {tuple(shape)}; they would "
                         "broadcast instead of pairing up elements. Reshape one to the other's shape, e.g. "
                         "target.reshape(pred.shape)")
    d = pred - target
    sq = d * d
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.sum()
    if reduction == "none":
        return sq
    raise ArgumentError(f"mse_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p), in training only.

    The mask comes from the device's generator, so checkpoint recompute replays it.
    """
    checks.real(p, "dropout", "p", 0.0, 1.0)
    x = _t(x)
    if not training or p == 0.0:
        return x
    if x.dtype.kind != "f":
        raise DTypeError(f"dropout: needs a floating tensor, got {x.dtype}")
    if p == 1.0:
        return x * 0.0
    u = _random.generator(x.device).uniform(x.shape, x.dtype)
    mask = (u >= p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    del u
    return ops.Dropout.apply(x, mask=mask)


def batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum=0.1, eps=1e-5, *,
               num_batches_tracked=None):
    """Batch normalisation over (N, C) or (N, C, L) inputs, with PyTorch's semantics (weight, bias may be None).

    In training it normalises with the batch statistics and updates the running
    ones in place (unbiased variance; ``num_batches_tracked``, if given, counts
    the update) — except while checkpointing recomputes a forward, so each real
    forward updates them exactly once. This is the one place that decides it.
    """
    x = _t(x)
    if weight is None or bias is None:   # no affine transform, as in PyTorch
        xp, c = x.device.xp, x.shape[1] if x.ndim > 1 else 0
        weight = weight if weight is not None else Tensor._make(xp.ones(c, x.dtype), x.device, False, None, 0)
        bias = bias if bias is not None else Tensor._make(xp.zeros(c, x.dtype), x.device, False, None, 0)
    checks.real(momentum, "batch_norm", "momentum", 0.0, 1.0)
    checks.real(eps, "batch_norm", "eps", 0.0)
    if x.ndim not in (2, 3) or x.shape[1] != weight.shape[0]:
        raise ShapeError(f"batch_norm: expects (N, C) or (N, C, L) input with C={weight.shape[0]}, got {x.shape}")
    if not training:
        return _eval_affine(x, running_mean, running_var, weight, bias, eps, (1, -1) if x.ndim == 2 else (1, -1, 1))
    n = x.size // x.shape[1]
    if n <= 1:
        raise ShapeError(f"batch_norm: training needs more than one value per channel, got input {x.shape}")
    stats = []
    out = ops.BatchNorm.apply(x, weight, bias, eps=eps, stats=stats)
    if autograd.is_recomputing():
        return out
    if num_batches_tracked is not None:
        num_batches_tracked.data += 1
    if running_mean is not None:
        mean, var = stats[0]
        unbiased = var * (n / (n - 1))
        running_mean.data *= 1 - momentum
        running_mean.data += momentum * mean.astype(running_mean.dtype, copy=False)
        running_var.data *= 1 - momentum
        running_var.data += momentum * unbiased.astype(running_var.dtype, copy=False)
    return out


def _eval_affine(x, running_mean, running_var, weight, bias, eps, shape):
    """Eval-mode batch norm: (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
    xp = x.device.xp
    inv = Tensor._make((1.0 / xp.sqrt(running_var.data + eps)).reshape(shape), x.device, False, None, 0)
    mean = Tensor._make(running_mean.data.reshape(shape), x.device, False, None, 0)
    return (x - mean) * inv * weight.reshape(shape) + bias.reshape(shape)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise each sample over its last dimensions ``normalized_shape``, then scale and shift."""
    x = _t(x)
    shape = _normalized_shape(normalized_shape, "layer_norm")
    checks.real(eps, "layer_norm", "eps", 0.0)
    xp = x.device.xp
    if weight is None:
        weight = Tensor._make(xp.ones(shape, x.dtype), x.device, False, None, 0)
    if bias is None:
        bias = Tensor._make(xp.zeros(shape, x.dtype), x.device, False, None, 0)
    return ops.LayerNorm.apply(x, weight, bias, eps=eps)


def _normalized_shape(shape, where):
    """``normalized_shape`` as a tuple of positive ints (one int means a 1-tuple)."""
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    for d in dims:
        checks.integer(d, where, "normalized_shape", minimum=1)
    return tuple(int(d) for d in dims)


def linear(x, weight, bias=None, activation=None):
    """``activation(x @ weight.T + bias)`` as one node (weight is (out_features, in_features)).

    ``activation`` is None (PyTorch's ``F.linear``), "relu" or "tanh": the same
    numbers as ``F.linear`` followed by ``relu()`` / ``tanh()``, in one node that
    adds the bias and applies the activation in place (one fused kernel on CuPy).
    """
    x = _t(x)
    for name, t in (("weight", weight), ("bias", bias)):
        if not isinstance(t, Tensor) and not (name == "bias" and t is None):
            raise DTypeError(f"linear: {name} must be a Tensor, got {type(t).__name__}")
    if activation is not None and activation not in kernels.ACTIVATIONS:
        raise ArgumentError(f"linear: activation must be None, 'relu' or 'tanh', got {activation!r}; "
                            "apply other activations after the layer")
    kw = {} if activation is None else {"activation": activation}
    if bias is None:
        return ops.Linear.apply(x, weight, **kw)
    return ops.Linear.apply(x, weight, bias, **kw)

