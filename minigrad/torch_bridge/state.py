"""What a re-run of a layer must not change: random-generator states and module buffers."""
from __future__ import annotations

import contextlib

import torch


def cuda_devices(tensors) -> list:
    """Indices of the CUDA devices these tensors live on (their generators are captured too)."""
    return sorted({t.device.index for t in tensors if t.is_cuda})


def get_rng(devices):
    """The CPU generator state and that of each listed CUDA device."""
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def set_rng(state, devices):
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for d, s in zip(devices, cuda):
        torch.cuda.set_rng_state(s, d)


def same_rng(a, b) -> bool:
    return b is not None and torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


@contextlib.contextmanager
def swapped_buffers(module, skip=None):
    """Run ``module`` on copies of its buffers, so a recompute leaves BatchNorm's running statistics alone.

    PyTorch's own checkpoint lets a recomputed BatchNorm update its running
    statistics a second time; a recompute is not a real forward. The copies
    are what the recorded graph saves (BatchNorm saves its running statistics),
    so the originals are never written to and their version counters stay put.
    ``skip``, a set of storage keys, receives the copies' while they are in use.
    """
    swapped = []
    for m in module.modules():
        for name, b in list(m._buffers.items()):
            if b is not None:
                copy = b.clone()
                swapped.append((m, name, b, copy))
                m._buffers[name] = copy
    keys = [(c.device, c.untyped_storage().data_ptr()) for *_, c in swapped]
    if skip is not None:
        skip.update(keys)
    try:
        yield
    finally:
        for m, name, b, _ in swapped:
            m._buffers[name] = b
        if skip is not None:
            skip.difference_update(keys)


@contextlib.contextmanager
def frozen_buffers(module):
    """Put every buffer of ``module`` back as it was on leaving (for a measurement whose graph is discarded)."""
    saved = [(b, b.clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


@contextlib.contextmanager
def preserved(modules, devices):
    """Run a measurement that leaves RNG states and every buffer of ``modules`` as they were."""
    rng = get_rng(devices)
    with contextlib.ExitStack() as stack:
        for m in modules:
            stack.enter_context(frozen_buffers(m))
        try:
            yield
        finally:
            set_rng(rng, devices)
