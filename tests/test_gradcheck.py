"""Every op's backward against central finite differences in float64 (``mg.gradcheck``).

Inputs are kept away from kinks (relu and abs at 0, clip at its bounds, ties
in max), where the derivative is undefined and finite differences straddle it.
"""
import numpy as np
import pytest

import minigrad as mg
from minigrad import ops
from minigrad.nn import functional as F


def rng(seed=0):
    return np.random.default_rng(seed)


def leaf(arr):
    return mg.tensor(np.asarray(arr, dtype=np.float64), requires_grad=True)


def normal(*shape, seed=0):
    return leaf(rng(seed).standard_normal(shape))


def positive(*shape, seed=0, lo=0.5, hi=2.0):
    return leaf(rng(seed).uniform(lo, hi, shape))


def away_from_zero(*shape, seed=0, lo=0.1, hi=1.5):
    r = rng(seed)
    return leaf(r.uniform(lo, hi, shape) * r.choice([-1.0, 1.0], shape))


def distinct(*shape, seed=0):
    """Values at least 0.1 apart, so max has no ties within eps."""
    n = int(np.prod(shape))
    return leaf((rng(seed).permutation(n) * 0.1 - 0.05 * n).reshape(shape))


# --------------------------------------------------------------------------- the checker itself


class _WrongSquare(mg.autograd.Function):
    """x**2 with a deliberately wrong backward (x instead of 2x)."""

    def forward(self, a):
        self.save_for_backward(a)
        return a * a

    def backward(self, g):
        return (g * self.saved[0],)


def test_gradcheck_passes_a_correct_op():
    assert mg.gradcheck(lambda x: x * x, normal(3, 2)) is True


def test_gradcheck_catches_a_wrong_backward_and_says_where():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(mg.GradcheckError) as info:
        mg.gradcheck(lambda a: _WrongSquare.apply(a), x)
    msg = str(info.value)
    assert "d/d input[0] at index (0, 0)" in msg
    assert "backward gave" in msg and "central difference gave" in msg
    assert "4 of 4 entries disagree" in msg
    assert isinstance(info.value, mg.MinigradError) and isinstance(info.value, AssertionError)


def test_gradcheck_catches_a_missing_gradient():
    x, y = normal(3), normal(3, seed=1)
    with pytest.raises(mg.GradcheckError, match=r"input\[1\]"):
        mg.gradcheck(lambda a, b: a * b.detach(), x, y)


def test_gradcheck_weights_outputs_so_softmax_rows_count():
    # the sum of a softmax row is 1 whatever the input: a plain sum would see gradient 0 and pass anything.
    class ZeroGradSoftmax(ops.Softmax):
        def backward(self, g):
            return (g * 0,)
    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(lambda a: ZeroGradSoftmax.apply(a, axis=-1), normal(2, 3))


def test_gradcheck_refuses_float32():
    x = mg.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(mg.DTypeError, match="float32.*float64"):
        mg.gradcheck(lambda a: a * a, x)


def test_gradcheck_needs_an_input_with_grad():
    with pytest.raises(mg.GradcheckError, match="requires_grad"):
        mg.gradcheck(lambda a: a * a, mg.tensor(np.ones(3)))


def test_gradcheck_restores_inputs():
    x = normal(2, 3)
    before = x.numpy().copy()
    mg.gradcheck(lambda a: a.exp(), x)
    np.testing.assert_array_equal(x.numpy(), before)


# --------------------------------------------------------------------------- elementwise binary with broadcasting

BROADCAST = [((3, 4), (3, 4)), ((3, 1, 4), (5, 1)), ((4,), ()), ((2, 3), (3,)), ((1, 3), (2, 1)),
             ((), (2, 2)), ((2, 1, 3), (2, 4, 1))]
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
    "maximum": mg.maximum,
}


@pytest.mark.parametrize("sa,sb", BROADCAST, ids=[f"{a}x{b}" for a, b in BROADCAST])
@pytest.mark.parametrize("name", list(BINARY))
def test_binary(name, sa, sb):
    if name in ("div", "pow"):
        a, b = positive(*sa, seed=1), away_from_zero(*sb, seed=2, lo=0.5)
    elif name == "maximum":
        n = int(np.prod(sa)) + int(np.prod(sb))
        vals = rng(3).permutation(n) * 0.1
        a, b = leaf(vals[:int(np.prod(sa))].reshape(sa)), leaf(vals[int(np.prod(sa)):].reshape(sb))
    else:
        a, b = normal(*sa, seed=1), normal(*sb, seed=2)
    out = BINARY[name](a, b)
    assert out.shape == np.broadcast_shapes(sa, sb)
    assert mg.gradcheck(BINARY[name], a, b)


@pytest.mark.parametrize("sa,sb,sc", [((3, 4), (3, 4), (3, 4)), ((3, 1, 4), (5, 1), (5, 4)),
                                      ((2, 3), (3,), (2, 1)), ((3,), (3,), (4, 1, 1))])
def test_where(sa, sb, sc):
    cond = mg.tensor(rng(4).random(sc) > 0.5)
    a, b = normal(*sa, seed=1), normal(*sb, seed=2)
    assert mg.where(cond, a, b).shape == np.broadcast_shapes(sa, sb, sc)
    assert mg.gradcheck(lambda x, y: mg.where(cond, x, y), a, b)


@pytest.mark.parametrize("fn", [
    lambda x: x ** 2, lambda x: x ** 3, lambda x: x ** 0.5, lambda x: x ** -1.5,
    lambda x: 2.0 ** x, lambda x: 3 - x, lambda x: 2 / x, lambda x: 1 + x * 4,
], ids=["sq", "cube", "sqrt", "neg-power", "rpow", "rsub", "rdiv", "scalars"])
def test_scalar_operands(fn):
    assert mg.gradcheck(fn, positive(2, 3))


def test_integer_power_of_negative_base():
    assert mg.gradcheck(lambda x: x ** 3, away_from_zero(2, 3))


# --------------------------------------------------------------------------- matmul and linear

MATMUL = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)),
          ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (2, 4, 5)), ((2, 3, 4), (4,))]


@pytest.mark.parametrize("sa,sb", MATMUL, ids=[f"{a}@{b}" for a, b in MATMUL])
def test_matmul(sa, sb):
    a, b = normal(*sa, seed=1), normal(*sb, seed=2)
    out = a @ b
    np.testing.assert_allclose(out.numpy(), np.matmul(a.numpy(), b.numpy()), rtol=1e-12)
    assert mg.gradcheck(lambda x, y: x @ y, a, b)


@pytest.mark.parametrize("xshape", [(5, 3), (3,), (2, 4, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(xshape, bias):
    x, w = normal(*xshape, seed=1), normal(2, 3, seed=2)
    args = (x, w, normal(2, seed=3)) if bias else (x, w)
    out = F.linear(*args)
    expect = x.numpy() @ w.numpy().T + (args[2].numpy() if bias else 0)
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-12)
    assert mg.gradcheck(F.linear, *args)


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("xshape", [(5, 3), (3,), (2, 4, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_with_activation(xshape, bias, act):
    x, w = normal(*xshape, seed=1), normal(2, 3, seed=2)
    args = (x, w, normal(2, seed=3)) if bias else (x, w, None)
    out = F.linear(*args, activation=act)
    pre = x.numpy() @ w.numpy().T + (args[2].numpy() if bias else 0)
    np.testing.assert_allclose(out.numpy(), np.maximum(pre, 0) if act == "relu" else np.tanh(pre), rtol=1e-12)
    if bias:
        assert mg.gradcheck(lambda a, b, c: F.linear(a, b, c, activation=act), *args)
    else:
        assert mg.gradcheck(lambda a, b: F.linear(a, b, activation=act), x, w)


def test_linear_gradient_only_for_weight():
    x = mg.tensor(rng(1).standard_normal((4, 3)))
    assert mg.gradcheck(lambda w, b: F.linear(x, w, b), normal(2, 3), normal(2, seed=1))


# --------------------------------------------------------------------------- elementwise unary

UNARY = {
    "neg": (lambda x: -x, normal),
    "exp": (lambda x: x.exp(), normal),
    "log": (lambda x: x.log(), positive),
    "tanh": (lambda x: x.tanh(), normal),
    "sigmoid": (lambda x: x.sigmoid(), normal),
    "relu": (lambda x: x.relu(), away_from_zero),
    "F.relu": (F.relu, away_from_zero),
    "sqrt": (lambda x: x.sqrt(), positive),
    "abs": (lambda x: abs(x), away_from_zero),
    "clip-both": (lambda x: x.clip(-0.5, 0.5), lambda *s: away_from_zero(*s, lo=0.05, hi=0.95)),
    "clip-min": (lambda x: x.clip(min=0.3), lambda *s: away_from_zero(*s, lo=0.05, hi=0.25) + 0.3),
    "clip-max": (lambda x: x.clip(max=-0.3), normal),
    "gelu": (lambda x: F.gelu(x), normal),
    "gelu-tanh": (lambda x: F.gelu(x, approximate="tanh"), normal),
    "mg.exp": (mg.exp, normal), "mg.log": (mg.log, positive), "mg.tanh": (mg.tanh, normal),
    "mg.sigmoid": (mg.sigmoid, normal), "mg.sqrt": (mg.sqrt, positive), "mg.relu": (mg.relu, away_from_zero),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary(name):
    fn, make = UNARY[name]
    x = make(3, 4)
    if not x.is_leaf:
        x = leaf(x.numpy())
    assert mg.gradcheck(fn, x)


def test_clip_passes_gradient_only_inside():
    x = leaf([-2.0, -0.2, 0.2, 2.0])
    x.clip(-1, 1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 1, 0])


def test_dropout_fixed_mask():
    mask = (rng(5).random((3, 4)) > 0.3) / 0.7
    x = normal(3, 4)
    out = ops.Dropout.apply(x, mask=mask)
    np.testing.assert_allclose(out.numpy(), x.numpy() * mask)
    assert mg.gradcheck(lambda a: ops.Dropout.apply(a, mask=mask), x)


def test_functional_dropout_with_replayed_seed():
    def fn(a):
        mg.manual_seed(7)
        return F.dropout(a, p=0.4)
    x = normal(4, 5)
    out = fn(x).numpy()
    assert 0 < np.count_nonzero(out == 0) < out.size
    assert mg.gradcheck(fn, x)


# --------------------------------------------------------------------------- reductions

AXES = [None, 0, 1, 2, -1, (0, 2), (1, 2), (0, 1, 2), ()]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "max", "var"])
def test_reduction(name, axis, keepdims):
    x = distinct(2, 3, 4, seed=1)
    out = getattr(x, name)(axis=axis, keepdims=keepdims)
    np_fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "var": np.var}[name]
    expect = np_fn(x.numpy(), axis=axis, keepdims=keepdims)
    assert out.shape == expect.shape
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-12, atol=1e-12)
    assert mg.gradcheck(lambda a: getattr(a, name)(axis=axis, keepdims=keepdims), x)


@pytest.mark.parametrize("axis", [None, 0, (0, 1)], ids=str)
def test_var_unbiased(axis):
    x = normal(3, 4)
    np.testing.assert_allclose(x.var(axis=axis, ddof=1).numpy(), np.var(x.numpy(), axis=axis, ddof=1))
    assert mg.gradcheck(lambda a: a.var(axis=axis, ddof=1), x)


def test_reduction_of_scalar_and_vector():
    assert mg.gradcheck(lambda a: a.sum() * a.mean(), normal(5))
    assert mg.gradcheck(lambda a: a.exp().sum(), leaf(1.5))


def test_max_ties_share_gradient():
    x = leaf([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0.5, 0.5], [1, 0, 0]])


# --------------------------------------------------------------------------- movement

@pytest.mark.parametrize("shape", [(6, 4), (-1,), (4, 6), (2, 12), (1, 24, 1), (2, 3, 2, 2)], ids=str)
def test_reshape(shape):
    x = normal(2, 3, 4)
    assert x.reshape(shape).shape == np.empty((2, 3, 4)).reshape(shape).shape
    assert mg.gradcheck(lambda a: a.reshape(shape), x)
    assert mg.gradcheck(lambda a: a.reshape(*shape), x)


@pytest.mark.parametrize("axes", [None, (1, 0, 2), (2, 0, 1), (0, -1, 1), (-1, -3, -2)], ids=str)
def test_transpose(axes):
    x = normal(2, 3, 4)
    np.testing.assert_array_equal(x.transpose(axes).numpy(), np.transpose(x.numpy(), axes))
    assert mg.gradcheck(lambda a: a.transpose(axes), x)


def test_T():
    x = normal(3, 4)
    np.testing.assert_array_equal(x.T.numpy(), x.numpy().T)
    assert mg.gradcheck(lambda a: a.T @ a, x)


INDEXES = {
    "int": 1,
    "negative int": -1,
    "slice": (slice(None), slice(1, 3)),
    "strided": (slice(None, None, -1), slice(None, None, 2)),
    "ellipsis": (Ellipsis, 0),
    "newaxis": (None, 1),
    "repeated ints": np.array([0, 2, 0, 0]),
    "repeated list": [3, 3, 1],
    "2-D repeated": (np.array([0, 0, 1, 0]), np.array([1, 1, 2, 1])),
    "array after slice": (slice(None), np.array([0, 0, 2])),
    "bool rows": np.array([True, False, True, True]),
    "bool mask": "mask",
    "int tensor": "tensor",
}


@pytest.mark.parametrize("name", list(INDEXES))
def test_getitem(name):
    x = normal(4, 3)
    index = INDEXES[name]
    if name == "bool mask":
        index = x.numpy() > 0.1
    elif name == "int tensor":
        index = mg.tensor(np.array([2, 2, 0]))
    raw = index.data if isinstance(index, mg.Tensor) else index
    np.testing.assert_array_equal(x[index].numpy(), x.numpy()[raw])
    assert mg.gradcheck(lambda a: a[index], x)


def test_getitem_repeated_indices_add_up():
    x = leaf([10.0, 20.0, 30.0])
    x[np.array([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3, 0, 1])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate(axis):
    shapes = [(2, 3), (2, 1), (2, 2)] if axis != 0 else [(2, 3), (1, 3), (3, 3)]
    xs = [normal(*s, seed=i) for i, s in enumerate(shapes)]
    np.testing.assert_array_equal(mg.concatenate(xs, axis=axis).numpy(),
                                  np.concatenate([x.numpy() for x in xs], axis=axis))
    assert mg.gradcheck(lambda *ts: mg.concatenate(ts, axis=axis), *xs)


def test_concatenate_with_a_constant():
    c = mg.tensor(np.ones((1, 3)))
    assert mg.gradcheck(lambda a: mg.concatenate([c, a, c], axis=0), normal(2, 3))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(axis):
    xs = [normal(2, 3, seed=i) for i in range(3)]
    np.testing.assert_array_equal(mg.stack(xs, axis=axis).numpy(), np.stack([x.numpy() for x in xs], axis=axis))
    assert mg.gradcheck(lambda *ts: mg.stack(ts, axis=axis), *xs)


# --------------------------------------------------------------------------- fused layers and losses

@pytest.mark.parametrize("shape,axis", [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((4,), 0)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax(name, shape, axis):
    x = normal(*shape)
    fn = getattr(F, name)
    e = np.exp(x.numpy() - x.numpy().max(axis=axis, keepdims=True))
    p = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(fn(x, axis=axis).numpy(), p if name == "softmax" else np.log(p), rtol=1e-12)
    assert mg.gradcheck(lambda a: fn(a, axis=axis), x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(reduction):
    logits = normal(5, 4)
    target = np.array([0, 3, 3, 1, 0])
    logp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(axis=1, keepdims=True))
    picked = -logp[np.arange(5), target]
    expect = {"mean": picked.mean(), "sum": picked.sum(), "none": picked}[reduction]
    np.testing.assert_allclose(F.cross_entropy(logits, target, reduction=reduction).numpy(), expect, rtol=1e-12)
    assert mg.gradcheck(lambda a: F.cross_entropy(a, mg.tensor(target), reduction=reduction), logits)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)], ids=str)
def test_batch_norm_training(shape):
    x, w, b = normal(*shape), normal(3, seed=1), normal(3, seed=2)
    axes = (0,) if len(shape) == 2 else (0, 2)
    bshape = (1, 3) if len(shape) == 2 else (1, 3, 1)
    xn = x.numpy()
    xhat = (xn - xn.mean(axis=axes, keepdims=True)) / np.sqrt(xn.var(axis=axes, keepdims=True) + 1e-5)
    expect = xhat * w.numpy().reshape(bshape) + b.numpy().reshape(bshape)
    np.testing.assert_allclose(F.batch_norm(x, None, None, w, b).numpy(), expect, rtol=1e-10, atol=1e-12)
    assert mg.gradcheck(lambda a, c, d: F.batch_norm(a, None, None, c, d, training=True), x, w, b)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)], ids=str)
def test_batch_norm_eval(shape):
    rm, rv = mg.tensor(rng(3).standard_normal(3)), mg.tensor(rng(4).uniform(0.5, 2, 3))
    fn = lambda a, c, d: F.batch_norm(a, rm, rv, c, d, training=False)  # noqa: E731
    assert mg.gradcheck(fn, normal(*shape), normal(3, seed=1), normal(3, seed=2))


@pytest.mark.parametrize("xshape,nshape", [((4, 5), (5,)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4))], ids=str)
def test_layer_norm(xshape, nshape):
    x, w, b = normal(*xshape), normal(*nshape, seed=1), normal(*nshape, seed=2)
    axes = tuple(range(len(xshape) - len(nshape), len(xshape)))
    xn = x.numpy()
    xhat = (xn - xn.mean(axis=axes, keepdims=True)) / np.sqrt(xn.var(axis=axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(F.layer_norm(x, nshape, w, b).numpy(), xhat * w.numpy() + b.numpy(), rtol=1e-10,
                               atol=1e-12)
    assert mg.gradcheck(lambda a, c, d: F.layer_norm(a, nshape, c, d), x, w, b)
    assert mg.gradcheck(lambda a: F.layer_norm(a, nshape), x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(reduction):
    target = mg.tensor(rng(9).standard_normal((3, 4)))
    assert mg.gradcheck(lambda a: F.mse_loss(a, target, reduction=reduction), normal(3, 4))


def test_small_mlp_end_to_end():
    x = mg.tensor(rng(1).standard_normal((6, 3)))
    target = mg.tensor(np.array([0, 1, 2, 1, 0, 2]))

    def loss(w1, b1, w2, b2):
        h = F.gelu(F.layer_norm(F.linear(x, w1, b1), (5,)))
        return F.cross_entropy(F.linear(h.tanh(), w2, b2), target)
    assert mg.gradcheck(loss, normal(5, 3, seed=2), normal(5, seed=3), normal(3, 5, seed=4), normal(3, seed=5))
