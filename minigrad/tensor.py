"""Tensor: an array, its gradient, and the node that produced it."""
from __future__ import annotations

import numbers

import numpy as np

from . import autograd, checks, ops, profiler
from . import random as _random
from .backend import CPU, device as _device, device_of, is_array, to_device
from .errors import ArgumentError, DeviceError, DTypeError, GraphError, ShapeError

_default_dtype = [np.dtype(np.float32)]


def get_default_dtype() -> np.dtype:
    """The dtype of Python numbers, lists, factories and layer parameters (float32 unless set)."""
    return _default_dtype[0]


def set_default_dtype(dtype):
    """Set the default floating dtype: ``mg.set_default_dtype(np.float64)``."""
    dt = checks.dtype(dtype, "set_default_dtype")
    if dt.kind != "f":
        raise DTypeError(f"set_default_dtype: the default dtype must be floating, got {dt}; "
                         "use np.float32 or np.float64")
    _default_dtype[0] = dt


def _short(number):
    text = repr(number)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


def _check_dtype(dt, where="tensor"):
    if dt.kind not in "biuf":
        raise DTypeError(f"{where}: data of dtype {dt} is not numeric; minigrad holds bool, integer and "
                         "floating arrays. Convert the data first, e.g. np.asarray(data, dtype=np.float32).")


class Tensor:
    """An n-dimensional array that remembers how it was computed, so ``backward()`` can differentiate it.

    Make one with ``mg.tensor(data, requires_grad=False, dtype=None, device="cpu")``.
    """

    __slots__ = ("_data", "grad", "requires_grad", "_node", "_idx", "_device", "__weakref__")
    __array_priority__ = 1000  # so ndarray (op) Tensor defers to Tensor's reflected operators

    # --- construction -----------------------------------------------------------
    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        t = tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
        self._data, self.grad, self.requires_grad = t._data, None, t.requires_grad
        self._node, self._idx, self._device = None, 0, t._device

    @classmethod
    def _make(cls, data, dev, requires_grad, node, idx):
        """Wrap an op's output array without validation (the fast path)."""
        t = object.__new__(cls)
        if not is_array(data):
            data = np.asarray(data)
        t._data = profiler.track(data)
        t.grad = None
        t.requires_grad = requires_grad
        t._node = node
        t._idx = idx
        t._device = dev if dev is not None else device_of(data)
        return t

    def _edge(self):
        """Where a gradient for this tensor goes: its node, or the leaf itself."""
        return (self._node, self._idx) if self._node is not None else (self, 0)

    # --- attributes ---------------------------------------------------------------
    @property
    def data(self):
        """The underlying NumPy (or CuPy) array."""
        return self._data

    @data.setter
    def data(self, value):
        self._set_data(value)

    def _set_data(self, value, device=None):
        """The one path by which a tensor's array changes: counted by the profiler, versioned.

        Assigning the array it already holds (``t.data += 1`` ends that way) means it was
        written in place: arrays saved for backward from it are then out of date.
        """
        if not is_array(value):
            value = np.asarray(value)
        _check_dtype(value.dtype, "data")
        if value is self._data:
            autograd.bump_version(value)
        self._data = profiler.track(value)
        if device is not None:
            self._device = device

    shape = property(lambda self: self._data.shape, doc="Tuple of dimensions.")
    ndim = property(lambda self: self._data.ndim, doc="Number of dimensions.")
    dtype = property(lambda self: self._data.dtype, doc="NumPy dtype of the elements.")
    size = property(lambda self: int(self._data.size), doc="Number of elements.")
    device = property(lambda self: self._device, doc="Where the data lives: cpu or cuda:N.")
    is_leaf = property(lambda self: self._node is None, doc="True unless an op recorded on the tape made it.")

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        body = np.array2string(to_device(self._data, CPU), precision=4, separator=", ", prefix="tensor(")
        extra = "" if self.dtype == get_default_dtype() else f", dtype={self.dtype}"
        extra += "" if self._device.type == "cpu" else f", device='{self._device}'"
        if self._node is not None:
            extra += f", grad_fn={self._node.name}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def numpy(self):
        """The data as a NumPy array (copied to the host if it lives on a GPU; shared on the CPU)."""
        out = to_device(self._data, CPU)
        if out is self._data:
            autograd.mark_exposed(out)       # writes into it must not go unseen by backward
        return out

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self._data.size != 1:
            raise GraphError(f"item(): only one-element tensors convert to a Python number, this one has "
                             f"shape {self.shape}; index it or reduce it first (x.sum(), x[0])")
        return to_device(self._data, CPU).reshape(()).item()

    def _one(self, what):
        if self._data.size != 1:
            raise ShapeError(f"{what}: the value of a tensor of shape {self.shape} is ambiguous, only one-element "
                             "tensors have one; reduce it first (x.sum() < 0.5, (x > 0).numpy().all())")
        return self.item()

    def __bool__(self):
        return bool(self._one("bool()"))

    def __float__(self):
        return float(self._one("float()"))

    def __int__(self):
        return int(self._one("int()"))

    def to(self, device):
        """This tensor on ``device`` (itself if already there); the copy is a new leaf."""
        dev = _device(device)
        if dev == self._device:
            return self
        return Tensor._make(to_device(self._data, dev), dev, self.requires_grad, None, 0)

    def detach(self):
        """The same data, cut from the tape (no gradient flows back through it)."""
        return Tensor._make(self._data, self._device, False, None, 0)

    def requires_grad_(self, flag=True):
        """Set ``requires_grad`` on a leaf, in place; returns self."""
        if flag and self.dtype.kind != "f":
            raise DTypeError(f"requires_grad: only floating tensors can have gradients, this one is {self.dtype}")
        self.requires_grad = flag
        return self

    # --- autograd -----------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (``grad`` defaults to 1 for scalars)."""
        if not self.requires_grad:
            raise GraphError("backward(): this tensor does not require grad, so nothing recorded how it was "
                             "made. Create the inputs with requires_grad=True (parameters have it) and do not "
                             "compute it under no_grad().")
        xp = self._device.xp
        if grad is None:
            if self._data.size != 1:
                raise GraphError(f"backward(): the output has shape {self.shape}, not a single number; pass "
                                 "grad= of the same shape, or reduce it first (loss = y.sum())")
            g = xp.ones(self.shape, dtype=self.dtype)
        else:
            # a copy: gradients can pass through ops unchanged into a leaf's .grad, which must not alias
            # an array the caller still holds
            if getattr(grad, "dtype", np.dtype(float)).kind == "c":
                raise DTypeError(f"backward(): grad is complex ({grad.dtype}) but the output is {self.dtype}; "
                                 "pass real numbers")
            try:
                g = xp.array(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype, copy=True)
            except (TypeError, ValueError) as exc:
                raise DTypeError(f"backward(): grad must be numbers of the output's shape {self.shape}, got "
                                 f"{type(grad).__name__} ({exc}); pass a Tensor or an array") from None
            if g.shape != self.shape:
                raise GraphError(f"backward(): grad has shape {g.shape} but the output has shape {self.shape}")
        if self._node is None:  # a leaf: d(self)/d(self) is the identity, there is no tape to walk
            autograd._accumulate_leaf(self, g, autograd._Assigned())
            return
        box = [(self, g)]
        del g, grad
        autograd.run_backward(box, retain_graph=retain_graph)

    def zero_grad(self):
        """Forget the accumulated gradient."""
        self.grad = None

    # --- operators ----------------------------------------------------------------
    def _other(self, other, op):
        if isinstance(other, Tensor):
            if other._device != self._device:
                raise DeviceError(f"{op}: operands are on different devices ({self._device} and {other._device}); "
                                  f"move one with .to('{self._device}')")
            return other
        if isinstance(other, numbers.Number):
            dt = self.dtype if self.dtype.kind == "f" else get_default_dtype() if isinstance(other, float) else None
            # full() fills on the device itself: no host-to-device copy for a constant
            try:
                return Tensor._make(self._device.xp.full((), other, dtype=dt), self._device, False, None, 0)
            except OverflowError:
                raise DTypeError(f"{op}: the number {_short(other)} does not fit a {dt or 'int64'} operand; use a "
                                 "smaller number, or cast the tensor first (x.astype(np.float64))") from None
        return tensor(other, device=self._device)

    def _pair(self, o, op):
        """(self, other) ready for a binary op. An integer or boolean tensor meeting a Python float
        is first cast to the default dtype, so ``int_tensor * 1.5`` is float32, as in PyTorch."""
        other = self._other(o, op)
        if isinstance(o, float) and self.dtype.kind in "biu":
            return Tensor._make(self._data.astype(get_default_dtype()), self._device, False, None, 0), other
        return self, other

    def _binary(self, op, name, o, reflected=False):
        a, b = self._pair(o, name)
        return op.apply(b, a) if reflected else op.apply(a, b)

    def __add__(self, o): return self._binary(ops.Add, "add", o)
    def __radd__(self, o): return self._binary(ops.Add, "add", o, True)
    def __sub__(self, o): return self._binary(ops.Sub, "sub", o)
    def __rsub__(self, o): return self._binary(ops.Sub, "sub", o, True)
    def __mul__(self, o): return self._binary(ops.Mul, "mul", o)
    def __rmul__(self, o): return self._binary(ops.Mul, "mul", o, True)
    def __truediv__(self, o): return self._binary(ops.Div, "div", o)
    def __rtruediv__(self, o): return self._binary(ops.Div, "div", o, True)
    def __pow__(self, o): return self._binary(ops.Pow, "pow", o)
    def __rpow__(self, o): return self._binary(ops.Pow, "pow", o, True)
    def __matmul__(self, o): return self._binary(ops.MatMul, "matmul", o)
    def __rmatmul__(self, o): return self._binary(ops.MatMul, "matmul", o, True)
    def __neg__(self): return ops.Neg.apply(self)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return ops.GetItem.apply(self, index=index)

    # comparisons give boolean tensors without gradient
    def _compare(self, o, fn):
        o = o.data if isinstance(o, Tensor) else o
        try:
            out = fn(self._data, o)
        except (TypeError, ValueError, OverflowError) as exc:
            other = getattr(o, "shape", type(o).__name__)
            error = ShapeError if isinstance(exc, ValueError) else DTypeError   # shapes, or what it holds
            raise error(f"comparison: cannot compare a tensor of shape {self.shape} and dtype {self.dtype} "
                        f"with {other!r} ({exc}); compare with a number or a tensor whose shape "
                        "broadcasts") from None
        return Tensor._make(out, self._device, False, None, 0)

    def __lt__(self, o): return self._compare(o, lambda a, b: a < b)
    def __le__(self, o): return self._compare(o, lambda a, b: a <= b)
    def __gt__(self, o): return self._compare(o, lambda a, b: a > b)
    def __ge__(self, o): return self._compare(o, lambda a, b: a >= b)
    def __eq__(self, o): return self._compare(o, lambda a, b: a == b)
    def __ne__(self, o): return self._compare(o, lambda a, b: a != b)
    __hash__ = object.__hash__

    # --- methods --------------------------------------------------------------------
    def exp(self): return ops.Exp.apply(self)
    def log(self): return ops.Log.apply(self)
    def tanh(self): return ops.Tanh.apply(self)
    def relu(self): return ops.ReLU.apply(self)
    def sigmoid(self): return ops.Sigmoid.apply(self)
    def sqrt(self): return ops.Sqrt.apply(self)
    def abs(self): return ops.Abs.apply(self)
    __abs__ = abs

    def clip(self, min=None, max=None):
        """Clamp to [min, max]; either bound may be None (not both), a number or a tensor."""
        if min is None and max is None:
            raise ArgumentError("clip: min and max are both None, so nothing would be clipped; pass at least one")
        for b in (min, max):
            if isinstance(b, Tensor) and b._device != self._device:
                raise DeviceError(f"clip: a bound is on {b._device} but the tensor is on {self._device}; move it "
                                  f"with .to('{self._device}')")
        lo, hi = (b.data if isinstance(b, Tensor) else b for b in (min, max))
        for name, b in (("min", lo), ("max", hi)):
            if not (b is None or isinstance(b, numbers.Real) or (is_array(b) and b.dtype.kind in "biuf")):
                raise ArgumentError(f"clip: {name} must be a number, a tensor or None, got {b!r}")
            if isinstance(b, int) and not -2**63 <= b < 2**63:
                raise ArgumentError(f"clip: {name}={_short(b)} is beyond any tensor's range; use float('inf') or "
                                    "leave it None")
        return ops.Clip.apply(self, lo=lo, hi=hi)

    def sum(self, axis=None, keepdims=False): return ops.Sum.apply(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return ops.Mean.apply(self, axis=axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, ddof=0):
        """Variance (ddof=0 as in NumPy; ddof=1 for the unbiased estimate)."""
        return ops.Var.apply(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def argmax(self, axis=None):
        """Indices of the maxima (an integer tensor, no gradient)."""
        if axis is not None:
            (axis,) = ops._norm_axis(axis, self.ndim, "argmax", single=True)
        if self._data.size == 0:
            raise ShapeError(f"argmax of an empty tensor of shape {self.shape} has no value")
        return Tensor._make(self._device.xp.argmax(self._data, axis=axis), self._device, False, None, 0)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = None if axes[0] is None else tuple(axes[0])
        return ops.Transpose.apply(self, axes=axes or None)

    @property
    def T(self):
        """The transpose (axes reversed)."""
        return ops.Transpose.apply(self, axes=None)

    def astype(self, dtype):
        """A copy with another dtype (no gradient flows through the cast)."""
        return tensor(self._data.astype(checks.dtype(dtype, "astype")), device=self._device)


# --------------------------------------------------------------------------- factories


def tensor(data, requires_grad=False, dtype=None, device=None) -> Tensor:
    """Make a leaf tensor. ndarrays keep their dtype; Python numbers and lists get the default dtype."""
    dev = _device(device) if device is not None else None
    if isinstance(data, Tensor):
        arr = data.data.copy()
    elif is_array(data):
        arr = data.copy()
        _check_dtype(arr.dtype)
    else:
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise DTypeError(f"tensor: cannot make an array from {type(data).__name__} ({exc})") from None
        _check_dtype(arr.dtype)
        if dtype is None and arr.dtype.kind in "iuf":
            arr = arr.astype(get_default_dtype())
    if dtype is not None:
        dt = checks.dtype(dtype, "tensor")
        _check_dtype(dt)
        arr = arr.astype(dt, copy=False)
    if dev is not None:
        arr = to_device(arr, dev)
    if requires_grad and arr.dtype.kind != "f":
        raise DTypeError(f"tensor: requires_grad=True needs a floating dtype, got {arr.dtype}; "
                         "pass dtype=np.float32 (or float64)")
    return Tensor._make(arr, dev, bool(requires_grad), None, 0)


def _factory_dtype(dtype, where, floating=False):
    why = "it draws real-valued samples; cast afterwards for integers" if floating else ""
    return checks.dtype(dtype, where, floating=floating, why=why) if dtype is not None else get_default_dtype()


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros: ``mg.zeros(2, 3)`` or ``mg.zeros((2, 3))``."""
    dev = _device(device)
    return tensor(dev.xp.zeros(checks.shape(shape, "zeros"), dtype=_factory_dtype(dtype, "zeros")),
                  requires_grad=requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones."""
    dev = _device(device)
    return tensor(dev.xp.ones(checks.shape(shape, "ones"), dtype=_factory_dtype(dtype, "ones")),
                  requires_grad=requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the device's generator (see ``mg.manual_seed``)."""
    dev = _device(device)
    arr = _random.generator(dev).normal(checks.shape(shape, "randn"), _factory_dtype(dtype, "randn", True))
    return Tensor._make(arr, dev, _grad_flag(requires_grad, arr), None, 0)


def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples from the device's generator."""
    dev = _device(device)
    arr = _random.generator(dev).uniform(checks.shape(shape, "rand"), _factory_dtype(dtype, "rand", True))
    return Tensor._make(arr, dev, _grad_flag(requires_grad, arr), None, 0)


def _grad_flag(flag, arr):
    if flag and arr.dtype.kind != "f":
        raise DTypeError(f"requires_grad=True needs a floating dtype, got {arr.dtype}")
    return bool(flag)


def _as_tensors(tensors, op):
    if isinstance(tensors, Tensor) or not hasattr(tensors, "__iter__"):
        raise ArgumentError(f"{op}: expects a list of tensors, got {type(tensors).__name__}; write "
                            f"mg.{op}([a, b])")
    ts = [t if isinstance(t, Tensor) else tensor(t) for t in tensors]
    if not ts:
        raise GraphError(f"{op}: needs at least one tensor")
    devs = {str(t.device) for t in ts}
    if len(devs) > 1:
        raise DeviceError(f"{op}: tensors are on different devices {sorted(devs)}; move them to one with .to()")
    return ts


def concatenate(tensors, axis=0) -> Tensor:
    """Join tensors along an existing axis."""
    checks.integer(axis, "concatenate", "axis")
    return ops.Concatenate.apply(*_as_tensors(tensors, "concatenate"), axis=axis)


def stack(tensors, axis=0) -> Tensor:
    """Join same-shaped tensors along a new axis."""
    checks.integer(axis, "stack", "axis")
    return ops.Stack.apply(*_as_tensors(tensors, "stack"), axis=axis)


def where(cond, a, b) -> Tensor:
    """``a`` where ``cond`` is true, else ``b`` (gradients flow to a and b, not to cond)."""
    ref = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else tensor(a)
    a, b = ref._other(a, "where"), ref._other(b, "where")
    c = cond.data if isinstance(cond, Tensor) else ref.device.xp.asarray(cond)
    return ops.Where.apply(a, b, cond=c.astype(bool, copy=False))


def maximum(a, b) -> Tensor:
    """Elementwise maximum (ties send the gradient to ``a``)."""
    ref = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else tensor(a)
    return ops.Maximum.apply(ref._other(a, "maximum"), ref._other(b, "maximum"))


def _unary(name, op):
    def fn(x):
        return op.apply(x if isinstance(x, Tensor) else tensor(x))
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name}."
    return fn


autograd.use_tensor_class(Tensor)

exp = _unary("exp", ops.Exp)
log = _unary("log", ops.Log)
tanh = _unary("tanh", ops.Tanh)
relu = _unary("relu", ops.ReLU)
sigmoid = _unary("sigmoid", ops.Sigmoid)
sqrt = _unary("sqrt", ops.Sqrt)
