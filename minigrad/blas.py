"""The BLAS thread pool NumPy uses, set at run time (OpenBLAS, found through the loaded libraries).

Why: on a small shared machine a multi-threaded BLAS spins waiting for cores
that other work holds, and a step's time swings tenfold; timings that compare
strategies are steadier, and often faster, with one thread.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path

# (prefix, suffix) of the OpenBLAS builds NumPy ships or links: scipy-openblas (64-bit ints), system ones
_NAMES = (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", ""), ("scipy_openblas", ""))


def _openblas():
    """(get, set) functions of the OpenBLAS that NumPy loaded, or None where it is not found (not Linux)."""
    import numpy  # noqa: F401, PLC0415  (loads the BLAS)
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for path in sorted({ln.split()[-1] for ln in maps if "openblas" in ln.lower() and "/" in ln}):
        lib = ctypes.CDLL(path)
        for prefix, suffix in _NAMES:
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


@contextmanager
def blas_threads(n):
    """Run the block with NumPy's OpenBLAS limited to ``n`` threads (no effect where it is not found)."""
    found = _openblas()
    if found is None or n is None:
        yield
        return
    get, put = found
    before = get()
    put(int(n))
    try:
        yield
    finally:
        put(before)
