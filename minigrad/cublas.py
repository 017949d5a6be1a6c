"""2-D matrix products on CuPy arrays through minigrad's own cuBLAS handle (so CUDA graphs can hold them).

CuPy refuses every cuBLAS call while a stream is being captured into a CUDA
graph (its ``cublas.setStream`` raises NotImplementedError). cuBLAS itself can
be captured once its handle has a workspace of its own, so no allocation
happens during capture (cuBLAS's guide, "CUDA Graphs support"; PyTorch does the
same). This module keeps one handle and one 32 MiB workspace per device and
thread, and calls ``cublasGemmEx`` through ctypes for 2-D float32/float64
products, eager or captured alike, so a captured step replays exactly the
kernels the eager step ran.

Note [Row-major products on a column-major BLAS]
cuBLAS reads matrices column-major. A row-major m×k matrix with row stride ld
is, read column-major, its transpose (k×m, leading dimension ld). So
C = A·B (row-major, m×n) is computed as Cᵀ = Bᵀ·Aᵀ: cuBLAS gets B first, A
second, sizes (n, m, k), and each operand untransposed when it is row-major
(unit column stride), transposed when it is column-major (unit row stride), as
``x.T`` views are. Operands with neither layout are copied first.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from .errors import DeviceError

_OP_N, _OP_T = 0, 1
_TYPES = {np.dtype(np.float32): (0, 68, ctypes.c_float),      # CUDA_R_32F, CUBLAS_COMPUTE_32F
          np.dtype(np.float64): (1, 70, ctypes.c_double)}     # CUDA_R_64F, CUBLAS_COMPUTE_64F
_GEMM_DEFAULT = -1
_WORKSPACE = 32 << 20
_lib = []
_local = threading.local()


def _library():
    """libcublas as CuPy loaded it (found through the process's mapped libraries)."""
    if not _lib:
        import cupy  # noqa: PLC0415
        cupy.cuda.Device().cublas_handle           # makes CuPy load libcublas if it has not yet
        paths = []
        try:
            maps = Path("/proc/self/maps").read_text().splitlines()
            paths = sorted({ln.split()[-1] for ln in maps if "/libcublas.so" in ln})
        except OSError:
            pass
        errors = []
        for name in paths + ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"]:
            try:
                lib = ctypes.CDLL(name)
                lib.cublasGemmEx  # noqa: B018 - the symbol must be there
                break
            except (OSError, AttributeError) as exc:
                errors.append(f"{name}: {exc}")
        else:
            raise DeviceError("minigrad could not load cuBLAS for its matrix products (" + "; ".join(errors) + "); "
                              "check that CuPy's CUDA libraries are installed (python -m pip install \".[cuda13]\")")
        vp, i = ctypes.c_void_p, ctypes.c_int
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
        lib.cublasSetStream_v2.argtypes = [vp, vp]
        lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
        lib.cublasGemmEx.argtypes = [vp, i, i, i, i, i, vp, vp, i, i, vp, i, i, vp, vp, i, i, i, i]
        for f in (lib.cublasCreate_v2, lib.cublasSetStream_v2, lib.cublasSetWorkspace_v2, lib.cublasGemmEx):
            f.restype = i
        _lib.append(lib)
    return _lib[0]


def _check(status, what):
    if status != 0:
        raise DeviceError(f"cuBLAS {what} failed with status {status} (cublasStatus_t); the device may be out of "
                          "memory or in an error state")


def _handle(cp):
    """(handle, workspace) of this thread on the current device, created on first use."""
    dev = cp.cuda.Device().id
    handles = getattr(_local, "handles", None)
    if handles is None:
        handles = _local.handles = {}
    found = handles.get(dev)
    if found is None:
        lib = _library()
        h = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(h)), "cublasCreate")
        found = handles[dev] = (h, cp.empty(_WORKSPACE, np.uint8))
    return found


def _layout(x):
    """(operation, leading dimension) of a row-major 2-D view for cuBLAS, or None when it needs a copy."""
    r, c = x.shape
    s0, s1 = (s // x.itemsize for s in x.strides)
    if (r > 1 and s0 <= 0) or (c > 1 and s1 <= 0):     # broadcast or reversed views
        return None
    if (c == 1 or s1 == 1) and (r == 1 or s0 >= c):
        return _OP_N, max(s0 if r > 1 else c, 1)
    if (r == 1 or s0 == 1) and (c == 1 or s1 >= r):
        return _OP_T, max(s1 if c > 1 else r, 1)
    return None


DTYPES = tuple(_TYPES)       # the dtypes these products take


def supported(a, b) -> bool:
    """True when ``matmul(a, b)`` takes this module's path: 2-D, one float32/float64 dtype, no empty side."""
    return (a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.dtype in _TYPES
            and a.shape[1] == b.shape[0] and 0 not in a.shape and 0 not in b.shape)


_ONE = {k: v[2](1.0) for k, v in _TYPES.items()}
_ZERO = {k: v[2](0.0) for k, v in _TYPES.items()}


def matmul(a, b):
    """``a @ b`` for 2-D CuPy arrays of one float dtype, on the current stream (see ``supported``)."""
    import cupy as cp  # noqa: PLC0415
    la, lb = _layout(a), _layout(b)
    if la is None:
        a, la = cp.ascontiguousarray(a), (_OP_N, a.shape[1])
    if lb is None:
        b, lb = cp.ascontiguousarray(b), (_OP_N, b.shape[1])
    m, k = a.shape
    n = b.shape[1]
    out = cp.empty((m, n), a.dtype)
    cuda_type, compute, _ = _TYPES[a.dtype]
    lib = _library()
    h, ws = _handle(cp)
    _check(lib.cublasSetStream_v2(h, cp.cuda.get_current_stream().ptr), "cublasSetStream")
    _check(lib.cublasSetWorkspace_v2(h, ws.data.ptr, _WORKSPACE), "cublasSetWorkspace")
    _check(lib.cublasGemmEx(h, lb[0], la[0], n, m, k, ctypes.byref(_ONE[a.dtype]), b.data.ptr, cuda_type, lb[1],
                            a.data.ptr, cuda_type, la[1], ctypes.byref(_ZERO[a.dtype]), out.data.ptr, cuda_type, n,
                            compute, _GEMM_DEFAULT), f"cublasGemmEx ({m}x{k} @ {k}x{n}, {a.dtype})")
    return out
