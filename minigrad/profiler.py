"""Live-array accounting, peaks, FLOPs by phase and a memory timeline.

What is counted
---------------
Every array buffer minigrad holds: the data of a tensor, an array an op saved
for backward, a gradient flowing through backward, optimizer state. A buffer
is counted once however many tensors or views share it (a view is attributed
to the array that owns the memory, found through ``.base``). A buffer stops
counting the moment it is freed: a weak reference's callback fires when the
last reference goes, which with CPython's reference counting is immediate.
``live_tensors()`` is the number of such buffers, ``live_bytes()`` their
``nbytes``. Temporaries that NumPy creates *inside* an op and frees before the
op returns are not minigrad's and are not counted (tracemalloc sees them).
0-d results are counted (as 0-d arrays); NumPy scalars are not arrays and are not.

FLOP convention (per op, see each ``Function.flops`` in ``ops.py``)
-------------------------------------------------------------------
matmul ``(m,k)@(k,n)``: 2·m·k·n; elementwise unary and binary ops (including
exp, log, tanh...): 1 per output element; reductions: 1 per input element;
reshape, transpose and indexing: 0. Backward of an op costs, by default, its
forward FLOPs once for each input that needs a gradient (exact for matmul);
ops where that is wrong say so. FLOPs are booked to the phase running:
``"forward"``, ``"backward"`` or ``"recompute"`` (forwards re-run by
checkpointing during backward).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

from .backend import is_array

_live: dict = {}          # id(owner buffer) -> (weakref, nbytes)
_state = {"bytes": 0, "count": 0}
_active: list = []        # open Profile objects, innermost last
_phase = ["forward"]      # a stack; the top is the phase FLOPs are booked to


def _owner(a):
    """The array that owns ``a``'s memory (``a`` itself unless it is a view)."""
    base = a.base
    while base is not None and is_array(base):
        a, base = base, base.base
    return a


def _release(key, _ref):
    entry = _live.pop(key, None)
    if entry is not None:
        _state["bytes"] -= entry[1]
        _state["count"] -= 1


def track(a):
    """Count ``a``'s buffer as held by minigrad until it is freed. Returns ``a``."""
    if not is_array(a):
        return a
    owner = _owner(a)
    key = id(owner)
    if key in _live:
        return a
    nbytes = owner.nbytes
    _live[key] = (weakref.ref(owner, lambda r, k=key: _release(k, r)), nbytes)
    total = _state["bytes"] + nbytes
    _state["bytes"] = total
    _state["count"] += 1
    for prof in _active:
        if total > prof.peak_bytes:
            prof.peak_bytes = total
        if _state["count"] > prof.peak_tensors:
            prof.peak_tensors = _state["count"]
    return a


def live_tensors() -> int:
    """Number of distinct array buffers minigrad holds right now."""
    return _state["count"]


def live_bytes() -> int:
    """Bytes owned by the buffers counted in ``live_tensors()``."""
    return _state["bytes"]


def current_phase() -> str:
    """The phase FLOPs are booked to now: forward, backward or recompute."""
    return _phase[-1]


@contextmanager
def phase(name: str):
    """Book FLOPs to ``name`` inside the block (used by backward and recompute)."""
    _phase.append(name)
    try:
        yield
    finally:
        _phase.pop()


def record_op(op_name: str, flops: int):
    """Called after each op runs (forward or backward): books FLOPs, extends timelines."""
    ph = _phase[-1]
    total = _state["bytes"]
    for prof in _active:
        prof.flops[ph] += flops
        key = (ph, op_name)
        prof.op_flops[key] = prof.op_flops.get(key, 0) + flops
        prof.timeline.append((ph, op_name, total))


def profiling() -> bool:
    """True while at least one ``profile()`` block is open."""
    return bool(_active)


class Profile:
    """What one ``with mg.profile() as prof:`` block saw.

    ``peak_bytes`` / ``peak_tensors``: the most bytes / buffers alive at once,
    everything minigrad held included (parameters too); ``start_bytes`` is what
    was alive on entry, so ``peak_bytes - start_bytes`` is what the block added.
    ``flops``: FLOPs by phase; ``op_flops``: by ``(phase, op name)``.
    ``timeline``: one ``(phase, op, live_bytes)`` row after each op, forward and backward.
    """

    def __init__(self):
        self.start_bytes = self.start_tensors = 0
        self.end_bytes = self.end_tensors = 0
        self.peak_bytes = self.peak_tensors = 0
        self.flops = {"forward": 0, "backward": 0, "recompute": 0}
        self.op_flops: dict = {}          # (phase, op name) -> FLOPs
        self.timeline: list = []

    def __enter__(self):
        self.start_bytes = self.peak_bytes = _state["bytes"]
        self.start_tensors = self.peak_tensors = _state["count"]
        _active.append(self)
        return self

    def __exit__(self, *exc):
        _active.remove(self)
        self.end_bytes, self.end_tensors = _state["bytes"], _state["count"]
        return False

    @property
    def total_flops(self) -> int:
        """Forward + backward + recompute FLOPs."""
        return sum(self.flops.values())

    def __repr__(self):
        f = self.flops
        return (f"Profile(peak_bytes={self.peak_bytes:,}, peak_tensors={self.peak_tensors}, "
                f"start_bytes={self.start_bytes:,}, flops: forward={f['forward']:,} "
                f"backward={f['backward']:,} recompute={f['recompute']:,})")


def profile() -> Profile:
    """Measure a block: ``with mg.profile() as prof: ...`` then read ``prof.peak_bytes`` etc."""
    return Profile()
