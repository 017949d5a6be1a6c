"""Exercise (c): the schedule is valid, as cheap as minigrad's √L placement, and exact when run."""
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad.checkpoint import run_schedule, schedules as S

EXERCISE = "sqrt_actions"


@pytest.mark.parametrize("L", [1, 2, 3, 7, 16, 30, 64, 100])
def test_schedule_is_valid_and_as_cheap_as_sqrt_placement(exercise, L):
    mine = S.Schedule("mine", L, exercise.sqrt_actions(L)).simulate()   # raises if an action is illegal
    ref = S.sqrt(L).simulate()
    k = math.isqrt(L - 1) + 1
    assert mine.layer_forwards <= 2 * L, "at most one extra forward per layer"
    assert mine.layer_forwards == ref.layer_forwards, "the last segment is recorded once, never recomputed"
    assert mine.peak_units <= ref.peak_units, "about k + L/k units, no more than minigrad's own"
    assert mine.peak_slots <= k, "one slot per segment input at most (x_0 counted)"


def test_running_it_gives_the_gradients_of_no_checkpointing(exercise):
    mg.set_default_dtype(np.float64)
    layers = [mg.nn.Sequential(mg.nn.Linear(8, 8), mg.nn.Tanh()) for _ in range(10)]
    x = mg.tensor(np.random.default_rng(0).standard_normal((4, 8)), requires_grad=True)

    def grads(schedule):
        for layer in layers:
            layer.zero_grad()
        x.grad = None
        (run_schedule(layers, x, schedule) ** 2).sum().backward()
        return [x.grad.numpy()] + [p.grad.numpy() for layer in layers for p in layer.parameters()]

    mine = grads(S.Schedule("mine", 10, exercise.sqrt_actions(10)))
    for a, b in zip(mine, grads(S.none(10))):
        assert np.array_equal(a, b), "recompute must give bit-identical gradients"
