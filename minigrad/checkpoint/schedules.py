"""Checkpointing schedules as data: which activations to keep, what to recompute, in what order.

Pure Python, no arrays: a schedule for a chain of L layers is a list of
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
from dataclasses import dataclass
from functools import lru_cache

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

    @property
    def recompute_ratio(self) -> float:
        """Recomputed forwards per layer (0 without checkpointing)."""
        return self.recomputed_forwards / self.layers


class Schedule:
    """A plan for one training step over a chain of ``L`` layers; ``print`` it to see the timeline."""

    def __init__(self, strategy: str, L: int, actions, **params):
        self.strategy, self.L, self.actions, self.params = strategy, L, tuple(actions), params
        self.unit_bytes = params.pop("unit_bytes", None)
        self.layer_bytes = params.pop("layer_bytes", None)
        self.layer_flops = params.pop("layer_flops", None)
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
        """Predict layer forwards and peak memory (units) of running this schedule."""
        cur, slots, records = 0, {0}, []
        forwards, peak, peak_slots = 0, 0, 1
        grads = 0
        for a in self.actions:
            k, i = a.kind, a.i
            if k in ("advance", "record"):
                forwards += 1
                held = _held(slots, records, cur) | {i}
                if k == "advance":
                    held.add(i - 1)           # input and output coexist for a moment
                peak = max(peak, len(held) + grads)
                cur = i
                if k == "record":
                    records.append(i)
            elif k == "reverse":
                grads = 1
                held = _held(slots, records, cur)
                peak = max(peak, len(held) + 2)
                records.pop()
                cur = None
            elif k == "keep":
                slots.add(i)
                peak_slots = max(peak_slots, len(slots))
            elif k == "restore":
                cur = i
            elif k == "drop":
                slots.discard(i)
            peak = max(peak, len(_held(slots, records, cur)) + grads)
        return Simulation(self.L, forwards, forwards - self.L, peak, peak_slots)

    def summary(self) -> str:
        """One line: strategy, forwards, recompute and predicted peak."""
        s = self.simulate()
        extra = "".join(f", {k}={v}" for k, v in self.params.items())
        return (f"{self.strategy}(L={self.L}{extra}): {s.layer_forwards} layer forwards "
                f"({s.recomputed_forwards} recomputed), peak {s.peak_units} units, {s.peak_slots} slots")

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


def _held(slots, records, cur):
    held = set(slots)
    if cur is not None:
        held.add(cur)
    for r in records:
        held.add(r - 1)
        held.add(r)
    return held


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
    return Schedule("uniform", L, acts, segments=k)


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
    return Schedule("recursive", L, acts)


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
    the input; with slots >= L no recompute is needed.
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
    return Schedule("revolve", L, acts, slots=slots)


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
    """Revolve's default: ⌈log2 L⌉ + 1 slots, the memory of recursive bisection with fewer forwards."""
    return max(1, math.ceil(math.log2(L))) + 1 if L > 1 else 1
