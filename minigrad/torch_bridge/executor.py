"""Run a minigrad schedule on a chain of PyTorch modules, as one ``torch.autograd.Function``.

The forward pass runs the schedule's first sweep; the Function's backward runs
the rest, action by action, as minigrad's own executor does
(``minigrad/checkpoint/executor.py``): ``restore`` a slot, ``advance`` without
recording, ``record`` a layer (from a fresh leaf, or from the output of the
layer recorded just before it, so a run of them is one graph), ``reverse`` it
with ``torch.autograd.grad`` (a run in one call). A layer re-run in backward
gets back the generator states it saw first (dropout replays its mask) and runs
on copies of its buffers (BatchNorm statistics move once per real forward). Parameter
gradients are returned by the Function, so they reach ``.grad`` through
PyTorch's engine once each, where DistributedDataParallel's hooks expect them;
layers sharded by FSDP (``fully_shard``) have their parameters gathered only
while they run, so their gradients are accumulated by the engine inside
backward instead, where FSDP's own hooks reduce-scatter them.
"""
from __future__ import annotations

import contextlib
import sys
import weakref

import torch

from ..errors import CheckpointError, DeviceError
from . import planning
from .measure import layer_params, measure
from .planning import OP
from .state import cuda_devices, get_rng, same_rng, set_rng, swapped_buffers


def is_sharded(module) -> bool:
    """Does FSDP (``fully_shard``) manage parameters inside ``module``? They are gathered only while it runs."""
    fsdp = getattr(sys.modules.get("torch.distributed.fsdp"), "FSDPModule", None)   # imported by its users
    return fsdp is not None and any(isinstance(m, fsdp) for m in module.modules())


def _name(modules, i):
    return f"layer {i} ({type(modules[i - 1]).__name__})"


def check_chain(modules, x) -> list:
    """The chain as a list, after checking it is one of PyTorch modules on ``x``'s device."""
    if isinstance(modules, torch.nn.Module) and not isinstance(modules, (torch.nn.Sequential, torch.nn.ModuleList)):
        modules = [modules]
    try:
        modules = list(modules)
    except TypeError:
        raise CheckpointError(f"{OP}: expected a list or torch.nn.Sequential of torch modules, got "
                              f"{type(modules).__name__}") from None
    if not modules:
        raise CheckpointError(f"{OP}: the chain is empty; pass at least one torch.nn.Module")
    for i, m in enumerate(modules, 1):
        if not isinstance(m, torch.nn.Module):
            hint = ("it is a minigrad module: use minigrad.checkpoint.checkpoint_sequential for minigrad layers"
                    if type(m).__module__.startswith("minigrad") else "wrap the callable in a torch.nn.Module")
            raise CheckpointError(f"{OP}: layer {i} is a {type(m).__module__}.{type(m).__name__}, not a "
                                  f"torch.nn.Module; {hint}")
    if not isinstance(x, torch.Tensor):
        raise CheckpointError(f"{OP}: the input must be a torch.Tensor, got {type(x).__name__}")
    for i, m in enumerate(modules, 1):
        for kind, named in (("parameter", m.named_parameters()), ("buffer", m.named_buffers())):
            for name, t in named:
                if t.device != x.device:
                    raise DeviceError(
                        f"{OP}: {_name(modules, i)} has {kind} {name!r} of shape {tuple(t.shape)} on {t.device} "
                        f"but the input of shape {tuple(x.shape)} is on {x.device}; move them to one device "
                        f"(model.to({str(x.device)!r}) or x.to({str(t.device)!r}))")
    return modules


class _Run:
    """One schedule being executed: slots, the current activation, recorded layers, first-sweep RNG states."""

    def __init__(self, modules, schedule, x, meter=None):
        self.modules, self.schedule, self.meter = modules, schedule, meter
        self.sharded = [is_sharded(m) for m in modules]
        self.stateful = [next(m.buffers(), None) is not None for m in modules]   # buffers to keep on recompute
        self.params = [[] if sh else ps for sh, ps in zip(self.sharded, layer_params(modules))]
        self.flat = list({id(p): p for ps in self.params for p in ps}.values())
        self.index = {id(p): n for n, p in enumerate(self.flat)}
        self.devices = cuda_devices([x] + self.flat)
        self.x_requires_grad = x.requires_grad
        x0 = self._hold(x.detach())
        self.slots, self.cur = {0: x0}, x0
        self.records = []                  # [i, input, output, done], innermost last
        L = len(modules)
        self.rng, self.meta = [None] * (L + 1), [None] * (L + 1)
        self.grads = [None] * len(self.flat)

    def _hold(self, t):
        return self.meter.hold(t) if self.meter is not None else t

    def run_layer(self, i, record, first_sweep):
        """Run layer i from the current activation, recording or not; x_i becomes current."""
        layer = self.modules[i - 1]
        if first_sweep:
            state = get_rng(self.devices)
            self.rng[i] = self.rng[i - 1] if same_rng(state, self.rng[i - 1]) else state
        else:
            set_rng(self.rng[i], self.devices)
        with contextlib.ExitStack() as stack:
            if not first_sweep and self.stateful[i - 1]:
                stack.enter_context(swapped_buffers(layer, self.meter.skip if self.meter is not None else None))
            if record:
                # Layers recorded one after another form one graph (reversed by one engine call);
                # otherwise the layer starts from a fresh leaf.
                chained = (bool(self.records) and self.records[-1][0] == i - 1 and self.records[-1][2] is self.cur
                           and self.cur.requires_grad)
                need = self.x_requires_grad if i == 1 else True
                x = self.cur if chained else self._hold(self.cur.detach().requires_grad_(need))
                stack.enter_context(torch.enable_grad())
                if self.meter is not None:
                    stack.enter_context(self.meter.hooks())
            else:
                x = self.cur
                stack.enter_context(torch.no_grad())
            version = x._version
            try:
                # A recorded layer gets a view of its leaf: tools that hook module inputs (FlopCounterMode's
                # module tracker) may not hook a leaf that ``torch.autograd.grad`` differentiates to.
                y = layer(x.view_as(x) if record and x.requires_grad and x.grad_fn is None else x)
            except RuntimeError as exc:
                if "in-place" not in str(exc):
                    raise
                raise self._inplace(i) from exc
            if x._version != version:
                raise self._inplace(i)
        if not isinstance(y, torch.Tensor):
            raise CheckpointError(f"{OP}: {_name(self.modules, i)} returned {type(y).__name__}; every layer "
                                  "must return one tensor")
        meta = (tuple(y.shape), y.dtype)
        if first_sweep:
            self.meta[i] = meta
        elif meta != self.meta[i]:
            raise CheckpointError(f"{OP}: {_name(self.modules, i)} gave shape {meta[0]} and {meta[1]} when "
                                  f"recomputed, but {self.meta[i][0]} and {self.meta[i][1]} in the forward pass; "
                                  "a checkpointed layer must compute the same thing every time it runs")
        if record:
            self.records.append([i, x, y, False])
        del x
        self.cur = self._hold(y)

    def _inplace(self, i):
        return CheckpointError(
            f"{OP}: {_name(self.modules, i)} changed its input in place; the input may be a stored activation "
            "that later recomputation starts from. Use inplace=False there, or put the in-place op inside "
            "the previous layer (nn.Sequential(nn.Linear(...), nn.ReLU(inplace=True)) as one layer)")

    def step(self, action, first_sweep):
        kind, i = action.kind, action.i
        if kind in ("advance", "record"):
            self.run_layer(i, kind == "record", first_sweep)
        elif kind == "keep":
            self.slots[i] = self.cur
        elif kind == "restore":
            self.cur = self.slots[i]
        elif kind == "drop":
            self.slots.pop(i, None)
        else:
            raise CheckpointError(f"{OP}: cannot run action {action} in the forward pass")

    def forward(self):
        for action in self.schedule.forward_actions():
            self.step(action, first_sweep=True)
        return self.cur.detach()

    def reverse(self, i, g):
        """Backpropagate ``g`` through recorded layer i and those recorded just before it in one graph.

        Returns the gradient of that run's input; the run's parameter gradients add up in
        ``self.grads``. The run's lower layers are then reversed already: their actions only let go
        of their input and output.
        """
        j, x, y, done = self.records.pop()
        assert j == i, (j, i)
        self.cur = None
        if done:
            return g
        start = len(self.records)             # the run: records[start:] and this one
        while x.grad_fn is not None and start > 0 and self.records[start - 1][2] is x:
            start -= 1
            x = self.records[start][1]
            self.records[start][3] = True
        first = self.records[start][0] if start < len(self.records) else i
        if not y.requires_grad:
            return None
        if any(self.sharded[first - 1:i]):
            # FSDP gathers these layers' parameters itself: let PyTorch's engine accumulate into them,
            # where FSDP's hooks reduce-scatter the gradients.
            torch.autograd.backward(y, g)
            gx = x.grad
        else:
            ps = list({id(p): p for k in range(first, i + 1) for p in self.params[k - 1]}.values())
            inputs = ([x] if x.requires_grad else []) + ps
            grads = torch.autograd.grad(y, inputs, g, allow_unused=True) if inputs else ()
            gx = grads[0] if x.requires_grad else None
            for p, gp in zip(ps, grads[len(inputs) - len(ps):]):
                if gp is not None:
                    n = self.index[id(p)]
                    self.grads[n] = gp if self.grads[n] is None else self.grads[n] + gp
        if gx is None and first > 1:
            raise CheckpointError(f"{OP}: no gradient reached the input of {_name(self.modules, first)}")
        return gx

    def backward(self, g):
        """The rest of the schedule; returns the input's gradient (the parameters' are in ``self.grads``)."""
        # Recompute replays the first sweep's generator states; the caller's are put back afterwards.
        with torch.random.fork_rng(devices=self.devices):
            for action in self.schedule.backward_actions():
                if action.kind == "reverse":
                    g = self.reverse(action.i, g)
                else:
                    self.step(action, first_sweep=False)
        self.slots.clear()
        return g


class _Chain(torch.autograd.Function):
    """The node standing for the whole chain; its backward runs the rest of the schedule."""

    @staticmethod
    def forward(ctx, run, x, *params):   # params: those whose gradients backward returns (and a marker)
        ctx.run = run
        return run.forward()

    @staticmethod
    def backward(ctx, g):
        run, ctx.run = ctx.run, None
        if run is None:
            raise CheckpointError(f"{OP}: backward ran twice through one checkpointed chain; run the forward "
                                  "again (retain_graph=True is not supported here)")
        gx = run.backward(g)
        return (None, gx if run.x_requires_grad else None, *run.grads, None)


def run_schedule(modules, x, schedule, meter=None):
    """Run PyTorch ``modules`` on ``x`` under a minigrad ``schedule``; backward follows the schedule too.

    ``meter`` (a ``Meter``) counts the bytes the run holds for backward.
    """
    return _run(check_chain(modules, x), x, schedule, meter)


def _run(modules, x, schedule, meter=None):
    if schedule.L != len(modules):
        raise CheckpointError(f"{OP}: the schedule is for {schedule.L} layers but the chain has {len(modules)}")
    run = _Run(modules, schedule, x, meter)
    if not torch.is_grad_enabled() or not (x.requires_grad or run.flat or any(run.sharded)):
        with torch.no_grad():
            for m in modules:
                x = m(x)
        return x
    # The marker requires grad, so the output does even when only FSDP-managed parameters need gradients.
    return _Chain.apply(run, x, *run.flat, torch.empty(0, device=x.device, requires_grad=True))


_plans = weakref.WeakKeyDictionary()   # first module -> {key: (weak refs to every module, schedule)}


def checkpoint_sequential(modules, x, strategy="sqrt", budget=None, slots=None, segments=None):
    """Run a chain of PyTorch modules under a minigrad checkpointing strategy.

    ``strategy``: "none" | "sqrt" (default; ``segments=k`` for k uniform
    segments) | "recursive" | "revolve" (``slots=s``, the input counted) |
    "budget" (``budget=`` bytes or "64MB": the chain is measured once on ``x``
    and the plan cached for the same modules, input shape and budget; the
    modules are held by weak reference, so a recycled id never matches).
    """
    modules = check_chain(modules, x)
    if strategy != "budget":
        schedule = planning.make(len(modules), strategy, segments=segments, slots=slots)
    else:
        schedule = _cached_plan(modules, x, strategy, budget)
    return _run(modules, x, schedule)


def _cached_plan(modules, x, strategy, budget):
    """The budget plan for these very modules (same objects, modes), input shape, dtype, device and budget."""
    L = len(modules)
    key = (L, tuple(m.training for m in modules), tuple(x.shape), x.dtype, x.device, budget)
    try:
        per_chain = _plans.setdefault(modules[0], {})
    except TypeError:                  # a module that cannot be weakly referenced or hashed: no caching
        per_chain = {}
    hit = per_chain.get(key)
    if hit is not None and all(r() is m for r, m in zip(hit[0], modules)):
        return hit[1]
    schedule = planning.make(L, strategy, measure(modules, x), budget=budget)
    if len(per_chain) > 16:
        per_chain.clear()
    per_chain[key] = ([weakref.ref(m) for m in modules], schedule)
    return schedule
