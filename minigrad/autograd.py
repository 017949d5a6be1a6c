"""The tape: ``Function`` nodes recorded in execution order, and ``backward``.

Each differentiable op is a ``Function`` subclass with ``forward`` and
``backward`` side by side. Calling ``Op.apply(*tensors)`` runs ``forward`` on
the raw arrays and, when a gradient is needed, keeps the Function instance as
a *node*: it holds what ``forward`` saved (arrays, never output tensors), an
edge to each input's producer, and a sequence number (its place on the tape).

Nodes are reachable only from the tensors they produced, so a graph nobody
references is freed by reference counting alone. ``backward`` walks the
reachable nodes in reverse execution order (a heap on the sequence number, so
no recursion limit) and drops each node's saved arrays and edges as soon as it
has run, unless ``retain_graph=True``.

Everything that changes what backward finds goes through this module's public
mechanism: ``saved_arrays_hooks`` (pack/unpack of every saved array),
``op_observer``, the ``recomputing`` mode, ``selective`` policies and version
counters, all per thread (see Note [Modes] and Note [Version counters]).
"""
from __future__ import annotations

import functools
import heapq
import inspect
import itertools
import sys
import threading
import weakref
from contextlib import contextmanager

from . import profiler
from . import random as _random
from .errors import GraphError

_seq = itertools.count()
_Tensor = None          # the Tensor class; tensor.py registers it (autograd never imports tensor)


def use_tensor_class(cls):
    """Tell the tape which class wraps op outputs (``minigrad.tensor`` calls this once)."""
    global _Tensor
    _Tensor = cls


class _ThreadState(threading.local):
    """Every mode of the core, per thread (as PyTorch's grad mode is): see Note [Modes]."""

    def __init__(self):
        self.grad_enabled = True
        self.grad_stack = []       # (mode object, previous value) per entered grad mode
        self.recompute_depth = 0
        self.hooks = []            # (pack, unpack) pairs, innermost last; None while a hook runs
        self.observers = []        # op observers, outermost first
        self.policies = []         # selective-checkpointing policies, innermost last (None hides outer ones)
        self.node = None           # the node whose forward is running
        self.propagate = 0         # >0: unrecorded ops still mark outputs that depend on a gradient
        self.retain = []           # retain_graph of each backward running in this thread
        self.extra = 0             # hooks + observers + policies installed: ops take the watched path
        self.assigned = None       # gradients the outermost running backward handed to leaves (_Assigned)


# Note [Modes]
# Grad mode, the recompute mode, saved-array hooks, op observers and selective policies live in
# one per-thread object, so a thread sitting in no_grad() or recomputing a checkpoint never
# changes what another thread records. Every context manager restores its mode on any exception;
# leaving a grad mode that is not the innermost one raises GraphError instead of corrupting the
# stack. When no hook, observer or policy is installed, an op pays one truthiness test for each.
_state = _ThreadState()


# --------------------------------------------------------------------------- grad mode


def is_grad_enabled() -> bool:
    """True when ops are being recorded on the tape (in this thread)."""
    return _state.grad_enabled


class _GradMode:
    """``no_grad()`` / ``enable_grad()``: a context manager, or a decorator (generators included)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        st = _state
        st.grad_stack.append((self, st.grad_enabled))
        st.grad_enabled = self.enabled
        return self

    def __exit__(self, *exc):
        st = _state
        stack = st.grad_stack
        if not stack or stack[-1][0] is not self:
            what = "no_grad" if not self.enabled else "enable_grad"
            raise GraphError(f"{what}().__exit__ called without a matching __enter__ in this thread (or not "
                             "in last-in, first-out order); use `with no_grad():` blocks rather than calling "
                             "__enter__/__exit__ by hand")
        st.grad_enabled = stack.pop()[1]
        return False

    def __call__(self, fn):
        enabled = self.enabled
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args, **kwargs):
                # each resumption of the body runs under the mode, and only it: the caller's
                # code between two next() calls keeps its own mode (PyTorch does the same)
                gen = fn(*args, **kwargs)
                try:
                    with _GradMode(enabled):
                        response = gen.send(None)
                    while True:
                        try:
                            request = yield response
                        except GeneratorExit:
                            with _GradMode(enabled):
                                gen.close()
                            raise
                        except BaseException:
                            with _GradMode(enabled):
                                response = gen.throw(*sys.exc_info()[1:2])
                        else:
                            with _GradMode(enabled):
                                response = gen.send(request)
                except StopIteration as stop:
                    return stop.value
            return generator
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise GraphError(f"{'no_grad' if not enabled else 'enable_grad'}() cannot decorate the async "
                             f"function {fn.__name__}: use a `with` block inside it instead")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _GradMode(enabled):
                return fn(*args, **kwargs)
        return wrapper


def no_grad():
    """Context manager (or decorator): ops inside are not recorded and need no memory for backward."""
    return _GradMode(False)


def enable_grad():
    """Context manager (or decorator): turn recording back on inside a ``no_grad`` block."""
    return _GradMode(True)


@contextmanager
def propagating_requires_grad():
    """Inside ``no_grad``: unrecorded ops still mark outputs computed from tensors that need a gradient.

    Checkpointing runs a forward without recording and must know which
    outputs would have required grad (an output depending on nothing that
    does is returned with ``requires_grad=False``, as in PyTorch).
    """
    st = _state
    st.propagate += 1
    try:
        yield
    finally:
        st.propagate -= 1


# --------------------------------------------------------------------------- recompute mode


def is_recomputing() -> bool:
    """True while a checkpoint re-runs a forward during backward (in this thread)."""
    return _state.recompute_depth > 0


@contextmanager
def recomputing(rng_state=None):
    """Re-run a forward during backward: stateful layers skip their updates, FLOPs go to "recompute".

    With ``rng_state`` (from ``mg.random.get_rng_state``) the generators start
    from it and are put back on exit, so random ops replay the same numbers
    and the next step draws exactly what it would have without recompute.
    """
    st = _state
    resume = _random.get_rng_state() if rng_state is not None else None
    if rng_state is not None:
        _random.set_rng_state(rng_state)
    st.recompute_depth += 1
    try:
        with profiler.phase("recompute"):
            yield
    finally:
        st.recompute_depth -= 1
        if resume is not None:
            _random.set_rng_state(resume)


def tape_position() -> int:
    """A sequence number above every node recorded so far (a boundary for ``run_backward``)."""
    return next(_seq)


def retains_graph() -> bool:
    """True inside a ``backward(retain_graph=True)`` (nodes that hold state keep it for the next one)."""
    r = _state.retain
    return bool(r) and r[-1]


# --------------------------------------------------------------------------- saved-array hooks


@contextmanager
def _installed(stack: str, item):
    """Push ``item`` on this thread's ``stack`` (hooks, observers, policies) for the block.

    ``extra`` counts what is installed, so ``Function.apply`` skips the whole slow path
    with one test when nothing is; exiting pops back to this depth even if an inner
    block forgot to.
    """
    st = _state
    items = getattr(st, stack)
    items.append(item)
    depth = len(items)
    st.extra += 1
    try:
        yield items, depth - 1
    finally:
        del items[depth - 1:]
        st.extra -= 1


@contextmanager
def saved_arrays_hooks(pack, unpack):
    """Every array saved for backward inside the block goes through ``pack(array) -> handle``;
    backward gets it back through ``unpack(handle) -> array`` (PyTorch's ``saved_tensors_hooks``).

    The pair active when an array is saved stays with its node, so unpacking
    works after the block has closed. The innermost block wins; hooks do not
    apply to what a hook itself saves.
    """
    if not (callable(pack) and callable(unpack)):
        raise GraphError(f"saved_arrays_hooks(pack, unpack): both must be callable, got "
                         f"{type(pack).__name__} and {type(unpack).__name__}")
    with _installed("hooks", (pack, unpack)) as (items, index):
        yield SavedHooks(items, index, (pack, unpack))


class SavedHooks:
    """What ``saved_arrays_hooks`` yields. Setting ``enabled = False`` lets what is saved inside the block
    bypass the pair (saved as is, with nothing to unpack, as without hooks) until it is set back; the
    pair stays in place, so inner blocks nest as before."""

    __slots__ = ("_items", "_index", "_pair")

    def __init__(self, items, index, pair):
        self._items, self._index, self._pair = items, index, pair

    @property
    def enabled(self) -> bool:
        return self._items[self._index] is not None

    @enabled.setter
    def enabled(self, on: bool):
        self._items[self._index] = self._pair if on else None


class _HooksPaused:
    """``with _hooks_paused():`` hooks are off inside a pack/unpack hook (so its own ops are not hooked).

    A plain class rather than a generator: it runs once per saved batch and per unpack,
    on the hot path of every hooked region.
    """

    __slots__ = ("hooks", "depth")

    def __enter__(self):
        hooks = self.hooks = _state.hooks
        hooks.append(None)
        self.depth = len(hooks)

    def __exit__(self, *exc):
        del self.hooks[self.depth - 1:]
        return False


_hooks_paused = _HooksPaused


def current_saved_hooks():
    """The innermost ``(pack, unpack)`` pair installed in this thread, or None.

    For code that keeps arrays for backward outside ``save_for_backward`` (the
    chain executor's slots), so they pass the same hooks.
    """
    hooks = _state.hooks
    return hooks[-1] if hooks else None


def current_node():
    """The node whose forward is running in this thread, for pack hooks and observers.

    Kept while saved-array hooks, op observers or a selective policy are installed (the only
    code that can run inside an op's forward and ask); None otherwise and outside ops.
    """
    return _state.node


# --------------------------------------------------------------------------- op observers


class OpEvent:
    """What an op did, as seen by an ``op_observer`` callback (see its attributes)."""

    __slots__ = ("fn_cls", "node", "inputs", "outputs", "kwargs", "flops", "rng_state", "recomputing")

    def __init__(self, fn_cls, node, inputs, outputs, kwargs, flops, rng_state, recomputing):
        self.fn_cls, self.node, self.inputs, self.outputs = fn_cls, node, inputs, outputs
        self.kwargs, self.flops, self.rng_state, self.recomputing = kwargs, flops, rng_state, recomputing

    def __repr__(self):
        shapes = ", ".join(str(o.shape) for o in self.outputs)
        return f"OpEvent({self.fn_cls.__name__} -> {shapes}, flops={self.flops}, recorded={self.node is not None})"


@contextmanager
def op_observer(callback):
    """Call ``callback(OpEvent)`` after every op this thread runs inside the block (recorded or not)."""
    if not callable(callback):
        raise GraphError(f"op_observer(callback): callback must be callable, got {type(callback).__name__}")
    with _installed("observers", callback):
        yield


# --------------------------------------------------------------------------- selective policies


@contextmanager
def selective(selection):
    """Make ``selection`` the innermost selective-checkpointing policy state (None hides outer ones).

    While it is innermost, ``Function.apply`` asks ``selection.wants(op_class)``
    and, if so, lets ``selection.run(node, arrays, kwargs, inputs) -> (output, reused)``
    compute (and keep) or reuse the op's output.
    """
    with _installed("policies", selection):
        yield selection


# --------------------------------------------------------------------------- version counters


# Note [Version counters]
# A saved array changed in place before backward reads it would give a silently wrong gradient
# (PyTorch counts versions for this). Arrays carry no attributes, so the count lives here, keyed
# by the buffer that owns the memory (views share it), and only for buffers that were written in
# place through a Tensor (``Tensor._set_data`` with the array it already holds: ``y.data += 1``,
# an optimizer step) or handed out for writing (``Tensor.numpy()`` on the CPU). Writes through a
# handed-out array leave no trace, so for those the content is compared instead: a digest taken
# when the buffer was first handed out, or when it was saved if that came later. Versions are
# epochs of one global counter: a node records the epoch it saved at (one integer), and backward
# looks at its arrays only when some write happened since, or when one had been handed out.
_buffers: dict = {}       # id(owner buffer) -> [last write epoch, epoch first handed out, digest then, weakref]
_exposed: set = set()     # ids of buffers handed out for writing (and still alive)
_epoch = [0]              # bumped by every in-place write and every first hand-out


def _owner(a):
    base = a.base
    while base is not None and hasattr(base, "shape"):
        a, base = base, base.base
    return a


def _digest(a) -> bytes:
    import hashlib  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    return hashlib.blake2b(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data, digest_size=16).digest()


def _forget(key, _ref):
    _buffers.pop(key, None)
    _exposed.discard(key)


def _entry(owner):
    key = id(owner)
    rec = _buffers.get(key)
    if rec is None:
        import weakref  # noqa: PLC0415
        from functools import partial  # noqa: PLC0415
        rec = _buffers[key] = [-1, None, None, weakref.ref(owner, partial(_forget, key))]
    return rec


def bump_version(array):
    """Note that ``array``'s buffer was just written in place (``Tensor._set_data`` calls this)."""
    _epoch[0] += 1
    _entry(_owner(array))[0] = _epoch[0]


def mark_exposed(array):
    """Note that ``array``'s buffer was handed out for writing (``Tensor.numpy()`` on the CPU)."""
    owner = _owner(array)
    if id(owner) in _exposed:
        return
    rec = _entry(owner)
    _epoch[0] += 1
    rec[1], rec[2] = _epoch[0], _digest(owner)
    _exposed.add(id(owner))


def version_stamp(array):
    """What ``changed_since`` compares against later: the epoch (and a digest if it was handed out)."""
    return (_epoch[0], _digest(array) if _exposed and id(_owner(array)) in _exposed else None)


def changed_since(array, stamp) -> bool:
    """True when ``array`` was modified in place after ``version_stamp`` gave ``stamp``."""
    epoch, digest = stamp
    if digest is None and epoch == _epoch[0]:
        return False
    rec = _buffers.get(id(_owner(array)))
    if rec is None:
        return False
    if rec[0] > epoch:
        return True
    if digest is not None:
        return _digest(array) != digest
    if rec[1] is not None and rec[1] > epoch:
        return _digest(array) != rec[2]
    return False


def _modified_error(node_name, a):
    return GraphError(
        f"backward through {node_name}: an array of shape {tuple(a.shape)} and dtype {a.dtype} that it saved "
        "for backward was modified in place after it was saved (y.data += 1, an optimizer step, or writing "
        "into y.numpy()), so its gradient would be wrong. Modify tensors only after backward, or compute "
        "on a copy (y.data = y.data + 1 makes a new array and leaves the saved one alone).")


# --------------------------------------------------------------------------- nodes


class Function:
    """Base of every op. Subclasses define ``forward(self, *arrays, **kw)`` and ``backward(self, grad)``.

    ``forward`` gets arrays and returns an array (or a tuple of arrays when
    ``n_outputs > 1``); it calls ``self.save_for_backward(...)`` for what
    backward needs, and ``backward`` reads it back from ``self.saved``.
    ``backward`` gets the gradient of the output (a tuple for several outputs)
    and returns one gradient per input, ``None`` where
    ``self.needs_input_grad[i]`` is False. ``flops`` gives the forward cost;
    ``backward_flops`` defaults to that once per input needing a gradient.
    """

    n_outputs = 1
    # Set True by nodes that want to own the incoming gradient (they get the
    # engine's list and pop it), so no caller frame keeps it alive meanwhile.
    takes_grad_box = False
    # Set True by random ops (their observers get the RNG state from just before forward).
    uses_rng = False
    # Set True by nodes whose backward may also send gradients past their own edges,
    # to nodes recorded before them: they leave ``(edge, grad)`` pairs in ``self.spilled``.
    spills = False

    __slots__ = ("_saved", "_unpack", "_stamps", "next", "seq", "needs_input_grad", "requires_grad",
                 "out_meta", "fwd_flops", "freed", "device")

    def __init__(self):
        self._saved = ()
        self._unpack = None
        self._stamps = None
        self.requires_grad = False
        self.freed = False

    # --- to be overridden ---------------------------------------------------
    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def flops(self, inputs, output) -> int:
        """Forward FLOPs given the input arrays and the output array."""
        return 0

    def replay(self, *arrays, out, **kwargs):
        """Set up for backward as ``forward`` would, reusing a kept output instead of computing it.

        Only ops whose outputs selective checkpointing may keep implement this.
        """
        raise NotImplementedError(f"{self.name} cannot reuse a kept output")

    def backward_flops(self) -> int:
        """Backward FLOPs: by default the forward's once per input that needs a gradient."""
        return self.fwd_flops * sum(self.needs_input_grad)

    def backward_workspace(self) -> int:
        """Bytes of scratch arrays ``backward`` makes besides the gradients it returns (none by default).

        An op that needs one declares its size here and passes it to
        ``profiler.track``, so the graph memory model and the profiler both
        count the memory NumPy really allocates.
        """
        return 0

    # --- saved arrays -------------------------------------------------------------
    def save_for_backward(self, *arrays):
        """Keep ``arrays`` until backward has run (only when a gradient is needed).

        Each passes the innermost ``saved_arrays_hooks`` pack hook, if any.
        """
        if self.requires_grad:
            hooks = _state.hooks
            if hooks and hooks[-1] is not None:
                pack, self._unpack = hooks[-1]
                with _hooks_paused():
                    self._saved = tuple(None if a is None else profiler.track(pack(a)) for a in arrays)
            else:
                for a in arrays:
                    profiler.track(a)
                self._saved = arrays
                self._unpack = None
                self._stamps = _epoch[0] if not _exposed else tuple(
                    (_epoch[0], None) if a is None else version_stamp(a) for a in arrays)

    @property
    def saved(self):
        """The arrays ``forward`` saved, through their unpack hook (None once released)."""
        unpack = self._unpack
        if unpack is None or self._saved is None:
            stamps = self._stamps
            if stamps is not None and stamps != _epoch[0] and self._saved:
                self._check_versions()
            return self._saved
        with _hooks_paused():
            return tuple(None if h is None else unpack(h) for h in self._saved)

    @saved.setter
    def saved(self, arrays):
        self._saved, self._unpack, self._stamps = arrays, None, None

    def _check_versions(self):
        stamps = self._stamps
        for k, a in enumerate(self._saved):
            if a is not None and changed_since(a, (stamps, None) if isinstance(stamps, int) else stamps[k]):
                raise _modified_error(self.name, a)

    def saved_arrays(self):
        """The unpacked saved arrays (the same as ``self.saved``)."""
        return self.saved

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def saved_bytes(self) -> int:
        """Bytes this node holds for backward, as stored (packed), 0 once released."""
        return sum(getattr(a, "nbytes", 0) for a in (self._saved or ()))

    def release(self):
        """Drop saved arrays and edges: this node cannot run backward again."""
        self._saved = None
        self._unpack = None
        self.next = None
        self.freed = True

    # --- recording --------------------------------------------------------------
    def record(self, inputs, outs, device, flops=0, needs=None):
        """Put this node on the tape: sequence number, edges to ``inputs``, output metadata.

        ``outs`` are the output arrays; returns them wrapped as Tensors made by
        this node. The one place a node is recorded (ops, checkpoints, chains).
        """
        if needs is None:
            needs = tuple([t.requires_grad for t in inputs])
        self.requires_grad = True
        self.needs_input_grad = needs
        self.seq = next(_seq)
        self.next = tuple([((t._node, t._idx) if t._node is not None else (t, 0)) if n else None
                           for t, n in zip(inputs, needs)])
        self.device = device
        self.fwd_flops = flops
        make = _Tensor._make
        if len(outs) == 1:
            o = outs[0]
            self.out_meta = ((o.shape, o.dtype),)
            return (make(o, device, True, self, 0),)
        self.out_meta = tuple([(o.shape, o.dtype) for o in outs])
        return tuple([make(o, device, True, self, i) for i, o in enumerate(outs)])

    @classmethod
    def apply(cls, *inputs, **kwargs):
        """Run the op on tensors; record a node when any input needs a gradient."""
        st = _state
        node = cls()
        needs = tuple([t.requires_grad for t in inputs])
        record = st.grad_enabled and True in needs
        node.requires_grad = record
        if record:
            node.needs_input_grad = needs
        dev = inputs[0]._device if inputs else None
        for t in inputs:
            if t._device is not dev and t._device != dev:
                from .errors import DeviceError  # noqa: PLC0415
                raise DeviceError(f"{cls.__name__}: inputs are on different devices ({dev} and {t._device}); "
                                  f"move them to one device with .to('{dev}')")
        arrays = [t._data for t in inputs]
        if st.extra:                  # hooks, observers or a policy: the watched path
            return _apply_watched(cls, node, inputs, arrays, kwargs, needs, record, dev)
        out = node.forward(*arrays, **kwargs)
        outs = (out,) if cls.n_outputs == 1 else tuple(out)
        flops = node.flops(arrays, out) if record or profiler._active else 0
        results = node.record(inputs, outs, dev, flops, needs) if record else _unrecorded(node, outs, dev, needs)
        if profiler._active:
            profiler.record_op(cls.__name__, flops)
        return results[0] if cls.n_outputs == 1 else results

    @staticmethod
    def replay_forward(fn_cls, input_arrays, kwargs=None, rng_state=None):
        """Run ``fn_cls``'s forward on arrays without recording, inside ``recomputing(rng_state)``.

        Returns the output array (a tuple for several outputs). FLOPs are booked
        to the "recompute" phase. For dynamic rematerialization and graph plans.
        """
        node = fn_cls()
        arrays = list(input_arrays)
        with recomputing(rng_state):
            out = node.forward(*arrays, **(kwargs or {}))
            if profiler._active:
                profiler.record_op(fn_cls.__name__, node.flops(arrays, out))
        return out


def _unrecorded(node, outs, dev, needs):
    """Wrap the outputs of an op that was not recorded (marked as needing grad only when propagating)."""
    node._saved = None
    flag = _state.propagate > 0 and True in needs
    make = _Tensor._make
    return tuple([make(o, dev, flag and o.dtype.kind == "f", None, i) for i, o in enumerate(outs)])


def _apply_watched(cls, node, inputs, arrays, kwargs, needs, record, dev):
    """``Function.apply`` while hooks, observers or a selective policy are installed in this thread."""
    st = _state
    observers = st.observers
    rng_state = _random.get_rng_state({_random.CPU, dev} - {None}) if observers and cls.uses_rng else None
    replayed = False
    outer, st.node = st.node, node
    try:
        pol = st.policies
        if pol and pol[-1] is not None and pol[-1].wants(cls):
            out, replayed = pol[-1].run(node, arrays, kwargs, inputs)
        else:
            out = node.forward(*arrays, **kwargs)
    finally:
        st.node = outer
    outs = (out,) if cls.n_outputs == 1 else tuple(out)
    flops = node.flops(arrays, out) if record or profiler._active or observers else 0
    results = node.record(inputs, outs, dev, flops, needs) if record else _unrecorded(node, outs, dev, needs)
    if profiler._active:
        profiler.record_op(cls.__name__, 0 if replayed else flops)
    if observers:
        _notify(cls, node if record else None, inputs, results, kwargs, flops, rng_state)
    return results[0] if cls.n_outputs == 1 else results


def _notify(cls, node, inputs, results, kwargs, flops, rng_state):
    st = _state
    event = OpEvent(cls, node, tuple(inputs), results, kwargs, flops, rng_state, st.recompute_depth > 0)
    observers = st.observers
    st.observers = []             # what an observer runs is not observed
    try:
        for callback in observers:
            callback(event)
    finally:
        st.observers = observers


def _writeable(a) -> bool:
    """NumPy arrays can be read-only (broadcast views); CuPy arrays always accept writes."""
    return getattr(a.flags, "writeable", True)


class _Assigned:
    """The gradients a running backward handed to leaves, by identity.

    Held by weak reference: an id alone could be recycled by a later array once
    a gradient is freed, and a long backward (a checkpoint's nested ones
    included) would then copy, or refuse to add in place into, an unrelated
    array, costing a second gradient-sized buffer.
    """

    __slots__ = ("refs",)

    def __init__(self):
        self.refs = {}

    def add(self, a):
        try:
            self.refs[id(a)] = weakref.ref(a)
        except TypeError:                      # an array type without weak references: keep it alive
            self.refs[id(a)] = (lambda a=a: a)

    def __contains__(self, a):
        ref = self.refs.get(id(a))
        return ref is not None and ref() is a


def _accumulate_leaf(leaf, g, assigned: _Assigned):
    """Add ``g`` into ``leaf.grad``, in the leaf's dtype, never aliasing another leaf's grad."""
    if g.dtype != leaf.data.dtype:
        g = g.astype(leaf.data.dtype)
    if g.shape != leaf.data.shape:
        raise GraphError(f"gradient of shape {g.shape} for a leaf of shape {leaf.data.shape}")
    if leaf.grad is None:
        if g in assigned or not _writeable(g) or not g.flags.c_contiguous or g.base is not None:
            g = g.copy()
        assigned.add(g)
        leaf.grad = _Tensor._make(g, leaf.device, False, None, 0)
    else:
        acc = leaf.grad.data
        if acc not in assigned and _writeable(acc) and acc.dtype == g.dtype:
            # A gradient left by an earlier backward belongs to this leaf alone: add in place,
            # so accumulating costs no second parameter-sized array. (One assigned during this
            # backward may still be shared with a node not yet run, so that one is not touched.)
            acc += g
        else:
            leaf.grad.data = acc + g


def _pass_gradient(buffers, heap, node, k, g):
    """Add ``g`` to the gradient waiting for output k of ``node``; queue the node on first arrival.

    When the waiting gradient is referenced by nothing but this buffer, ``g`` is
    added into it in place (the same sum, without a third array); otherwise a
    new array is made, so no other holder of the first gradient sees it change.
    """
    buf = buffers.get(node)
    if buf is None:
        buf = buffers[node] = [None] * node.n_outputs
        heapq.heappush(heap, (-node.seq, id(node), node))
    old = buf[k]
    if old is None:
        buf[k] = g
    elif (sys.getrefcount(old) <= 3 and old.base is None and _writeable(old) and old.shape == g.shape
          and old.dtype == g.dtype):
        old += g               # refs: the buffer, ``old`` and getrefcount's argument
    else:
        buf[k] = profiler.track(old + g)


def run_backward(box: list, retain_graph: bool = False, boundary=None):
    """Backpropagate from roots: ``box`` holds ``(tensor, grad_array)`` pairs and is emptied.

    Taking the pairs in a list that we empty (rather than as arguments) means
    no caller frame keeps the incoming gradients alive while backward runs.
    With ``boundary`` (a sequence number), nodes recorded before it are not
    run: the gradients meant for them are returned as ``[((node, k), grad)]``
    (a checkpoint's local backward hands them on to the outer one this way).
    """
    heap = []
    buffers = {}
    st = _state
    # Gradients assigned to leaves in this backward may still be shared with nodes not yet run:
    # a backward nested inside it (a checkpoint's) must not add into them in place either.
    assigned = st.assigned if st.retain else _Assigned()
    spilled = []
    root = g = node = None
    while box:
        root, g = box.pop()
        node = root._node
        if node is None:
            if root.requires_grad:
                _accumulate_leaf(root, g, assigned)
            continue
        if boundary is not None and node.seq < boundary:
            spilled.append(((node, root._idx), g))
            continue
        _pass_gradient(buffers, heap, node, root._idx, g)
    del root, g, node
    retain = st.retain
    if not retain:
        st.assigned = assigned
    retain.append(retain_graph)
    try:
        with profiler.phase("backward"):
            while heap:
                node = heapq.heappop(heap)[2]
                grads = buffers.pop(node)
                if node.freed:
                    raise GraphError(
                        f"backward through {node.name} a second time: its saved arrays were freed by the "
                        "first backward. Pass retain_graph=True to the first backward() if you need to "
                        "backpropagate through the same graph twice.")
                for i, (shape, dtype) in enumerate(node.out_meta):
                    if grads[i] is None:
                        grads[i] = node.device.xp.zeros(shape, dtype)
                if node.takes_grad_box:
                    in_grads = node.backward(grads)
                else:
                    in_grads = node.backward(grads[0] if node.n_outputs == 1 else tuple(grads))
                for gi in in_grads:       # counted while the incoming gradient is still held, as it is
                    if gi is not None:
                        profiler.track(gi)
                if profiler._active:      # the row shows the op's saved arrays and its gradients together
                    profiler.record_op(node.name, node.backward_flops())
                del grads
                edges = node.next
                in_grads = list(in_grads)
                if node.spills:           # gradients for nodes recorded before it (see Function.spills)
                    edges = edges + tuple(e for e, _ in node.spilled)
                    in_grads += [g for _, g in node.spilled]
                    node.spilled = []
                if not retain_graph:
                    node.release()
                gi = edge = None
                for n, edge in enumerate(edges):
                    gi, in_grads[n] = in_grads[n], None     # hand each gradient on without a spare reference
                    if edge is None or gi is None:
                        continue
                    target, k = edge
                    if target.__class__ is _Tensor or isinstance(target, _Tensor):
                        _accumulate_leaf(target, gi, assigned)
                    elif boundary is not None and target.seq < boundary:
                        spilled.append((edge, gi))
                    else:
                        _pass_gradient(buffers, heap, target, k, gi)
                    gi = None
                del in_grads, edges, edge, gi, node
    finally:
        retain.pop()
        if not retain:
            st.assigned = None
    return spilled


class Tape:
    """The nodes behind a tensor, in execution order: ``print(mg.tape(loss))``."""

    def __init__(self, nodes):
        self.nodes = nodes

    def __len__(self):
        return len(self.nodes)

    @property
    def saved_bytes(self) -> int:
        return sum(n.saved_bytes for n in self.nodes)

    def __str__(self):
        rows = [("#", "op", "output shape", "saved bytes")]
        for i, n in enumerate(self.nodes):
            shape = " ".join(str(tuple(s)) for s, _ in n.out_meta)
            rows.append((str(i), n.name, shape, f"{n.saved_bytes:,}"))
        rows.append(("", "total", "", f"{self.saved_bytes:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        fmt = lambda r: f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"
        return "\n".join(fmt(r) for r in rows)

    __repr__ = __str__


def tape(t, boundary=None) -> Tape:
    """The tape (Wengert list) that produced tensor ``t``: its nodes in execution order.

    With ``boundary`` (a sequence number), nodes recorded before it are left out.
    """
    if not isinstance(t, _Tensor):
        raise GraphError(f"tape: expected a Tensor (e.g. mg.tape(loss)), got {type(t).__name__}")
    if boundary is not None and (not isinstance(boundary, int) or isinstance(boundary, bool)):
        raise GraphError(f"tape: boundary must be a sequence number (an int from tape_position()) or None, "
                         f"got {boundary!r}")
    seen, stack, nodes = set(), [t._node] if t._node is not None else [], []
    while stack:
        n = stack.pop()
        if id(n) in seen or (boundary is not None and n.seq < boundary):
            continue
        seen.add(id(n))
        nodes.append(n)
        for e in n.next or ():
            if e is not None and not isinstance(e[0], _Tensor):
                stack.append(e[0])
    nodes.sort(key=lambda n: n.seq)
    return Tape(nodes)


def leaves(t, boundary=None) -> list:
    """The leaf tensors requiring grad that ``t`` depends on (its parameters and inputs)."""
    if not isinstance(t, _Tensor):
        raise GraphError(f"leaves: expected a Tensor (e.g. leaves(loss)), got {type(t).__name__}")
    out, seen = [], set()
    for n in tape(t, boundary).nodes:
        for e in n.next or ():
            if e is not None and isinstance(e[0], _Tensor) and id(e[0]) not in seen:
                seen.add(id(e[0]))
                out.append(e[0])
    if t._node is None and t.requires_grad:
        out.append(t)
    return out
