"""In-place changes to arrays saved for backward are detected (PyTorch's version counter is the model)."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import profiler
from minigrad.checkpoint import checkpoint, checkpoint_sequential
from minigrad.errors import GraphError


def _x():
    return mg.tensor(np.linspace(0.1, 1.2, 12).reshape(3, 4), requires_grad=True)


def test_in_place_add_to_a_saved_array_makes_backward_raise():
    x = _x()
    y = x.exp()                     # Exp saves its output y
    y.data += 1
    with pytest.raises(GraphError, match=r"backward through Exp: an array of shape \(3, 4\).*modified in place"):
        y.sum().backward()


def test_writing_through_numpy_after_or_before_saving_makes_backward_raise():
    x = _x()
    y = x.tanh()
    y.numpy()[0, 0] = 5.0           # handed out after it was saved
    with pytest.raises(GraphError, match="backward through Tanh"):
        y.sum().backward()
    x = _x()
    view = x.numpy()                # handed out before it was saved
    y = x * x
    view += 1.0
    with pytest.raises(GraphError, match="backward through Mul"):
        y.sum().backward()


def test_reading_through_numpy_or_rebinding_data_is_not_a_change():
    x = _x()
    y = x.tanh()
    _ = y.numpy().sum(), repr(y), y.sum().item()
    y.data = y.data + 1.0           # a new array: the saved one is untouched
    y.sum().backward(retain_graph=True)
    assert np.allclose(x.grad.numpy(), 1 - np.tanh(x.numpy()) ** 2)


def test_an_optimizer_step_between_forward_and_backward_is_caught():
    lin = mg.nn.Linear(4, 2)
    opt = mg.optim.SGD(lin.parameters(), lr=0.1)
    loss = lin(_x()).sum()
    loss.backward(retain_graph=True)
    opt.step()                      # updates the weight Linear saved, in place
    with pytest.raises(GraphError, match="modified in place"):
        loss.backward()


def test_in_place_change_of_a_checkpoint_input_is_caught():
    x = _x()
    y = checkpoint(lambda t: t.tanh(), x)
    x.data += 1
    with pytest.raises(GraphError, match="modified in place"):
        y.sum().backward()
    x = _x()
    y = checkpoint_sequential([mg.nn.Tanh(), mg.nn.Tanh()], x, strategy="revolve", slots=1)
    x.numpy()[:] = 0.0
    with pytest.raises(GraphError, match="chain's input .* modified in place"):
        y.sum().backward()


def test_profiler_sees_parameters_after_load_state_dict_and_to():
    lin = mg.nn.Linear(100, 100, dtype=np.float64)
    before = profiler.live_bytes()
    lin.load_state_dict({k: v.copy() for k, v in lin.state_dict().items()})
    assert profiler.live_bytes() == before       # new arrays replaced the old ones, all counted
    lin.to("cpu")
    assert profiler.live_bytes() == before
    del lin
    assert profiler.live_bytes() == before - 80_800
