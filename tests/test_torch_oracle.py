"""PyTorch as an oracle: same inputs, same numbers (float64, tight tolerances). Skipped without torch."""
import gc

import numpy as np
import pytest

import minigrad as mg
from minigrad.nn import functional as F

pytestmark = pytest.mark.torch

TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module", autouse=True)
def _torch_out_of_the_cycle_collector():
    """Importing torch leaves many long-lived objects that every ``gc.collect()`` would walk again.

    They stay frozen for the rest of the session: torch stays imported, and every later
    test's ``gc.collect()`` would otherwise walk them all.
    """
    pytest.importorskip("torch", reason="PyTorch is not installed (it is an optional oracle)")
    gc.collect()
    gc.freeze()
    yield


def rng(seed=0):
    return np.random.default_rng(seed)


def pair(torch, arr):
    """The same float64 data as a minigrad leaf and a torch leaf, both requiring grad."""
    arr = np.asarray(arr, dtype=np.float64)
    return mg.tensor(arr, requires_grad=True), torch.tensor(arr, requires_grad=True)


def close(a, b, **tol):
    np.testing.assert_allclose(np.asarray(a.numpy() if isinstance(a, mg.Tensor) else a),
                               b.detach().numpy(), **(tol or TOL))


def check(torch, mg_fn, torch_fn, *arrays, grad_seed=99):
    """Values and gradients of ``mg_fn`` and ``torch_fn`` applied to the same arrays agree."""
    ms, ts = zip(*(pair(torch, a) for a in arrays))
    mo, to = mg_fn(*ms), torch_fn(*ts)
    assert mo.shape == tuple(to.shape)
    close(mo, to)
    w = rng(grad_seed).standard_normal(mo.shape)
    mo.backward(w)
    to.backward(torch.tensor(w))
    for m, t in zip(ms, ts):
        assert m.grad.shape == tuple(t.grad.shape)
        close(m.grad, t.grad)


# --------------------------------------------------------------------------- ops


class POS(tuple):
    """A shape whose values must be positive (log, sqrt, a divisor, a base with a tensor exponent)."""

    def __new__(cls, *shape):
        return super().__new__(cls, shape)


# name -> (minigrad function, the same in PyTorch (given the torch module first), input shapes)
OPS = {
    "add": (lambda a, b: a + b, lambda T, a, b: a + b, [(3, 1, 4), (5, 1)]),
    "sub": (lambda a, b: a - b, lambda T, a, b: a - b, [(2, 3), (3,)]),
    "mul": (lambda a, b: a * b, lambda T, a, b: a * b, [(4, 1), (1, 3)]),
    "div": (lambda a, b: a / b, lambda T, a, b: a / b, [(2, 3), POS(3,)]),
    "pow": (lambda a, b: a ** b, lambda T, a, b: a ** b, [POS(2, 3), (3,)]),
    "maximum": (mg.maximum, lambda T, a, b: T.maximum(a, b), [(3, 4), (4,)]),
    "matmul": (lambda a, b: a @ b, lambda T, a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]),
    "matvec": (lambda a, b: a @ b, lambda T, a, b: a @ b, [(3, 4), (4,)]),
    "vecvec": (lambda a, b: a @ b, lambda T, a, b: a @ b, [(4,), (4,)]),
    "exp": (lambda a: a.exp(), lambda T, a: a.exp(), [(3, 4)]),
    "log": (lambda a: a.log(), lambda T, a: a.log(), [POS(3, 4)]),
    "tanh": (lambda a: a.tanh(), lambda T, a: a.tanh(), [(3, 4)]),
    "sigmoid": (lambda a: a.sigmoid(), lambda T, a: a.sigmoid(), [(3, 4)]),
    "relu": (lambda a: a.relu(), lambda T, a: a.relu(), [(3, 4)]),
    "sqrt": (lambda a: a.sqrt(), lambda T, a: a.sqrt(), [POS(3, 4)]),
    "abs": (lambda a: abs(a), lambda T, a: a.abs(), [(3, 4)]),
    "clip": (lambda a: a.clip(-0.5, 0.7), lambda T, a: a.clamp(-0.5, 0.7), [(3, 4)]),
    "neg": (lambda a: -a, lambda T, a: -a, [(3, 4)]),
    "sum": (lambda a: a.sum(axis=(0, 2), keepdims=True), lambda T, a: a.sum(dim=(0, 2), keepdim=True), [(2, 3, 4)]),
    "mean": (lambda a: a.mean(axis=1), lambda T, a: a.mean(dim=1), [(2, 3, 4)]),
    "max": (lambda a: a.max(axis=-1), lambda T, a: a.amax(dim=-1), [(2, 3, 4)]),
    "max-all": (lambda a: a.max(), lambda T, a: a.amax(), [(2, 3, 4)]),
    "var": (lambda a: a.var(axis=0), lambda T, a: a.var(dim=0, unbiased=False), [(5, 3)]),
    "var-ddof1": (lambda a: a.var(axis=1, ddof=1), lambda T, a: a.var(dim=1, unbiased=True), [(5, 3)]),
    "reshape": (lambda a: a.reshape(4, -1), lambda T, a: a.reshape(4, -1), [(2, 3, 4)]),
    "transpose": (lambda a: a.transpose(2, 0, 1), lambda T, a: a.permute(2, 0, 1), [(2, 3, 4)]),
    "T": (lambda a: a.T, lambda T, a: a.T, [(3, 4)]),
    "getitem": (lambda a: a[[0, 0, 2], 1:], lambda T, a: a[[0, 0, 2], 1:], [(3, 4)]),
    "concatenate": (lambda a, b: mg.concatenate([a, b], axis=1),
                    lambda T, a, b: T.cat([a, b], dim=1), [(2, 3), (2, 2)]),
    "stack": (lambda a, b: mg.stack([a, b], axis=1), lambda T, a, b: T.stack([a, b], dim=1),
              [(2, 3), (2, 3)]),
    "where": (lambda a, b: mg.where(np.array([True, False, True]), a, b),
              lambda T, a, b: T.where(T.tensor([True, False, True]), a, b), [(2, 3), (3,)]),
    "softmax": (lambda a: F.softmax(a, axis=0), lambda T, a: a.softmax(dim=0), [(3, 4)]),
    "log_softmax": (lambda a: F.log_softmax(a), lambda T, a: a.log_softmax(dim=-1), [(3, 4)]),
}


def _array(spec, seed):
    r = rng(seed)
    if isinstance(spec, POS):
        return r.uniform(0.5, 2.0, tuple(spec))
    return r.standard_normal(spec)


@pytest.mark.parametrize("name", list(OPS))
def test_op_matches_torch(torch, name):
    mg_fn, torch_fn, specs = OPS[name]
    check(torch, mg_fn, lambda *ts: torch_fn(torch, *ts), *[_array(s, i + 1) for i, s in enumerate(specs)])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(torch, approximate):
    x = np.linspace(-6, 6, 49).reshape(7, 7)
    check(torch, lambda a: F.gelu(a, approximate=approximate),
          lambda a: torch.nn.functional.gelu(a, approximate=approximate), x)


def test_gelu_module_float32(torch):
    x = rng().standard_normal((4, 5)).astype(np.float32)
    out = mg.nn.GELU()(mg.tensor(x))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), torch.nn.GELU()(torch.tensor(x)).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(torch, reduction):
    target = np.array([2, 0, 4, 4, 1, 0])
    check(torch, lambda a: F.cross_entropy(a, target, reduction=reduction),
          lambda a: torch.nn.functional.cross_entropy(a, torch.tensor(target), reduction=reduction),
          rng(3).standard_normal((6, 5)) * 3)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(torch, reduction):
    target = rng(4).standard_normal((3, 4))
    check(torch, lambda a: F.mse_loss(a, mg.tensor(target), reduction=reduction),
          lambda a: torch.nn.functional.mse_loss(a, torch.tensor(target), reduction=reduction),
          rng(5).standard_normal((3, 4)))


@pytest.mark.parametrize("shape,normalized", [((4, 6), (6,)), ((2, 3, 4), (3, 4))], ids=str)
def test_layer_norm(torch, shape, normalized):
    check(torch, lambda x, w, b: F.layer_norm(x, normalized, w, b, eps=1e-5),
          lambda x, w, b: torch.nn.functional.layer_norm(x, normalized, w, b, eps=1e-5),
          rng(1).standard_normal(shape) * 2 + 1, rng(2).standard_normal(normalized),
          rng(3).standard_normal(normalized))


def test_layer_norm_module(torch):
    m, t = mg.nn.LayerNorm(5, dtype=np.float64), torch.nn.LayerNorm(5, dtype=torch.float64)
    x = rng().standard_normal((3, 5))
    mx, tx = pair(torch, x)
    mo, to = m(mx), t(tx)
    close(mo, to)
    w = rng(1).standard_normal((3, 5))
    mo.backward(w)
    to.backward(torch.tensor(w))
    close(mx.grad, tx.grad)
    close(m.weight.grad, t.weight.grad)
    close(m.bias.grad, t.bias.grad)


# --------------------------------------------------------------------------- Linear

def test_linear_init_matches_torch_distribution(torch):
    mg.manual_seed(0)
    torch.manual_seed(0)
    m, t = mg.nn.Linear(400, 300), torch.nn.Linear(400, 300)
    assert m.weight.shape == tuple(t.weight.shape) and m.bias.shape == tuple(t.bias.shape)
    assert m.weight.dtype == np.float32 and m.bias.dtype == np.float32
    bound = 1 / np.sqrt(400)
    for mine, theirs in ((m.weight.numpy(), t.weight.detach().numpy()), (m.bias.numpy(), t.bias.detach().numpy())):
        # both uniform on (-bound, bound): same support, same spread (std bound/sqrt(3))
        assert np.abs(mine).max() <= bound and np.abs(theirs).max() <= bound
        assert np.abs(mine).max() > 0.98 * bound
        assert abs(mine.std() - theirs.std()) < 0.05 * bound
        assert abs(mine.mean()) < 0.05 * bound
    np.testing.assert_allclose(m.weight.numpy().std(), bound / np.sqrt(3), rtol=0.01)


@pytest.mark.parametrize("act", [None, "relu", "tanh"])
@pytest.mark.parametrize("xshape", [(5, 4), (4,), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_with_copied_weights(torch, xshape, bias, act):
    # activation="relu"/"tanh": one minigrad node against torch's Linear then the activation
    m = mg.nn.Linear(4, 3, bias=bias, dtype=np.float64, activation=act)
    t = torch.nn.Linear(4, 3, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(m.weight.numpy()))
        if bias:
            t.bias.copy_(torch.tensor(m.bias.numpy()))
    mx, tx = pair(torch, rng(1).standard_normal(xshape))
    mo, to = m(mx), (t(tx) if act is None else getattr(torch, act)(t(tx)))
    close(mo, to)
    w = rng(2).standard_normal(mo.shape)
    mo.backward(w)
    to.backward(torch.tensor(w))
    close(mx.grad, tx.grad)
    close(m.weight.grad, t.weight.grad)
    if bias:
        close(m.bias.grad, t.bias.grad)
    else:
        assert m.bias is None and [p for p in m.parameters()] == [m.weight]


# --------------------------------------------------------------------------- BatchNorm1d

@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5)], ids=str)
def test_batchnorm_train_then_eval(torch, shape):
    m = mg.nn.BatchNorm1d(3, dtype=np.float64)
    t = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    r = rng(7)
    with torch.no_grad():  # non-trivial affine parameters, copied to both
        wb = r.standard_normal((2, 3))
        t.weight.copy_(torch.tensor(wb[0]))
        t.bias.copy_(torch.tensor(wb[1]))
    m.weight.data[...] = wb[0]
    m.bias.data[...] = wb[1]

    for step in range(4):
        x = r.standard_normal(shape) * (step + 1) + step
        mx, tx = pair(torch, x)
        mo, to = m(mx), t(tx)
        close(mo, to, rtol=1e-9, atol=1e-11)
        w = r.standard_normal(shape)
        mo.backward(w)
        to.backward(torch.tensor(w))
        close(mx.grad, tx.grad, rtol=1e-9, atol=1e-11)
        close(m.weight.grad, t.weight.grad, rtol=1e-9, atol=1e-11)
        close(m.bias.grad, t.bias.grad, rtol=1e-9, atol=1e-11)
        m.zero_grad()
        t.zero_grad()
        close(m.running_mean, t.running_mean)
        close(m.running_var, t.running_var)
        assert int(m.num_batches_tracked.item()) == int(t.num_batches_tracked.item()) == step + 1

    m.eval()
    t.eval()
    x = r.standard_normal(shape)
    mx, tx = pair(torch, x)
    mo, to = m(mx), t(tx)
    close(mo, to)
    w = r.standard_normal(shape)
    mo.backward(w)
    to.backward(torch.tensor(w))
    close(mx.grad, tx.grad)
    close(m.weight.grad, t.weight.grad)
    close(m.bias.grad, t.bias.grad)
    # eval mode leaves the running statistics alone
    close(m.running_mean, t.running_mean)
    assert int(m.num_batches_tracked.item()) == 4


def test_batchnorm_buffers_and_defaults(torch):
    m, t = mg.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)
    assert (m.eps, m.momentum) == (t.eps, t.momentum)
    names = {n for n, _ in m.named_buffers()}
    assert names == {n for n, _ in t.named_buffers()}
    assert m.running_mean.dtype == np.float32 and m.num_batches_tracked.dtype == np.int64
    close(m.running_var, t.running_var)


# --------------------------------------------------------------------------- optimizers on the same MLP

def _mlps(torch):
    mg.manual_seed(3)
    m = mg.nn.Sequential(mg.nn.Linear(4, 8, dtype=np.float64), mg.nn.Tanh(), mg.nn.Linear(8, 8, dtype=np.float64),
                         mg.nn.GELU(), mg.nn.Linear(8, 3, dtype=np.float64))
    t = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.GELU(),
                            torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for (mn, mp), (tn, tp) in zip(m.named_parameters(), t.named_parameters()):
            assert mn == tn and mp.shape == tuple(tp.shape)
            tp.copy_(torch.tensor(mp.numpy()))
    return m, t


OPTIMIZERS = {
    "sgd": (lambda p: mg.optim.SGD(p, lr=0.1), lambda torch, p: torch.optim.SGD(p, lr=0.1)),
    "sgd-momentum-wd": (lambda p: mg.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
                        lambda torch, p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01)),
    "adam": (lambda p: mg.optim.Adam(p, lr=0.01), lambda torch, p: torch.optim.Adam(p, lr=0.01)),
    "adam-wd": (lambda p: mg.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
                lambda torch, p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_steps_match_torch(torch, name):
    m, t = _mlps(torch)
    mo, to = OPTIMIZERS[name][0](m.parameters()), OPTIMIZERS[name][1](torch, t.parameters())
    r = rng(11)
    x, y = r.standard_normal((16, 4)), r.integers(0, 3, 16)
    start = [p.numpy().copy() for p in m.parameters()]
    for _ in range(5):
        mo.zero_grad()
        to.zero_grad()
        ml = F.cross_entropy(m(mg.tensor(x)), y)
        tl = torch.nn.functional.cross_entropy(t(torch.tensor(x)), torch.tensor(y))
        np.testing.assert_allclose(ml.item(), tl.item(), rtol=1e-9)
        ml.backward()
        tl.backward()
        for mp, tp in zip(m.parameters(), t.parameters()):
            close(mp.grad, tp.grad, rtol=1e-7, atol=1e-9)
        mo.step()
        to.step()
    for mp, tp, s in zip(m.parameters(), t.parameters(), start):
        np.testing.assert_allclose(mp.numpy(), tp.detach().numpy(), rtol=0, atol=1e-10)
        assert mp.dtype == np.float64
    assert any(not np.allclose(mp.numpy(), s) for mp, s in zip(m.parameters(), start))
