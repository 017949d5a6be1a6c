"""Exercise (a): each backward against central differences (float64) and against minigrad's own op."""
import numpy as np
import pytest

import minigrad as mg

EXERCISE = "backward_ops"


def leaf(*shape, seed=0):
    return mg.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1))])
def test_mul_matches_finite_differences_with_broadcasting(exercise, shapes):
    a, b = leaf(*shapes[0], seed=1), leaf(*shapes[1], seed=2)
    assert mg.gradcheck(lambda a, b: exercise.Mul.apply(a, b), a, b)
    assert a.grad.shape == a.shape and b.grad.shape == b.shape


def test_tanh_matches_finite_differences(exercise):
    assert mg.gradcheck(lambda a: exercise.Tanh.apply(a), leaf(5, 3))


def test_matmul_matches_finite_differences(exercise):
    assert mg.gradcheck(lambda a, b: exercise.MatMul.apply(a, b), leaf(3, 4, seed=3), leaf(4, 2, seed=4))


def test_sum_matches_finite_differences(exercise):
    assert mg.gradcheck(lambda a: exercise.Sum.apply(a), leaf(2, 3))


def test_a_small_network_gets_minigrads_gradients(exercise):
    """tanh(x @ w) * s summed: your ops against minigrad's, gradient by gradient."""
    def grads(ops):
        x, w, s = leaf(8, 5, seed=5), leaf(5, 3, seed=6), leaf(3, seed=7)
        if ops is None:
            loss = ((x @ w).tanh() * s).sum()
        else:
            loss = ops.Sum.apply(ops.Mul.apply(ops.Tanh.apply(ops.MatMul.apply(x, w)), s))
        loss.backward()
        return [t.grad.numpy() for t in (x, w, s)]

    for mine, ref in zip(grads(exercise), grads(None)):
        np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-12)
