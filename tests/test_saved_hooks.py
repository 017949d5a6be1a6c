"""The core's public mechanism: saved-array hooks, op observers, the recompute mode, per-thread modes."""
import pathlib
import re
import threading

import numpy as np
import pytest

import minigrad as mg
from minigrad import autograd, ops, profiler
from minigrad.autograd import Function
from minigrad.errors import GraphError


def _x(shape=(3, 4), seed=0):
    return mg.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


# --------------------------------------------------------------------------- saved-array hooks


def test_every_saved_array_passes_pack_and_unpack_with_the_same_gradient():
    packed, unpacked = [], []

    def pack(a):
        packed.append(a.shape)
        return ("box", a.copy())

    def unpack(h):
        unpacked.append(h[1].shape)
        return h[1]

    x = _x()
    ref = ((x * x).tanh().sum(), None)
    ref[0].backward()
    g_ref = x.grad.numpy().copy()
    x.grad = None
    with autograd.saved_arrays_hooks(pack, unpack):
        y = (x * x).tanh().sum()
    assert packed == [(3, 4), (3, 4), (3, 4)]       # Mul saves x twice, tanh its output
    assert unpacked == []
    y.backward()                                    # outside the block: the node kept its pair
    assert sorted(unpacked) == sorted(packed)
    assert np.array_equal(x.grad.numpy(), g_ref)


def test_disabled_hooks_are_bypassed_until_enabled_again():
    packed, unpacked = [], []
    x = _x()
    with autograd.saved_arrays_hooks(lambda a: packed.append(a.shape) or ("box", a),
                                     lambda h: unpacked.append(h[1].shape) or h[1]) as hooks:
        assert hooks.enabled
        hooks.enabled = False
        y = x.tanh()
        with autograd.saved_arrays_hooks(lambda a: ("inner", a), lambda h: h[1]):    # inner blocks still apply
            z = x.exp()
        hooks.enabled = True
        w = x.relu()
    assert y._node._saved[0] is y.data and y._node._unpack is None          # saved as is: nothing to unpack
    assert z._node._saved[0][0] == "inner"
    assert packed == [(3, 4)] and w._node._saved[0][0] == "box"
    (y.sum() + w.sum()).backward()
    assert unpacked == [(3, 4)]


def test_without_hooks_the_node_holds_the_arrays_themselves():
    x = _x()
    y = x.tanh()
    assert y._node._saved[0] is y.data
    assert y._node.saved[0] is y.data
    assert y._node.saved_arrays()[0] is y.data


def test_innermost_hooks_win_and_hooks_do_not_apply_to_themselves():
    seen = []

    def make(tag):
        def pack(a):
            seen.append(tag)
            (mg.tensor(a, requires_grad=True) * 2.0).sum()   # an op inside a hook: not packed again
            return a
        return pack

    x = _x()
    with autograd.saved_arrays_hooks(make("outer"), lambda a: a):
        x.exp()
        with autograd.saved_arrays_hooks(make("inner"), lambda a: a):
            x.exp()
        x.exp()
    assert seen == ["outer", "inner", "outer"]


def test_pack_hook_sees_the_node_saving_through_current_node():
    names = []
    x = _x()
    with autograd.saved_arrays_hooks(lambda a: names.append(autograd.current_node().name) or a, lambda a: a):
        x.relu().sigmoid()
    assert names == ["ReLU", "Sigmoid"]
    assert autograd.current_node() is None


def test_float16_pack_hooks_halve_saved_bytes():
    from minigrad.checkpoint import Storage
    s = Storage("float16")
    x = mg.tensor(np.ones((32, 32), np.float32), requires_grad=True)
    with autograd.saved_arrays_hooks(s.pack, s.unpack):
        y = x.tanh()
    assert y._node.saved_bytes == 32 * 32 * 2
    assert y._node.saved[0].dtype == np.float32
    y.sum().backward()
    assert np.allclose(x.grad.numpy(), 1 - np.tanh(1.0) ** 2, rtol=2.0 ** -10)


def test_hooks_must_be_callable():
    with pytest.raises(GraphError, match="both must be callable"):
        with autograd.saved_arrays_hooks(None, lambda a: a):
            pass


# --------------------------------------------------------------------------- op observers


def test_op_observer_sees_every_op_recorded_or_not_outer_first():
    outer, inner = [], []
    x = _x()
    with autograd.op_observer(outer.append):
        with autograd.op_observer(lambda e: inner.append((len(outer), e))):
            y = x @ x.T
            with mg.no_grad():
                z = y.exp()
    assert [e.fn_cls for e in outer] == [ops.Transpose, ops.MatMul, ops.Exp]
    assert [n for n, _ in inner] == [1, 2, 3]        # the outer callback ran first each time
    mm = outer[1]
    assert mm.node is y._node and mm.outputs[0] is y and mm.inputs[0] is x
    assert mm.flops == 2 * 3 * 4 * 3 and mm.rng_state is None and not mm.recomputing
    assert outer[2].node is None and outer[2].outputs[0] is z


def test_observer_of_a_random_op_gets_the_rng_state_before_it():
    class Noise(Function):
        uses_rng = True

        def forward(self, a):
            return a + mg.random.generator().normal(a.shape, a.dtype)

    events = []
    x = _x()
    with autograd.op_observer(events.append):
        first = Noise.apply(x).numpy()
    again = Function.replay_forward(Noise, [x.data], {}, rng_state=events[0].rng_state)
    assert np.array_equal(again, first)


# --------------------------------------------------------------------------- recompute mode, replay


def test_recomputing_is_public_per_thread_and_replays_rng():
    mg.manual_seed(3)
    state = mg.random.get_rng_state()
    a = mg.randn(5).numpy()
    after = mg.random.get_rng_state()
    assert not autograd.is_recomputing()
    with autograd.recomputing(rng_state=state):
        assert autograd.is_recomputing()
        assert np.array_equal(mg.randn(5).numpy(), a)
    assert not autograd.is_recomputing()
    assert mg.random.get_rng_state() == after


def test_recomputing_skips_batchnorm_updates_and_books_recompute_flops():
    bn = mg.nn.BatchNorm1d(4)
    x = _x((8, 4))
    with mg.profile() as prof, autograd.recomputing():
        bn(x)
    assert int(bn.num_batches_tracked.item()) == 0
    assert np.array_equal(bn.running_mean.numpy(), np.zeros(4))
    assert prof.flops["recompute"] > 0 and prof.flops["forward"] == 0


def test_replay_forward_matches_forward_and_records_nothing():
    x = _x()
    y = x @ x.T
    with mg.profile() as prof:
        out = Function.replay_forward(ops.MatMul, [x.data, x.T.data])
    assert np.array_equal(out, y.data)
    assert prof.flops["recompute"] == 2 * 3 * 4 * 3 and prof.flops["forward"] == 0


# --------------------------------------------------------------------------- per-thread modes


def test_grad_mode_is_per_thread():
    entered, release, seen = threading.Event(), threading.Event(), []

    def sit_in_no_grad():
        with mg.no_grad():
            entered.set()
            release.wait(5)

    t = threading.Thread(target=sit_in_no_grad)
    t.start()
    entered.wait(5)
    x = _x()
    seen.append(mg.is_grad_enabled())
    seen.append((x * 2.0).requires_grad)
    release.set()
    t.join()
    assert seen == [True, True]


def test_unbalanced_exit_raises_a_minigrad_error_and_leaves_the_mode_intact():
    m = mg.no_grad()
    with pytest.raises(GraphError, match="without a matching __enter__"):
        m.__exit__(None, None, None)
    assert mg.is_grad_enabled()
    outer, inner = mg.no_grad(), mg.enable_grad()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(GraphError, match="last-in, first-out"):
        outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert mg.is_grad_enabled()
    assert (_x() * 2.0).requires_grad


def test_context_managers_restore_modes_on_exceptions():
    with pytest.raises(ValueError):
        with mg.no_grad(), autograd.recomputing(), autograd.saved_arrays_hooks(lambda a: a, lambda a: a):
            raise ValueError("boom")
    assert mg.is_grad_enabled() and not autograd.is_recomputing()
    assert autograd._state.hooks == []


def test_no_grad_on_a_generator_function_covers_its_body_only():
    @mg.no_grad()
    def gen(x):
        for _ in range(3):
            outside = yield (x * 2.0).requires_grad
            assert outside == "sent"
        return "done"

    x = _x()
    g = gen(x)
    flags = [next(g)]
    assert mg.is_grad_enabled() and (x * 2.0).requires_grad     # between steps the caller's mode holds
    flags.append(g.send("sent"))
    flags.append(g.send("sent"))
    with pytest.raises(StopIteration) as stop:
        g.send("sent")
    assert flags == [False, False, False] and stop.value.value == "done"
    assert mg.is_grad_enabled()


# --------------------------------------------------------------------------- the boundary


def test_checkpoint_package_uses_no_private_name_of_the_core():
    root = pathlib.Path(mg.__file__).parent / "checkpoint"
    private = re.compile(r"\b(autograd|profiler|tensor|ops|random|_random)\._[a-z]")
    offenders = [f"{p.name}: {line.strip()}" for p in sorted(root.glob("*.py"))
                 for line in p.read_text().splitlines() if private.search(line)]
    assert offenders == []


def test_chain_slots_and_checkpoint_inputs_pass_the_installed_hooks():
    from minigrad.checkpoint import checkpoint, checkpoint_sequential
    mg.set_default_dtype(np.float64)
    layers = [mg.nn.Sequential(mg.nn.Linear(5, 5), mg.nn.Tanh()) for _ in range(6)]
    x = _x((4, 5))
    params = [x] + [p for layer in layers for p in layer.parameters()]
    checkpoint_sequential(layers, x, strategy="revolve", slots=2).sum().backward()
    ref = [p.grad.numpy().copy() for p in params]
    for p in params:
        p.grad = None
    packed, unpacked = [], []
    with autograd.saved_arrays_hooks(lambda a: packed.append(a.shape) or ("h", a),
                                     lambda h: unpacked.append(h[1].shape) or h[1]):
        y = checkpoint_sequential(layers, x, strategy="revolve", slots=2)
        z = checkpoint(lambda t: t * 2.0, y)
    assert len(packed) >= 2 and (4, 5) in packed     # a slot of the chain and the checkpoint's input
    z.sum().backward()
    assert len(unpacked) >= 2
    got = [p.grad.numpy() for p in params]
    assert all(np.array_equal(2 * a, b) for a, b in zip(ref, got))
