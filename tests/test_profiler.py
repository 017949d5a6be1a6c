"""The profiler counts exactly: live buffers, bytes, FLOPs by phase; nothing leaks."""
import gc
import pathlib
import threading
import tracemalloc
import weakref

import numpy as np
import pytest

import minigrad as mg
from minigrad import profiler
from minigrad.nn import functional as F


def _mlp():
    mg.manual_seed(0)
    return mg.nn.Sequential(mg.nn.Linear(4, 8), mg.nn.ReLU(), mg.nn.Linear(8, 3))


def test_live_counts_of_a_small_mlp_before_forward_after_forward_after_backward():
    gc.collect()
    n0, b0 = profiler.live_tensors(), profiler.live_bytes()
    model = _mlp()                                             # W1 (8,4), b1 (8,), W2 (3,8), b2 (3,)
    x = mg.tensor(np.ones((5, 4), np.float32))                 # (5, 4)
    y = mg.tensor(np.array([0, 1, 2, 0, 1]), dtype=np.int64)   # (5,) int64
    params = (32 + 8 + 24 + 3) * 4
    assert profiler.live_tensors() - n0 == 4 + 2
    assert profiler.live_bytes() - b0 == params + 5 * 4 * 4 + 5 * 8

    loss = F.cross_entropy(model(x), y)
    # Alive now besides the inputs: relu output r (5,8) saved by ReLU and by the second
    # Linear; log-probabilities (5,3) saved by CrossEntropy; the loss (a 0-d float32).
    # The first Linear's output and the logits were freed: no node saved them.
    assert profiler.live_tensors() - n0 == 6 + 3
    assert profiler.live_bytes() - b0 == params + 80 + 40 + (5 * 8 * 4) + (5 * 3 * 4) + 4

    loss.backward()
    # Every saved activation is gone; the four gradients (one per parameter) are new.
    assert profiler.live_tensors() - n0 == 6 + 1 + 4
    assert profiler.live_bytes() - b0 == params + 80 + 40 + 4 + params
    assert all(p.grad.dtype == np.float32 for p in model.parameters())


def test_views_do_not_count_twice():
    x = mg.tensor(np.zeros((100, 10)))
    n, b = profiler.live_tensors(), profiler.live_bytes()
    views = [x[1:], x.reshape(10, 100), x.T, x[:, 3]]
    assert (profiler.live_tensors(), profiler.live_bytes()) == (n, b)
    del views


def test_flops_of_a_matmul_chain_are_exact():
    n, d0, d1, d2 = 7, 5, 4, 3
    x = mg.tensor(np.ones((n, d0)))                           # no gradient needed for x
    w1 = mg.tensor(np.ones((d0, d1)), requires_grad=True)
    w2 = mg.tensor(np.ones((d1, d2)), requires_grad=True)
    with mg.profile() as prof:
        loss = ((x @ w1) @ w2).sum()
        loss.backward()
    mm1, mm2, total = 2 * n * d0 * d1, 2 * n * d1 * d2, n * d2
    assert prof.flops["forward"] == mm1 + mm2 + total
    # backward: sum (n·d2 once), mm2 for both operands, mm1 only for w1 (x needs no gradient)
    assert prof.flops["backward"] == total + 2 * mm2 + mm1
    assert prof.flops["recompute"] == 0


def test_linear_backward_flops_count_only_needed_gradients():
    lin = mg.nn.Linear(6, 4)
    x = mg.tensor(np.ones((3, 6), np.float32))
    with mg.profile() as prof:
        lin(x).sum().backward()
    fwd = 2 * 3 * 6 * 4 + 3 * 4
    assert prof.flops["forward"] == fwd + 3 * 4
    assert prof.flops["backward"] == 3 * 4 + 2 * 3 * 6 * 4 + 3 * 4     # sum, dW, db (no dx)


@pytest.mark.bounds
def test_peak_and_timeline():
    a = mg.tensor(np.ones(1000), requires_grad=True)           # float64 (an ndarray keeps its dtype): 8000 B
    with mg.profile() as prof:
        b = a * 2.0
        c = b * 3.0
        del b
        c.sum().backward()
    # after the first op: b (8000 B) and the 0-d constant 2.0 (8 B) it was multiplied by
    assert prof.timeline[0][2] - prof.start_bytes == 8000 + 8
    ops = [(phase, op) for phase, op, _ in prof.timeline]
    assert ops == [("forward", "Mul"), ("forward", "Mul"), ("forward", "Sum"),
                   ("backward", "Sum"), ("backward", "Mul"), ("backward", "Mul")]
    # a (8000 B) existed; b and c (8000 B each) were alive together, plus 0-d constants
    assert prof.peak_bytes - prof.start_bytes >= 2 * 8000
    assert prof.peak_bytes - prof.start_bytes < 4 * 8000


def test_profiles_nest_and_report_their_own_peaks():
    with mg.profile() as outer:
        big = mg.tensor(np.zeros(10_000))
        del big
        with mg.profile() as inner:
            small = mg.tensor(np.zeros(10))
            del small
    assert outer.peak_bytes - outer.start_bytes >= 80_000
    assert inner.peak_bytes - inner.start_bytes == 80


def test_a_dropped_graph_is_freed_by_reference_counting_alone():
    gc.collect()
    gc.disable()
    try:
        n0, b0 = profiler.live_tensors(), profiler.live_bytes()
        w = mg.tensor(np.ones((50, 50)), requires_grad=True)
        y = (w @ w).tanh().sum()
        node = weakref.ref(y._node)
        assert profiler.live_tensors() > n0 + 1
        del y
        assert node() is None
        del w
        assert (profiler.live_tensors(), profiler.live_bytes()) == (n0, b0)
    finally:
        gc.enable()


def _numpy_traced_bytes():
    """Bytes of NumPy data buffers alive, as tracemalloc sees them (NumPy's own domain only).

    Python objects are left out on purpose: CPython keeps freed tuples on free
    lists that tracemalloc still reports as allocated until the lists fill up.
    """
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    return sum(stat.size for stat in snap.statistics("filename"))


def test_no_leaks_over_100_training_steps():
    # Counting gc objects is exact only while this thread alone runs Python: another thread (tqdm's
    # monitor was one, started by any bar and never stopped) makes objects whenever it wakes, and a
    # count taken just after its wake-up sees them. Name such a thread instead of flaking.
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not others, f"other Python threads are running and would be counted with this test's objects: {others}"
    model = mg.nn.Sequential(mg.nn.Linear(2, 32), mg.nn.ReLU(), mg.nn.Linear(32, 3))
    opt = mg.optim.Adam(model.parameters(), lr=1e-2)
    X, y = mg.data.spirals(50)
    xs, ys = mg.tensor(X), mg.tensor(y)

    def step():
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        counts, traced, objects = [], [], []
        for k in range(100):
            step()
            counts.append(profiler.live_tensors())
            if k % 25 == 0 or k == 99:
                traced.append(_numpy_traced_bytes())
                gc.collect()
                objects.append(len(gc.get_objects()))
    finally:
        tracemalloc.stop()
    assert len(set(counts)) == 1, "live tensors changed between identical steps"
    assert len(set(traced)) == 1, f"NumPy buffers grew over 100 steps: {traced}"
    assert len(set(objects)) == 1, f"Python objects grew over 100 steps: {objects}"


def test_tracemalloc_sees_the_same_buffers():
    """tracemalloc (NumPy reports its buffers to it) agrees with the profiler on a tensor's bytes."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        n = profiler.live_bytes()
        x = mg.tensor(np.ones((256, 256)))      # the copy made by mg.tensor is what is counted
        grew_traced = tracemalloc.get_traced_memory()[0] - before
        grew_profiled = profiler.live_bytes() - n
    finally:
        tracemalloc.stop()
    assert grew_profiled == 256 * 256 * 8
    assert abs(grew_traced - grew_profiled) < 0.01 * grew_profiled
    del x


def test_tape_printout_lists_nodes_with_saved_bytes():
    x = mg.tensor(np.ones((2, 3)), requires_grad=True)
    loss = (x.tanh() * 2.0).sum()
    text = str(mg.tape(loss))
    lines = text.splitlines()
    assert [ln.split()[1] for ln in lines[1:4]] == ["Tanh", "Mul", "Sum"]
    assert "48" in lines[1]                      # Tanh saves its (2, 3) float64 output
    assert len(mg.tape(loss)) == 3


@pytest.mark.parametrize("phase", ["forward", "backward", "recompute"])
def test_flops_dictionary_has_every_phase(phase):
    with mg.profile() as prof:
        pass
    assert prof.flops[phase] == 0


@pytest.mark.bounds
def test_the_timeline_reaches_the_peak():
    """Each backward row is written while the op's saved arrays and its new gradients coexist."""
    model = mg.nn.Sequential(mg.nn.Linear(8, 64), mg.nn.ReLU(), mg.nn.Linear(64, 64), mg.nn.Tanh(),
                             mg.nn.Linear(64, 3))
    x = mg.tensor(np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32))
    y = mg.tensor(np.arange(32) % 3, dtype=np.int64)
    with mg.profile() as prof:
        F.cross_entropy(model(x), y).backward()
    assert max(b for _, _, b in prof.timeline) == prof.peak_bytes
    residual = mg.nn.Residual(mg.nn.Sequential(mg.nn.Linear(8, 8), mg.nn.Tanh()))
    x = mg.tensor(np.ones((32, 8), np.float32), requires_grad=True)
    with mg.profile() as prof:              # a gradient summed from two paths is counted too
        residual(residual(x)).sum().backward()
    assert max(b for _, _, b in prof.timeline) == prof.peak_bytes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_backward_on_zero_dimensional_tensors(dtype):
    x = mg.tensor(np.array(0.5, dtype), requires_grad=True)
    (x.tanh() + x.sigmoid() + x.exp() + x.relu()).backward()
    s = 1 / (1 + np.exp(-0.5))
    assert np.isclose(x.grad.item(), 1 - np.tanh(0.5) ** 2 + s * (1 - s) + np.exp(0.5) + 1.0, rtol=1e-6)
    assert x.grad.dtype == dtype


def _trace(prof, tmp_path):
    import json
    return json.loads(pathlib.Path(prof.export_chrome_trace(tmp_path / "step.json")).read_text())


def test_chrome_trace_has_a_slice_per_op_and_its_counter_reaches_the_peak(tmp_path):
    model = mg.nn.Sequential(mg.nn.Linear(8, 64), mg.nn.ReLU(), mg.nn.Linear(64, 3))
    x = mg.tensor(np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32))
    opt = mg.optim.Adam(model.parameters(), lr=1e-3)
    with mg.profile() as prof:
        big = mg.tensor(np.ones(4000))      # 32,000 bytes that live and die between two ops
        del big
        F.cross_entropy(model(x), mg.tensor(np.arange(32) % 3, dtype=np.int64)).backward()
        opt.step()                          # Adam's state appears after the last op
    assert max(b for _, _, b in prof.timeline) < prof.peak_bytes    # so the rows alone miss the peak
    trace = _trace(prof, tmp_path)
    events = trace["traceEvents"]
    counter = [e for e in events if e["ph"] == "C"]
    assert max(e["args"]["bytes"] for e in counter) == prof.peak_bytes
    assert counter[0]["args"]["bytes"] == prof.start_bytes and counter[-1]["args"]["bytes"] == prof.end_bytes
    assert [e["ts"] for e in counter] == sorted(e["ts"] for e in counter)
    slices = [e for e in events if e["ph"] == "X"]
    assert [(e["cat"], e["name"], e["args"]["live_bytes"]) for e in slices] == prof.timeline
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert all(tracks[e["tid"]] == e["cat"] for e in slices)
    assert all(e["dur"] >= 0 for e in slices)
    assert trace["otherData"]["peak_bytes"] == prof.peak_bytes


def test_chrome_trace_puts_recompute_on_its_own_track(tmp_path):
    from minigrad.checkpoint import checkpoint_sequential
    layers = [mg.nn.Tanh() for _ in range(9)]
    x = mg.tensor(np.ones((4, 16)), requires_grad=True)
    with mg.profile() as prof:
        checkpoint_sequential(layers, x, strategy="sqrt").sum().backward()
    slices = [e for e in _trace(prof, tmp_path)["traceEvents"] if e["ph"] == "X"]
    phases = [e["cat"] for e in slices]
    assert phases.count("recompute") == sum(1 for ph, _, _ in prof.timeline if ph == "recompute") > 0
    assert max(e["args"]["bytes"] for e in _trace(prof, tmp_path)["traceEvents"] if e["ph"] == "C") \
        == prof.peak_bytes
