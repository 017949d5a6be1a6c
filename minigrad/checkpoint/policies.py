"""What to keep inside a checkpointed segment, and how to store what is kept.

*Selective checkpointing* (``checkpoint(fn, *args, policy=...)``): a policy
looks at each op inside the segment and says whether its output is kept
through the forward pass (and reused, not recomputed, in backward) or
recomputed. ``save_matmuls`` keeps the expensive matrix products and
recomputes the cheap pointwise ops around them, the trade PyTorch's selective
activation checkpointing and JAX's ``checkpoint_dots`` policy make.

*Storage* of stored activations (checkpoint inputs, schedule slots): as they
are, in a narrower floating dtype (``store_dtype="float16"`` halves float32
bytes, at the price of rounding the recompute's starting point), and/or
offloaded to host memory (``offload=True``; pinned memory on a GPU, a no-op on
the CPU where host memory is where they already are).
"""
from __future__ import annotations

import numpy as np

from .. import ops, profiler
from ..autograd import Function
from ..backend import device_of, to_device, xp_of
from ..errors import ArgumentError, CheckpointError, DTypeError

MATMUL_OPS = (ops.MatMul, ops.Linear)


def save_nothing(op) -> bool:
    """Keep no op's output: recompute the whole segment (plain checkpointing)."""
    return False


def save_matmuls(op) -> bool:
    """Keep the outputs of matrix products (matmul, linear); recompute pointwise ops."""
    return op in MATMUL_OPS


def save_linears(op) -> bool:
    """Keep the outputs of linear layers only; recompute the rest, attention's (T, T) products included.

    In attention, Q Kᵀ is a matmul whose output is as large as the softmax
    weights, so ``save_matmuls`` saves no memory there; keeping only the
    projections (and recomputing Q Kᵀ, softmax and the product with V, as
    Korthikanti et al. 2023 do) keeps memory linear in the sequence length.
    """
    return op is ops.Linear


def replayable_ops():
    """Op classes whose kept outputs can be reused during recompute."""
    return [cls for cls in _all_ops() if cls.replay is not Function.replay]


def _all_ops():
    return [v for v in vars(ops).values() if isinstance(v, type) and issubclass(v, Function)]


def check_policy(policy, where="checkpoint"):
    """A policy must be callable (op class -> bool)."""
    if policy is not None and not callable(policy):
        raise CheckpointError(f"{where}: policy must be callable (op class -> bool), such as "
                              f"minigrad.checkpoint.save_matmuls; got {type(policy).__name__}")


class Selection:
    """The running state of a policy inside one segment: outputs kept in forward, reused in recompute.

    Each kept output is noted with the op and its operands: a tensor from
    outside the segment (a parameter, a captured tensor) by identity, one made
    inside it by shape and dtype. Recompute must reach the same ops with the
    same operands, or reusing a kept output would silently give another gradient.
    """

    def __init__(self, policy, kept=None, inputs=()):
        self.policy = policy
        self.inputs = {id(t): k for k, t in enumerate(inputs)}   # the segment's inputs, by position
        self.replaying = kept is not None
        self.kept = [] if kept is None else kept
        self.pos = 0
        self.inside = set()        # ids of tensors the segment's ops made (see observe)

    def wants(self, op) -> bool:
        if not self.policy(op):
            return False
        if op.replay is Function.replay:
            names = ", ".join(c.__name__ for c in replayable_ops())
            raise CheckpointError(f"checkpoint policy: asked to keep the output of {op.__name__}, which cannot "
                                  f"be reused in recompute; policies may keep: {names}")
        return True

    def _signature(self, op, inputs):
        sig = []
        for t in inputs:
            k = self.inputs.get(id(t))
            if k is not None:
                sig.append(("input", k))
                continue
            sig.append((t.shape, str(t.dtype)) if id(t) in self.inside else ("tensor", id(t)))
        return op, tuple(sig)

    def observe(self, event):
        """Op observer: note the tensors made inside the segment (the others come from outside)."""
        for o in event.outputs:
            self.inside.add(id(o))

    def run(self, node, arrays, kwargs, inputs=()):
        """Compute and keep (forward), or reuse the kept output (recompute). Returns (out, reused)."""
        sig = self._signature(type(node), inputs)
        if not self.replaying:
            out = node.forward(*arrays, **kwargs)
            self.kept.append((sig, profiler.track(out)))
            return out, False
        if self.pos >= len(self.kept):
            raise CheckpointError(f"checkpoint policy: recompute ran more kept ops ({type(node).__name__} is "
                                  f"number {self.pos + 1}) than the forward pass ({len(self.kept)}); the "
                                  "checkpointed function must run the same ops each time")
        was, out = self.kept[self.pos]
        if was != sig:
            raise CheckpointError(
                f"checkpoint policy: kept op number {self.pos + 1} was {was[0].__name__} on operands "
                f"{_describe(was[1])} in the forward pass, but recompute reached {sig[0].__name__} on "
                f"{_describe(sig[1])}; reusing its output would give a wrong gradient. The checkpointed "
                "function must run the same ops on the same tensors in backward as in forward.")
        self.pos += 1
        node.replay(*arrays, out=out, **kwargs)
        return out, True


def _describe(sig):
    def one(s):
        if s[0] == "tensor":
            return f"tensor at {hex(s[1])}"
        return f"input {s[1]}" if s[0] == "input" else f"shape {s[0]} {s[1]}"
    return "(" + ", ".join(one(s) for s in sig) + ")"


class Packed:
    """A saved array as ``Storage`` keeps it, with the dtype and device to give it back in."""

    __slots__ = ("array", "dtype", "device")

    def __init__(self, array, dtype, device):
        self.array, self.dtype, self.device = array, dtype, device

    @property
    def nbytes(self):
        return self.array.nbytes


class Storage:
    """How a stored activation is held between the forward pass and its use in backward.

    ``pack`` / ``unpack`` are a pair of saved-array hooks
    (``mg.autograd.saved_arrays_hooks(storage.pack, storage.unpack)``);
    ``store`` / ``load`` do the same for the chain executor's slots.
    """

    def __init__(self, dtype=None, offload=False):
        if dtype is not None:
            try:
                dt = np.dtype(dtype)
            except TypeError:
                raise DTypeError(f"store_dtype must be a floating dtype such as 'float16', got {dtype!r}") from None
            if dt.kind != "f":
                raise DTypeError(f"store_dtype must be a floating dtype such as 'float16' or 'float32', "
                                 f"got {dt}")
            dtype = dt
        if not isinstance(offload, (bool, np.bool_)):
            raise ArgumentError(f"offload must be True or False (True keeps stored activations in host memory), "
                                f"got {offload!r}")
        self.dtype, self.offload = dtype, bool(offload)

    @property
    def plain(self) -> bool:
        return self.dtype is None and not self.offload

    def store(self, array):
        """The form in which ``array`` is kept: cast and/or moved to the host."""
        if self.dtype is not None and array.dtype.kind == "f" and array.dtype != self.dtype:
            with np.errstate(over="ignore"):   # an overflow is reported below, with the fix
                narrow = array.astype(self.dtype)
            if self.dtype.itemsize < array.dtype.itemsize:
                _check_range(array, narrow)
            array = narrow
        if self.offload and not isinstance(array, np.ndarray):
            array = _to_pinned_host(array)
        return profiler.track(array)

    def load(self, stored, dtype, device):
        """Back to the dtype and device the computation uses."""
        if self.offload:
            stored = to_device(stored, device)
        if stored.dtype != dtype:
            stored = stored.astype(dtype)
        return stored

    def pack(self, array):
        """Saved-array pack hook: ``store`` it, remembering its dtype and device."""
        return Packed(self.store(array), array.dtype, device_of(array))

    def unpack(self, packed):
        """Saved-array unpack hook: ``load`` it back."""
        return self.load(packed.array, packed.dtype, packed.device)

    def __repr__(self):
        return f"Storage(dtype={self.dtype}, offload={self.offload})"


def _check_range(array, narrow):
    """Refuse a narrowing cast that turns finite values into infinities (float16 stops at 65504)."""
    xp = xp_of(array)
    if xp.isinf(narrow).any() and (xp.isinf(narrow) & xp.isfinite(array)).any():
        top = float(xp.abs(array[xp.isfinite(array)]).max())
        raise DTypeError(f"store_dtype={narrow.dtype}: a stored {array.dtype} activation of shape {array.shape} "
                         f"holds values up to {top:.4g}, beyond {narrow.dtype}'s largest "
                         f"{float(np.finfo(narrow.dtype).max):.6g}; they would come back as inf. Store in a wider "
                         "dtype (store_dtype=None or 'float32') or scale the activations down (normalise them)")


def _to_pinned_host(array):
    """Copy a CuPy array into page-locked host memory (fast, asynchronous-capable transfers back)."""
    import cupyx  # noqa: PLC0415
    host = cupyx.empty_pinned(array.shape, array.dtype)
    array.get(out=host)
    return host


PLAIN = Storage()
__all__ = ["save_nothing", "save_matmuls", "save_linears", "Storage", "Selection", "replayable_ops", "check_policy"]
