"""On a CUDA device through CuPy: same numbers as the CPU, device memory measured, no host round trips.

Every test here is marked ``gpu`` and skips with a reason when CuPy or a device is missing.
"""
import numpy as np
import pytest

import minigrad as mg
from minigrad.checkpoint import checkpoint, checkpoint_sequential, plan, run_schedule
from minigrad.nn import functional as F

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not mg.cuda_available(), reason="CuPy or a CUDA device is missing")]


def _pair(arr, requires_grad=True):
    return mg.tensor(arr, requires_grad=requires_grad), mg.tensor(arr, requires_grad=requires_grad, device="cuda")


OPS = {
    "add-broadcast": lambda a, b: (a + b[:1]).sum(),
    "mul": lambda a, b: (a * b).sum(),
    "div": lambda a, b: (a / (b * b + 1.0)).sum(),
    "matmul": lambda a, b: (a @ b.T).tanh().sum(),
    "exp-log": lambda a, b: ((a * 0.1).exp() + (b * b + 1.0).log()).sum(),
    "relu-sigmoid": lambda a, b: (a.relu() * b.sigmoid()).sum(),
    "sqrt-abs-clip": lambda a, b: ((a * a + 1.0).sqrt() + b.abs() + a.clip(-0.5, 0.5)).sum(),
    "reductions": lambda a, b: (a.max(axis=1).sum() + b.mean(axis=0).sum() + a.var(axis=1).sum()),
    "reshape-transpose": lambda a, b: (a.reshape(-1)[::2] * b.T.reshape(-1)[::2]).sum(),
    "getitem-repeated": lambda a, b: a[np.array([0, 0, 2, 1, 0])].sum() + b[1:, 2].sum(),
    "concat-stack": lambda a, b: (mg.concatenate([a, b], axis=1).tanh().sum() + mg.stack([a, b]).mean()),
    "where-maximum": lambda a, b: (mg.where(a.data > 0, a, b) + mg.maximum(a, b * 0.5)).sum(),
    "softmax": lambda a, b: (F.softmax(a, axis=1) * b).sum() + F.log_softmax(b, axis=0).sum(),
    "gelu": lambda a, b: (F.gelu(a) + F.gelu(b, approximate="tanh")).sum(),
    "layer-norm": lambda a, b: (F.layer_norm(a, 6) * b).sum(),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_match_the_cpu_in_value_and_gradient(name):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    (a_cpu, a_gpu), (b_cpu, b_gpu) = _pair(A), _pair(B)
    out_cpu, out_gpu = OPS[name](a_cpu, b_cpu), OPS[name](a_gpu, b_gpu)
    assert out_gpu.device == "cuda:0"
    out_cpu.backward()
    out_gpu.backward()
    assert np.allclose(out_gpu.numpy(), out_cpu.numpy(), rtol=1e-10, atol=1e-12)
    for t_cpu, t_gpu in ((a_cpu, a_gpu), (b_cpu, b_gpu)):
        assert t_gpu.grad.device == "cuda:0"
        assert np.allclose(t_gpu.grad.numpy(), t_cpu.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_gradcheck_on_the_gpu():
    rng = np.random.default_rng(1)
    w = mg.tensor(rng.standard_normal((4, 3)), requires_grad=True, device="cuda")
    x = mg.tensor(rng.standard_normal((5, 4)), requires_grad=True, device="cuda")
    mg.gradcheck(lambda a, b: ((a @ b).tanh() * 2.0).sum(), x, w)


def _mlp(device):
    mg.manual_seed(0)
    return mg.nn.Sequential(mg.nn.Linear(2, 32, device=device), mg.nn.ReLU(), mg.nn.Dropout(0.1),
                            mg.nn.Linear(32, 32, device=device), mg.nn.BatchNorm1d(32, device=device),
                            mg.nn.Tanh(), mg.nn.Linear(32, 3, device=device))


def test_a_training_step_never_copies_to_the_host():
    cupyx = pytest.importorskip("cupyx")
    model = _mlp("cuda")
    opt = mg.optim.Adam(model.parameters(), lr=1e-2)
    X, y = mg.data.spirals(50)
    xs, ys = mg.tensor(X, device="cuda"), mg.tensor(y, device="cuda")
    for _ in range(2):                      # warm-up: kernels compiled, the pool filled
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with cupyx.allow_synchronize(False):   # any device-to-host copy would synchronize, and raise
        for strategy in ("none", "sqrt", "revolve"):
            h = checkpoint_sequential(list(model), xs, strategy=strategy, slots=2) if strategy != "none" \
                else model(xs)
            loss = F.cross_entropy(h, ys)
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_profiler_reports_device_memory():
    cupy = pytest.importorskip("cupy")
    x = mg.zeros(1024, 1024, device="cuda")             # 4 MiB float32
    with mg.profile() as prof:
        y = x * 2.0
        z = y + 1.0
        del y, z
    assert prof.peak_bytes - prof.start_bytes >= 2 * 4 * 1024 * 1024
    assert prof.end_bytes - prof.start_bytes < 4096
    assert cupy.get_default_memory_pool().used_bytes() >= 4 * 1024 * 1024


def _tanh_chain_units(L, strategy, **opts):
    layers = [mg.nn.Tanh() for _ in range(L)]
    sched = plan(layers, None, strategy, **opts)
    x = mg.tensor(np.random.default_rng(0).standard_normal((64, 4096)) * 0.5, requires_grad=True, device="cuda")
    unit = x.data.nbytes
    (run_schedule(layers, x, sched) ** 2).sum().backward()      # warm-up
    x.grad = None
    with mg.profile() as prof:
        y = run_schedule(layers, x, sched, **{k: v for k, v in opts.items() if k == "offload"})
        (y * y).sum().backward()
        del y
    return (prof.device_peak_bytes - prof.device_start_bytes) / unit + 1, sched.simulate()


@pytest.mark.parametrize("strategy,opts", [("none", {}), ("sqrt", {}), ("recursive", {}),
                                           ("revolve", {"slots": 4})])
def test_checkpoint_memory_bounds_hold_on_device(strategy, opts):
    units, sim = _tanh_chain_units(64, strategy, **opts)
    # device blocks are rounded up to 512 bytes and elementwise kernels allocate no temporaries
    # beyond their outputs; the prediction holds within a unit for the backward's temporary
    assert sim.peak_units - 0.01 <= units <= sim.peak_units + 1.01


def test_budget_plans_fit_on_the_device_with_exact_gradients():
    # The planner measures the chain on the device (CuPy's allocator sees every temporary) and its
    # plans must fit there: activations, their gradients and temporaries, x_0 included; parameter
    # gradients exist already and are accumulated into in place.
    from minigrad.checkpoint import measure_chain, planner as P
    rng = np.random.default_rng(0)
    widths = [int(w) for w in rng.choice([256, 512, 1024], 12)]
    mg.manual_seed(0)
    layers = [mg.nn.Sequential(mg.nn.Linear(a, b, dtype=np.float64, device="cuda"), mg.nn.Tanh())
              for a, b in zip([512] + widths, widths)]
    params = [p for layer in layers for p in layer.parameters()]
    x = mg.tensor(rng.standard_normal((512, 512)), requires_grad=True, device="cuda")
    y = x
    for layer in layers:
        y = layer(y)
    y.sum().backward()
    del y
    ref = [p.grad.numpy().copy() for p in params] + [x.grad.numpy().copy()]
    c = measure_chain(layers, x)
    lowest = P.minimum_budget(c)
    for frac in (1.0, 1.5, 2.5):
        budget = int(lowest * frac)
        sched = plan(layers, x, "budget", budget=budget)
        for p in params:
            p.grad.data[...] = 0
        x.grad = None
        with mg.profile() as prof:
            run_schedule(layers, x, sched).sum().backward()
        measured = prof.device_peak_bytes - prof.device_start_bytes + c.sizes[0]
        assert measured <= budget, (frac, measured, budget, sched.note)
        got = [p.grad.numpy() for p in params] + [x.grad.numpy()]
        assert all(np.array_equal(a, b) for a, b in zip(ref, got)), frac


def test_offloading_slots_lowers_the_device_peak_and_keeps_gradients():
    # 64 tanh layers under sqrt: 8 segments, slots x_0, x_8, ..., x_56. Offloaded, x_8 .. x_48 live
    # on the host and come back to the device one at a time, while their segment is reversed, in
    # place of that segment's slot: the peak drops by those 6 units. x_0 is the caller's, and x_56
    # stays on the device either way: the first sweep records the last segment straight from it.
    L = 64
    layers = [mg.nn.Tanh() for _ in range(L)]
    X = np.random.default_rng(0).standard_normal((64, 4096)) * 0.5
    peaks, grads = {}, {}
    for offload in (False, True):
        x = mg.tensor(X, requires_grad=True, device="cuda")
        (checkpoint_sequential(layers, x, "sqrt", offload=offload) ** 2).sum().backward()   # warm-up
        x.grad = None
        with mg.profile() as prof:
            (checkpoint_sequential(layers, x, "sqrt", offload=offload) ** 2).sum().backward()
        peaks[offload] = (prof.device_peak_bytes - prof.device_start_bytes) / x.data.nbytes
        grads[offload] = x.grad.numpy()
    assert np.array_equal(grads[False], grads[True])
    assert round(peaks[False]) - round(peaks[True]) == 6, peaks


def test_dropout_replays_on_the_gpu():
    drop = mg.nn.Dropout(0.5)
    x = mg.tensor(np.ones((64, 64)), requires_grad=True, device="cuda")
    mg.manual_seed(3)
    checkpoint(drop, x).sum().backward()
    g_ckpt = x.grad.numpy()
    x.grad = None
    mg.manual_seed(3)
    drop(x).sum().backward()
    assert np.array_equal(x.grad.numpy(), g_ckpt)
    assert 0.3 < (g_ckpt == 0).mean() < 0.7


def test_module_to_and_mixed_devices():
    model = _mlp("cpu").to("cuda")
    assert all(p.device == "cuda:0" for p in model.parameters())
    x_cpu = mg.tensor(np.ones((4, 2), np.float32))
    with pytest.raises(mg.DeviceError, match=r"cpu.*cuda|cuda.*cpu"):
        model(x_cpu)
    with pytest.raises(mg.DeviceError, match="cuda:0.*cpu|cpu.*cuda:0"):
        mg.ones(3, device="cuda") + mg.ones(3)


def test_train_command_on_the_gpu(capsys):
    from minigrad.cli import main
    accuracy = {}
    for device in ("cpu", "cuda"):
        assert main(["train", "--device", device, "--quiet", "--epochs", "60"]) == 0
        out = capsys.readouterr().out
        assert f"on {device}" in out
        accuracy[device] = float(out.split("accuracy ")[1].split()[0])
    # Same seed, same initial weights (built on the CPU, then moved): the runs differ only
    # by float32 rounding in the device's kernels.
    assert accuracy["cuda"] >= 0.95 and abs(accuracy["cuda"] - accuracy["cpu"]) <= 0.01, accuracy


# --------------------------------------------------------------------------- fused kernels

def _bits(a):
    """The raw bits of a device or host array, so -0.0 and 0.0 (or two NaNs) are told apart."""
    import cupy
    a = cupy.asnumpy(a) if not isinstance(a, np.ndarray) else a
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("shape", [(257, 130), (256, 128)], ids=["odd", "float4"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_activation_kernels_equal_the_separate_kernels_bit_for_bit(dtype, shape):
    # (256, 128) float32 takes the float4 kernels (Note [Four floats at a time]), the rest ElementwiseKernels
    import cupy
    from minigrad import kernels
    rng = np.random.default_rng(0)
    G = rng.standard_normal(shape).astype(dtype)
    Y = np.tanh(rng.standard_normal(shape)).astype(dtype)
    Y[0, :5] = [0.0, -0.0, 1e-30, -1e-30, 0.5]
    B = rng.standard_normal(shape[1]).astype(dtype)
    g, y, b = cupy.asarray(G), cupy.asarray(Y), cupy.asarray(B)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for fn in (kernels.relu_backward, kernels.tanh_backward):
        fused = fn(g, y)
        with kernels.disabled():
            plain = fn(g, y)
        assert np.array_equal(_bits(fused), _bits(plain)), fn.__name__
        np.testing.assert_allclose(cupy.asnumpy(fused), fn(G, Y), **tol)
    for act in ("relu", "tanh"):
        fused = kernels.bias_act_(y.copy(), b, act)
        with kernels.disabled():
            plain = kernels.bias_act_(y.copy(), b, act)
        assert np.array_equal(_bits(fused), _bits(plain)), act
        np.testing.assert_allclose(cupy.asnumpy(fused), kernels.bias_act_(Y.copy(), B, act), **tol)
    used = kernels._vcache if shape == (256, 128) and dtype == np.float32 else kernels._cache
    assert {"relu_backward", "tanh_backward", "bias_relu", "bias_tanh"} <= set(used)


@pytest.mark.parametrize("name,kw", [("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
                                     ("Adam", {"lr": 1e-2}), ("Adam", {"lr": 1e-2, "weight_decay": 0.01})],
                         ids=["sgd", "sgd-momentum-decay", "adam", "adam-decay"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_optimizer_updates_equal_the_separate_kernels_and_the_cpu(name, kw, dtype):
    from minigrad import kernels
    rng = np.random.default_rng(1)
    P0 = [rng.standard_normal(s).astype(dtype) for s in ((33, 17), (17,), (64, 32))]   # the last: float4 SGD
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in P0] for _ in range(6)]
    results = {}
    for run in ("cpu", "fused", "plain"):
        dev = "cpu" if run == "cpu" else "cuda"
        params = [mg.tensor(p, requires_grad=True, device=dev) for p in P0]
        opt = getattr(mg.optim, name)(params, **kw)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = mg.tensor(g, device=dev)
            if run == "plain":
                with kernels.disabled():
                    opt.step()
            else:
                opt.step()
        results[run] = [p.numpy() for p in params]
    for f, p in zip(results["fused"], results["plain"]):
        assert np.array_equal(_bits(f), _bits(p))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for f, c in zip(results["fused"], results["cpu"]):
        np.testing.assert_allclose(f, c, **tol)
    if name == "SGD" and dtype == np.float32:
        assert ("sgd_momentum" if "momentum" in kw else "sgd") in kernels._vcache


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_linear_with_activation_equals_linear_then_activation_on_the_device(act):
    rng = np.random.default_rng(2)
    mg.manual_seed(0)
    fused = mg.nn.Linear(48, 40, device="cuda", activation=act)
    plain = mg.nn.Sequential(mg.nn.Linear(48, 40, device="cuda"), mg.nn.ReLU() if act == "relu" else mg.nn.Tanh())
    plain[0].weight.data[...] = fused.weight.data
    plain[0].bias.data[...] = fused.bias.data
    X = rng.standard_normal((64, 48)).astype(np.float32)
    outs, grads = [], []
    for model in (fused, plain):
        x = mg.tensor(X, requires_grad=True, device="cuda")
        y = model(x)
        (y * y).sum().backward()
        outs.append(y.numpy())
        grads.append([x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    assert np.array_equal(_bits(outs[0]), _bits(outs[1]))
    for a, b in zip(*grads):
        assert np.array_equal(_bits(a), _bits(b))


def test_bias_gradient_by_cublas_matches_the_cpu():
    from minigrad import kernels
    G = np.random.default_rng(3).standard_normal((300, 70))
    got = kernels.column_sums(mg.tensor(G, device="cuda").data)
    np.testing.assert_allclose(got.get(), G.sum(axis=0), rtol=1e-12, atol=1e-12)
    assert got.shape == (70,)


# --------------------------------------------------------------------------- random numbers on the device

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_random_numbers_are_uniform_normal_and_keyed_by_seed_and_counter(dtype):
    gen = mg.random.generator("cuda")
    gen.manual_seed(5)
    a = gen.uniform((1000, 1000), dtype)
    b = gen.uniform((1000, 1000), dtype)
    n = gen.normal((1000, 1000), dtype)
    assert a.dtype == dtype and float(a.min()) >= 0.0 and float(a.max()) < 1.0
    assert abs(float(a.mean()) - 0.5) < 2e-3 and abs(float(a.var()) - 1 / 12) < 1e-3
    assert abs(float(n.mean())) < 5e-3 and abs(float(n.std()) - 1.0) < 5e-3
    # neighbouring elements and consecutive draws are not correlated
    A = a.get().ravel()
    assert abs(np.corrcoef(A[:-1], A[1:])[0, 1]) < 5e-3
    assert abs(np.corrcoef(A, b.get().ravel())[0, 1]) < 5e-3
    gen.manual_seed(5)
    assert np.array_equal(_bits(gen.uniform((1000, 1000), dtype)), _bits(a))
    gen.set_state((5, 1))
    assert np.array_equal(_bits(gen.uniform((1000, 1000), dtype)), _bits(b))


# --------------------------------------------------------------------------- captured steps (CUDA graphs)

def _batches(n=6, batch=64):
    X, y = mg.data.spirals(200)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        idx = rng.choice(len(X), batch, replace=False)
        out.append((mg.tensor(X[idx], device="cuda"), mg.tensor(y[idx], device="cuda")))
    return out


def _run(strategy, captured, optimizer="adam", steps=6):
    """Train ``_mlp`` (Dropout, BatchNorm) for ``steps`` steps; return losses, parameters, buffers, RNG state."""
    model = _mlp("cuda")
    opt = (mg.optim.Adam(model.parameters(), lr=1e-2) if optimizer == "adam"
           else mg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3))

    def step(x, y):
        h = model(x) if strategy == "none" else checkpoint_sequential(list(model), x, strategy=strategy, slots=2)
        loss = F.cross_entropy(h, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    run = mg.cuda_graph(step) if captured else step
    losses = [run(x, y).numpy().copy() for x, y in _batches(steps)]
    state = [p.numpy() for p in model.parameters()] + [b.numpy() for b in model.buffers()]
    return losses, state, mg.random.generator("cuda").get_state(), run


@pytest.mark.parametrize("strategy", ["none", "sqrt", "revolve"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_captured_step_equals_the_eager_step_bit_for_bit(strategy, optimizer):
    eager = _run(strategy, False, optimizer)
    graph = _run(strategy, True, optimizer)
    run = graph[3]
    assert run.captured and run.replays == 5 and run.draws >= 1     # call 1 eager, then 5 launches
    assert len(set(float(v) for v in eager[0])) == 6                 # the steps differ (batches, dropout)
    for a, b in zip(eager[0], graph[0]):
        assert np.array_equal(_bits(a), _bits(b))
    for a, b in zip(eager[1], graph[1]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert eager[2] == graph[2]                                       # the generator advanced as eagerly


def test_each_replay_draws_fresh_dropout_masks():
    drop = mg.nn.Dropout(0.5)
    masks = []

    def step(x):
        return drop(x)
    run = mg.cuda_graph(step)
    x = mg.ones(256, 256, device="cuda")
    mg.manual_seed(7)
    for _ in range(4):
        masks.append(run(x).numpy() != 0)
    mg.manual_seed(7)
    eager = [drop(x).numpy() != 0 for _ in range(4)]
    assert run.replays == 3
    assert all(np.array_equal(a, b) for a, b in zip(masks, eager))
    assert not np.array_equal(masks[2], masks[3])
    # reseeding between replays is seen by the next replay
    mg.manual_seed(7)
    assert np.array_equal(run(x).numpy() != 0, eager[0])


def _simple_step(host_copy=False):
    """A small model's training step; with ``host_copy`` it returns ``loss.item()``, which waits for the GPU."""
    mg.manual_seed(0)
    model = mg.nn.Sequential(mg.nn.Linear(2, 16, device="cuda", activation="tanh"), mg.nn.Linear(16, 3, device="cuda"))
    opt = mg.optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item() if host_copy else loss
    return step


def test_a_step_that_copies_to_the_host_is_refused_clearly_and_the_device_still_works():
    run = mg.cuda_graph(_simple_step(host_copy=True))
    (x, y), = _batches(1)
    run(x, y)                                   # eager: fine
    with pytest.raises(mg.CaptureError, match=r"host.*test_gpu.py:\d+ in step\(\) \(return loss.item"):
        run(x, y)
    assert float((mg.ones(3, device="cuda") * 2).sum().item()) == 6.0


def test_a_captured_step_refuses_other_shapes_python_outputs_and_offloading():
    run = mg.cuda_graph(_simple_step())
    (x, y), = _batches(1)
    run(x, y)
    run(x, y)
    with pytest.raises(mg.CaptureError, match=r"args\[0\] is shape \(32, 2\).*captured with shape \(64, 2\)"):
        run(x[:32], y[:32])
    with pytest.raises(mg.CaptureError, match="requires grad"):
        run(x.detach().requires_grad_(True), y)
    bad = mg.cuda_graph(lambda x: ((x * 2).sum(), 1.5))
    bad(x)
    with pytest.raises(mg.CaptureError, match=r"returned float 1.5 at \[1\]"):
        bad(x)
    # 16 layers under sqrt: 4 segments, and the slots of the middle ones are copied to the host
    layers = [mg.nn.Tanh() for _ in range(16)]
    w = mg.ones(8, 8, device="cuda", requires_grad=True)
    off = mg.cuda_graph(lambda d: (checkpoint_sequential(layers, w * d, "sqrt", offload=True) ** 2).sum())
    d = mg.ones(8, 8, device="cuda")
    off(d)
    with pytest.raises(mg.CaptureError, match="host"):
        off(d)


def test_train_with_graph_matches_eager_training_on_the_device(capsys):
    from minigrad.cli import main
    lines = {}
    for extra in ([], ["--graph"]):
        assert main(["train", "--device", "cuda", "--quiet", "--epochs", "20", *extra]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        lines[bool(extra)] = first.split(" | 20 epochs")[0]
        if extra:
            assert "replayed from 2 CUDA graphs" in first
    assert lines[True] == lines[False]
