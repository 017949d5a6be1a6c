"""Argument checks for constructors, factories and options: each failure names the argument and the fix.

They run where arguments enter (factories, layer and optimizer constructors,
rare paths), never per element, so the hot path pays nothing for them.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import ArgumentError, DTypeError, ShapeError


def dtype(value, where, arg="dtype", floating=False, why="") -> np.dtype:
    """``value`` as a NumPy dtype; with ``floating=True`` only float16/32/64 pass (``why`` says why)."""
    if value is None:   # np.dtype(None) would quietly mean float64
        raise DTypeError(f"{where}: {arg}=None is not a dtype; pass e.g. np.float32 or np.float64")
    try:
        dt = np.dtype(value)
    except (TypeError, ValueError):
        raise DTypeError(f"{where}: {arg}={value!r} is not a dtype; pass e.g. np.float32, np.float64 or "
                         "'float32'") from None
    if floating and dt.kind != "f":
        raise DTypeError(f"{where}: {arg} must be a floating dtype{f' ({why})' if why else ''}, got {dt}; "
                         "pass np.float32 or np.float64")
    return dt


def integer(value, where, arg, minimum=None) -> int:
    """``value`` as an int (bool and float refused), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        example = max(minimum or 0, 1)
        if isinstance(value, float) and math.isfinite(value):
            example = max(int(value), example)
        raise ArgumentError(f"{where}: {arg} must be an integer, got {value!r} ({type(value).__name__}); "
                            f"pass a whole number, e.g. {arg}={example}")
    if minimum is not None and value < minimum:
        raise ArgumentError(f"{where}: {arg} must be >= {minimum}, got {value}")
    return int(value)


def real(value, where, arg, low=None, high=None, low_open=False, high_open=False) -> float:
    """``value`` as a finite float inside [low, high] (an end excluded when ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{where}: {arg} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    lo_bad = low is not None and (v <= low if low_open else v < low)
    hi_bad = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or lo_bad or hi_bad:
        span = (f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
                f"{'inf' if high is None else high}{')' if high_open or high is None else ']'}")
        raise ArgumentError(f"{where}: {arg} must be a finite number in {span}, got {value!r}")
    return v


_MAX_DIM = np.iinfo(np.intp).max


def shape(dims, where) -> tuple:
    """A shape given as ``(2, 3)`` or as ``2, 3``: non-negative ints whose product fits in memory indexing."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:
            raise ShapeError(f"{where}: a shape holds non-negative integers, got {tuple(dims)!r}; "
                             "write e.g. (2, 3)")
    if math.prod(int(d) for d in dims) > _MAX_DIM:
        raise ShapeError(f"{where}: shape {tuple(dims)} has more elements than an array can index "
                         f"({_MAX_DIM}); use a smaller shape")
    return tuple(int(d) for d in dims)
