"""``solve(graph, budget, method)``: the cheapest recomputation plan of a ``Graph`` within a memory budget.

Methods (one table, ``METHODS``): ``"optimal"`` (an exact MILP solved by
HiGHS through ``scipy.optimize.milp``), ``"lp"`` (its LP relaxation, a proven
lower bound, rounded to a plan in two phases), and the baselines ``"greedy"``
(Chen et al. 2016), ``"articulation"`` (checkpoints at articulation points,
Chen's √n rule), ``"blocks"`` (per-block checkpointing, as done by hand) and ``"none"``.

Note [The MILP]
---------------
Checkmate's formulation (Jain et al., MLSys 2020) restricted to a fixed
forward pass and the engine's fixed backward order, over the memory model of
``graph.py``. For each stage s and node v ≤ node(s): a binary ``R[s,v]``
(re-run v's forward at stage s); for each object o that may be held there,
``S[s,o]`` in [0, 1] (held at the start of stage s; S[0] is what the forward
keeps). Columns exist only for objects some stage from s on can read (its
backward's, and recursively the inputs of a re-run) and their nodes
(``_Program._useful``): zeroing the others keeps a plan feasible at no more
cost. Constraints:

* needs:   S[s,o] + R[s,node(o)] >= 1 for every o the stage's backward reads;
* inputs:  R[s,v] <= S[s,O(u)] + R[s,u] for every input u of v;
* carry:   S[s,o] <= S[s-1,o] + R[s-1,node(o)];
* no copy: S[s,o] + R[s,node(o)] <= 1;
* memory:  sum size(o)·S[s,o] + sum (size O(v) + size X(v))·R[s,v] <= budget - const[s], and at each
  forward op j, the kept objects the function has let go of fit too.

Covering cuts (``_Program._chains``), with P[s,o] = S[s,o] + R[s,node(o)]
(o is there at stage s). Alone, the relaxation above is weak: it keeps a
Linear's output at 3% and re-runs the cheap Tanh after it at 3% at each of
33 stages, each re-run reading the same 3%; its bound stays near zero (0.23
MFLOP where the optimum is 27.6 on a 50-op graph). In any plan, if an object
a of node v (its output, or its residual X(v)) is there at stage s+1, then a
was held at s, or v re-ran at s+1 — so its input u1 was there at s+1: held at
s, or u1 re-ran at s+1, and so on up an input path v <- u1 <- ... <- uk. For
every anchor a and every input path of length <= ``DEPTH``, a variable K[s]
in [0, 1] with

* K[s] >= P[s,a];
* K[s] <= P[s,a] + sum_i P[s,O(u_i)];
* K[s] >= K[s+1] - R[s+1,u_k]

says it: once a is needed, either it or an input on the path is held
through every earlier stage, or the path's last node re-runs in between.
Valid for every plan (tested: the LP stays at or below an exhaustive search's
optimum), and the 3% trick no longer pays: the bound becomes 26.7 MFLOP on
that graph. Paths of length 2 with one anchor per object (output and residual
apart) gave the best bound per second of LP up to ``DEPTH_OPS`` ops. On the
benchmark's 200-op graph at 60% of its plain peak they lift the bound from
1.17 to 1.48 MFLOP, and the rounded plan from 29.9 to 1.58 MFLOP (length 1
lets the LP spread its re-runs so thin that rounding them finds nothing
near); the LP takes about 40 s there. Length 3 added nothing on the 100-op
graph (the same bound, twice the LP time). Above ``DEPTH_OPS`` ops paths stop
at length 1: with length 2 the LP alone takes over a minute.

Minimise sum flops(v)·R[s,v]. R and S are binary (with S continuous the
model is the same — a constraint asking S > 0 with R integral asks S = 1 —
but HiGHS branches better on holding). The plan is read off R alone
(``Model.held_for`` holds the least that serves it); its simulated recompute
FLOPs equal the objective (``_solve_optimal`` checks it). The objective has
integer coefficients, so a bound rounds up to an integer.

``"lp"`` solves the relaxation (with the cuts, under a cap: Note [The cap])
and rounds it: Checkmate's thresholds on R and S, and a small MILP by HiGHS
with every re-run the LP leaves at zero fixed at zero (``only``); LPs at
slightly tighter budgets (``LP_SCALES``) give the rounding room. Keep sets
compete with the rounding: Chen's greedy, the articulation points, and
*selective* ones that keep the outputs of every op above a FLOP threshold
(PyTorch's selective checkpointing saves matmuls that way); on the 400-op
graph of the benchmark the last give a plan of 4.4 MFLOP where the greedy
one re-runs 340. ``"optimal"`` first runs ``"lp"`` (it
stops once within 10% of its bound; on graphs of a few hundred ops its LP
alone takes most of the time, and its plan and bound are the best there is
to report), then, in the time left, two MILPs
of the same optimum in turn: Checkmate's program as it is (every column, no
cuts) for ``PLAIN_SHARE`` of the time left, since on some graphs HiGHS proves
it in seconds where the cuts slow its branching (the residual MLP at half its
plain peak: 5 s, against no proof in 60 s with them), then, unless that
proved the optimum, the restricted program with paths of length
``MILP_DEPTH`` (1: its LPs are smaller, and on a 50-op graph HiGHS proved the
optimum in 37 s where with length 2 it had not in 60 s). The cheapest plan
found stands (lp's included), and the bound is the best of theirs.

Note [The cap]
--------------
Fixing at zero every re-run of an op that costs more than U FLOPs gives a
smaller program, whose optimum LP_U is at least the LP's. Whatever U is,
min(U, LP_U) is a lower bound on the optimum: either the optimum costs at
most U, and then no re-run in it costs more, so it is a point of the capped
program; or it costs more than U. With a plan of cost U in hand the bound is
LP_U itself. ``"lp"`` first guesses U = the best baseline plan's cost /
``CAP_START`` (an infeasible capped LP proves that every plan costs more
than U, and the cap rises to that plan's cost), then solves again under the
cost of the best plan its rounding found while the gap exceeds 10%. On the
synthetic graphs most ops are pointwise (a few kFLOP) and the matmuls cost
MFLOPs, so even a loose cap removes the matmuls' re-runs, and HiGHS's
presolve much of the program with them: on the benchmark's 200-op graph the
LP with two-op paths takes 11.3 s capped at 2 MFLOP against 39.4 s without
(the same bound, 1.479 MFLOP; 1.2 s against 2.2 s on the 100-op graph), and
``"lp"`` finds a plan of 1.53 MFLOP in 26 s where it found 1.58 in 48. ``"optimal"``'s MILPs
run without the cap: on the 100-op graph HiGHS's branch and bound did worse
with it (no plan better than lp's in 60 s, where without it it finds 0.990).
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..errors import ScheduleError
from .graph import O, X, Graph, GraphPlan, Model
from .schedules import parse_bytes

METHODS = ("optimal", "lp", "greedy", "articulation", "blocks", "none")
LP_SCALES = (0.98, 0.96, 0.93, 0.9)    # tighter budgets "lp" rounds LPs at, after the budget itself (fractions)
DEPTH = 2      # input paths of the covering cuts: 2 closes most of the relaxation's gap (Note [The MILP])
DEPTH_OPS = 250    # above this many ops the paths stop at length 1: the LP with length 2 takes too long
MILP_DEPTH = 1     # paths of "optimal"'s MILP: a smaller program, whose branch and bound goes faster
PLAIN_SHARE = 0.2  # of optimal's MILP time, first given to Checkmate's program without the cuts
MILP_LEAST = 3.0   # seconds: with less time left after its LP phase, "optimal" runs no MILP
MILP_MARGIN = 0.1  # of the time limit, kept back from "optimal"'s MILPs for HiGHS to stop in
CAP_START = 8      # "lp"'s first LP caps one re-run at the best baseline's cost / this (Note [The cap])


class _Program:
    """The MILP of the Note as sparse arrays, for one graph (the budget is only the right-hand sides)."""

    def __init__(self, model: Model, min_budget=False, depth=None, restrict=True):
        m = self.model = model
        self.min_budget = min_budget
        self.S, self.R = [], []          # per stage: {object: column}, {node: column}
        cols = 0
        useful = self._useful(m) if restrict else None      # None: every column, as in Checkmate
        for s, w in enumerate(m.stages):
            sv = {o: cols + k for k, o in enumerate(o for o in m.objects_at(s) if useful is None or o in useful[s])}
            cols += len(sv)
            nodes = None if useful is None else {o // 2 for o in useful[s]}
            rv = {v: cols + k for k, v in enumerate(v for v in range(w + 1) if nodes is None or v in nodes)}
            cols += len(rv)
            self.S.append(sv)
            self.R.append(rv)
        self.K = {}                      # (stage, anchor object, path) -> column of a covering variable
        for v, anchor, path in self._chains(m, DEPTH if depth is None else depth):
            for s in range(len(m.stages)):
                if not self._present(s, anchor):     # a is of no use from s on: K = 0 there satisfies every cut
                    break
                self.K[s, anchor, path] = cols
                cols += 1
        self.bcol = cols if min_budget else None
        self.ncols = cols + (1 if min_budget else 0)
        rows, cidx, vals, lo, hi = [], [], [], [], []
        self.mem_rows = []               # (row, constant) — right-hand side budget - constant
        r = 0

        def add(entries, lb, ub):
            nonlocal r
            for c, v in entries:
                rows.append(r)
                cidx.append(c)
                vals.append(v)
            lo.append(lb)
            hi.append(ub)
            r += 1
            return r - 1

        unit = max(max(m.size), 1)
        self.unit = unit
        for s, w in enumerate(m.stages):
            S, R = self.S[s], self.R[s]
            for o in m.need[s]:
                e = [(R[o // 2], 1.0)] + ([(S[o], 1.0)] if o in S else [])
                add(e, 1.0, np.inf)
            for v in R:
                for u in m.inputs[v]:
                    if O(u) in m.always:
                        continue
                    e = [(R[v], 1.0), (R[u], -1.0)] + ([(S[O(u)], -1.0)] if O(u) in S else [])
                    add(e, -np.inf, 0.0)
            for o, c in S.items():
                add([(c, 1.0), (R[o // 2], 1.0)], -np.inf, 1.0)
                if s > 0:
                    prev = [(self.S[s - 1][o], -1.0)] if o in self.S[s - 1] else []
                    add([(c, 1.0), (self.R[s - 1][o // 2], -1.0)] + prev, -np.inf, 0.0)
            e = [(c, m.size[o] / unit) for o, c in S.items() if m.size[o]]
            e += [(c, (m.size[O(v)] + m.size[X(v)]) / unit) for v, c in R.items()
                  if m.size[O(v)] + m.size[X(v)]]
            if min_budget:
                e.append((self.bcol, -1.0 / unit))
            self.mem_rows.append((add(e, -np.inf, 0.0), m.bwd_const[s]))
        for (s, anchor, path), k in self.K.items():       # the covering cuts of the Note
            add([(k, 1.0)] + [(c, -1.0) for o in (anchor,) + tuple(O(u) for u in path) for c in self._present(s, o)],
                -np.inf, 0.0)
            add([(k, 1.0)] + [(c, -1.0) for c in self._present(s, anchor)], 0.0, np.inf)
            nxt = self.K.get((s + 1, anchor, path))
            if nxt is not None:
                last = self.R[s + 1].get(path[-1])
                add([(k, 1.0), (nxt, -1.0)] + ([(last, 1.0)] if last is not None else []), 0.0, np.inf)
        S0 = self.S[0] if m.stages else {}
        for j in range(m.n):
            e = [(S0[o], m.size[o] / unit) for o in m.freeable[j] if o in S0]
            if min_budget:
                e.append((self.bcol, -1.0 / unit))
            self.mem_rows.append((add(e, -np.inf, 0.0), m.fwd_const[j]))
        from scipy.sparse import csr_array  # noqa: PLC0415

        self.A = csr_array((vals, (rows, cidx)), shape=(r, self.ncols))
        self.lo, self.hi = np.array(lo), np.array(hi)
        self.c = np.zeros(self.ncols)
        self.integrality = np.zeros(self.ncols)
        for s, R in enumerate(self.R):
            for v, col in R.items():
                self.c[col] = m.flops[v]
                self.integrality[col] = 1
        for S in self.S:        # integral S gives the same relaxation but lets HiGHS branch on holding
            for col in S.values():
                self.integrality[col] = 1
        self.ub = np.ones(self.ncols)
        if min_budget:
            self.c[:] = 0
            self.c[self.bcol] = 1.0 / unit
            self.ub[self.bcol] = np.inf

    @staticmethod
    def _useful(m):
        """Per stage s, the objects some stage from s on can read: its backward's, and (recursively) a re-run's inputs.

        S and R have columns only for these (and their nodes): zeroing the
        others keeps any plan feasible at no more cost, so the optimum stays.
        """
        out, acc = [None] * len(m.stages), set()
        for s in range(len(m.stages) - 1, -1, -1):
            todo = [o for o in m.need[s] if o not in acc]
            acc.update(todo)
            while todo:
                for u in m.inputs[todo.pop() // 2]:
                    if O(u) not in m.always and O(u) not in acc:
                        acc.add(O(u))
                        todo.append(O(u))
            out[s] = frozenset(acc)
        return out

    @staticmethod
    def _chains(m, depth):
        """(node, anchor object, input path) for each covering cut: paths of up to ``depth`` inputs the caller does not hold."""
        out = []
        depth = min(depth, 1) if m.n > DEPTH_OPS else depth
        for v in range(m.n):
            if m.view[v] or v in m.outputs:
                continue
            anchors = [O(v)] + ([X(v)] if m.size[X(v)] else [])
            todo = [(v, ())] if depth else []
            while todo:
                u, path = todo.pop()
                for x in m.inputs[u]:
                    if O(x) in m.always or x in path:
                        continue
                    p = path + (x,)
                    out.extend((v, a, p) for a in anchors if (v, a, p) not in out)
                    if len(p) < depth:
                        todo.append((x, p))
        return out

    def _present(self, s, o):
        """Columns whose sum is 1 when object o is there at stage s (held, or made by a re-run)."""
        cols = [self.S[s][o]] if o in self.S[s] else []
        return cols + ([self.R[s][o // 2]] if o // 2 in self.R[s] else [])

    def solve(self, budget, integral=True, time_limit=60.0, only=None, cap=math.inf, extra=None):
        """Run HiGHS; returns the scipy result with ``R`` (recompute sets) attached when a point was found.

        ``only``: an LP solution whose zero re-runs are fixed at zero (a small
        MILP around the relaxation, to round it). ``cap``: re-runs of an op
        costing more FLOPs than this are fixed at zero (Note [The cap]).
        ``extra``: rows (A, lo, hi) over the program's columns, added to it.
        """
        from scipy.optimize import Bounds, LinearConstraint, milp  # noqa: PLC0415
        from scipy.sparse import vstack  # noqa: PLC0415

        A, lo, hi = self.A, self.lo, self.hi.copy()
        for row, const in self.mem_rows:
            hi[row] = ((0.0 if self.min_budget else budget) - const) / self.unit
        if extra is not None:
            A, lo, hi = vstack([A, extra[0]]), np.concatenate([lo, extra[1]]), np.concatenate([hi, extra[2]])
        lb, ub = np.zeros(self.ncols), self.ub
        if only is not None:
            ub = np.where((self.c > 0) & (only.x <= 1e-6), 0.0, ub)
        if cap < math.inf and not self.min_budget:
            ub = np.where(self.c > cap, 0.0, ub)
        res = milp(self.c, constraints=LinearConstraint(A, lo, hi),
                   integrality=self.integrality if integral else None, bounds=Bounds(lb, ub),
                   options={"time_limit": max(0.1, time_limit), "mip_rel_gap": 0.0, "presolve": True})
        res.R = None
        res.Sval = None
        if res.x is not None:
            x = res.x
            res.R = [{v for v, c in R.items() if x[c] > 0.5} for R in self.R]
            res.Rfrac = [{v: x[c] for v, c in R.items()} for R in self.R]
            res.Sval = [{o: x[c] for o, c in S.items()} for S in self.S]
        return res


def minimum_budget(graph_or_model, time_limit=30.0):
    """The fewest bytes any plan needs, as (lower bound, bytes of a plan found): equal when proven."""
    m = graph_or_model if isinstance(graph_or_model, Model) else Model(graph_or_model)
    if not m.stages:
        need = max(m.fwd_const, default=0)
        return need, need
    p = _Program(m, min_budget=True)
    res = p.solve(0, integral=True, time_limit=time_limit)
    lb = getattr(res, "mip_dual_bound", None)
    if res.R is None:
        lb = lb if lb is not None and math.isfinite(lb) else 0
        return int(math.ceil(lb * p.unit - 1e-6)), None
    found = m.simulate(res.R)[0]
    if res.status == 0:
        return found, found
    return int(math.ceil((lb if lb is not None and math.isfinite(lb) else 0) * p.unit - 1e-6)), found


# --------------------------------------------------------------------------- the methods


def _below_minimum(m, budget, method, time_limit):
    lo, found = minimum_budget(m, time_limit=min(time_limit, 30.0))
    if found is not None and lo == found:
        if budget < found:
            return ScheduleError(
                f"solve: a budget of {budget:,} bytes is below the minimum this graph needs: {found:,} bytes "
                f"(every plan of the memory model peaks at least there; the plain step peaks at "
                f"{_plain_peak(m):,}). Raise the budget, or shrink the batch.")
        return ScheduleError(
            f"solve: method {method!r} found no plan within {budget:,} bytes, though the minimum is {found:,} "
            "bytes; use method='optimal' (or 'lp'), or raise the budget")
    return ScheduleError(
        f"solve: no plan within {budget:,} bytes found; the minimum this graph needs is at least {lo:,} bytes"
        + (f" and at most {found:,}" if found else "") + ". Raise the budget.")


def _plain_peak(m):
    return m.simulate(_none_R(m))[0]


def _none_R(m):
    return m.on_demand(set().union(*m.need) if m.need else set())


def _solve_optimal(m, budget, time_limit):
    """The MILP; lp's plan (found first: it stops once within 10% of its bound) stands when HiGHS has
    nothing cheaper at its time limit. Two programs of the same optimum run in turn: Checkmate's as it is
    (every column, no cuts) for a short share of the time (on some graphs HiGHS proves it in seconds where
    the cuts and the restricted columns change its branching for the worse: the residual MLP at half its
    plain peak, 5 s against over 60), then the restricted one with the covering cuts for the rest."""
    t0 = time.perf_counter()
    p = _Program(m)
    known, lp_lower, label = _lp_plan(m, p, budget, time_limit - (time.perf_counter() - t0), "optimal")
    R, fun, bound, proven = None, math.inf, -math.inf, False
    for depth, share in ((0, PLAIN_SHARE), (MILP_DEPTH, 1.0)):
        if time_limit - (time.perf_counter() - t0) < MILP_LEAST and known is not None:
            break                        # the LP phase took the time: building a program now would overrun
        milp = _Program(m, depth=depth, restrict=bool(depth))
        # a share of what is left, less a margin: HiGHS finishes the LP it is in before it stops (up to 5 s late
        # on the 200-op graph of the benchmark)
        left = max(0.1, share * (time_limit * (1 - MILP_MARGIN) - (time.perf_counter() - t0)))
        res = milp.solve(budget, integral=True, time_limit=left)
        if res.R is not None:
            if abs(res.fun - _cost(m, res.R)) > 0.5:
                raise ScheduleError(f"solve: the MILP's objective {res.fun:,.1f} differs from its plan's recompute "
                                    f"FLOPs {_cost(m, res.R):,}; this is a bug in graph_solve.py, please report it")
            if res.fun < fun:
                R, fun = res.R, res.fun
        b = getattr(res, "mip_dual_bound", None)
        if b is not None and math.isfinite(b):
            bound = max(bound, b)
        if res.status == 0:
            proven = True
            break
    note = "MILP solved by HiGHS"
    if known is not None and (R is None or _cost(m, known) < _cost(m, R)):
        R, note = known, note + f"; the LP rounding's plan was cheaper than its incumbent ({label})"
    if R is None:
        raise _below_minimum(m, budget, "optimal", time_limit)
    if not proven:
        note += f" (time limit {time_limit:g} s reached: not proven)"
    cost = _cost(m, R)
    lower = cost if proven else max(lp_lower, _ceil(bound) if math.isfinite(bound) else 0)
    return R, min(lower, cost), proven, note, time.perf_counter() - t0


def _ceil(x):
    """A bound from HiGHS as integer FLOPs (the objective's coefficients are integers), less its tolerance."""
    return max(0, int(math.ceil(x - 1e-6 * max(1.0, abs(x)))))


def _rounded(m, res, budget, program=None, time_limit=0.0, cap=math.inf):
    """Checkmate's two-phase rounding of one LP solution: the cheapest fitting candidate, as (R, how).

    Candidates: R rounded at several thresholds (holding then follows), S
    rounded likewise (held at every stage, or only the forward's kept set),
    and the nodes the LP seldom recomputes kept; given a ``program`` and time,
    also the MILP restricted to the re-runs the LP uses (HiGHS, a small program).
    """
    best, how = None, None
    if program is not None and time_limit > 0:
        small = program.solve(budget, integral=True, time_limit=time_limit, only=res, cap=cap)
        if small.R is not None and m.simulate(small.R)[0] <= budget:
            best, how = small.R, "the MILP over the LP's re-runs"

    again = {}                                   # how often the LP recomputes each node, in total
    for R in res.Rfrac:
        for v, x in R.items():
            again[v] = again.get(v, 0.0) + x
    for theta in (0.5, 0.25, 0.75, 0.1, 0.9, 0.01):
        rounded = [{o for o, x in S.items() if x >= theta} for S in res.Sval]
        seldom = {o for o in res.Sval[0] if again.get(o // 2, 0.0) < theta} if res.Sval else set()
        recompute = [{v for v, x in R.items() if x >= theta} for R in res.Rfrac]
        for R in (recompute, m.on_demand(rounded[0], extra_hold=rounded), m.on_demand(rounded[0]),
                  m.on_demand(seldom)):
            try:
                sim = m.simulate(R)
            except ScheduleError:       # a rounded R that would have to hold a view
                continue
            if sim[0] <= budget and (best is None or sim[3] < _cost(m, best)):
                best, how = R, f"threshold {theta}"
    return best, how


def _solve_lp(m, budget, time_limit):
    """The LP relaxation (a lower bound) and Checkmate's two-phase rounding (``_rounded``).

    While the rounded plan is not within 10% of the bound, the LP is solved
    again with a tighter budget (room for the rounding, as Checkmate does, in
    the steps of ``LP_SCALES``); the baselines' keep sets compete too. When the LP does not
    finish within the time limit, the best baseline plan is returned with no
    bound (0).
    """
    t0 = time.perf_counter()
    p = _Program(m)
    best, lower, how = _lp_plan(m, p, budget, time_limit - (time.perf_counter() - t0), "lp")
    cost = _cost(m, best)
    return best, min(lower, cost), cost == lower, f"LP relaxation by HiGHS, two-phase rounding ({how})", \
        time.perf_counter() - t0


def _lp_plan(m, p, budget, time_limit, method):
    """(plan, LP bound, how it was found); raises when the LP proves no plan fits (or, for "lp", none is found).

    The LPs run under a cap on the FLOPs of one re-run (Note [The cap]):
    first a guess, the best baseline's cost / ``CAP_START``, then the cost of
    the best plan found, while the gap to the bound exceeds 10%.
    """
    t0 = time.perf_counter()

    def left():                      # every HiGHS run gets at most what is left of the time limit
        return time_limit - (time.perf_counter() - t0)

    # The baselines' keep sets compete too, so the rounded plan is never worse than they are; found first,
    # they are there when the LP takes the whole time limit (seconds at 400 ops).
    base, label = _best_of(m, budget, _greedy_keeps(m) + _articulation_keeps(m) + _selective_keeps(m))
    known = _cost(m, base) if base is not None else math.inf     # the cheapest plan so far
    best, how, lower, finished = None, "", 0, False
    cap = known / CAP_START
    while True:                      # at the budget: each LP's bound is min(cap, its value)
        res = p.solve(budget, integral=False, time_limit=left(), cap=cap)
        if res.status == 2 and cap < math.inf:      # no plan re-runs only ops within the cap: each costs more
            lower = max(lower, _ceil(cap))
            cap = known if known > cap else math.inf
            continue
        if res.status == 2 or (res.x is None and res.status != 1):
            raise _below_minimum(m, budget, method, time_limit)
        if res.x is None:
            how = "the LP did not finish within the time limit"
            break
        finished = True
        lower = max(lower, _ceil(min(cap, res.fun)))
        R, way = _rounded(m, res, budget, p, min(left() / 4, time_limit / 8), cap=known)
        if R is not None and _cost(m, R) < known:
            best, how = R, way + (f", re-runs capped at {cap:,.0f} FLOPs" if cap < math.inf else "")
            known = _cost(m, R)
        if known <= 1.1 * lower or known == cap or time.perf_counter() - t0 > time_limit / 2:
            break
        cap = known                  # solve again under the cheapest plan's cost: a smaller LP, a bound as valid
    for scale in LP_SCALES if finished else ():   # Checkmate's trick: a tighter LP budget leaves the rounding room
        if known <= 1.1 * lower or time.perf_counter() - t0 > time_limit / 2:
            break
        res = p.solve(budget * scale, integral=False, time_limit=min(left(), time_limit / 4), cap=known)
        if res.x is None:
            break
        R, way = _rounded(m, res, budget, p, min(left() / 4, time_limit / 8), cap=known)
        if R is not None and _cost(m, R) < known:
            best, how, known = R, way + f", LP budget x{scale:.2f}", _cost(m, R)
    if base is not None and (best is None or _cost(m, base) < _cost(m, best)):
        best, how = base, (how + "; " if how else "") + f"a baseline keep set was cheaper: {label}"
    if best is None and method == "lp":
        raise _below_minimum(m, budget, method, time_limit)
    return best, lower, how


def _cost(m, R):
    return sum(m.flops[v] for r in R for v in r)


def _best_of(m, budget, keeps):
    """The cheapest fitting on-demand plan over candidate keep sets: (R, label) or (None, None)."""
    best = label = None
    for keep, name in keeps:
        R = m.on_demand(keep)
        peak, _, _, flops, _ = m.simulate(R)
        if peak <= budget and (best is None or flops < _cost(m, best)):
            best, label = R, name
    return best, label


def _greedy_keeps(m):
    """Chen et al. (2016)'s greedy over a range of thresholds b: keep an output whenever the bytes since the last exceed b."""
    sizes = [m.size[O(v)] + m.size[X(v)] for v in range(m.n)]
    total = max(sum(sizes), 1)
    keeps = [(set().union(*m.need) if m.need else set(), "b=0 (keep all)")]
    for b in sorted({int(total * 2.0 ** (-k / 4)) for k in range(0, 80)}):
        keep, acc = set(), 0
        for v in range(m.n):
            if m.view[v] or v in m.outputs:
                continue
            acc += sizes[v]
            if acc > b:
                keep.add(O(v))
                acc = 0
        keeps.append((keep, f"greedy b={b:,}"))
    return keeps


def _selective_keeps(m, levels=40):
    """Keep the outputs of the ops costing more than θ FLOPs, recompute the rest on demand, for up to ``levels``
    thresholds θ (PyTorch's selective checkpointing saves matmuls and recomputes pointwise ops the same way)."""
    costs = sorted(set(m.flops))
    if len(costs) > levels:
        costs = [costs[k * (len(costs) - 1) // (levels - 1)] for k in range(levels)]
    return [({O(v) for v in range(m.n) if m.flops[v] > th and not m.view[v] and v not in m.outputs},
             f"outputs of ops over {th:,} FLOPs kept") for th in costs]


def _solve_from_keeps(m, budget, time_limit, method, keeps, note):
    """The cheapest fitting plan among the keep sets ``keeps(m)`` gives; ``note`` is formatted with its label."""
    t0 = time.perf_counter()
    R, label = _best_of(m, budget, keeps(m))
    if R is None:
        raise _below_minimum(m, budget, method, time_limit)
    return R, 0, False, note.format(label), time.perf_counter() - t0


def _solve_greedy(m, budget, time_limit):
    """Chen's greedy: the cheapest fitting plan over the thresholds."""
    return _solve_from_keeps(m, budget, time_limit, "greedy", _greedy_keeps, "Chen's greedy, threshold {}")


def articulation_points(m) -> list:
    """Nodes every path from the inputs to the outputs runs through (no edge jumps over them), views excluded."""
    reach = [0] * (m.n + 1)
    for v in range(m.n):
        for u in m.inputs[v]:
            reach[u] = max(reach[u], v)       # the farthest consumer of u
    points, far = [], 0
    for v in range(m.n):
        if far <= v and not m.view[v] and v not in m.outputs:
            points.append(v)
        far = max(far, reach[v])
    return points


def _articulation_keeps(m):
    cand = articulation_points(m)
    k = len(cand)
    root = max(1, round(math.sqrt(k))) if k else 0
    return [({O(cand[(i + 1) * k // (c + 1)]) for i in range(c)},
             f"{c} of {k} articulation points" + (" (the sqrt rule)" if c == root else "")) for c in range(k + 1)]


def _solve_articulation(m, budget, time_limit):
    """Checkpoints at evenly spaced articulation points: the cheapest count that fits (Chen's rule takes √n)."""
    return _solve_from_keeps(m, budget, time_limit, "articulation", _articulation_keeps, "checkpoints at {}")


def _solve_none(m, budget, time_limit):
    R = _none_R(m)
    peak = m.simulate(R)[0]
    if peak > budget:
        raise ScheduleError(f"solve: method 'none' keeps every array backward reads and peaks at {peak:,} bytes, "
                            f"above the budget of {budget:,}; pick a checkpointing method ('optimal', 'lp', ...) "
                            "or raise the budget")
    return R, 0, True, "no checkpointing", 0.0       # recomputes nothing: no plan costs less


def _solve_blocks(m, budget, time_limit):
    """Per-block checkpointing, as by hand: keep the blocks' inputs, re-run each block when its backward starts.

    Blocks are what the function marked with ``graph_capture.block``. Ops
    outside every block keep what their backward reads. At a block's first
    backward stage its ops are re-run from the kept inputs (outputs that
    leave the block stay kept) and held until its backward has used them;
    views are re-made wherever read, as in every plan. One plan: it fits the
    budget or not.
    """
    blk = [v.block for v in m.graph.nodes]
    if not m.graph.blocks:
        raise ScheduleError("solve: method 'blocks' needs the blocks a user would checkpoint by hand; mark them in the "
                            "function with `with minigrad.checkpoint.block(name): ...` and capture again")
    kept = {u for v in range(m.n) for u in m.inputs[v] if blk[u] != blk[v]}     # read outside their block
    R = [set() for _ in m.stages]
    first = {}
    for s, w in enumerate(m.stages):
        first.setdefault(blk[w], s)
    for b, s0 in first.items():
        if b < 0:
            continue
        todo = [o for s, w in enumerate(m.stages) if blk[w] == b for o in m.need[s]]
        while todo:
            v = todo.pop() // 2
            if blk[v] == b and v not in kept and v not in m.outputs and v not in R[s0]:
                R[s0].add(v)
                todo.extend(O(u) for u in m.inputs[v])
    for s, r in enumerate(R):            # views: re-made at each stage that reads one it did not make
        todo = list(m.need[s]) + [O(u) for v in r for u in m.inputs[v]]
        while todo:
            v = todo.pop() // 2
            if m.view[v] and v not in m.outputs and v not in r:
                r.add(v)
                todo.extend(O(u) for u in m.inputs[v])
    peak = m.simulate(R)[0]
    if peak > budget:
        raise ScheduleError(f"solve: per-block checkpointing ({len(m.graph.blocks)} blocks) peaks at {peak:,} bytes, "
                            f"above the budget of {budget:,}; raise the budget or pick a method that plans op by "
                            "op ('optimal', 'lp')")
    return R, 0, False, f"checkpoints each of the {len(m.graph.blocks)} marked blocks", 0.0


SOLVERS = {"optimal": _solve_optimal, "lp": _solve_lp, "greedy": _solve_greedy,
           "articulation": _solve_articulation, "blocks": _solve_blocks, "none": _solve_none}


def solve(graph: Graph, budget, method: str = "optimal", time_limit: float = 60.0) -> GraphPlan:
    """The recomputation plan of ``graph`` within ``budget`` (bytes, or "8MB") by ``method``.

    Raises ScheduleError for an unknown method, a budget that does not parse
    or is negative, or one below what the graph needs (stating the minimum).
    ``time_limit`` bounds the solve (seconds; every HiGHS run gets what is
    left of it, and HiGHS itself may overrun a little); an unproven "optimal"
    plan says so (``optimal=False``, ``gap``).
    """
    if not isinstance(method, str) or method not in SOLVERS:
        raise ScheduleError(f"solve: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or not time_limit > 0 \
            or not math.isfinite(time_limit):
        raise ScheduleError(f"solve: time_limit must be a positive number of seconds, got {time_limit!r}; "
                            "pass e.g. time_limit=60")
    if not isinstance(graph, Graph):
        raise ScheduleError(f"solve: expected a Graph from capture(fn, *args), got {type(graph).__name__}")
    limit = parse_bytes(budget)
    m = Model(graph)
    R, lower, proven, note, seconds = SOLVERS[method](m, limit, time_limit)
    if method in ("greedy", "articulation", "blocks"):
        lower = 0
    return GraphPlan(graph, limit, method, tuple(R), lower_bound=lower, optimal=proven, solve_seconds=seconds,
                     note=note, model=m)


def plain_peak(graph: Graph) -> int:
    """Peak bytes of a step that keeps everything backward reads (no checkpointing)."""
    return _plain_peak(Model(graph))
