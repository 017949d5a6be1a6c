"""Exercise (c): √L segment checkpointing, written as a schedule of actions.

A schedule is a list of ``Action(kind, i)`` over the activations x_0..x_L (chapter 5):
``advance i`` runs layer i without recording, ``record i`` runs it recording, ``reverse i``
backpropagates through the recorded layer i, ``keep i`` stores the current x_i in a slot,
``restore i`` makes a stored x_i current again, and ``drop i`` frees its slot. x_0 is always in a
slot. ``Schedule(name, L, actions)`` checks that the actions make sense and ``.simulate()`` prices
them; ``run_schedule(layers, x, schedule)`` runs them on a real chain.

Cut the chain into k = ⌈√L⌉ segments of nearly equal length (segment j runs from
round(j·L/k) to round((j+1)·L/k)). Forward pass: keep each segment's input and advance through
it, except the last segment, which is recorded straight away. Backward: reverse the last segment,
then for each earlier segment, from last to first, restore its input, record it and reverse it.

    pytest exercises/test_sqrt_actions.py
"""
import math

from minigrad.checkpoint.schedules import Action


def sqrt_actions(L):
    """The actions of √L placement for a chain of L layers."""
    raise NotImplementedError("exercise (c): write sqrt_actions")
