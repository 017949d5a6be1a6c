"""Misuse of every public function and constructor raises a minigrad error naming the argument, never a bare
NumPy or Python exception. Each probe below escaped as a TypeError, ValueError, IndexError, OverflowError,
ZeroDivisionError or AttributeError (or passed silently) before it was checked."""
import math
import re
import warnings

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.checkpoint import (
    capture,
    checkpoint,
    checkpoint_sequential,
    dynamic,
    measure_chain,
    plan,
    planner,
    register,
    run_schedule,
    schedules,
    simulate,
    solve,
)
from minigrad.nn import functional as F


def x23():
    return mg.tensor(np.ones((2, 3)), requires_grad=True)


def leaf():
    return mg.tensor(np.ones(2), requires_grad=True)


def chain():
    return [nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)]


def x12():
    return mg.ones(1, 2, requires_grad=True)


def square_sum(a):
    return (a * a).sum()


def bn_state(**change):
    return {**nn.BatchNorm1d(2).state_dict(), **change}


class _NoSuper(nn.Module):
    def __init__(self):  # forgets super().__init__()
        self.weight = 1



def _solve_tiny(**kw):
    from minigrad.checkpoint import solve
    from minigrad.checkpoint.graph_models import chain
    return solve(chain(2), "1MB", **kw)


# (id, call, error class, fragments the message must contain: the argument's name, what it got, the fix)
PROBES = [
    # factories and dtypes
    ("tensor-dtype-bogus", lambda: mg.tensor([1.0], dtype="bogus"),
     mg.DTypeError, ["tensor", "dtype='bogus'", "np.float32"]),
    ("zeros-negative", lambda: mg.zeros(-1), mg.ShapeError, ["zeros", "(-1,)", "non-negative"]),
    ("ones-negative", lambda: mg.ones(2, -1), mg.ShapeError, ["ones", "(2, -1)"]),
    ("zeros-float-dim", lambda: mg.zeros(2.5), mg.ShapeError, ["zeros", "2.5", "integers"]),
    ("zeros-none", lambda: mg.zeros(None), mg.ShapeError, ["zeros", "None"]),
    ("zeros-huge", lambda: mg.zeros(10**30), mg.ShapeError, ["zeros", "more elements"]),
    ("zeros-dtype-bogus", lambda: mg.zeros(2, dtype="bogus"), mg.DTypeError, ["zeros", "dtype='bogus'"]),
    ("randn-negative", lambda: mg.randn(-1), mg.ShapeError, ["randn", "(-1,)"]),
    ("randn-float-dim", lambda: mg.randn(2.5), mg.ShapeError, ["randn", "2.5"]),
    ("randn-int-dtype", lambda: mg.randn(2, dtype=np.int32), mg.DTypeError, ["randn", "dtype", "int32", "np.float32"]),
    ("rand-int-dtype", lambda: mg.rand(2, dtype=np.int64), mg.DTypeError, ["rand", "dtype", "int64"]),
    ("rand-negative", lambda: mg.rand(-3), mg.ShapeError, ["rand", "(-3,)"]),
    ("set_default_dtype-bogus", lambda: mg.set_default_dtype("bogus"), mg.DTypeError, ["set_default_dtype", "'bogus'"]),
    ("set_default_dtype-none", lambda: mg.set_default_dtype(None), mg.DTypeError, ["set_default_dtype", "None"]),
    ("astype-bogus", lambda: x23().astype("bogus"), mg.DTypeError, ["astype", "'bogus'"]),
    ("manual_seed-str", lambda: mg.manual_seed("a"), mg.ArgumentError, ["manual_seed", "seed", "'a'"]),
    ("manual_seed-none", lambda: mg.manual_seed(None), mg.ArgumentError, ["manual_seed", "seed", "None"]),
    ("manual_seed-negative", lambda: mg.manual_seed(-1), mg.ArgumentError, ["manual_seed", "non-negative"]),
    ("manual_seed-float", lambda: mg.manual_seed(1.5), mg.ArgumentError, ["manual_seed", "1.5"]),
    ("data-setter-str", lambda: setattr(x23(), "data", "abc"), mg.DTypeError, ["data", "not numeric"]),
    # axes and reductions
    ("sum-axis-float", lambda: x23().sum(axis=1.5), mg.ShapeError, ["sum", "axis", "1.5"]),
    ("sum-axis-str", lambda: x23().sum(axis="a"), mg.ShapeError, ["sum", "axis", "'a'"]),
    ("sum-axis-list-of-float", lambda: x23().sum(axis=[0.5]), mg.ShapeError, ["sum", "axis", "[0.5]"]),
    ("sum-keepdims-str", lambda: x23().sum(keepdims="no"), mg.ArgumentError, ["sum", "keepdims", "'no'"]),
    ("mean-axis-float", lambda: x23().mean(axis=1.5), mg.ShapeError, ["mean", "axis"]),
    ("max-axis-float", lambda: x23().max(axis=1.5), mg.ShapeError, ["max", "axis"]),
    ("var-axis-float", lambda: x23().var(axis=1.5), mg.ShapeError, ["var", "axis"]),
    ("var-ddof-str", lambda: x23().var(ddof="a"), mg.ArgumentError, ["var", "ddof", "'a'"]),
    ("softmax-axis-none", lambda: F.softmax(x23(), axis=None), mg.ShapeError, ["softmax", "axis", "None", "axis=-1"]),
    ("softmax-axis-tuple", lambda: F.softmax(x23(), axis=(0, 1)), mg.ShapeError, ["softmax", "axis", "(0, 1)"]),
    ("log_softmax-axis-none", lambda: F.log_softmax(x23(), axis=None), mg.ShapeError, ["log_softmax", "axis"]),
    ("argmax-axis-out-of-range", lambda: x23().argmax(axis=5), mg.ShapeError, ["argmax", "axis 5", "[-2, 1]"]),
    ("argmax-axis-float", lambda: x23().argmax(axis=1.5), mg.ShapeError, ["argmax", "axis", "1.5"]),
    ("argmax-empty", lambda: mg.zeros(0).argmax(), mg.ShapeError, ["argmax", "empty", "(0,)"]),
    ("concatenate-axis-float", lambda: mg.concatenate([x23(), x23()], axis=1.5), mg.ArgumentError,
     ["concatenate", "axis", "1.5"]),
    ("stack-axis-float", lambda: mg.stack([x23(), x23()], axis=1.5), mg.ArgumentError, ["stack", "axis", "1.5"]),
    # indexing, reshaping, comparing
    ("getitem-step-zero", lambda: x23()[::0], mg.IndexingError, ["getitem", "slice(None, None, 0)", "step"]),
    ("reshape-str", lambda: x23().reshape("a"), mg.ShapeError, ["reshape", "'a'", "integers"]),
    ("reshape-float", lambda: x23().reshape(2.0, 3.0), mg.ShapeError, ["reshape", "(2.0, 3.0)"]),
    ("reshape-none", lambda: x23().reshape(None), mg.ShapeError, ["reshape", "None"]),
    ("transpose-str", lambda: x23().transpose("a", "b"), mg.ShapeError, ["transpose", "('a', 'b')", "integers"]),
    ("transpose-float", lambda: x23().transpose(1.0, 0.0), mg.ShapeError, ["transpose", "(1.0, 0.0)"]),
    ("compare-str", lambda: x23() < "a", mg.DTypeError, ["compare", "(2, 3)", "'str'"]),
    ("compare-shapes", lambda: x23() == mg.ones(4), mg.ShapeError, ["compare", "(2, 3)", "(4,)", "broadcast"]),
    ("neg-bool", lambda: -mg.tensor(np.array([True])), mg.DTypeError, ["neg", "boolean", "astype"]),
    ("bool-of-many", lambda: bool(x23()), mg.ShapeError, ["bool()", "(2, 3)", "ambiguous", "x.sum()"]),
    ("bool-of-empty", lambda: bool(mg.zeros(0)), mg.ShapeError, ["bool()", "(0,)"]),
    ("float-of-many", lambda: float(x23()), mg.ShapeError, ["float()", "(2, 3)"]),
    ("int-of-many", lambda: int(x23()), mg.ShapeError, ["int()", "(2, 3)"]),
    ("backward-grad-str", lambda: (x23() * 2).backward("a"), mg.DTypeError, ["backward", "grad", "str"]),
    ("add-huge-int", lambda: x23() + 10**400, mg.DTypeError, ["add", "digits", "does not fit"]),
    ("pow-huge-int", lambda: x23() ** 10**400, mg.DTypeError, ["pow", "does not fit"]),
    ("compare-huge-int", lambda: x23() < 10**400, mg.DTypeError, ["compare", "(2, 3)"]),
    ("pow-negative-integer-power", lambda: mg.tensor(np.array([2])) ** mg.tensor(np.array([-1])), mg.DTypeError,
     ["pow", "int64", "astype"]),
    ("backward-complex-grad", lambda: (x23() * 2).backward(np.ones((2, 3)) * 1j), mg.DTypeError,
     ["backward", "grad", "complex"]),
    ("concatenate-a-tensor", lambda: mg.concatenate(mg.ones(2, 2)),
     mg.ArgumentError, ["concatenate", "list", "Tensor"]),
    ("stack-a-number", lambda: mg.stack(3), mg.ArgumentError, ["stack", "list", "int"]),
    ("device-list", lambda: mg.tensor([1.0], device=["cpu"]), mg.DeviceError, ["device", "['cpu']", "'cuda:N'"]),
    ("clip-huge-int", lambda: x23().clip(0, 10**400), mg.ArgumentError, ["clip", "max", "float('inf')"]),
    ("clip-none-none", lambda: x23().clip(None, None), mg.ArgumentError, ["clip", "min and max", "both None"]),
    ("clip-str", lambda: x23().clip("a", 1), mg.ArgumentError, ["clip", "min", "'a'"]),
    # functional
    ("dropout-p-str", lambda: F.dropout(x23(), p="a"), mg.ArgumentError, ["dropout", "p", "'a'"]),
    ("dropout-p-none", lambda: F.dropout(x23(), p=None), mg.ArgumentError, ["dropout", "p", "None"]),
    ("batch_norm-momentum-none", lambda: F.batch_norm(x23(), mg.zeros(3), mg.ones(3), mg.ones(3), mg.zeros(3),
                                                      momentum=None), mg.ArgumentError, ["batch_norm", "momentum"]),
    ("batch_norm-eps-negative", lambda: F.batch_norm(x23(), None, None, mg.ones(3), mg.zeros(3), eps=-1),
     mg.ArgumentError, ["batch_norm", "eps", "-1"]),
    ("layer_norm-shape-str", lambda: F.layer_norm(x23(), "a"), mg.ArgumentError, ["layer_norm", "normalized_shape"]),
    ("layer_norm-shape-negative", lambda: F.layer_norm(x23(), -1),
     mg.ArgumentError, ["layer_norm", "normalized_shape", ">= 1"]),
    ("layer_norm-shape-float", lambda: F.layer_norm(x23(), 3.0),
     mg.ArgumentError, ["layer_norm", "normalized_shape", "3.0"]),
    ("layer_norm-eps-none", lambda: F.layer_norm(x23(), 3, eps=None), mg.ArgumentError, ["layer_norm", "eps"]),
    ("linear-weight-1d", lambda: F.linear(x23(), mg.ones(3)), mg.ShapeError, ["linear", "2-d weight", "(3,)"]),
    ("linear-weight-none", lambda: F.linear(x23(), None), mg.DTypeError, ["linear", "weight", "NoneType"]),
    ("linear-activation-unknown", lambda: F.linear(x23(), mg.ones(2, 3), activation="gelu"), mg.ArgumentError,
     ["linear", "activation", "'gelu'", "after the layer"]),
    ("Linear-activation-unknown", lambda: nn.Linear(2, 2, activation="sigmoid"), mg.ArgumentError,
     ["Linear", "activation", "'sigmoid'", "own layer"]),
    ("cuda_graph-not-callable", lambda: mg.cuda_graph(5), mg.ArgumentError, ["cuda_graph", "callable", "int"]),
    ("cuda_graph-warmup-zero", lambda: mg.cuda_graph(lambda x: x, warmup=0), mg.ArgumentError,
     ["cuda_graph", "warmup", "0", "eagerly"]),
    ("cuda_graph-cpu-tensors", lambda: mg.cuda_graph(lambda x: x * 2)(mg.ones(3)), mg.DeviceError,
     ["cuda_graph", "cpu", "'cuda'", "directly on the CPU"]),
    ("mse_loss-column-vs-vector", lambda: F.mse_loss(mg.ones(4, 1), mg.ones(4)), mg.ShapeError,
     ["mse_loss", "(4, 1)", "(4,)", "reshape"]),
    # layers
    ("Linear-float-features", lambda: nn.Linear(2.5, 2), mg.ArgumentError, ["Linear", "in_features", "2.5"]),
    ("Linear-str-features", lambda: nn.Linear(2, "a"), mg.ArgumentError, ["Linear", "out_features", "'a'"]),
    ("Linear-none-features", lambda: nn.Linear(None, 2), mg.ArgumentError, ["Linear", "in_features", "None"]),
    ("Linear-bool-features", lambda: nn.Linear(True, 2), mg.ArgumentError, ["Linear", "in_features", "True"]),
    ("Linear-int-dtype", lambda: nn.Linear(2, 2, dtype=np.int32),
     mg.DTypeError, ["Linear", "dtype", "int32", "np.float32"]),
    ("Linear-complex-dtype", lambda: nn.Linear(2, 2, dtype=np.complex64),
     mg.DTypeError, ["Linear", "dtype", "complex64"]),
    ("Linear-bogus-dtype", lambda: nn.Linear(2, 2, dtype="bogus"), mg.DTypeError, ["Linear", "dtype='bogus'"]),
    ("Linear-list-input", lambda: nn.Linear(2, 2)([[1.0, 2.0]]),
     mg.DTypeError, ["Linear", "input", "list", "mg.tensor"]),
    ("Linear-int-input", lambda: nn.Linear(2, 2)(mg.tensor(np.array([[1, 2]]))), mg.DTypeError,
     ["Linear", "int64", "astype"]),
    ("Module-train-str", lambda: nn.Linear(2, 2).train("no"), mg.ArgumentError, ["train", "mode", "'no'", "eval()"]),
    ("Module-register_buffer-str", lambda: nn.Module().register_buffer("a", "x"), mg.StateDictError,
     ["register_buffer", "str", "mg.tensor"]),
    ("BatchNorm1d-momentum-none", lambda: nn.BatchNorm1d(3, momentum=None), mg.ArgumentError,
     ["BatchNorm1d", "momentum=None", "momentum=0.1"]),
    ("BatchNorm1d-momentum-2", lambda: nn.BatchNorm1d(3, momentum=2),
     mg.ArgumentError, ["BatchNorm1d", "momentum", "2"]),
    ("BatchNorm1d-eps-negative", lambda: nn.BatchNorm1d(3, eps=-1), mg.ArgumentError, ["BatchNorm1d", "eps", "-1"]),
    ("BatchNorm1d-eps-str", lambda: nn.BatchNorm1d(3, eps="a"), mg.ArgumentError, ["BatchNorm1d", "eps", "'a'"]),
    ("BatchNorm1d-zero-features", lambda: nn.BatchNorm1d(0), mg.ArgumentError, ["BatchNorm1d", "num_features", ">= 1"]),
    ("BatchNorm1d-float-features", lambda: nn.BatchNorm1d(2.5),
     mg.ArgumentError, ["BatchNorm1d", "num_features", "2.5"]),
    ("BatchNorm1d-int-dtype", lambda: nn.BatchNorm1d(3, dtype=np.int64),
     mg.DTypeError, ["BatchNorm1d", "dtype", "int64"]),
    ("BatchNorm1d-list-input", lambda: nn.BatchNorm1d(3)([[1.0, 2.0, 3.0]] * 2),
     mg.DTypeError, ["BatchNorm1d", "input"]),
    ("LayerNorm-str", lambda: nn.LayerNorm("a"), mg.ArgumentError, ["LayerNorm", "normalized_shape", "'a'"]),
    ("LayerNorm-negative", lambda: nn.LayerNorm(-1), mg.ArgumentError, ["LayerNorm", "normalized_shape", ">= 1"]),
    ("LayerNorm-float", lambda: nn.LayerNorm(2.5), mg.ArgumentError, ["LayerNorm", "normalized_shape", "2.5"]),
    ("LayerNorm-eps-none", lambda: nn.LayerNorm(3, eps=None), mg.ArgumentError, ["LayerNorm", "eps", "None"]),
    ("LayerNorm-int-dtype", lambda: nn.LayerNorm(3, dtype=np.int32), mg.DTypeError, ["LayerNorm", "dtype", "int32"]),
    ("Dropout-p-str", lambda: nn.Dropout("a"), mg.ArgumentError, ["Dropout", "p", "'a'"]),
    ("Dropout-p-none", lambda: nn.Dropout(None), mg.ArgumentError, ["Dropout", "p", "None"]),
    ("GELU-approximate", lambda: nn.GELU("fast"), mg.ArgumentError, ["GELU", "approximate", "'fast'"]),
    ("SelfAttention-float-dim", lambda: nn.SelfAttention(2.5), mg.ArgumentError, ["SelfAttention", "dim", "2.5"]),
    ("TransformerBlock-negative-dim", lambda: nn.TransformerBlock(-1),
     mg.ArgumentError, ["TransformerBlock", "dim", ">= 1"]),
    ("Sequential-non-module", lambda: nn.Sequential(nn.Linear(2, 2), 5), mg.ArgumentError,
     ["Sequential", "layer 1", "type int", "Module"]),
    ("Sequential-function", lambda: nn.Sequential(lambda x: x),
     mg.ArgumentError, ["Sequential", "layer 0", "function"]),
    ("Sequential-append-non-module", lambda: nn.Sequential().append(3),
     mg.ArgumentError, ["Sequential", "layer 0", "int"]),
    ("Sequential-index-out-of-range", lambda: nn.Sequential(nn.ReLU())[5],
     mg.IndexingError, ["Sequential", "index 5", "[-1, 0]"]),
    ("Sequential-index-str", lambda: nn.Sequential(nn.ReLU())["a"], mg.IndexingError, ["Sequential", "index 'a'"]),
    ("Residual-non-module", lambda: nn.Residual(5), mg.ArgumentError, ["Residual", "fn", "int", "Module"]),
    ("Parameter-int", lambda: nn.Parameter(np.array([1, 2])),
     mg.DTypeError, ["Parameter", "int64", "requires_grad=False"]),
    ("Parameter-int-tensor", lambda: nn.Parameter(mg.tensor(np.array([1]))), mg.DTypeError, ["Parameter", "int64"]),
    # state dicts
    ("load_state_dict-none", lambda: nn.Linear(2, 2).load_state_dict(None),
     mg.StateDictError, ["load_state_dict", "NoneType"]),
    ("load_state_dict-str-value", lambda: nn.Linear(2, 2).load_state_dict({"weight": "a", "bias": np.zeros(2)}),
     mg.DTypeError, ["load_state_dict", "'weight'", "<U1"]),
    ("load_state_dict-none-value", lambda: nn.Linear(2, 2).load_state_dict({"weight": None, "bias": np.zeros(2)}),
     mg.DTypeError, ["load_state_dict", "'weight'", "object"]),
    ("load_state_dict-ragged-list", lambda: nn.Linear(2, 2).load_state_dict({"weight": [[1.0], [1.0, 2.0]],
                                                                            "bias": np.zeros(2)}),
     mg.DTypeError, ["load_state_dict", "'weight'"]),
    ("load_state_dict-complex", lambda: nn.Linear(2, 2).load_state_dict({"weight": np.ones((2, 2)) * 1j,
                                                                        "bias": np.zeros(2)}),
     mg.DTypeError, ["load_state_dict", "'weight'", "complex128", "imaginary"]),
    ("load_state_dict-fraction-into-int", lambda: nn.BatchNorm1d(2).load_state_dict(bn_state(num_batches_tracked=2.7)),
     mg.DTypeError, ["load_state_dict", "'num_batches_tracked'", "int64", "fractional"]),
    ("load_state_dict-inf-into-int", lambda: nn.BatchNorm1d(2).load_state_dict(bn_state(num_batches_tracked=np.inf)),
     mg.DTypeError, ["load_state_dict", "'num_batches_tracked'", "int64"]),
    # optimizers
    ("SGD-bare-tensor", lambda: mg.optim.SGD(leaf(), lr=0.1),
     mg.ArgumentError, ["SGD", "params", "Tensor", "model.parameters()"]),
    ("SGD-module", lambda: mg.optim.SGD(nn.Linear(2, 2), lr=0.1), mg.ArgumentError, ["SGD", "params", "Linear"]),
    ("SGD-none", lambda: mg.optim.SGD(None, lr=0.1), mg.ArgumentError, ["SGD", "params", "NoneType"]),
    ("SGD-list-of-str", lambda: mg.optim.SGD(["a"], lr=0.1), mg.ArgumentError, ["SGD", "params[0]", "str"]),
    ("SGD-int-tensor", lambda: mg.optim.SGD([mg.tensor(np.array([1]))], lr=0.1),
     mg.DTypeError, ["SGD", "params[0]", "int64"]),
    ("SGD-non-leaf", lambda: mg.optim.SGD([leaf() * 2], lr=0.1), mg.ArgumentError, ["SGD", "params[0]", "leaf"]),
    ("SGD-lr-nan", lambda: mg.optim.SGD([leaf()], lr=float("nan")), mg.ArgumentError, ["SGD", "lr", "nan"]),
    ("SGD-lr-inf", lambda: mg.optim.SGD([leaf()], lr=float("inf")), mg.ArgumentError, ["SGD", "lr", "inf"]),
    ("SGD-lr-str", lambda: mg.optim.SGD([leaf()], lr="a"), mg.ArgumentError, ["SGD", "lr", "'a'"]),
    ("SGD-lr-none", lambda: mg.optim.SGD([leaf()], lr=None), mg.ArgumentError, ["SGD", "lr", "None"]),
    ("SGD-momentum-nan", lambda: mg.optim.SGD([leaf()], lr=0.1, momentum=float("nan")),
     mg.ArgumentError, ["SGD", "momentum"]),
    ("SGD-momentum-str", lambda: mg.optim.SGD([leaf()], lr=0.1, momentum="a"),
     mg.ArgumentError, ["SGD", "momentum", "'a'"]),
    ("SGD-weight_decay-negative", lambda: mg.optim.SGD([leaf()], lr=0.1, weight_decay=-1), mg.ArgumentError,
     ["SGD", "weight_decay", "-1"]),
    ("SGD-weight_decay-nan", lambda: mg.optim.SGD([leaf()], lr=0.1, weight_decay=float("nan")), mg.ArgumentError,
     ["SGD", "weight_decay", "nan"]),
    ("Adam-bare-tensor", lambda: mg.optim.Adam(leaf()), mg.ArgumentError, ["Adam", "params", "Tensor"]),
    ("Adam-lr-inf", lambda: mg.optim.Adam([leaf()], lr=float("inf")), mg.ArgumentError, ["Adam", "lr", "inf"]),
    ("Adam-betas-short", lambda: mg.optim.Adam([leaf()], betas=(0.9,)),
     mg.ArgumentError, ["Adam", "betas", "(0.9,)", "0.999"]),
    ("Adam-betas-number", lambda: mg.optim.Adam([leaf()], betas=0.9), mg.ArgumentError, ["Adam", "betas", "0.9"]),
    ("Adam-betas-str", lambda: mg.optim.Adam([leaf()], betas=("a", "b")),
     mg.ArgumentError, ["Adam", "betas[0]", "'a'"]),
    ("Adam-eps-negative", lambda: mg.optim.Adam([leaf()], eps=-1), mg.ArgumentError, ["Adam", "eps", "-1"]),
    ("Adam-eps-nan", lambda: mg.optim.Adam([leaf()], eps=float("nan")), mg.ArgumentError, ["Adam", "eps", "nan"]),
    ("Adam-eps-str", lambda: mg.optim.Adam([leaf()], eps="a"), mg.ArgumentError, ["Adam", "eps", "'a'"]),
    ("Adam-weight_decay-negative", lambda: mg.optim.Adam([leaf()], weight_decay=-1), mg.ArgumentError,
     ["Adam", "weight_decay", "-1"]),
    # gradcheck
    ("gradcheck-eps-zero", lambda: mg.gradcheck(lambda a: a * 2, leaf().astype(np.float64).requires_grad_(), eps=0),
     mg.ArgumentError, ["gradcheck", "eps", "0"]),
    ("gradcheck-eps-negative", lambda: mg.gradcheck(lambda a: a * 2, leaf(), eps=-1e-6),
     mg.ArgumentError, ["gradcheck", "eps"]),
    ("gradcheck-eps-nan", lambda: mg.gradcheck(lambda a: a * 2, leaf(), eps=float("nan")),
     mg.ArgumentError, ["gradcheck", "eps"]),
    ("gradcheck-atol-str", lambda: mg.gradcheck(lambda a: a * 2, leaf(), atol="a"),
     mg.ArgumentError, ["gradcheck", "atol"]),
    ("gradcheck-atol-negative", lambda: mg.gradcheck(lambda a: a * 2, leaf(), atol=-1),
     mg.ArgumentError, ["gradcheck", "atol"]),
    ("gradcheck-rtol-nan", lambda: mg.gradcheck(lambda a: a * 2, leaf(), rtol=float("nan")),
     mg.ArgumentError, ["gradcheck", "rtol"]),
    ("gradcheck-fn-not-callable", lambda: mg.gradcheck(5, leaf()), mg.ArgumentError, ["gradcheck", "fn", "int"]),
    # checkpointing and data
    ("plan-budget-huge", lambda: plan([nn.Linear(2, 2)], mg.ones(1, 2), strategy="budget", budget=10**400),
     mg.ScheduleError, ["budget", "401 digits", "'64MB'"]),
    ("plan-budget-beyond-float", lambda: plan([nn.Linear(2, 2)], mg.ones(1, 2), strategy="budget", budget="1e300GiB"),
     mg.ScheduleError, ["budget", "'1e300GiB'"]),
    ("checkpoint_sequential-layers-int", lambda: checkpoint_sequential(5, x12()),
     mg.CheckpointError, ["checkpoint_sequential", "layers", "got int", "nn.Linear"]),
    ("checkpoint_sequential-layers-none", lambda: checkpoint_sequential(None, x12()),
     mg.CheckpointError, ["checkpoint_sequential", "layers", "NoneType"]),
    ("checkpoint_sequential-layer-int", lambda: checkpoint_sequential([5], x12()),
     mg.CheckpointError, ["checkpoint_sequential", "layer 0", "5 (int)", "module or callable"]),
    ("checkpoint_sequential-layer-int-none", lambda: checkpoint_sequential([nn.Tanh(), 5], x12(), strategy="none"),
     mg.CheckpointError, ["checkpoint_sequential", "layer 1", "module or callable"]),
    ("checkpoint_sequential-strategy-list", lambda: checkpoint_sequential(chain(), x12(), strategy=["sqrt"]),
     mg.ScheduleError, ["strategy", "['sqrt']", "revolve"]),
    ("checkpoint_sequential-segments-bool", lambda: checkpoint_sequential(chain(), x12(), segments=True),
     mg.ScheduleError, ["segments", "1..L=3", "True"]),
    ("checkpoint_sequential-offload-str", lambda: checkpoint_sequential(chain(), x12(), offload="yes"),
     mg.ArgumentError, ["offload", "True or False", "'yes'"]),
    ("checkpoint_sequential-offload-int", lambda: checkpoint_sequential(chain(), x12(), offload=5),
     mg.ArgumentError, ["offload", "5"]),
    ("plan-layers-float", lambda: plan(2.5), mg.ScheduleError, ["L=2.5", "positive int"]),
    ("plan-layers-float-revolve", lambda: plan(2.5, strategy="revolve", slots=2), mg.ScheduleError, ["L=2.5"]),
    ("plan-layers-bool", lambda: plan(True), mg.ScheduleError, ["L=True", "positive int"]),
    ("plan-layers-huge", lambda: plan(10**400), mg.ScheduleError, ["L=<an int of 401 digits>", "1,000,000", "blocks"]),
    ("plan-layers-huge-revolve", lambda: plan(10**400, strategy="revolve", slots=2),
     mg.ScheduleError, ["401 digits"]),
    ("plan-layers-billion", lambda: plan(10**9), mg.ScheduleError, ["L=1,000,000,000", "at most 1,000,000"]),
    ("plan-layers-str", lambda: plan("abc"), mg.CheckpointError, ["plan", "layers", "got str"]),
    ("plan-layer-int-measured", lambda: plan([5], x12(), strategy="budget", budget="1MB"),
     mg.CheckpointError, ["plan", "layer 0", "module or callable"]),
    ("plan-strategy-list", lambda: plan(4, strategy=[1]), mg.ScheduleError, ["strategy [1]", "sqrt"]),
    ("checkpoint-preserve_rng_state-str", lambda: checkpoint(square_sum, x12(), preserve_rng_state="no"),
     mg.CheckpointError, ["checkpoint", "preserve_rng_state", "True or False", "'no'"]),
    ("checkpoint-preserve_rng_state-none", lambda: checkpoint(square_sum, x12(), preserve_rng_state=None),
     mg.CheckpointError, ["preserve_rng_state", "None"]),
    ("checkpoint-offload-str", lambda: checkpoint(square_sum, x12(), offload="yes"),
     mg.ArgumentError, ["offload", "'yes'"]),
    ("checkpoint-method-list", lambda: checkpoint(square_sum, x12(), budget="1MB", method=["x"]),
     mg.ScheduleError, ["checkpoint", "method", "'optimal'", "list"]),
    ("checkpoint-budget-huge", lambda: checkpoint(square_sum, x12(), budget=10**400),
     mg.ScheduleError, ["budget", "401 digits"]),
    ("tape-int", lambda: mg.tape(5), mg.GraphError, ["tape", "Tensor", "mg.tape(loss)", "int"]),
    ("tape-ndarray", lambda: mg.tape(np.ones(2)), mg.GraphError, ["tape", "ndarray"]),
    ("tape-boundary-str", lambda: mg.tape(x12() * 2, boundary="a"),
     mg.GraphError, ["tape", "boundary", "tape_position()", "'a'"]),
    ("leaves-int", lambda: mg.autograd.leaves(5), mg.GraphError, ["leaves", "Tensor", "int"]),
    ("make-strategy-list", lambda: schedules.make(["sqrt"], 4), mg.ScheduleError, ["strategy ['sqrt']", "revolve"]),
    ("make-layers-huge", lambda: schedules.make("none", 10**400), mg.ScheduleError, ["401 digits"]),
    ("make-costs-int", lambda: schedules.make("budget", 4, costs=5, budget=10),
     mg.ScheduleError, ["costs=int", "ChainCosts", "plan(layers, x"]),
    ("uniform-layers-huge", lambda: schedules.uniform(10**400, 2), mg.ScheduleError, ["401 digits"]),
    ("revolve-layers-huge", lambda: schedules.revolve(10**400, 2), mg.ScheduleError, ["401 digits"]),
    ("binomial_extra_forwards-float", lambda: schedules.binomial_extra_forwards(2.5, 2), mg.ScheduleError, ["L=2.5"]),
    ("binomial_extra_forwards-huge", lambda: schedules.binomial_extra_forwards(10**400, 1),
     mg.ScheduleError, ["401 digits"]),
    ("binomial_extra_forwards-slots-float", lambda: schedules.binomial_extra_forwards(4, 1.5),
     mg.ScheduleError, ["s=1.5", "slots"]),
    ("register-int", lambda: register(5), mg.ScheduleError, ["register", "Strategy", "int"]),
    ("planner-budget-str", lambda: planner.budget(measure_chain(chain(), x12()), "abc"),
     mg.ScheduleError, ["'abc'", "'64MB'"]),
    ("planner-budget-none", lambda: planner.budget(measure_chain(chain(), x12()), None),
     mg.ScheduleError, ["None", "'64MB'"]),
    ("planner-budget-huge", lambda: planner.budget(measure_chain(chain(), x12()), 10**400),
     mg.ScheduleError, ["401 digits"]),
    ("planner-costs-int", lambda: planner.budget(5, 100), mg.ScheduleError, ["budget planner", "ChainCosts", "int"]),
    ("planner-groups-float", lambda: planner.budget(measure_chain(chain(), x12()), 10**6, groups=2.5),
     mg.ScheduleError, ["groups", "positive int", "2.5"]),
    ("planner-max_levels-zero", lambda: planner.budget(measure_chain(chain(), x12()), 10**6, max_levels=0),
     mg.ScheduleError, ["max_levels", "0"]),
    ("planner-max_levels-str", lambda: planner.budget(measure_chain(chain(), x12()), 10**6, max_levels="a"),
     mg.ScheduleError, ["max_levels", "'a'"]),
    ("run_schedule-schedule-int", lambda: run_schedule(chain(), x12(), 5),
     mg.CheckpointError, ["run_schedule", "Schedule", "int"]),
    ("run_schedule-layer-int", lambda: run_schedule([5], x12(), plan(1)),
     mg.CheckpointError, ["run_schedule", "layer 0"]),
    ("measure_chain-layers-int", lambda: measure_chain(5, x12()), mg.CheckpointError, ["measure_chain", "layers"]),
    ("measure_chain-layer-int", lambda: measure_chain([5], x12()), mg.CheckpointError, ["measure_chain", "layer 0"]),
    ("measure_chain-x-ndarray", lambda: measure_chain(chain(), np.ones((1, 2))),
     mg.CheckpointError, ["measure_chain", "x", "Tensor", "ndarray"]),
    ("simulate-int", lambda: simulate(5), mg.ScheduleError, ["simulate", "Schedule", "int"]),
    ("simulate-costs-int", lambda: simulate(plan(3), 5), mg.ScheduleError, ["simulate", "costs", "ChainCosts"]),
    ("capture-int", lambda: capture(5), mg.CheckpointError, ["capture", "callable", "int"]),
    ("solve-graph-int", lambda: solve(5, "1MB"), mg.ScheduleError, ["solve", "Graph", "int"]),
    ("solve-budget-str", lambda: solve(capture(square_sum, x12()), "abc"), mg.ScheduleError, ["'abc'", "'64MB'"]),
    ("solve-method-int", lambda: solve(capture(square_sum, x12()), "1MB", method=5),
     mg.ScheduleError, ["solve", "method 5", "optimal"]),
    ("dynamic-budget-str", lambda: dynamic("abc"), mg.CheckpointError, ["dynamic", "'abc'", "'64MB'"]),
    ("dynamic-budget-huge", lambda: dynamic(10**400), mg.CheckpointError, ["dynamic", "401 digits"]),
    ("dynamic-budget-bool", lambda: dynamic(True), mg.CheckpointError, ["dynamic", "True"]),
    ("dynamic-heuristic-int", lambda: dynamic("1MB", heuristic=5), mg.CheckpointError, ["dynamic", "heuristic 5", "dtr"]),
    ("dynamic-heuristic-list", lambda: dynamic("1MB", heuristic=[1]), mg.CheckpointError, ["dynamic", "[1]", "dtr"]),
    ("dynamic-seed-str", lambda: dynamic("1MB", seed="a"), mg.CheckpointError, ["dynamic", "seed", "'a'", "seed=0"]),
    ("solve-method-list", lambda: _solve_tiny(method=[1]), mg.ScheduleError, ["solve", "[1]", "optimal"]),
    ("solve-time-limit-str", lambda: _solve_tiny(time_limit="a"), mg.ScheduleError, ["solve", "time_limit", "'a'"]),
    ("solve-time-limit-negative", lambda: _solve_tiny(time_limit=-1), mg.ScheduleError, ["solve", "time_limit", "-1"]),
    ("spirals-str", lambda: mg.data.spirals("a"), mg.ArgumentError, ["spirals", "n_per_class", "'a'"]),
    ("spirals-float", lambda: mg.data.spirals(2.5), mg.ArgumentError, ["spirals", "n_per_class", "2.5"]),
    ("spirals-classes-float", lambda: mg.data.spirals(10, classes=2.5), mg.ArgumentError, ["spirals", "classes"]),
    ("spirals-noise-negative", lambda: mg.data.spirals(10, noise=-1), mg.ArgumentError, ["spirals", "noise"]),
    ("spirals-dtype-bogus", lambda: mg.data.spirals(10, dtype="bogus"), mg.DTypeError, ["spirals", "dtype='bogus'"]),
    ("moons-str", lambda: mg.data.moons("a"), mg.ArgumentError, ["moons", "n_samples", "'a'"]),
    ("moons-float", lambda: mg.data.moons(2.5), mg.ArgumentError, ["moons", "n_samples", "2.5"]),
    ("moons-int-dtype", lambda: mg.data.moons(10, dtype=np.int32), mg.DTypeError, ["moons", "dtype", "int32"]),
]


@pytest.mark.parametrize("call,error,fragments", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_misuse_raises_a_minigrad_error_naming_the_argument(call, error, fragments):
    assert issubclass(error, mg.MinigradError)
    pattern = "(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a NumPy RuntimeWarning on the way would be a bare escape too
        with pytest.raises(error, match=pattern):
            call()


def test_probe_ids_are_unique():
    ids = [p[0] for p in PROBES]
    assert len(ids) == len(set(ids))


def test_misuse_keeps_the_python_exception_families():
    """Catching ValueError / TypeError / IndexError as before still works: the classes derive from them."""
    with pytest.raises(ValueError):
        mg.zeros(-1)
    with pytest.raises(TypeError):
        mg.tensor([1.0], dtype="bogus")
    with pytest.raises(IndexError):
        x23()[::0]


def test_module_without_super_init_names_the_fix():
    with pytest.raises(AttributeError, match=re.escape("call super().__init__()")):
        _NoSuper()


def test_float_dtype_probes_cover_every_factory_that_samples():
    """randn and rand draw floating samples: an integer dtype would truncate them to mostly zeros."""
    for make in (mg.randn, mg.rand):
        for dt in (np.int8, np.int64, np.uint8, np.bool_, np.complex128):
            with pytest.raises(mg.DTypeError, match="dtype"):
                make(3, dtype=dt)
        assert make(3, dtype=np.float64).dtype == np.float64
    assert math.isfinite(float(mg.randn(1, dtype=np.float16)))


def test_float16_storage_out_of_range_raises_instead_of_inf():
    big = mg.tensor(np.array([1e5, 1.0, -3.0]), requires_grad=True)
    with pytest.raises(mg.DTypeError, match=r"(?s)store_dtype=float16.*1e\+05.*65504.*store_dtype=None"):
        checkpoint(lambda a: a * a, big, store_dtype="float16")
    layers = [nn.Linear(3, 3, dtype=np.float64), nn.Tanh(), nn.Linear(3, 3, dtype=np.float64)]
    with pytest.raises(mg.DTypeError, match="store_dtype=float16"):
        checkpoint_sequential(layers, mg.tensor(np.full((2, 3), -1e6), requires_grad=True), strategy="sqrt",
                              segments=3, store_dtype="float16")
