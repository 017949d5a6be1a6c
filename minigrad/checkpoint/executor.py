"""One executor for every schedule: runs a chain of layers as a single node on the tape.

The forward pass runs the schedule's first sweep (keeping the slots it names,
recording the layers it names); backward runs the rest: restore a slot,
advance without recording, record a layer, reverse it with the incoming
gradient. Each layer re-run in backward sees the random-number state it saw
in the forward pass and runs inside the recompute context, so dropout masks
and BatchNorm running statistics come out as if nothing were recomputed.
"""
from __future__ import annotations

import numbers
import weakref

from .. import autograd, profiler
from .. import random as _random
from ..autograd import Function, enable_grad, no_grad, propagating_requires_grad, recomputing
from ..errors import CheckpointError, GraphError, ScheduleError
from ..tensor import Tensor
from .function import chain_layers, check_same_meta, check_same_modes, module_modes, rng_devices
from . import planner as _planner  # noqa: F401  (registers the budget strategy)
from . import schedules
from .costs import ChainCosts, measure_chain  # noqa: F401  (re-exported: where they used to live)
from .policies import PLAIN, Storage
from .schedules import Schedule


def _layer_name(layers, i):
    return f"layer {i} ({type(layers[i - 1]).__name__})"


class _Run:
    """The state of one schedule being executed: slots, the current activation, recorded layers."""

    def __init__(self, layers, schedule, x: Tensor, storage=PLAIN):
        self.layers, self.schedule, self.storage = layers, schedule, storage
        # Slots pass the saved-array hooks: the storage's (float16, offload), else any installed
        # around the call (as arrays saved inside it would), else none: the arrays themselves.
        hooks = (storage.pack, storage.unpack) if not storage.plain else autograd.current_saved_hooks()
        self.pack, self.unpack = hooks if hooks is not None else (None, None)
        self.device = x.device
        self.x_requires_grad = x.requires_grad
        self.slots = {0: x.data}
        self.x_stamp = autograd.version_stamp(x.data)     # x_0 is the caller's: see check_input
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
            self.slots[i] = profiler.track(self.cur if self.pack is None else self.pack(self.cur))
        elif kind == "restore":
            stored = self.slots[i]
            self.cur = stored if (i == 0 or self.unpack is None) else self.unpack(stored)
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

    def check_input(self):
        """x_0 is kept as the caller's array: refuse to recompute from it if it was changed in place."""
        x0 = self.slots.get(0)
        if x0 is not None and autograd.changed_since(x0, self.x_stamp):
            raise GraphError(f"checkpoint_sequential: the chain's input (shape {tuple(x0.shape)}, {x0.dtype}) "
                             "was modified in place after the forward pass (x.data += ..., or writing into "
                             "x.numpy()); recomputing from it would give wrong gradients. Modify it only "
                             "after backward.")

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
        run.check_input()
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
    layers = chain_layers(layers, "run_schedule")
    if not isinstance(schedule, Schedule):
        raise CheckpointError(f"run_schedule: expected a Schedule (from plan() or schedules.make()), got "
                              f"{type(schedule).__name__}")
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


_plans = weakref.WeakKeyDictionary()   # first layer -> {key: (weak refs to every layer, schedule)}


def plan(layers, x=None, strategy="sqrt", segments=None, slots=None, budget=None) -> Schedule:
    """The Schedule ``checkpoint_sequential`` would run (print it, or call ``.simulate()``).

    ``layers`` may be just their number for every strategy that needs no
    measurements: ``plan(64, strategy="revolve", slots=4)``.

    A measured strategy (``budget``) measures the chain on ``x`` once (sizes,
    FLOPs; ``costs.measure_chain``) and solves for the cheapest schedule within
    ``budget`` (bytes or a string like "64MB"). The plan is cached for the same
    layer objects (held by weak reference, so a recycled id never matches),
    training modes, input shape, dtype, device and budget. The budget covers
    what checkpointing controls: the activations (the input x_0 included),
    their gradients and the temporaries inside ops. Parameters, their gradients
    and optimizer state are the same under every schedule and are not part of
    it — only the gradient of the layer being reversed, while it is computed
    before being added to the one that exists.
    """
    entry = schedules.REGISTRY.get(strategy) if isinstance(strategy, str) else None
    measured = entry is not None and entry.measured
    if isinstance(layers, numbers.Number):  # a pure plan needs only the number of layers
        if measured:
            raise ScheduleError(f"strategy={strategy!r} measures the layers: pass the layers and an input x")
        return schedules.make(strategy, layers, segments=segments, slots=slots)
    layers = chain_layers(layers, "plan", callables=measured)  # a pure plan only counts them
    L = len(layers)
    if not measured:
        return schedules.make(strategy, L, segments=segments, slots=slots)
    if budget is None:
        raise ScheduleError(f"strategy={strategy!r} needs budget= (bytes, or a string like '64MB')")
    if not isinstance(x, Tensor):
        raise ScheduleError(f"strategy={strategy!r} measures the layers on an input: pass x (a Tensor)")
    limit = schedules.parse_bytes(budget)
    key = (strategy, L, tuple(getattr(layer, "training", None) for layer in layers), x.shape, str(x.dtype),
           str(x.device), limit)
    try:
        per_chain = _plans.setdefault(layers[0], {})
    except TypeError:                  # a layer that cannot be weakly referenced: no caching
        per_chain = {}
    hit = per_chain.get(key)
    if hit is not None and len(hit[0]) == L and all(r() is layer for r, layer in zip(hit[0], layers)):
        return hit[1]
    sched = schedules.make(strategy, L, costs=measure_chain(layers, x), budget=limit)
    try:
        refs = [weakref.ref(layer) for layer in layers]
    except TypeError:
        return sched
    if len(per_chain) > 16:
        per_chain.clear()
    per_chain[key] = (refs, sched)
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
    layers = chain_layers(layers, "checkpoint_sequential")
    if not layers:
        raise CheckpointError("checkpoint_sequential: the chain is empty; pass at least one layer")
    return run_schedule(layers, x, plan(layers, x, strategy, segments=segments, slots=slots, budget=budget),
                        store_dtype=store_dtype, offload=offload)
