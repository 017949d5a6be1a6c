"""``capture(fn, *args)``: run a function once and return its op-level forward graph as plain data.

An op observer of the core sees every op as it runs: its inputs, outputs,
keyword arguments, FLOPs and the node it recorded. Each array a node saves
for backward is sorted into one of: an input's array (the producer's output,
or a leaf), its own output, a keyword array (a dropout mask: held with the
op), or a *residual* made only for backward. How long the function itself
holds each output (``free_after``) is read from weak references to the
output tensors. The run is made as a recompute (BatchNorm statistics stay,
the random generators are put back), so capturing changes nothing.
Each op also records the innermost ``block`` it ran in: the units a user
would checkpoint by hand, which ``solve(g, budget, "blocks")`` checkpoints.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

from .. import autograd
from .. import random as _random
from ..backend import is_array
from ..errors import CheckpointError
from ..tensor import Tensor
from ..autograd import recomputing
from .function import fn_name
from .graph import Graph, GraphNode, Leaf


_marks = threading.local()


@contextmanager
def block(name: str = "block"):
    """Mark the ops run inside as one block (a residual block, an attention layer): what ``"blocks"`` checkpoints.

    Costs nothing outside ``capture``; blocks may nest (an op belongs to the innermost).
    """
    stack = _marks.__dict__.setdefault("stack", [])
    _marks.count = getattr(_marks, "count", 0) + 1
    stack.append((_marks.count, str(name)))
    try:
        yield
    finally:
        stack.pop()


def _current_block():
    stack = getattr(_marks, "stack", None)
    return stack[-1] if stack else None


def _owner(a):
    """The array that owns ``a``'s memory."""
    while getattr(a, "base", None) is not None and is_array(a.base):
        a = a.base
    return a


def producer_of(table, t):
    """The op that made tensor ``t``, from a table of id -> (weak reference, op): None for a leaf.

    The weak reference guards against a dead tensor's id being reused by a new one.
    """
    entry = table.get(id(t))
    return entry[1] if entry is not None and entry[0]() is t else None


def _outputs(out, fn):
    """The tensors ``fn`` returned (a Tensor, or a tuple/list of them)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and any(isinstance(o, Tensor) for o in out):
        return [o for o in out if isinstance(o, Tensor)]
    raise CheckpointError(f"capture: {fn_name(fn)} returned {type(out).__name__}, not a Tensor or a tuple of "
                          "Tensors; a graph plan needs the tensors backward starts from (return them)")


class _Recorder:
    """Collects one entry per recorded op, and when the function lets go of each output."""

    def __init__(self):
        self.events = []           # (node, fn_cls name, input tensors' keys, flops, kwargs arrays, out arrays)
        self.alive = []            # weak references to each op's output tensors
        self.last_alive = []       # last event index at which the outputs were still referenced
        self.producer = {}         # id(output tensor) -> event index
        self.leaves = {}           # id(leaf tensor) -> (index, tensor)
        self.order = []
        self.blocks = []           # per event: (mark id, name) of the innermost block, or None

    def __call__(self, ev):
        if ev.node is None:
            return
        j = len(self.events)
        for i, refs in enumerate(self.alive):
            if refs is not None and any(r() is not None for r in refs):
                self.last_alive[i] = j
            elif refs is not None:
                self.alive[i] = None
        ins = []
        for t in ev.inputs:
            k = producer_of(self.producer, t)
            if k is not None:
                ins.append(("node", k))
            else:
                if id(t) not in self.leaves:
                    self.leaves[id(t)] = (len(self.leaves), t)
                ins.append(("leaf", self.leaves[id(t)][0]))
        kw_arrays = [v for v in ev.kwargs.values() if is_array(v)]
        self.events.append((ev.node, ev.fn_cls.__name__, ins, ev.flops, kw_arrays,
                            [o.data for o in ev.outputs], [t.data for t in ev.inputs]))
        self.blocks.append(_current_block())
        for o in ev.outputs:
            self.producer[id(o)] = (weakref.ref(o), j)
        self.alive.append([weakref.ref(o) for o in ev.outputs])
        self.last_alive.append(j)


def capture(fn, *args, **kwargs) -> Graph:
    """Run ``fn(*args, **kwargs)`` once and return its op-level forward graph (plain data, no arrays).

    Nodes are the recorded ops that the returned tensors depend on, in
    execution order. Leaves are the inputs, parameters and constants read.
    Raises CheckpointError when ``fn`` returns no tensor or records nothing.
    """
    return capture_ops(fn, args, kwargs)[0]


def capture_ops(fn, args, kwargs):
    """The graph, and for every recorded op of the run: (its node, or None when the outputs do not need it; op name; output shapes)."""
    if not callable(fn):
        raise CheckpointError(f"capture: the first argument must be callable, got {type(fn).__name__}")
    rec = _Recorder()
    arg_ids = {id(a) for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor)}
    with recomputing(_random.get_rng_state()), autograd.enable_grad(), autograd.op_observer(rec):
        out = fn(*args, **kwargs)
    outs = _outputs(out, fn)
    del out
    n_all = len(rec.events)
    for i, refs in enumerate(rec.alive):          # what the function returned is held to the end
        if refs is not None and any(r() is not None for r in refs):
            rec.last_alive[i] = n_all
    roots = [producer_of(rec.producer, o) for o in outs]
    roots = [k for k in roots if k is not None]
    if not roots:
        raise CheckpointError(f"capture: no output of {fn_name(fn)} was computed by a recorded op; give a "
                              "parameter or input requires_grad=True so the forward is recorded")
    keep, stack = set(), list(roots)
    while stack:                                  # the ops the outputs depend on
        k = stack.pop()
        if k in keep:
            continue
        keep.add(k)
        stack.extend(i for kind, i in rec.events[k][2] if kind == "node")
    order = sorted(keep)
    new = {k: i for i, k in enumerate(order)}
    leaf_tensors = sorted(rec.leaves.values())
    leaves = []
    for _, t in leaf_tensors:
        kind = "input" if id(t) in arg_ids else ("param" if t.requires_grad else "constant")
        leaves.append(Leaf(kind, tuple(t.shape), str(t.dtype), int(t.data.nbytes), bool(t.requires_grad)))
    block_ids = {}                               # mark id -> block index, in order of first use
    for k in order:
        if rec.blocks[k] is not None:
            block_ids.setdefault(rec.blocks[k], len(block_ids))
    nodes = []
    for k in order:
        node, op, ins, flops, kw_arrays, out_arrays, in_arrays = rec.events[k]
        in_owner = {id(_owner(a)) for a in in_arrays}
        out_owner = {id(_owner(a)) for a in out_arrays}
        view = bool(out_owner) and out_owner <= in_owner
        out_bytes = 0 if view else sum(int(_owner(a).nbytes) for a in out_arrays if id(_owner(a)) not in in_owner)
        grad_bytes = sum(int(a.nbytes) for a in out_arrays)
        saves, resid, pinned, seen = set(), 0, 0, set()
        for a in node.saved or ():          # sorted by identity, as the executor sorts them
            if a is None or not is_array(a):
                continue
            if any(a is o for o in out_arrays):
                saves.add(new[k])
                continue
            if any(a is arr for arr in in_arrays):
                saves.update(new[i] for (kind, i), arr in zip(ins, in_arrays) if arr is a and kind == "node")
                continue
            own = _owner(a)
            if id(own) in seen:
                continue
            seen.add(id(own))
            if any(a is kw for kw in kw_arrays):
                pinned += int(own.nbytes)
            else:
                resid += int(own.nbytes)
        leaf_grads = sum(int(arr.nbytes) for (kind, i), arr, need in zip(ins, in_arrays, node.needs_input_grad)
                         if kind == "leaf" and need)
        nodes.append(GraphNode(
            index=new[k], op=op, inputs=tuple(new[i] for kind, i in ins if kind == "node"),
            leaves=tuple(i for kind, i in ins if kind == "leaf"), out_bytes=out_bytes, grad_bytes=grad_bytes,
            residual_bytes=resid, pinned_bytes=pinned, saves=tuple(sorted(saves)), flops=int(flops),
            backward_flops=int(node.backward_flops()),
            free_after=max((new[i] for i in order if i <= rec.last_alive[k]), default=new[k]),
            shape=tuple(tuple(a.shape) for a in out_arrays) if len(out_arrays) > 1 else tuple(out_arrays[0].shape),
            dtype=str(out_arrays[0].dtype), view=view, leaf_grad_bytes=leaf_grads,
            workspace_bytes=int(node.backward_workspace()),
            block=block_ids[rec.blocks[k]] if rec.blocks[k] is not None else -1))
    ops = [(new.get(k), ev[1], tuple(tuple(a.shape) for a in ev[5])) for k, ev in enumerate(rec.events)]
    names = tuple(name for _, name in block_ids)
    return Graph(tuple(nodes), tuple(leaves), tuple(sorted(new[k] for k in set(roots))), name=fn_name(fn),
                 blocks=names), ops
