"""Property tests over shapes and broadcasting (hypothesis), in the spirit of minitorch's tensor strategies.

Gradients of broadcasting ops are checked against an independent NumPy oracle:
the gradient of an operand is the output-shaped gradient summed over every
output position that read that element, computed with ``np.bincount`` over the
broadcast element indices (not with the library's ``unbroadcast``).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def broadcast_shapes(draw, n=2, max_dims=4, max_side=4):
    """``n`` shapes that broadcast together: from one full shape, each drops leading axes and sets some sides to 1."""
    full = draw(st.lists(st.integers(1, max_side), min_size=0, max_size=max_dims))

    def operand():
        keep = draw(st.integers(0, len(full)))
        tail = full[len(full) - keep:]
        return tuple(1 if draw(st.booleans()) else s for s in tail)
    return tuple(operand() for _ in range(n))


def broadcast_pair(max_dims=4, max_side=4):
    return broadcast_shapes(2, max_dims, max_side)


def reduce_to(grad_out, shape):
    """Sum ``grad_out`` into ``shape`` by counting which element of the operand each output read."""
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    index = np.broadcast_to(index, grad_out.shape)
    return np.bincount(index.ravel(), weights=grad_out.ravel(), minlength=int(np.prod(shape))).reshape(shape)


def _leaf(arr):
    return mg.tensor(np.asarray(arr, dtype=np.float64), requires_grad=True)


# op -> (minigrad fn, forward in NumPy, (d/da, d/db) as functions of broadcast a, b)
BINARY = {
    "add": (lambda a, b: a + b, np.add, lambda a, b: (np.ones_like(a), np.ones_like(b))),
    "sub": (lambda a, b: a - b, np.subtract, lambda a, b: (np.ones_like(a), -np.ones_like(b))),
    "mul": (lambda a, b: a * b, np.multiply, lambda a, b: (b, a)),
    "div": (lambda a, b: a / b, np.divide, lambda a, b: (1 / b, -a / (b * b))),
    "maximum": (mg.maximum, np.maximum, lambda a, b: ((a >= b) * 1.0, (a < b) * 1.0)),
}


@pytest.mark.parametrize("name", list(BINARY))
@SETTINGS
@given(shapes=broadcast_pair(), seed=st.integers(0, 2**32 - 1))
def test_binary_broadcasting_gradients(name, shapes, seed):
    fn, np_fn, deriv = BINARY[name]
    sa, sb = shapes
    r = np.random.default_rng(seed)
    a = r.standard_normal(sa)
    b = r.uniform(0.5, 2.0, sb) * r.choice([-1.0, 1.0], sb)  # away from 0 for div
    ta, tb = _leaf(a), _leaf(b)
    out = fn(ta, tb)
    expect = np_fn(a, b)
    assert out.shape == expect.shape
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-12)

    w = r.standard_normal(out.shape)
    out.backward(w)
    assert ta.grad.shape == sa and tb.grad.shape == sb
    assert ta.grad.dtype == tb.grad.dtype == np.float64
    ab, bb = np.broadcast_arrays(a, b)
    da, db = deriv(ab, bb)
    np.testing.assert_allclose(ta.grad.numpy(), reduce_to(w * da, sa), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tb.grad.numpy(), reduce_to(w * db, sb), rtol=1e-10, atol=1e-12)


@SETTINGS
@given(shapes=broadcast_pair(max_dims=3, max_side=3), seed=st.integers(0, 2**32 - 1))
def test_pow_broadcasting_matches_finite_differences(shapes, seed):
    r = np.random.default_rng(seed)
    a, b = _leaf(r.uniform(0.5, 2.0, shapes[0])), _leaf(r.uniform(-2.0, 2.0, shapes[1]))
    assert mg.gradcheck(lambda x, y: x ** y, a, b)


@SETTINGS
@given(shapes=broadcast_shapes(3), seed=st.integers(0, 2**32 - 1))
def test_where_broadcasting_gradients(shapes, seed):
    sa, sb, sc = shapes
    out_shape = np.broadcast_shapes(sa, sb, sc)
    r = np.random.default_rng(seed)
    a, b, cond = r.standard_normal(sa), r.standard_normal(sb), r.random(sc) > 0.5
    ta, tb = _leaf(a), _leaf(b)
    out = mg.where(mg.tensor(cond), ta, tb)
    np.testing.assert_array_equal(out.numpy(), np.where(cond, a, b))
    assert out.shape == out_shape
    w = r.standard_normal(out_shape)
    out.backward(w)
    cb = np.broadcast_to(cond, out_shape)
    np.testing.assert_allclose(ta.grad.numpy(), reduce_to(w * cb, sa), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tb.grad.numpy(), reduce_to(w * ~cb, sb), rtol=1e-12, atol=1e-12)


@st.composite
def shape_and_axes(draw, max_dims=4, max_side=4):
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=max_dims)))
    if draw(st.booleans()):
        axis = None
    else:
        picked = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True))
        # also exercise negative axes and a bare int
        picked = [a - len(shape) if draw(st.booleans()) else a for a in picked]
        axis = picked[0] if len(picked) == 1 and draw(st.booleans()) else tuple(picked)
    return shape, axis, draw(st.booleans())


@SETTINGS
@given(case=shape_and_axes(), seed=st.integers(0, 2**32 - 1))
def test_sum_and_mean_over_random_axes(case, seed):
    shape, axis, keepdims = case
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape)
    for name, np_fn in (("sum", np.sum), ("mean", np.mean)):
        t = _leaf(x)
        out = getattr(t, name)(axis=axis, keepdims=keepdims)
        expect = np_fn(x, axis=axis, keepdims=keepdims)
        assert out.shape == np.shape(expect)
        np.testing.assert_allclose(out.numpy(), expect, rtol=1e-12, atol=1e-12)
        w = r.standard_normal(out.shape)
        out.backward(w)
        w_full = np.broadcast_to(np.expand_dims(w, axis) if not keepdims and axis is not None
                                 else w, shape)
        n = x.size // max(np.asarray(expect).size, 1)
        assert t.grad.shape == shape
        np.testing.assert_allclose(t.grad.numpy(), w_full if name == "sum" else w_full / n, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(case=shape_and_axes(max_dims=3, max_side=3), seed=st.integers(0, 2**32 - 1), ddof=st.sampled_from([0, 1]))
def test_max_and_var_over_random_axes(case, seed, ddof):
    shape, axis, keepdims = case
    r = np.random.default_rng(seed)
    x = r.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + r.uniform(0, 0.01)  # no ties in max
    t = _leaf(x)
    np.testing.assert_allclose(t.max(axis=axis, keepdims=keepdims).numpy(), np.max(x, axis=axis, keepdims=keepdims))
    assert mg.gradcheck(lambda a: a.max(axis=axis, keepdims=keepdims), t)
    n = x.size // np.max(x, axis=axis, keepdims=True).size
    if n > ddof:
        np.testing.assert_allclose(t.var(axis=axis, keepdims=keepdims, ddof=ddof).numpy(),
                                   np.var(x, axis=axis, keepdims=keepdims, ddof=ddof), rtol=1e-10, atol=1e-14)
        assert mg.gradcheck(lambda a: a.var(axis=axis, keepdims=keepdims, ddof=ddof), t)


@st.composite
def shape_and_permutation(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=4)))
    perm = draw(st.permutations(range(len(shape))))
    perm = tuple(p - len(shape) if draw(st.booleans()) else p for p in perm)
    return shape, perm


@SETTINGS
@given(case=shape_and_permutation(), seed=st.integers(0, 2**32 - 1))
def test_transpose_round_trip(case, seed):
    shape, perm = case
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape)
    t = _leaf(x)
    y = t.transpose(perm)
    np.testing.assert_array_equal(y.numpy(), np.transpose(x, perm))
    w = r.standard_normal(y.shape)
    y.backward(w)
    assert t.grad.shape == shape
    np.testing.assert_array_equal(t.grad.numpy(), np.transpose(w, np.argsort([p % len(shape) for p in perm])))
    back = t.transpose(perm).transpose(tuple(np.argsort([p % len(shape) for p in perm])))
    np.testing.assert_array_equal(back.numpy(), x)


@st.composite
def shape_and_reshape(draw):
    sides = draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=0, max_size=4))
    shape = tuple(sides)
    regrouped = list(draw(st.permutations(sides)))
    if regrouped and draw(st.booleans()):
        regrouped[draw(st.integers(0, len(regrouped) - 1))] = -1
    return shape, tuple(regrouped)


@SETTINGS
@given(case=shape_and_reshape(), seed=st.integers(0, 2**32 - 1))
def test_reshape_round_trip(case, seed):
    shape, new = case
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape)
    t = _leaf(x)
    y = t.reshape(new)
    np.testing.assert_array_equal(y.numpy(), x.reshape(new))
    back = y.reshape(shape)
    np.testing.assert_array_equal(back.numpy(), x)
    w = r.standard_normal(shape)
    back.backward(w)
    assert t.grad.shape == shape
    np.testing.assert_array_equal(t.grad.numpy(), w)


@SETTINGS
@given(shapes=broadcast_pair(max_dims=3), seed=st.integers(0, 2**32 - 1))
def test_float32_broadcasting_keeps_float32(shapes, seed):
    sa, sb = shapes
    r = np.random.default_rng(seed)
    a = mg.tensor(r.standard_normal(sa).astype(np.float32), requires_grad=True)
    b = mg.tensor(r.uniform(0.5, 2, sb).astype(np.float32), requires_grad=True)
    out = (a * b + a / b - mg.maximum(a, b)).sum()
    assert out.dtype == np.float32
    out.backward()
    assert a.grad.dtype == b.grad.dtype == np.float32
    assert a.grad.shape == sa and b.grad.shape == sb
