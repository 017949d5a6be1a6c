"""Modes are per thread: two threads train independent models at once, one of them inside no_grad."""
import sys
import threading

import numpy as np

import minigrad as mg
from minigrad.checkpoint import checkpoint, checkpoint_sequential

STEPS = 200


def _model(seed):
    mg.manual_seed(seed)
    return [mg.nn.Sequential(mg.nn.Linear(6, 6, dtype=np.float64), mg.nn.BatchNorm1d(6, dtype=np.float64),
                             mg.nn.Tanh()) for _ in range(3)]


def _train(layers, x, errors, steps=STEPS):
    """Checkpointed SGD steps (recompute in every backward); returns nothing, records any failure."""
    opt = mg.optim.SGD([p for layer in layers for p in layer.parameters()], lr=0.01)
    try:
        for k in range(steps):
            opt.zero_grad()
            h = checkpoint(layers[0], x)
            h = checkpoint_sequential(layers[1:], h, strategy="revolve", slots=1)
            (h * h).mean().backward()
            opt.step()
    except Exception as exc:              # noqa: BLE001  (reported by the test below)
        errors.append(f"training step {k}: {type(exc).__name__}: {exc}")


def _evaluate(layers, x, errors, seen):
    """Forwards in training mode inside no_grad (BatchNorm statistics still update, as in PyTorch)."""
    try:
        with mg.no_grad():
            for _ in range(STEPS):
                y = checkpoint(mg.nn.Sequential(*layers), x)
                seen.append(y.requires_grad)
    except Exception as exc:              # noqa: BLE001
        errors.append(f"no_grad thread: {type(exc).__name__}: {exc}")


def test_two_threads_train_independently_one_inside_no_grad():
    x = mg.tensor(np.random.default_rng(0).standard_normal((8, 6)))
    ref = _model(1)
    _train(ref, x, [])                    # the same training, alone: the reference
    trained, evaluated = _model(1), _model(2)
    errors, seen = [], []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)           # switch threads often, inside ops and modes
    try:
        threads = [threading.Thread(target=_train, args=(trained, x, errors)),
                   threading.Thread(target=_evaluate, args=(evaluated, x, errors, seen))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert seen == [False] * STEPS
    bns = lambda layers: [m for layer in layers for m in layer.modules() if isinstance(m, mg.nn.BatchNorm1d)]
    assert [int(b.num_batches_tracked.item()) for b in bns(trained)] == [STEPS] * 3
    assert [int(b.num_batches_tracked.item()) for b in bns(evaluated)] == [STEPS] * 3
    for a, b in zip(ref, trained):        # bit for bit what the model gets when trained alone
        assert all(np.array_equal(p.numpy(), q.numpy()) for p, q in zip(a.parameters(), b.parameters()))
        assert all(np.array_equal(p.numpy(), q.numpy()) for p, q in zip(a.buffers(), b.buffers()))


def test_another_threads_recompute_changes_neither_batchnorm_nor_flop_phases_here():
    entered, release, seen = threading.Event(), threading.Event(), []

    def recompute_elsewhere():
        with mg.autograd.recomputing():
            entered.set()
            release.wait(5)

    t = threading.Thread(target=recompute_elsewhere)
    t.start()
    entered.wait(5)
    bn = mg.nn.BatchNorm1d(3)
    x = mg.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    with mg.profile() as prof:
        bn(x)
    seen.append(mg.autograd.is_recomputing())
    release.set()
    t.join()
    assert seen == [False]
    assert int(bn.num_batches_tracked.item()) == 1 and not np.array_equal(bn.running_mean.numpy(), np.zeros(3))
    assert prof.flops["recompute"] == 0 and prof.flops["forward"] > 0
