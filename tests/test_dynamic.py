"""Dynamic rematerialization: exact gradients, the cap in measured bytes, the DTR theorem, no leaks, errors."""
import functools
import gc
import math
import re
import tracemalloc

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn, profiler
from minigrad.checkpoint import dynamic
from minigrad.checkpoint.dynamic import HEURISTICS, BudgetError
from minigrad.errors import CheckpointError, MinigradError

# --------------------------------------------------------------------------- models


def _mlp_bn_dropout():
    mg.manual_seed(1)
    return nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                                        nn.Dropout(0.2))]), (16, 32)


def _residual():
    mg.manual_seed(2)
    return nn.Sequential(*[nn.Residual(nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 32)))
                           for _ in range(4)]), (16, 32)


def _transformer():
    mg.manual_seed(3)
    return nn.Sequential(*[nn.TransformerBlock(16, 32) for _ in range(2)]), (4, 8, 16)


MODELS = {"mlp_bn_dropout": _mlp_bn_dropout, "residual": _residual, "transformer": _transformer}


def _step(model, x, budget=None, heuristic="dtr"):
    """One forward and backward (plain, or under ``dynamic``); returns gradients, buffers and the region.

    Steady state, as in every training step after the first: the parameters' gradients exist and
    are zeroed in place, so the step adds into them (the budget counts what the step adds).
    """
    mg.manual_seed(7)
    for p in model.parameters():
        if p.grad is not None:
            p.grad.data[...] = 0
    d = None
    if budget is None:
        (model(x) ** 2).mean().backward()
    else:
        with dynamic(budget, heuristic=heuristic) as d:
            (model(x) ** 2).mean().backward()
    return [p.grad.data.copy() for p in model.parameters()], [b.data.copy() for b in model.buffers()], d


def _plain_peak(model, x):
    """The bytes the region counts when nothing is evicted (the profiler's peak of a plain step, Note 2)."""
    state = model.state_dict()
    _step(model, x)                                      # the gradients exist from here on
    _, _, d = _step(model, x, budget=10**12)
    model.load_state_dict(state)
    assert d.evictions == 0
    return d.peak_bytes


def _chain(n_layers, n=256):
    """A chain of tanh layers on a vector: each layer's output (one unit) is what its backward needs."""
    x = mg.tensor(np.linspace(-1.0, 1.0, n), requires_grad=True)

    def step():
        h = x
        for _ in range(n_layers):
            h = h.tanh()
        h.sum().backward()
    return x, step, n * 8


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("heuristic", sorted(HEURISTICS))
def test_gradients_bit_identical_under_a_tight_budget(name, heuristic):
    """60% of the plain peak: below it, the residual MLP cannot fit one Linear's backward (its gradients,
    the incoming one and the inputs it reads) beside what the step holds."""
    model, shape = MODELS[name]()
    x = mg.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    state = model.state_dict()
    plain = _plain_peak(model, x)
    g0, b0, _ = _step(model, x)
    model.load_state_dict(state)
    with profiler.profile() as prof:
        g1, b1, d = _step(model, x, budget=plain * 3 // 5, heuristic=heuristic)
    assert d.evictions > 0 and d.remats > 0
    assert prof.peak_bytes - prof.start_bytes <= d.peak_bytes <= plain * 3 // 5
    for a, b in zip(g0 + b0, g1 + b1):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_batchnorm_stats_once_and_dropout_masks_replayed():
    model, shape = _mlp_bn_dropout()
    x = mg.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    state = model.state_dict()
    plain = _plain_peak(model, x)
    g0, b0, _ = _step(model, x)
    after_plain = mg.random.get_rng_state()
    model.load_state_dict(state)
    g1, b1, d = _step(model, x, budget=plain // 2)
    replayed = {row[1] for row in d.timeline if row[1].startswith("replay ")}
    assert "replay BatchNorm" in replayed         # BatchNorm ran again, and its statistics moved once
    assert mg.random.get_rng_state() == after_plain  # replays leave the generators where the plain run did
    for a, b in zip(b0, b1):
        assert np.array_equal(a, b)
    for a, b in zip(g0, g1):
        assert np.array_equal(a, b)


def test_ample_budget_evicts_nothing():
    model, shape = _transformer()
    x = mg.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    plain = _plain_peak(model, x)
    _, _, d = _step(model, x, budget=2 * plain)
    assert (d.evictions, d.remats, d.remat_flops) == (0, 0, 0)
    assert d.peak_bytes == plain
    assert (d.buffers, d.resident_bytes) == (0, 0)       # all let go when backward ends, no collector needed


def test_steps_after_a_calm_one_run_fast_and_fall_back_when_the_step_changes():
    """Note 8: a step that repeats one needing no eviction makes no recipes; a step that differs (a larger
    batch) goes back to full bookkeeping at its first op and evicts under the same budget, exactly."""
    model, shape = _residual()
    x = mg.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    big = mg.tensor(np.random.default_rng(1).standard_normal((2 * shape[0], shape[1])).astype(np.float32))
    plain = _plain_peak(model, x)
    g0, _, _ = _step(model, x)
    g_big, _, _ = _step(model, big)
    d = dynamic(plain * 3 // 2)
    for n in range(3):
        with d:
            g1, _, _ = _step(model, x)
        assert (d.evictions, d.fast_steps) == (0, n)        # the first step learns; the next ones are fast
        assert all(np.array_equal(a, b) for a, b in zip(g0, g1))
    with profiler.profile() as prof, d:
        g2, _, _ = _step(model, x)
        assert d.buffers == 0                               # fast: nothing of the step is the region's
    assert prof.peak_bytes - prof.start_bytes <= plain and d.fast_steps == 3
    with d:
        g3, _, _ = _step(model, big)
    assert d.fast_steps == 3 and d.evictions > 0 and d.remats > 0
    assert all(np.array_equal(a, b) for a, b in zip(g_big, g3))
    for n in (3, 4, 5):             # the step after it evicts only what recipes held (free): it teaches
        with d:
            _step(model, x)
        assert d.fast_steps == n
    for p in model.parameters():
        p.grad.data[...] = 0
    (model(x) ** 2).sum().backward()                        # another loss: the step differs at its end
    g_sum = [p.grad.data.copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad.data[...] = 0
    with d:
        (model(x) ** 2).sum().backward()
    assert d.fast_steps == 6                                # it began fast, and went full at the Sum
    assert all(np.array_equal(p.grad.data, g) for p, g in zip(model.parameters(), g_sum))
    # seen only in part, it teaches nothing: the next step keeps room for the largest op seen (the larger
    # batch's) and evicts, the one after it learns the step, and the third runs fast
    for n in (6, 6, 7):
        with d:
            _step(model, x)
        assert d.fast_steps == n


# --------------------------------------------------------------------------- the cap, measured


def test_forward_peak_predicted_equals_profiler():
    """In a forward pass every array minigrad allocates is a region buffer: the two counts agree exactly."""
    x, _, unit = _chain(0)
    for budget_units in (100, 9):
        with profiler.profile() as prof, dynamic(budget_units * unit) as d:
            h = x
            for _ in range(40):
                h = h.tanh()
        assert prof.peak_bytes - prof.start_bytes == d.peak_bytes
        assert d.peak_bytes == min(40, budget_units) * unit     # 40 outputs, or as many as the budget holds
        assert (d.evictions > 0) == (budget_units < 40)
        del h


def test_cap_in_measured_bytes_steady_state():
    """Three steps in one region; the third is measured by the profiler and by tracemalloc.

    The budget counts what the profiler counts, gradients in flight included (Note 2), so the
    profiler's peak stays within it; tracemalloc also sees the temporaries inside tanh's
    backward (3 units at most). Units are large (128 kB) so the tape's Python objects, which
    tracemalloc also counts (about 1.5 kB a layer), stay well under one unit.
    """
    n_layers, budget_units = 48, 10
    x, step, unit = _chain(n_layers, n=2**14)
    with profiler.profile() as plain:
        step()
    assert plain.peak_bytes - plain.start_bytes >= n_layers * unit      # the cap below is a real one
    with dynamic(budget_units * unit) as d:
        for _ in range(2):
            x.grad = None
            step()
        x.grad = None
        gc.collect()
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            with profiler.profile() as prof:
                step()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert d.evictions > 0
    assert d.peak_bytes <= budget_units * unit
    assert prof.peak_bytes - prof.start_bytes <= budget_units * unit
    assert peak - start <= (budget_units + 3) * unit


@pytest.mark.parametrize("heuristic", HEURISTICS)
def test_cap_holds_where_code_between_ops_makes_arrays(heuristic):
    """Attention scales its scores by a constant made between two ops; the room kept for the next op
    counts what the count grew by since the last op, that constant included, so the steady-state
    peak (profiler) stays within a budget of half the plain step's."""
    mg.manual_seed(3)
    blocks = [mg.nn.TransformerBlock(32, 64, dtype=np.float64) for _ in range(4)]
    x = mg.tensor(np.random.default_rng(0).standard_normal((8, 32, 32)))

    def step():
        h = x
        for b in blocks:
            h = b(h)
        (h * h).mean().backward()

    step()
    with profiler.profile() as plain:
        step()
    budget = (plain.peak_bytes - plain.start_bytes) // 2
    with dynamic(budget, heuristic=heuristic) as d:
        step()
        with profiler.profile() as prof:
            step()
    assert d.evictions > 0
    assert prof.peak_bytes - prof.start_bytes <= budget
    assert d.peak_bytes <= budget


@pytest.mark.parametrize("frac", [55, 60])
def test_cap_holds_when_the_op_just_run_pins_what_must_go(frac):
    """In attention, ``softmax(scores * scale)``: when the room for softmax is made (after the Mul), the
    scores are still pinned, as the Mul's input, though only the Mul's recipe holds them past it. The
    region lets go of them then, so they are freed before softmax allocates and the steady-state peak
    (profiler) stays within the budget; it overshot by a score matrix when it kept them."""
    from minigrad.checkpoint.graph_models import transformer_block
    fn, xs, _ = transformer_block(seq=64, dim=16, heads=2, blocks=2)
    fn(*xs).backward()                           # parameter gradients exist from here on
    gc.collect()
    with profiler.profile() as plain:
        fn(*xs).backward()
    budget = (plain.peak_bytes - plain.start_bytes) * frac // 100
    with dynamic(budget) as d:
        fn(*xs).backward()
        with profiler.profile() as prof:
            fn(*xs).backward()
    assert d.evictions > 0
    assert prof.peak_bytes - prof.start_bytes <= budget
    assert d.peak_bytes <= budget


def test_a_backward_step_keeps_the_arrays_it_reads(monkeypatch):
    """Note 3: from the first saved array a backward step reads until the next step begins, its other saved
    arrays stay resident, so no buffer is replayed twice for one step. Before, on the transformer at the
    least budget + 10%, the attention backward's query-key-value projection was evicted to make room for
    the replayed attention weights and replayed twice for the same step."""
    from minigrad.checkpoint.dynamic import Dynamic
    from minigrad.checkpoint.graph_models import transformer_block
    replays, real = [], Dynamic._replay

    def spy(self, buf, arrays, grads):
        if profiler.current_phase() == "backward":
            replays.append((self._pin_node, id(buf)))
        return real(self, buf, arrays, grads)

    monkeypatch.setattr(Dynamic, "_replay", spy)
    fn, xs, _ = transformer_block()
    fn(*xs).backward()                           # parameter gradients exist from here on
    with dynamic(2_090_607) as d:
        fn(*xs).backward()
        replays.clear()
        fn(*xs).backward()
    assert d.evictions > 0 and replays
    assert len(replays) == len(set(replays))


# --------------------------------------------------------------------------- the DTR theorem


@pytest.mark.parametrize("n_layers", [64, 256])
def test_dtr_theorem_linear_chain(n_layers):
    """Kirisame et al.: a budget of O(√N) units reverses an N-layer chain in O(N) operations (here <= 4N)."""
    x, step, unit = _chain(n_layers)
    step()
    g0 = x.grad.data.copy()
    c = 2
    budget_units = 2 * math.ceil(math.sqrt(n_layers)) + c
    x.grad = None
    with dynamic(budget_units * unit, heuristic="dtr") as d:
        step()
    assert d.evictions > 0
    assert n_layers + d.remats <= 4 * n_layers
    assert d.peak_bytes <= budget_units * unit
    assert np.array_equal(x.grad.data, g0)


def test_lru_needs_more_recompute_than_dtr_on_a_long_chain():
    """The theorem is about h_DTR: evicting the stalest buffer recomputes more (the paper's observation)."""
    x, step, unit = _chain(256)
    counts = {}
    for h in ("dtr", "lru"):
        x.grad = None
        with dynamic(34 * unit, heuristic=h) as d:
            step()
        counts[h] = d.remats
    assert counts["dtr"] < counts["lru"]


# --------------------------------------------------------------------------- what is never evicted


def test_params_user_inputs_and_held_tensors_stay():
    model, shape = _residual()
    x = mg.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32), requires_grad=True)
    plain = _plain_peak(model, x)
    params = {id(p): (p.data, p.data.copy()) for p in model.parameters()}
    x_data = x.data
    held = {}
    with dynamic(plain * 17 // 20) as d:
        h = x
        for i, block in enumerate(model):
            h = block(h)
            if i in (0, 2):
                held[i] = h            # the user keeps two blocks' outputs
        (h ** 2).mean().backward()
    assert d.evictions > 0
    assert x.data is x_data and x.grad is not None
    for p in model.parameters():
        arr, copy = params[id(p)]
        assert p.data is arr and np.array_equal(arr, copy)
    # held outputs are pinned: nothing of theirs was evicted, and they count against the budget
    with mg.no_grad():
        h = x
        for i, block in enumerate(model):
            h = block(h)
            if i in held:
                assert np.array_equal(h.data, held[i].data)
    assert d.peak_bytes <= plain * 17 // 20


# --------------------------------------------------------------------------- leaks and errors


def test_no_leak_over_twenty_steps():
    model, shape = _mlp_bn_dropout()
    x = mg.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    target = mg.tensor(np.random.default_rng(1).integers(0, 32, shape[0]))
    opt = mg.optim.SGD(model.parameters(), lr=0.01)
    plain = _plain_peak(model, x)
    counts = []
    with dynamic(plain * 3 // 5) as d:
        for _ in range(20):
            for p in model.parameters():       # as _plain_peak measured: the gradients exist
                p.grad.data[...] = 0
            out = model(x)
            loss = nn.functional.cross_entropy(out, target) + (out * out).mean()   # one buffer read twice
            del out
            loss.backward()
            opt.step()
            del loss
            gc.collect()
            counts.append((profiler.live_tensors(), profiler.live_bytes(), d.buffers, d.resident_bytes))
    assert d.evictions > 0
    assert d.peak_bytes <= plain * 3 // 5               # every step, the first included
    assert len(set(counts[1:])) == 1, counts
    assert counts[-1][2:] == (0, 0)


def test_impossible_budget_raises_and_leaves_nothing_behind():
    x, step, unit = _chain(16)
    gc.collect()
    base_tensors, base_bytes = profiler.live_tensors(), profiler.live_bytes()
    with pytest.raises(BudgetError) as info:
        with dynamic(unit // 2) as d:
            step()
    msg = str(info.value)
    assert isinstance(info.value, (CheckpointError, MinigradError))
    assert f"{unit // 2:,} bytes" in msg and "Tanh" in msg and "Raise the budget" in msg
    del info
    x.grad = None
    gc.collect()
    assert (profiler.live_tensors(), profiler.live_bytes()) == (base_tensors, base_bytes)
    assert d.buffers == 0 and d.resident_bytes == 0
    # no hooks left: a plain step saves its arrays as they are and needs no region
    step()
    g = x.grad.data.copy()
    x.grad = None
    with dynamic(10**9):
        step()
    assert np.array_equal(g, x.grad.data)


def test_bad_arguments():
    with pytest.raises(CheckpointError, match="unknown heuristic 'fifo'"):
        dynamic("1MB", heuristic="fifo")
    with pytest.raises(CheckpointError, match="cannot read a byte size"):
        dynamic("lots")
    assert dynamic("2MB").budget == 2_000_000


def test_train_command_under_dynamic_matches_plain(capsys):
    pytest.importorskip("tqdm", reason="the train command shows a tqdm progress bar (installed with the dev extra)")
    from minigrad.cli import main
    args = ["train", "--samples", "40", "--depth", "4", "--width", "16", "--epochs", "5", "--quiet", "--device", "cpu"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--checkpoint", "dynamic:32kB", "--bytes"]) == 0
    dyn = capsys.readouterr().out
    pick = lambda text: re.search(r"training accuracy (\S+) .* held-out accuracy (\S+) .* loss (\S+)",  # noqa: E731
                                  text).groups()
    assert pick(plain) == pick(dyn)                       # the same training, bit for bit
    evictions, replays = map(int, re.search(r"(\d+) evictions, (\d+) replays", dyn).groups())
    assert evictions > 0 and replays > 0
    assert "dynamic region: budget 32,000 B, heuristic dtr:" in dyn
    peak = int(re.search(r"the region's own peak ([\d,]+) B", dyn).group(1).replace(",", ""))
    assert peak <= 32_000


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="on this 16-block chain DTR recomputes 1.58x the exact chain planner's FLOPs under the "
                          "memory the plan measures (benchmarks/dynamic.py section 2 has the larger chains)")
def test_dtr_recompute_near_the_chain_planners_optimum():
    """With the memory the exact chain planner's plan measures as its budget, DTR stays within it and
    recomputes at most 1.5x the plan's FLOPs (the budget counts what the profiler counts, Note 2)."""
    from minigrad.checkpoint import checkpoint_sequential, plan
    mg.manual_seed(4)
    blocks = [nn.Sequential(nn.Linear(32, 32, dtype=np.float64), nn.Tanh()) for _ in range(16)]
    x = mg.tensor(np.random.default_rng(0).standard_normal((128, 32)))

    def run(forward, budget=None):
        with profiler.profile() as prof:
            region = dynamic(budget) if budget is not None else None
            if region is not None:
                region.__enter__()
            try:
                h = forward()
                (h * h).mean().backward()
                del h
            finally:
                if region is not None:
                    region.__exit__(None, None, None)
        return prof.peak_bytes - prof.start_bytes, prof.flops["recompute"]

    def plain():
        h = x
        for b in blocks:
            h = b(h)
        return h

    run(plain)                                   # parameter gradients exist from here on
    peak, _ = run(plain)
    schedule = plan(blocks, x, strategy="budget", budget=peak // 2)
    opt_peak, opt_rec = run(lambda: checkpoint_sequential(blocks, x, strategy="budget", budget=peak // 2))
    assert opt_rec > 0 and opt_peak < peak and schedule.simulate().recomputed_forwards > 0
    got = run(plain, opt_peak)
    assert got[0] <= opt_peak
    assert got[1] <= 1.5 * opt_rec, (got, opt_rec)


@functools.lru_cache(maxsize=2)
def _dtr_at_the_graph_planners_budget(name="residual"):
    """(DTR's (peak, recompute), the optimal plan's (peak, recompute), the budget) under one budget, which
    means the same for both (Note 2), both measured in the steady state (the plan's second run; DTR's
    second step in one region). ``"residual"``: a residual MLP at half the plain peak. ``"transformer"``:
    two small transformer blocks 10% above the least any plan needs (56% of the plain peak; half of it is
    below that least)."""
    from minigrad.checkpoint import capture, checkpoint
    from minigrad.checkpoint.graph_models import residual_mlp, transformer_block
    from minigrad.checkpoint.graph_run import cached_plan
    from minigrad.checkpoint.graph_solve import minimum_budget, plain_peak
    if name == "residual":
        fn, xs, _ = residual_mlp(depth=6, width=32, batch=256)
        budget = plain_peak(capture(fn, *xs)) // 2
    else:
        fn, xs, _ = transformer_block(seq=64, dim=16, heads=2, blocks=2)
        lower, least = minimum_budget(capture(fn, *xs))
        assert lower == least
        budget = least + least // 10
    p = cached_plan(fn, *xs, budget=budget, method="optimal")

    def run(step):
        with profiler.profile() as prof:
            step()
        return prof.peak_bytes - prof.start_bytes, prof.flops["recompute"]

    region = dynamic(budget)

    def under_dynamic():
        with region:
            fn(*xs).backward()

    def planned():
        checkpoint(fn, *xs, budget=budget, method="optimal").backward()

    fn(*xs).backward()                           # parameter gradients exist from here on
    plain_peak_measured, _ = run(lambda: fn(*xs).backward())
    planned()
    opt_peak, opt_rec = run(planned)
    assert p.optimal and opt_rec > 0 and opt_peak <= budget < plain_peak_measured
    if name == "residual":
        assert budget <= plain_peak_measured // 2 + plain_peak_measured // 20
    under_dynamic()
    return run(under_dynamic), (opt_peak, opt_rec), budget


def test_dtr_runs_within_the_graph_planners_budget():
    """A proven-optimal plan at half the plain peak measures within its budget; so does DTR under the same one."""
    (peak, _), (opt_peak, _), budget = _dtr_at_the_graph_planners_budget()
    assert opt_peak <= budget and peak <= budget


@pytest.mark.parametrize("name", ["residual", "transformer"])
def test_dtr_recompute_near_the_graph_planners_optimum(name):
    """Under the budget a proven-optimal graph plan is given, DTR stays within it and recomputes at most 1.5x
    its FLOPs. On the transformer this needs bytes counted up to the shortfall (Note 7): with whole bytes
    DTR evicts an attention matrix for a few kB and recomputes 1.62x."""
    (peak, rec), (_, opt_rec), budget = _dtr_at_the_graph_planners_budget(name)
    assert peak <= budget
    assert rec <= 1.5 * opt_rec, (rec, opt_rec)


def test_dtr_counts_bytes_up_to_the_shortfall():
    """Bytes beyond what is missing do not make a buffer cheaper to evict (Note 7); without a shortfall to
    fill the score is the paper's cost / (bytes x staleness)."""
    from types import SimpleNamespace

    from minigrad.checkpoint.dynamic import _h_dtr

    def buf(nbytes, flops, fwd):
        return SimpleNamespace(nbytes=nbytes, fwd=fwd, recipe=(SimpleNamespace(flops=flops),))

    region = SimpleNamespace(replay_cost=lambda b: b.recipe[0].flops, shortfall=1 << 40)
    big, small = buf(512_000, 3_000_000, 90), buf(64_000, 1_000_000, 95)   # same staleness-weighted ratio
    assert _h_dtr(big, 100, region) == pytest.approx(3 * 3_000_000 / (512_000 * 11))
    assert _h_dtr(big, 100, region) < _h_dtr(small, 100, region)          # per byte the big one is cheaper
    region.shortfall = 70_000                   # but only 70 kB are missing: its other bytes buy nothing now
    assert _h_dtr(big, 100, region) == pytest.approx(3 * 3_000_000 / (70_000 * 11))
    assert _h_dtr(small, 100, region) < _h_dtr(big, 100, region)
