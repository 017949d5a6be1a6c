"""Random numbers: one generator per device, whose whole state is two integers.

The state is ``(seed, counter)``: each draw uses a fresh stream keyed by both
(NumPy's SeedSequence on the CPU, the same key on CuPy) and then bumps the
counter. Capturing and restoring state is therefore free, which is what
checkpointing needs to replay dropout masks exactly during recompute.
"""
from __future__ import annotations

import numbers

import numpy as np

from .backend import CPU, Device, device as _device
from .errors import ArgumentError

_DEFAULT_SEED = 0


class Generator:
    """The random source of one device: ``uniform``, ``normal``, ``get_state``/``set_state``."""

    def __init__(self, dev: Device, seed: int = _DEFAULT_SEED):
        self.device = dev
        self.seed = int(seed)
        self.counter = 0

    def get_state(self) -> tuple:
        """The full state, to hand back to ``set_state`` later."""
        return (self.seed, self.counter)

    def set_state(self, state: tuple):
        """Rewind or advance to a state from ``get_state``."""
        self.seed, self.counter = int(state[0]), int(state[1])

    def manual_seed(self, seed: int):
        """Restart the stream from ``seed``."""
        self.seed, self.counter = int(seed), 0

    def _stream(self):
        key = (self.seed, self.counter)
        self.counter += 1
        if self.device.type == "cpu":
            return np.random.default_rng(key)
        cp = self.device.xp
        with cp.cuda.Device(self.device.index or 0):
            # CuPy seeds take one integer; fold the pair into 63 bits.
            folded = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0]) >> 1
            return cp.random.default_rng(folded)

    def uniform(self, shape, dtype, low=0.0, high=1.0):
        """Uniform [low, high) samples of ``dtype`` on this generator's device."""
        rng = self._stream()
        out = rng.random(shape, dtype=np.float64 if np.dtype(dtype) != np.float32 else np.float32)
        if low != 0.0 or high != 1.0:
            out = out * (high - low) + low
        return out.astype(dtype, copy=False)

    def normal(self, shape, dtype):
        """Standard normal samples of ``dtype`` on this generator's device."""
        rng = self._stream()
        use = np.float32 if np.dtype(dtype) == np.float32 else np.float64
        return rng.standard_normal(shape, dtype=use).astype(dtype, copy=False)


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
