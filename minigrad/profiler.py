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
On a GPU the same numbers come from CuPy's memory pool instead: while a
profile is open, an allocator hook counts every block handed to an array and
given back (sizes rounded to the pool's 512-byte blocks), so peaks are real
device peaks.

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

import json
import threading
import time as _time
import weakref
from contextlib import contextmanager
from functools import partial

import numpy as np

from .backend import is_array

_live: dict = {}          # id(owner buffer) -> (weakref, nbytes)
# host: NumPy buffers held by minigrad; dev: CuPy pool memory in use, seen through the allocator
_state = {"bytes": 0, "count": 0, "dev_bytes": 0, "dev_count": 0}
_active: list = []        # open Profile objects, innermost last


class _Phases(threading.local):
    """Per thread (as the recompute mode is): one thread's backward does not book another's forward."""

    def __init__(self):
        self.stack = ["forward"]    # the top is the phase FLOPs are booked to


_phases = _Phases()


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


def _bump():
    """A buffer appeared: raise the peaks of the open profiles."""
    total = _state["bytes"] + _state["dev_bytes"]
    count = _state["count"] + _state["dev_count"]
    dev = _state["dev_bytes"]
    for prof in _active:
        if total > prof.peak_bytes:
            prof.peak_bytes = total
        if count > prof.peak_tensors:
            prof.peak_tensors = count
        if dev > prof.device_peak_bytes:
            prof.device_peak_bytes = dev


def track(a):
    """Count ``a``'s buffer as held by minigrad until it is freed. Returns ``a``.

    NumPy arrays only: GPU memory is counted by CuPy's allocator (see ``DeviceMemory``).
    """
    if a.__class__ is not np.ndarray:
        return a
    owner = a if a.base is None else _owner(a)
    key = id(owner)
    if key in _live:
        return a
    nbytes = owner.nbytes
    _live[key] = (weakref.ref(owner, partial(_release, key)), nbytes)
    _state["bytes"] += nbytes
    _state["count"] += 1
    if _active:
        _bump()
    return a


def live_tensors() -> int:
    """Number of distinct array buffers minigrad holds right now (GPU blocks counted while profiling)."""
    return _state["count"] + _state["dev_count"]


def live_bytes() -> int:
    """Bytes owned by the buffers counted in ``live_tensors()``: host arrays plus GPU pool memory in use."""
    return _state["bytes"] + _state["dev_bytes"]


class DeviceMemory:
    """Counts CuPy's memory-pool traffic: every block handed to an array and given back.

    Installed (for the running thread) while a profile is open and CuPy is in
    use, so ``mg.profile()`` reports real device peaks: the bytes the pool has
    handed out (rounded to its 512-byte blocks), which is what runs out.
    """

    def __init__(self):
        from cupy.cuda import memory_hook  # noqa: PLC0415

        outer = self

        class _Hook(memory_hook.MemoryHook):
            name = "minigrad"

            def malloc_postprocess(self, **kw):
                outer.malloc(kw["mem_size"])

            def free_postprocess(self, **kw):
                outer.free(kw["mem_size"])

        self.hook = _Hook()
        self.depth = 0

    @staticmethod
    def malloc(size):
        _state["dev_bytes"] += size
        _state["dev_count"] += 1
        if _active:
            _bump()

    @staticmethod
    def free(size):
        _state["dev_bytes"] -= size
        _state["dev_count"] -= 1

    def enter(self):
        if self.depth == 0:
            import cupy  # noqa: PLC0415
            _state["dev_bytes"] = cupy.get_default_memory_pool().used_bytes()
            _state["dev_count"] = 0
            self.hook.__enter__()
        self.depth += 1

    def exit(self):
        self.depth -= 1
        if self.depth == 0:
            self.hook.__exit__(None, None, None)
            _state["dev_bytes"] = _state["dev_count"] = 0


_device_memory = []


def _device_hook():
    """The allocator hook, when minigrad uses CuPy on a working GPU (else None)."""
    from . import backend  # noqa: PLC0415
    if backend._cupy is None or not backend.cuda_available():
        return None
    if not _device_memory:
        _device_memory.append(DeviceMemory())
    return _device_memory[0]


@contextmanager
def counting_device_memory():
    """Inside the block ``live_bytes()`` counts GPU pool memory too, as it does inside a profile."""
    hook = _device_hook()
    if hook is not None:
        hook.enter()
    try:
        yield
    finally:
        if hook is not None:
            hook.exit()


_PHASE_TRACKS = {"forward": 1, "backward": 2, "recompute": 3}   # trace-event thread ids


def current_phase() -> str:
    """The phase FLOPs are booked to now: forward, backward or recompute."""
    return _phases.stack[-1]


@contextmanager
def phase(name: str):
    """Book FLOPs to ``name`` inside the block (used by backward and recompute)."""
    stack = _phases.stack
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def record_op(op_name: str, flops: int):
    """Called after each op runs (forward or backward): books FLOPs, extends timelines."""
    ph = _phases.stack[-1]
    total = _state["bytes"] + _state["dev_bytes"]
    now = _time.perf_counter_ns() if _active else 0
    for prof in _active:
        prof._stamps.append((now, prof.peak_bytes))      # see Note [Chrome trace]
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
    These count host and GPU memory together; ``device_peak_bytes`` and
    ``device_start_bytes`` are the GPU's alone (0 on the CPU).
    ``flops``: FLOPs by phase; ``op_flops``: by ``(phase, op name)``.
    ``timeline``: one ``(phase, op, live_bytes)`` row after each op, forward and backward.
    """

    def __init__(self):
        self.start_bytes = self.start_tensors = 0
        self.end_bytes = self.end_tensors = 0
        self.peak_bytes = self.peak_tensors = 0
        self.device_start_bytes = self.device_peak_bytes = 0
        self.flops = {"forward": 0, "backward": 0, "recompute": 0}
        self.op_flops: dict = {}          # (phase, op name) -> FLOPs
        self.timeline: list = []
        self._stamps: list = []           # (time_ns, peak so far) beside each timeline row
        self._t_start = self._t_end = None

    def __enter__(self):
        self._stamps, self._t_start, self._t_end = [], _time.perf_counter_ns(), None
        self._hook = _device_hook()
        if self._hook is not None:
            self._hook.enter()
        self.start_bytes = self.peak_bytes = live_bytes()
        self.start_tensors = self.peak_tensors = live_tensors()
        self.device_start_bytes = self.device_peak_bytes = _state["dev_bytes"]
        _active.append(self)
        return self

    def __exit__(self, *exc):
        self._t_end = _time.perf_counter_ns()
        _active.remove(self)
        self.end_bytes, self.end_tensors = live_bytes(), live_tensors()
        if self._hook is not None:
            self._hook.exit()
        return False

    def export_chrome_trace(self, path):
        """Write the timeline as Chrome trace-event JSON: one slice per op on a track per phase,
        and a ``live bytes`` counter whose highest sample is ``peak_bytes``. Returns ``path``."""
        us = lambda ns: (ns - self._t_start) / 1000            # noqa: E731 (trace times are in µs)
        end = self._t_end if self._t_end is not None else _time.perf_counter_ns()
        events = [{"ph": "M", "pid": 1, "tid": 0, "name": "process_name", "args": {"name": "minigrad"}}]
        events += [{"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": ph}}
                   for ph, tid in _PHASE_TRACKS.items()]

        def count(ts, value):
            events.append({"ph": "C", "pid": 1, "tid": 0, "name": "live bytes", "ts": ts, "args": {"bytes": value}})

        count(0.0, self.start_bytes)
        high, before = self.start_bytes, self._t_start
        for (ph, op, live), (t, peak) in zip(self.timeline, self._stamps):
            start, dur = us(before), (t - before) / 1000
            events.append({"ph": "X", "pid": 1, "tid": _PHASE_TRACKS.get(ph, 4), "name": op, "cat": ph,
                           "ts": start, "dur": dur, "args": {"live_bytes": live}})
            if peak > max(high, live):                         # the peak rose inside this slice
                count(start + dur / 2, peak)
            count(us(t), live)
            high, before = max(high, peak, live), t
        if self.peak_bytes > high:                             # after the last op, before the block ended
            count((us(before) + us(end)) / 2, self.peak_bytes)
        count(us(end), self.end_bytes if self._t_end is not None else live_bytes())
        trace = {"traceEvents": events, "displayTimeUnit": "ms",
                 "otherData": {"peak_bytes": self.peak_bytes, "start_bytes": self.start_bytes,
                               "flops": dict(self.flops)}}
        with open(path, "w") as f:
            json.dump(trace, f)
        return path

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


# Note [Chrome trace]
# -------------------
# export_chrome_trace writes the timeline in the Chrome trace-event format (chrome://tracing,
# https://ui.perfetto.dev). It needs two things a (phase, op, bytes) row does not hold: when
# the row was written, and how high live bytes went *between* rows (an op's temporaries can
# rise above both neighbours). Both are stamped beside each row, in ``Profile._stamps``:
# ``(time_ns, peak_bytes so far)``. The running peak only grows, so where it grew between two
# rows, the file carries one counter sample inside that op's slice at the new height; the
# counter's maximum is then exactly ``peak_bytes``. Slices run from the previous row (or the
# profile's start) to the op's row; the exact moment of a peak inside a slice is not recorded,
# so its sample sits at the slice's midpoint.
