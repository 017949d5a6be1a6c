"""Edge cases that peers' test suites (PyTorch, tinygrad, micrograd, autograd) exercise: each behaves as PyTorch."""
import warnings

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F

# a ** b at the points where the textbook formulas give 0·inf: (0, 0), x**0 at 0, 0**x
BASE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 2.0, -1.5, 3.0])
EXPONENT = np.array([0.0, 1.0, 2.5, 0.5, -1.0, 0.0, 2.0, 1.5])


def _pow_grads(a, b, device="cpu"):
    x = mg.tensor(a, requires_grad=True, device=device)
    e = mg.tensor(b, requires_grad=True, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # 0 ** -1 is inf, as in NumPy
        (x ** e).sum().backward()
    return x.grad.numpy(), e.grad.numpy()


def test_pow_backward_is_zero_where_pytorch_is(device):
    ga, gb = _pow_grads(BASE, EXPONENT, device)
    # d/da = b·a**(b-1), but 0 wherever b == 0 (x**0 is constant)
    np.testing.assert_array_equal(ga[:6], [0.0, 1.0, 0.0, np.inf, -np.inf, 0.0])
    np.testing.assert_allclose(ga[6:], [-3.0, 1.5 * 3.0 ** 0.5], rtol=1e-14)
    # d/db = a**b·log a, but 0 wherever a == 0 and b >= 0 (0**x is constant there)
    np.testing.assert_array_equal(gb[:5], [0.0, 0.0, 0.0, 0.0, -np.inf])
    assert np.isnan(gb[6])   # the log of a negative base, as in PyTorch
    np.testing.assert_allclose(gb[[5, 7]], [np.log(2.0), 3.0 ** 1.5 * np.log(3.0)], rtol=1e-14)


def test_pow_backward_at_zero_raises_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = mg.tensor(np.array([0.0, 1.0]), requires_grad=True)
        (x ** 0).sum().backward()
        assert x.grad.numpy().tolist() == [0.0, 0.0]
        e = mg.tensor(np.array([0.0, 2.0]), requires_grad=True)
        (0.0 ** e).sum().backward()
        assert e.grad.numpy().tolist() == [0.0, 0.0]


@pytest.mark.parametrize("b", [0.0, 1.0, 2.0, 3.0])
def test_pow_gradcheck_in_the_base_at_zero(b):
    a = mg.tensor(np.array([0.0, 0.7, -1.3]), requires_grad=True)
    assert mg.gradcheck(lambda t: t ** b, a)


def test_pow_gradcheck_in_the_exponent_of_zero():
    e = mg.tensor(np.array([0.5, 1.0, 2.5]), requires_grad=True)
    assert mg.gradcheck(lambda t: 0.0 ** t, e)
    assert mg.gradcheck(lambda t: mg.tensor(np.zeros(3)) ** t, e)


@pytest.mark.torch
def test_pow_matches_pytorch_at_the_edges(torch):
    ga, gb = _pow_grads(BASE, EXPONENT)
    ta = torch.tensor(BASE, requires_grad=True)
    tb = torch.tensor(EXPONENT, requires_grad=True)
    (ta ** tb).sum().backward()
    np.testing.assert_array_equal(ga, ta.grad.numpy())
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-15, equal_nan=True)
    for scalar in (0.0, 2.0):   # a Python-number base, as in 0 ** x
        e = mg.tensor(EXPONENT, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            (scalar ** e).sum().backward()
        te = torch.tensor(EXPONENT, requires_grad=True)
        (scalar ** te).sum().backward()
        np.testing.assert_allclose(e.grad.numpy(), te.grad.numpy(), rtol=1e-15, equal_nan=True)


def test_bool_of_a_one_element_tensor_is_its_truth_value():
    loss = mg.tensor(0.25)
    assert bool(loss < 0.5) is True
    taken = "small" if loss < 0.5 else "large"
    assert taken == "small"
    assert not mg.tensor([0.0]) and mg.tensor([[3.0]])
    assert float(mg.tensor([2.5])) == 2.5 and int(mg.tensor(np.array([7]))) == 7
    with pytest.raises(mg.ShapeError, match="ambiguous"):
        bool(mg.tensor([0.2, 0.7]) < 0.5)


def test_clip_bounds_may_be_tensors_and_gradients_pass_inside():
    x = mg.tensor(np.array([-2.0, 0.0, 3.0]), requires_grad=True)
    y = x.clip(mg.tensor(np.array([-1.0, -1.0, -1.0])), mg.tensor(1.0))
    np.testing.assert_array_equal(y.numpy(), [-1.0, 0.0, 1.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(x.clip(max=0.5).numpy(), [-2.0, 0.0, 0.5])


def test_load_state_dict_accepts_lists_numbers_and_tensors():
    layer = nn.Linear(2, 2)
    layer.load_state_dict({"weight": [[1.0, 2.0], [3.0, 4.0]], "bias": mg.tensor([0.5, -0.5])})
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.numpy(), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(layer.bias.numpy(), [0.5, -0.5])
    bn = nn.BatchNorm1d(2)
    bn.load_state_dict({**bn.state_dict(), "num_batches_tracked": 3, "running_mean": [1, 2]})
    assert int(bn.num_batches_tracked) == 3 and bn.num_batches_tracked.dtype == np.int64
    bn.load_state_dict({**bn.state_dict(), "num_batches_tracked": 4.0})   # a whole float fits an integer
    assert int(bn.num_batches_tracked) == 4
    np.testing.assert_array_equal(bn.running_mean.numpy(), [1.0, 2.0])


def test_load_state_dict_refuses_lossy_casts_and_leaves_the_module_unchanged():
    bn = nn.BatchNorm1d(2)
    before = bn.state_dict()
    with pytest.raises(mg.DTypeError, match="fractional"):
        bn.load_state_dict({**before, "num_batches_tracked": np.array(2.7)})
    with pytest.raises(mg.DTypeError, match="imaginary"):
        bn.load_state_dict({**before, "running_var": np.array([1 + 1j, 1.0])})
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def _train(opt_cls, params_of, steps=3, **kw):
    mg.manual_seed(1)
    layer = nn.Linear(3, 2, dtype=np.float64)
    opt = opt_cls(params_of(layer), **kw)
    x = mg.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    for _ in range(steps):
        opt.zero_grad()
        (layer(x) ** 2).sum().backward()
        opt.step()
    return layer.weight.numpy(), layer.bias.numpy(), opt


@pytest.mark.parametrize("opt_cls,kw", [(mg.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
                                        (mg.optim.Adam, dict(lr=0.01))], ids=["SGD", "Adam"])
def test_optimizer_steps_a_parameter_listed_twice_once(opt_cls, kw):
    w1, b1, _ = _train(opt_cls, lambda m: m.parameters(), **kw)
    with pytest.warns(UserWarning, match="more than once"):
        w2, b2, opt = _train(opt_cls, lambda m: [m.weight, m.bias, m.weight], **kw)
    assert len(opt.params) == 2
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(b1, b2)


def test_optimizer_accepts_a_generator_and_frozen_parameters():
    layer = nn.Linear(2, 2)
    layer.bias.requires_grad = False
    opt = mg.optim.SGD((p for p in layer.parameters()), lr=0.1)
    assert opt.params == [layer.weight, layer.bias]


def test_mse_loss_with_column_against_vector_raises_instead_of_an_n_by_n_loss():
    pred, target = mg.tensor(np.arange(4.0).reshape(4, 1), requires_grad=True), mg.tensor(np.arange(4.0))
    with pytest.raises(mg.ShapeError, match=r"\(4, 1\).*\(4,\)"):
        F.mse_loss(pred, target)
    assert F.mse_loss(pred, target.reshape(4, 1)).item() == 0.0
    assert F.mse_loss(pred, np.arange(4.0).reshape(4, 1)).item() == 0.0


def test_parameters_and_requires_grad_need_floating_dtypes():
    for dt in (np.int32, np.int64, np.complex64, np.bool_):
        with pytest.raises(mg.DTypeError):
            nn.Linear(2, 2, dtype=dt)
    with pytest.raises(mg.DTypeError, match="Parameter"):
        nn.Parameter(np.array([1, 2]))
    frozen = nn.Parameter(np.array([1, 2]), requires_grad=False)
    assert frozen.dtype == np.int64 and not frozen.requires_grad
    assert nn.Linear(2, 2, dtype="float64").weight.dtype == np.float64
    with pytest.raises(mg.DTypeError, match="requires_grad"):
        mg.randn(2, dtype=np.float32).astype(np.int32).requires_grad_()


def test_batch_norm_without_weight_and_bias_is_the_plain_normalisation():
    x = mg.tensor(np.random.default_rng(0).standard_normal((5, 3)), requires_grad=True)
    plain = F.batch_norm(x, None, None, None, None)
    expect = (x.numpy() - x.numpy().mean(0)) / np.sqrt(x.numpy().var(0) + 1e-5)
    np.testing.assert_allclose(plain.numpy(), expect, rtol=1e-12)
    layer = nn.BatchNorm1d(3, affine=False, dtype=np.float64)
    np.testing.assert_array_equal(layer(x).numpy(), plain.numpy())
