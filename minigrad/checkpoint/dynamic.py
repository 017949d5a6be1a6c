"""``dynamic(budget=, heuristic=)``: any eager code under a hard cap on the bytes a step holds.

Dynamic Tensor Rematerialization (Kirisame et al., ICLR 2021). Inside the
block every op output and every array an op saves for backward becomes a
*buffer* this region accounts for; when what the step holds would not leave
room for the next allocation, the heuristic picks a buffer to evict, and when
backward needs an evicted array it is rematerialized by replaying the op that
made it, from inputs that are themselves rematerialized when needed.

Note [Dynamic rematerialization]
--------------------------------
1. A *buffer* is one block of memory (a view counts as its base, as in the
   profiler). It knows its *recipe*: the op record that made it (op class,
   its inputs, keyword arguments, RNG state, FLOPs) and which result it is
   (output i, or the k-th array the op saved). Arrays from outside the block
   (parameters, inputs the user made, arrays passed to an op as keyword
   arguments such as dropout's mask) have no recipe and are never evicted.
2. The budget means what the graph planner's budget means: every array the
   profiler counts (``mg.profiler.live_bytes()``) beyond what was live when the
   step began: saved arrays, live outputs, gradients in flight, a dropout
   mask, the parameters' gradients while they are made. Only saved
   activations with a recipe are evicted; the rest take room. A *step* begins
   at the first recorded op while the region holds nothing, and ends when the
   last saved array is let go. Ops that are not recorded (under ``no_grad``)
   save nothing: their outputs are treated as arrays from outside.
3. A buffer may be evicted only when the region's reference is the only one
   left (``sys.getrefcount``): then dropping it frees the memory. That one
   test keeps every pinned array resident: a tensor the user holds, an input
   of the op running now, an array a backward step is reading, a view. From
   the first saved array a backward step reads until the next step begins,
   the step's other saved arrays are pinned too (DTR locks all the inputs of
   the op it runs): bringing one back must not evict another the same step
   reads next (on the transformer the query-key-value projection was evicted
   to make room for the attention weights and replayed for the same step).
4. The cap is kept *before* allocations, with a reserve: after each op the
   region evicts until the counted bytes plus what the next op will allocate
   fit the budget (what the count grew by up to the next op in the previous
   step, arrays made between ops included, while the step repeats; else the
   most it has grown by at one op so far). At that moment the inputs of the op
   that has just run are still pinned by it (Note 3), though often only a
   temporary of the calling code holds them past it (the scores in
   ``softmax(scores * scale)``, which only the Mul's recipe keeps, Note 5): when
   nothing else is left to evict, the region lets go of them too, so each is
   freed as soon as the caller lets go, before the next op allocates (one the
   caller keeps stays resident and current). Before a backward
   step reads its saved arrays, until the gradients it will make fit too;
   before a replay, until all the replay allocates fits. So in steady state
   (a step seen once) the profiler's peak stays within the budget, unless
   what cannot be evicted leaves no room for the next op (the arrays the
   running code still holds, in variables or as the finished op's inputs it
   keeps); in the first step, an op that allocates more than
   any before it may also overshoot. ``peak_bytes`` shows either honestly.
5. A buffer is held while a saved array needs it. Once the region has had to
   evict (memory is tight), it is also held while a recipe that may still be
   replayed reads it, so replays start from resident inputs rather than from
   the start of the graph (the residual stream of a transformer is read by
   every LayerNorm's recipe); such buffers are evicted first while they are
   *idle*: nothing needed waits evicted downstream of them (a saved array,
   or an evicted buffer one is made from; an evicted intermediate whose
   products are resident does not count). Before any eviction, keeping them
   would only cost memory and time (no replay can need them yet). A buffer
   nothing holds is freed as soon as no tensor holds it either.
6. Replays run inside ``recomputing(rng_state)``: BatchNorm leaves its running
   statistics alone, random ops redraw the same numbers, FLOPs are booked to
   "recompute". The same op on the same arrays gives the same bits, so
   gradients equal the plain run's exactly.
7. Staleness is measured on a logical clock (one tick per op, per unpack, per
   replay), so runs are deterministic; ``"random"`` draws from its own seeded
   generator. For ``"dtr"`` a buffer's last use is its last use by a recorded
   op: backward reads each saved array once, in the reverse order of the
   forward, so what the forward used last is needed first, and a read or a
   replay in backward says nothing about the next need. Its cost counts the
   evicted ancestors a replay must run first (an array whose inputs were
   evicted costs more to bring back) and its own op three times: its own op
   runs at every rematerialization, while evicted ancestors may come back
   with another replay first. The weight 3 is tuned: of 1, 2, 3, 5, 9 and 17
   it recomputed least on the graphs of the benchmark's section 5. Counting
   the evicted descendants too, as the paper's e* does, and refreshing
   staleness on backward reads both recomputed more there (RESULTS.md
   section 9). The bytes it divides by stop at the *shortfall*: what is
   still missing for the allocation the region is making room for. Bytes
   beyond it buy nothing now, so they must not make a large buffer look
   cheap. On the transformer, a little more than one LayerNorm output was
   missing before a backward step, and the region evicted the second
   block's attention weights, eight times that size (needed two steps
   later: a 9 MFLOP replay), rather than two LayerNorm outputs; with bytes
   counted up to the shortfall, DTR recomputes 1.04x the proven optimum
   there instead of 1.56x (1.30x instead of 1.97x at a larger budget; the
   residual MLP 1.44x instead of 1.43x; RESULTS.md section 9). With it the
   weight was tried again: 2 and 3 recompute the same on those graphs, 1,
   5 and 9 more. ``"dtr_local"`` stays the paper's
   plain score, as the ablation it is.
8. A step that needed no eviction (or evicted only what recipes alone held)
   is followed by *fast* steps: while a step repeats it (the same op with
   outputs of the same size at each position, and no more bytes counted after
   it), the saved-array hooks are off, so arrays are saved as they are and no
   recipe is made; that same sequence met the budget. At the first op that
   differs, the region goes back to full bookkeeping for the rest of the step
   (what was saved before that point is not evictable), and the step after it
   learns afresh.
"""
from __future__ import annotations

import contextlib
import random
import sys
import weakref

import numpy as np

from .. import autograd, profiler
from ..backend import is_array
from ..errors import CheckpointError, MinigradError
from .schedules import parse_bytes

# --------------------------------------------------------------------------- heuristics
# Each scores an evictable buffer; the lowest score is evicted first.


def _h_dtr(buf, now, region):
    """h_DTR = cost / (bytes x staleness): cost is what a replay of ``buf`` would run (``replay_cost``) with
    its own op counted three times, bytes up to the shortfall being filled, staleness from its last use by a
    recorded op (Note 7)."""
    return (region.replay_cost(buf) + 2 * buf.recipe[0].flops) / (max(min(buf.nbytes, region.shortfall), 1)
                                                                   * (now - buf.fwd + 1))


def _h_dtr_local(buf, now, region):
    """h_DTR without the evicted ancestors: the buffer's own op's FLOPs only."""
    return buf.recipe[0].flops / (max(buf.nbytes, 1) * (now - buf.fwd + 1))


def _h_lru(buf, now, region):
    """Least recently used first (a backward step's read or a replay counts as a use)."""
    return buf.last


def _h_size(buf, now, region):
    """Largest first."""
    return -buf.nbytes


def _h_random(buf, now, region):
    """Uniformly at random (from the region's seeded generator)."""
    return region.rng.random()


HEURISTICS = {"dtr": _h_dtr, "dtr_local": _h_dtr_local, "lru": _h_lru, "size": _h_size, "random": _h_random}


def _fmt(n) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _root(a):
    """The array that owns ``a``'s memory (``a`` itself unless it is a view)."""
    base = a.base
    while base is not None and is_array(base):
        a, base = base, base.base
    return a


def _address(a) -> int:
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data.ptr


def _geometry(a, root):
    """How to rebuild the view ``a`` from ``root``: None if it is ``root``, else (shape, strides, offset, dtype)."""
    if a is root:
        return None
    return (a.shape, a.strides, _address(a) - _address(root), a.dtype)


def _view(root, geom):
    if geom is None:
        return root
    shape, strides, offset, dtype = geom
    if isinstance(root, np.ndarray):
        return np.ndarray(shape, dtype, buffer=root, offset=offset, strides=strides)
    import cupy  # noqa: PLC0415
    return cupy.ndarray(shape, dtype, memptr=root.data + offset, strides=strides)


def _rebuildable(root, geom) -> bool:
    """Can ``_view`` rebuild this view from a fresh root? (NumPy needs a contiguous base.)"""
    return geom is None or not isinstance(root, np.ndarray) or root.flags.c_contiguous or root.flags.f_contiguous


# --------------------------------------------------------------------------- records


class _Record:
    """How to replay one op: class, inputs (refs), keyword arguments, RNG state, FLOPs."""

    __slots__ = ("fn_cls", "needs", "inputs", "kwargs", "rng_state", "flops", "new_bytes", "made", "holds",
                 "__weakref__")

    def __init__(self, fn_cls, needs, inputs, kwargs, rng_state, flops):
        self.fn_cls, self.needs, self.inputs = fn_cls, needs, inputs
        self.kwargs, self.rng_state, self.flops = kwargs, rng_state, flops
        self.new_bytes = 0
        self.made = []         # weak references to the buffers this op made (for the neighbourhood)
        self.holds = []        # (weak reference, buffer): the inputs this recipe keeps resident


class _Buffer:
    """One block of memory: its bytes, its recipe, and (while resident and needed) the array itself."""

    __slots__ = ("nbytes", "recipe", "array", "alive", "handles", "saved", "last", "fwd", "users", "__weakref__")

    def __init__(self, nbytes, recipe, last):
        self.nbytes, self.recipe, self.last = nbytes, recipe, last
        self.fwd = last        # made, or last read, by a recorded op (reads in backward do not count)
        self.array = None      # the region's strong reference (only while a saved array needs it)
        self.alive = None      # weak reference to the current array, None when evicted
        self.handles = 0       # saved arrays (in nodes) and recipes that need this buffer
        self.saved = 0         # of which saved arrays
        self.users = []        # weak references to the records of ops that read it

    geom = None                # a buffer is also the ref to the whole of itself (see _Ref)

    @property
    def buf(self):
        return self

    def current(self):
        return self.alive() if self.alive is not None else None


class _Ref:
    """A view of a buffer: what a saved array or a recipe's input points to (a buffer stands for its whole)."""

    __slots__ = ("buf", "geom", "__weakref__")

    def __init__(self, buf, geom):
        self.buf, self.geom = buf, geom


class _Const:
    """An array from outside the region (a parameter, a user's input): held as is, never evicted."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


class _Saved:
    """What a node holds for one saved array: the array until its op ends, then a ref (or a const)."""

    __slots__ = ("array", "slot", "node", "ref", "nbytes", "grads", "op", "__weakref__")

    def __init__(self, array, slot, node):
        self.array, self.slot, self.node, self.ref = array, slot, node, None
        self.grads = 0                 # bytes its node's backward makes: gradients and scratch
        self.op = None                 # its node's op name
        self.nbytes = array.nbytes     # what the tape reports as saved, resident or not


def _copy_kwargs(kwargs):
    """Keyword arguments for a replay: lists an op appends to (BatchNorm's stats) start empty again."""
    return {k: ([] if isinstance(v, list) else v) for k, v in kwargs.items()}


# --------------------------------------------------------------------------- the region


class Dynamic:
    """The state of one ``with dynamic(...)`` block; read ``evictions``, ``remat_flops``, ``peak_bytes``.

    ``remats`` counts op replays, ``fast_steps`` the steps begun fast (Note 8);
    ``counted_bytes`` is what the budget counts now (Note 2), ``peak_bytes`` the
    most it counted at the region's checks (after each op, before each backward
    step and replay); ``resident_bytes`` is the part the region's buffers hold. ``timeline`` holds ``(phase, event,
    counted bytes)`` rows in the shape of ``Profile.timeline`` (one per op,
    eviction and replay), so the same plotting code draws both.
    """

    def __init__(self, budget, heuristic="dtr", seed=0):
        if not isinstance(heuristic, str) or heuristic not in HEURISTICS:
            raise CheckpointError(f"dynamic: unknown heuristic {heuristic!r}; choose one of "
                                  f"{', '.join(HEURISTICS)}")
        try:
            self.budget = parse_bytes(budget)
        except MinigradError as exc:
            raise CheckpointError(f"dynamic: {exc}") from None
        self.heuristic = heuristic
        self._score = HEURISTICS[heuristic]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CheckpointError(f"dynamic: seed must be an integer (it seeds the 'random' heuristic), got {seed!r}; "
                                  "pass e.g. seed=0")
        self.rng = random.Random(seed)
        self.evictions = 0
        self.remats = 0
        self.remat_flops = 0
        self.peak_bytes = 0
        self.resident_bytes = 0
        self.timeline: list = []
        self._clock = 0
        self._reserve = 0              # the largest allocation one op (or replay) has made
        self._floor = 0                # live bytes that are not the step's (Note 2)
        self.shortfall = 0             # bytes still missing while the region makes room (Note 7)
        self._in_step = False
        self._nsaved = 0               # saved arrays (in nodes) the region holds buffers for
        self._allocs: list = []        # (op class, bytes it allocated, counted after it, output bytes,
                                       #  growth of the count since the op before settled) per op
        self._settled = 0              # the count after the last op made room for the next
        self._prev: list = []          # the same for the previous step
        self._fast = False             # this step repeats one that needed no eviction (Note 8)
        self._k = 0                    # ops of this step seen while fast
        self.fast_steps = 0            # steps begun fast (Note 8)
        self._calm = True              # no eviction (and nothing unforeseen) in this step so far
        self._partial = False          # this step went full part way through (Note 8)
        self._by_root: dict = {}       # id(array) -> buffer, for resident buffers
        self._held: dict = {}          # id(buffer) -> buffer: resident buffers a saved array needs
        self._watch: dict = {}         # id -> weak reference to a saved array's ref or a recipe needing a buffer
        self._pending: list = []
        self._slot = [None, 0]         # (id of the node being packed for, next slot index)
        self._node_saved: dict = {}    # id(node) -> weak references to its saved arrays (this step)
        self._pin_node = None          # the node whose backward is reading its saved arrays
        self._pin: frozenset = frozenset()   # ids of the buffers that backward reads: not evicted meanwhile
        self._stack = None
        self._hooks = None             # the saved_arrays_hooks block, while entered

    # --- the context -------------------------------------------------------------
    def __enter__(self):
        with contextlib.ExitStack() as stack:      # undone at once if the second cannot enter
            stack.enter_context(profiler.counting_device_memory())
            self._hooks = stack.enter_context(autograd.saved_arrays_hooks(self._pack, self._unpack))
            self._hooks.enabled = not self._fast       # a fast step saves arrays as they are (Note 8)
            stack.enter_context(autograd.op_observer(self._observe))
            self._stack = stack.pop_all()
        self._floor = profiler.live_bytes()
        return self

    def __exit__(self, *exc):
        stack, self._stack, self._hooks = self._stack, None, None
        stack.__exit__(*exc)
        self._pending = []
        if exc[0] is not None and issubclass(exc[0], BudgetError):
            self.release()
        else:      # what only recipes held goes now: a tensor kept after the block does not keep its ancestors
            for buf in [b for b in self._held.values() if self.idle(b) and sys.getrefcount(b.array) == 2]:
                self._evict(buf)
        return False

    def release(self):
        """Drop every array the region holds (what is still needed is rematerialized if asked for)."""
        for buf in list(self._held.values()):
            buf.array = None
        self._held.clear()

    @property
    def counted_bytes(self) -> int:
        """What the budget counts now: live bytes beyond those that were live when the step began."""
        return profiler.live_bytes() - self._floor

    def _check(self):
        """The counted bytes now, raising ``peak_bytes`` if they are its new high."""
        n = profiler.live_bytes() - self._floor
        if n > self.peak_bytes:
            self.peak_bytes = n
        return n

    @property
    def buffers(self) -> int:
        """Buffers resident now (held for a saved array, or kept alive by a tensor)."""
        return len(self._by_root)

    # --- accounting ------------------------------------------------------------------
    def _tick(self):
        self._clock += 1
        return self._clock

    def _add(self, buf, array):
        """``array`` is now the resident content of ``buf``."""
        key = id(array)
        buf.alive = weakref.ref(array, lambda _r, b=buf, k=key: self._gone(b, k))
        self._by_root[key] = buf
        self.resident_bytes += buf.nbytes
        if buf.handles:
            buf.array = array
            self._held[id(buf)] = buf

    @staticmethod
    def _new(rec, root, kind, idx, now):
        buf = _Buffer(root.nbytes, (rec, kind, idx), now)
        rec.made.append(weakref.ref(buf))
        return buf

    def _gone(self, buf, key):
        """The array of ``buf`` was freed (evicted, or nothing needs it any more)."""
        if self._by_root.get(key) is buf:
            del self._by_root[key]
        buf.alive = None
        self.resident_bytes -= buf.nbytes

    def _unneeded(self, wr, buf, saved):
        """What held ``buf`` let go: a saved array (its node ran backward, or died) or a recipe.

        A buffer nothing needs any more is dropped (freed unless a live tensor holds
        it), and the recipe that made it lets go of its inputs once nothing it made
        is needed either: iteratively, as chains may be long.
        """
        if self._watch.pop(id(wr), None) is None:      # let go of earlier, with its recipe
            return
        buf.saved -= saved
        self._nsaved -= saved
        if not self._nsaved and self._in_step:
            self._end_step()
        work = [buf]
        while work:
            b = work.pop()
            b.handles -= 1
            if b.handles:
                continue
            if b.array is not None:
                self._held.pop(id(b), None)
                b.array = None
            rec = b.recipe[0]
            if rec.holds and all((m := w()) is None or m.handles == 0 for w in rec.made):
                holds, rec.holds = rec.holds, []
                for w, inp in holds:
                    if self._watch.pop(id(w), None) is not None:
                        work.append(inp)

    def _end_step(self):
        """No saved array is left: the step has ended (Note 2). If it needed no eviction, the next one
        runs fast while it repeats it (Note 8)."""
        self._in_step = False
        # a step that diverged from a fast one was seen only from there on: it predicts nothing
        self._prev, self._allocs = (self._allocs if not self._partial else []), []
        self._partial = False
        self._node_saved.clear()
        self._pin_node, self._pin = None, frozenset()
        self._fast = self._calm and bool(self._prev)
        self._k = 0
        if self._hooks is not None:
            self._hooks.enabled = not self._fast

    def _need(self, target, owner=None):
        """Hold a buffer while something needs it: a saved array (``target`` is its ``_Saved``), or
        the recipe ``owner`` that reads the buffer ``target``."""
        if owner is None:
            buf, saved, key = target.ref.buf, 1, target
        else:
            buf, saved, key = target, 0, owner
        buf.handles += 1
        buf.saved += saved
        self._nsaved += saved
        # kept by identity: weak references to one owner compare equal, and a set would keep only one
        wr = weakref.ref(key, lambda w, b=buf, s=saved: self._unneeded(w, b, s))
        self._watch[id(wr)] = wr
        if owner is not None:
            owner.holds.append((wr, buf))
        if buf.array is None:
            buf.array = buf.current()
            self._held[id(buf)] = buf

    def _buffer_of(self, root):
        buf = self._by_root.get(id(root))
        return buf if buf is not None and buf.current() is root else None

    # --- hooks -------------------------------------------------------------------------
    def _pack(self, array):
        if self._fast or not is_array(array):
            return array
        node = id(autograd.current_node())
        if self._slot[0] != node:
            self._slot = [node, 0]
        profiler.track(array)          # counted as the core counts what it saves without hooks
        s = _Saved(array, self._slot[1], node)
        self._slot[1] += 1
        self._pending.append(s)
        return s

    def _unpack(self, handle):
        if handle.__class__ is not _Saved:
            return handle
        ref = handle.ref
        if ref is None:                       # read before its op ended
            return handle.array
        if handle.node != self._pin_node:     # a backward step begins reading: its arrays stay (Note 3)
            self._pin_node = handle.node
            self._pin = frozenset(id(h.ref.buf) for h in (w() for w in self._node_saved.get(handle.node, ()))
                                  if h is not None and h.ref is not None and h.ref.__class__ is not _Const)
        if ref.__class__ is _Const:
            arr = ref.array
        else:
            buf = ref.buf
            buf.last = self._tick()
            arr = buf.current()
            if arr is None:
                arr = self._rematerialize(buf, handle.grads)
            arr = _view(arr, ref.geom)
        grads = handle.grads
        counted = profiler.live_bytes() - self._floor
        if counted + grads > self.budget:     # room for the gradients this backward step makes
            self._make_room(grads, f"the backward of {handle.op}", must=grads)
            counted = profiler.live_bytes() - self._floor
        if counted + grads > self.peak_bytes:
            self.peak_bytes = counted + grads
        return arr

    def _observe(self, event):
        node = event.node
        if self._fast:
            if node is None:
                return
            prev, k = self._prev, self._k
            if k >= len(prev):
                k = 0                  # the step ran all its ops: this one begins the next
            cls, new, then, out, _ = prev[k]
            if cls is event.fn_cls and sum([o._data.nbytes for o in event.outputs]) == out:
                if not k:
                    self._floor = profiler.live_bytes() - new
                counted = self._check()
                if counted <= then:
                    self.fast_steps += not k
                    self._k = k + 1
                    self.timeline.append((profiler.current_phase(), cls.__name__, counted))
                    return
            # the step no longer repeats the last one: full bookkeeping from here on (what the step
            # saved so far stays as it is, held by its nodes); the next step learns afresh
            self._fast, self._calm, self._in_step, self._partial = False, False, bool(k), bool(k)
            if self._hooks is not None:
                self._hooks.enabled = True
        if node is None:
            # not recorded: nothing is saved, so its outputs are like arrays from outside (the
            # budget counts their bytes, but they are not the region's to evict); a recorded op
            # that uses one holds it as a constant
            self._pending.clear()
            return
        now = self._tick()
        before = self.resident_bytes
        by_root = self._by_root
        inputs, outside = [], set()
        grads = 0
        needs = node.needs_input_grad
        for t, n in zip(event.inputs, needs):
            arr = t._data
            if n:
                grads += arr.nbytes
            root = arr if arr.base is None else _root(arr)
            buf = by_root.get(id(root))
            if buf is not None and buf.alive() is root:
                buf.last = buf.fwd = now
                if arr is root:
                    inputs.append(buf)
                else:
                    geom = _geometry(arr, root)
                    inputs.append(_Ref(buf, geom) if _rebuildable(root, geom) else _Const(arr))
            else:
                inputs.append(_Const(arr))
                outside.add(id(root))
        grads += node.backward_workspace()     # scratch its backward makes besides the gradients
        # arrays passed as keyword arguments (dropout's mask, a target) are held by the recipe, so a
        # buffer made of one could never be freed: they count as arrays from outside
        kw_bytes = 0
        for v in event.kwargs.values():
            if is_array(v):
                outside.add(id(_root(v)))
                kw_bytes += v.nbytes
        name = event.fn_cls.__name__
        rec = _Record(event.fn_cls, needs, tuple(inputs), event.kwargs, event.rng_state, event.flops)
        for i, o in enumerate(event.outputs):
            arr = o._data
            root = arr if arr.base is None else _root(arr)
            if id(root) not in outside and self._buffer_of(root) is None:
                self._add(self._new(rec, root, "out", i, now), root)
        pending, self._pending = self._pending, []
        mine = id(node)
        for s in pending:
            if s.node != mine:                # left by an op that raised: its node is gone
                continue
            s.grads, s.op = grads, name
            arr = s.array
            root = arr if arr.base is None else _root(arr)
            buf = self._buffer_of(root)
            if buf is None:
                if id(root) in outside:
                    s.ref, s.array = _Const(arr), None
                    continue
                buf = self._new(rec, root, "saved", s.slot, now)
                self._add(buf, root)
            if arr is root:
                s.ref = buf
            else:
                geom = _geometry(arr, root)
                if not _rebuildable(root, geom):
                    s.ref = _Const(arr)
                    continue
                s.ref = _Ref(buf, geom)
            self._need(s)
            s.array = None
            self._node_saved.setdefault(mine, []).append(weakref.ref(s))
        if rec.made and self.evictions:
            # memory is tight and the op made buffers that may be replayed from its inputs: keep the
            # inputs resident (and evictable) while the recipe lives (Note 5)
            wrec = weakref.ref(rec)
            for ref in inputs:
                if ref.__class__ is not _Const:
                    ref.buf.users.append(wrec)
                    self._need(ref.buf, owner=rec)
        new = rec.new_bytes = self.resident_bytes - before + kw_bytes
        if not self._in_step:          # a step begins (Note 2): what is live besides this op is not its
            self._in_step, self._calm = True, True
            self._floor = profiler.live_bytes() - new
        allocs, prev = self._allocs, self._prev
        k = len(allocs)
        counted = self._check()
        # what the count grew by since the last op settled: the op's own arrays and whatever the code
        # between the two ops made (a constant wrapped as a tensor)
        grow = max(new, counted - self._settled) if k else new
        if grow > self._reserve:
            self._reserve = grow
        allocs.append((event.fn_cls, new, counted, sum([o._data.nbytes for o in event.outputs]), grow))
        # room for what comes next: as in the previous step while this one repeats it
        p = prev[k] if k + 1 < len(prev) else None
        ahead = prev[k + 1][4] if p is not None and p[0] is event.fn_cls and p[1] == new else self._reserve
        self.timeline.append((profiler.current_phase(), event.fn_cls.__name__, counted))
        if counted + ahead > self.budget:
            self._make_room(ahead, event.fn_cls.__name__, must=0, done=inputs)
        self._settled = self.counted_bytes

    # --- eviction ------------------------------------------------------------------------
    def _make_room(self, need, what, must, done=()):
        """Evict until ``need`` more bytes fit the budget; raise if ``must`` more bytes cannot fit.

        After an op the room for the next one is a wish (``must=0``: only counted
        bytes over the budget are an error); before a backward step its gradients,
        and before a replay the bytes it allocates, must fit. ``done`` are the
        inputs of the op that has just run: when nothing else is left to evict,
        the region lets go of those still pinned, so that each is freed the moment
        its caller lets go of it (Note 4).
        """
        budget = self.budget
        if self.counted_bytes + need <= budget:
            return
        # evictable: has a recipe, and the region's reference (plus getrefcount's argument) is the only one
        pin = self._pin
        candidates = [b for b in self._held.values()
                      if b.recipe is not None and sys.getrefcount(b.array) == 2 and id(b) not in pin]
        score, now = self._score, self._clock
        # first the buffers whose eviction costs nothing yet (only recipes read them, and nothing made
        # from them waits evicted), in the heuristic's order; then the rest
        free, rest = [], []
        for b in candidates:          # idle walks what was made from b: once per candidate
            (free if self.idle(b) else rest).append(b)
        live = profiler.live_bytes
        floor = self._floor
        for tier in (free, rest):
            while tier and (short := live() - floor + need - budget) > 0:
                self.shortfall = short
                best = min(range(len(tier)), key=lambda n: score(tier[n], now, self))
                self._evict(tier.pop(best))
        if done and live() - floor + need > budget:
            # the finished op's inputs that are still pinned (by the code that called it, often only as a
            # temporary): without the region's reference, each is freed as soon as that code lets it go,
            # before the next op allocates; one the code keeps stays resident (and current) meanwhile
            pinned, seen = [], set()
            for ref in done:
                b = ref.buf if ref.__class__ is not _Const else None
                if b is not None and b.array is not None and b.recipe is not None and id(b) not in seen:
                    seen.add(id(b))
                    pinned.append(b)
            going = 0
            while pinned and (short := live() - floor - going + need - budget) > 0:
                self.shortfall = short
                best = min(range(len(pinned)), key=lambda n: score(pinned[n], now, self))
                b = pinned.pop(best)
                going += b.nbytes
                self._evict(b)
        fixed = self.counted_bytes
        if fixed + must > budget:
            extra = f" plus the {_fmt(must)} it allocates" if must else ""
            raise BudgetError(
                f"dynamic: a budget of {_fmt(budget)} ({budget:,} bytes) cannot hold what {what} "
                f"needs at once: {_fmt(fixed)} that cannot be evicted (live tensors, gradients in flight, the "
                f"inputs of the running op, arrays being read){extra}. Raise the budget to at least "
                f"{_fmt(fixed + must)}, or hold fewer tensors at once.")

    def _evict(self, buf):
        if not self.idle(buf):         # dropping what only recipes held costs nothing: still calm
            self._calm = False
        self._held.pop(id(buf), None)
        buf.array = None               # the last reference: the weak callback books the bytes off
        self.evictions += 1
        self.timeline.append((profiler.current_phase(), f"evict {buf.recipe[0].fn_cls.__name__}",
                              self.counted_bytes))

    @staticmethod
    def idle(buf) -> bool:
        """True when only recipes read ``buf`` and nothing it would have to be replayed for waits evicted:
        evicting it costs nothing yet.

        Something made from ``buf`` that waits evicted matters only when it is needed: a saved array reads
        it, or (through more evicted buffers made from it) one that is. Scores held for the recipe of the
        scaled scores, themselves evicted, are idle while the softmax output made from those is resident.
        """
        if buf.saved:
            return False
        todo, seen = [buf], set()
        while todo:
            b = todo.pop()
            for w in b.users:
                u = w()
                if u is None:
                    continue
                for m in u.made:
                    d = m()
                    if d is None or d.alive is not None or not d.handles or id(d) in seen:
                        continue
                    if d.saved:
                        return False
                    seen.add(id(d))
                    todo.append(d)
        return True

    def replay_cost(self, buf) -> int:
        """FLOPs a replay of ``buf`` would run once it is evicted: its op and the evicted ancestors the replay
        needs first (DTR's evicted neighbourhood, towards the inputs). A buffer only recipes read costs
        nothing until something made from it is evicted."""
        if self.idle(buf):
            return 0
        total, seen, stack = 0, set(), [buf.recipe[0]]
        while stack:
            r = stack.pop()
            if id(r) in seen:
                continue
            seen.add(id(r))
            total += r.flops
            for ref in r.inputs:
                if ref.__class__ is not _Const and ref.buf.alive is None:
                    stack.append(ref.buf.recipe[0])
        return total

    # --- rematerialization --------------------------------------------------------------
    def _rematerialize(self, target, grads=0):
        """Bring ``target`` back, replaying evicted ancestors first (iteratively: chains may be long);
        ``grads`` is what the backward step that asked will allocate (room for it is a wish).

        Each frame holds the arrays of its inputs as they become available, which
        pins them (they cannot be evicted while a deeper replay makes room).
        """
        frames = [(target, [None] * len(target.recipe[0].inputs))]
        result = None
        while True:
            buf, arrays = frames[-1]
            missing = None
            for k, ref in enumerate(buf.recipe[0].inputs):
                if arrays[k] is not None:
                    continue
                if ref.__class__ is _Const:
                    arrays[k] = ref.array
                    continue
                arr = ref.buf.current()
                if arr is None:
                    missing = ref.buf
                    break
                arrays[k] = _view(arr, ref.geom)
            if missing is not None:
                frames.append((missing, [None] * len(missing.recipe[0].inputs)))
                continue
            result = self._replay(buf, arrays, grads)   # kept alive by ``result`` until the parent takes it
            frames.pop()
            if not frames:
                return result

    def _replay(self, buf, arrays, grads):
        rec, kind, idx = buf.recipe
        name = rec.fn_cls.__name__
        if self.counted_bytes + rec.new_bytes + grads > self.budget:
            self._make_room(rec.new_bytes + grads, f"replaying {name}", must=rec.new_bytes)
        node = rec.fn_cls()
        if rec.needs is not None:
            node.requires_grad = True
            node.needs_input_grad = rec.needs
        with autograd.recomputing(rec.rng_state):
            out = node.forward(*arrays, **_copy_kwargs(rec.kwargs))
            if profiler.profiling():
                profiler.record_op(name, rec.flops)
        outs = (out,) if rec.fn_cls.n_outputs == 1 else tuple(out)
        saved = [a for a in node.saved_arrays() if a is not None] if rec.needs is not None else []
        result = profiler.track(_root(outs[idx] if kind == "out" else saved[idx]))
        del node, out, outs, saved
        if result.nbytes != buf.nbytes:
            raise CheckpointError(f"dynamic: replaying {name} gave an array of {result.nbytes} bytes where the "
                                  f"first run gave {buf.nbytes}; the op must compute the same shapes again")
        self.remats += 1
        self.remat_flops += rec.flops
        buf.last = self._tick()
        self._add(buf, result)
        self.timeline.append((profiler.current_phase(), f"replay {name}", self._check()))
        return result


class BudgetError(CheckpointError):
    """The budget cannot hold what one op needs at once."""


def dynamic(budget, heuristic="dtr", seed=0) -> Dynamic:
    """Run a block under a cap on what each step holds (as the profiler counts it, gradients in flight
    included: the budget means what the graph planner's does), evicting saved activations and
    rematerializing them as needed.

    ``with dynamic(budget="8MB", heuristic="dtr") as d: ...``; heuristic is
    "dtr" | "dtr_local" | "lru" | "size" | "random" (seeded by ``seed``).
    See Note [Dynamic rematerialization].
    """
    return Dynamic(budget, heuristic, seed)


__all__ = ["dynamic", "Dynamic", "BudgetError", "HEURISTICS"]
