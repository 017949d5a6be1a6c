"""Checkpointing schedules as data: which activations to keep, what to recompute, in what order.

A schedule is plain data, no arrays: for a chain of L layers, a list of
actions over activation indices 0..L (x_0 is the input, x_i = layer_i(x_{i-1})):

=============  ============================================================
``advance i``  run layer i without recording (x_{i-1} -> x_i); one forward
``record i``   run layer i recording its graph; one forward
``reverse i``  backpropagate through the recorded layer i (g_i -> g_{i-1})
``keep i``     store the current activation x_i in a slot
``restore i``  make the stored x_i current again
``drop i``     free the slot holding x_i
=============  ============================================================

Everything up to the first ``reverse`` is the forward pass (the *first
sweep*); the rest runs during backward. Slots count the input x_0, which the
caller holds anyway. One executor (``executor.py``) runs any schedule, and
``Schedule.simulate()`` predicts its forward count and peak memory.

Memory model (what ``simulate`` counts, in *units*: one activation x_i is one
unit): the distinct activations alive — those in slots, the current one, and
the input and output of every recorded layer — plus the gradients in flight
(one between reversals, two while a layer is reversed). The executor's
measured peak exceeds this by the temporaries one layer's backward creates
(a constant of the layer type, at most a few units; see the tests).
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np

from ..errors import ScheduleError

STRATEGIES = ("none", "sqrt", "recursive", "revolve", "budget")


@dataclass(frozen=True)
class Action:
    """One step of a schedule: ``kind`` is advance|record|reverse|keep|restore|drop, ``i`` an index."""

    kind: str
    i: int

    def __str__(self):
        return f"{self.kind} {self.i}"


@dataclass(frozen=True)
class Simulation:
    """What a schedule costs, predicted without running it."""

    layers: int
    layer_forwards: int        # layer forwards in the whole step (first sweep + recompute)
    recomputed_forwards: int   # layer_forwards - layers
    peak_units: int            # activations alive at once, gradients in flight included
    peak_slots: int            # slots in use at once (the input counted)
    peak_bytes: int = None     # the same peak weighted by measured sizes, when known
    recompute_flops: int = None  # FLOPs of the recomputed forwards, when known

    @property
    def recompute_ratio(self) -> float:
        """Recomputed forwards per layer (0 without checkpointing)."""
        return self.recomputed_forwards / self.layers


class Schedule:
    """A plan for one training step over a chain of ``L`` layers; ``print`` it to see the timeline."""

    def __init__(self, strategy: str, L: int, actions, **params):
        self.strategy, self.L, self.actions, self.params = strategy, L, tuple(actions), params
        self.layer_bytes = params.pop("layer_bytes", None)     # bytes of x_0..x_L
        self.extra_bytes = params.pop("extra_bytes", None)     # bytes a recorded layer saves beyond x_{i-1}, x_i
        self.layer_flops = params.pop("layer_flops", None)     # forward FLOPs of layers 1..L (index 0 unused)
        self.param_bytes = params.pop("param_bytes", None)     # bytes of the parameter gradients of layer i
        self.persist = params.pop("persist", True)             # do parameter gradients stay (True) or pass?
        self.inner_bytes = params.pop("inner_bytes", None)     # bytes layer i holds only while it runs forward
        self.back_bytes = params.pop("back_bytes", None)       # bytes reversing layer i allocates
        self.note = params.pop("note", None)
        self._check()
        self._split = self.split

    @property
    def split(self) -> int:
        """Index of the first ``reverse``: actions before it run in the forward pass."""
        return next((n for n, a in enumerate(self.actions) if a.kind == "reverse"), len(self.actions))

    def forward_actions(self):
        """The first sweep: the actions run by the forward pass (an iterator, no copy)."""
        return itertools.islice(self.actions, 0, self._split)

    def backward_actions(self):
        """The rest: the actions run during backward (an iterator, no copy)."""
        return itertools.islice(self.actions, self._split, None)

    def _check(self):
        """Replay the actions symbolically; a malformed schedule fails here, not halfway through a step."""
        cur, slots, records, reversed_ = 0, {0}, [], []
        for a in self.actions:
            k, i = a.kind, a.i
            if k in ("advance", "record", "keep") and cur != (i - 1 if k != "keep" else i):
                raise ScheduleError(f"{self.strategy}(L={self.L}): {a} but the current activation is "
                                    f"{'none (restore one first)' if cur is None else f'x{cur}'}")
            if k in ("advance", "record"):
                cur = i
                if k == "record":
                    records.append(i)
            elif k == "reverse":
                if not records or records[-1] != i:
                    raise ScheduleError(f"{self.strategy}(L={self.L}): {a} but layer {i} is not the last recorded")
                records.pop()
                reversed_.append(i)
                cur = None
            elif k == "keep":
                slots.add(i)
            elif k == "restore":
                if i not in slots:
                    raise ScheduleError(f"{self.strategy}(L={self.L}): {a} but x{i} is not in a slot")
                cur = i
            elif k == "drop":
                slots.discard(i)
            else:
                raise ScheduleError(f"{self.strategy}(L={self.L}): unknown action {a}")
        if reversed_ != list(range(self.L, 0, -1)):
            raise ScheduleError(f"{self.strategy}(L={self.L}): layers must be reversed in the order L..1")

    def simulate(self) -> Simulation:
        """Predict layer forwards, peak memory and recompute of running this schedule.

        Units count activations (each x_i is one unit). The model lets the output
        x_L go once layer L is reversed: a caller that keeps its own reference to
        the output through backward holds one more activation than predicted. When the schedule knows
        its layers' sizes (the budget planner measures them) the peak is also
        given in bytes, and recompute in FLOPs.
        """
        forwards, peak_units, peak_slots, _ = _replay(self.actions, None, None, None, None)
        peak_bytes = recompute_flops = None
        if self.layer_bytes is not None:
            _, peak_bytes, _, recompute_flops = _replay(self.actions, self.layer_bytes, self.extra_bytes,
                                                        self.layer_flops, self.param_bytes, self.persist,
                                                        self.inner_bytes, self.back_bytes)
        return Simulation(self.L, forwards, forwards - self.L, peak_units, peak_slots, peak_bytes, recompute_flops)

    @property
    def kept(self) -> list:
        """Activations the forward pass keeps in slots (besides the input x_0)."""
        return [a.i for a in self.forward_actions() if a.kind == "keep"]

    def summary(self) -> str:
        """One line: strategy, forwards, recompute and predicted peak."""
        s = self.simulate()
        extra = "".join(f", {k}={v:,}" if isinstance(v, int) else f", {k}={v}" for k, v in self.params.items())
        text = (f"{self.strategy}(L={self.L}{extra}): {s.layer_forwards} layer forwards "
                f"({s.recomputed_forwards} recomputed), peak {s.peak_units} units, {s.peak_slots} slots")
        if s.peak_bytes is not None:
            text += f"; predicted peak {s.peak_bytes:,} bytes, recompute {s.recompute_flops:,} FLOPs"
        return text

    def timeline(self) -> str:
        """The actions as text: the forward pass on one line, then a line per restore in backward."""
        names = {"record": "rec", "reverse": "rev", "restore": "from", "drop": "drop"}
        lines, words = [], []
        acts, split = self.actions, self.split
        n = 0
        while n < len(acts):
            a = acts[n]
            if n == split or (a.kind == "restore" and n > split and words):
                lines.append(words)
                words = []
            if a.kind == "advance":
                start = a.i - 1
                while n + 1 < len(acts) and acts[n + 1].kind == "advance":
                    n += 1
                words.append(f"{start}->{acts[n].i}")
            elif a.kind == "keep":
                words.append(f"[x{a.i}]")
            else:
                words.append(f"{names[a.kind]} {a.i}")
            n += 1
        lines.append(words)
        heads = ["forward : "] + ["backward: "] + ["          "] * len(lines)
        return "\n".join(h + " ".join(w) for h, w in zip(heads, lines))

    def __str__(self):
        return f"Schedule {self.summary()}"

    def __repr__(self):
        return f"<{self}>"

    def pretty(self) -> str:
        """Summary and timeline together."""
        text = self.summary() + "\n" + self.timeline()
        if self.note:
            text += "\n" + self.note
        return text


def _replay(actions, size, extra, flops, params, persist=True, inner=None, back=None):
    """Walk the actions, tracking what is alive; ``size[i]`` weighs x_i (1 each when None).

    Alive at any moment: the slots, the current activation, each recorded
    layer's input, output and extra saved bytes, the gradient in flight (two
    while a layer is reversed: g_i and g_{i-1}) and, when ``params`` is given,
    the parameter gradients of the layers reversed so far (a layer's appear
    while it is reversed) — or, with ``persist=False`` (gradients accumulated
    into existing ones, which the budget leaves out), only those of the layer
    being reversed, for as long as it is. Returns (layer forwards, peak, peak
    slots, recompute FLOPs).
    """
    w = (lambda i: 1) if size is None else size.__getitem__
    x = (lambda i: 0) if extra is None else extra.__getitem__
    pg = (lambda i: 0) if params is None else params.__getitem__
    tr = (lambda i: 0) if inner is None else inner.__getitem__
    bk = (lambda i: w(i - 1) + pg(i)) if back is None else back.__getitem__
    param_grads = 0
    cur, slots, records = 0, {0}, []
    forwards, peak, peak_slots, grad = 0, 0, 1, 0
    ran = set()
    recompute = 0

    def alive(*more):
        held = set(slots)
        if cur is not None:
            held.add(cur)
        for r in records:
            held.add(r - 1)
            held.add(r)
        held.update(more)
        return sum(w(i) for i in held) + sum(x(r) for r in records) + param_grads

    for a in actions:
        k, i = a.kind, a.i
        if k in ("advance", "record"):
            forwards += 1
            if i in ran and flops is not None:
                recompute += flops[i]
            ran.add(i)
            peak = max(peak, alive(i - 1, i) + grad + tr(i) + (x(i) if k == "record" else 0))
            cur = i
            if k == "record":
                records.append(i)
        elif k == "reverse":
            peak = max(peak, alive() + w(i) + bk(i))
            if persist:
                param_grads += pg(i)
            records.pop()
            cur = None
            grad = w(i - 1)
        elif k == "keep":
            slots.add(i)
            peak_slots = max(peak_slots, len(slots))
        elif k == "restore":
            cur = i
        elif k == "drop":
            slots.discard(i)
        peak = max(peak, alive() + grad)
    return forwards, peak, peak_slots, recompute


# --------------------------------------------------------------------------- validation helpers


def _check_L(L):
    if not isinstance(L, int) or L < 1:
        raise ScheduleError(f"a chain needs at least one layer, got L={L!r}")


def _emit_segment(out, a, b, cur):
    """Record layers a+1..b from x_a (restoring it first unless current), then reverse them."""
    if cur != a:
        out.append(Action("restore", a))
    for i in range(a + 1, b + 1):
        out.append(Action("record", i))
    for i in range(b, a, -1):
        out.append(Action("reverse", i))


# --------------------------------------------------------------------------- the strategies


def none(L: int) -> Schedule:
    """No checkpointing: record every layer in the forward pass, reverse them all."""
    _check_L(L)
    acts = [Action("record", i) for i in range(1, L + 1)] + [Action("reverse", i) for i in range(L, 0, -1)]
    return Schedule("none", L, acts)


def uniform(L: int, k: int) -> Schedule:
    """k segments of (nearly) equal length: keep each segment's input, recompute one segment at a time.

    Peak ≈ k + L/k units, minimised at k = √L; at most 2L layer forwards (the
    last segment is recorded in the forward pass, so it is not run again).
    """
    _check_L(L)
    if not isinstance(k, int) or not 1 <= k <= L:
        raise ScheduleError(f"segments must be an integer in 1..L={L}, got {k!r}")
    bounds = [round(j * L / k) for j in range(k + 1)]
    acts = []
    for j in range(k - 1):                       # first sweep: keep each segment's input
        a, b = bounds[j], bounds[j + 1]
        if a:
            acts.append(Action("keep", a))
        acts.extend(Action("advance", i) for i in range(a + 1, b + 1))
    a = bounds[k - 1]
    if a:
        acts.append(Action("keep", a))
    _emit_segment(acts, a, L, cur=a)              # the last segment: recorded in the forward pass
    for j in range(k - 2, -1, -1):
        a, b = bounds[j], bounds[j + 1]
        if bounds[j + 1]:
            acts.append(Action("drop", bounds[j + 1]))
        _emit_segment(acts, a, b, cur=None)
    return Schedule("uniform", L, _tidy(acts), segments=k)


def sqrt(L: int) -> Schedule:
    """√L placement: ⌈√L⌉ uniform segments (peak ≤ 2⌈√L⌉ units plus the gradients in flight)."""
    _check_L(L)
    sched = uniform(L, math.isqrt(L - 1) + 1)
    sched.strategy = "sqrt"
    return sched


def recursive(L: int) -> Schedule:
    """Recursive bisection (Chen et al. 2016): O(log L) slots, O(L log L) layer forwards.

    Keep the midpoint of the span, reverse the right half recursively, free the
    midpoint, then reverse the left half. The right spine of the recursion is
    the forward pass, so its last layer is recorded there.
    """
    _check_L(L)
    acts = []

    def rec(a, b, cur):
        if b - a == 1:
            _emit_segment(acts, a, b, cur)
            return
        m = (a + b + 1) // 2
        if cur != a:
            acts.append(Action("restore", a))
        acts.extend(Action("advance", i) for i in range(a + 1, m + 1))
        acts.append(Action("keep", m))
        rec(m, b, m)
        acts.append(Action("drop", m))
        rec(a, m, None)

    rec(0, L, 0)   # depth ⌈log2 L⌉: no recursion limit in sight
    return Schedule("recursive", L, _tidy(acts))


# --------------------------------------------------------------------------- Revolve


def binomial_extra_forwards(L: int, s: int) -> int:
    """t(L, s): the fewest recomputed layer forwards to reverse L layers with s slots (Griewank & Walther).

    t(L, s) = r·L − C(s + r, s + 1), with r the least integer such that C(s + r, s) ≥ L.
    """
    if L < 1 or s < 1:
        raise ScheduleError(f"t(L, s) needs L >= 1 and s >= 1, got L={L}, s={s}")
    r = 0
    while math.comb(s + r, s) < L:
        r += 1
    return r * L - math.comb(s + r, s + 1)


def revolve_forwards(L: int, s: int) -> int:
    """L + t(L, s): layer forwards in a whole step under Revolve with s slots."""
    return L + binomial_extra_forwards(L, s)


@lru_cache(maxsize=None)
def _best_split(length: int, s: int) -> int:
    """Where to place the next checkpoint in a span of ``length`` layers with ``s`` slots (input included).

    Minimises  m + F(length - m, s - 1) + F(m, s)  with F = revolve_forwards: advance m
    layers, keep x_m, reverse the right part with one slot fewer, then the left part.
    """
    best, best_m = None, 1
    for m in range(1, length):
        cost = m + revolve_forwards(length - m, s - 1) + revolve_forwards(m, s)
        if best is None or cost < best:
            best, best_m = cost, m
    return best_m


def revolve(L: int, slots: int) -> Schedule:
    """Binomial checkpointing (Revolve): exactly L + t(L, slots) layer forwards, the fewest possible.

    ``slots`` counts the input x_0. With one slot every layer is recomputed from
    the input. Optimal in Revolve's model, where a layer is recorded only when
    it is about to be reversed: with unlimited slots that still costs L - 1
    recomputed forwards, which recording runs of layers (``none``, ``uniform``,
    the budget planner) avoids when memory allows.
    """
    _check_L(L)
    if not isinstance(slots, int) or slots < 1:
        raise ScheduleError(f"revolve needs slots >= 1 (the input counts as one), got {slots!r}")
    acts = []
    stack = [("span", 0, L, min(slots, L), 0)]
    # An explicit stack instead of recursion: with one slot the depth would be L.
    while stack:
        item = stack.pop()
        if item[0] == "drop":
            acts.append(Action("drop", item[1]))
            continue
        _, a, b, s, cur = item
        length = b - a
        if length == 1 or s == 1:
            for i in range(b, a, -1):
                if cur != a:
                    acts.append(Action("restore", a))
                acts.extend(Action("advance", j) for j in range(a + 1, i))
                acts.append(Action("record", i))
                acts.append(Action("reverse", i))
                cur = None
            continue
        m = a + _best_split(length, s)
        if cur != a:
            acts.append(Action("restore", a))
        acts.extend(Action("advance", j) for j in range(a + 1, m + 1))
        acts.append(Action("keep", m))
        # executed in this order: right span, drop m, left span
        stack.append(("span", a, m, s, None))
        stack.append(("drop", m))
        stack.append(("span", m, b, s - 1, m))
    return Schedule("revolve", L, _tidy(acts), slots=slots)


def parse_bytes(text) -> int:
    """A byte count from 2048, "64MB", "1.5GiB" or "512kB" (kB/MB/GB decimal, KiB/MiB/GiB binary)."""
    if isinstance(text, bool):
        raise ScheduleError(f"budget must be a number of bytes or a string like '64MB', got {text!r}")
    if isinstance(text, (int, float)):
        try:
            value, unit = float(text), ""
        except OverflowError:   # an int beyond float's range: no machine has that many bytes anyway
            raise ScheduleError(f"a budget of {len(str(text))} digits is beyond any memory; pass a byte count "
                                "such as 2048 or a string like '64MB'") from None
    else:
        match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if match is None:
            raise ScheduleError(f"cannot read a byte size from {text!r}; write e.g. 2048, '64MB' or '1.5GiB'")
        value, unit = float(match.group(1)), match.group(2).lower()
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    if unit not in units:
        raise ScheduleError(f"unknown unit {unit!r} in {text!r}; use B, kB, MB, GB, KiB, MiB or GiB")
    if not math.isfinite(value * units[unit]) or value < 0:
        raise ScheduleError(f"a budget must be a non-negative number of bytes, got {text!r}")
    return int(value * units[unit])


def make(strategy: str, L: int, segments=None, slots=None) -> Schedule:
    """The schedule for a strategy by name (``budget`` needs measurements: see ``executor.plan``)."""
    if strategy not in STRATEGIES:
        raise ScheduleError(f"unknown checkpointing strategy {strategy!r}; valid strategies are "
                            f"{', '.join(STRATEGIES)}")
    if strategy == "none":
        return none(L)
    if strategy == "sqrt":
        return uniform(L, segments) if segments is not None else sqrt(L)
    if strategy == "recursive":
        return recursive(L)
    if strategy == "revolve":
        return revolve(L, slots if slots is not None else default_slots(L))
    raise ScheduleError("the budget strategy plans from measured layer sizes: use "
                        "minigrad.checkpoint.plan(layers, x, strategy='budget', budget=...)")


def default_slots(L: int) -> int:
    """Revolve's default: as many slots as recursive bisection uses, so it does with fewer forwards."""
    return recursive(L).simulate().peak_slots


# --------------------------------------------------------------------------- the budget planner


def _quantum(values, budget, max_bins):
    """The memory step of the planner: the gcd of all sizes, coarsened so budget/step <= max_bins."""
    q = 0
    for v in values:
        q = math.gcd(q, int(v))
    q = max(q, 1)
    if budget // q > max_bins:
        q = -(-budget // max_bins)
    return q


class _Grid:
    """A chain on the planner's memory grid, and the peaks both searches below share.

    Levels are grid steps of free memory besides x_0 (always held) and the slots
    of the enclosing subproblems. ``T[a, c]``: the transient of advancing
    x_a -> x_c without recording, x_a in a slot; ``U[a, c]``: the same with x_a
    counted as an ordinary activation (it is dropped on the way);
    ``Rrev[c, b]`` / ``Rrec[c, b]``: the peaks of reversing / recording layers
    c+1..b as one run (x_c not counted), the recording without the gradient
    that waits meanwhile.
    """

    def __init__(self, A, E, G, I, B, flops, K):  # noqa: E741
        self.A, self.G, self.L, self.n = A, G, len(A) - 1, K + 1
        L = self.L
        self.F = [0] * (L + 1)                     # prefix sums of forward FLOPs
        for i in range(1, L + 1):
            self.F[i] = self.F[i - 1] + flops[i]
        self.T, self.U, self.Rrev, self.Rrec = {}, {}, {}, {}
        for a in range(L + 1):
            t, u, total, rev, rec = 0, 0, 0, 0, 0
            self.T[a, a] = self.U[a, a] = 0
            for j in range(a + 1, L + 1):
                t = max(t, A[j - 1] * (j - 1 != a) + A[j] + I[j])
                u = max(u, A[j - 1] + A[j] + I[j])
                total += A[j] + E[j]
                rec = max(rec, total + I[j])
                rev = max(rev, total + A[j] + B[j] + G[j + 1])
                self.T[a, j], self.U[a, j], self.Rrev[a, j], self.Rrec[a, j] = t, u, rev, rec

    def grad(self, b):
        """Grid steps of gradients alive while layers 1..b remain (none before the first reversal)."""
        return 0 if b == self.L else self.A[b] + self.G[b + 1]

    def run_need(self, a, c, b, g):
        """Least level at which one sweep can advance x_a -> x_c (x_a kept) and record and reverse c+1..b."""
        return max(self.T[a, c] + g, self.A[c] * (c != a) + max(self.Rrev[c, b], self.Rrec[c, b] + g))

    def run_need_released(self, a, c, b, g):
        """The same with x_a dropped once the sweep leaves it (c > a), on levels that count x_a as free."""
        return max(self.U[a, c] + g, self.A[c] + max(self.Rrev[c, b], self.Rrec[c, b] + g))

    def shifted(self, arr, s):
        """arr[level - s] at every level (inf below s; for s < 0, the top level's value above the top)."""
        n = self.n
        if s >= 0:
            return arr if s == 0 else np.concatenate([np.full(min(s, n), math.inf), arr[: max(0, n - s)]])
        s = min(-s, n)
        return np.concatenate([arr[s:], np.full(s, arr[-1])])

    @staticmethod
    def masked(arr, level):
        """A copy of arr that is inf below ``level`` (where a choice needs more memory than there is)."""
        out = arr.copy()
        out[: max(0, level)] = math.inf
        return out


def budget(sizes, extras, flops, budget_bytes, params=None, persist=True, reserve=0, runs=True,
           max_bins=1024, inner=None, back=None, exact=None) -> Schedule:
    """The schedule with the fewest forward FLOPs whose predicted peak fits ``budget_bytes``.

    ``sizes[i]`` are the bytes of x_0..x_L, ``extras[i]`` what recording layer i
    saves beyond its input and output, ``flops[i]`` its forward FLOPs and
    ``params[i]`` the bytes of its parameters' gradients (index 0 unused). The
    budget covers everything a step adds: activations, their gradients and the
    parameter gradients, which appear as backward reaches each layer (with
    ``persist=False`` they are added into gradients that already exist and
    only the one being computed counts); ``reserve`` bytes of it are set aside
    for the temporaries ops allocate internally, and ``inner[i]`` are the bytes
    layer i holds only while its forward runs (a Linear's output before the
    activation) and ``back[i]`` what reversing it allocates beyond the gradient
    it receives (default: the input's gradient and its parameter gradients).

    Two dynamic programs, in the spirit of Beaumont et al. (2019), "Optimal
    checkpointing for heterogeneous chains" (``exact=None`` picks the first
    when its tables fit in about 64 MB, else the second):

    * the **exact** search (``_exact_search``) finds the cheapest of *all*
      schedules in this memory model (the tests check it against a search over
      every action sequence): a slot may serve only part of the layers to its
      right, and a slot is dropped as soon as its last sweep leaves it;
    * the **nested** search (``_nested_search``: O(L^2) vectors of levels,
      O(L^3) work) finds the cheapest schedule in which every slot serves all
      the layers to its right and stays until they are reversed (like Revolve
      and Beaumont et al.'s persistent schedules); on small random chains it
      matches the exact search in about 97 % of cases (``benchmarks/planner.py``).

    ``runs=False`` records one layer at a time, which is the space Revolve
    searches. Memory is counted exactly as ``Schedule.simulate`` counts it, on a
    grid of ``q`` bytes (the gcd of the sizes, coarser only if the budget would
    need more than ``max_bins`` steps; sizes are then rounded up, so the plan
    still fits). Raises ScheduleError stating the minimum feasible budget.
    """
    L = len(sizes) - 1
    _check_L(L)
    if budget_bytes < 0:
        raise ScheduleError(f"budget must be a non-negative number of bytes, got {budget_bytes}")
    params = list(params) if params is not None else [0] * (L + 1)
    inner = list(inner) if inner is not None else [0] * (L + 1)
    need = minimum_budget(sizes, extras, params, persist, inner, back) + reserve
    requested, budget_bytes = budget_bytes, budget_bytes - reserve
    if requested < need:
        raise ScheduleError(
            f"budget of {requested:,} bytes is below the minimum this chain needs: {need:,} bytes "
            f"(about {need / max(sizes[1:]):.1f} units of the largest activation, {max(sizes[1:]):,} bytes). "
            "Raise the budget, or shrink the batch.")
    values = list(sizes) + [v for v in list(extras[1:]) + params[1:] + inner[1:] + list(back or [0])[1:] if v]
    q = _quantum(values, budget_bytes, max_bins)     # a divisor of every size; the budget is rounded down
    if _minimum_budget_bins(*_binned(sizes, extras, params, q, persist, inner, back)) * q > budget_bytes:
        q = _quantum(values, budget_bytes, max(max_bins, budget_bytes))  # exact grid near the minimum
    A, E, G, I, B = _binned(sizes, extras, params, q, persist, inner, back)  # noqa: E741
    K = int(budget_bytes // q) - A[0]             # x_0 sits in slot 0 for the whole step
    grid = _Grid(A, E, G, I, B, flops, K)
    cells = math.comb(L + 2, 3) * grid.n
    why = ""
    if exact is None:
        exact = cells <= EXACT_CELLS
        why = "" if exact else f" (the exact search would need {8 * cells / 1e6:,.0f} MB of tables)"
    acts = (_exact_search if exact else _nested_search)(grid, runs)
    costs = dict(layer_bytes=list(sizes), extra_bytes=list(extras), layer_flops=list(flops), param_bytes=params,
                 persist=persist, inner_bytes=inner, back_bytes=list(back) if back is not None else None)
    note = (f"{'exact' if exact else 'nested'} search on a {q}-byte grid{why}"
            + (f", {reserve:,} bytes reserved for op temporaries" if reserve else ""))
    best = Schedule("budget", L, _tidy(acts), budget=requested, note=note, **costs)
    if q > _quantum(values, budget_bytes, max(max_bins, budget_bytes)):
        # On a coarsened grid sizes were rounded up, so a classic schedule that fits exactly may have
        # been ruled out: check them in exact bytes and keep the cheapest that fits.
        cost = best.simulate().recompute_flops
        for rival in _classics(L):
            sim = Schedule(rival.strategy, L, rival.actions, **costs).simulate()
            if sim.peak_bytes <= budget_bytes and sim.recompute_flops < cost:
                cost = sim.recompute_flops
                best = Schedule("budget", L, rival.actions, budget=requested, **costs,
                                note=f"{note}; a {rival.summary().split(':')[0]} schedule, checked in exact bytes, "
                                     "was cheaper")
    return best


EXACT_CELLS = 8_000_000   # the exact search keeps C(L+2, 3) vectors of grid levels: at most this many floats


def _advance(a, c, drop=False):
    """Restore x_a and advance to x_c without recording (dropping x_a once the sweep leaves it, if asked)."""
    acts = [Action("restore", a)]
    for j in range(a + 1, c + 1):
        acts.append(Action("advance", j))
        if drop and j == a + 1:
            acts.append(Action("drop", a))
    return acts


def _sweep(a, c, b, drop=False):
    """Advance x_a -> x_c, record c+1..b and reverse them."""
    return _advance(a, c, drop) + [Action("record", j) for j in range(c + 1, b + 1)] + \
        [Action("reverse", j) for j in range(b, c, -1)]


def _advance_and_keep(a, p, drop=False):
    """Advance x_a -> x_p and keep it."""
    return _advance(a, p, drop) + [Action("keep", p)]


def _exact_search(g: _Grid, runs=True):
    """The cheapest schedule in the memory model, over every schedule (see ``budget``).

    Within the reversal of layers k+1..b from a slot x_a (k >= a), the first
    *phase* reverses b..b'+1 (k <= b' < b) either as one run recorded from
    x_{b'} (reached by advancing from x_a), or through a new slot x_p
    (a < p <= b') that serves exactly those layers and is then dropped; the
    remaining layers k+1..b' are the same problem again. x_a may be dropped
    during its last phase, as soon as the sweep leaves it: then its bytes are
    free for the rest of that phase. Slots made this way form a stack (each is
    made from the one below it and dropped before that one is used again); the
    tests check against a search over every action sequence that nothing
    cheaper exists.

    ``R[a, k][b - k - 1]`` is a vector over levels: the cheapest reversal of
    layers k+1..b from x_a, x_a dropped at its last use (``R[0, k]``: from x_0,
    which is never dropped). Phases are built for one b at a time; for each
    (b', b) the best new slot over p is carried from a to a - 1 in O(1) vector
    steps: starting one layer earlier puts the same first steps in front of
    every p's transient. Needs C(L+2, 3) vectors of levels.
    """
    L, n, A, F, T, U = g.L, g.n, g.A, g.F, g.T, g.U
    INF = math.inf
    R = {(a, k): np.full((L - k, n), INF) for k in range(L) for a in range(k + 1)}
    for b in range(1, L + 1):
        gb = g.grad(b)
        keep_phase = {}                          # (a, b') -> the phase b..b'+1 from x_a, x_a kept
        for b2 in range(b - 1, -1, -1):
            run_ok = runs or b2 == b - 1
            best_keep = best_rel = np.full(n, INF)   # best new slot p in (a, b2], with F[p] added
            for a in range(b2, -1, -1):
                phase = np.full(n, INF)
                if run_ok:
                    phase[max(0, g.run_need(a, b2, b, gb)):] = F[b] - F[a]
                np.minimum(phase, best_keep - F[a], out=phase)
                keep_phase[a, b2] = phase
                last = phase
                if 0 < a < b2:                   # x_a dropped once left: its bytes are free (level + A[a])
                    rel = best_rel - F[a]
                    if run_ok:
                        need = max(0, g.run_need_released(a, b2, b, gb))
                        rel[need:] = np.minimum(rel[need:], F[b] - F[a])
                    last = np.minimum(phase, g.shifted(rel, -A[a]))
                table = R[a, b2]
                row = last
                if b2 + 1 < b:
                    rows = np.stack([keep_phase[a, c] for c in range(b2 + 1, b)])
                    row = np.minimum(last, (rows + table[: b - b2 - 1]).min(axis=0))
                table[b - b2 - 1] = row
                if a > 0:                        # x_a as a new slot for starts a - 1 and below
                    S = g.shifted(row, A[a]) + F[a]
                    # from x_{a-1}, reaching any p > a first passes layers a and a + 1: T[a-1, a+1]
                    best_keep = np.minimum(g.masked(best_keep, T[a - 1, a + 1] + gb), g.masked(S, T[a - 1, a] + gb))
                    best_rel = g.masked(np.minimum(best_rel, S), U[a - 1, a] + gb)
    acts = []

    def choices(a, b2, b, level, gb, released=False):
        """(cost, actions(), child) of each way to run the phase b..b2+1 from x_a at ``level``: x_a kept,
        or (``released``) dropped once the sweep leaves it, on levels that count its bytes as free."""
        need, reach = (g.run_need_released, U) if released else (g.run_need, T)
        if (runs or b2 == b - 1) and level >= need(a, b2, b, gb):
            yield F[b] - F[a], partial(_sweep, a, b2, b, released), None
        for p in range(a + 1, b2 + 1):
            if level >= reach[a, p] + gb and level - A[p] >= 0:
                yield (F[p] - F[a] + R[p, b2][b - b2 - 1][level - A[p]], partial(_advance_and_keep, a, p, released),
                       (p, level - A[p]))

    def take(actions, child, b2, b):
        acts.extend(actions())
        if child is not None:
            emit(child[0], b2, b, child[1])

    def emit(a, k, b, level):
        """Append the actions behind R[a, k][b - k - 1][level]."""
        target = R[a, k][b - k - 1][level]
        gb = g.grad(b)
        for cost, actions, child in choices(a, k, b, level, gb):
            if math.isclose(cost, target, rel_tol=1e-12, abs_tol=1e-9):
                take(actions, child, k, b)
                if a > 0:
                    acts.append(Action("drop", a))
                return
        if 0 < a < k:
            up = min(level + A[a], n - 1)
            for cost, actions, child in choices(a, k, b, up, gb, released=True):
                if math.isclose(cost, target, rel_tol=1e-12, abs_tol=1e-9):
                    take(actions, child, k, b)
                    return
        for b2 in range(k + 1, b):
            rest = R[a, k][b2 - k - 1][level]
            for cost, actions, child in choices(a, b2, b, level, gb):
                if math.isclose(cost + rest, target, rel_tol=1e-12, abs_tol=1e-9):
                    take(actions, child, b2, b)
                    emit(a, k, b2, level)
                    return
        raise AssertionError("budget planner: no choice reproduces the optimum")  # pragma: no cover

    if R[0, 0][L - 1][n - 1] == INF:
        raise ScheduleError("budget planner: no schedule fits this budget")  # pragma: no cover (checked before)
    emit(0, 0, L, n - 1)
    return acts


def _nested_search(g: _Grid, runs=True):
    """The cheapest schedule whose slots each serve every layer to their right (see ``budget``).

    To reverse layers a+1..b with x_a stored, either advance to some m, keep
    x_m, reverse m+1..b with x_m's memory taken, drop x_m, then reverse
    a+1..m; or advance to some c, record c+1..b as one run and reverse it,
    then reverse a+1..c (``runs=False``: runs of one layer only).
    """
    L, n, A, F, T = g.L, g.n, g.A, g.F, g.T
    INF = math.inf

    def from_level(p):                             # 0 where level >= p, inf below
        out = np.zeros(n)
        out[: max(0, min(p, n))] = INF
        return out

    C = {}
    for a in range(L + 1):
        C[a, a] = np.zeros(n)
    for length in range(1, L + 1):
        for a in range(0, L - length + 1):
            b = a + length
            gb = g.grad(b)
            best = np.full(n, INF)
            for m in range(a + 1, b):
                cand = (F[m] - F[a]) + g.shifted(C[m, b], A[m]) + C[a, m] + from_level(T[a, m] + gb)
                np.minimum(best, cand, out=best)
            for c in (range(a, b) if runs else (b - 1,)):
                cand = (F[b] - F[a]) + C[a, c] + from_level(g.run_need(a, c, b, gb))
                np.minimum(best, cand, out=best)
            C[a, b] = best
    acts = []

    def emit(a, b, k):
        """Rebuild the choice behind C at level k, appending actions."""
        if a == b:
            return
        target = C[a, b][k]
        gb = g.grad(b)
        for m in range(a + 1, b):
            km = k - A[m]
            if km < 0 or T[a, m] + gb > k:
                continue
            if math.isclose((F[m] - F[a]) + C[m, b][km] + C[a, m][k], target, rel_tol=1e-12, abs_tol=1e-9):
                acts.extend(_advance_and_keep(a, m))
                emit(m, b, km)
                acts.append(Action("drop", m))
                emit(a, m, k)
                return
        for c in (range(a, b) if runs else (b - 1,)):
            if g.run_need(a, c, b, gb) > k:
                continue
            if math.isclose((F[b] - F[a]) + C[a, c][k], target, rel_tol=1e-12, abs_tol=1e-9):
                acts.extend(_sweep(a, c, b))
                emit(a, c, k)
                return
        raise AssertionError("budget planner: no choice reproduces the optimum")  # pragma: no cover

    if C[0, L][n - 1] == INF:
        raise ScheduleError("budget planner: no schedule fits this budget")  # pragma: no cover (checked before)
    emit(0, L, n - 1)
    return acts


def _classics(L):
    """The fixed-shape schedules: none, every uniform segmentation, recursive, Revolve for every slot count."""
    yield none(L)
    for k in range(2, L + 1):
        yield uniform(L, k)
    yield recursive(L)
    for s in range(1, L):
        yield revolve(L, s)


def _tidy(acts):
    """Drop restores of the activation that is already current, keeps/drops of x_0 (always held),
    and keeps whose slot is dropped without ever being restored (nothing reads them)."""
    out, cur = [], 0
    for a in acts:
        if a.kind == "restore" and a.i == cur:
            continue
        if a.kind in ("keep", "drop") and a.i == 0:
            continue
        if a.kind in ("advance", "record"):
            cur = a.i
        elif a.kind == "reverse":
            cur = None
        elif a.kind == "restore":
            cur = a.i
        out.append(a)
    unread, kept_at = set(), {}
    for n, a in enumerate(out):
        if a.kind == "keep":
            kept_at[a.i] = n
        elif a.kind == "restore":
            kept_at.pop(a.i, None)
        elif a.kind == "drop" and a.i in kept_at:
            unread.update((kept_at.pop(a.i), n))
    return [a for n, a in enumerate(out) if n not in unread]


def _binned(sizes, extras, params, q, persist=True, inner=None, back=None):
    """Sizes on a grid of q bytes (rounded up): activations A, extras E, parameter-gradient steps
    alive while advancing once layers i.. are reversed (G[i]), forward-only transients I, and
    what reversing layer i allocates (B[i]: by default g_{i-1} and the layer's parameter gradients)."""
    L = len(sizes) - 1
    params = list(params) if params is not None else [0] * (L + 1)
    inner = list(inner) if inner is not None else [0] * (L + 1)
    up = lambda v: -(-int(v) // q)  # noqa: E731
    A = [up(v) for v in sizes]
    E = [0] + [up(v) for v in extras[1:]]
    I = [0] + [up(v) for v in inner[1:]]  # noqa: E741
    P = [0] + [up(v) for v in params[1:]] + [0]
    B = [0] + ([up(v) for v in back[1:]] if back is not None else [A[i - 1] + P[i] for i in range(1, L + 1)])
    G = [0] * (L + 2)
    if persist:
        for i in range(L, 0, -1):
            G[i] = G[i + 1] + P[i]
    return A, E, G, I, B


def minimum_budget(sizes, extras, params=None, persist=True, inner=None, back=None) -> int:
    """The least budget (bytes) any schedule of this chain can run in: every layer reversed from x_0."""
    return _minimum_budget_bins(*_binned(sizes, extras, params, 1, persist, inner, back))


def _minimum_budget_bins(A, E, G, I, B):
    """The least memory (grid steps, x_0 included) any schedule needs: reverse each layer from x_0.

    With one slot (x_0) every layer i is reached by advancing from x_0 and then
    recorded alone; nothing needs less memory in this model.
    """
    L = len(A) - 1
    worst = 0
    for i in range(1, L + 1):
        held = G[i + 1] + (A[i] if i < L else 0)          # gradients alive while advancing to x_{i-1}
        adv = max((A[j - 1] * (j - 1 != 0) + A[j] + I[j] for j in range(1, i)), default=0)
        base = A[i - 1] * (i - 1 != 0) + A[i] + E[i]
        rec = base + I[i] + held
        rev = base + A[i] + B[i] + G[i + 1]
        worst = max(worst, adv + held, rec, rev)
    return A[0] + worst
