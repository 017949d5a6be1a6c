"""Selective checkpointing, reduced-precision storage, attention blocks and gradient accumulation."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import profiler
from minigrad.checkpoint import checkpoint, checkpoint_sequential, save_matmuls, save_nothing
from minigrad.errors import CheckpointError, DTypeError
from minigrad.nn import functional as F


def _grads(params):
    return [p.grad.numpy().copy() for p in params]


def _blocks(n=2, dim=16, hidden=32, seed=0):
    mg.manual_seed(seed)
    return [mg.nn.TransformerBlock(dim, hidden) for _ in range(n)]


def _run_blocks(blocks, x, mode):
    """One step over transformer blocks, each checkpointed (or not) at its boundary."""
    for b in blocks:
        b.zero_grad()
    x.grad = None
    with mg.profile() as prof:
        y = x
        for b in blocks:
            if mode == "none":
                y = b(y)
            else:
                y = checkpoint(b, y, policy=save_matmuls if mode == "matmuls" else save_nothing)
        (y * y).mean().backward()
        del y
    return prof, _grads([p for b in blocks for p in b.parameters()]) + [x.grad.numpy().copy()]


@pytest.fixture
def transformer():
    mg.set_default_dtype(np.float64)
    blocks = _blocks()
    x = mg.tensor(np.random.default_rng(1).standard_normal((3, 24, 16)), requires_grad=True)
    return blocks, x


def test_transformer_blocks_checkpointed_at_boundaries_give_exact_gradients(transformer):
    blocks, x = transformer
    _, ref = _run_blocks(blocks, x, "none")
    for mode in ("full", "matmuls"):
        _, got = _run_blocks(blocks, x, mode)
        assert all(np.array_equal(a, b) for a, b in zip(ref, got)), mode


def test_save_matmuls_recomputes_no_matmul_and_sits_between_none_and_full(transformer):
    blocks, x = transformer
    runs = {mode: _run_blocks(blocks, x, mode)[0] for mode in ("none", "full", "matmuls")}
    kept = runs["matmuls"]
    matmul_recompute = sum(f for (phase, op), f in kept.op_flops.items()
                           if phase == "recompute" and op in ("MatMul", "Linear"))
    assert matmul_recompute == 0
    assert kept.flops["recompute"] > 0                               # the pointwise ops were recomputed
    assert kept.flops["recompute"] < 0.1 * runs["full"].flops["recompute"]
    assert runs["none"].flops["recompute"] == 0
    peak = {m: p.peak_bytes - p.start_bytes for m, p in runs.items()}
    assert peak["full"] < peak["matmuls"] < peak["none"]
    for m in runs:                                                    # same forward and backward work
        assert runs[m].flops["forward"] == runs["none"].flops["forward"]
        assert runs[m].flops["backward"] == runs["none"].flops["backward"]


def test_attention_weights_dominate_and_policies_trade_them():
    """Between forward and backward, one attention layer over long sequences keeps mostly its (T, T)
    arrays. Full recompute keeps only the input; save_matmuls keeps the scores Q Kᵀ, as large as the
    softmax weights, so it saves little here; save_linears keeps only the projections."""
    from minigrad.checkpoint import save_linears
    mg.set_default_dtype(np.float64)
    mg.manual_seed(0)
    attn = mg.nn.SelfAttention(8)
    x = mg.tensor(np.random.default_rng(2).standard_normal((2, 128, 8)), requires_grad=True)
    kept, recompute = {}, {}
    weights = 2 * 128 * 128 * 8                       # one (batch, T, T) float64 array
    projection = 2 * 128 * 8 * 8                      # one (batch, T, dim) float64 array
    policies = (("none", None), ("full", save_nothing), ("matmuls", save_matmuls), ("linears", save_linears))
    for mode, pol in policies:
        with mg.profile() as prof:
            before = profiler.live_bytes()
            y = attn(x) if pol is None else checkpoint(attn, x, policy=pol)
            kept[mode] = profiler.live_bytes() - before - y.data.nbytes
            (y * y).sum().backward()
            del y
        recompute[mode] = prof.flops["recompute"]
    assert kept["none"] >= weights                    # the softmax weights, saved for backward
    assert kept["full"] == 0                          # nothing but the output
    assert kept["matmuls"] >= weights                 # the scores, kept in place of the weights
    assert kept["linears"] == 3 * projection          # Q, K and V (the last projection's output is y itself)
    assert recompute["none"] == 0 < recompute["matmuls"] < recompute["linears"] < recompute["full"]


def test_policy_errors():
    x = mg.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(CheckpointError, match="policy must be callable"):
        checkpoint(lambda t: t * 2.0, x, policy="matmuls")
    with pytest.raises(CheckpointError, match=r"keep the output of Tanh.*policies may keep: .*MatMul"):
        checkpoint(lambda t: t.tanh(), x, policy=lambda op: True)


def test_a_policy_nested_inside_another_checkpoint():
    mg.set_default_dtype(np.float64)
    lin1, lin2 = mg.nn.Linear(4, 4), mg.nn.Linear(4, 4)
    x = mg.tensor(np.random.default_rng(0).standard_normal((5, 4)), requires_grad=True)

    def inner(t):
        return lin2(t).tanh()

    def outer(t):
        return checkpoint(inner, lin1(t).tanh(), policy=save_matmuls)

    (outer(x) ** 2).sum().backward()
    ref = _grads([lin1.weight, lin2.weight]) + [x.grad.numpy().copy()]
    for p in (lin1.weight, lin1.bias, lin2.weight, lin2.bias):
        p.grad = None
    x.grad = None
    (checkpoint(outer, x, policy=save_matmuls) ** 2).sum().backward()
    got = _grads([lin1.weight, lin2.weight]) + [x.grad.numpy()]
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))


# --------------------------------------------------------------------------- reduced-precision storage


def _chain(L=16, width=64, seed=0):
    mg.manual_seed(seed)
    return [mg.nn.Sequential(mg.nn.Linear(width, width), mg.nn.Tanh()) for _ in range(L)]


def test_float16_slots_halve_the_stored_bytes_and_keep_gradients_close():
    layers = _chain()
    X = np.random.default_rng(0).standard_normal((128, 64)).astype(np.float32)
    out = {}
    for store in (None, "float16"):
        for layer in layers:
            layer.zero_grad()
        x = mg.tensor(X, requires_grad=True)
        before = profiler.live_bytes()
        y = checkpoint_sequential(layers, x, strategy="sqrt", store_dtype=store)
        kept = profiler.live_bytes() - before
        slots = y._node.run.slots
        stored = sum(a.nbytes for i, a in slots.items() if i != 0)
        (y * y).mean().backward()
        out[store] = [kept, stored, x.grad.numpy().copy()] + _grads([p for layer in layers for p in layer.parameters()])
        del y, slots
    # sqrt(16): 4 segments; x_0 is kept as it is and the last segment's input is recorded from, not
    # stored, so 2 slots are stored: halved in float16, and the float32 originals are freed
    full_slot = 128 * 64 * 4
    assert out[None][1] == 2 * full_slot and out["float16"][1] == 2 * full_slot // 2
    assert out[None][0] - out["float16"][0] == 2 * full_slot // 2
    # Storing in float16 rounds each kept activation by at most 2**-11 relative; the recomputed
    # segments start from those values. Measured: ~5e-6 relative error in the input gradient and
    # ~3e-5 in the worst parameter gradient; the test holds them below one float16 rounding.
    errors = [np.linalg.norm(b - a) / np.linalg.norm(a) for a, b in zip(out[None][2:], out["float16"][2:])]
    assert 0 < max(errors) < 2.0 ** -11


def test_store_dtype_on_checkpoint_halves_saved_inputs():
    x = mg.tensor(np.ones((64, 64), np.float32), requires_grad=True)
    full = checkpoint(lambda t: t.tanh(), x)
    half = checkpoint(lambda t: t.tanh(), x, store_dtype="float16")
    assert full._node.saved_bytes == 64 * 64 * 4
    assert half._node.saved_bytes == 64 * 64 * 2
    half.sum().backward()
    assert x.grad.dtype == np.float32
    assert np.allclose(x.grad.numpy(), 1 - np.tanh(1.0) ** 2, rtol=2.0 ** -11)


@pytest.mark.parametrize("bad", ["int8", np.int32, "bool", "not-a-dtype"])
def test_store_dtype_must_be_floating(bad):
    x = mg.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(DTypeError, match="floating dtype"):
        checkpoint(lambda t: t * 2.0, x, store_dtype=bad)
    with pytest.raises(DTypeError, match="floating dtype"):
        checkpoint_sequential([mg.nn.Tanh()], x, strategy="none", store_dtype=bad)


# --------------------------------------------------------------------------- gradient accumulation


def test_gradient_accumulation_over_checkpointed_micro_batches_equals_one_batch():
    """k micro-batches, each loss scaled by its share of the batch, add up to the full-batch gradient."""
    mg.set_default_dtype(np.float64)
    layers = _chain(L=9, width=12, seed=4)
    head = mg.nn.Linear(12, 3)
    params = [p for layer in layers for p in layer.parameters()] + head.parameters()
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, 12)), rng.integers(0, 3, 24)

    def loss_of(xb, yb):
        h = checkpoint_sequential(layers, mg.tensor(xb), strategy="revolve", slots=3)
        return F.cross_entropy(head(h), yb)

    loss_of(X, y).backward()
    full = _grads(params)
    for p in params:
        p.grad = None
    for idx in np.array_split(np.arange(24), 4):                   # micro-batches of 6
        (loss_of(X[idx], y[idx]) * (len(idx) / 24)).backward()     # gradients accumulate in .grad
    for a, b in zip(full, _grads(params)):
        assert np.allclose(a, b, rtol=0, atol=1e-12)
