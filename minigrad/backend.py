"""Devices: "cpu" runs on NumPy, "cuda" / "cuda:N" on CuPy (imported only when asked for).

Ops never branch on the device: they call ``xp_of(array)`` and use whatever
array module it returns, the way DeZero's ``get_array_module`` does.
"""
from __future__ import annotations

import numpy as np

from .errors import DeviceError

_cupy = None          # the cupy module once imported
_cupy_error = None    # why importing it failed, for the error message


def _import_cupy():
    """Import CuPy on first use; remember a failure so we explain it once, clearly."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy  # noqa: PLC0415 - deliberately lazy
            _cupy = cupy
        except Exception as exc:  # ImportError, or a CUDA library that fails to load
            _cupy_error = exc
    return _cupy


_cuda_ok = []   # cached answer of cuda_available()


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (asked once, then remembered)."""
    if not _cuda_ok:
        cp = _import_cupy()
        try:
            _cuda_ok.append(cp is not None and cp.cuda.runtime.getDeviceCount() > 0)
        except Exception:
            _cuda_ok.append(False)
    return _cuda_ok[0]


class Device:
    """A place where arrays live: ``Device("cpu")`` or ``Device("cuda:0")``.

    Compares equal to its name, so ``x.device == "cpu"`` reads naturally.
    """

    __slots__ = ("type", "index")

    def __init__(self, type: str, index: int | None = None):
        self.type = type
        self.index = index

    @property
    def xp(self):
        """The array module for this device: numpy or cupy."""
        return np if self.type == "cpu" else _import_cupy()

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    __repr__ = __str__

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except DeviceError:
                return False
        if not isinstance(other, Device):
            return NotImplemented
        return self.type == other.type and (self.index or 0) == (other.index or 0)

    def __hash__(self):
        return hash((self.type, self.index or 0))


CPU = Device("cpu")
_devices: dict = {"cpu": CPU, None: CPU}


def device(spec) -> Device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a Device into a Device, checking CUDA is usable."""
    if isinstance(spec, Device):
        return spec
    if not (spec is None or isinstance(spec, str)):
        raise DeviceError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {spec!r} ({type(spec).__name__})")
    found = _devices.get(spec)
    if found is not None:
        return found
    if not isinstance(spec, str):
        raise DeviceError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {spec!r} ({type(spec).__name__})")
    name, _, idx = spec.partition(":")
    if name != "cuda" or (idx and not idx.isdigit()):
        raise DeviceError(f"unknown device {spec!r}: use 'cpu', 'cuda' or 'cuda:N'")
    cp = _import_cupy()
    if cp is None:
        raise DeviceError(
            f"device {spec!r} needs CuPy, which could not be imported ({_cupy_error}). "
            "Install the GPU extra from a clone of the repository (python -m pip install \".[cuda12]\" "
            "for CUDA 12.x, \".[cuda13]\" for 13.x), or use device='cpu'.")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise DeviceError(f"device {spec!r}: CuPy is installed but no CUDA device is usable ({exc}); "
                          "use device='cpu'.") from None
    index = int(idx) if idx else 0
    if index >= count:
        raise DeviceError(f"device {spec!r}: only {count} CUDA device(s) present; use 'cuda:0'..'cuda:{count - 1}'")
    dev = Device("cuda", index)
    _devices[spec] = dev
    return dev


def device_of(array) -> Device:
    """The Device an array lives on."""
    if isinstance(array, np.ndarray):
        return CPU
    dev = getattr(array, "device", None)
    if dev is not None and _cupy is not None and isinstance(array, _cupy.ndarray):
        return device(f"cuda:{dev.id}")
    return CPU


def xp_of(array):
    """numpy for a NumPy array, cupy for a CuPy array."""
    if isinstance(array, np.ndarray) or _cupy is None:
        return np
    return _cupy.get_array_module(array)


def is_array(obj) -> bool:
    """True for a NumPy or CuPy ndarray."""
    return isinstance(obj, np.ndarray) or (_cupy is not None and isinstance(obj, _cupy.ndarray))


def to_device(array, dev: Device):
    """Copy ``array`` to ``dev`` (no copy when it is already there)."""
    dev = device(dev)
    if dev.type == "cpu":
        if isinstance(array, np.ndarray):
            return array
        return _cupy.asnumpy(array)
    cp = _import_cupy()
    with cp.cuda.Device(dev.index or 0):
        return cp.asarray(array)
