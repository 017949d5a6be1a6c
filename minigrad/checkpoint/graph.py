"""Any function as an op-level graph: the ``Graph`` data type, its memory model and ``GraphPlan``.

A ``Graph`` is plain data (no arrays): one ``GraphNode`` per op of a forward
pass, in execution order, with its output bytes, the bytes its backward reads,
its forward and backward FLOPs and its inputs. ``solve`` (``graph_solve.py``)
turns a graph and a memory budget into a ``GraphPlan``; ``capture``
(``graph_capture.py``) builds the graph by running a function once.

Note [Graph memory model]
-------------------------
Memory objects: ``O_v``, the output of node v (0 bytes when it is a view of
its input: holding a view holds its base, so a view is never held, only
re-made from its base for free), and ``X_v``, the arrays v's forward makes
only for its backward (BatchNorm's normalised input, a max mask). Outputs of
the function are held by the caller and always available; so are leaves
(inputs and parameters, which the budget leaves out, and constants made
inside the function, which it counts for the whole step).

Backward runs in *stages*: one per node whose backward reads saved arrays, in
reverse execution order (the engine's order). A plan says which nodes are
recomputed at each stage (``R[s]``); everything else follows (``held``). At
the start of stage s the executor drops every object not held, then re-runs
the forwards of ``R[s]`` (in execution order), each producing both its O and
X, then the stage's backward runs. The stage's memory counts all it holds and
all it recomputes at once, plus the gradients in flight and the scratch arrays
a backward op makes besides its gradients (``Function.backward_workspace``;
both the same under every plan) — until the next stage starts. Forward: an
object not kept dies when the function lets it go (``free_after``, measured
at capture); ``X_v`` not kept dies with op v. A node is never recomputed while one of its objects is
held (that loses nothing: dropping it and recomputing costs the same).
Objects held at a stage must have been held or recomputed at the one before;
the forward's kept set is what stage 0 holds.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..errors import ScheduleError

# Ops whose backward hands on views of the incoming gradient (no new bytes).
GRAD_VIEW_OPS = frozenset({"Reshape", "Transpose", "Add", "Sum"})


@dataclass(frozen=True)
class GraphNode:
    """One op of the forward pass: what it produced, what its backward reads, what it costs."""

    index: int
    op: str
    inputs: tuple            # indices of the nodes whose outputs it reads (non-leaf tensor inputs)
    leaves: tuple            # indices into Graph.leaves of its leaf inputs
    out_bytes: int           # new bytes of its output (0 for a view of an input)
    grad_bytes: int          # bytes of the gradient of its output
    residual_bytes: int      # bytes its forward saves that are neither inputs nor output (X_v)
    pinned_bytes: int        # bytes of keyword arrays it reads (a dropout mask): held until its backward
    saves: tuple             # nodes whose outputs its backward reads (its own index when it saves its output)
    flops: int
    backward_flops: int
    free_after: int          # last op index during which the function still holds the output
    shape: tuple
    dtype: str
    view: bool = False
    leaf_grad_bytes: int = 0  # bytes of the gradients its backward makes for leaves (parameters)
    workspace_bytes: int = 0  # bytes of scratch arrays its backward makes besides gradients
    block: int = -1           # index into Graph.blocks of the block it ran in (``graph_capture.block``), or -1

    @property
    def needs(self) -> bool:
        """Does its backward read anything a plan may drop?"""
        return bool(self.saves) or self.residual_bytes > 0


@dataclass(frozen=True)
class Leaf:
    """An input, parameter or constant the function read: always held by its owner."""

    kind: str                # "input" | "param" | "constant"
    shape: tuple
    dtype: str
    nbytes: int
    requires_grad: bool


@dataclass(frozen=True)
class Graph:
    """The op-level forward graph of a function, as plain data (``print`` it for a table)."""

    nodes: tuple
    leaves: tuple
    outputs: tuple           # indices of the nodes whose outputs the function returned
    name: str = "graph"
    blocks: tuple = ()       # names of the blocks the function marked, in order (GraphNode.block indexes them)

    def __len__(self):
        return len(self.nodes)

    @property
    def edges(self) -> list:
        """(producer, consumer) pairs between nodes."""
        return [(u, v.index) for v in self.nodes for u in v.inputs]

    @property
    def forward_flops(self) -> int:
        return sum(v.flops for v in self.nodes)

    def fingerprint(self) -> str:
        """A short hash of the ops, shapes, dtypes and edges: equal for the same forward."""
        text = repr([(v.op, v.inputs, v.leaves, v.shape, v.dtype) for v in self.nodes]
                    + [(lf.kind, lf.shape, lf.dtype) for lf in self.leaves] + [self.outputs])
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def __str__(self):
        rows = [("#", "op", "inputs", "output shape", "out bytes", "saved bytes", "FLOPs")]
        for v in self.nodes:
            ins = ",".join([str(u) for u in v.inputs] + [f"L{k}" for k in v.leaves])
            saved = sum(self.nodes[u].out_bytes for u in v.saves) + v.residual_bytes
            rows.append((str(v.index), v.op + (" (view)" if v.view else ""), ins, str(v.shape),
                         f"{v.out_bytes:,}", f"{saved:,}", f"{v.flops:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w) if k in (0, 4, 5, 6) else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.append(f"{len(self.nodes)} ops, {len(self.leaves)} leaves, outputs {list(self.outputs)}, "
                     f"forward {self.forward_flops:,} FLOPs")
        return "\n".join(lines)

    __repr__ = __str__


# --------------------------------------------------------------------------- the memory model, precomputed


def O(v):  # noqa: E743 - the object names of the Note
    return 2 * v


def X(v):
    return 2 * v + 1


class Model:
    """The numbers the Note's memory model needs, computed once per graph (no plan involved).

    ``stages[s]``: the node of stage s; ``need[s]``: the objects its backward
    reads; ``fwd_const[j]``: bytes alive at op j whatever the plan keeps;
    ``freeable[j]``: objects alive at op j only when kept; ``bwd_const[s]``:
    bytes alive during stage s whatever the plan (gradients in flight, the
    outputs, pinned arrays); ``size[o]``: bytes of object o.
    """

    def __init__(self, graph: Graph):
        self.graph = g = graph
        n = self.n = len(g.nodes)
        self.outputs = set(g.outputs)
        self.always = {O(v) for v in g.outputs}
        self.size = [0] * (2 * n)
        for v in g.nodes:
            self.size[O(v.index)] = v.out_bytes
            self.size[X(v.index)] = v.residual_bytes
        # A view holds its base: the base lives as long as its longest-lived view.
        free = [v.free_after for v in g.nodes]
        for v in reversed(g.nodes):
            if v.view and v.inputs:
                b = v.inputs[0]
                free[b] = max(free[b], free[v.index])
        self.free_after = free
        self.inputs = [v.inputs for v in g.nodes]
        self.view = [v.view for v in g.nodes]
        self.flops = [v.flops for v in g.nodes]
        self.stages = [v.index for v in reversed(g.nodes) if v.needs]
        self.need = []
        for w in self.stages:
            v = g.nodes[w]
            objs = {O(u) for u in v.saves}
            if v.residual_bytes:
                objs.add(X(w))
            self.need.append(frozenset(objs - self.always))
        # Forward: what is alive at op j regardless of the plan, and what only if kept.
        # Constants made inside the function (a Python scalar in ``x * 0.5``) count as held all step.
        made = sum(lf.nbytes for lf in g.leaves if lf.kind == "constant")
        self.fwd_const, self.freeable = [], []
        pinned = made
        for j, v in enumerate(g.nodes):
            pinned += v.pinned_bytes
            held = sum(self.size[O(i)] for i in range(j) if free[i] >= j)
            self.fwd_const.append(held + v.out_bytes + v.residual_bytes + pinned)
            self.freeable.append([O(i) for i in range(j) if free[i] < j and self.size[O(i)] and i not in self.outputs]
                                 + [X(i) for i in range(j) if self.size[X(i)]])
        out_total = sum(g.nodes[v].out_bytes for v in g.outputs) + made
        self.out_total = out_total
        self.bwd_const = self._backward_constants()

    def _backward_constants(self):
        """Per stage: the most bytes the plan does not control, over the backward ops it spans."""
        g, n = self.graph, self.n
        grad_of = [v.grad_bytes for v in g.nodes]
        inflight = set(g.outputs)
        pinned_left = sum(v.pinned_bytes for v in g.nodes)
        per_op = [0] * n
        for w in range(n - 1, -1, -1):
            v = g.nodes[w]
            if w not in inflight:          # no gradient reaches it (nothing downstream needs one)
                pinned_left -= v.pinned_bytes
                continue
            made = v.leaf_grad_bytes + v.workspace_bytes
            if v.op not in GRAD_VIEW_OPS:
                made += sum(grad_of[u] for u in v.inputs)
            per_op[w] = sum(grad_of[u] for u in inflight) + made + pinned_left
            pinned_left -= v.pinned_bytes
            inflight.discard(w)
            inflight.update(v.inputs)
        consts = []
        bounds = self.stages + [-1]
        for s, w in enumerate(self.stages):
            hi = n - 1 if s == 0 else w     # ops after the first stage's node run while stage 0 holds
            lo = bounds[s + 1] + 1
            consts.append(self.out_total + max(per_op[k] for k in range(lo, hi + 1)))
        self.grad_peak = max(per_op) if per_op else 0
        return consts

    # ------------------------------------------------------------------ plans as recompute sets

    def objects_at(self, s):
        """Objects a plan may hold at stage s: of nodes at or before the stage's node, never a view or an output."""
        w = self.stages[s]
        out = []
        for v in range(w + 1):
            if v not in self.outputs and not self.view[v]:
                out.append(O(v))
            if self.size[X(v)]:
                out.append(X(v))
        return out

    def base(self, o):
        """The object holding ``o``'s memory: itself, or for a view the output it is a view of."""
        while o % 2 == 0 and self.view[o // 2] and self.inputs[o // 2]:
            o = O(self.inputs[o // 2][0])
        return o

    def products(self, v):
        return (O(v), X(v))

    def held_for(self, R):
        """The least each stage must hold for recompute sets R (a list of node sets), and the forward's kept set.

        An object is held at stage s when it is needed there (by the backward or
        by a recompute) and not recomputed there, or held at s+1 and not
        recomputed at s. Raises ScheduleError when a view would have to be held
        (views are re-made, never kept).
        """
        S = len(self.stages)
        demand = []
        for s in range(S):
            d = set(self.need[s])
            for v in R[s]:
                d.update(O(u) for u in self.inputs[v])
            made = {o for v in R[s] for o in self.products(v)}
            demand.append((d - made - self.always, made))
        held = [set() for _ in range(S)]
        carry = set()
        for s in range(S - 1, -1, -1):
            d, made = demand[s]
            h = d | (carry - made)
            held[s] = h
            carry = h
        for s, h in enumerate(held):
            views = [o // 2 for o in h if o % 2 == 0 and self.view[o // 2]]
            if views:
                raise ScheduleError(f"plan holds the view made by node {views[0]} at stage {s}; "
                                    "views are re-made from their base, never kept")
        return held

    def simulate(self, R):
        """Check a plan (recompute sets per stage) and return (peak, forward peak, backward peak, FLOPs, held)."""
        S = len(self.stages)
        if len(R) != S:
            raise ScheduleError(f"a plan for this graph has {S} stages, got {len(R)} recompute sets")
        held = self.held_for(R)
        for s in range(S):
            w = self.stages[s]
            late = [v for v in R[s] if v > w]
            if late:
                raise ScheduleError(f"stage {s} (node {w}) recomputes node {late[0]}, which runs after it")
            for v in R[s]:
                if O(v) in held[s] or X(v) in held[s]:
                    raise ScheduleError(f"stage {s} recomputes node {v} while holding its output")
        kept = held[0] if S else set()
        fwd = max((self.fwd_const[j] + sum(self.size[o] for o in self.freeable[j] if o in kept)
                   for j in range(self.n)), default=0)
        bwd = 0
        for s in range(S):
            made = sum(self.size[O(v)] + self.size[X(v)] for v in R[s])
            bwd = max(bwd, self.bwd_const[s] + sum(self.size[o] for o in held[s]) + made)
        flops = sum(self.flops[v] for r in R for v in r)
        return max(fwd, bwd), fwd, bwd, flops, held

    def on_demand(self, keep, extra_hold=None):
        """Recompute sets when the forward keeps ``keep`` (objects) and backward recomputes what is missing.

        At each stage the missing objects the backward reads are recomputed,
        with any missing inputs of theirs (recursively); recomputed objects
        stay while a later stage reads them; kept objects stay while a later
        stage could recompute from them. ``extra_hold[s]``, when given, are
        objects the stage must also have on exit (two-phase rounding).
        """
        S = len(self.stages)
        later_need = [set() for _ in range(S + 1)]
        for s in range(S - 1, -1, -1):
            later_need[s] = later_need[s + 1] | self.need[s]
        keep = {self.base(o) for o in keep}
        avail = set(keep)
        R = []
        for s in range(S):
            w = self.stages[s]
            want = set(self.need[s])
            if extra_hold is not None and s + 1 < S:
                want |= {o for o in extra_hold[s + 1] if o // 2 <= w}
            todo, rs = [o for o in want if o not in avail and o not in self.always], set()
            while todo:
                o = todo.pop()
                v = o // 2
                if v in rs:
                    continue
                rs.add(v)
                todo.extend(O(u) for u in self.inputs[v] if O(u) not in avail and O(u) not in self.always)
            # never recompute a node while holding one of its objects: drop the held one instead
            for v in rs:
                avail.discard(O(v))
                avail.discard(X(v))
            R.append(rs)
            made = {o for v in rs for o in self.products(v)}
            nxt = self.stages[s + 1] if s + 1 < S else -1
            keep_next = {o for o in avail if o in keep and o // 2 <= max(nxt, -1) and nxt >= 0}
            keep_next |= {o for o in (avail | made) if o in later_need[s + 1] and not self.view[o // 2]}
            if extra_hold is not None and s + 1 < S:
                keep_next |= {o for o in extra_hold[s + 1] if o in (avail | made)}
            avail = keep_next
        return R


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class GraphSimulation:
    """What a graph plan costs, predicted without running it."""

    peak_bytes: int            # the step's peak under the plan (forward and backward), leaves excluded
    forward_peak_bytes: int
    backward_peak_bytes: int
    recompute_flops: int
    recomputed_ops: int        # op forwards run again during backward
    forward_flops: int


@dataclass
class GraphPlan:
    """Which objects the forward keeps and which ops each backward stage recomputes, for one graph and budget.

    ``recompute[s]``: the nodes stage s re-runs (stage s is node ``stages[s]``'s
    backward); ``keep``: the objects the forward keeps (see the Note in
    ``graph.py``). ``lower_bound``: a proven lower bound on the recompute
    FLOPs of any plan within the budget; ``optimal``: the solver proved this
    plan has the fewest; ``gap``: (cost - lower_bound) / cost.
    """

    graph: Graph
    budget: int
    method: str
    recompute: tuple
    lower_bound: float = 0.0
    optimal: bool = False
    solve_seconds: float = 0.0
    note: str = ""
    model: Model = field(default=None, repr=False)

    def __post_init__(self):
        if self.model is None:
            self.model = Model(self.graph)
        self.recompute = tuple(tuple(sorted(r)) for r in self.recompute)
        self._sim = self.model.simulate([set(r) for r in self.recompute])

    @property
    def stages(self) -> list:
        return self.model.stages

    @property
    def held(self) -> list:
        """Objects held at the start of each stage."""
        return self._sim[4]

    @property
    def keep(self) -> set:
        """Objects the forward keeps for backward (``2v`` is node v's output, ``2v+1`` its residual arrays)."""
        return set(self._sim[4][0]) if self._sim[4] else set()

    @property
    def kept_nodes(self) -> list:
        """Nodes some of whose arrays the forward keeps."""
        return sorted({o // 2 for o in self.keep})

    @property
    def recomputed_nodes(self) -> list:
        """Nodes re-run at least once in backward."""
        return sorted({v for r in self.recompute for v in r})

    @property
    def cost(self) -> int:
        """Recompute FLOPs."""
        return self._sim[3]

    @property
    def gap(self) -> float:
        """Relative distance to the lower bound: 0 when optimal."""
        return 0.0 if self.cost <= 0 else max(0.0, (self.cost - self.lower_bound) / self.cost)

    def simulate(self) -> GraphSimulation:
        """Predicted peak bytes and recompute FLOPs, with the memory model the executor realises."""
        peak, fwd, bwd, flops, _ = self._sim
        return GraphSimulation(peak, fwd, bwd, flops, sum(len(r) for r in self.recompute),
                               self.graph.forward_flops)

    def summary(self) -> str:
        s = self.simulate()
        pct = 100.0 * s.recompute_flops / max(1, s.forward_flops)
        proof = "proven optimal" if self.optimal else f"gap {100 * self.gap:.1f}% to the lower bound"
        return (f"{self.method}: peak {s.peak_bytes:,} bytes (budget {self.budget:,}), recompute "
                f"{s.recompute_flops:,} FLOPs ({pct:.1f}% of the forward) in {s.recomputed_ops} op runs, "
                f"lower bound {self.lower_bound:,.0f}, {proof}, solved in {self.solve_seconds:.2f} s")

    def __str__(self):
        lines = [self.summary()]
        kept = ", ".join(str(v) for v in self.kept_nodes) or "nothing"
        lines.append(f"forward keeps arrays of nodes: {kept}")
        for s, r in enumerate(self.recompute):
            if r:
                lines.append(f"  backward of node {self.stages[s]} ({self.graph.nodes[self.stages[s]].op}) "
                             f"first recomputes {', '.join(str(v) for v in r)}")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    __repr__ = __str__
