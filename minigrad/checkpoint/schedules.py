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
``costs.simulate(schedule, costs)`` predicts its forward count and peak
memory (NOTE [ Memory model ] in ``costs.py``).

``REGISTRY`` holds every strategy: its builder, the schedules it picks among
(``family``) and the options the command line gives it. ``make()``, the
budget planner's fallbacks, ``plan()`` and ``python -m minigrad compare | plan``
all loop over it, so a new strategy is one builder and one ``register`` call.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from ..errors import ScheduleError
from .costs import ChainCosts, Simulation, simulate


@dataclass(frozen=True)
class Action:
    """One step of a schedule: ``kind`` is advance|record|reverse|keep|restore|drop, ``i`` an index."""

    kind: str
    i: int

    def __str__(self):
        return f"{self.kind} {self.i}"


KINDS = ("advance", "record", "reverse", "keep", "restore", "drop")


@lru_cache(maxsize=8)
def _table(L):
    """Every action of a chain of L layers, made once: builders slice runs of them instead of making objects."""
    return {k: [Action(k, i) for i in range(L + 1)] for k in KINDS}


class Schedule:
    """A plan for one training step over a chain of ``L`` layers; ``print`` it to see the timeline.

    ``costs`` (a ``ChainCosts``) lets ``simulate()`` predict bytes and FLOPs too;
    ``note`` says how a planner found it; other keywords (segments, slots,
    budget) are the options the strategy was asked for.
    """

    def __init__(self, strategy: str, L: int, actions, costs: ChainCosts = None, note: str = None, **params):
        self.strategy, self.L, self.actions, self.params = strategy, L, tuple(actions), params
        self.costs, self.note = costs, note
        self._split = self._check()

    def with_costs(self, costs: ChainCosts) -> "Schedule":
        """The same schedule with costs attached."""
        return Schedule(self.strategy, self.L, self.actions, costs=costs, note=self.note, **self.params)

    @property
    def split(self) -> int:
        """Index of the first ``reverse``: actions before it run in the forward pass."""
        return self._split

    def forward_actions(self):
        """The first sweep: the actions run by the forward pass (an iterator, no copy)."""
        return itertools.islice(self.actions, 0, self._split)

    def backward_actions(self):
        """The rest: the actions run during backward (an iterator, no copy)."""
        return itertools.islice(self.actions, self._split, None)

    def _check(self):
        """Replay the actions symbolically (a malformed schedule fails here, not halfway through a step);
        returns the index of the first reverse."""
        cur, slots, records, expect, split = 0, {0}, [], self.L, None
        for n, a in enumerate(self.actions):
            k, i = a.kind, a.i
            if k == "advance" or k == "record":
                if cur != i - 1:
                    self._bad(f"{a} but the current activation is "
                              f"{'none (restore one first)' if cur is None else f'x{cur}'}")
                cur = i
                if k == "record":
                    records.append(i)
            elif k == "reverse":
                if not records or records[-1] != i:
                    self._bad(f"{a} but layer {i} is not the last recorded")
                if i != expect:
                    self._bad("layers must be reversed in the order L..1")
                if split is None:
                    split = n
                records.pop()
                expect -= 1
                cur = None
            elif k == "keep":
                if cur != i:
                    self._bad(f"{a} but the current activation is "
                              f"{'none (restore one first)' if cur is None else f'x{cur}'}")
                slots.add(i)
            elif k == "restore":
                if i not in slots:
                    self._bad(f"{a} but x{i} is not in a slot")
                cur = i
            elif k == "drop":
                slots.discard(i)
            else:
                self._bad(f"unknown action {a}")
        if expect != 0:
            self._bad("layers must be reversed in the order L..1")
        return split if split is not None else len(self.actions)

    def _bad(self, what):
        raise ScheduleError(f"{self.strategy}(L={self.L}): {what}")

    def simulate(self, costs: ChainCosts = None) -> Simulation:
        """Predict layer forwards, peak memory and recompute (see ``costs.simulate``)."""
        return simulate(self, costs)

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


# --------------------------------------------------------------------------- validation helpers


MAX_LAYERS = 10**6    # schedules are explicit action lists: a longer chain would take minutes and gigabytes to plan


def _check_L(L):
    if not isinstance(L, int) or isinstance(L, bool) or L < 1:
        shown = f"<an int of {len(str(L))} digits>" if isinstance(L, int) and L < -10**20 else repr(L)
        raise ScheduleError(f"a chain needs at least one layer, got L={shown}; pass a positive int (the number "
                            "of layers) or the layers themselves")
    if L > MAX_LAYERS:
        shown = f"<an int of {len(str(L))} digits>" if L > 10**20 else f"{L:,}"
        raise ScheduleError(f"L={shown} layers is more than a schedule can list (at most {MAX_LAYERS:,}); "
                            "group consecutive layers into blocks and plan the blocks")


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
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= L:
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
    stack = [(0, L, 0)]          # spans (a, b, current index); an Action on the stack: emit it
    # An explicit stack, not a recursive closure: no reference cycle keeps the actions alive.
    while stack:
        item = stack.pop()
        if isinstance(item, Action):
            acts.append(item)
            continue
        a, b, cur = item
        if b - a == 1:
            _emit_segment(acts, a, b, cur)
            continue
        m = (a + b + 1) // 2
        if cur != a:
            acts.append(Action("restore", a))
        acts.extend(Action("advance", i) for i in range(a + 1, m + 1))
        acts.append(Action("keep", m))
        stack += [(a, m, None), Action("drop", m), (m, b, m)]    # right half, drop x_m, left half
    return Schedule("recursive", L, _tidy(acts))


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


# --------------------------------------------------------------------------- Revolve


@lru_cache(maxsize=None)
def _repetitions(L: int, s: int) -> int:
    """r: the least integer with C(s + r, s) >= L (the times the busiest layer runs, less one)."""
    r, beta = 0, 1                               # beta = C(s + r, s)
    while beta < L:
        r += 1
        beta = beta * (s + r) // r
    return r


def binomial_extra_forwards(L: int, s: int) -> int:
    """t(L, s): the fewest recomputed layer forwards to reverse L layers with s slots (Griewank & Walther).

    t(L, s) = r·L − C(s + r, s + 1), with r the least integer such that C(s + r, s) ≥ L.
    """
    _check_L(L)
    if not isinstance(s, int) or isinstance(s, bool) or s < 1:
        raise ScheduleError(f"t(L, s) needs an int s >= 1 (slots), got s={s!r}")
    r = _repetitions(L, s)
    return r * L - math.comb(s + r, s + 1)


def revolve_forwards(L: int, s: int) -> int:
    """L + t(L, s): layer forwards in a whole step under Revolve with s slots."""
    return L + binomial_extra_forwards(L, s)


@lru_cache(maxsize=None)
def _best_split(length: int, s: int) -> int:
    """Where to place the next checkpoint in a span of ``length`` layers with ``s`` slots (input included).

    The first m minimising  m + F(length - m, s - 1) + F(m, s)  with F = revolve_forwards:
    advance m layers, keep x_m, reverse the right part with one slot fewer, then
    the left part. F is convex in its first argument (t's slope r grows with L),
    so the sum is convex in m and the first m where it stops falling is found by
    bisection: O(log L) closed-form evaluations instead of trying every m.
    """
    cost = lambda m: m + revolve_forwards(length - m, s - 1) + revolve_forwards(m, s)  # noqa: E731
    lo, hi = 1, length - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(mid + 1) >= cost(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def revolve(L: int, slots: int) -> Schedule:
    """Binomial checkpointing (Revolve): exactly L + t(L, slots) layer forwards, the fewest possible.

    ``slots`` counts the input x_0. With one slot every layer is recomputed from
    the input. Optimal in Revolve's model, where a layer is recorded only when
    it is about to be reversed: with unlimited slots that still costs L - 1
    recomputed forwards, which recording runs of layers (``none``, ``uniform``,
    the budget planner) avoids when memory allows. Built in time linear in its
    length: splits come from the closed form, runs of advances are slices of
    prebuilt actions.
    """
    _check_L(L)
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise ScheduleError(f"revolve needs slots >= 1 (the input counts as one), got {slots!r}")
    t = _table(L)
    adv, rec, rev, keep, restore = t["advance"], t["record"], t["reverse"], t["keep"], t["restore"]
    acts = []
    stack = [(0, L, min(slots, L), True)]          # (a, b, slots, is x_a current?); an Action: emit it
    # An explicit stack instead of recursion: with one slot the depth would be L.
    while stack:
        item = stack.pop()
        if isinstance(item, Action):
            acts.append(item)
            continue
        a, b, s, cur = item
        if b - a == 1 or s == 1:
            for i in range(b, a, -1):
                if not cur:
                    acts.append(restore[a])
                acts.extend(adv[a + 1:i])
                acts.append(rec[i])
                acts.append(rev[i])
                cur = False
            continue
        m = a + _best_split(b - a, s)
        if not cur:
            acts.append(restore[a])
        acts.extend(adv[a + 1:m + 1])
        stack.append((a, m, s, False))              # run in this order: right span, drop m, left span
        if b - m == 1:                              # the right span is one layer: x_m is never read back
            stack.append((m, b, s - 1, True))
            continue
        acts.append(keep[m])
        stack.append(t["drop"][m])
        stack.append((m, b, s - 1, True))
    return Schedule("revolve", L, acts, slots=slots)


def default_slots(L: int) -> int:
    """Revolve's default: as many slots as recursive bisection uses, so it does with fewer forwards."""
    return recursive(L).simulate().peak_slots


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


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Strategy:
    """One checkpointing strategy, as every consumer sees it (``make``, the planner, ``compare``, ``plan``).

    ``build(L, costs=None, **options)`` makes its schedule; ``family(L)`` lists
    the schedules it can choose among for a memory budget (its option swept,
    e.g. every slot count); ``cli(L, given)`` turns the command line's options
    ({"slots": ..., "budget": ...}) into its own, or None to leave it out of
    ``compare``. A ``measured`` strategy plans from a chain's ``ChainCosts`` and
    brings its own ``fit(costs, limit)`` (cheapest schedule within ``limit``
    bytes, or None) and ``least(costs)`` (the fewest bytes it can run in).
    """

    name: str
    build: Callable
    options: tuple = ()
    family: Callable = None
    cli: Callable = None
    measured: bool = False
    fit: Callable = None
    least: Callable = None


REGISTRY: dict = {}
STRATEGIES = REGISTRY          # the names, in registration order (iterate, or test ``in``)


def register(strategy: Strategy) -> Strategy:
    """Add (or replace) a strategy; every consumer of the registry sees it from then on."""
    if not isinstance(strategy, Strategy):
        raise ScheduleError(f"register: expected a Strategy(name, build, ...), got {type(strategy).__name__}")
    REGISTRY[strategy.name] = strategy
    return strategy


def make(strategy: str, L: int, costs: ChainCosts = None, **options) -> Schedule:
    """The schedule for a strategy by name; options the strategy does not take, or left None, are ignored."""
    entry = REGISTRY.get(strategy) if isinstance(strategy, str) else None
    if entry is None:
        raise ScheduleError(f"unknown checkpointing strategy {strategy!r}; valid strategies are "
                            f"{', '.join(REGISTRY)}")
    given = {k: v for k, v in options.items() if v is not None and k in entry.options}
    if entry.measured:
        if not isinstance(costs, ChainCosts):
            got = "" if costs is None else f" (got costs={type(costs).__name__}, not ChainCosts)"
            raise ScheduleError(f"the {strategy} strategy plans from measured layer sizes{got}: use "
                                f"minigrad.checkpoint.plan(layers, x, strategy={strategy!r}, ...)")
        return entry.build(L, costs=costs, **given)
    return entry.build(L, **given)


def family(strategy: str, L: int):
    """The schedules a (non-measured) strategy picks among within a budget."""
    entry = REGISTRY[strategy]
    return entry.family(L) if entry.family is not None else [entry.build(L)]


def label(schedule: Schedule) -> str:
    """'revolve:3', 'sqrt:7', 'none': the strategy and its option, as the command line writes them."""
    opts = [str(schedule.params[k]) for k in ("slots", "segments") if k in schedule.params]
    return ":".join([schedule.strategy] + opts)


def _sqrt(L, segments=None):
    sched = uniform(L, segments) if segments is not None else sqrt(L)
    sched.strategy = "sqrt"           # what the user asked for, whatever the segment count
    return sched


register(Strategy("none", lambda L: none(L), cli=lambda L, given: {}))
register(Strategy("sqrt", _sqrt, ("segments",), family=lambda L: [_sqrt(L, k) for k in range(1, L + 1)],
                  cli=lambda L, given: {}))
register(Strategy("recursive", lambda L: recursive(L), cli=lambda L, given: {}))
register(Strategy("revolve", lambda L, slots=None: revolve(L, slots if slots is not None else default_slots(L)),
                  ("slots",), family=lambda L: [revolve(L, s) for s in range(1, L + 1)],
                  cli=lambda L, given: {"slots": given.get("slots") or default_slots(L)}))
