"""Fused elementwise kernels: one pass over memory on CuPy where NumPy takes several.

Each function here is the one implementation of a hot elementwise chain, for
both backends. On NumPy it is the plain expression the ops always used (the
CPU path is unchanged, bit for bit). On CuPy it is one ``ElementwiseKernel``
that reads each input once and writes each output once, instead of one kernel
launch and one temporary array per NumPy operator:

==========================  ==========================  ===========================
chain                       NumPy (kernels, temporaries)  CuPy fused
==========================  ==========================  ===========================
ReLU backward  g·[y>0]       compare, multiply (2, 2)      1 kernel, the output
tanh backward  g·(1-y²)      3 in place (3, 1)             1 kernel, the output
bias + ReLU / tanh           add in place, activation (2)  1 kernel, in place
SGD (momentum, decay)        up to 5                       1 kernel, in place
Adam                         about 12, 4 temporaries       1 kernel, in place
==========================  ==========================  ===========================

Note [Same numbers, fused or not]
A fused kernel computes exactly what the separate CuPy kernels compute, in the
same order, with the same rounding: every + - × ÷ is written as a
round-to-nearest intrinsic (``__fmul_rn`` and friends), which the compiler may
not contract into a fused multiply-add, while each separate CuPy kernel rounds
after its one operation. So a fused step is bit-identical to the same step with
fusion off (``with kernels.disabled():``), which is how the GPU tests check
them, and close to the CPU's (NumPy's ``tanh`` and ``exp`` are not CUDA's).

Note [Adam's step count on the device]
Adam's bias corrections depend on the step count t. Computed on the host, t
would be baked into a captured CUDA graph as a constant (``minigrad.cuda_graph``
replays the same launches, arguments included). So on CuPy the count lives in a
one-element device array that a kernel increments, and the update kernel
computes 1 − β₁ᵗ and 1 − β₂ᵗ itself in float64, then rounds to the parameter's
dtype as the host formula does (PyTorch's ``capturable=True`` Adam does the same).

Note [Random numbers on the device]
A CuPy draw is a counter-based hash: element i of a draw keyed by (seed,
counter) is SplitMix64's finaliser applied to the key plus (i+1)·γ, so a draw
needs no generator state on the device, only its key. The key is read partly
from a two-element device array ``state`` (a seed delta and a counter offset)
that is zero outside a captured graph; a captured graph's replay sets it before
launch, so each replay draws what the same eager step would have drawn
(``minigrad.capture``). On NumPy, draws are NumPy's ``default_rng`` as before.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import numpy as np

from . import cublas
from .backend import xp_of

_local = threading.local()


def enabled() -> bool:
    """True unless fusion was turned off in this thread with ``disabled()``."""
    return getattr(_local, "enabled", True)


@contextmanager
def disabled():
    """Run the separate CuPy kernels instead of the fused ones (for comparisons; NumPy is unaffected)."""
    before = enabled()
    _local.enabled = False
    try:
        yield
    finally:
        _local.enabled = before


_PREAMBLE = r"""
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif
__device__ inline float mg_add(float a, float b) { return __fadd_rn(a, b); }
__device__ inline double mg_add(double a, double b) { return __dadd_rn(a, b); }
__device__ inline float mg_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ inline double mg_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ inline float mg_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mg_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ inline float mg_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ inline double mg_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ inline unsigned long long mg_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
"""

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_NDARRAY = np.ndarray     # type(x) is _NDARRAY: the NumPy path, decided before anything else
_cache: dict = {}


def _kernel(name, in_params, out_params, body):
    """The named ElementwiseKernel, built once (CuPy compiles it on first use, per device)."""
    k = _cache.get(name)
    if k is None:
        import cupy  # noqa: PLC0415 - only reached with CuPy arrays
        k = _cache[name] = cupy.ElementwiseKernel(in_params, out_params, body, "minigrad_" + name,
                                                  preamble=_PREAMBLE)
    return k


# Note [Four floats at a time]
# An ElementwiseKernel moves one element per thread per loop turn and indexes
# broadcast operands with a division; on a large float32 array it reaches about
# half the memory bandwidth a 16-byte load per thread reaches (measured on an
# H200: ReLU backward 0.104 ms against PyTorch's 0.062 ms on 4096 x 4096).
# So the chains the training step runs on large arrays also exist as raw
# kernels that load and store float4: the same body, applied to each of the
# four components, for float32 arrays that are contiguous, 16-byte aligned and
# a multiple of 4 long (a bias: its length a multiple of 4). Same arithmetic,
# same bits; anything else takes the ElementwiseKernel.

_vcache: dict = {}


def _vector_kernel(name, params, body):
    """A RawKernel applying ``body`` to four float32 elements per thread; ``params`` are (kind, name) pairs
    with kind "in", "inout", "out", "bias" (indexed by column) or a scalar C type."""
    k = _vcache.get(name)
    if k is None:
        import cupy  # noqa: PLC0415
        decl, load, store = [], [], []
        for kind, var in params:
            if kind in ("in", "bias"):
                decl.append(f"const float* __restrict__ {var}_")
                idx = "i % cols4" if kind == "bias" else "i"
                load.append(f"const float4 v_{var} = reinterpret_cast<const float4*>({var}_)[{idx}];")
            elif kind in ("inout", "out"):
                decl.append(f"float* __restrict__ {var}_")
                load.append(f"float4 v_{var}" + (f" = reinterpret_cast<const float4*>({var}_)[i];" if kind == "inout"
                                                   else ";"))
                store.append(f"reinterpret_cast<float4*>({var}_)[i] = v_{var};")
            else:
                decl.append(f"{kind} {var}")
        comps = []
        for c in "xyzw":
            names = [(kind, var) for kind, var in params if kind in ("in", "bias", "inout", "out")]
            get = " ".join(f"T {var} = v_{var}.{c};" if kind != "out" else f"T {var};" for kind, var in names)
            put = " ".join(f"v_{var}.{c} = {var};" for kind, var in names if kind in ("inout", "out"))
            comps.append(f"{{ {get} {body} {put} }}")
        src = ("typedef float T;\n" + _PREAMBLE +
               f'extern "C" __global__ void minigrad_v_{name}({", ".join(decl)}, long long n4, long long cols4) {{\n'
               "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n4;\n"
               "       i += (long long)blockDim.x * gridDim.x) {\n    "
               + "\n    ".join(load) + "\n    " + "\n    ".join(comps) + "\n    " + "\n    ".join(store)
               + "\n  }\n}\n")
        k = _vcache[name] = cupy.RawKernel(src, f"minigrad_v_{name}")
    return k


def _vectorisable(*arrays, bias=None) -> bool:
    """float32, C-contiguous, one size that is a multiple of 4, 16-byte aligned (Note [Four floats at a time])."""
    n = arrays[0].size
    for a in arrays + ((bias,) if bias is not None else ()):
        if a.dtype != np.float32 or not a.flags.c_contiguous or a.data.ptr % 16:
            return False
    if any(a.size != n for a in arrays) or n % 4 or n == 0:
        return False
    return bias is None or (bias.ndim == 1 and bias.size % 4 == 0 and arrays[0].shape[-1] == bias.size)


def _launch_vector(kernel, n, cols, args):
    n4 = n // 4
    blocks = min((n4 + 255) // 256, 8192)
    kernel((blocks,), (256,), tuple(args) + (np.int64(n4), np.int64(max(cols // 4, 1))))


def _fuse(*arrays) -> bool:
    """Use a fused kernel: CuPy arrays of one float32/float64 dtype, fusion on."""
    return (xp_of(arrays[0]) is not np and enabled() and arrays[0].dtype in _FLOATS
            and all(a.dtype == arrays[0].dtype for a in arrays))


# --------------------------------------------------------------------------- matrix products


def matmul(a, b):
    """``a @ b``; on CuPy, products of a 2-D (or N-d, flattened) ``a`` and a 2-D ``b`` go through
    minigrad's own cuBLAS handle (``minigrad.cublas``), which a CUDA graph can capture."""
    if type(a) is _NDARRAY or b.ndim != 2 or a.ndim < 2 or xp_of(a) is np:
        return a @ b
    a2 = a.reshape(-1, a.shape[-1]) if a.ndim > 2 else a
    if not cublas.supported(a2, b):
        return a @ b
    out = cublas.matmul(a2, b)
    return out.reshape(a.shape[:-1] + (b.shape[1],)) if a.ndim > 2 else out


_ones: dict = {}


def column_sums(g2):
    """``g2.sum(axis=0)`` of a 2-D array (a bias gradient). On CuPy, a 1 x N by N x C product through
    cuBLAS: one coalesced pass (0.137 ms for CuPy's axis-0 reduction of 4096 x 4096 on an H200, 0.043 ms
    for PyTorch's); sums in another order than NumPy's, as any GPU reduction does."""
    if (type(g2) is _NDARRAY or xp_of(g2) is np or g2.ndim != 2 or g2.dtype not in cublas.DTYPES
            or 0 in g2.shape):
        return g2.sum(axis=0)
    import cupy  # noqa: PLC0415
    key = (cupy.cuda.Device().id, g2.shape[0], g2.dtype)
    ones = _ones.get(key)
    if ones is None:
        ones = _ones[key] = cupy.ones((1, g2.shape[0]), g2.dtype)
    return cublas.matmul(ones, g2).reshape(g2.shape[1])


# --------------------------------------------------------------------------- activations


def _unary_backward(name, body, g, y):
    """``out = body(g, y)`` elementwise: the float4 kernel where it applies, else an ElementwiseKernel."""
    if g.shape == y.shape and _vectorisable(g, y):
        out = xp_of(y).empty_like(y)
        _launch_vector(_vector_kernel(name, (("in", "g"), ("in", "y"), ("out", "out")), body), y.size, 4,
                       (g, y, out))
        return out
    return _kernel(name, "T g, T y", "T out", body)(g, y)


def relu_backward(g, y):
    """``g · [y > 0]``: the gradient through ReLU from its saved output ``y``."""
    if type(g) is not _NDARRAY and _fuse(g, y):
        return _unary_backward("relu_backward", "out = mg_mul(g, y > (T)0 ? (T)1 : (T)0);", g, y)
    return g * (y > 0)


def tanh_backward(g, y):
    """``g · (1 − y²)``: the gradient through tanh from its saved output ``y``."""
    if type(g) is not _NDARRAY and _fuse(g, y):
        return _unary_backward("tanh_backward", "out = mg_mul(mg_sub((T)1, mg_mul(y, y)), g);", g, y)
    xp = xp_of(y)
    d = xp.multiply(y, y, out=xp.empty_like(y))   # one temporary, reused in place: g * (1 - y²)
    xp.subtract(1, d, out=d)
    d *= g
    return d


ACTIVATIONS = ("relu", "tanh")


def bias_act_(y, b, act):
    """``y ← act(y + b)`` in place (``b`` may be None; ``act`` None, "relu" or "tanh"); returns y.

    ``y`` is a fresh matmul output that nothing else holds, so it is overwritten.
    A bias of another dtype follows NumPy's promotion (a new array), as Linear always did.
    """
    if type(y) is _NDARRAY:
        xp = np
    else:
        xp = xp_of(y)
    if xp is not np and b is not None and act is not None and _fuse(y, b):
        body = ("T t = mg_add(y, b); y = isnan(t) ? (T)NAN : max(t, (T)0);" if act == "relu"
                else "y = tanh(mg_add(y, b));")
        if _vectorisable(y, bias=b):
            _launch_vector(_vector_kernel("bias_" + act, (("bias", "b"), ("inout", "y")), body), y.size, b.size,
                           (b, y))
        else:
            _kernel("bias_" + act, "T b", "T y", body)(b, y)
        return y
    if b is not None:
        if b.dtype == y.dtype:
            y += b
        else:
            y = y + b
    if act == "relu":
        y = xp.maximum(y, 0, out=y if y.dtype.kind == "f" else None)
    elif act == "tanh":
        y = xp.tanh(y, out=y if y.dtype.kind == "f" else None)
    return y


def act_backward(g, y, act):
    """The gradient through ``act`` (None, "relu", "tanh") from its output ``y``."""
    if act == "relu":
        return relu_backward(g, y)
    if act == "tanh":
        return tanh_backward(g, y)
    return g


# --------------------------------------------------------------------------- optimizers


def sgd_(p, g, buf, lr, momentum, weight_decay):
    """One SGD update of array ``p`` in place (PyTorch's formulas; ``buf`` the momentum buffer or None).

    g ← g + weight_decay·p; buf ← momentum·buf + g; p ← p − lr·buf (or −lr·g without momentum).
    """
    if type(p) is not _NDARRAY and _fuse(p, g, *(() if buf is None else (buf,))):
        wd = 1 if weight_decay else 0
        t = p.dtype.type
        if buf is None:
            body = "T d = has_wd ? mg_add(g, mg_mul(wd, p)) : g; p = mg_sub(p, mg_mul(lr, d));"
            if g.shape == p.shape and _vectorisable(g, p):
                _launch_vector(_vector_kernel("sgd", (("in", "g"), ("float", "lr"), ("float", "wd"), ("int", "has_wd"),
                                                      ("inout", "p")), body), p.size, 4,
                               (g, t(lr), t(weight_decay), np.int32(wd), p))
            else:
                _kernel("sgd", "T g, T lr, T wd, int32 has_wd", "T p", body)(g, lr, weight_decay, wd, p)
        else:
            body = ("T d = has_wd ? mg_add(g, mg_mul(wd, p)) : g; buf = mg_add(mg_mul(buf, mom), d); "
                    "p = mg_sub(p, mg_mul(lr, buf));")
            if g.shape == p.shape and _vectorisable(g, p, buf):
                _launch_vector(_vector_kernel("sgd_momentum", (("in", "g"), ("float", "lr"), ("float", "mom"),
                                                               ("float", "wd"), ("int", "has_wd"), ("inout", "p"),
                                                               ("inout", "buf")), body), p.size, 4,
                               (g, t(lr), t(momentum), t(weight_decay), np.int32(wd), p, buf))
            else:
                _kernel("sgd_momentum", "T g, T lr, T mom, T wd, int32 has_wd", "T p, T buf", body)(
                    g, lr, momentum, weight_decay, wd, p, buf)
        return
    if weight_decay:
        g = g + weight_decay * p
    if buf is not None:
        buf *= momentum
        buf += g
        g = buf
    if g.dtype == p.dtype:
        p -= lr * g
    else:
        p -= (lr * g).astype(p.dtype)


_ADAM = """
T d = has_wd ? mg_add(g, mg_mul(wd, p)) : g;
m = mg_add(mg_mul(m, b1f), mg_mul(omb1, d));
v = mg_add(mg_mul(v, b2f), mg_mul(omb2, mg_mul(d, d)));
double t = (double)step[0];
double bias1 = 1.0 - pow(b1, t);
double bias2 = 1.0 - pow(b2, t);
T step_size = (T)(lr / bias1);
T denom = mg_add(mg_div(sqrt(v), (T)sqrt(bias2)), eps);
p = mg_sub(p, mg_mul(step_size, mg_div(m, denom)));
"""


def adam_(p, g, m, v, step, lr, betas, eps, weight_decay):
    """One Adam update of array ``p`` in place, as PyTorch's single-tensor Adam computes it.

    ``step`` is the step count after this step: a Python int on NumPy, a one-element
    int64 device array on CuPy (Note [Adam's step count on the device]).
    """
    b1, b2 = betas
    if type(p) is not _NDARRAY and _fuse(p, g, m, v):
        dt = p.dtype.type
        _kernel("adam", "T g, raw int64 step, float64 lr, float64 b1, float64 b2, T b1f, T omb1, T b2f, "
                        "T omb2, T eps, T wd, int32 has_wd", "T p, T m, T v", _ADAM)(
            g, step, float(lr), float(b1), float(b2), dt(b1), dt(1 - b1), dt(b2), dt(1 - b2), dt(eps),
            dt(weight_decay), 1 if weight_decay else 0, p, m, v)
        return
    xp = xp_of(p)
    if weight_decay:
        g = g + weight_decay * p
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * (g * g)
    bias1 = 1 - b1 ** step
    bias2 = 1 - b2 ** step
    if xp is np:
        step_size = lr / bias1
        denom = np.sqrt(v) / math.sqrt(bias2) + eps
    else:   # the t-dependent factors from the device count, rounded to p's dtype as Python floats would be
        step_size = (lr / bias1).astype(p.dtype)
        denom = xp.sqrt(v) / xp.sqrt(bias2).astype(p.dtype) + p.dtype.type(eps)
    p -= (step_size * (m / denom)).astype(p.dtype, copy=False)


# --------------------------------------------------------------------------- random numbers

_MASK64 = (1 << 64) - 1


def mix64(z: int) -> int:
    """SplitMix64's finaliser on the host (the same function as the kernels' ``mg_mix64``)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def as_int64(z: int) -> int:
    """A 64-bit pattern as the signed integer that holds it (for int64 kernel arguments)."""
    z &= _MASK64
    return z - (1 << 64) if z >= 1 << 63 else z


_KEY = ("unsigned long long key = mg_mix64(((unsigned long long)seedmix ^ (unsigned long long)state[0]) ^ "
        "mg_mix64((unsigned long long)counter + (unsigned long long)state[1])); "
        "unsigned long long z = mg_mix64(key + (unsigned long long)(i + 1) * 0x9e3779b97f4a7c15ULL);")


def device_uniform(xp, shape, dtype, seed, counter, state):
    """Uniform [0, 1) floats (float32 for float32, else float64) keyed by (seed, counter) and ``state``."""
    f32 = np.dtype(dtype) == np.float32
    out = xp.empty(shape, np.float32 if f32 else np.float64)
    if f32:
        k = _kernel("uniform32", "int64 seedmix, int64 counter, raw int64 state", "float32 out",
                    _KEY + "out = (float)(z >> 40) * (1.0f / 16777216.0f);")
    else:
        k = _kernel("uniform64", "int64 seedmix, int64 counter, raw int64 state", "float64 out",
                    _KEY + "out = (double)(z >> 11) * (1.0 / 9007199254740992.0);")
    k(as_int64(mix64(seed)), as_int64(counter), state, out)
    return out


_NORMAL = _KEY + """
double u1 = (double)((z >> 11) + 1) * (1.0 / 9007199254740992.0);
double u2 = (double)(mg_mix64(z ^ 0x5851f42d4c957f2dULL) >> 11) * (1.0 / 9007199254740992.0);
double r = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
"""


def device_normal(xp, shape, dtype, seed, counter, state):
    """Standard normal floats (float32 for float32, else float64) by Box–Muller from two hashed uniforms."""
    f32 = np.dtype(dtype) == np.float32
    out = xp.empty(shape, np.float32 if f32 else np.float64)
    name, kind, ctype = ("normal32", "float32", "float") if f32 else ("normal64", "float64", "double")
    _kernel(name, "int64 seedmix, int64 counter, raw int64 state", f"{kind} out", _NORMAL + f"out = ({ctype})r;")(
        as_int64(mix64(seed)), as_int64(counter), state, out)
    return out


def set_state(state, seed_delta: int, counter_offset: int):
    """Write (seed delta, counter offset) into a two-element int64 device array, without a host copy."""
    _kernel("set_state", "int64 a, int64 b", "raw int64 s", "if (i == 0) { s[0] = a; s[1] = b; }")(
        as_int64(seed_delta), as_int64(counter_offset), state, size=1)
