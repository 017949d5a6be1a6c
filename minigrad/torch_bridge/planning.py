"""The one place the bridge talks to minigrad's planners: strategy -> Schedule, costs -> prediction.

Kept thin on purpose, so that the bridge follows minigrad's planning API
(the strategy registry's ``schedules.make``, ``ChainCosts``, ``Schedule.simulate``)
through these few functions only.
"""
from __future__ import annotations

from typing import NamedTuple

from ..checkpoint import planner as _planner  # noqa: F401  (registers the budget strategy)
from ..checkpoint import schedules
from ..checkpoint.costs import ChainCosts
from ..errors import ScheduleError

OP = "minigrad.torch_bridge.checkpoint_sequential"


class Prediction(NamedTuple):
    """What minigrad predicts for one step of a PyTorch chain under a schedule."""

    layer_forwards: int        # layer forwards in the step (first sweep + recompute)
    recomputed_forwards: int   # layer_forwards - L
    recompute_flops: int       # FLOPs of the recomputed forwards (FlopCounterMode's count)
    saved_peak_bytes: int      # peak of the bytes held for backward (see ``saved_peak``)
    peak_bytes: int            # minigrad's whole memory model: saved bytes plus gradients in flight


def chain_costs(sizes, extras, flops, params) -> ChainCosts:
    """minigrad's cost type for a chain measured in PyTorch (no op workspace or forward-only transients)."""
    return ChainCosts(sizes, flops, extras, params, persist=False)


def make(L: int, strategy: str, costs: ChainCosts = None, segments=None, slots=None, budget=None):
    """The Schedule for ``strategy`` on a chain of ``L`` layers (``budget`` plans on measured ``costs``)."""
    where = f"{OP} on {L} PyTorch layers"
    try:
        if costs is not None:
            where += f" (input {costs.sizes[0]:,} bytes)"
        return schedules.make(strategy, L, costs=costs, segments=segments, slots=slots, budget=budget)
    except ScheduleError as exc:
        raise ScheduleError(f"{where}: {exc}") from None


def saved_peak(schedule, costs: ChainCosts) -> int:
    """Peak bytes held for backward: minigrad's memory model (``costs.simulate``) without gradients.

    Alive at any moment: the slots (x_0 included), the current activation, each
    recorded layer's input and output and the extra tensors it saved. That is
    what saved-tensor hooks and the executor's references can see; gradients in
    flight live inside PyTorch's engine and are left to ``Schedule.simulate``.
    """
    size, extra = costs.sizes, costs.extras
    cur, slots, records, peak = 0, {0}, [], 0

    def alive(*more):
        held = set(slots) | set(more)
        if cur is not None:
            held.add(cur)
        for r in records:
            held.update((r - 1, r))
        return sum(size[i] for i in held) + sum(extra[r] for r in records)

    for a in schedule.actions:
        k, i = a.kind, a.i
        if k in ("advance", "record"):
            peak = max(peak, alive(i - 1, i) + (extra[i] if k == "record" else 0))
            cur = i
            if k == "record":
                records.append(i)
        elif k == "reverse":
            records.pop()
            cur = None
        elif k == "keep":
            slots.add(i)
        elif k == "restore":
            cur = i
        elif k == "drop":
            slots.discard(i)
        peak = max(peak, alive())
    return peak


def predict(schedule, costs: ChainCosts) -> Prediction:
    """minigrad's prediction for ``schedule`` on a chain with measured ``costs``."""
    sim = costs.price(schedule).simulate()
    return Prediction(sim.layer_forwards, sim.recomputed_forwards, sim.recompute_flops,
                      saved_peak(schedule, costs), sim.peak_bytes)


def plan(modules, x, strategy="sqrt", segments=None, slots=None, budget=None):
    """The Schedule ``checkpoint_sequential`` runs for these PyTorch modules on ``x`` (``budget`` measures)."""
    from .executor import check_chain   # noqa: PLC0415  (the executor imports this module)
    from .measure import measure        # noqa: PLC0415
    modules = check_chain(modules, x)
    costs = measure(modules, x) if strategy == "budget" else None
    return make(len(modules), strategy, costs, segments=segments, slots=slots, budget=budget)
