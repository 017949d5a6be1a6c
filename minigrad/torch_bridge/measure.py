"""Costs of a PyTorch chain in minigrad's terms, and a meter of the bytes a run holds for backward.

Bytes are counted per storage, as PyTorch allocates them: two tensors that
share a storage (a ReLU's saved output and the next layer's input) count once.
Parameters and buffers are not activations and never count.
"""
from __future__ import annotations

import weakref

import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.utils.flop_counter import FlopCounterMode

from . import planning
from .state import cuda_devices, preserved


def storage(t):
    """(key, bytes) of the storage behind tensor ``t``."""
    s = t.untyped_storage()
    return (t.device, s.data_ptr()), s.nbytes()


def state_keys(modules) -> set:
    """Storage keys of every parameter and buffer of ``modules`` (never counted as activations)."""
    keys = set()
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            keys.add(storage(t)[0])
    return keys


def layer_params(modules):
    """Per layer, its parameters that need gradients (each listed once per layer)."""
    out = []
    for m in modules:
        seen, ps = set(), []
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                ps.append(p)
        out.append(ps)
    return out


def measure(modules, x):
    """Run each layer once, recording, and measure what the planner needs (``ChainCosts``, lists index 0..L).

    Sizes of x_0..x_L and each layer's extra saved bytes (what it saves for
    backward beyond its input and output) come from saved-tensor hooks, forward
    FLOPs from ``FlopCounterMode``, parameter-gradient bytes from the parameters
    (a shared one counted at the last layer using it: backward reaches it first).
    Random generators and buffers (BatchNorm statistics) are left as they were.
    """
    modules = list(modules)
    skip = state_keys(modules)
    sizes, extras, flops = [storage(x)[1]], [0], [0]
    with preserved(modules, cuda_devices([x])):
        cur = x.detach()
        for layer in modules:
            packed = {}

            def pack(t):
                key, n = storage(t)
                packed[key] = n
                return t

            leaf = cur.detach().requires_grad_(True)
            with torch.enable_grad(), saved_tensors_hooks(pack, lambda t: t), \
                    FlopCounterMode(display=False) as counter:
                y = layer(leaf)
            mine = {storage(leaf)[0], storage(y)[0]} | skip
            sizes.append(storage(y)[1])
            extras.append(sum(n for k, n in packed.items() if k not in mine))
            flops.append(int(counter.get_total_flops()))
            cur = y.detach()
            del y, leaf, packed
    params, seen = [0] * (len(modules) + 1), set()
    for i in range(len(modules), 0, -1):
        for p in layer_params(modules[i - 1:i])[0]:
            if id(p) not in seen:
                seen.add(id(p))
                params[i] += p.numel() * p.element_size()
    return planning.chain_costs(sizes, extras, flops, params)


class _Packed:
    """What a saved-tensor hook stores: the tensor, in an object whose death the meter sees."""

    __slots__ = ("t", "__weakref__")

    def __init__(self, t):
        self.t = t


class Meter:
    """Live and peak bytes held for backward during a run: the executor's activations and the graph's saved tensors.

    An object is counted from the moment it is handed to ``hold`` (or saved by
    an op, through ``hooks()``) until Python frees it, so the figures are what
    was really alive, not what the plan says. Storages of the modules'
    parameters and buffers are left out.
    """

    def __init__(self, modules=()):
        self.skip = state_keys(list(modules))
        self.refs = {}          # storage key -> [bytes, live objects]
        self.live = self.peak = 0
        self.saved = 0          # tensors saved by ops through the hooks

    def hold(self, t, owner=None):
        """Count ``t``'s storage while ``owner`` (default: ``t`` itself) is alive; returns ``t``."""
        key, n = storage(t)
        if n == 0 or key in self.skip:
            return t
        entry = self.refs.get(key)
        if entry is None:
            self.refs[key] = [n, 1]
            self.live += n
            self.peak = max(self.peak, self.live)
        else:
            entry[1] += 1
        weakref.finalize(t if owner is None else owner, self._release, key)
        return t

    def _release(self, key):
        entry = self.refs[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self.refs[key]
            self.live -= entry[0]

    def _pack(self, t):
        self.saved += 1
        box = _Packed(t)
        self.hold(t, box)
        return box

    def hooks(self):
        """Saved-tensor hooks that count what ops save, for as long as the graph keeps it."""
        return saved_tensors_hooks(self._pack, lambda box: box.t)
