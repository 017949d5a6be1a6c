"""The budget planner: the chain schedule with the fewest forward FLOPs whose predicted peak fits a budget.

NOTE [ Levels ]
Memory is counted on a grid of ``q`` bytes, the gcd of every size of the
chain, so nothing is rounded. The searches below keep, for every subproblem,
a vector over *levels*: the memory free besides the slots below it. Only
levels of the form ``K - (a sum of activation sizes)`` are ever asked for (the
budget minus the slots on the stack; a slot dropped early adds its size back),
so the vectors hold just those: the sums reachable by a knapsack over the
distinct sizes. For a chain whose activations are multiples of one size that
is about budget / size levels, not budget / q. Only when there would be more
than ``max_levels`` of them is the grid coarsened (sizes rounded up, so plans
still fit; classic schedules are then rechecked in exact bytes).

NOTE [ Exact search ]
Optimal over every schedule of the memory model (the tests check it against
Dijkstra over all action sequences, and against its recurrence written
plainly). ``R[a][k, b]``: the cheapest reversal of layers k+1..b from slot
x_a (k >= a), x_a dropped at its last use. Its phases run right to left: a
phase reverses b..c+1 either as one run recorded from x_c, reached by
advancing from x_a, or through a new slot x_p (a < p <= c) that serves
exactly those layers (``R[p][c, b]``) and is then dropped; x_a may be dropped
as soon as its last sweep leaves it. Columns b are built left to right,
starts a right to left, every k at once, and the best new slot p for each
(c, b) is carried from a to a - 1 in O(1) vector steps: Python runs O(L^2)
steps, NumPy O(L^4 / 24) level vectors of work over O(L^3 / 6) stored ones.
The O(L^3) subproblems are needed (a slot may serve any span); three things,
none of which changes a result, make them small enough for L = 100 (on the
heterogeneous chain of ``benchmarks/planner_scale.py``, 70 MB of tables
instead of 352 and a fifth of the time; ``benchmarks/RESULTS.md`` section 8):
1. Per-start levels. R[a] is only asked for at the budget less x_a and some
   of x_1..x_{a-1} (a slot dropped early gives its bytes back), so it is kept
   from level K - (A_1 + ... + A_a) up, ``_Grid.starts``: one level for
   x_0, a few for the first slots, whose subproblems are the most numerous.
2. Rows that are done. A later phase (c, b] costs at least F[b] - F[a] and
   what remains, (k, c], at least F[c] - F[a]: so from the level where row k
   already costs no more than F[b] + F[k+1] - 2 F[a] (say, where its one run
   fits) row k is final, and each block of rows tries later phases only
   below the highest such level among its rows.
3. No masks, float32. ``Q[a][k, t] = R[a][k, k + t]``: the later phases of a
   step add Q[a][k, t] to the phase (k + t, b], read from the step's phases
   padded with inf, so one rectangle per block of rows is exact: what lies
   past the current column (not built yet, or another start's) meets an inf.
   Two starts share one array (complementary triangles). Costs, in units of
   the gcd of the FLOPs, are float32 when (L + 1) F[L] < 2**24: by induction
   over phases a finite R[a][k, b] is at most (b - k)(F[b] - F[a]), a slot's
   entry F[p] more, so every value that can win is an exact float32 integer
   and a sum that rounds is above the optimum it competes with.
Tried and left out (measured at L = 100): merging levels no subproblem tells
apart (3 of 249), trimming each step to the levels where some later phase is
finite and its inputs still change (10% less work, more calls than it saves),
and keeping decisions in small integers instead of costs (later columns read
every cost of their start again, so the costs stay anyway). At L = 1000 the
tables would still hold about 4e10 level entries, so long chains go to the
searches below.

NOTE [ Long chains ]
The nested search keeps O(L^2) level vectors and does O(L^3) work: every slot
serves all layers to its right and stays until they are reversed (Revolve's
and Beaumont et al.'s persistent schedules). It is optimal over that family
and runs when the exact tables would not fit in ``EXACT_BYTES``. Chains longer
than ``LONG_LAYERS`` are first cut into groups of consecutive layers, each
priced as one layer by upper bounds (recording a group keeps all its
activations; reversing it, the worst of its layers), so any plan of the
grouped chain, expanded, fits the budget in the full model; the least budget
a grouped chain needs is higher, so groups get shorter as the budget gets
tighter, and the whole chain is searched when none fits. The gaps to the
exact search are measured in ``benchmarks/planner_scale.py``.
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np

from ..errors import ScheduleError
from . import schedules
from .costs import ChainCosts, _replay
from .schedules import Schedule, Strategy, _check_L, _table, _tidy

EXACT_BYTES = 96_000_000      # the exact search runs when its tables fit here; else the nested one
MAX_LEVELS = 1024             # more levels than this: a coarser grid
NESTED_BYTES = 400_000_000    # the nested search coarsens its levels to keep its tables within this
LONG_LAYERS, GROUPS = 160, 128  # longer chains are planned as GROUPS runs of consecutive layers
RECHECK_LAYERS = 200          # on a coarsened grid, classic schedules are rechecked in exact bytes up to this L


# --------------------------------------------------------------------------- the grid


def _binned(c: ChainCosts, q: int):
    """Sizes on a grid of q bytes (rounded up): activations A, extras E, parameter-gradient steps alive
    while advancing once layers i.. are reversed (G[i]), forward-only transients I, and what reversing
    layer i allocates (B[i])."""
    L = c.L
    up = lambda v: -(-int(v) // q)  # noqa: E731
    A = [up(v) for v in c.sizes]
    E = [0] + [up(v) for v in c.extras[1:]]
    I = [0] + [up(v) for v in c.inner[1:]]  # noqa: E741
    P = [0] + [up(v) for v in c.params[1:]] + [0]
    B = [0] + [up(v) for v in c.back[1:]]
    G = [0] * (L + 2)
    if c.persist:
        for i in range(L, 0, -1):
            G[i] = G[i + 1] + P[i]
    return A, E, G, I, B


def _minimum_bins(A, E, G, I, B):  # noqa: E741
    """The least memory (grid steps, x_0 included) any schedule needs: reverse each layer from x_0.

    With one slot (x_0) every layer i is reached by advancing from x_0 and then
    recorded alone; nothing needs less memory in this model.
    """
    L = len(A) - 1
    worst = adv = 0                                   # adv: the transient of advancing x_0 -> x_{i-1}
    for i in range(1, L + 1):
        held = G[i + 1] + (A[i] if i < L else 0)      # gradients alive while advancing to x_{i-1}
        base = A[i - 1] * (i - 1 != 0) + A[i] + E[i]
        worst = max(worst, adv + held, base + I[i] + held, base + A[i] + B[i] + G[i + 1])
        adv = max(adv, A[i - 1] * (i - 1 != 0) + A[i] + I[i])
    return A[0] + worst


def minimum_budget(costs: ChainCosts) -> int:
    """The least budget (bytes) any schedule of this chain runs in, the reserved workspace included."""
    return _minimum_bins(*_binned(costs, 1)) + costs.workspace


def _gcd(values):
    q = 0
    for v in values:
        q = math.gcd(q, int(v))
    return max(q, 1)


def _levels(A, K, cap):
    """The levels K - s for every s <= K that is a sum of activation sizes (NOTE [ Levels ]), ascending;
    None when there are more than ``cap``. Grown as a set, so it costs what it finds, not K."""
    if K < 0:
        return None
    sizes = sorted({a for a in A[1:] if a > 0})
    sums, frontier = {0}, [0]
    while frontier:
        new = {s + w for s in frontier for w in sizes if s + w <= K} - sums
        sums |= new
        if len(sums) > cap:
            return None
        frontier = list(new)
    return K - np.array(sorted(sums, reverse=True), dtype=np.int64)


class _Grid:
    """A chain on the planner's levels, and the peaks both searches share.

    ``T[a, c]``: the transient of advancing x_a -> x_c without recording, x_a in
    a slot; ``U[a, c]``: the same with x_a counted as an ordinary activation (it
    is dropped on the way); ``Rrev[c, b]`` / ``Rrec[c, b]``: the peaks of
    reversing / recording layers c+1..b as one run (x_c not counted), the
    recording without the gradient that waits meanwhile.
    """

    def __init__(self, A, E, G, I, B, flops, levels):  # noqa: E741
        L = len(A) - 1
        self.L, self.A, self.G, self.lv, self.n = L, A, G, levels, len(levels)
        g = _gcd(flops[1:]) if any(flops[1:]) else 1
        F = np.concatenate([[0], np.cumsum(np.asarray(flops[1:], dtype=np.int64) // g)])
        # float32 is exact for integers below 2**24: a finite cost is at most L F[L] and a slot's entry
        # F[p] more (NOTE [ Exact search ]); a sum that rounds is above every optimum, so it never wins
        self.dtype = np.float32 if (L + 1) * int(F[-1]) < 2**24 else np.float64
        self.F, self.unit = F.astype(self.dtype).tolist(), g
        An, En, In, Bn, Gn = (np.asarray(v, dtype=np.int64) for v in (A, E, I, B, G))
        j = np.arange(L + 1)
        step_t = np.zeros(L + 1, np.int64)             # advancing onto x_j: x_{j-1} + x_j + inner
        step_t[1:] = An[:-1] + An[1:] + In[1:]
        self.T = np.zeros((L + 1, L + 1), np.int64)
        self.U = np.zeros((L + 1, L + 1), np.int64)
        self.Rrev = np.zeros((L + 1, L + 1), np.int64)
        self.Rrec = np.zeros((L + 1, L + 1), np.int64)
        for a in range(L):
            s = step_t[a + 1:].copy()
            self.U[a, a + 1:] = np.maximum.accumulate(s)
            s[0] -= An[a]                              # x_a sits in its slot: not counted again
            self.T[a, a + 1:] = np.maximum.accumulate(s)
            total = np.cumsum(An[a + 1:] + En[a + 1:])
            self.Rrec[a, a + 1:] = np.maximum.accumulate(total + In[a + 1:])
            self.Rrev[a, a + 1:] = np.maximum.accumulate(total + An[a + 1:] + Bn[a + 1:] + Gn[a + 2:L + 2])
        del j
        self._down, self._up = {}, {}

    def grad(self, b):
        """Grid steps of gradients alive while layers 1..b remain (none before the first reversal)."""
        return 0 if b == self.L else self.A[b] + self.G[b + 1]

    def run_need(self, a, c, b, g):
        """Least level at which one sweep can advance x_a -> x_c (x_a kept) and record and reverse c+1..b
        (c may be an array)."""
        return np.maximum(self.T[a, c] + g,
                          np.asarray(self.A)[c] * (c != a) + np.maximum(self.Rrev[c, b], self.Rrec[c, b] + g))

    def run_from(self, b, runs=True):
        """(b, b) level indices from which the run (k, b] fits from x_a, at [a, k]: kept, and dropped as the
        sweep leaves it (k > a); n where it never fits (and for k < b - 1 without ``runs``)."""
        g = self.grad(b)
        base = np.maximum(self.Rrev[:b, b], self.Rrec[:b, b] + g)
        An = np.asarray(self.A[:b])
        kept = np.maximum(self.T[:b, :b] + g, An + base)
        kept[np.arange(b), np.arange(b)] = np.maximum(g, base)
        freed = np.maximum(self.U[:b, :b] + g, An + base)
        if not runs:
            kept[:, :b - 1] = freed[:, :b - 1] = self.lv[-1] + 1
        return np.searchsorted(self.lv, kept), np.searchsorted(self.lv, freed)

    def run_need_released(self, a, c, b, g):
        """The same with x_a dropped once the sweep leaves it (c > a), on levels that count x_a as free."""
        return np.maximum(self.U[a, c] + g, np.asarray(self.A)[c] + np.maximum(self.Rrev[c, b], self.Rrec[c, b] + g))

    def starts(self):
        """o[a]: the index of the lowest level R[a] is asked for, the budget less x_1..x_a (NOTE [ Exact search ])."""
        return np.searchsorted(self.lv, self.lv[-1] - np.concatenate([[0], np.cumsum(self.A[1:])])).tolist()

    def down(self, w):
        """Index of level - w for every level (n, meaning none, where it is below 0)."""
        if w not in self._down:
            pos = np.searchsorted(self.lv, self.lv - w)
            ok = (pos < self.n) & (self.lv[np.minimum(pos, self.n - 1)] == self.lv - w)
            self._down[w] = np.where(ok, pos, self.n)
        return self._down[w]

    def up(self, w):
        """Index of the highest level <= level + w (the top one above the top)."""
        if w not in self._up:
            self._up[w] = np.searchsorted(self.lv, self.lv + w, side="right") - 1
        return self._up[w]

    def shifted(self, arr, w):
        """arr at level - w, along the last axis (inf where that is below 0)."""
        pad = np.full(arr.shape[:-1] + (1,), np.inf, arr.dtype)
        return np.concatenate([arr, pad], axis=-1)[..., self.down(w)]


# --------------------------------------------------------------------------- actions of a phase


def _advance(t, a, c, drop=False):
    """Restore x_a and advance to x_c without recording (dropping x_a once the sweep leaves it, if asked)."""
    acts = [t["restore"][a]] + t["advance"][a + 1:c + 1]
    if drop and c > a:
        acts.insert(2, t["drop"][a])
    return acts


def _sweep(t, a, c, b, drop=False):
    """Advance x_a -> x_c, record c+1..b and reverse them."""
    return _advance(t, a, c, drop) + t["record"][c + 1:b + 1] + t["reverse"][b:c:-1]


def _advance_and_keep(t, a, p, drop=False):
    """Advance x_a -> x_p and keep it."""
    return _advance(t, a, p, drop) + [t["keep"][p]]


# --------------------------------------------------------------------------- the exact search


def _exact_search(g: _Grid, runs=True):
    """The cheapest schedule in the memory model, over every schedule (NOTE [ Exact search ])."""
    L, n, A, F, dt, lv = g.L, g.n, g.A, g.F, g.dtype, g.lv
    o = g.starts()
    INF = np.inf
    Q = _exact_tables(L, n, dt, o)
    Z = np.where(np.arange(n)[None, :] >= np.arange(n + 1)[:, None], 0, INF).astype(dt)  # Z[i]: 0 from level i up
    # x_a as a slot for the starts below it is read at level - A[a]: its index in R[a], and inf where there is none
    slot_at, slot_add = [None], [None]
    for a in range(1, L + 1):
        at = g.down(A[a])[o[a - 1]:] - o[a]
        slot_at.append(np.minimum(at, n - o[a] - 1))
        slot_add.append(np.where(at < n - o[a], F[a], INF).astype(dt))
    keep_best = np.full((L + 1, n), INF, dt)       # per k: the best new slot p for the phase (k, b], F[p] added
    rel_best = np.full((L + 1, n), INF, dt)
    pad = np.full((2 * L + 1, n), INF, dt)         # the phases of one step, then inf: read as P[k + t]
    Fv = np.asarray(F, dtype=dt)
    ar = np.arange(L + 1)
    for b in range(1, L + 1):
        gb = g.grad(b)
        run, run_freed = g.run_from(b, runs)       # run[a, k]: the level index from which the run (k, b] fits
        keep_from = np.searchsorted(lv, g.T[ar[:b], ar[:b] + 1] + gb)          # advancing x_{a-1} -> x_a fits
        keep_from2 = np.searchsorted(lv, g.T[ar[:b - 1], ar[:b - 1] + 2] + gb)  # ... -> x_{a+1}
        rel_from = np.searchsorted(lv, g.U[ar[:b], ar[:b] + 1] + gb)
        keep_best[:] = INF
        rel_best[:] = INF
        for a in range(b - 1, -1, -1):
            oa, m, na = o[a], b - a, n - o[a]
            cost = dt(F[b] - F[a])
            phase = Z[:, oa:][run[a, a:b]] + cost  # the phase (k, b] as one run, for each k
            np.minimum(phase, keep_best[a:b, oa:] - F[a], out=phase)
            col = phase.copy()
            if a > 0 and m > 1:                    # 0 < a < k: x_a may go once its last sweep leaves it
                freed = g.up(A[a])[oa:]            # the same phase with x_a's bytes free again
                rel = rel_best[a + 1:b][:, freed] - F[a]
                ok = freed[None, :] >= run_freed[a, a + 1:b, None]
                np.minimum(col[1:], np.where(ok, np.minimum(rel, cost), rel), out=col[1:])
            Qa = Q[a]
            if m > 1:
                # later phases: (c, b] first, then (k, c] from R[a], for c = k + t > k (k, t counted from
                # a). Q[a][k, t] is R[a][k, k + t] and P[k, t - 1] the phase (k + t, b]: past the last
                # phase it is inf, so the rectangle t < m - r0 of each block of rows is exact without a
                # mask. Later phases cost at least F[b] - F[a] + F[k + 1] - F[a]: from the level where
                # row k costs no more, up, it is final (NOTE [ Exact search ])
                pad[:m, :na] = phase
                rs = pad.strides[0]
                P = np.ndarray((m - 1, m - 1, na), dt, pad, rs, (rs, rs, pad.strides[1]))   # P[k, j] = pad[k + j + 1]
                over = col > Fv[a + 1:b + 1, None] + (F[b] - 2 * F[a])
                top = np.where(over.any(axis=1), na - over[:, ::-1].argmax(axis=1), 0)
                for r0, r1 in _blocks(m, na):
                    h = int(top[r0:r1].max())
                    if h > 0:
                        w = m - r0
                        red = (Qa[r0:r1, 1:w, :h] + P[r0:r1, :w - 1, :h]).min(axis=1)
                        np.minimum(col[r0:r1, :h], red, out=col[r0:r1, :h])
                pad[:m, :na] = INF
            Qa[ar[:m], m - ar[:m]] = col              # R[a][:, b]: the diagonal k + t = m of Q[a]
            if a > 0:                              # x_a as a new slot for starts a - 1 and below
                j = o[a - 1]                       # the lowest level they ask for
                S = col[:, slot_at[a]] + slot_add[a]
                kb, rb = keep_best[a:b, j:], rel_best[a:b, j:]
                kb += Z[keep_from2[a - 1], j:]
                np.minimum(kb, S + Z[keep_from[a - 1], j:], out=kb)
                np.minimum(rb, S, out=rb)
                rb += Z[rel_from[a - 1], j:]
    if not np.isfinite(Q[0][0, L, -1]):
        raise ScheduleError("budget planner: no schedule fits this budget")  # pragma: no cover (checked before)
    return _exact_actions(g, Q, runs)


BLOCK_WORK = 0.01    # row blocks per step, per row and sqrt(level): NumPy calls against rectangle wasted (measured)


@functools.lru_cache(maxsize=4096)
def _blocks(m, levels):
    """Row blocks [r0, r1) covering rows 0..m-2: block rows k need t < m - r0 of the rectangle, so more
    blocks waste less of it, and cost one NumPy call each; more where the vectors are long."""
    parts = max(1, min(m // 2, 16, round(m * math.sqrt(levels) * BLOCK_WORK)))
    cuts = sorted({round(j * (m - 1) / parts) for j in range(parts + 1)})
    return tuple(zip(cuts, cuts[1:]))


def _exact_tables(L, n, dt, o):
    """Q[a][k, t] = R[a][a + k, a + k + t] over levels o[a]..n-1 for k + t <= L - a (a triangle) in an
    (L-a) x (L-a+2) array: Q[a+1] takes the other triangle of the same array, both axes reversed, so two
    tables share the memory (the pair holds Q[a+1]'s levels, which include Q[a]'s)."""
    Q = []
    for a in range(0, L, 2):
        N = L - a
        lo = o[a + 1]
        pair = np.full((N, N + 2, n - lo), np.inf, dt)
        Q.append(pair[:, :, o[a] - lo:])
        if a + 1 < L:                             # Q[a+1][k, t] lives at pair[N - 1 - k, N + 1 - t]
            Q.append(pair[N - 1::-1, N + 1::-1])
    return Q


def exact_table_bytes(L, n, itemsize, o):
    """What the exact search's tables take (R[a] on levels o[a]..n-1)."""
    return sum((L - a) * (L - a + 2) * (n - o[a + 1]) for a in range(0, L, 2)) * itemsize


def _exact_actions(g, R, runs):
    """Rebuild the schedule behind R[0][0, L] at the top level, with an explicit stack (no closures)."""
    L, n, A, F, lv = g.L, g.n, g.A, g.F, g.lv
    t = _table(L)
    o = g.starts()
    get = lambda a, k, b, li: float(R[a][k - a, b - k, li - o[a]]) if o[a] <= li < n else math.inf  # noqa: E731

    def choices(a, c, b, li, gb, released=False):
        """(cost, new slot or None for one run, child) of each way to run the phase (c, b] from x_a at level
        index li; the actions are built for the one that is taken."""
        need, reach = (g.run_need_released, g.U) if released else (g.run_need, g.T)
        level = lv[li]
        if (runs or c == b - 1) and level >= need(a, c, b, gb):
            yield F[b] - F[a], None, None
        for p in range(a + 1, c + 1):
            lp = g.down(A[p])[li]
            if level >= reach[a, p] + gb and lp < n:
                yield F[p] - F[a] + get(p, c, b, lp), p, (p, c, b, lp)

    def build(a, c, b, p, released=False):
        return _sweep(t, a, c, b, released) if p is None else _advance_and_keep(t, a, p, released)

    acts, todo = [], [(0, 0, L, n - 1)]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            acts.extend(item)
            continue
        a, k, b, li = item
        target, gb = get(a, k, b, li), g.grad(b)
        found = None
        for cost, p, child in choices(a, k, b, li, gb):             # one phase covers (k, b]
            if cost == target:
                found = ([t["drop"][a]] if a > 0 else [], child, build(a, k, b, p))
                break
        if found is None and 0 < a < k:
            up = g.up(A[a])[li]
            for cost, p, child in choices(a, k, b, up, gb, released=True):
                if cost == target:
                    found = ([], child, build(a, k, b, p, released=True))
                    break
        if found is None:
            for c in range(k + 1, b):
                rest = get(a, k, c, li)
                if rest + (F[b] - F[a]) > target:  # no phase (c, b] costs less than its one run
                    continue
                for cost, p, child in choices(a, c, b, li, gb):
                    if cost + rest == target:
                        found = ((a, k, c, li), child, build(a, c, b, p))
                        break
                if found is not None:
                    break
        if found is None:
            raise AssertionError("budget planner: no choice reproduces the optimum")  # pragma: no cover
        after, child, head = found
        todo.append(after)                         # run order: head, child, then what follows
        if child is not None:
            todo.append(child)
        todo.append(head)
    return acts


# --------------------------------------------------------------------------- the nested search


def _nested_search(g: _Grid, runs=True):
    """The cheapest schedule whose slots each serve every layer to their right (NOTE [ Long chains ]).

    To reverse layers a+1..b with x_a stored, either advance to some m, keep
    x_m, reverse m+1..b with x_m's memory taken, drop x_m, then reverse a+1..m;
    or advance to some c, record c+1..b as one run and reverse it, then reverse
    a+1..c (``runs=False``: runs of one layer only).
    """
    L, n, A, F, dt, lv = g.L, g.n, g.A, g.F, g.dtype, g.lv
    INF = np.inf
    # C[level, a, b]: levels outermost, so the running minimum over m or c runs along contiguous memory
    C = np.full((n, L + 1, L + 1), INF, dt)
    C[:, np.arange(L + 1), np.arange(L + 1)] = 0
    Fv = np.asarray(F, dtype=dt)
    S = np.full((n, L + 1), INF, dt)               # S[:, m] = F[m] + C[m, b] at level - A[m]: the slot x_m
    for b in range(1, L + 1):
        gb = g.grad(b)
        for a in range(b - 1, -1, -1):
            best = np.full(n, INF, dt)
            if b - a > 1:
                # slots m in (a, b): allowed where level >= T[a, m] + gb, and T[a, m] grows with m, so
                # the allowed m are a prefix: a running minimum over m, read at each level's last m
                last = np.searchsorted(g.T[a, a + 1:b] + gb, lv, side="right") - 1
                ok = last >= 0
                if ok.any():
                    X = np.minimum.accumulate(S[:, a + 1:a + 2 + last.max()] + C[:, a, a + 1:a + 2 + last.max()],
                                              axis=1)
                    best[ok] = X[ok, last[ok]] - F[a]
            cs = np.arange(a, b) if runs else np.arange(b - 1, b)
            need = g.run_need(a, cs, b, gb)
            fit = need <= lv[-1]                   # runs too big for any level never count
            if fit.any():                          # runs: the same over their needs, sorted
                cs, need = cs[fit], need[fit]
                order = np.argsort(need, kind="stable")
                last = np.searchsorted(need[order], lv, side="right") - 1
                ok = last >= 0
                X = np.minimum.accumulate(C[:, a, cs[order[:last.max() + 1]]], axis=1)
                best[ok] = np.minimum(best[ok], X[ok, last[ok]] + (F[b] - F[a]))
            C[:, a, b] = best
            if a > 0:
                S[:, a] = g.shifted(best, A[a]) + Fv[a]
    if not np.isfinite(C[n - 1, 0, L]):
        raise ScheduleError("budget planner: no schedule fits this budget")  # pragma: no cover (checked before)
    t = _table(L)
    acts, todo = [], [(0, L, n - 1)]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            acts.extend(item)
            continue
        a, b, li = item
        if a == b:
            continue
        target, gb, level = float(C[li, a, b]), g.grad(b), lv[li]
        for m in range(a + 1, b):
            lm = g.down(A[m])[li]
            if lm >= n or g.T[a, m] + gb > level:
                continue
            if F[m] - F[a] + float(C[lm, m, b]) + float(C[li, a, m]) == target:
                todo += [(a, m, li), [t["drop"][m]], (m, b, lm), _advance_and_keep(t, a, m)]
                break
        else:
            for c in (range(a, b) if runs else (b - 1,)):
                if g.run_need(a, c, b, gb) <= level and F[b] - F[a] + float(C[li, a, c]) == target:
                    todo += [(a, c, li), _sweep(t, a, c, b)]
                    break
            else:
                raise AssertionError("budget planner: no choice reproduces the optimum")  # pragma: no cover
    return acts


# --------------------------------------------------------------------------- the long-chain search


def _grouped(c: ChainCosts, groups: int):
    """The chain as ``groups`` runs of consecutive layers, each priced as one layer by upper bounds
    (NOTE [ Long chains ]); returns (grouped costs, boundaries: group g is layers bounds[g-1]+1..bounds[g])."""
    L = c.L
    bounds = [round(g * L / groups) for g in range(groups + 1)]
    A, E, I, B, P = c.sizes, c.extras, c.inner, c.back, c.params
    sizes, flops, extras, params, inner, back = [A[0]], [0], [0], [0], [0], [0]
    for i0, i1 in zip(bounds, bounds[1:]):
        J = range(i0 + 1, i1 + 1)
        sizes.append(A[i1])
        flops.append(sum(c.flops[j] for j in J))
        params.append(sum(P[j] for j in J))
        # recording the group keeps every activation inside it and every extra
        extras.append(sum(A[j] for j in range(i0 + 1, i1)) + sum(E[j] for j in J))
        # a layer's forward inside the group: its input, output and transient, beyond x_i0 and x_i1
        inner.append(max(0, max(max(I[j], A[j - 1] + A[j] + I[j] - A[i0] - A[i1]) for j in J)))
        # reversing layer j of the group: g_j and what it allocates, and the parameter gradients of
        # the group's layers already reversed (when they persist), beyond g_i1
        worst, done = 0, 0
        for j in reversed(J):
            worst = max(worst, A[j] + B[j] + done)
            done += P[j] if c.persist else 0
        back.append(max(0, worst - A[i1]))
    return ChainCosts(sizes, flops, extras, params, inner, back, c.workspace, c.persist), bounds


def _expand(acts, bounds):
    """A schedule over groups as one over layers: a group's advance, record or reverse is its layers'."""
    t = _table(bounds[-1])
    out = []
    for a in acts:
        k, g = a.kind, a.i
        if k in ("advance", "record"):
            out.extend(t[k][bounds[g - 1] + 1:bounds[g] + 1])
        elif k == "reverse":
            out.extend(t[k][bounds[g]:bounds[g - 1]:-1])
        else:
            out.append(t[k][bounds[g]])
    return out


# --------------------------------------------------------------------------- the planner


def budget(costs: ChainCosts, budget_bytes: int, runs=True, exact=None, max_levels=MAX_LEVELS,
           groups=None) -> Schedule:
    """The schedule with the fewest forward FLOPs whose predicted peak, plus ``costs.workspace``, fits.

    ``exact=None`` runs the exact search when its tables fit in ``EXACT_BYTES``,
    else the nested one (NOTE [ Exact search ], NOTE [ Long chains ]);
    ``runs=False`` records one layer at a time, the space Revolve searches.
    Chains longer than ``LONG_LAYERS`` are planned as groups of consecutive
    layers when the grouped chain fits (``groups=`` forces that many).
    The note says which search ran, on which grid, the bytes of its tables
    (the peak of planning, give or take a level vector) and the seconds it took. Raises
    ScheduleError stating the minimum feasible budget.
    """
    start = time.perf_counter()
    if not isinstance(costs, ChainCosts):
        raise ScheduleError(f"budget planner: costs must be a ChainCosts (from measure_chain(layers, x)), got "
                            f"{type(costs).__name__}")
    for name, value in (("groups", groups), ("max_levels", max_levels)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ScheduleError(f"budget planner: {name} must be a positive int or None, got {value!r}")
    L = costs.L
    _check_L(L)
    budget_bytes = schedules.parse_bytes(budget_bytes)    # also "64MB"; refuses None, NaN, negatives
    need = minimum_budget(costs)
    requested, limit = budget_bytes, budget_bytes - costs.workspace
    if requested < need:
        big = max(costs.sizes[1:])
        raise ScheduleError(
            f"budget of {requested:,} bytes is below the minimum this chain needs: {need:,} bytes "
            f"(about {need / big:.1f} units of the largest activation, {big:,} bytes). "
            "Raise the budget, or shrink the batch.")
    # the most layers per group whose grouped chain still fits the budget (shorter groups need less memory)
    tries = (groups,) if groups else (GROUPS, 2 * GROUPS, 3 * GROUPS) if exact is None and L > LONG_LAYERS else ()
    for groups in tries:
        if groups >= L:
            break
        grouped, bounds = _grouped(costs, groups)
        if minimum_budget(grouped) <= requested:
            inner = budget(grouped, requested, runs, exact, max_levels)
            best = Schedule("budget", L, _tidy(_expand(inner.actions, bounds)), costs=costs, budget=requested)
            if best.simulate().peak_bytes > limit:                      # pragma: no cover (bounds hold)
                raise AssertionError("budget planner: a grouped plan exceeded its budget")
            best.note = (f"long-chain search: {groups} groups of about {L / groups:.1f} layers, each priced as "
                         f"one layer by upper bounds; {inner.note.split('; planned in')[0]}"
                         f"; planned in {time.perf_counter() - start:.2f} s")
            return best
    q, binned, levels, coarse = _grid_for(costs, limit, max_levels)
    grid = _Grid(*binned, costs.flops, levels)
    item = np.dtype(grid.dtype).itemsize
    exact_bytes = exact_table_bytes(L, grid.n, item, grid.starts())
    why = ""
    if exact is None:
        exact = exact_bytes <= EXACT_BYTES
        why = "" if exact else f" (the exact search would need {exact_bytes / 1e6:,.0f} MB of tables)"
    per_level = (L + 1) ** 2 * item
    if not exact and per_level * grid.n > NESTED_BYTES:       # a long chain: fewer, coarser levels
        q, binned, levels, coarse = _grid_for(costs, limit, max(8, NESTED_BYTES // per_level))
        grid = _Grid(*binned, costs.flops, levels)
    tables = exact_bytes if exact else (L + 1) ** 2 * grid.n * np.dtype(grid.dtype).itemsize
    acts = (_exact_search if exact else _nested_search)(grid, runs)
    del grid
    note = (f"{'exact' if exact else 'nested'} search on {len(levels)} levels of {q:,} bytes{why}, "
            f"{tables / 1e6:,.1f} MB of tables"
            + (f", {costs.workspace:,} bytes reserved for op temporaries" if costs.workspace else ""))
    best = Schedule("budget", L, _tidy(acts), costs=costs, budget=requested)
    if coarse and L <= RECHECK_LAYERS:
        # sizes were rounded up, so a classic schedule that fits exactly may have been ruled out:
        # check every registered family in exact bytes and keep the cheapest that fits
        cost, rival_note = best.simulate().recompute_flops, ""
        for rival in _families(L):
            sim = rival.simulate(costs)
            if sim.peak_bytes <= limit and sim.recompute_flops < cost:
                cost = sim.recompute_flops
                best = Schedule("budget", L, rival.actions, costs=costs, budget=requested)
                rival_note = f"; a {schedules.label(rival)} schedule, checked in exact bytes, was cheaper"
        note += rival_note
    # measurements, not decisions: everything before "; planned in" is the same in every call and process
    note += f"; planned in {time.perf_counter() - start:.2f} s"
    best.note = note
    return best


def _grid_for(costs, limit, max_levels):
    """(q, binned sizes, levels, coarse?): the exact grid and its reachable levels, or a coarser grid when
    there would be more than ``max_levels`` of them (NOTE [ Levels ])."""
    values = [v for v in list(costs.sizes) + list(costs.extras[1:]) + list(costs.params[1:])
              + list(costs.inner[1:]) + list(costs.back[1:]) if v]
    q = _gcd(values)
    binned = _binned(costs, q)
    K = limit // q - binned[0][0]                     # x_0 sits in slot 0 for the whole step
    levels = _levels(binned[0], K, max_levels)
    if levels is not None:
        return q, binned, levels, False
    qc = -(-limit // max_levels)                      # too many levels: a coarser grid, sizes rounded up
    bc = _binned(costs, qc)
    if limit // qc - bc[0][0] >= 0 and _minimum_bins(*bc) <= limit // qc:
        return qc, bc, np.arange(limit // qc - bc[0][0] + 1), True
    return q, binned, _levels(binned[0], K, math.inf), False   # near the minimum: the exact grid, however many


def _families(L):
    """Every schedule of every registered strategy that needs no measurements."""
    for entry in list(schedules.REGISTRY.values()):
        if not entry.measured:
            yield from schedules.family(entry.name, L)


# --------------------------------------------------------------------------- fitting strategies to a budget


def fit(strategy: str, costs: ChainCosts, limit: int):
    """The cheapest schedule of a strategy whose predicted peak plus the workspace fits ``limit`` bytes, or None."""
    entry = schedules.REGISTRY[strategy]
    if entry.fit is not None:
        return entry.fit(costs, limit)
    best = None
    for sched in schedules.family(strategy, costs.L):
        _, peak, _, flops = _replay(sched.actions, costs.L, costs)      # bytes only: the units are not needed
        if peak + costs.workspace <= limit and (best is None or flops < best[1]):
            best = (sched, flops)
    return best[0].with_costs(costs) if best else None


def least(strategy: str, costs: ChainCosts) -> tuple:
    """(bytes, schedule or None): the least memory a strategy can run this chain in, the workspace included.

    For a family, its member with the smallest peak in units (one pass over the
    family per chain length, then one simulation per call).
    """
    entry = schedules.REGISTRY[strategy]
    if entry.least is not None:
        return entry.least(costs), None
    sched = _least_member(strategy, costs.L)
    return _replay(sched.actions, costs.L, costs)[1] + costs.workspace, sched


_least_cache: dict = {}


def _least_member(strategy, L):
    key = (strategy, L, schedules.REGISTRY[strategy])
    if key not in _least_cache:
        _least_cache.clear() if len(_least_cache) > 64 else None
        _least_cache[key] = min(schedules.family(strategy, L), key=lambda s: s.simulate().peak_units)
    return _least_cache[key]


def largest_batch(strategy: str, costs: ChainCosts, limit: int, batch: int) -> int:
    """The largest batch whose step fits ``limit`` bytes under a strategy (costs measured at ``batch``)."""
    fits = lambda b: least(strategy, costs.scaled(b / batch))[0] <= limit  # noqa: E731
    lo, hi = 0, 1
    while fits(hi) and hi < 1 << 24:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _fit_budget(costs, limit):
    try:
        return budget(costs, limit)
    except ScheduleError:
        return None


schedules.register(Strategy("budget", lambda L, costs, budget=None: _build_budget(L, costs, budget), ("budget",),
                            cli=lambda L, given: {"budget": given["budget"]} if given.get("budget") else None,
                            measured=True, fit=_fit_budget, least=minimum_budget))


def _build_budget(L, costs, limit):
    if limit is None:
        raise ScheduleError("strategy='budget' needs budget= (bytes, or a string like '64MB')")
    if costs.L != L:
        raise ScheduleError(f"budget planner: the costs are for {costs.L} layers but the chain has {L}")
    return budget(costs, schedules.parse_bytes(limit))
