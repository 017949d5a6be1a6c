"""The differentiable primitives: forward, backward and FLOPs of each op together.

Every op is written once against the array module of its inputs (``xp_of``),
so the same code runs on NumPy and CuPy. Backward never writes into the
gradient it receives (it may be a read-only broadcast view, or shared).
FLOP conventions are documented in ``minigrad.profiler``.
"""
from __future__ import annotations

import math

import numpy as np

from . import kernels, profiler
from .autograd import Function
from .backend import xp_of
from .errors import ArgumentError, DTypeError, ShapeError

# --------------------------------------------------------------------------- helpers


def unbroadcast(g, shape):
    """Sum ``g`` over the axes broadcasting added, so it has ``shape`` again."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _check_broadcast(op, a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(
            f"{op}: shapes {a.shape} and {b.shape} do not broadcast (trailing dimensions must be "
            "equal or 1). Reshape one operand, e.g. x.reshape(...) or add a length-1 axis.") from None


def _norm_axis(axis, ndim, op="reduction", single=False):
    """``axis`` as a sorted tuple of non-negative ints (None means every axis; ``single``: exactly one int)."""
    if axis is None and not single:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        axis = (axis,)
    elif single or not isinstance(axis, (tuple, list)) or not all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axis):
        raise ShapeError(f"{op}: axis must be {'one integer' if single else 'an integer, a tuple of integers or None'}"
                         f", got {axis!r}; pass e.g. axis=-1")
    out = []
    for a in axis:
        if not -ndim <= a < ndim:
            raise ShapeError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimension(s); "
                             f"use an axis in [{-ndim}, {ndim - 1}]" if ndim else
                             f"{op}: axis {a} is out of range for a 0-d tensor; use axis=None")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: axis {tuple(axis)} names the same dimension twice; list each axis once")
    return tuple(sorted(out))


def _check_keepdims(keepdims, op):
    if not isinstance(keepdims, (bool, np.bool_)):
        raise ArgumentError(f"{op}: keepdims must be True or False, got {keepdims!r}")


def _expand_reduced(g, in_shape, axes, keepdims):
    """Put back the reduced axes of ``g`` (length 1) so it broadcasts against the input."""
    if not keepdims and in_shape:
        g = g.reshape(tuple(1 if i in axes else s for i, s in enumerate(in_shape)))
    return g


def _size(a):
    return int(a.size) if hasattr(a, "size") else 1


def _out_nbytes(node):
    """Bytes of a node's (first) output, from the metadata it recorded."""
    shape, dtype = node.out_meta[0]
    return math.prod(shape) * np.dtype(dtype).itemsize


# --------------------------------------------------------------------------- elementwise binary


class _Binary(Function):
    def flops(self, inputs, out):
        return _size(out)


class Add(_Binary):
    def forward(self, a, b):
        _check_broadcast("add (+)", a, b)
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, g):
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (unbroadcast(g, sa) if na else None, unbroadcast(g, sb) if nb else None)


class Sub(_Binary):
    def forward(self, a, b):
        _check_broadcast("sub (-)", a, b)
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, g):
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (unbroadcast(g, sa) if na else None, unbroadcast(-g, sb) if nb else None)


class Mul(_Binary):
    def forward(self, a, b):
        _check_broadcast("mul (*)", a, b)
        if self.requires_grad:
            na, nb = self.needs_input_grad
            self.save_for_backward(a if nb else None, b if na else None)
            self.shapes = (a.shape, b.shape)
        return a * b

    def backward(self, g):
        a, b = self.saved
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (unbroadcast(g * b, sa) if na else None, unbroadcast(g * a, sb) if nb else None)


class Div(_Binary):
    def forward(self, a, b):
        _check_broadcast("div (/)", a, b)
        self.save_for_backward(a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved
        na, nb = self.needs_input_grad
        ga = unbroadcast(g / b, a.shape) if na else None
        gb = unbroadcast(-g * a / (b * b), b.shape) if nb else None
        return ga, gb


class Pow(_Binary):
    def forward(self, a, b):
        _check_broadcast("pow (**)", a, b)
        try:
            out = a ** b
        except ValueError as exc:   # NumPy: "Integers to negative integer powers are not allowed."
            raise DTypeError(f"pow (**): {exc} ({a.dtype} ** {b.dtype}); cast the base to a floating dtype "
                             "first, e.g. x.astype(np.float32) ** -1") from None
        self.save_for_backward(a, b, out)
        return out

    def backward(self, g):
        a, b, out = self.saved
        na, nb = self.needs_input_grad
        xp = xp_of(a)
        # As PyTorch: d/da is 0 where b == 0 (x**0 at 0), d/db is 0 where a == 0 and b >= 0 (0**x);
        # substituting the operand there keeps 0·inf = nan (and its warning) out of the product.
        ga = unbroadcast(g * b * a ** xp.where(b == 0, 1, b - 1), a.shape) if na else None
        gb = unbroadcast(g * out * xp.log(xp.where((a == 0) & (b >= 0), 1, a)), b.shape) if nb else None
        return ga, gb


class Maximum(_Binary):
    """Elementwise max; where the two are equal the gradient goes to the first operand."""

    def forward(self, a, b):
        _check_broadcast("maximum", a, b)
        mask = a >= b
        self.save_for_backward(mask)
        self.shapes = (a.shape, b.shape)
        return xp_of(a).maximum(a, b)

    def backward(self, g):
        (mask,) = self.saved
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (unbroadcast(g * mask, sa) if na else None, unbroadcast(g * ~mask, sb) if nb else None)


class Where(Function):
    """``where(cond, a, b)``: ``cond`` is a boolean array that takes no gradient."""

    def forward(self, a, b, cond):
        _check_broadcast("where", a, b)
        try:
            np.broadcast_shapes(cond.shape, a.shape, b.shape)
        except ValueError:
            raise ShapeError(f"where: the condition of shape {cond.shape} does not broadcast with the operands "
                             f"of shapes {a.shape} and {b.shape}; give it a shape that broadcasts to "
                             f"{np.broadcast_shapes(a.shape, b.shape)}") from None
        out = xp_of(a).where(cond, a, b)
        if self.requires_grad:
            self.save_for_backward(cond)
            self.shapes = (a.shape, b.shape)
        return out

    def backward(self, g):
        (cond,) = self.saved
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (unbroadcast(g * cond, sa) if na else None, unbroadcast(g * ~cond, sb) if nb else None)

    def flops(self, inputs, out):
        return _size(out)


# --------------------------------------------------------------------------- matmul and the fused linear layer


class MatMul(Function):
    """``a @ b`` with NumPy's rules (1-D operands, batched leading dimensions)."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ShapeError(
                f"matmul (@): shapes {a.shape} and {b.shape} do not fit: the last dimension of the left "
                f"({a.shape[-1] if a.ndim else 'scalar'}) must equal the "
                f"{'second-to-last' if b.ndim > 1 else 'only'} dimension of the right. "
                "Transpose one operand (x.T) or reshape it.")
        if a.ndim > 2 or b.ndim > 2:
            try:
                np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            except ValueError:
                raise ShapeError(
                    f"matmul (@): shapes {a.shape} and {b.shape} have batch dimensions {a.shape[:-2]} and "
                    f"{b.shape[:-2]} that do not broadcast (each must be equal or 1). Reshape one operand "
                    "so the leading dimensions line up.") from None
        self.save_for_backward(a, b)
        return kernels.matmul(a, b) if a.ndim == 2 and b.ndim == 2 else xp_of(a).matmul(a, b)

    def replay(self, a, b, out):
        self.save_for_backward(a, b)

    def backward(self, g):
        a, b = self.saved
        na, nb = self.needs_input_grad
        xp = xp_of(g)
        a2 = a if a.ndim > 1 else a[None, :]
        b2 = b if b.ndim > 1 else b[:, None]
        # Put back the axes a 1-D operand dropped from the output: b's column (last) first, then
        # a's row, so a vector-vector product's scalar gradient becomes a (1, 1) matrix.
        g2 = g
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        ga = gb = None
        mm = kernels.matmul if g2.ndim == 2 and a2.ndim == 2 and b2.ndim == 2 else xp.matmul
        if na:
            ga = unbroadcast(mm(g2, xp.swapaxes(b2, -1, -2)), a2.shape)
            ga = ga.reshape(a.shape)
        if nb:
            gb = unbroadcast(mm(xp.swapaxes(a2, -1, -2), g2), b2.shape)
            gb = gb.reshape(b.shape)
        return ga, gb

    def flops(self, inputs, out):
        a, b = inputs
        k = a.shape[-1]
        return 2 * k * max(_size(out), 1)


class Linear(Function):
    """``act(x @ W.T + b)`` in one node (PyTorch's layout: W is (out, in)); bias and activation in place.

    ``activation`` is None, "relu" or "tanh". With one, the node also saves its
    output (the activation's backward needs it, as ReLU's and Tanh's do), and on
    CuPy the bias and the activation are one fused kernel over the matmul's output,
    their backward one kernel too (``minigrad.kernels``).
    """

    def forward(self, x, w, b=None, activation=None):
        if w.ndim != 2 or x.ndim == 0:
            raise ShapeError(f"linear: needs an input with at least one dimension and a 2-d weight "
                             f"(out_features, in_features), got input {x.shape} and weight {w.shape}")
        if x.shape[-1] != w.shape[1]:
            raise ShapeError(
                f"linear: input of shape {x.shape} has {x.shape[-1]} features but the weight of shape "
                f"{w.shape} expects {w.shape[1]} (weight is (out_features, in_features)).")
        if b is not None and b.shape != (w.shape[0],):
            raise ShapeError(f"linear: bias of shape {b.shape} does not fit the weight of shape {w.shape}; "
                             f"it needs shape ({w.shape[0]},), one value per output feature")
        if activation is not None and activation not in kernels.ACTIVATIONS:
            raise ArgumentError(f"linear: activation must be None, 'relu' or 'tanh', got {activation!r}")
        y = kernels.bias_act_(kernels.matmul(x, w.T), b, activation)
        self.activation = activation
        if self.requires_grad:
            self.has_bias = b is not None
            if activation is None:
                self.save_for_backward(x, w)
            else:
                self.save_for_backward(x, w, y)
        return y

    def replay(self, x, w, b=None, out=None, activation=None):
        self.activation = activation
        if self.requires_grad:
            self.has_bias = b is not None
            if activation is None:
                self.save_for_backward(x, w)
            else:
                self.save_for_backward(x, w, out)

    def backward(self, g):
        x, w = self.saved[:2]
        if self.activation is not None:
            g = kernels.act_backward(g, self.saved[2], self.activation)
        nx, nw = self.needs_input_grad[:2]
        gx = kernels.matmul(g, w) if nx else None
        gw = gb = None
        if nw or (self.has_bias and self.needs_input_grad[2]):
            g2 = g.reshape(-1, g.shape[-1])
            if nw:
                gw = kernels.matmul(g2.T, x.reshape(-1, x.shape[-1]))
            if self.has_bias and self.needs_input_grad[2]:
                gb = kernels.column_sums(g2)
        return (gx, gw, gb) if self.has_bias else (gx, gw)

    def flops(self, inputs, out):
        x, w = inputs[0], inputs[1]
        rows = _size(x) // max(x.shape[-1], 1)
        return (2 * rows * w.shape[0] * w.shape[1] + (rows * w.shape[0] if len(inputs) > 2 else 0)
                + (rows * w.shape[0] if self.activation is not None else 0))

    def backward_flops(self):
        """2·rows·in·out for each of dx and dW that is needed, rows·out for the bias and the activation."""
        size = math.prod(self.out_meta[0][0])
        act = size if self.activation is not None else 0
        bias = size if self.has_bias else 0
        matmul = self.fwd_flops - bias - act
        nx, nw = self.needs_input_grad[:2]
        return (matmul * (int(nx) + int(nw)) + (bias if self.has_bias and self.needs_input_grad[2] else 0)
                + act)


# --------------------------------------------------------------------------- elementwise unary


class _Unary(Function):
    def flops(self, inputs, out):
        return _size(out)


class Neg(_Unary):
    def forward(self, a):
        if a.dtype.kind == "b":
            raise DTypeError("neg (-): a boolean tensor has no negation; use logical not, mg.where(x, 0, 1), "
                             "or cast first with x.astype(np.float32)")
        return -a

    def backward(self, g):
        return (-g,)


class Exp(_Unary):
    def forward(self, a):
        out = xp_of(a).exp(a)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        return (g * self.saved[0],)


class Log(_Unary):
    def forward(self, a):
        self.save_for_backward(a)
        return xp_of(a).log(a)

    def backward(self, g):
        return (g / self.saved[0],)


class Tanh(_Unary):
    def forward(self, a):
        out = xp_of(a).tanh(a)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        return (kernels.tanh_backward(g, self.saved[0]),)   # one array: g * (1 - y²)


class Sigmoid(_Unary):
    def forward(self, a):
        xp = xp_of(a)
        out = 1 / (1 + xp.exp(-a))
        self.save_for_backward(out)
        return out

    def backward(self, g):
        y = self.saved[0]
        return (g * y * (1 - y),)


class ReLU(_Unary):
    """max(x, 0); saves its output, which the next layer usually keeps anyway (no extra memory)."""

    def forward(self, a):
        out = xp_of(a).maximum(a, 0)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        return (kernels.relu_backward(g, self.saved[0]),)


class Sqrt(_Unary):
    def forward(self, a):
        out = xp_of(a).sqrt(a)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        return (g / (2 * self.saved[0]),)


class Abs(_Unary):
    def forward(self, a):
        self.save_for_backward(a)
        return xp_of(a).abs(a)

    def backward(self, g):
        return (g * xp_of(g).sign(self.saved[0]),)


class Clip(_Unary):
    """Clamp to [lo, hi]; the gradient passes where lo <= x <= hi (as in PyTorch's clamp)."""

    def forward(self, a, lo=None, hi=None):
        xp = xp_of(a)
        if self.requires_grad:
            mask = xp.ones(a.shape, dtype=bool)
            if lo is not None:
                mask &= a >= lo
            if hi is not None:
                mask &= a <= hi
            self.save_for_backward(mask)
        return xp.clip(a, lo, hi)

    def backward(self, g):
        return (g * self.saved[0],)


def _erf(x, out=None):
    """The error function, elementwise, to full double precision (written into ``out`` when given)."""
    xp = xp_of(x)
    if xp is not np:
        from cupyx.scipy.special import erf  # noqa: PLC0415
        return erf(x, out=out)
    try:
        from scipy.special import erf  # noqa: PLC0415
        return erf(x, out=out)
    except ImportError:
        y = _np_erf(x).astype(x.dtype, copy=False)
        if out is None:
            return y
        out[...] = y
        return out


_np_erf = np.frompyfunc(math.erf, 1, 1)


class GELU(_Unary):
    """x·Φ(x) (exact, with erf), or the tanh approximation when ``approximate="tanh"``."""

    _C = math.sqrt(2.0 / math.pi)

    def forward(self, a, approximate="none"):
        self.save_for_backward(a)
        self.approximate = approximate
        out = self._inner(a)             # one buffer, which becomes the output: a · ½(1 + inner)
        out += 1
        out *= 0.5
        out *= a
        return out

    def _inner(self, a):
        """tanh(√(2/π)(a + 0.044715a³)) or erf(a/√2), in one new array.

        Callers go on in place: ½·(1 + inner) is exact, so a·(½(1 + inner))
        rounds to the same number as the textbook (½a)·(1 + inner).
        """
        xp = xp_of(a)
        if self.approximate == "tanh":
            t = a ** 3
            t = xp.multiply(t, 0.044715, out=t if t.dtype.kind == "f" else None)   # integers promote to float
            t += a
            t *= self._C
            return xp.tanh(t, out=t)
        t = a / math.sqrt(2.0)
        return _erf(t, out=t)

    def backward(self, g):
        (a,) = self.saved
        xp = xp_of(a)
        d = profiler.track(self._inner(a))   # becomes the gradient g·(½(1 + inner) + ½a·inner'); counted now
        if self.approximate == "tanh":
            u = profiler.track(xp.multiply(d, d))   # ½a(1 - t²)·√(2/π)·(1 + 3·0.044715a²)
            xp.subtract(1, u, out=u)
            u *= 0.5
            u *= a
            u *= self._C
            w = profiler.track(xp.multiply(a, 3 * 0.044715))
            w *= a
            w += 1
            u *= w
        else:
            u = profiler.track(xp.multiply(a, -0.5))   # a · exp(-a²/2) / √(2π)
            u *= a
            xp.exp(u, out=u)
            u /= math.sqrt(2 * math.pi)
            u *= a
        d += 1
        d *= 0.5
        d += u
        if xp.result_type(g, d) == d.dtype:
            d *= g
            return (d,)
        return (g * d,)

    def backward_workspace(self):
        """One input-sized scratch array besides the gradient (two for "tanh")."""
        return (2 if self.approximate == "tanh" else 1) * _out_nbytes(self)


class Dropout(_Unary):
    """Multiply by a mask of 0 and 1/(1-p) drawn by the caller (so it can be replayed)."""

    def forward(self, a, mask):
        self.save_for_backward(mask)
        return a * mask

    def backward(self, g):
        return (g * self.saved[0],)


# --------------------------------------------------------------------------- reductions


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.axes = _norm_axis(axis, a.ndim, type(self).__name__.lower())
        _check_keepdims(keepdims, type(self).__name__.lower())
        self.keepdims, self.in_shape = keepdims, a.shape
        return xp_of(a).sum(a, axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        g = _expand_reduced(g, self.in_shape, self.axes, self.keepdims)
        return (xp_of(g).broadcast_to(g, self.in_shape),)

    def flops(self, inputs, out):
        return _size(inputs[0])


class Mean(Sum):
    def forward(self, a, axis=None, keepdims=False):
        out = super().forward(a, axis, keepdims)
        self.n = math.prod(a.shape[i] for i in self.axes) if a.ndim else 1
        return out / self.n

    def backward(self, g):
        return (super().backward(g / self.n)[0],)


class Max(Function):
    """Max over axes; ties share the gradient equally (like ``amax`` in PyTorch)."""

    def forward(self, a, axis=None, keepdims=False):
        xp = xp_of(a)
        axes = _norm_axis(axis, a.ndim, "max")
        _check_keepdims(keepdims, "max")
        if a.size == 0:
            raise ShapeError(f"max of an empty tensor of shape {a.shape} has no value")
        out = xp.max(a, axis=axes, keepdims=True)
        if self.requires_grad:
            mask = a == out
            self.save_for_backward(mask, mask.sum(axis=axes, keepdims=True))
            self.axes, self.keepdims, self.in_shape = axes, keepdims, a.shape
        return out if keepdims else out.reshape(tuple(s for i, s in enumerate(a.shape) if i not in axes))

    def backward(self, g):
        mask, count = self.saved
        g = _expand_reduced(g, self.in_shape, self.axes, self.keepdims)
        # the count is int64, which would promote a float32 gradient to float64
        return (g * mask / count.astype(g.dtype, copy=False),)

    def flops(self, inputs, out):
        return _size(inputs[0])


class Var(Function):
    """Variance over axes with ``ddof`` (0 by default, as in NumPy)."""

    def forward(self, a, axis=None, keepdims=False, ddof=0):
        xp = xp_of(a)
        axes = _norm_axis(axis, a.ndim, "var")
        _check_keepdims(keepdims, "var")
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)):
            raise ArgumentError(f"var: ddof must be an integer (0 for the population variance, 1 for the unbiased "
                             f"estimate), got {ddof!r}")
        n = math.prod(a.shape[i] for i in axes) if a.ndim else 1
        if n - ddof <= 0:
            raise ShapeError(f"var over {n} element(s) with ddof={ddof} divides by {n - ddof}: "
                             "reduce over more elements or lower ddof")
        d = a - xp.mean(a, axis=axes, keepdims=True)
        self.save_for_backward(d)
        self.axes, self.keepdims, self.in_shape, self.div = axes, keepdims, a.shape, n - ddof
        return xp.sum(d * d, axis=axes, keepdims=keepdims) / self.div

    def backward(self, g):
        (d,) = self.saved
        g = _expand_reduced(g, self.in_shape, self.axes, self.keepdims)
        return (g * d * (2.0 / self.div),)

    def flops(self, inputs, out):
        return 3 * _size(inputs[0])


# --------------------------------------------------------------------------- movement (no FLOPs)


class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        try:
            return a.reshape(shape)
        except TypeError:
            raise ShapeError(f"reshape: the new shape must be integers, got {shape!r}; write e.g. x.reshape(2, -1)"
                             ) from None
        except ValueError:
            raise ShapeError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                             f"into {tuple(shape)}; the number of elements must stay the same") from None

    def backward(self, g):
        return (g.reshape(self.in_shape),)


class Transpose(Function):
    def forward(self, a, axes=None):
        if axes is None:
            axes = tuple(reversed(range(a.ndim)))
        if not all(isinstance(a_, (int, np.integer)) and not isinstance(a_, bool) for a_ in axes):
            raise ShapeError(f"transpose: axes must be integers, got {tuple(axes)!r}; write e.g. x.transpose(1, 0)")
        if (len(axes) != a.ndim or any(not -a.ndim <= a_ < a.ndim for a_ in axes)
                or sorted(a_ % a.ndim for a_ in axes) != list(range(a.ndim))):
            raise ShapeError(f"transpose: axes {tuple(axes)} are not a permutation of the "
                             f"{a.ndim} dimensions of a tensor of shape {a.shape}")
        self.axes = tuple(a_ % a.ndim for a_ in axes)  # non-negative, so argsort inverts it
        return a.transpose(self.axes)

    def backward(self, g):
        return (g.transpose(tuple(np.argsort(self.axes))),)


def _has_advanced(index):
    if not isinstance(index, tuple):
        index = (index,)
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index)


def _scatter_add(out, index, values):
    """out[index] += values, adding every occurrence of a repeated index (NumPy or CuPy >= 13)."""
    xp_of(out).add.at(out, index, values)


class GetItem(Function):
    """``x[index]``; integer-array indices may repeat (their gradients add up)."""

    def forward(self, a, index):
        self.index, self.in_shape, self.in_dtype = index, a.shape, a.dtype
        try:
            return a[index]
        except (IndexError, ValueError, TypeError) as exc:
            from .errors import IndexingError  # noqa: PLC0415
            raise IndexingError(f"getitem: index {index!r} does not fit a tensor of shape {a.shape}: {exc}") from None

    def backward(self, g):
        xp = xp_of(g)
        out = xp.zeros(self.in_shape, dtype=g.dtype)
        if _has_advanced(self.index):
            _scatter_add(out, self.index, g)
        else:
            out[self.index] = g
        return (out,)


class Concatenate(Function):
    def forward(self, *arrays, axis=0):
        xp = xp_of(arrays[0])
        try:
            out = xp.concatenate(arrays, axis=axis)
        except ValueError as exc:
            raise ShapeError(f"concatenate along axis {axis}: shapes {[a.shape for a in arrays]} do not fit "
                             f"({exc}); all dimensions but axis {axis} must match") from None
        self.axis = axis % out.ndim
        self.sizes = [a.shape[self.axis] for a in arrays]
        return out

    def backward(self, g):
        idx = np.cumsum(self.sizes)[:-1]
        parts = xp_of(g).split(g, idx, axis=self.axis)
        return tuple(p if n else None for p, n in zip(parts, self.needs_input_grad))


class Stack(Function):
    def forward(self, *arrays, axis=0):
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ShapeError(f"stack: all tensors must have the same shape, got {[a.shape for a in arrays]}")
        nd = arrays[0].ndim + 1
        if not -nd <= axis < nd:
            raise ShapeError(f"stack: axis {axis} is out of range for stacking {arrays[0].ndim}-d tensors; "
                             f"use an axis in [{-nd}, {nd - 1}]")
        out = xp_of(arrays[0]).stack(arrays, axis=axis)
        self.axis = axis % out.ndim
        return out

    def backward(self, g):
        xp = xp_of(g)
        return tuple(xp.take(g, i, axis=self.axis) if n else None
                     for i, n in enumerate(self.needs_input_grad))


# --------------------------------------------------------------------------- fused layers


class LogSoftmax(Function):
    def forward(self, a, axis=-1):
        xp = xp_of(a)
        (axis,) = _norm_axis(axis, a.ndim, "log_softmax", single=True)
        out = a - xp.max(a, axis=axis, keepdims=True)      # becomes the output; exp(...) is the one temporary
        out = xp.subtract(out, xp.log(xp.sum(xp.exp(out), axis=axis, keepdims=True)),
                          out=out if out.dtype.kind == "f" else None)
        self.save_for_backward(out)
        self.axis = axis
        return out

    def backward(self, g):
        (y,) = self.saved
        xp = xp_of(g)
        gx = xp.exp(y)                  # one array, which becomes the gradient
        gx *= xp.sum(g, axis=self.axis, keepdims=True)
        return (xp.subtract(g, gx, out=gx),)

    def flops(self, inputs, out):
        return 5 * _size(out)


class Softmax(Function):
    def forward(self, a, axis=-1):
        xp = xp_of(a)
        (axis,) = _norm_axis(axis, a.ndim, "softmax", single=True)
        out = a - xp.max(a, axis=axis, keepdims=True)     # one buffer, which becomes the output
        out = xp.exp(out, out=out if out.dtype.kind == "f" else None)
        out /= xp.sum(out, axis=axis, keepdims=True)
        self.save_for_backward(out)
        self.axis = axis
        return out

    def backward(self, g):
        # PyTorch's y·(g - Σ g·y): one array, which becomes the gradient (g·y - y·Σ g·y needs two).
        (y,) = self.saved
        xp = xp_of(g)
        gx = g * y
        s = xp.sum(gx, axis=self.axis, keepdims=True)
        xp.subtract(g, s, out=gx)
        gx *= y
        return (gx,)

    def flops(self, inputs, out):
        return 4 * _size(out)


class CrossEntropy(Function):
    """Mean (or sum) of -log softmax(logits)[target] over rows; targets are integer class indices."""

    def forward(self, logits, target, reduction="mean"):
        xp = xp_of(logits)
        if logits.ndim != 2 or target.shape != (logits.shape[0],):
            raise ShapeError(f"cross_entropy: logits must be (N, C) and target (N,), got logits {logits.shape} "
                             f"and target {target.shape}")
        if target.dtype.kind not in "iu":
            from .errors import DTypeError  # noqa: PLC0415
            raise DTypeError(f"cross_entropy: target must hold integer class indices, got dtype {target.dtype}; "
                             "convert with y.astype(np.int64)")
        n, c = logits.shape
        # Checked on the CPU only: on a GPU the check would copy to the host in every forward.
        if n and isinstance(target, np.ndarray) and (target.min() < 0 or target.max() >= c):
            raise ShapeError(f"cross_entropy: targets must lie in [0, {c}) for {c} classes, "
                             f"got values in [{int(target.min())}, {int(target.max())}]")
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        lse = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        logp = shifted - lse
        rows = xp.arange(n)
        picked = -logp[rows, target]
        if self.requires_grad:
            self.save_for_backward(logp, target)
            self.reduction = reduction
        if reduction == "none":
            return picked
        total = picked.sum()
        return total / n if reduction == "mean" else total

    def backward(self, g):
        logp, target = self.saved
        xp = xp_of(logp)
        n = logp.shape[0]
        grad = xp.exp(logp)
        grad[xp.arange(n), target] -= 1
        if self.reduction == "none":
            return (grad * g[:, None], None)
        scale = g / n if self.reduction == "mean" else g
        return (grad * scale, None)

    def flops(self, inputs, out):
        return 5 * _size(inputs[0])


class BatchNorm(Function):
    """Normalise over the batch (and length) axes with batch statistics, then scale and shift.

    Appends the batch mean and biased variance to ``stats`` so the caller can
    update running statistics without computing them twice.
    """

    def forward(self, x, weight, bias, eps=1e-5, stats=None):
        xp = xp_of(x)
        axes = (0,) if x.ndim == 2 else (0, 2)
        mean = xp.mean(x, axis=axes, keepdims=True)
        var = xp.var(x, axis=axes, keepdims=True)
        invstd = 1.0 / xp.sqrt(var + eps)
        xhat = (x - mean) * invstd
        if stats is not None:
            stats.append((mean.reshape(-1), var.reshape(-1)))
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1)
        self.axes, self.shape = axes, shape
        self.save_for_backward(xhat, invstd, weight)
        return xhat * weight.reshape(shape) + bias.reshape(shape)

    def backward(self, g):
        xhat, invstd, weight = self.saved
        xp = xp_of(g)
        axes, shape = self.axes, self.shape
        n = g.size // weight.size
        gw = xp.sum(g * xhat, axis=axes) if self.needs_input_grad[1] else None
        gb = xp.sum(g, axis=axes) if self.needs_input_grad[2] else None
        gx = None
        if self.needs_input_grad[0]:
            gxhat = g * weight.reshape(shape)
            gx = (invstd / n) * (n * gxhat - xp.sum(gxhat, axis=axes, keepdims=True)
                                 - xhat * xp.sum(gxhat * xhat, axis=axes, keepdims=True))
        return gx, gw, gb

    def flops(self, inputs, out):
        return 8 * _size(out)


class LayerNorm(Function):
    """Normalise over the last ``len(weight.shape)`` axes of each sample, then scale and shift."""

    def forward(self, x, weight, bias, eps=1e-5):
        xp = xp_of(x)
        k = weight.ndim
        if x.shape[x.ndim - k:] != weight.shape:
            raise ShapeError(f"layer_norm: the last dimensions of the input {x.shape} must equal "
                             f"normalized_shape {weight.shape}")
        axes = tuple(range(x.ndim - k, x.ndim))
        mean = xp.mean(x, axis=axes, keepdims=True)
        var = xp.var(x, axis=axes, keepdims=True)
        invstd = 1.0 / xp.sqrt(var + eps)
        xhat = x - mean                 # built in place: the saved x̂ and the output are the only new arrays
        xhat *= invstd
        self.axes = axes
        self.save_for_backward(xhat, invstd, weight)
        out = xhat * weight
        if out.dtype == bias.dtype:
            out += bias
        else:  # in place would cast a wider bias down; follow NumPy promotion
            out = out + bias
        return out

    def backward(self, g):
        xhat, invstd, weight = self.saved
        xp = xp_of(g)
        axes = self.axes
        lead = tuple(range(g.ndim - weight.ndim))
        n = weight.size
        # Two input-sized arrays in all: ``gx`` (the gradient) and ``tmp``, reused for each product.
        tmp = None
        gw = gx = None
        if self.needs_input_grad[1]:
            tmp = profiler.track(g * xhat)
            gw = xp.sum(tmp, axis=lead)
        gb = xp.sum(g, axis=lead) if self.needs_input_grad[2] else None
        if self.needs_input_grad[0]:
            gxhat = profiler.track(xp.multiply(g, weight, out=tmp))
            gx = profiler.track(gxhat * xhat)
            s2 = xp.sum(gx, axis=axes, keepdims=True)
            xp.multiply(n, gxhat, out=gx)
            gx -= xp.sum(gxhat, axis=axes, keepdims=True)
            gx -= xp.multiply(xhat, s2, out=gxhat)
            gx *= invstd / n
        return gx, gw, gb

    def backward_workspace(self):
        """One input-sized scratch array besides the gradients (``tmp`` in backward)."""
        return _out_nbytes(self) if self.needs_input_grad[0] or self.needs_input_grad[1] else 0

    def flops(self, inputs, out):
        return 8 * _size(out)
