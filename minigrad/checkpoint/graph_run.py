"""Run a function under a ``GraphPlan``: keep what the plan keeps, recompute and free in backward as it says.

Everything passes through the core's two public mechanisms: an op observer
(which op just ran, its inputs, outputs and keyword arguments: the *recipe*
to run it again) and the saved-array hooks. Packing sorts each saved array as
capture does (an input's array, the op's output, a keyword array, or a
residual) and keeps it only when the plan keeps that object; the handle
remembers where to find it. The first unpack of a stage's node starts the
stage: objects the plan no longer holds are dropped, then the stage's
recomputes run (inside the recompute context: BatchNorm statistics untouched,
FLOPs booked to "recompute"). This realises the memory model of ``graph.py``.
"""
from __future__ import annotations

import weakref

from .. import autograd, profiler
from ..backend import is_array
from ..errors import CheckpointError
from ..tensor import Tensor
from ..autograd import recomputing
from .function import fn_name
from .graph import O, X
from .graph_capture import capture_ops, producer_of
from .graph_solve import solve
from .schedules import parse_bytes

_plans: dict = {}


class _Handle:
    """A saved array: held (``array``), or to be found in the run's store (``obj``, ``k``)."""

    __slots__ = ("array", "node", "obj", "k", "__weakref__")

    def __init__(self, array):
        self.array, self.node, self.obj, self.k = array, None, None, 0


class _Run:
    """One forward and backward of ``fn`` under a plan."""

    def __init__(self, plan, ops, name):
        self.plan, self.ops, self.name = plan, ops, name
        self.graph, self.model = plan.graph, plan.model
        self.keep = plan.keep | self.model.always
        self.stage_of = {w: s for s, w in enumerate(self.model.stages)}
        self.store = {}                     # object -> array (O) or list of arrays (X)
        self.recipes = {}                   # node -> (Function class, inputs, kwargs, needs_input_grad)
        self.producer = {}                  # id(tensor) -> (weak reference, node)
        self.pending = []
        self.event = 0
        self.stage = -1

    # ------------------------------------------------------------------ forward

    def pack(self, array):
        profiler.track(array)               # counted while held, as the engine counts what it saves
        h = _Handle(array)
        self.pending.append(h)
        return h

    def observe(self, ev):
        if ev.node is None:
            return
        j = self.event
        self.event += 1
        got = (ev.fn_cls.__name__, tuple(tuple(o.shape) for o in ev.outputs))
        if j >= len(self.ops) or self.ops[j][1:] != got:
            want = f"{self.ops[j][1]} with output {self.ops[j][2]}" if j < len(self.ops) else "no further op"
            raise CheckpointError(
                f"checkpoint: the forward of {self.name} changed since its graph was captured: op {j} is {got[0]} "
                f"with output {got[1]}, the graph has {want}. A graph plan is made once per function, input "
                "shapes and budget; make the forward depend only on those, or capture and solve again.")
        v = self.ops[j][0]
        pending, self.pending = self.pending, []
        if v is None:                       # not needed by the outputs: its saved arrays stay as they are
            return
        outs = [o.data for o in ev.outputs]
        ins = [t.data for t in ev.inputs]
        refs = []
        for t in ev.inputs:
            u = producer_of(self.producer, t)
            refs.append(("node", u) if u is not None else ("leaf", t.data))
        for o in ev.outputs:
            self.producer[id(o)] = (weakref.ref(o), v)
        kwargs = dict(ev.kwargs)
        if "stats" in kwargs:               # BatchNorm reports batch statistics here; a replay must not
            kwargs["stats"] = None
        self.recipes[v] = (ev.fn_cls, refs, kwargs, ev.node.needs_input_grad)
        if O(v) in self.keep:
            self.store[O(v)] = outs[0] if len(outs) == 1 else tuple(outs)
        residual = []
        for h in pending:
            a, h.node = h.array, v
            k = next((k for k, o in enumerate(outs) if o is a), None)
            if k is not None:
                h.obj, h.k = O(v), k
            else:
                i = next((i for i, arr in enumerate(ins) if arr is a), None)
                if i is not None and refs[i][0] == "node":
                    h.obj = O(refs[i][1])
                    h.k = self._output_index(refs[i][1], a)
                elif i is None and not any(a is kw for kw in kwargs.values()):
                    h.obj, h.k = X(v), len(residual)
                    residual.append(a)
            if h.obj is not None:
                h.array = None              # found in the store when backward asks (or recomputed)
        if residual and X(v) in self.keep:
            self.store[X(v)] = residual

    def _output_index(self, u, a):
        held = self.store.get(O(u))
        if isinstance(held, tuple):
            return next(k for k, o in enumerate(held) if o is a)
        return 0

    # ------------------------------------------------------------------ backward

    def unpack(self, h):
        if h.array is not None:
            return h.array
        s = self.stage_of[h.node]
        if s != self.stage:
            if s < self.stage:
                raise CheckpointError(f"checkpoint: backward ran twice through {self.name} under a graph plan, "
                                      "whose stages free arrays as they go; call backward once per forward")
            self._enter(s)
        return self._fetch(h.obj, h.k)

    def _fetch(self, obj, k=0):
        held = self.store[obj]
        return held[k] if isinstance(held, (tuple, list)) else held

    def _enter(self, s):
        """Start stage s: drop what the plan no longer holds, then run the stage's recomputes in order."""
        self.stage = s
        w = self.model.stages[s]
        held = self.plan.held[s] | self.model.always
        for obj in [o for o in self.store if o not in held]:
            del self.store[obj]
        for v in [v for v in self.recipes if v > w]:
            del self.recipes[v]
        for v in self.plan.recompute[s]:
            self._recompute(v)

    def _recompute(self, v):
        cls, refs, kwargs, needs = self.recipes[v]
        arrays = [a if kind == "leaf" else self._fetch(O(a)) for kind, a in refs]
        node = cls()
        node.requires_grad, node.needs_input_grad = True, needs
        with recomputing():
            out = node.forward(*arrays, **kwargs)
            if profiler.profiling():
                profiler.record_op(cls.__name__, node.flops(arrays, out))
        outs = list(out) if cls.n_outputs > 1 else [out]
        for o in outs:
            profiler.track(o)
        self.store[O(v)] = outs[0] if len(outs) == 1 else tuple(outs)
        residual = [a for a in node.saved or () if a is not None and is_array(a)
                    and not any(a is o for o in outs) and not any(a is i for i in arrays)
                    and not any(a is kw for kw in kwargs.values())]
        for a in residual:                  # counted while held, as pack counts them in the forward
            profiler.track(a)
        if residual:
            self.store[X(v)] = residual


def _entry(fn, args, kwargs, budget, method):
    """(plan, recorded ops) for this function, input shapes, budget and method: captured and solved once."""
    limit = parse_bytes(budget)
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor)]
    key = (fn, tuple((t.shape, str(t.dtype), str(t.device), t.requires_grad) for t in tensors), limit, method)
    entry = _plans.get(key)
    if entry is None:
        graph, ops = capture_ops(fn, args, kwargs)
        entry = (solve(graph, limit, method), ops)
        if len(_plans) > 64:
            _plans.clear()
        _plans[key] = entry
    return entry


def cached_plan(fn, *args, budget, method="optimal", **kwargs):
    """The plan ``checkpoint(fn, *args, budget=, method=)`` runs (captured and solved on first use)."""
    return _entry(fn, args, kwargs, budget, method)[0]


def checkpoint_graph(fn, args, kwargs, budget, method="optimal"):
    """``checkpoint(fn, *args, budget=..., method=...)``: plan once per function, shapes and budget; run under the plan."""
    if not autograd.is_grad_enabled():
        parse_bytes(budget)
        return fn(*args, **kwargs)
    plan, ops = _entry(fn, args, kwargs, budget, method)
    run = _Run(plan, ops, fn_name(fn))
    with autograd.op_observer(run.observe), autograd.saved_arrays_hooks(run.pack, run.unpack):
        out = fn(*args, **kwargs)
    if run.event != len(ops):
        raise CheckpointError(f"checkpoint: the forward of {run.name} ran {run.event} recorded ops, but its graph "
                              f"was captured with {len(ops)}; make the forward depend only on the input shapes, "
                              "or capture and solve again")
    return out
