"""``checkpoint(fn, *args)``: run a segment without keeping its activations, recompute it in backward.

The segment becomes one node on the tape that saves only its tensor inputs
and the random-number state. In backward the node re-runs ``fn`` with
recording, inside the core's ``recomputing`` mode (BatchNorm does not update
its running statistics there; dropout replays its masks from the saved RNG
state), backpropagates through that local tape, and lets it go.

Note [What a checkpoint node sees]
1. Its inputs are every tensor found in ``args`` and ``kwargs``, nested in lists,
   tuples and dicts; each gets an edge. A tensor appearing twice is one input.
2. Tensors captured from the enclosing scope are not inputs: the recompute uses
   them as they are. Leaves (parameters) get their gradients directly; for a
   captured non-leaf the local backward stops at its node (recorded before the
   recompute began) and the node hands that gradient on to the outer backward.
3. Inputs are saved with ``save_for_backward``, so a ``Storage`` (float16,
   offload) applies to them as a pair of saved-array hooks.
4. The forward runs under ``no_grad`` while propagating ``requires_grad``: an
   output depending on nothing that needs a gradient (or not floating) is
   returned as a plain tensor, as PyTorch does.
5. Backward may run again after ``backward(retain_graph=True)``: the node keeps
   what it needs until the engine releases it.
6. Recompute checks what it can against the forward: output shapes and dtypes,
   train/eval mode of the modules ``fn`` is or captures, and the ops a selective
   policy replays (see ``policies.Selection``).
"""
from __future__ import annotations

from contextlib import nullcontext

from .. import autograd
from .. import random as _random
from ..autograd import Function, enable_grad, no_grad, propagating_requires_grad, recomputing, selective
from ..errors import CheckpointError, ScheduleError
from ..tensor import Tensor
from .policies import Selection, Storage, check_policy



def rng_devices(tensors):
    """The generators a segment may draw from: the CPU's and those of its inputs' devices."""
    devs = {t.device for t in tensors}
    devs.add(_random.CPU)
    return devs


def fn_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def chain_layers(layers, where, callables=True) -> list:
    """``layers`` as a list (of callables, unless ``callables=False``), or a CheckpointError naming what is not."""
    try:
        items = None if isinstance(layers, (str, bytes)) else iter(layers)
    except TypeError:
        items = None
    if items is None:
        raise CheckpointError(f"{where}: layers must be a list (or nn.Sequential) of modules or callables, got "
                              f"{type(layers).__name__}; pass e.g. [nn.Linear(4, 4), nn.ReLU()]")
    layers = list(items)
    for i, layer in enumerate(layers if callables else ()):
        if not callable(layer):
            raise CheckpointError(f"{where}: layer {i} is {layer!r:.40} ({type(layer).__name__}), not a module "
                                  "or callable; every layer must map a Tensor to a Tensor")
    return layers


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


def module_modes(*objs):
    """``(module, training)`` for every module among ``objs``, what they wrap and what closures capture."""
    found, seen = [], set()
    stack = list(objs)
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if hasattr(o, "modules") and hasattr(o, "training"):
            found.extend((m, m.training) for m in o.modules())
        elif hasattr(o, "__self__"):                     # a bound method of a module
            stack.append(o.__self__)
        elif getattr(o, "__closure__", None):
            for cell in o.__closure__:
                try:
                    stack.append(cell.cell_contents)
                except ValueError:                       # an empty cell
                    pass
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
    return found


def check_same_modes(where, modes):
    """Raise CheckpointError when a module's train/eval mode changed between forward and recompute."""
    for m, training in modes:
        if m.training != training:
            was, now = ("train", "eval") if training else ("eval", "train")
            changed = sorted({type(m2).__name__ for m2, t2 in modes if m2.training != t2})
            raise CheckpointError(
                f"checkpoint: {', '.join(changed)} inside {where} was in {was} mode during the forward pass but "
                f"is in {now} mode now, in backward; recomputing it would not reproduce the forward (dropout "
                f"masks, batch statistics). Call .{was}() only after backward, or backward before switching.")


def _outputs(out, fn):
    if isinstance(out, Tensor):
        return (out,), False
    if isinstance(out, tuple) and out and all(isinstance(o, Tensor) for o in out):
        return out, True
    raise CheckpointError(f"checkpoint: {fn_name(fn)} returned {type(out).__name__}; a checkpointed function "
                          "must return a Tensor or a tuple of Tensors (return other values outside it)")


class _Slot:
    """Where input k sat in the arguments (a placeholder in the saved structure)."""

    __slots__ = ("k",)

    def __init__(self, k):
        self.k = k


def _flatten(obj, inputs, index):
    """``obj`` with each tensor replaced by a ``_Slot``; the tensors appended to ``inputs`` (once each)."""
    if isinstance(obj, Tensor):
        k = index.get(id(obj))
        if k is None:
            k = index[id(obj)] = len(inputs)
            inputs.append(obj)
        return _Slot(k)
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_flatten(o, inputs, index) for o in obj)
    if isinstance(obj, dict):
        return type(obj)((key, _flatten(v, inputs, index)) for key, v in obj.items())
    return obj


def _fill(obj, tensors):
    """The inverse of ``_flatten``: put ``tensors[k]`` back where ``_Slot(k)`` stands."""
    if isinstance(obj, _Slot):
        return tensors[obj.k]
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_fill(o, tensors) for o in obj)
    if isinstance(obj, dict):
        return type(obj)((key, _fill(v, tensors)) for key, v in obj.items())
    return obj


def _observing(selection):
    """Let a policy's selection see every op of the segment (to tell its own tensors from outside ones)."""
    return autograd.op_observer(selection.observe) if selection is not None else nullcontext()


class CheckpointFunction(Function):
    """The node standing for a checkpointed segment: saves the inputs, recomputes in backward."""

    takes_grad_box = True
    spills = True

    def backward(self, box):
        where = fn_name(self.fn)
        arrays = self.saved
        if self.inputs is not None:
            # Plain storage: recompute from the inputs themselves, so the local backward hands each
            # gradient to them one by one, in the order (and so with the sums) of a plain backward.
            for t, a in zip(self.inputs, arrays):
                if self._unpack is None and t.data is not a:
                    raise CheckpointError(f"checkpoint: an input of {where} of shape {t.shape} was given new "
                                          "data (.data = ...) between forward and backward; recompute would "
                                          "not reproduce the forward. Change inputs only after backward.")
            leaves = list(self.inputs)
        else:
            leaves = [Tensor._make(a if a.dtype == dt else a.astype(dt), self.device, need, None, 0)
                      for a, dt, need in zip(arrays, self.in_dtypes, self.needs_input_grad)]
        del arrays
        args, kwargs = _fill(self.structure, leaves)
        check_same_modes(where, self.modes)
        selection = Selection(self.policy, self.kept, leaves) if self.policy is not None else None
        if not autograd.retains_graph():      # let go now, so each can be freed once backward is done with it
            self.saved, self.kept = (), None
        boundary = autograd.tape_position()
        with recomputing(self.rng_state), enable_grad(), selective(selection), _observing(selection):
            out = self.fn(*args, **kwargs)
        del selection, args, kwargs
        outs, _ = _outputs(out, self.fn)
        del out
        outs = [outs[k] for k in self.out_index] if len(outs) == self.n_all else outs
        check_same_meta(where, self.out_meta, [(o.shape, o.dtype) for o in outs])
        roots = [(o, box[k]) for k, o in enumerate(outs) if o.requires_grad]
        box.clear()
        del outs
        spilled = autograd.run_backward(roots, boundary=boundary)
        for (node, _), _ in spilled:
            if node.seq > self.seq:
                raise CheckpointError(f"checkpoint: recomputing {where} used a tensor computed after the "
                                      "checkpoint ran; a checkpointed function must use the same tensors in "
                                      "backward as in its forward pass")
        self.spilled = spilled
        if self.inputs is not None:
            return (None,) * len(leaves)
        return tuple(t.grad.data if (need and t.grad is not None) else None
                     for t, need in zip(leaves, self.needs_input_grad))

    def backward_flops(self):
        return 0   # the recomputed ops book their own FLOPs

    def release(self):
        super().release()
        self.fn = self.structure = self.kept = self.modes = self.inputs = None


def checkpoint(fn, *args, preserve_rng_state=True, policy=None, store_dtype=None, offload=False, budget=None,
               method="optimal", **kwargs):
    """Run ``fn(*args, **kwargs)`` keeping none of its activations; recompute them during backward.

    Returns what ``fn`` returns (a Tensor or a tuple of Tensors). Tensors may
    come positionally, by keyword, nested in lists/tuples/dicts, or captured
    from the enclosing scope; non-tensor arguments pass through unchanged;
    checkpoints nest. With ``preserve_rng_state`` (default) random ops such as
    dropout draw the same numbers when recomputed. ``policy`` (e.g.
    ``save_matmuls``) keeps chosen ops' outputs instead of recomputing them;
    ``store_dtype`` (e.g. ``"float16"``) stores the inputs in a narrower dtype;
    ``offload`` keeps them in host memory while they wait. See Note [What a
    checkpoint node sees]. With ``budget=`` (bytes, or "8MB") the function's
    op-level graph is planned instead (``method``: see ``solve``) and run
    under that plan (``graph_run.py``).
    """
    if not callable(fn):
        raise CheckpointError(f"checkpoint: the first argument must be callable, got {type(fn).__name__}")
    if not isinstance(preserve_rng_state, bool):
        raise CheckpointError(f"checkpoint: preserve_rng_state must be True or False, got {preserve_rng_state!r}")
    if not isinstance(method, str):
        raise ScheduleError(f"checkpoint: method must be a string naming a graph solver (e.g. 'optimal', "
                            f"'greedy'), got {type(method).__name__}")
    if budget is not None:
        from .graph_run import checkpoint_graph  # noqa: PLC0415 - graph plans load scipy only when used
        return checkpoint_graph(fn, args, kwargs, budget, method)
    check_policy(policy)
    storage = Storage(store_dtype, offload) if (store_dtype is not None or offload) else None
    if not autograd.is_grad_enabled():
        with selective(None):
            out = fn(*args, **kwargs)
        _outputs(out, fn)
        return out
    inputs, index = [], {}
    structure = _flatten((args, kwargs), inputs, index)
    rng_state = _random.get_rng_state(rng_devices(inputs)) if preserve_rng_state else None
    modes = module_modes(fn)
    selection = Selection(policy, inputs=inputs) if policy is not None else None
    with no_grad(), propagating_requires_grad(), selective(selection), _observing(selection):
        out = fn(*args, **kwargs)
    outs, is_tuple = _outputs(out, fn)
    del out
    out_index = [k for k, o in enumerate(outs) if o.requires_grad and o.dtype.kind == "f"]
    if not out_index:
        plain = tuple(o if not o.requires_grad else o.detach() for o in outs)
        return plain if is_tuple else plain[0]
    devs = {str(t.device) for t in inputs} | {str(o.device) for o in outs}
    if len(devs) > 1:
        raise CheckpointError(f"checkpoint: {fn_name(fn)} mixes devices {sorted(devs)}; keep a segment on one device")
    node = CheckpointFunction()
    node.requires_grad = True
    if storage is None:
        node.save_for_backward(*[t.data for t in inputs])
    else:
        with autograd.saved_arrays_hooks(storage.pack, storage.unpack):
            node.save_for_backward(*[t.data for t in inputs])
    node.in_dtypes = tuple(t.dtype for t in inputs)
    node.policy = policy
    node.kept = selection.kept if selection is not None else None
    node.fn, node.structure, node.modes = fn, structure, modes
    node.inputs = inputs if storage is None else None
    node.rng_state = rng_state
    node.n_outputs, node.n_all, node.out_index = len(out_index), len(outs), out_index
    node.spilled = []
    made = node.record(inputs, [outs[k].data for k in out_index], outs[out_index[0]].device)
    results = list(o if not o.requires_grad else o.detach() for o in outs)
    for j, k in enumerate(out_index):
        results[k] = made[j]
    return tuple(results) if is_tuple else results[0]
