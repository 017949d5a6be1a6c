"""Random numbers: one generator per device, whose whole state is two integers.

The state is ``(seed, counter)``: each draw uses a fresh stream keyed by both
and then bumps the counter. Capturing and restoring state is therefore free,
which is what checkpointing needs to replay dropout masks exactly during
recompute. On the CPU the stream is NumPy's ``default_rng`` seeded by the pair;
on CuPy it is a counter-based hash computed by one kernel, whose key can also
come from device memory, so a replayed CUDA graph draws fresh numbers each
time (Note [Random numbers on the device] in ``minigrad.kernels``).
"""
from __future__ import annotations

import numbers

import numpy as np

from . import kernels
from .backend import CPU, Device, device as _device
from .errors import ArgumentError

_DEFAULT_SEED = 0


class Generator:
    """The random source of one device: ``uniform``, ``normal``, ``get_state``/``set_state``."""

    def __init__(self, dev: Device, seed: int = _DEFAULT_SEED):
        self.device = dev
        self.seed = int(seed)
        self.counter = 0
        self.device_state = None   # the (seed delta, counter offset) array a captured graph reads
        self._zero_state = None    # the one every eager CuPy draw reads: zeros

    def get_state(self) -> tuple:
        """The full state, to hand back to ``set_state`` later."""
        return (self.seed, self.counter)

    def set_state(self, state: tuple):
        """Rewind or advance to a state from ``get_state``."""
        self.seed, self.counter = int(state[0]), int(state[1])

    def manual_seed(self, seed: int):
        """Restart the stream from ``seed``."""
        self.seed, self.counter = int(seed), 0

    def _cuda_draw(self, fn, shape, dtype):
        cp = self.device.xp
        with cp.cuda.Device(self.device.index or 0):
            state = self.device_state
            if state is None:
                if self._zero_state is None:
                    self._zero_state = cp.zeros(2, np.int64)
                state = self._zero_state
            out = fn(cp, shape, dtype, self.seed, self.counter, state)
        self.counter += 1
        return out

    def _draw(self, kind, shape, dtype):
        """``kind`` ("uniform" or "normal") samples, float32 for float32 and float64 otherwise."""
        if self.device.type != "cpu":
            return self._cuda_draw(kernels.device_uniform if kind == "uniform" else kernels.device_normal,
                                   shape, dtype)
        rng = np.random.default_rng((self.seed, self.counter))
        self.counter += 1
        draw = rng.random if kind == "uniform" else rng.standard_normal
        return draw(shape, dtype=np.float32 if np.dtype(dtype) == np.float32 else np.float64)

    def uniform(self, shape, dtype, low=0.0, high=1.0):
        """Uniform [low, high) samples of ``dtype`` on this generator's device."""
        out = self._draw("uniform", shape, dtype)
        if low != 0.0 or high != 1.0:
            out = out * (high - low) + low
        return out.astype(dtype, copy=False)

    def normal(self, shape, dtype):
        """Standard normal samples of ``dtype`` on this generator's device."""
        return self._draw("normal", shape, dtype).astype(dtype, copy=False)


_generators: dict = {}
_seed = [_DEFAULT_SEED]


def generator(dev=CPU) -> Generator:
    """The generator of device ``dev`` (created on first use from the global seed)."""
    dev = _device(dev)
    gen = _generators.get(dev)
    if gen is None:
        gen = _generators[dev] = Generator(dev, _seed[0])
    return gen


def manual_seed(seed: int):
    """Seed every device's generator (present and future) with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ArgumentError(f"manual_seed: seed must be a non-negative integer, got {seed!r}; pass e.g. "
                            "manual_seed(0)")
    _seed[0] = int(seed)
    for gen in _generators.values():
        gen.manual_seed(seed)


def get_rng_state(devices=None) -> dict:
    """``{device: state}`` for the given devices (default: every generator in use)."""
    devs = _generators.keys() if devices is None else [_device(d) for d in devices]
    return {d: generator(d).get_state() for d in devs}


def set_rng_state(states: dict):
    """Restore the states returned by ``get_rng_state``."""
    for dev, state in states.items():
        generator(dev).set_state(state)
