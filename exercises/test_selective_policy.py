"""Exercise (f): the policy keeps what it names, refuses what it cannot keep, and the choice is the
cheapest that fits, measured on one attention layer."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import ops
from minigrad.checkpoint import checkpoint, save_linears, save_matmuls, save_nothing

EXERCISE = "selective_policy"


@pytest.fixture
def attention():
    mg.manual_seed(0)
    layer = mg.nn.SelfAttention(16)
    x = mg.tensor(np.random.default_rng(0).standard_normal((2, 128, 16)).astype(np.float32), requires_grad=True)
    return layer, x


def test_a_policy_keeps_exactly_the_ops_it_names(exercise):
    only_linear = exercise.policy_from_names({"Linear"})
    assert only_linear(ops.Linear) and not only_linear(ops.MatMul)
    both = exercise.policy_from_names({"Linear", "MatMul"})
    assert both(ops.Linear) and both(ops.MatMul) and not both(ops.Tanh)
    assert not any(exercise.policy_from_names(set())(op) for op in (ops.Linear, ops.MatMul))


def test_an_op_that_cannot_be_kept_is_refused_with_the_choices(exercise):
    with pytest.raises(mg.CheckpointError, match="MatMul"):
        exercise.policy_from_names({"Linear", "Tanh"})


def test_the_choice_is_the_cheapest_that_fits(exercise, attention):
    layer, x = attention
    measure = exercise.kept_and_recompute
    linears, matmuls, nothing = (measure(layer, x, p) for p in (save_linears, save_matmuls, save_nothing))
    both = measure(layer, x, lambda op: op in (ops.Linear, ops.MatMul))
    names, kept, flops = exercise.choose_policy(layer, x, budget=10**9)
    assert (names, kept, flops) == ({"Linear", "MatMul"}, *both), "room for everything: keep both"
    names, kept, flops = exercise.choose_policy(layer, x, budget=linears[0])
    assert (names, kept, flops) == ({"Linear"}, *linears), "room for the projections only"
    assert linears[0] < matmuls[0], "keeping Q Kᵀ (a MatMul) costs T² bytes"
    names, kept, flops = exercise.choose_policy(layer, x, budget=linears[0] - 1)
    assert (names, kept, flops) == (set(), *nothing), "no room: recompute everything"


def test_gradients_are_identical_under_the_chosen_policy(exercise, attention):
    layer, x = attention
    names, _, _ = exercise.choose_policy(layer, x, budget=10**5)

    def grads(policy):
        layer.zero_grad()
        x.grad = None
        y = layer(x) if policy is None else checkpoint(layer, x, policy=policy)
        (y * y).sum().backward()
        return [x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in layer.parameters()]

    for a, b in zip(grads(exercise.policy_from_names(names)), grads(None)):
        assert np.array_equal(a, b)
