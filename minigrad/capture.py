"""A training step captured once as a CUDA graph and replayed: ``step = mg.cuda_graph(fn)``.

A training step of a small model is a few hundred tiny kernels; launched one by
one from Python, each costs more on the host than on the GPU. CUDA can record
the kernels a stream receives into a graph and launch the whole graph with one
call. ``cuda_graph`` does that for a step function::

    def train_step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    step = mg.cuda_graph(train_step)
    for x, y in batches:           # CuPy tensors of one shape
        loss = step(x, y)          # call 1 eager, call 2 captured and launched, then replays

Note [What a captured step replays]
A graph replays the kernels of the captured call with the same arguments and
the same device addresses. So:

* The first call runs eagerly (``warmup`` calls, 1 by default): it compiles the
  kernels and creates what a first step creates once (the optimizer's moments,
  gradients). Captured then, "create zero moments" would be replayed every step.
* The arguments are copied, each call, into buffers the graph owns; the model
  and the optimizer are reached through the function's closure and updated in
  place (every minigrad optimizer and BatchNorm does), so each replay reads
  the values the previous one wrote.
* What the call returns, and the gradients it leaves, are the same tensors on
  every call, rewritten by each replay (as with PyTorch's graphs): read or copy
  them before the next call.
* Host-side decisions are frozen: shapes, dtypes, which branch Python took.
  A call whose arguments differ in shape, dtype or device from the captured
  one raises ``CaptureError``; make one captured step per shape.
* Random numbers: the step's draws on its device read part of their key from a
  device array that each launch sets first, so every replay draws what the same
  eager step would have drawn, and the generator's counter advances on the host
  as it would eagerly (Note [Random numbers on the device] in ``minigrad.kernels``).
  Checkpoint recompute inside the step replays its masks as eagerly.
* The memory the graph's arrays use comes from a pool of its own, which lives
  as long as the captured step: nothing else can be handed those addresses.
* A step that copies to the host or synchronises (``loss.item()``,
  ``float(t)``, printing a tensor, ``offload=True`` checkpointing) cannot be
  captured: ``CaptureError`` names the line. Dynamic rematerialisation decides
  evictions on the host from sizes it measures, so it is not captured either.

Anything that replaces the arrays of parameters or buffers (``load_state_dict``,
``Module.to``) after capture must be followed by ``step.reset()``.
"""
from __future__ import annotations

import numbers
import traceback
import warnings
from contextlib import ExitStack

import numpy as np

from . import backend, kernels
from . import random as _random
from .errors import ArgumentError, CaptureError, DeviceError
from .tensor import Tensor


def cuda_graph(fn, *, warmup: int = 1):
    """Wrap the step function ``fn`` so its calls are captured once as a CUDA graph and replayed.

    ``warmup`` calls (at least 1) run eagerly first; the next is captured and
    launched; every later call replays the graph. See Note [What a captured
    step replays] for what that implies. Returns a ``CapturedStep``.
    """
    if not callable(fn):
        raise ArgumentError(f"cuda_graph: fn must be a callable step function, got {type(fn).__name__}; "
                            "pass the function itself, e.g. cuda_graph(train_step)")
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral) or warmup < 1:
        raise ArgumentError(f"cuda_graph: warmup must be an integer >= 1, got {warmup!r}; the first call "
                            "must run eagerly so that kernels compile and first-step state exists")
    return CapturedStep(fn, int(warmup))


def _flatten(obj, path, leaves):
    """Collect (path, leaf) for every leaf of nested tuples, lists and dicts."""
    if isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            _flatten(o, f"{path}[{i}]", leaves)
    elif isinstance(obj, dict):
        for k, o in obj.items():
            _flatten(o, f"{path}[{k!r}]", leaves)
    else:
        leaves.append((path, obj))
    return leaves


def _leaves(args, kwargs):
    """(path, leaf) for the leaves of the call's arguments: ``args[0]``, ``args[1][2]``, ``y``..."""
    leaves = []
    for i, a in enumerate(args):
        _flatten(a, f"args[{i}]", leaves)
    for k, v in kwargs.items():
        _flatten(v, k, leaves)
    return leaves


def _rebuild(obj, swap):
    """``obj`` with each leaf replaced by ``swap(leaf)``."""
    if isinstance(obj, tuple):
        return tuple(_rebuild(o, swap) for o in obj)
    if isinstance(obj, list):
        return [_rebuild(o, swap) for o in obj]
    if isinstance(obj, dict):
        return {k: _rebuild(o, swap) for k, o in obj.items()}
    return swap(obj)


def _describe(leaf):
    if isinstance(leaf, Tensor):
        return ("tensor", leaf.shape, str(leaf.dtype), str(leaf.device))
    if backend.is_array(leaf):
        return ("array", leaf.shape, str(leaf.dtype), str(backend.device_of(leaf)))
    if leaf is None or isinstance(leaf, (bool, numbers.Number, str)):
        return ("value", leaf)
    return ("object", id(leaf))


def _where(exc) -> str:
    """'file:line in function() (source)' of the step's own line that led to ``exc``, for error messages."""
    import os  # noqa: PLC0415
    here = os.path.dirname(os.path.abspath(__file__))
    frames = traceback.extract_tb(exc.__traceback__)
    outside = [f for f in frames
               if not os.path.abspath(f.filename).startswith(here + os.sep) and "cupy" not in f.filename
               and "/numpy/" not in f.filename and not f.filename.endswith("contextlib.py")]
    inside = [f for f in frames if os.path.abspath(f.filename).startswith(here + os.sep)
              and not f.filename.endswith("capture.py")]
    if not outside:
        return "inside the step"
    f = outside[-1]
    via = f", through minigrad's {inside[-1].name}()" if inside and frames.index(inside[-1]) > frames.index(f) else ""
    return f"at {f.filename}:{f.lineno} in {f.name}() ({(f.line or '').strip()}){via}"


class CapturedStep:
    """A step function with its CUDA graph: call it like the function (see ``cuda_graph``).

    Attributes: ``calls`` (calls so far), ``replays`` (graph launches so far),
    ``captured`` (True once the graph exists), ``draws`` (random draws per step).
    """

    def __init__(self, fn, warmup):
        self.fn = fn
        self.warmup = warmup
        self.calls = 0
        self.replays = 0
        self.draws = 0
        self._signature = None
        self._reset_graph()

    def _reset_graph(self):
        self._graph = None
        self._pool = None
        self._statics = None
        self._outputs = None
        self._rng_state = None
        self._rng_key = None

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def reset(self):
        """Drop the graph (and its memory): the next call runs eagerly again, then captures anew."""
        self._reset_graph()
        self._signature = None
        self.calls = 0

    # ------------------------------------------------------------------ calls
    def __call__(self, *args, **kwargs):
        leaves = _leaves(args, kwargs)
        dev = self._device(leaves)
        signature = tuple((path, _describe(leaf)) for path, leaf in leaves)
        if self._signature is not None and signature != self._signature:
            raise CaptureError(self._mismatch(signature))
        self._signature = signature
        if self.calls < self.warmup:
            self.calls += 1
            return self.fn(*args, **kwargs)
        if self._graph is None:
            self._capture(args, kwargs, leaves, dev)
        else:
            self._copy_inputs(leaves, dev)
        self._launch(dev)
        self.calls += 1
        return self._outputs

    def _device(self, leaves):
        devs = {backend.device_of(leaf.data if isinstance(leaf, Tensor) else leaf)
                for _, leaf in leaves if isinstance(leaf, Tensor) or backend.is_array(leaf)}
        if not devs or any(d.type != "cuda" for d in devs):
            found = ", ".join(sorted(str(d) for d in devs)) or "no tensor arguments"
            raise DeviceError(f"cuda_graph: a captured step needs its tensor arguments on one CUDA device, got "
                              f"{found}; move the batch and the model to 'cuda' with .to('cuda'), or call the "
                              "step function directly on the CPU")
        if len(devs) > 1:
            raise DeviceError(f"cuda_graph: the step's arguments are on several devices "
                              f"({', '.join(sorted(map(str, devs)))}); a graph runs on one")
        for path, leaf in leaves:
            if isinstance(leaf, Tensor) and leaf.requires_grad:
                raise CaptureError(f"cuda_graph: argument {path} (shape {leaf.shape}) requires grad; a "
                                   "captured step copies its arguments into buffers of its own, so gradients "
                                   "would not reach that tensor. Pass data (batches) as arguments and reach "
                                   "parameters through the function's closure (the model, the optimizer)")
        return devs.pop()

    def _mismatch(self, signature):
        old = dict(self._signature)
        for path, desc in signature:
            before = old.get(path)
            if before != desc:
                what = (f"shape {desc[1]}, {desc[2]} on {desc[3]}" if desc[0] in ("tensor", "array")
                        else repr(desc[1]) if desc[0] == "value" else "another object")
                was = ("nothing" if before is None else f"shape {before[1]}, {before[2]} on {before[3]}"
                       if before[0] in ("tensor", "array") else repr(before[1]) if before[0] == "value"
                       else "another object")
                return (f"cuda_graph: argument {path} is {what}, but the step was captured with {was}. "
                        "A CUDA graph replays fixed shapes, dtypes and devices: make one cuda_graph(fn) per "
                        "input shape (e.g. one for the last, shorter batch), or call step.reset() to capture anew")
        return (f"cuda_graph: the arguments have another structure than at capture ({len(signature)} leaves, "
                f"captured with {len(self._signature)}); call step.reset() to capture anew")

    # ------------------------------------------------------------------ capture
    def _capture(self, args, kwargs, leaves, dev):
        import cupy as cp  # noqa: PLC0415 - a CUDA device exists, so CuPy does
        with cp.cuda.Device(dev.index or 0):
            pool = cp.cuda.MemoryPool()
            stream = cp.cuda.Stream(non_blocking=True)
            caller = cp.cuda.get_current_stream()
            statics = {}
            with cp.cuda.using_allocator(pool.malloc), stream:
                stream.wait_event(caller.record())
                for path, leaf in leaves:
                    if isinstance(leaf, Tensor):
                        statics[path] = Tensor._make(leaf.data.copy(), leaf.device, False, None, 0)
                    elif backend.is_array(leaf):
                        statics[path] = leaf.copy()
                rng_state = cp.zeros(2, np.int64)
            caller.wait_event(stream.record())
            paths = iter(path for path, _ in leaves)
            s_args, s_kwargs = _rebuild((args, kwargs), lambda leaf: statics.get(next(paths), leaf))

            before = {d: g.get_state() for d, g in _random._generators.items()}
            gen = _random.generator(dev)
            seed0, c0 = gen.seed, gen.counter
            gen.device_state = rng_state
            try:
                with ExitStack() as stack:
                    stack.enter_context(cp.cuda.using_allocator(pool.malloc))
                    stack.enter_context(stream)
                    _no_sync(stack)
                    stream.begin_capture()
                    try:
                        out = self.fn(*s_args, **s_kwargs)
                    except BaseException as exc:
                        try:
                            stream.end_capture()
                        except Exception:
                            pass
                        raise _capture_error(exc) from exc
                    try:
                        graph = stream.end_capture()
                    except Exception as exc:
                        raise CaptureError(f"cuda_graph: CUDA refused the captured step ({exc}); something in "
                                           "it cannot be recorded in a graph (a host copy or a synchronisation "
                                           "outside CuPy?). Keep those outside the step") from exc
            finally:
                gen.device_state = None
            draws = gen.counter - c0
            if gen.seed != seed0:
                raise CaptureError("cuda_graph: the step reseeded the random generator (manual_seed) while being "
                                   "captured; seed before calling the step, not inside it")
            for d, state in before.items():
                if d != dev and _random.generator(d).get_state() != state:
                    raise CaptureError(f"cuda_graph: the step draws random numbers on {d}, which a CUDA graph on "
                                       f"{dev} cannot replay; make the draws on {dev} (tensors there)")
            gen.counter = c0        # the launch below advances it, as every replay will
            _check_outputs(out)
        self._graph, self._pool, self._outputs = graph, pool, out
        self._statics = [statics.get(path) for path, _ in leaves]
        self._rng_state, self._rng_key, self.draws = rng_state, (seed0, c0), draws

    def _copy_inputs(self, leaves, dev):
        import cupy as cp  # noqa: PLC0415
        with cp.cuda.Device(dev.index or 0):
            for (_, leaf), static in zip(leaves, self._statics):
                if static is None:
                    continue
                src = leaf.data if isinstance(leaf, Tensor) else leaf
                dst = static.data if isinstance(static, Tensor) else static
                if src is not dst:
                    cp.copyto(dst, src)

    def _launch(self, dev):
        import cupy as cp  # noqa: PLC0415
        gen = _random.generator(dev)
        seed0, c0 = self._rng_key
        with cp.cuda.Device(dev.index or 0):
            if self.draws:
                kernels.set_state(self._rng_state, kernels.mix64(gen.seed) ^ kernels.mix64(seed0), gen.counter - c0)
            self._graph.launch(cp.cuda.get_current_stream())
        gen.counter += self.draws
        self.replays += 1


def _no_sync(stack):
    """Make CuPy raise at any host synchronisation inside the capture (CuPy's detector, where it has one)."""
    try:
        from cupyx import allow_synchronize  # noqa: PLC0415
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the detector is marked deprecated; it still detects
        stack.enter_context(allow_synchronize(False))


def _capture_error(exc):
    """The error to raise when the step failed while being captured."""
    if isinstance(exc, CaptureError):
        return exc
    name = type(exc).__name__
    if "cuBLAS" in str(exc):
        return CaptureError(f"cuda_graph: the step calls a CuPy matrix routine {_where(exc)}, and CuPy refuses "
                            f"cuBLAS calls while a graph is captured ({exc}). minigrad captures 2-D products "
                            "(Linear, 2-D @) through its own cuBLAS handle; batched or 1-d products go through "
                            "CuPy. Reshape them to 2-D, or run this step eagerly")
    if name in ("DeviceSynchronized", "CUDARuntimeError", "CUDADriverError") or "captur" in str(exc).lower():
        return CaptureError(f"cuda_graph: the step cannot be captured as a CUDA graph: it synchronises with the "
                            f"host {_where(exc)} ({name}: {exc}). Copies to the host (loss.item(), float(t), "
                            "print(t), .numpy()) and offloaded checkpoints wait for the GPU; do them after the "
                            "call, on what it returns")
    return exc


def _check_outputs(out):
    for path, leaf in _flatten(out, "", []):
        if leaf is not None and not isinstance(leaf, Tensor) and not backend.is_array(leaf):
            raise CaptureError(f"cuda_graph: the step returned {type(leaf).__name__} {leaf!r} at {path or 'top'}; "
                               "a graph replays device work only, so a Python value computed while capturing "
                               "would never change. Return tensors, and read them after the call")
