"""Tensor basics: dtype rules, grad modes, detach/item/numpy, the tape printout, accumulation, freeing."""
import gc
import weakref

import numpy as np
import pytest

import minigrad as mg
from minigrad.nn import functional as F


def f64(*shape, requires_grad=True, seed=0):
    return mg.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)


# --------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int32, np.int64, np.uint8, np.bool_])
def test_ndarray_keeps_its_dtype(dtype):
    arr = np.ones((2, 3), dtype=dtype)
    t = mg.tensor(arr)
    assert t.dtype == dtype and t.shape == (2, 3)
    np.testing.assert_array_equal(t.numpy(), arr)


def test_tensor_copies_its_input():
    arr = np.zeros(3)
    t = mg.tensor(arr)
    arr[0] = 5
    assert t.numpy()[0] == 0


@pytest.mark.parametrize("data", [1.5, 3, [1, 2, 3], [[1.0, 2.0]], (4, 5)], ids=str)
def test_numbers_and_lists_use_the_default_dtype(data):
    assert mg.get_default_dtype() == np.float32
    assert mg.tensor(data).dtype == np.float32
    mg.set_default_dtype(np.float64)
    assert mg.get_default_dtype() == np.float64
    assert mg.tensor(data).dtype == np.float64


def test_bool_list_stays_bool_and_dtype_argument_wins():
    assert mg.tensor([True, False]).dtype == np.bool_
    assert mg.tensor([1, 2], dtype=np.int64).dtype == np.int64
    assert mg.tensor(np.ones(2, np.float32), dtype=np.float64).dtype == np.float64


def test_default_dtype_reaches_factories_and_layers():
    for dt in (np.float32, np.float64):
        mg.set_default_dtype(dt)
        assert mg.zeros(2, 3).dtype == dt and mg.zeros((2, 3)).shape == (2, 3)
        assert mg.ones(4).dtype == dt
        assert mg.randn(2, 2).dtype == dt and mg.rand(3).dtype == dt
        lin, bn, ln = mg.nn.Linear(3, 2), mg.nn.BatchNorm1d(3), mg.nn.LayerNorm(3)
        assert {p.dtype for m in (lin, bn, ln) for p in m.parameters()} == {np.dtype(dt)}
        assert bn.running_mean.dtype == dt and bn.running_var.dtype == dt
    assert mg.nn.Linear(3, 2, dtype=np.float32).weight.dtype == np.float32


def test_factories_take_an_explicit_dtype():
    assert mg.zeros(2, dtype=np.float64).dtype == np.float64
    assert mg.randn(2, dtype=np.float64, requires_grad=True).requires_grad


def test_seeded_random_factories_repeat():
    mg.manual_seed(42)
    a = mg.randn(5).numpy()
    mg.manual_seed(42)
    np.testing.assert_array_equal(a, mg.randn(5).numpy())
    assert not np.array_equal(a, mg.randn(5).numpy())


def test_linear_init_is_seeded():
    mg.manual_seed(5)
    a = mg.nn.Linear(3, 2).weight.numpy()
    mg.manual_seed(5)
    b = mg.nn.Linear(3, 2).weight.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, mg.nn.Linear(3, 2).weight.numpy())
    bound = 1 / np.sqrt(3)
    assert np.abs(a).max() <= bound


def test_attributes():
    t = mg.tensor(np.zeros((2, 3, 4)))
    assert (t.shape, t.ndim, t.size, len(t)) == ((2, 3, 4), 3, 24, 2)
    assert t.device == "cpu" and t.is_leaf and t.grad is None and not t.requires_grad
    assert isinstance(t, mg.Tensor) and isinstance(t.data, np.ndarray)
    assert isinstance(mg.Tensor([1.0, 2.0]), mg.Tensor)


# --------------------------------------------------------------------------- grad modes

def test_no_grad_records_nothing():
    x = f64(3)
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = x * 2
    assert mg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and len(mg.tape(y)) == 0


def test_enable_grad_inside_no_grad():
    x = f64(3)
    with mg.no_grad():
        with mg.enable_grad():
            y = (x * 2).sum()
        z = x * 3
    assert y.requires_grad and not z.requires_grad
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 2])


def test_no_grad_as_decorator():
    @mg.no_grad()
    def double(t):
        return t * 2
    assert not double(f64(3)).requires_grad
    assert mg.is_grad_enabled()


def test_no_grad_restores_after_an_exception():
    with pytest.raises(RuntimeError):
        with mg.no_grad():
            raise RuntimeError("boom")
    assert mg.is_grad_enabled()


def test_ops_on_tensors_without_grad_are_not_recorded():
    y = f64(3, requires_grad=False) * 2
    assert not y.requires_grad and y._node is None


# --------------------------------------------------------------------------- detach, item, numpy

def test_detach_shares_data_and_stops_gradient():
    x = f64(3)
    d = x.detach()
    assert d.data is x.data and not d.requires_grad and d.is_leaf
    (x * d).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), d.numpy())  # d/dx of x*c is c, not 2x


def test_item():
    assert mg.tensor(np.array([[2.5]])).item() == 2.5
    assert isinstance(mg.tensor(np.float64(1.0)).item(), float)
    assert isinstance(mg.tensor(np.array(3)).item(), int)
    assert f64(2, 3).sum().item() == pytest.approx(f64(2, 3).numpy().sum())


def test_numpy_returns_the_values():
    arr = np.arange(6.0).reshape(2, 3)
    out = mg.tensor(arr).numpy()
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, arr)


def test_comparisons_and_argmax_have_no_gradient():
    x = mg.tensor(np.array([1.0, 3.0, 2.0]), requires_grad=True)
    mask = x > 1.5
    assert mask.dtype == np.bool_ and not mask.requires_grad
    np.testing.assert_array_equal(mask.numpy(), [False, True, True])
    assert x.argmax().item() == 1


# --------------------------------------------------------------------------- the tape

def test_tape_has_one_row_per_node():
    x, w = f64(4, 3), f64(3, 5, seed=1)
    loss = (x @ w).relu().sum()
    tape = mg.tape(loss)
    assert [n.name for n in tape.nodes] == ["MatMul", "ReLU", "Sum"]
    assert tape.saved_bytes == x.data.nbytes + w.data.nbytes + 4 * 5 * 8
    lines = str(tape).splitlines()
    assert len(lines) == 1 + 3 + 1  # header, one row per node, total
    assert lines[0].split() == ["#", "op", "output", "shape", "saved", "bytes"]
    assert lines[1].split() == ["0", "MatMul", "(4,", "5)", f"{96 + 120:,}"]
    assert lines[2].split() == ["1", "ReLU", "(4,", "5)", "160"]
    assert lines[3].split() == ["2", "Sum", "()", "0"]
    assert lines[4].split() == ["total", f"{96 + 120 + 160:,}"]
    loss.backward()
    assert mg.tape(loss).saved_bytes == 0  # backward released every saved array


def test_tape_is_in_execution_order_and_shares_nodes_once():
    x = f64(3)
    h = x.exp()
    loss = (h * h.tanh() + h).sum()
    names = [n.name for n in mg.tape(loss).nodes]
    assert names == ["Exp", "Tanh", "Mul", "Add", "Sum"]
    seqs = [n.seq for n in mg.tape(loss).nodes]
    assert seqs == sorted(seqs)


def test_tape_of_a_leaf_is_empty():
    assert len(mg.tape(f64(3))) == 0


# --------------------------------------------------------------------------- accumulation and graph shapes

def test_gradients_accumulate_across_backward_calls():
    x = f64(3)
    (x * 2).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 + 2 * x.numpy())
    x.zero_grad()
    assert x.grad is None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3, 3, 3])


def test_same_tensor_twice_in_one_op():
    a = f64(3)
    (a + a).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2, 2, 2])
    b = f64(3, seed=1)
    (b * b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), 2 * b.numpy())


def test_sibling_leaves_do_not_share_a_gradient_array():
    a, b = f64(3), f64(3, seed=1)
    (a + b).sum().backward()
    assert a.grad.data is not b.grad.data
    a.grad.data[0] = 100.0
    assert b.grad.numpy()[0] == 1.0


def test_diamond_graph():
    x = f64(4)
    y = x * 2
    z = (y.exp() + y.tanh()).sum()  # two paths from y join again
    z.backward()
    yv = 2 * x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.exp(yv) + 1 - np.tanh(yv) ** 2), rtol=1e-12)


def test_backward_from_a_leaf_and_with_an_explicit_grad():
    x = f64(2, 2)
    x.backward(np.full((2, 2), 3.0))
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 2), 3.0))
    y = f64(2, 3)
    g = np.arange(6.0).reshape(2, 3)
    (y * 5).backward(mg.tensor(g))
    np.testing.assert_array_equal(y.grad.numpy(), 5 * g)


def test_gradient_does_not_alias_the_callers_array():
    x = f64(3)
    g = np.ones(3)
    (x + 0.0).backward(g)
    g[0] = 7.0
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 1])
    y = f64(3)
    y.backward(g)
    g[1] = 7.0
    np.testing.assert_array_equal(y.grad.numpy(), [7, 1, 1])


def test_gradient_only_reaches_leaves_that_need_it():
    a, b = f64(3), f64(3, requires_grad=False)
    (a * b).sum().backward()
    assert b.grad is None and a.grad is not None


def test_deep_chain_has_no_recursion_limit():
    x = f64(1)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5000], rtol=1e-9)


# --------------------------------------------------------------------------- freeing by reference counting

def test_dropped_graph_is_freed_without_the_cycle_collector():
    x = f64(64, 32)
    w = f64(32, 16, seed=1)
    gc.collect()
    gc.disable()
    try:
        start = mg.profiler.live_tensors()
        start_bytes = mg.profiler.live_bytes()
        h = (x @ w).tanh()
        loss = F.mse_loss(h.exp(), mg.tensor(np.zeros((64, 16))))
        assert mg.profiler.live_tensors() > start
        first, last = weakref.ref(mg.tape(loss).nodes[0]), weakref.ref(loss._node)
        del h, loss
        assert first() is None and last() is None
        assert mg.profiler.live_tensors() == start
        assert mg.profiler.live_bytes() == start_bytes
    finally:
        gc.enable()


def test_backward_releases_saved_arrays_without_the_cycle_collector():
    x = f64(64, 32)
    gc.collect()
    gc.disable()
    try:
        start = mg.profiler.live_tensors()
        loss = (x.exp() * x.tanh()).sum()
        first, last = weakref.ref(mg.tape(loss).nodes[0]), weakref.ref(loss._node)
        loss.backward()
        # only the new gradient (and the 0-d loss) outlive backward; inner nodes go as their edges are dropped
        assert mg.profiler.live_tensors() == start + 2
        assert first() is None
        assert last() is not None and last().saved is None and last().freed
        del loss
        assert last() is None
        assert mg.profiler.live_tensors() == start + 1
        x.grad = None
        assert mg.profiler.live_tensors() == start
    finally:
        gc.enable()


@pytest.mark.parametrize("op", [lambda t: t * 1.5, lambda t: 1.5 * t, lambda t: t + 0.5, lambda t: t / 2.0,
                                lambda t: 2.0 - t, lambda t: t ** 2.0])
def test_integer_tensor_with_a_python_float_gives_the_default_dtype(op):
    t = mg.tensor(np.arange(3))
    assert op(t).dtype == np.float32
    mg.set_default_dtype(np.float64)
    assert op(t).dtype == np.float64
    assert (t * 2).dtype == np.int64          # integer with integer stays integer
