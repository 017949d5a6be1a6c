"""What a chain costs: its measured bytes and FLOPs (``ChainCosts``) and ``simulate(schedule, costs)``.

NOTE [ Memory model ]
What ``simulate`` counts, in *units* (one activation x_i is one unit) or, with
costs, in bytes:

1. the distinct activations alive: those in slots, the current one, and the
   input and output of every recorded layer, plus what each recorded layer
   saves beyond them (``extras``);
2. the gradients in flight: g_i while layer i waits to be reversed, and while
   it is reversed whatever that allocates (``back[i]``: by default g_{i-1} and
   the layer's parameter gradients);
3. parameter gradients of layers already reversed, when they persist
   (``persist=True``); with ``persist=False`` they are added into gradients
   that already exist, so only the one being computed counts;
4. ``inner[i]``, what layer i holds only while its forward runs.

The output x_L goes once layer L is reversed. The executor's measured peak
exceeds this by the temporaries inside one op (``workspace``), which the
budget planner reserves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import CheckpointError, ScheduleError


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


@dataclass(frozen=True)
class ChainCosts:
    """The measured costs of a chain of L layers, the one cost type of the planning layer (lists index 0..L).

    ``sizes[i]``: bytes of x_i; ``flops[i]``: forward FLOPs of layer i;
    ``extras[i]``: what recording layer i saves beyond its input and output;
    ``params[i]``: bytes of its parameter gradients; ``inner[i]``: bytes it holds
    only while its forward runs; ``back[i]``: bytes reversing it allocates
    (default g_{i-1} and its parameter gradients); ``workspace``: bytes inside
    one op, reserved by the planner. See NOTE [ Memory model ].
    """

    sizes: tuple
    flops: tuple
    extras: tuple = None
    params: tuple = None
    inner: tuple = None
    back: tuple = None
    workspace: int = 0
    persist: bool = True
    scale: float = field(default=1.0, compare=False)

    def __post_init__(self):
        L = len(self.sizes) - 1
        fix = lambda name, v: object.__setattr__(self, name, tuple(int(x) for x in v))  # noqa: E731
        fix("sizes", self.sizes)
        fix("flops", self.flops)
        for name in ("extras", "params", "inner"):
            fix(name, getattr(self, name) if getattr(self, name) is not None else [0] * (L + 1))
        if self.back is None:
            fix("back", [0] + [self.sizes[i - 1] + self.params[i] for i in range(1, L + 1)])
        else:
            fix("back", self.back)
        if any(len(getattr(self, n)) != L + 1 for n in ("flops", "extras", "params", "inner", "back")):
            from ..errors import ScheduleError  # noqa: PLC0415
            raise ScheduleError(f"chain costs: every list needs L + 1 = {L + 1} entries (index 0 for the input)")

    @property
    def L(self) -> int:
        return len(self.sizes) - 1

    def scaled(self, scale: float) -> "ChainCosts":
        """The same chain at ``scale`` times the batch: activations, FLOPs and temporaries grow; parameters not."""
        up = lambda v: [int(math.ceil(x * scale)) for x in v]  # noqa: E731
        back = [0] + [int(math.ceil((b - p) * scale)) + p for b, p in zip(self.back[1:], self.params[1:])]
        return ChainCosts(up(self.sizes), up(self.flops), up(self.extras), self.params, up(self.inner), back,
                          int(math.ceil(self.workspace * scale)), self.persist, self.scale * scale)

    def price(self, schedule):
        """``schedule`` with these costs attached, so ``simulate()`` predicts bytes and FLOPs too."""
        return schedule.with_costs(self)


def simulate(schedule, costs: ChainCosts = None) -> Simulation:
    """Predict layer forwards, peak memory and recompute of running ``schedule`` (NOTE [ Memory model ]).

    Without costs (and none attached to the schedule) the peak is in units only.
    """
    if not hasattr(schedule, "actions") or not hasattr(schedule, "L"):
        raise ScheduleError(f"simulate: expected a Schedule (from plan() or schedules.make()), got "
                            f"{type(schedule).__name__}")
    if costs is not None and not isinstance(costs, ChainCosts):
        raise ScheduleError(f"simulate: costs must be a ChainCosts (from measure_chain), got {type(costs).__name__}")
    costs = costs if costs is not None else getattr(schedule, "costs", None)
    forwards, peak_units, peak_slots, _ = _replay(schedule.actions, schedule.L, None)
    peak_bytes = recompute = None
    if costs is not None:
        _, peak_bytes, _, recompute = _replay(schedule.actions, schedule.L, costs)
    return Simulation(schedule.L, forwards, forwards - schedule.L, peak_units, peak_slots, peak_bytes, recompute)


def _replay(actions, L, c):
    """One pass over the actions, tracking what is alive incrementally (O(1) per action).

    Returns (layer forwards, peak, peak slots, recompute FLOPs); with ``c`` None
    every activation weighs one unit and nothing else is counted but gradients.
    """
    if c is None:
        w, ext, pg, inner, flops = [1] * (L + 1), [0] * (L + 1), [0] * (L + 1), [0] * (L + 1), [0] * (L + 1)
        back, persist = [0] + [1] * L, True
    else:
        w, ext, pg, inner, flops, back, persist = c.sizes, c.extras, c.params, c.inner, c.flops, c.back, c.persist
    held = [0] * (L + 1)           # how many reasons keep x_i alive (slot, current, a record's input/output)
    held_bytes = w[0]
    held[0] = 2                    # x_0: slot 0 and current
    slots, records, cur = {0}, [], 0
    rec_extra = param_grads = grad = 0
    forwards = recompute = 0
    peak, peak_slots = 0, 1
    ran = bytearray(L + 1)

    def hold(i):
        nonlocal held_bytes
        if not held[i]:
            held_bytes += w[i]
        held[i] += 1

    def release(i):
        nonlocal held_bytes
        held[i] -= 1
        if not held[i]:
            held_bytes -= w[i]

    for a in actions:
        k, i = a.kind, a.i
        if k == "advance" or k == "record":
            forwards += 1
            if ran[i]:
                recompute += flops[i]
            ran[i] = 1
            more = (0 if held[i - 1] else w[i - 1]) + (0 if held[i] else w[i])
            now = held_bytes + rec_extra + param_grads + more + grad + inner[i] + (ext[i] if k == "record" else 0)
            peak = max(peak, now)
            if cur is not None:
                release(cur)
            hold(i)
            cur = i
            if k == "record":
                records.append(i)
                hold(i - 1)
                hold(i)
                rec_extra += ext[i]
        elif k == "reverse":
            peak = max(peak, held_bytes + rec_extra + param_grads + w[i] + back[i])
            if persist:
                param_grads += pg[i]
            records.pop()
            release(i - 1)
            release(i)
            rec_extra -= ext[i]
            if cur is not None:
                release(cur)
            cur = None
            grad = w[i - 1]
        elif k == "keep":
            if i not in slots:
                slots.add(i)
                hold(i)
            peak_slots = max(peak_slots, len(slots))
        elif k == "restore":
            if cur is not None:
                release(cur)
            hold(i)
            cur = i
        elif k == "drop":
            if i in slots:
                slots.discard(i)
                release(i)
        peak = max(peak, held_bytes + rec_extra + param_grads + grad)
    return forwards, peak, peak_slots, recompute


# --------------------------------------------------------------------------- measuring a chain


def measure_chain(layers, x) -> ChainCosts:
    """Run each layer once without recording and once recorded with a backward, measuring its costs.

    See ``ChainCosts``. Runs inside the recompute context and restores every
    gradient it touches, so BatchNorm statistics, random generators and
    ``.grad`` are left exactly as they were. A parameter shared by several
    layers is counted at the last of them: backward reaches it first. The
    workspace (CPU only) is measured once per layer signature (``_workspace``).
    """
    from .. import autograd, profiler  # noqa: PLC0415  (costs.py itself stays free of the core)
    from .. import random as _random  # noqa: PLC0415
    from ..autograd import enable_grad, no_grad, recomputing  # noqa: PLC0415
    from ..tensor import Tensor  # noqa: PLC0415
    from .function import chain_layers, rng_devices  # noqa: PLC0415

    layers = chain_layers(layers, "measure_chain")
    if not isinstance(x, Tensor):
        raise CheckpointError(f"measure_chain: the input x must be a Tensor, got {type(x).__name__}")
    sizes, extras, flops, params, inner, back = [x.data.nbytes], [0], [0], [0], [0], [0]
    found, workspace = [], 0
    cur = x.data
    devs = rng_devices([x])
    state = _random.get_rng_state(devs)
    outside = autograd.tape_position()   # the caller's graph: never run, never freed here
    with recomputing(rng_state=state):
        for layer in layers:
            leaf = Tensor._make(cur, x.device, True, None, 0)
            before = profiler.live_bytes()
            _random.set_rng_state(state)
            with profiler.profile() as fprof, no_grad():
                y = layer(leaf)
            inner.append(max(0, fprof.peak_bytes - before - y.data.nbytes))
            del y
            start_state = state
            _random.set_rng_state(state)
            with profiler.profile() as prof, enable_grad():
                y = layer(leaf)
            state = _random.get_rng_state(devs)
            out = y.data
            sizes.append(out.nbytes)
            extras.append(max(0, profiler.live_bytes() - before - out.nbytes))
            flops.append(prof.flops["recompute"])
            used = [t for t in autograd.leaves(y, boundary=outside) if t is not leaf]
            found.append(used)
            back.append(0)

            def backward(y, seed, used=used):
                """Backward of y from ``seed`` with fresh gradients (the caller's put back); the bytes it allocated."""
                kept = [(t, t.grad) for t in used]
                for t in used:
                    t.grad = None
                with profiler.profile() as bprof:
                    autograd.run_backward([(y, seed)], boundary=outside)
                for t, g in kept:
                    t.grad = g
                return bprof.peak_bytes - bprof.start_bytes

            if y.requires_grad:
                back[-1] = backward(y, profiler.track(y.device.xp.ones(y.shape, y.dtype)))
                if x.device.type == "cpu":
                    def again(layer=layer, leaf=leaf, start_state=start_state):
                        leaf.grad = None               # each run starts as the first did: no input gradient
                        _random.set_rng_state(start_state)
                        with enable_grad():
                            y2 = layer(leaf)
                        return y2, profiler.track(y2.device.xp.ones(y2.shape, y2.dtype)), backward
                    workspace = max(workspace, _workspace(layer, leaf, again))
            del y, leaf
            cur = out
    params += [0] * len(found)
    seen = set()
    for i in range(len(found), 0, -1):
        for t in found[i - 1]:
            if id(t) not in seen:
                seen.add(id(t))
                params[i] += t.data.nbytes
    return ChainCosts(sizes, flops, extras, params, inner, back, workspace, persist=False)


_WORKSPACE: dict = {}


def _signature(layer, x):
    """What decides a layer's op temporaries: its modules' types and settings, parameter shapes, the input."""
    modules = getattr(layer, "modules", None)
    if modules is None:
        return None
    parts = []
    for m in modules():
        simple = tuple(sorted((k, v) for k, v in vars(m).items() if isinstance(v, (bool, int, float, str, type(None)))))
        parts.append((type(m).__module__, type(m).__qualname__, simple))
    shapes = tuple((tuple(p.shape), str(p.dtype)) for p in layer.parameters())
    return tuple(parts), shapes, tuple(x.shape), str(x.dtype), str(x.device)


def _workspace(layer, x, again) -> int:
    """Bytes one recorded forward + backward of ``layer`` allocates inside ops beyond what the profiler sees.

    Measured with tracemalloc: what the backward traced, less what the profiler
    counted. Five runs: the first two warm caches and free lists; the most of the
    other three, rounded up to 4 KiB so that the few hundred bytes of Python
    objects that differ between runs and processes do not show. Cached per layer
    signature, so every plan of the same layers sees the same reserve.
    """
    import tracemalloc  # noqa: PLC0415

    key = _signature(layer, x)
    if key is not None and key in _WORKSPACE:
        return _WORKSPACE[key]
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    seen = []
    try:
        for _ in range(5):
            y, seed, backward = again()
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            counted = backward(y, seed)
            del y, seed
            seen.append(max(0, tracemalloc.get_traced_memory()[1] - start - counted))
    finally:
        if started:
            tracemalloc.stop()
    value = -(-max(seen[2:]) // 4096) * 4096
    if key is not None:
        _WORKSPACE[key] = value
    return value
