"""Exercise (f): a selective-recompute policy chosen for a memory limit (chapter 7b).

A policy is a function of an op class that returns True to keep that op's output through the
forward pass instead of recomputing it: ``checkpoint(fn, x, policy=...)``. Only ops that can reuse
a kept output may be kept; ``replayable_ops()`` lists them (today ``MatMul`` and ``Linear``).

* ``policy_from_names(names)``: a policy keeping exactly the ops named, e.g. {"Linear"}; a name that
  is not a replayable op raises ``mg.CheckpointError`` whose message lists the ones that are.
* ``choose_policy(fn, x, budget)``: among every set of replayable op names, the one whose kept bytes
  (``kept_and_recompute`` below measures them) fit ``budget`` with the fewest recomputed FLOPs
  (ties: the fewer kept bytes). Returns ``(names, kept_bytes, recompute_flops)``.

    pytest exercises/test_selective_policy.py
"""
import gc
import itertools

import minigrad as mg
from minigrad import profiler
from minigrad.checkpoint import checkpoint
from minigrad.checkpoint.policies import replayable_ops


def kept_and_recompute(fn, x, policy):
    """(bytes kept between forward and backward, recomputed FLOPs) of one step of checkpoint(fn, x)."""
    gc.collect()
    with mg.profile() as prof:
        before = profiler.live_bytes()
        y = checkpoint(fn, x, policy=policy)
        kept = profiler.live_bytes() - before - y.data.nbytes
        y.sum().backward()
        del y
    return kept, prof.flops["recompute"]


def policy_from_names(names):
    """A policy that keeps the outputs of the ops named in ``names``."""
    raise NotImplementedError("exercise (f): write policy_from_names")


def choose_policy(fn, x, budget):
    """(names, kept bytes, recomputed FLOPs) of the cheapest policy whose kept bytes fit ``budget``."""
    raise NotImplementedError("exercise (f): write choose_policy")
