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
"""
from __future__ import annotations

import heapq
import itertools
import sys
from . import profiler
from . import tensor as _t
from .errors import GraphError

_grad_enabled = [True]
_seq = itertools.count()

# Checkpointing hooks: while recomputing, stateful layers must not update
# their state (BatchNorm running statistics); while a checkpointed function
# runs without recording, we note whether it touched anything needing grad.
_recompute_depth = [0]
_watchers: list = []
# Selective checkpointing: the innermost entry (or None, which hides ops from outer
# checkpoints) decides which ops keep their outputs and replays them on recompute.
_selective: list = []
# Op observers (see op_observer): called after every Function.apply, outermost first.
_observers: list = []
# Saved-array hooks (see saved_arrays_hooks): (pack, unpack) pairs, innermost last.
_hooks: list = []
_in_hook = [False]
_current: list = []     # nodes running forward, innermost last


def _run_hook(call):
    """Run a pack/unpack call with hooks off, so a hook that runs ops is not hooked itself."""
    if _in_hook[0]:
        return call()
    _in_hook[0] = True
    try:
        return call()
    finally:
        _in_hook[0] = False


def current_node():
    """The node whose forward is running (or None)."""
    return _current[-1] if _current else None


class saved_arrays_hooks:  # noqa: N801
    """``with saved_arrays_hooks(pack, unpack):`` every array an op saves becomes ``pack(array)``;
    backward gets ``unpack(handle)`` back (the pair active when saving is used, even after the block)."""

    def __init__(self, pack, unpack):
        self.pair = (pack, unpack)

    def __enter__(self):
        _hooks.append(self.pair)
        return self

    def __exit__(self, *exc):
        _hooks.remove(self.pair)
        return False


def is_grad_enabled() -> bool:
    """True when ops are being recorded on the tape."""
    return _grad_enabled[-1]


def is_recomputing() -> bool:
    """True while checkpointing re-runs a forward during backward."""
    return _recompute_depth[0] > 0


class _GradMode:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        _grad_enabled.append(self.enabled)
        return self

    def __exit__(self, *exc):
        _grad_enabled.pop()
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with _GradMode(self.enabled):
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


def no_grad():
    """Context manager (or decorator): ops inside are not recorded and need no memory for backward."""
    return _GradMode(False)


def enable_grad():
    """Context manager (or decorator): turn recording back on inside a ``no_grad`` block."""
    return _GradMode(True)


class Function:
    """Base of every op. Subclasses define ``forward(self, *arrays, **kw)`` and ``backward(self, grad)``.

    ``forward`` gets arrays and returns an array (or a tuple of arrays when
    ``n_outputs > 1``); it calls ``self.save_for_backward(...)`` for what
    backward needs. ``backward`` gets the gradient of the output (a tuple for
    several outputs) and returns one gradient per input, ``None`` where
    ``self.needs_input_grad[i]`` is False. ``flops`` gives the forward cost;
    ``backward_flops`` defaults to that once per input needing a gradient.
    """

    n_outputs = 1
    # Set True by nodes that want to own the incoming gradient (they get the
    # engine's list and pop it), so no caller frame keeps it alive meanwhile.
    takes_grad_box = False

    __slots__ = ("_saved", "_unpack", "next", "seq", "needs_input_grad", "requires_grad",
                 "out_meta", "fwd_flops", "freed", "device")

    def __init__(self):
        self._saved = ()
        self._unpack = None
        self.requires_grad = False
        self.freed = False

    @property
    def saved(self):
        """The arrays saved for backward (each passed through the unpack hook it was saved under)."""
        if self._unpack is None or not self._saved:
            return self._saved
        return _run_hook(lambda: tuple(None if h is None else self._unpack(h) for h in self._saved))

    @saved.setter
    def saved(self, value):
        self._saved, self._unpack = value, None

    def saved_arrays(self):
        """The unpacked saved arrays (same as ``self.saved``)."""
        return self.saved

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

    # --- used by ops ------------------------------------------------------------
    def save_for_backward(self, *arrays):
        """Keep ``arrays`` until backward has run (only when a gradient is needed)."""
        if self.requires_grad:
            for a in arrays:
                profiler.track(a)
            if _hooks and not _in_hook[0]:
                pack, unpack = _hooks[-1]
                self._saved = _run_hook(lambda: tuple(None if a is None else pack(a) for a in arrays))
                self._unpack = unpack
            else:
                self.saved = arrays

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def saved_bytes(self) -> int:
        """Bytes of the arrays this node saved (0 once released)."""
        if self._unpack is not None:
            return 0           # held by the hooks' owner, which counts them itself
        return sum(getattr(a, "nbytes", 0) for a in (self._saved or ()))

    def release(self):
        """Drop saved arrays and edges: this node cannot run backward again."""
        self.saved = None
        self.next = None
        self.freed = True

    # --- recording --------------------------------------------------------------
    @classmethod
    def apply(cls, *inputs, **kwargs):
        """Run the op on tensors; record a node when any input needs a gradient."""
        node = cls()
        needs = tuple(t.requires_grad for t in inputs)
        record = _grad_enabled[-1] and any(needs)
        if _watchers and not _grad_enabled[-1] and any(needs):
            _watchers[-1][0] = True
        node.requires_grad = record
        if record:
            node.needs_input_grad = needs
        dev = inputs[0].device if inputs else None
        for t in inputs:
            if t._device is not dev and t._device != dev:
                from .errors import DeviceError  # noqa: PLC0415
                raise DeviceError(f"{cls.__name__}: inputs are on different devices ({dev} and {t._device}); "
                                  f"move them to one device with .to('{dev}')")
        replayed = False
        if _selective and _selective[-1] is not None and _selective[-1].wants(cls):
            out, replayed = _selective[-1].run(node, [t.data for t in inputs], kwargs)
        else:
            _current.append(node)
            try:
                out = node.forward(*[t.data for t in inputs], **kwargs)
            finally:
                _current.pop()
        Tensor = _t.Tensor
        if cls.n_outputs == 1:
            outs = (Tensor._make(out, dev, record, node if record else None, 0),)
        else:
            outs = tuple(Tensor._make(o, dev, record, node if record else None, i) for i, o in enumerate(out))
        flops = node.flops([t.data for t in inputs], out) if profiler._active or record or _observers else 0
        if record:
            node.seq = next(_seq)
            node.next = tuple(t._edge() if n else None for t, n in zip(inputs, needs))
            node.out_meta = tuple((o.data.shape, o.data.dtype) for o in outs)
            node.device = dev
            node.fwd_flops = flops
        else:
            node.saved = None
        if profiler._active:
            profiler.record_op(cls.__name__, 0 if replayed else flops)
        if _observers:
            event = OpEvent(cls, node if record else None, inputs, outs, kwargs, flops, None, is_recomputing())
            for callback in list(_observers):
                callback(event)
            del event
        return outs[0] if cls.n_outputs == 1 else outs


class OpEvent:
    """What one ``Function.apply`` did, as an op observer sees it."""

    __slots__ = ("fn_cls", "node", "inputs", "outputs", "kwargs", "flops", "rng_state", "recomputing")

    def __init__(self, fn_cls, node, inputs, outputs, kwargs, flops, rng_state, recomputing):
        self.fn_cls, self.node, self.inputs, self.outputs = fn_cls, node, inputs, outputs
        self.kwargs, self.flops, self.rng_state, self.recomputing = kwargs, flops, rng_state, recomputing


class op_observer:  # noqa: N801 - a context manager named like a function, as in the spec
    """``with op_observer(callback):`` calls ``callback(event)`` after every op (recorded or not)."""

    def __init__(self, callback):
        self.callback = callback

    def __enter__(self):
        _observers.append(self.callback)
        return self

    def __exit__(self, *exc):
        _observers.remove(self.callback)
        return False


def _writeable(a) -> bool:
    """NumPy arrays can be read-only (broadcast views); CuPy arrays always accept writes."""
    return getattr(a.flags, "writeable", True)


def _accumulate_leaf(leaf, g, assigned: set):
    """Add ``g`` into ``leaf.grad``, in the leaf's dtype, never aliasing another leaf's grad."""
    if g.dtype != leaf.data.dtype:
        g = g.astype(leaf.data.dtype)
    if g.shape != leaf.data.shape:
        raise GraphError(f"gradient of shape {g.shape} for a leaf of shape {leaf.data.shape}")
    if leaf.grad is None:
        if id(g) in assigned or not _writeable(g) or not g.flags.c_contiguous or g.base is not None:
            g = g.copy()
        assigned.add(id(g))
        leaf.grad = _t.Tensor._make(g, leaf.device, False, None, 0)
    else:
        acc = leaf.grad.data
        if id(acc) not in assigned and _writeable(acc) and acc.dtype == g.dtype:
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


def run_backward(box: list, retain_graph: bool = False):
    """Backpropagate from roots: ``box`` holds ``(tensor, grad_array)`` pairs and is emptied.

    Taking the pairs in a list that we empty (rather than as arguments) means
    no caller frame keeps the incoming gradients alive while backward runs.
    """
    heap = []
    buffers = {}
    assigned: set = set()
    root = g = node = None
    while box:
        root, g = box.pop()
        node = root._node
        if node is None:
            if root.requires_grad:
                _accumulate_leaf(root, g, assigned)
            continue
        _pass_gradient(buffers, heap, node, root._idx, g)
    del root, g, node
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
            if not retain_graph:
                node.release()
            in_grads = list(in_grads)
            for n, edge in enumerate(edges):
                gi, in_grads[n] = in_grads[n], None     # hand each gradient on without a spare reference
                if edge is None or gi is None:
                    continue
                target, k = edge
                if target.__class__ is _t.Tensor or isinstance(target, _t.Tensor):
                    _accumulate_leaf(target, gi, assigned)
                else:
                    _pass_gradient(buffers, heap, target, k, gi)
                gi = None
            del in_grads, edges, edge, gi, node


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


def tape(t) -> Tape:
    """The tape (Wengert list) that produced tensor ``t``: its nodes in execution order."""
    seen, stack, nodes = set(), [t._node] if t._node is not None else [], []
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        nodes.append(n)
        for e in n.next or ():
            if e is not None and not isinstance(e[0], _t.Tensor):
                stack.append(e[0])
    nodes.sort(key=lambda n: n.seq)
    return Tape(nodes)


def leaves(t) -> list:
    """The leaf tensors requiring grad that ``t`` depends on (its parameters and inputs)."""
    out, seen = [], set()
    for n in tape(t).nodes:
        for e in n.next or ():
            if e is not None and isinstance(e[0], _t.Tensor) and id(e[0]) not in seen:
                seen.add(id(e[0]))
                out.append(e[0])
    if t._node is None and t.requires_grad:
        out.append(t)
    return out
