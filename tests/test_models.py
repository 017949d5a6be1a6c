"""The command line's models: evaluation needs no checkpointing plan; a deep residual chain keeps its scale."""
import numpy as np
import pytest

import minigrad as mg
from minigrad.models import Classifier


def _pair(checkpoint):
    mg.manual_seed(3)
    plain = Classifier(2, 16, 8, 3)
    mg.manual_seed(3)
    return plain, Classifier(2, 16, 8, 3, checkpoint=checkpoint)


def test_evaluation_runs_the_chain_without_the_training_plan():
    plain, planned = _pair(("budget", {"budget": 1}))       # no schedule fits one byte
    x = mg.tensor(np.random.default_rng(0).standard_normal((200, 2)).astype(np.float32))
    with pytest.raises(mg.ScheduleError, match="below the minimum"):
        planned(x)                                           # training would plan, and refuse
    with mg.no_grad():                                       # nothing is saved: nothing to plan
        np.testing.assert_array_equal(planned(x).numpy(), plain(x).numpy())


@pytest.mark.parametrize("depth", [4, 64])
def test_the_residual_stream_keeps_its_scale_at_any_depth(depth):
    # Each branch adds variance about 1/(6·depth) (PyTorch's Linear init on relu of a unit-variance
    # LayerNorm, scaled by 1/sqrt(depth)), so depth blocks add about 1/6 whatever the depth.
    mg.manual_seed(0)
    model = Classifier(2, 256, depth, 3)
    x = mg.tensor(np.random.default_rng(0).standard_normal((512, 2)).astype(np.float32))
    with mg.no_grad():
        h0 = model.chain_input(x)
        h = model.blocks(h0)
    added = float((h.numpy() - h0.numpy()).var())
    assert 0.1 < added < 0.3, added


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_linear_with_activation_is_bitwise_linear_then_activation(act):
    # One node adding the bias and applying the activation in place computes the same
    # numbers as Linear followed by ReLU/Tanh, forward and backward (on CuPy: one fused kernel).
    mg.manual_seed(0)
    fused = mg.nn.Linear(12, 9, activation=act)
    plain = mg.nn.Sequential(mg.nn.Linear(12, 9), mg.nn.ReLU() if act == "relu" else mg.nn.Tanh())
    plain[0].weight.data[...] = fused.weight.data
    plain[0].bias.data[...] = fused.bias.data
    X = np.random.default_rng(0).standard_normal((16, 12)).astype(np.float32)
    outs, grads = [], []
    for model in (fused, plain):
        x = mg.tensor(X, requires_grad=True)
        y = model(x)
        (y * y).sum().backward()
        outs.append(y.numpy())
        grads.append([x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    assert outs[0].tobytes() == outs[1].tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*grads))
    with mg.profile() as prof:
        fused(mg.tensor(X))
    assert prof.flops["forward"] == 2 * 16 * 12 * 9 + 16 * 9 + 16 * 9
