"""One executor for every schedule: runs a chain of layers as a single node on the tape.

The forward pass runs the schedule's first sweep (keeping the slots it names,
recording the layers it names); backward runs the rest: restore a slot,
advance without recording, record a layer, reverse it with the incoming
gradient. Each layer re-run in backward sees the random-number state it saw
in the forward pass and runs inside the recompute context, so dropout masks
and BatchNorm running statistics come out as if nothing were recomputed.
"""
from __future__ import annotations

from typing import NamedTuple

from .. import autograd, profiler
from .. import random as _random
from ..autograd import Function, enable_grad, no_grad, propagating_requires_grad, recomputing
from ..errors import CheckpointError, ScheduleError
from ..tensor import Tensor
from .function import check_same_meta, check_same_modes, module_modes, rng_devices
from . import schedules
from .policies import PLAIN, Storage
from .schedules import Schedule


def _layer_name(layers, i):
    return f"layer {i} ({type(layers[i - 1]).__name__})"


class _Run:
    """The state of one schedule being executed: slots, the current activation, recorded layers."""

    def __init__(self, layers, schedule, x: Tensor, storage=PLAIN):
        self.layers, self.schedule, self.storage = layers, schedule, storage
        self.device = x.device
        self.x_requires_grad = x.requires_grad
        self.slots = {0: x.data}
        self.cur, self.cur_i = x.data, 0
        self.records = []          # (i, input leaf, output tensor), innermost last
        self.start = autograd.tape_position()   # nodes recorded before it are outside the chain
        self.spilled = []          # gradients for captured tensors computed outside the chain
        # Per layer: the RNG state before its first run and the (shape, dtype) it produced.
        # Lists of shared objects (consecutive equal entries are one object), so a deep
        # chain costs a pointer per layer here, not a dict.
        self.rng = [None] * (len(layers) + 1)
        self.meta = [None] * (len(layers) + 1)
        # Per activation: does it depend on anything needing a gradient? (x_0: its own flag)
        self.needs = [None] * (len(layers) + 1)
        self.needs[0] = x.requires_grad
        self.devs = rng_devices([x])

    def _leaf(self, i):
        return Tensor._make(self.cur, self.device, self.needs[i - 1], None, 0)

    def run_layer(self, i, record, first_sweep):
        """Run layer i from the current activation (recording its graph or not) and make x_i current.

        In the first sweep we note the RNG state and output shape; when a layer
        runs again in backward (the caller holds the recompute context) it gets
        that RNG state back and must produce the same shape.
        """
        layer = self.layers[i - 1]
        x = self._leaf(i)
        if first_sweep:
            state = _random.get_rng_state(self.devs)
            self.rng[i] = self.rng[i - 1] if state == self.rng[i - 1] else state
        else:
            _random.set_rng_state(self.rng[i])
        with (enable_grad() if record else no_grad()):
            y = layer(x)
        if first_sweep:
            if not isinstance(y, Tensor):
                raise CheckpointError(f"checkpoint_sequential: {_layer_name(self.layers, i)} returned "
                                      f"{type(y).__name__}; every layer must return one Tensor")
            meta = (y.shape, y.dtype)
            self.meta[i] = self.meta[i - 1] if meta == self.meta[i - 1] else meta
            self.needs[i] = y.requires_grad and y.dtype.kind == "f"
        elif (y.shape, y.dtype) != self.meta[i]:
            check_same_meta(_layer_name(self.layers, i), [self.meta[i]], [(y.shape, y.dtype)])
        if record:
            self.records.append((i, x, y))
        del x
        self.cur, self.cur_i = y.data, i

    def step(self, action, first_sweep):
        kind, i = action.kind, action.i
        if kind == "advance":
            self.run_layer(i, False, first_sweep)
        elif kind == "record":
            self.run_layer(i, True, first_sweep)
        elif kind == "keep":
            self.slots[i] = self.storage.store(self.cur)
        elif kind == "restore":
            stored = self.slots[i]
            self.cur = stored if i == 0 else self.storage.load(stored, self.meta[i][1], self.device)
            self.cur_i = i
        elif kind == "drop":
            self.slots.pop(i, None)
        else:
            raise CheckpointError(f"checkpoint_sequential: cannot run action {action} in the forward pass")

    def reverse(self, i, box, retain=False):
        """Backpropagate the gradient in ``box`` through recorded layer i; returns the input's gradient.

        The local backward stops at nodes recorded before the chain ran (a
        captured tensor's producer); their gradients wait in ``self.spilled``.
        """
        j, x, y = self.records.pop()
        assert j == i, (j, i)
        # Hand the output over to backward without keeping a reference here, so it can be
        # freed as soon as the last op that saved it has run.
        self.cur = None
        roots = [(y, box.pop())] if y.requires_grad else []
        box.clear()
        del y
        self.spilled += autograd.run_backward(roots, retain_graph=retain, boundary=self.start)
        g = x.grad.data if x.grad is not None else None
        x.grad = None
        del x
        return g

    def snapshot(self):
        """What backward consumes, kept aside so a retained graph can be reversed again."""
        return dict(self.slots), list(self.records), self.cur, self.cur_i

    def restore_snapshot(self, snap):
        slots, records, self.cur, self.cur_i = snap
        self.slots, self.records = dict(slots), list(records)


class SequentialCheckpoint(Function):
    """The node standing for a whole checkpointed chain; its backward runs the rest of the schedule."""

    takes_grad_box = True
    spills = True

    def backward(self, box):
        run, actions = self.run, self.schedule.backward_actions()
        check_same_modes("checkpoint_sequential", self.modes)
        retain = autograd.retains_graph()
        snap = run.snapshot() if retain else None
        grad_box = [box.pop()]
        g = None
        # One recompute context for the whole reverse sweep: layers re-run here must
        # not update state, and the RNG is put back where the forward pass left it.
        try:
            with recomputing(rng_state={}):
                for action in actions:
                    if action.kind == "reverse":
                        if g is not None:
                            grad_box.append(g)
                            g = None
                        g = run.reverse(action.i, grad_box, retain)
                        if g is None:
                            break      # a detach() (or an op without gradient) cut the chain here
                    else:
                        run.step(action, first_sweep=False)
            self.spilled, run.spilled = run.spilled, []
        finally:
            run.records.clear()
            if retain:
                run.restore_snapshot(snap)
        return (g if self.needs_input_grad[0] else None,)

    def backward_flops(self):
        return 0   # the layers' ops book their own FLOPs

    def release(self):
        super().release()
        self.run = self.modes = None

    @property
    def saved_bytes(self):
        run = getattr(self, "run", None)
        return sum(a.nbytes for a in run.slots.values()) if run else 0


def run_schedule(layers, x: Tensor, schedule: Schedule, store_dtype=None, offload=False) -> Tensor:
    """Run ``layers`` on ``x`` under ``schedule``; backward of the result follows the schedule too.

    ``store_dtype`` / ``offload`` choose how slots are stored (see ``policies.Storage``);
    the input x_0 is always kept as it is, since the caller holds it anyway.
    """
    layers = list(layers)
    if schedule.L != len(layers):
        raise CheckpointError(f"checkpoint_sequential: the schedule is for {schedule.L} layers but the chain "
                              f"has {len(layers)}")
    if not isinstance(x, Tensor):
        raise CheckpointError(f"checkpoint_sequential: the input must be a Tensor, got {type(x).__name__}")
    if not autograd.is_grad_enabled():
        for layer in layers:
            x = layer(x)
        return x
    storage = Storage(store_dtype, offload) if (store_dtype is not None or offload) else PLAIN
    run = _Run(layers, schedule, x, storage)
    modes = module_modes(layers)
    with propagating_requires_grad():
        for action in schedule.forward_actions():
            run.step(action, first_sweep=True)
    out_data = run.cur
    if not run.needs[schedule.L]:
        return Tensor._make(out_data, x.device, False, None, 0)
    node = SequentialCheckpoint()
    node.run, node.schedule, node.modes = run, schedule, modes
    node.spilled = []
    run.cur = None
    return node.record([x], [out_data], x.device)[0]


class ChainCosts(NamedTuple):
    """What the planner needs to know of a chain, measured by ``measure_chain`` (lists index 0..L)."""

    sizes: list       # bytes of x_0..x_L
    extras: list      # bytes layer i saves for backward beyond its input and output
    flops: list       # forward FLOPs of layer i
    params: list      # bytes of layer i's parameter gradients
    workspace: int    # bytes NumPy allocates inside an op and frees before it returns (the most of any layer)
    inner: list       # bytes layer i holds only while its forward runs (intermediate results)
    back: list        # bytes reversing layer i allocates beyond the gradient it receives

    def price(self, schedule: Schedule) -> Schedule:
        """``schedule`` with these costs attached, so ``simulate()`` predicts bytes and FLOPs too.

        Parameter gradients count as the budget planner counts them: only the one
        being computed, since they are added into gradients that already exist.
        """
        return Schedule(schedule.strategy, schedule.L, schedule.actions, **schedule.params,
                        layer_bytes=self.sizes, extra_bytes=self.extras, layer_flops=self.flops,
                        param_bytes=self.params, persist=False, inner_bytes=self.inner, back_bytes=self.back)


def measure_chain(layers, x: Tensor) -> ChainCosts:
    """Run each layer once without recording and once recorded with a backward, measuring costs.

    See ``ChainCosts``. The workspace is measured with tracemalloc on the CPU
    when it is not already tracing (otherwise 0). Runs inside the recompute
    context and restores every gradient it touches, so BatchNorm statistics,
    random generators and ``.grad`` are left exactly as they were. A parameter
    shared by several layers is counted at the last of them: backward reaches
    it first.
    """
    import tracemalloc  # noqa: PLC0415

    sizes, extras, flops, params, inner, back = [x.data.nbytes], [0], [0], [0], [0], [0]
    found, workspace = [], 0
    trace = x.device.type == "cpu" and not tracemalloc.is_tracing()
    if trace:
        tracemalloc.start()
    cur = x.data
    state = _random.get_rng_state(rng_devices([x]))
    try:
        outside = autograd.tape_position()  # the caller's graph: never run, never freed here
        with recomputing(rng_state=state):
            for layer in layers:
                leaf = Tensor._make(cur, x.device, True, None, 0)
                before = profiler.live_bytes()
                _random.set_rng_state(state)
                with profiler.profile() as fprof, no_grad():
                    y = layer(leaf)
                inner.append(max(0, fprof.peak_bytes - before - y.data.nbytes))
                del y
                _random.set_rng_state(state)
                with profiler.profile() as prof, enable_grad():
                    y = layer(leaf)
                state = _random.get_rng_state(rng_devices([x]))
                out = y.data
                sizes.append(out.nbytes)
                extras.append(max(0, profiler.live_bytes() - before - out.nbytes))
                flops.append(prof.flops["recompute"])
                used = [t for t in autograd.leaves(y, boundary=outside) if t is not leaf]
                found.append(used)
                back.append(0)
                if y.requires_grad:
                    kept = [(t, t.grad) for t in used]
                    for t in used:
                        t.grad = None      # measured as fresh gradients; the caller's are put back after
                    seed = profiler.track(y.device.xp.ones(y.shape, y.dtype))
                    if trace:
                        tracemalloc.reset_peak()
                        start = tracemalloc.get_traced_memory()[0]
                    with profiler.profile() as bprof:
                        autograd.run_backward([(y, seed)], boundary=outside)
                    del seed
                    back[-1] = bprof.peak_bytes - bprof.start_bytes
                    if trace:
                        traced = tracemalloc.get_traced_memory()[1] - start
                        workspace = max(workspace, traced - back[-1])
                    for t, g in kept:
                        t.grad = g
                del y, leaf
                cur = out
    finally:
        if trace:
            tracemalloc.stop()
    params += [0] * len(found)
    seen = set()
    for i in range(len(found), 0, -1):
        for t in found[i - 1]:
            if id(t) not in seen:
                seen.add(id(t))
                params[i] += t.data.nbytes
    return ChainCosts(sizes, extras, flops, params, workspace, inner, back)


_plans: dict = {}


def plan(layers, x=None, strategy="sqrt", segments=None, slots=None, budget=None) -> Schedule:
    """The Schedule ``checkpoint_sequential`` would run (print it, or call ``.simulate()``).

    ``layers`` may be just their number for every strategy but ``budget``:
    ``plan(64, strategy="revolve", slots=4)``.

    For ``strategy="budget"`` this measures the chain on ``x`` once (sizes, FLOPs)
    and solves for the cheapest schedule within ``budget`` (bytes or a string
    like "64MB"); the plan is cached for the same layers, input shape and budget.
    The budget covers what checkpointing controls: the activations (the input
    x_0 included), their gradients and the temporaries inside ops. Parameters,
    their gradients and optimizer state are the same under every schedule and
    are not part of it — only the gradient of the layer being reversed, while
    it is computed before being added to the one that exists.
    """
    if isinstance(layers, int):       # a pure plan needs only the number of layers
        if strategy == "budget":
            raise ScheduleError("strategy='budget' measures the layers: pass the layers and an input x")
        return schedules.make(strategy, layers, segments=segments, slots=slots)
    layers = list(layers)
    L = len(layers)
    if strategy != "budget":
        return schedules.make(strategy, L, segments=segments, slots=slots)
    if budget is None:
        raise ScheduleError("strategy='budget' needs budget= (bytes, or a string like '64MB')")
    if not isinstance(x, Tensor):
        raise ScheduleError("strategy='budget' measures the layers on an input: pass x (a Tensor)")
    limit = schedules.parse_bytes(budget)
    key = (tuple(id(layer) for layer in layers), tuple(getattr(layer, "training", None) for layer in layers),
           x.shape, str(x.dtype), str(x.device), limit)
    sched = _plans.get(key)
    if sched is None:
        c = measure_chain(layers, x)
        sched = schedules.budget(c.sizes, c.extras, c.flops, limit, params=c.params, persist=False,
                                 reserve=c.workspace, inner=c.inner, back=c.back)
        if len(_plans) > 64:
            _plans.clear()
        _plans[key] = sched
    return sched


def checkpoint_sequential(layers, x, strategy="sqrt", segments=None, slots=None, budget=None, store_dtype=None,
                          offload=False) -> Tensor:
    """Run a chain of layers under a checkpointing strategy; backward follows the same schedule.

    ``strategy``: "none" | "sqrt" (default; ``segments=k`` for k uniform
    segments) | "recursive" | "revolve" (``slots=s`` stored activations, the
    input counted) | "budget" (``budget=`` bytes). ``store_dtype="float16"``
    stores the slots in half precision; ``offload=True`` keeps them in host
    memory (pinned, on a GPU) until backward needs them.
    """
    layers = list(layers)
    if not layers:
        raise CheckpointError("checkpoint_sequential: the chain is empty; pass at least one layer")
    return run_schedule(layers, x, plan(layers, x, strategy, segments=segments, slots=slots, budget=budget),
                        store_dtype=store_dtype, offload=offload)
