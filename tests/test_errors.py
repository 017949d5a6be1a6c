"""Misuse raises a minigrad error that names the op, what it got and the fix; dtypes follow NumPy's rules."""
import re

import numpy as np
import pytest

import minigrad as mg
from minigrad.nn import functional as F


def f64(*shape, requires_grad=True, seed=0):
    return mg.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)


def f32(*shape, requires_grad=True, seed=0):
    return mg.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32),
                     requires_grad=requires_grad)


def raises(exc, *fragments):
    """pytest.raises that also checks the message contains every fragment (literally)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def test_every_error_class_is_a_minigrad_error():
    for name in ("ShapeError", "IndexingError", "DTypeError", "DeviceError", "GraphError", "CheckpointError",
                 "ScheduleError", "GradcheckError", "ArgumentError"):
        assert issubclass(getattr(mg, name), mg.MinigradError)


# --------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((5, 2, 3), (4, 3, 2))], ids=str)
def test_matmul_shape_mismatch_names_both_shapes(sa, sb):
    with raises(mg.ShapeError, "matmul", str(sa), str(sb)) as info:
        f64(*sa) @ f64(*sb)
    assert "Transpose" in str(info.value) or "Reshape" in str(info.value)


def test_matmul_of_a_scalar():
    with raises(mg.ShapeError, "matmul", "()"):
        mg.tensor(np.float64(2.0)) @ f64(2, 2)


@pytest.mark.parametrize("op,name", [(lambda a, b: a + b, "add"), (lambda a, b: a - b, "sub"),
                                     (lambda a, b: a * b, "mul"), (lambda a, b: a / b, "div"),
                                     (lambda a, b: a ** b, "pow"), (mg.maximum, "maximum"),
                                     (lambda a, b: mg.where(np.ones((), bool), a, b), "where")])
def test_broadcast_mismatch_names_op_and_shapes(op, name):
    with raises(mg.ShapeError, name, "(2, 3)", "(4,)", "broadcast"):
        op(f64(2, 3), f64(4))


def test_where_condition_that_does_not_broadcast():
    with raises(mg.ShapeError, "where", "(4,)", "(3,)"):
        mg.where(np.ones(4, bool), f64(3), f64(3))


def test_linear_feature_mismatch():
    layer = mg.nn.Linear(3, 2)
    with raises(mg.ShapeError, "linear", "(5, 4)", "(2, 3)", "in_features"):
        layer(mg.tensor(np.ones((5, 4), np.float32)))


def test_linear_bias_shape():
    with raises(mg.ShapeError, "linear", "bias", "(3,)", "(4,)"):
        F.linear(f64(2, 3), f64(4, 3), f64(3))


@pytest.mark.parametrize("call,fragments", [
    (lambda x: x.reshape(4, 4), ["reshape", "(2, 3)", "(4, 4)"]),
    (lambda x: x.sum(axis=2), ["sum", "axis 2", "2 dimension"]),
    (lambda x: x.mean(axis=(0, 0)), ["mean", "twice"]),
    (lambda x: x.max(axis=-3), ["max", "axis -3"]),
    (lambda x: x.var(axis=5), ["var", "axis 5"]),
    (lambda x: x.var(axis=0, ddof=2), ["var", "ddof=2"]),
    (lambda x: x.transpose(0, 0), ["transpose", "(0, 0)", "permutation"]),
    (lambda x: x.transpose(0, 1, 2), ["transpose", "(0, 1, 2)"]),
    (lambda x: mg.concatenate([x, f64(3, 3)], axis=1), ["concatenate", "(2, 3)", "(3, 3)"]),
    (lambda x: mg.stack([x, f64(3, 2)]), ["stack", "(2, 3)", "(3, 2)"]),
    (lambda x: mg.stack([x, x], axis=3), ["stack", "axis 3"]),
    (lambda x: F.softmax(x, axis=2), ["softmax", "axis 2"]),
    (lambda x: F.log_softmax(x, axis=-3), ["log_softmax", "axis -3"]),
    (lambda x: F.layer_norm(x, 4), ["layer_norm", "(2, 3)", "(4,)"]),
    (lambda x: mg.nn.BatchNorm1d(4)(x.astype(np.float32)), ["batch_norm", "(2, 3)", "C=4"]),
    (lambda x: F.cross_entropy(x, np.array([0, 1, 2])), ["cross_entropy", "(2, 3)", "(3,)"]),
    (lambda x: F.cross_entropy(x, np.array([0, 3])), ["cross_entropy", "[0, 3)"]),
], ids=["reshape", "sum-axis", "duplicate-axis", "max-axis", "var-axis", "ddof", "transpose-dup", "transpose-len",
        "concatenate", "stack", "stack-axis", "softmax-axis", "log_softmax-axis", "layer_norm", "batch_norm",
        "ce-shape", "ce-range"])
def test_shape_errors(call, fragments):
    with raises(mg.ShapeError, *fragments):
        call(f64(2, 3))


def test_index_out_of_range_and_float_index():
    x = f64(2, 3)
    with raises(mg.IndexingError, "getitem", "(2, 3)"):
        x[5]
    with raises(mg.IndexingError, "getitem", "integer"):
        x[np.array([0.5])]


# --------------------------------------------------------------------------- the tape

def test_backward_on_non_scalar_needs_grad():
    y = f64(2, 3) * 2
    with raises(mg.GraphError, "backward", "(2, 3)", "grad=", "sum()"):
        y.backward()


def test_backward_with_wrong_grad_shape():
    y = f64(2, 3) * 2
    with raises(mg.GraphError, "backward", "(3,)", "(2, 3)"):
        y.backward(np.ones(3))


def test_backward_on_tensor_without_grad():
    with raises(mg.GraphError, "requires_grad=True", "no_grad"):
        (f64(3, requires_grad=False) * 2).sum().backward()
    x = f64(3)
    with mg.no_grad():
        y = (x * 2).sum()
    with raises(mg.GraphError, "requires_grad=True"):
        y.backward()


def test_second_backward_through_freed_graph():
    x = f64(3)
    y = (x.exp() * 2).sum()
    y.backward()
    with raises(mg.GraphError, "second time", "retain_graph=True"):
        y.backward()


def test_second_backward_through_a_shared_freed_subgraph():
    x = f64(3)
    h = x.exp()
    h.sum().backward()
    with raises(mg.GraphError, "Exp", "retain_graph"):
        h.mean().backward()


def test_retain_graph_allows_a_second_backward():
    x = f64(3)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    np.testing.assert_allclose(first, 2 * np.exp(x.numpy()))
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)
    with raises(mg.GraphError, "retain_graph"):
        y.backward()


def test_item_of_many_elements():
    with raises(mg.GraphError, "item", "(2, 3)"):
        f64(2, 3).item()


# --------------------------------------------------------------------------- dtypes and devices

@pytest.mark.parametrize("data", ["abc", ["a", "b"], np.array(["x", "y"]), np.array([{}, 1], dtype=object)],
                         ids=["str", "list-of-str", "str-array", "object-array"])
def test_non_numeric_data_names_the_dtype(data):
    dtype = str(np.asarray(data).dtype)
    with raises(mg.DTypeError, "tensor", dtype, "not numeric"):
        mg.tensor(data)


def test_string_operand():
    with raises(mg.DTypeError, "not numeric"):
        f64(3) + "abc"


def test_ragged_list():
    with raises(mg.DTypeError, "tensor", "list"):
        mg.tensor([[1.0, 2.0], [3.0]])


@pytest.mark.skipif(mg.cuda_available(), reason="a CUDA device is present, so device='cuda' works here")
def test_cuda_without_cupy_or_gpu():
    with raises(mg.DeviceError, "'cuda'", "device='cpu'"):
        mg.tensor([1.0, 2.0], device="cuda")
    with raises(mg.DeviceError, "'cuda'"):
        mg.zeros(3, device="cuda")
    with raises(mg.DeviceError, "'cuda'"):
        f64(3).to("cuda")


def test_unknown_device():
    with raises(mg.DeviceError, "'tpu'", "'cpu'"):
        mg.tensor([1.0], device="tpu")


@pytest.mark.parametrize("make", [
    lambda: mg.tensor(np.arange(3), requires_grad=True),
    lambda: mg.tensor([1, 2, 3], dtype=np.int32, requires_grad=True),
    lambda: mg.tensor(np.array([True, False]), requires_grad=True),
    lambda: mg.tensor(np.arange(3)).requires_grad_(),
    lambda: mg.zeros(3, dtype=np.int64, requires_grad=True),
], ids=["int64", "int32", "bool", "requires_grad_", "zeros"])
def test_requires_grad_on_integer_data(make):
    with raises(mg.DTypeError, "requires_grad", "float"):
        make()


def test_set_default_dtype_must_be_floating():
    with raises(mg.DTypeError, "set_default_dtype", "int64", "np.float32"):
        mg.set_default_dtype(np.int64)


def test_bad_options_are_argument_errors():
    x = f64(2, 3)
    with raises(mg.ArgumentError, "gelu", "'tanh'"):
        F.gelu(x, approximate="fast")
    with raises(mg.ArgumentError, "cross_entropy", "'avg'"):
        F.cross_entropy(x, np.array([0, 1]), reduction="avg")
    with raises(mg.ArgumentError, "dropout", "1.5"):
        F.dropout(x, p=1.5)
    with raises(mg.ArgumentError, "SGD", "lr"):
        mg.optim.SGD([x], lr=-1)
    with raises(mg.ArgumentError, "Adam", "betas"):
        mg.optim.Adam([x], betas=(1.0, 0.9))
    with raises(mg.MinigradError, "SGD", "empty"):
        mg.optim.SGD([], lr=0.1)
    assert issubclass(mg.ArgumentError, ValueError)


def test_float_class_targets_are_refused():
    with raises(mg.DTypeError, "cross_entropy", "float", "int64"):
        F.cross_entropy(f64(2, 3), np.array([0.0, 1.0]))


# --------------------------------------------------------------------------- dtype promotion

MIXED = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b.exp(),
    "matmul": lambda a, b: a @ b.T,
    "maximum": mg.maximum,
    "where": lambda a, b: mg.where(np.array([True, False, True]), a, b),
    "concatenate": lambda a, b: mg.concatenate([a, b], axis=0),
    "linear": lambda a, b: F.linear(a, b, mg.tensor(np.ones(2, b.dtype), requires_grad=True)),
}


@pytest.mark.parametrize("name", list(MIXED))
@pytest.mark.parametrize("order", ["f32-f64", "f64-f32"])
def test_mixed_precision_follows_numpy_and_grads_keep_leaf_dtype(name, order):
    a = f32(2, 3) if order == "f32-f64" else f64(2, 3)
    b = f64(2, 3, seed=1) if order == "f32-f64" else f32(2, 3, seed=1)
    out = MIXED[name](a, b)
    assert out.dtype == np.float64 == np.result_type(a.dtype, b.dtype)
    out.sum().backward()
    assert a.grad.dtype == a.dtype and b.grad.dtype == b.dtype
    assert a.grad.shape == a.shape and b.grad.shape == b.shape


def test_float32_with_python_scalars_stays_float32():
    x = f32(3)
    for y in (x * 2, x + 1.5, 2.0 ** x, x ** 2, 1 / x, x - 3, x.clip(0, 1), mg.maximum(x, 0.0)):
        assert y.dtype == np.float32


F32_OPS = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y.exp(), "pow": lambda x, y: x.abs() ** y, "maximum": mg.maximum,
    "where": lambda x, y: mg.where(x > 0, x, y), "matmul": lambda x, y: x @ y.T,
    "linear": lambda x, y: F.linear(x, y, y[:, 0]), "neg": lambda x, y: -x, "exp": lambda x, y: x.exp(),
    "log": lambda x, y: x.abs().log(), "tanh": lambda x, y: x.tanh(), "sigmoid": lambda x, y: x.sigmoid(),
    "relu": lambda x, y: x.relu(), "sqrt": lambda x, y: x.abs().sqrt(), "abs": lambda x, y: abs(x),
    "clip": lambda x, y: x.clip(-0.5, 0.5), "gelu": lambda x, y: F.gelu(x),
    "gelu-tanh": lambda x, y: F.gelu(x, approximate="tanh"), "dropout": lambda x, y: F.dropout(x, 0.5),
    "sum": lambda x, y: x.sum(axis=0), "mean": lambda x, y: x.mean(axis=1, keepdims=True),
    "max": lambda x, y: x.max(axis=1), "max-all": lambda x, y: x.max(), "var": lambda x, y: x.var(axis=0),
    "reshape": lambda x, y: x.reshape(-1), "transpose": lambda x, y: x.T, "getitem": lambda x, y: x[[0, 0], 1:],
    "concatenate": lambda x, y: mg.concatenate([x, y]), "stack": lambda x, y: mg.stack([x, y], axis=1),
    "softmax": lambda x, y: F.softmax(x), "log_softmax": lambda x, y: F.log_softmax(x, axis=0),
    "cross_entropy": lambda x, y: F.cross_entropy(x, np.array([0, 2, 1, 2])),
    "cross_entropy-none": lambda x, y: F.cross_entropy(x, np.array([0, 2, 1, 2]), reduction="none"),
    "batch_norm": lambda x, y: F.batch_norm(x, None, None, y[0], y[1]),
    "batch_norm-eval": lambda x, y: mg.nn.BatchNorm1d(3).eval()(x),
    "layer_norm": lambda x, y: F.layer_norm(x, 3, y[0], y[1]),
    "mse_loss": lambda x, y: F.mse_loss(x, y),
}


@pytest.mark.parametrize("name", list(F32_OPS))
def test_float32_in_float32_out_and_every_gradient_float32(name):
    x, y = f32(4, 3), f32(4, 3, seed=1)
    out = F32_OPS[name](x, y)
    assert out.dtype == np.float32
    # every node's backward, not only the leaves (which are cast to their dtype on arrival)
    for node in mg.tape(out).nodes:
        grads = tuple(np.ones(shape, dtype) for shape, dtype in node.out_meta)
        in_grads = node.backward(grads[0] if len(grads) == 1 else grads)
        for g in in_grads:
            assert g is None or g.dtype == np.float32, f"{node.name} backward gave {g.dtype}"
    out.sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.shape == x.shape
    if y.grad is not None:
        assert y.grad.dtype == np.float32 and y.grad.shape == y.shape


# --------------------------------------------------------------------------- integer targets and indices

@pytest.mark.parametrize("target", [np.array([0, 2, 1]), np.array([0, 2, 1], np.int32), np.array([0, 2, 1], np.uint8),
                                    [0, 2, 1], mg.tensor(np.array([0, 2, 1]))],
                         ids=["int64", "int32", "uint8", "list", "tensor"])
def test_integer_class_targets(target):
    logits = f64(3, 4)
    loss = F.cross_entropy(logits, target)
    x = logits.numpy()
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(loss.item(), -logp[[0, 1, 2], [0, 2, 1]].mean(), rtol=1e-12)
    loss.backward()
    expect = np.exp(logp)
    expect[[0, 1, 2], [0, 2, 1]] -= 1
    np.testing.assert_allclose(logits.grad.numpy(), expect / 3, rtol=1e-12)


@pytest.mark.parametrize("index", [np.array([2, 0, 2], np.int32), np.array([2, 0, 2], np.uint16), [2, 0, 2],
                                   mg.tensor(np.array([2, 0, 2])), (np.int64(1), slice(None))],
                         ids=["int32", "uint16", "list", "tensor", "numpy-int"])
def test_integer_index_arrays(index):
    x = f64(3, 4)
    raw = index.data if isinstance(index, mg.Tensor) else index
    y = x[index]
    np.testing.assert_array_equal(y.numpy(), x.numpy()[raw])
    y.sum().backward()
    expect = np.zeros((3, 4))
    np.add.at(expect, raw, 1.0)
    np.testing.assert_array_equal(x.grad.numpy(), expect)


def test_state_dict_and_dataset_errors_are_minigrad_errors():
    model = mg.nn.Linear(3, 2)
    with pytest.raises(mg.StateDictError, match=r"missing keys \['bias'\].*strict=False"):
        model.load_state_dict({"weight": np.zeros((2, 3))})
    model.load_state_dict({"weight": np.zeros((2, 3))}, strict=False)
    assert np.array_equal(model.weight.numpy(), np.zeros((2, 3)))
    with pytest.raises(mg.ShapeError, match=r"'weight' has shape \(2, 3\)"):
        model.load_state_dict({"weight": np.zeros((3, 3)), "bias": np.zeros(2)})
    with pytest.raises(mg.ArgumentError, match="spirals"):
        mg.data.spirals(0)
    with pytest.raises(mg.ArgumentError, match="moons"):
        mg.data.moons(1)
