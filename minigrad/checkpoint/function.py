"""``checkpoint(fn, *args)``: run a segment without keeping its activations, recompute it in backward.

The segment becomes one node on the tape that saves only its tensor inputs
and the random-number state. In backward the node re-runs ``fn`` with
recording, inside the *recompute context* (BatchNorm does not update its
running statistics there; dropout replays its masks from the saved RNG
state), backpropagates through that local tape, and lets it go.
"""
from __future__ import annotations

from contextlib import contextmanager

from .. import autograd, profiler
from .. import random as _random
from ..autograd import Function, enable_grad, no_grad
from ..errors import CheckpointError
from ..tensor import Tensor
from .policies import PLAIN, Selection, Storage, check_policy


@contextmanager
def recompute_context(rng_state=None):
    """Re-running a forward during backward: no state updates, RNG replayed, FLOPs booked to "recompute".

    On exit the generators are put back where they were, so the next step's
    random numbers are exactly those it would draw without checkpointing.
    """
    resume = _random.get_rng_state() if rng_state is not None else None
    if rng_state is not None:
        _random.set_rng_state(rng_state)
    autograd._recompute_depth[0] += 1
    try:
        with profiler.phase("recompute"):
            yield
    finally:
        autograd._recompute_depth[0] -= 1
        if resume is not None:
            _random.set_rng_state(resume)


@contextmanager
def watch_requires_grad():
    """While running without recording, note whether any op touched a tensor that needs a gradient."""
    flag = [False]
    autograd._watchers.append(flag)
    try:
        yield flag
    finally:
        autograd._watchers.pop()


def rng_devices(tensors):
    """The generators a segment may draw from: the CPU's and those of its inputs' devices."""
    devs = {t.device for t in tensors}
    devs.add(_random.CPU)
    return devs


def fn_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def check_same_meta(where, expected, got):
    """Raise CheckpointError when a recompute's output differs in shape or dtype from the original."""
    if len(expected) != len(got):
        raise CheckpointError(f"checkpoint: recomputing {where} returned {len(got)} output(s), but the original "
                              f"forward returned {len(expected)}; the function must be deterministic")
    for k, ((s0, d0), (s1, d1)) in enumerate(zip(expected, got)):
        if s0 != s1 or d0 != d1:
            raise CheckpointError(
                f"checkpoint: recomputing {where} gave output {k} of shape {s1} and dtype {d1}, but the "
                f"original forward gave shape {s0} and dtype {d0}. A checkpointed function must compute the "
                "same shapes from the same inputs (no dependence on global state that changes between "
                "forward and backward).")


def _outputs(out, fn):
    if isinstance(out, Tensor):
        return (out,), False
    if isinstance(out, tuple) and out and all(isinstance(o, Tensor) for o in out):
        return out, True
    raise CheckpointError(f"checkpoint: {fn_name(fn)} returned {type(out).__name__}; a checkpointed function "
                          "must return a Tensor or a tuple of Tensors (return other values outside it)")


class CheckpointFunction(Function):
    """The node standing for a checkpointed segment: saves the inputs, recomputes in backward."""

    takes_grad_box = True

    def backward(self, box):
        inputs = [Tensor._make(self.storage.load(a, dt, self.device), self.device, need, None, 0)
                  for a, dt, need in zip(self.saved, self.in_dtypes, self.needs_input_grad)]
        self.saved = ()
        args = list(self.args)
        for pos, t in zip(self.tensor_pos, inputs):
            args[pos] = t
        selection = Selection(self.policy, self.kept) if self.policy is not None else None
        self.kept = None
        with recompute_context(self.rng_state), enable_grad(), _selecting(selection):
            out = self.fn(*args, **self.kwargs)
        del selection
        outs, _ = _outputs(out, self.fn)
        del out, args
        check_same_meta(fn_name(self.fn), self.out_meta, [(o.shape, o.dtype) for o in outs])
        roots = [(o, box[k]) for k, o in enumerate(outs) if o.requires_grad]
        box.clear()
        del outs
        autograd.run_backward(roots)
        return tuple(t.grad.data if (need and t.grad is not None) else None
                     for t, need in zip(inputs, self.needs_input_grad))

    def backward_flops(self):
        return 0   # the recomputed ops book their own FLOPs


@contextmanager
def _selecting(selection):
    """Make ``selection`` (or None: hide ops from any outer policy) the innermost policy state."""
    autograd._selective.append(selection)
    try:
        yield selection
    finally:
        autograd._selective.pop()


def checkpoint(fn, *args, preserve_rng_state=True, policy=None, store_dtype=None, offload=False, budget=None,
               method="optimal", **kwargs):
    """Run ``fn(*args, **kwargs)`` keeping none of its activations; recompute them during backward.

    Returns what ``fn`` returns (a Tensor or a tuple of Tensors). Non-tensor
    arguments pass through unchanged; checkpoints nest. Parameters used inside
    ``fn`` get their gradients even when no input requires grad. With
    ``preserve_rng_state`` (default) random ops such as dropout draw the same
    numbers when recomputed. ``policy`` (e.g. ``save_matmuls``) keeps chosen
    ops' outputs instead of recomputing them; ``store_dtype`` (e.g.
    ``"float16"``) stores the inputs in a narrower dtype; ``offload`` keeps them
    in host memory while they wait. With ``budget=`` (bytes, or "8MB") the
    function's op-level graph is planned instead (``method``: see ``solve``)
    and run under that plan (``graph_run.py``).
    """
    if not callable(fn):
        raise CheckpointError(f"checkpoint: the first argument must be callable, got {type(fn).__name__}")
    if budget is not None:
        from .graph_run import checkpoint_graph  # noqa: PLC0415 - graph plans load scipy only when used
        return checkpoint_graph(fn, args, kwargs, budget, method)
    check_policy(policy)
    storage = Storage(store_dtype, offload) if (store_dtype is not None or offload) else PLAIN
    tensor_pos = [k for k, a in enumerate(args) if isinstance(a, Tensor)]
    inputs = [args[k] for k in tensor_pos]
    if not autograd.is_grad_enabled():
        with _selecting(None):
            out = fn(*args, **kwargs)
        _outputs(out, fn)
        return out
    rng_state = _random.get_rng_state(rng_devices(inputs)) if preserve_rng_state else None
    selection = Selection(policy) if policy is not None else None
    with watch_requires_grad() as touched, no_grad(), _selecting(selection):
        out = fn(*args, **kwargs)
    outs, is_tuple = _outputs(out, fn)
    del out
    if not (touched[0] or any(t.requires_grad for t in inputs)):
        return outs if is_tuple else outs[0]
    devs = {str(t.device) for t in inputs} | {str(o.device) for o in outs}
    if len(devs) > 1:
        raise CheckpointError(f"checkpoint: {fn_name(fn)} mixes devices {sorted(devs)}; keep a segment on one device")
    node = CheckpointFunction()
    node.requires_grad = True
    node.needs_input_grad = tuple(t.requires_grad for t in inputs)
    node.saved = tuple(storage.store(t.data) for t in inputs)
    node.in_dtypes = tuple(t.dtype for t in inputs)
    node.storage, node.policy = storage, policy
    node.kept = selection.kept if selection is not None else None
    node.fn, node.kwargs, node.tensor_pos = fn, kwargs, tensor_pos
    node.args = tuple(None if k in tensor_pos else a for k, a in enumerate(args))
    node.rng_state = rng_state
    node.n_outputs = len(outs)
    node.seq = next(autograd._seq)
    node.next = tuple(t._edge() if t.requires_grad else None for t in inputs)
    node.out_meta = tuple((o.shape, o.dtype) for o in outs)
    node.device = outs[0].device
    node.fwd_flops = 0
    results = tuple(Tensor._make(o.data, o.device, True, node, k) for k, o in enumerate(outs))
    return results if is_tuple else results[0]
