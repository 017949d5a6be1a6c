"""Exercise (e): a segment checkpoint that is safe with BatchNorm and dropout (chapter 4).

``SegmentCheckpoint.apply(x, fn=segment)`` must run ``segment`` without keeping its activations,
and in backward run it again, recording, to get the gradients. Two things make that recompute
invisible:

* **random numbers**: dropout must draw the same mask in the recompute as in the forward pass,
  and afterwards the generators must be exactly where they would be without checkpointing;
  ``mg.random.get_rng_state()`` and ``mg.random.set_rng_state(state)`` read and set them;
* **BatchNorm**: its running statistics must be updated once per real forward, not again in the
  recompute. BatchNorm skips the update while ``mg.autograd.is_recomputing()`` is true, which
  ``recomputing()`` (imported below) arranges; it also books the recompute's FLOPs.

Fill in ``replay`` and the two methods. ``mg.no_grad()`` and ``mg.enable_grad()`` switch
recording off and on; ``mg.tensor(array, requires_grad=True)`` wraps an array as a fresh leaf,
and ``y.backward(grad)`` backpropagates a gradient array through a recorded result ``y``.

    pytest exercises/test_safe_checkpoint.py
"""
from contextlib import contextmanager

import minigrad as mg
from minigrad.autograd import Function
from minigrad.autograd import recomputing


@contextmanager
def replay(rng_state):
    """Run the block as a recompute: the generators at ``rng_state`` inside it, and where they
    were before it once it ends; BatchNorm's update switched off."""
    raise NotImplementedError("exercise (e): write replay")
    yield


class SegmentCheckpoint(Function):
    """``fn(x)`` as one node that saves only ``x`` and the random state, and recomputes in backward."""

    def forward(self, x, fn):
        # keep fn, the random state and x; run fn on a tensor wrapping x without recording
        raise NotImplementedError("exercise (e): write SegmentCheckpoint.forward")

    def backward(self, grad):
        # run fn again on a fresh leaf, recording, inside replay(...); backpropagate grad through
        # it (parameters inside fn receive their gradients); return the leaf's gradient
        raise NotImplementedError("exercise (e): write SegmentCheckpoint.backward")
