"""checkpoint() and checkpoint_sequential() with PyTorch's semantics, off the plain-chain path."""
import numpy as np
import pytest

import minigrad as mg
from minigrad.checkpoint import checkpoint, checkpoint_sequential, plan, save_matmuls
from minigrad.errors import CheckpointError, GraphError

STRATEGIES = [("none", {}), ("sqrt", {}), ("sqrt", {"segments": 2}), ("recursive", {}),
              ("revolve", {"slots": 1}), ("revolve", {"slots": 2}), ("budget", {"budget": "1MB"})]


@pytest.fixture(autouse=True)
def float64():
    mg.set_default_dtype(np.float64)


def _t(shape, seed, grad=True):
    return mg.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=grad)


def _grads(*ts):
    return [None if t.grad is None else t.grad.numpy().copy() for t in ts]


def _same(a, b):
    return len(a) == len(b) and all((x is None and y is None) or (x is not None and y is not None and
                                                                     np.array_equal(x, y)) for x, y in zip(a, b))


def _both(run, *leaves):
    """Gradients of the leaves from ``run(ckpt)`` with ckpt=plain call and ckpt=checkpoint."""
    out = []
    for ck in (lambda fn, *a, **k: fn(*a, **k), checkpoint):
        for t in leaves:
            t.grad = None
        run(ck).backward()
        out.append(_grads(*leaves))
    return out


# --------------------------------------------------------------------------- how tensors come in


def test_tensors_by_keyword_nested_and_without_positional_args_get_exact_gradients():
    lin = mg.nn.Linear(4, 3)
    x, w = _t((5, 4), 0), _t((5, 3), 1)
    leaves = (x, w, lin.weight, lin.bias)

    def fn(data=None, extra=None):
        return (lin(data) * extra["w"][0]).tanh()

    ref, got = _both(lambda ck: ck(fn, data=x, extra={"w": [w]}).sum(), *leaves)
    assert _same(ref, got)
    ref, got = _both(lambda ck: ck(lambda pair: lin(pair[0]) * pair[1], [x, w]).sum(), *leaves)
    assert _same(ref, got)
    ref, got = _both(lambda ck: ck(lambda: lin(x)).sum(), *leaves)          # no positional tensor at all
    assert _same(ref, got) and got[0] is not None
    ref, got = _both(lambda ck: ck(lin, x=x).sum(), *leaves)          # a module, by keyword
    assert _same(ref, got)


def test_captured_and_repeated_non_leaf_tensors_get_exact_gradients():
    x, c = _t((5, 4), 0), _t((4,), 1)
    lin = mg.nn.Linear(4, 4)
    leaves = (x, c, lin.weight)

    def run(ck):
        cond = c.exp()                              # a non-leaf, captured and also used outside
        h = x * 2.0                                 # a non-leaf input, also used outside
        y = ck(lambda t: lin(t * cond).tanh() + t * t, h)
        return (y * cond).sum() + h.sum()

    ref, got = _both(run, *leaves)
    assert _same(ref, got)


def test_non_leaf_tensors_by_keyword_and_in_a_dict_also_used_outside():
    x, c = _t((5, 4), 0), _t((5, 4), 1)

    def run(ck):
        h, g = x.tanh(), c * 3.0
        y = ck(lambda data=None, d=None: (data * d["g"]).exp(), data=h, d={"g": g})
        return y.sum() + (h * g).sum()

    ref, got = _both(run, x, c)
    assert _same(ref, got) and got[0] is not None


def test_nested_checkpoints_with_captured_non_leaf():
    x, c = _t((3, 4), 0), _t((4,), 1)

    def run(ck):
        cond = c.tanh()
        return ck(lambda t: ck(lambda u: (u * cond).exp(), t * cond) * cond, x).sum()

    ref, got = _both(run, x, c)
    assert _same(ref, got)


# --------------------------------------------------------------------------- retain_graph


def test_retain_graph_through_checkpoint_accumulates_then_second_time_errors():
    x = _t((3, 4), 0)
    lin = mg.nn.Linear(4, 4)
    y = checkpoint(lambda t: lin(t).tanh(), x)
    y.sum().backward(retain_graph=True)
    once = _grads(x, lin.weight)
    y.sum().backward(retain_graph=True)
    y.sum().backward()
    assert all(np.allclose(3 * a, b, rtol=1e-15, atol=0) for a, b in zip(once, _grads(x, lin.weight)))
    with pytest.raises(GraphError, match="a second time"):
        y.sum().backward()


@pytest.mark.parametrize("strategy,opts", STRATEGIES)
def test_retain_graph_through_checkpoint_sequential_accumulates(strategy, opts):
    mg.manual_seed(0)
    layers = [mg.nn.Sequential(mg.nn.Linear(6, 6), mg.nn.Tanh()) for _ in range(5)]
    x = _t((4, 6), 0)
    params = [x] + [p for layer in layers for p in layer.parameters()]
    y = checkpoint_sequential(layers, x, strategy=strategy, **opts)
    y.sum().backward(retain_graph=True)
    once = _grads(*params)
    y.sum().backward()
    assert all(np.array_equal(2 * a, b) for a, b in zip(once, _grads(*params)))
    with pytest.raises(GraphError, match="a second time"):
        y.sum().backward()


# --------------------------------------------------------------------------- what needs a gradient


def test_outputs_depending_on_nothing_that_needs_grad_do_not_require_it():
    x, n = _t((3,), 0), _t((3,), 1, grad=False)
    a, b = checkpoint(lambda p, q: (p * 2.0, q * 2.0), x, n)
    assert a.requires_grad and not b.requires_grad and b._node is None
    assert not checkpoint(lambda q: q.exp(), n).requires_grad
    i = checkpoint(lambda p: (p * 2.0, (p > 0).astype(np.int64)), x)[1]
    assert not i.requires_grad
    y = checkpoint_sequential([mg.nn.Tanh(), lambda t: t.detach(), mg.nn.Tanh()], x, strategy="revolve", slots=1)
    assert not y.requires_grad


@pytest.mark.parametrize("strategy,opts", STRATEGIES)
def test_detach_inside_a_chain_works_under_every_strategy(strategy, opts):
    mg.manual_seed(1)
    layers = [mg.nn.Linear(5, 5), mg.nn.Tanh(), lambda t: t.detach(), mg.nn.Linear(5, 5), mg.nn.Tanh(),
              mg.nn.Linear(5, 5)]
    x = _t((3, 5), 2)
    params = [x] + [p for layer in layers if isinstance(layer, mg.nn.Module) for p in layer.parameters()]
    h = x
    for layer in layers:
        h = layer(h)
    h.sum().backward()
    ref = _grads(*params)
    for p in params:
        p.grad = None
    checkpoint_sequential(layers, x, strategy=strategy, **opts).sum().backward()
    got = _grads(*params)
    assert ref[0] is None and ref[1] is None and _same(ref, got)


@pytest.mark.parametrize("strategy,opts", STRATEGIES)
def test_captured_non_leaf_in_checkpoint_sequential_under_every_strategy(strategy, opts):
    mg.manual_seed(2)
    lins = [mg.nn.Linear(4, 4) for _ in range(5)]
    x, z = _t((3, 4), 0), _t((4,), 1)
    params = [x, z] + [p for lin in lins for p in lin.parameters()]

    def step(run):
        cond = z.tanh()                                      # a conditioning vector, not a leaf
        layers = [(lambda lin: (lambda t: lin(t * cond).tanh()))(lin) for lin in lins]
        return (run(layers) * cond).sum()

    def plain(layers):
        h = x
        for layer in layers:
            h = layer(h)
        return h

    step(plain).backward()
    ref = _grads(*params)
    for p in params:
        p.grad = None
    step(lambda layers: checkpoint_sequential(layers, x, strategy=strategy, **opts)).backward()
    assert _same(ref, _grads(*params))


def test_budget_plan_leaves_the_callers_graph_alone():
    lin = mg.nn.Linear(4, 4)
    x = _t((3, 4), 0)
    h = x.tanh()                                             # the caller's graph: x -> h
    layers = [lin, mg.nn.Tanh(), lambda t: t * h]            # captures h
    plan(layers, h, strategy="budget", budget="1MB")
    h.sum().backward()                                       # still there, not freed by measuring
    assert np.allclose(x.grad.numpy(), 1 - np.tanh(x.numpy()) ** 2)
    assert lin.weight.grad is None                           # measuring left gradients as they were


# --------------------------------------------------------------------------- recompute checks


def test_switching_train_and_eval_between_forward_and_backward_is_an_error():
    drop = mg.nn.Sequential(mg.nn.Linear(4, 4), mg.nn.Dropout(0.5))
    x = _t((3, 4), 0)
    y = checkpoint(drop, x)
    drop.eval()
    with pytest.raises(CheckpointError, match=r"Dropout.* train mode during the forward pass but is in eval"):
        y.sum().backward()
    drop.train()
    y = checkpoint(lambda t: drop(t) * 2.0, x)               # a module captured by a closure
    drop.eval()
    with pytest.raises(CheckpointError, match="train mode during the forward"):
        y.sum().backward()
    drop.train()
    y = checkpoint_sequential([drop, mg.nn.Tanh()], x, strategy="none")
    drop.eval()
    with pytest.raises(CheckpointError, match="train mode during the forward"):
        y.sum().backward()


def test_selective_recompute_checks_the_replayed_ops_operands():
    w1, w2 = _t((4, 4), 1), _t((4, 4), 2)
    x = _t((3, 4), 0)
    which = {"w": w1}
    y = checkpoint(lambda t: (t @ which["w"]).tanh(), x, policy=save_matmuls)
    which["w"] = w2                                          # same shape, another operand
    with pytest.raises(CheckpointError, match=r"kept op number 1 was MatMul .* recompute reached MatMul"):
        y.sum().backward()
