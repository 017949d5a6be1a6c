"""Graph plans: the MILP against exhaustive search, bounds, monotonicity, chains, errors."""
import math

import numpy as np
import pytest

from minigrad.checkpoint import planner
from minigrad.checkpoint.costs import ChainCosts
from minigrad.checkpoint.graph import O, X, Model
from minigrad.checkpoint.graph_models import chain, synthetic
from minigrad.checkpoint import graph_solve
from minigrad.checkpoint.graph_solve import METHODS, _Program, minimum_budget, plain_peak, solve
from minigrad.errors import ScheduleError

# --------------------------------------------------------------------------- exhaustive search in the same model


def exhaustive_cost(m: Model, budget):
    """Fewest recompute FLOPs over every plan of the memory model (None when nothing fits).

    A dynamic program over the set of objects held at the start of each
    stage: the forward may keep any subset that fits; a stage may recompute
    any subset of the nodes at or before its own whose objects it does not
    hold, provided what its backward reads and what each recompute reads is
    there and everything fits; the next stage may hold any subset of what
    this one had. Written from the Note's rules, sharing only its per-op numbers.
    """
    stages = m.stages
    if not stages:
        return 0 if max(m.fwd_const, default=0) <= budget else None
    holdable = sorted({o for s in range(len(stages)) for o in m.objects_at(s)})
    bit = {o: 1 << k for k, o in enumerate(holdable)}
    nb = len(holdable)

    def mask(objs):
        return sum(bit[o] for o in objs if o in bit)

    def nbytes(h):
        return sum(m.size[o] for o in holdable if h & bit[o])

    states = {}
    for h in range(1 << nb):
        if h & ~mask(m.objects_at(0)):
            continue
        if all(m.fwd_const[j] + sum(m.size[o] for o in m.freeable[j] if o in bit and h & bit[o]) <= budget
               for j in range(m.n)):
            states[h] = 0
    for s, w in enumerate(stages):
        at = mask(m.objects_at(s))
        nxt_at = mask(m.objects_at(s + 1)) if s + 1 < len(stages) else 0
        after = {}
        for h0, cost in states.items():
            h = h0 & at
            for rbits in range(1 << (w + 1)):
                R = [v for v in range(w + 1) if rbits >> v & 1]
                made = {o for v in R for o in (O(v), X(v))}
                if h & mask(made):
                    continue
                avail = {o for o in holdable if h & bit[o]} | made | m.always
                if not m.need[s] <= avail or any(O(u) not in avail for v in R for u in m.inputs[v]):
                    continue
                mem = m.bwd_const[s] + nbytes(h) + sum(m.size[O(v)] + m.size[X(v)] for v in R)
                if mem > budget:
                    continue
                a = (h | mask(made)) & nxt_at
                c = cost + sum(m.flops[v] for v in R)
                if c < after.get(a, np.inf):
                    after[a] = c
        # the next stage may hold any subset of what this one had: the cheapest superset's cost
        best = np.full(1 << nb, np.inf)
        for a, c in after.items():
            best[a] = min(best[a], c)
        for k in range(nb):
            idx = np.arange(1 << nb)
            without = idx[(idx >> k) & 1 == 1]
            best[without ^ (1 << k)] = np.minimum(best[without ^ (1 << k)], best[without])
        states = {h: best[h] for h in range(1 << nb) if np.isfinite(best[h]) and not h & ~nxt_at} if s + 1 < len(
            stages) else {0: min(after.values())} if after else {}
        if not states:
            return None
    return int(min(states.values()))


def _budgets(g, k=5):
    lo, hi = minimum_budget(g)[1], plain_peak(g)
    return sorted({int(lo + (hi - lo) * f) for f in np.linspace(0, 1, k)})


def _tiny(seed):
    """A graph of 5 to 8 ops whose activations outweigh its weights' gradients (batch 64), so that below the plain
    peak plans must re-run ops (7 of the 12 seeds)."""
    return synthetic(5 + seed % 4, seed=seed, width=(16, 64), batch=64)


TINY = range(12)


def test_tiny_graphs_make_plans_recompute():
    # The exhaustive comparisons below mean something only where plans differ: most seeds have budgets
    # between the least any plan needs and the plain peak, where the optimum re-runs ops.
    costly = [seed for seed in TINY if any(exhaustive_cost(Model(_tiny(seed)), b) for b in _budgets(_tiny(seed)))]
    assert len(costly) >= len(TINY) // 2, costly


@pytest.mark.parametrize("seed", TINY)
def test_milp_equals_exhaustive_search_on_tiny_graphs(seed):
    g = _tiny(seed)
    m = Model(g)
    lo = minimum_budget(g)[1]
    for budget in _budgets(g) + [lo - 1]:
        want = exhaustive_cost(m, budget)
        if want is None:
            with pytest.raises(ScheduleError, match="below the minimum"):
                solve(g, budget, "optimal")
            continue
        p = solve(g, budget, "optimal")
        assert p.optimal
        assert p.cost == want, (budget, p.cost, want)
        assert p.simulate().peak_bytes <= budget


@pytest.mark.parametrize("seed", TINY)
def test_relaxation_with_covering_cuts_bounds_the_exhaustive_optimum(seed):
    # The covering cuts must hold for every plan of the model: the LP they tighten stays below the optimum.
    g = _tiny(seed)
    m = Model(g)
    p = _Program(m)
    assert p.K                                       # the graphs have inputs to cover
    for budget in _budgets(g):
        lp = p.solve(budget, integral=False)
        assert lp.status == 0
        assert lp.fun <= exhaustive_cost(m, budget) + 1e-6 * max(1.0, lp.fun)


@pytest.mark.parametrize("seed", TINY)
def test_capped_relaxation_bounds_the_exhaustive_optimum(seed):
    # Note [The cap]: whatever the cap U, min(U, LP_U) <= the optimum, and an infeasible capped LP means
    # every plan costs more than U.
    g = _tiny(seed)
    m = Model(g)
    p = _Program(m)
    caps = [0] + sorted({f for f in m.flops if f}) + [math.inf]
    infeasible = recompute = 0
    for budget in _budgets(g):
        want = exhaustive_cost(m, budget)
        recompute += want > 0
        full = p.solve(budget, integral=False).fun
        for cap in caps:
            lp = p.solve(budget, integral=False, cap=cap)
            if lp.status == 2:
                assert want > cap
                infeasible += 1
                continue
            assert lp.status == 0
            assert lp.fun >= full - 1e-6 * max(1.0, full)             # a smaller program: no lower value
            assert min(cap, lp.fun) <= want + 1e-6 * max(1.0, want)
    assert infeasible >= recompute                     # where every plan re-runs an op, a cap of 0 forbids it


def test_covering_cuts_tighten_the_relaxation(monkeypatch):
    g = synthetic(30, seed=30)
    m = Model(g)
    lo, hi = minimum_budget(g)[1], plain_peak(g)
    budget = int(lo + 0.4 * (hi - lo))
    tight = _Program(m).solve(budget, integral=False).fun
    monkeypatch.setattr(graph_solve, "DEPTH", 0)
    p = _Program(m)
    assert not p.K
    loose = p.solve(budget, integral=False).fun
    opt = solve(g, budget, "optimal", time_limit=30)
    assert opt.optimal
    assert loose < 0.2 * opt.cost                     # without them the bound is far below the optimum ...
    assert tight >= 0.9 * opt.cost                    # ... with them it is close
    assert tight <= opt.cost


@pytest.mark.parametrize("n", [10, 20, 30])
def test_milp_objective_equals_simulated_recompute(n):
    # The plan read off R is simulated by the model; its FLOPs must be what HiGHS minimised.
    g = synthetic(n, seed=n)
    m = Model(g)
    p = _Program(m)
    lo, hi = minimum_budget(g)[1], plain_peak(g)
    for budget in (lo, (lo + hi) // 2, hi):
        res = p.solve(budget, integral=True, time_limit=30)
        assert res.status == 0
        peak, _, _, flops, _ = m.simulate(res.R)
        assert flops == round(res.fun) and peak <= budget
        plan = solve(g, budget, "optimal", time_limit=30)
        assert plan.optimal and plan.cost == flops == plan.simulate().recompute_flops == plan.lower_bound


@pytest.mark.parametrize("seed", range(3))
def test_bounds_and_monotone_in_budget(seed):
    g = synthetic(14, seed=seed)
    prev = None
    for k, budget in enumerate(_budgets(g, 6)):
        for method in ("optimal", "lp") if k else ("optimal",):   # rounding may miss the exact minimum
            p = solve(g, budget, method, time_limit=20)
            sim = p.simulate()
            assert sim.peak_bytes <= budget
            assert 0 <= p.lower_bound <= p.cost
            if p.optimal:
                assert p.lower_bound == p.cost
        opt = solve(g, budget, "optimal", time_limit=20)
        assert opt.optimal
        for method in ("lp", "greedy", "articulation"):
            try:
                assert solve(g, budget, method).cost >= opt.cost
            except ScheduleError:
                pass
        if k:
            assert solve(g, budget, "lp", time_limit=20).lower_bound <= opt.cost
        if prev is not None:
            assert opt.cost <= prev
        prev = opt.cost


def test_plain_budget_recomputes_nothing():
    g = synthetic(20, seed=3)
    peak = plain_peak(g)
    for method in ("optimal", "lp", "none"):
        for budget in (peak, peak + 1, 2 * peak):
            p = solve(g, budget, method)
            assert p.cost == 0 and p.recomputed_nodes == []
            assert p.simulate().peak_bytes == peak
    with pytest.raises(ScheduleError, match="method 'none'"):
        solve(g, peak - 1, "none")


def test_below_minimum_states_the_minimum():
    g = synthetic(10, seed=4)
    lo, found = minimum_budget(g)
    assert lo == found
    p = solve(g, found, "optimal")
    assert p.simulate().peak_bytes <= found
    with pytest.raises(ScheduleError, match=f"minimum this graph needs: {found:,} bytes"):
        solve(g, found - 1, "optimal")


def test_bad_input():
    g = synthetic(6, seed=0)
    with pytest.raises(ScheduleError, match="cannot read a byte size"):
        solve(g, "eight megabytes")
    with pytest.raises(ScheduleError, match="non-negative"):
        solve(g, -5)
    with pytest.raises(ScheduleError, match="unknown method 'fastest'"):
        solve(g, "1MB", method="fastest")
    with pytest.raises(ScheduleError, match="expected a Graph"):
        solve([1, 2], "1MB")
    assert set(METHODS) == {"optimal", "lp", "greedy", "articulation", "blocks", "none"}
    with pytest.raises(ScheduleError, match="method 'blocks' needs the blocks"):
        solve(g, "1MB", method="blocks")


# --------------------------------------------------------------------------- chains: op-level plans include layer-level ones


def chain_plan_as_graph_plan(sched, depth):
    """The recompute sets of a chain schedule on ``chain(depth)``: layer i is nodes 2i-2 (Linear) and 2i-1 (Tanh).

    Layers run in backward before ``reverse j`` are recomputed at the first
    stage of layer j, the backward of its Tanh.
    """
    m = Model(chain(depth))
    stage_of = {w: s for s, w in enumerate(m.stages)}
    R = [set() for _ in m.stages]
    pending = set()
    for a in sched.backward_actions():
        if a.kind in ("advance", "record"):
            pending.update((2 * a.i - 2, 2 * a.i - 1))
        elif a.kind == "reverse":
            R[stage_of[2 * a.i - 1]] |= pending
            pending = set()
    return m, R


@pytest.mark.parametrize("depth", [4, 6])
def test_chain_optimal_never_costs_more_than_the_chain_planner(depth):
    g = chain(depth)
    m = Model(g)
    out = g.nodes[0].out_bytes
    sizes = [out] * (depth + 1)
    flops = [0] + [g.nodes[2 * k].flops + g.nodes[2 * k + 1].flops for k in range(depth)]
    checked = 0
    for units in range(3, 2 * depth + 3):
        try:
            sched = planner.budget(ChainCosts(sizes, flops, extras=[0] * (depth + 1), inner=[0] + [out] * depth),
                                   units * out)
        except ScheduleError:
            continue
        _, R = chain_plan_as_graph_plan(sched, depth)
        peak, _, _, cost, _ = m.simulate(R)
        assert cost == sched.simulate().recompute_flops
        best = solve(g, peak, "optimal")
        assert best.optimal and best.cost <= cost
        checked += 1
    assert checked >= 3


def test_graph_and_plan_are_printable_and_stable():
    g = synthetic(12, seed=5)
    assert g.fingerprint() == synthetic(12, seed=5).fingerprint() != synthetic(12, seed=6).fingerprint()
    text = str(g)
    assert "Linear" in text and "12 ops" in text
    p = solve(g, (minimum_budget(g)[1] + plain_peak(g)) // 2, "optimal")
    assert "proven optimal" in str(p) and "forward keeps" in str(p)


# --------------------------------------------------------------------------- capture and execution

import gc  # noqa: E402
import tracemalloc  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad.checkpoint import capture, checkpoint  # noqa: E402
from minigrad.checkpoint.graph_models import MODELS  # noqa: E402
from minigrad.checkpoint.graph_run import cached_plan  # noqa: E402
from minigrad.errors import CheckpointError  # noqa: E402

# Arrays large enough that Python's own objects are small next to them (tracemalloc sees both).
SMALL = {"residual": dict(depth=3, width=256, batch=64), "unet": dict(levels=2, width=256, batch=64),
         "transformer": dict(seq=64, dim=16, heads=2, blocks=1)}


def test_capture_sorts_saved_arrays_and_changes_nothing():
    mg.manual_seed(0)
    lin = mg.nn.Linear(8, 4)
    bn = mg.nn.BatchNorm1d(4)
    x = mg.randn(5, 8)

    def f(x):
        h = bn(lin(x)).tanh()
        return (mg.nn.functional.dropout(h, 0.5) * 2.0).sum()

    state, mean = mg.random.get_rng_state(), bn.running_mean.numpy().copy()
    g = capture(f, x)
    assert [v.op for v in g.nodes] == ["Linear", "BatchNorm", "Tanh", "Dropout", "Mul", "Sum"]
    lin_, bn_, tanh, drop, mul, _ = g.nodes
    assert lin_.saves == () and lin_.inputs == ()            # it saves x and W: leaves
    assert bn_.residual_bytes == 5 * 4 * 4 + 4 * 4          # normalised input and 1/std
    assert tanh.saves == (2,) and drop.pinned_bytes == 5 * 4 * 4   # its output; the mask
    assert mul.saves == () and g.outputs == (5,)
    assert lin_.flops == 2 * 5 * 8 * 4 + 5 * 4
    assert mg.random.get_rng_state() == state and np.array_equal(bn.running_mean.numpy(), mean)
    assert capture(f, x).fingerprint() == g.fingerprint()
    with pytest.raises(CheckpointError, match="not a Tensor"):
        capture(lambda x: 3, x)


def _step(fn, args, params, **kw):
    loss = checkpoint(fn, *args, **kw) if kw else fn(*args)
    loss.backward()
    return loss


@pytest.mark.parametrize("name", sorted(SMALL))
def test_plans_run_exactly_as_predicted(name):
    fn, args, _ = MODELS[name](**SMALL[name])
    g = capture(fn, *args)
    params = mg.autograd.leaves(fn(*args))
    _step(fn, args, params)
    ref = [p.grad.numpy().copy() for p in params]
    lo, hi = minimum_budget(g)[1], plain_peak(g)
    largest = max(max(v.out_bytes, v.grad_bytes) for v in g.nodes)
    for frac in (0.0, 0.4):
        budget = int(lo + (hi - lo) * frac)
        for method in ("optimal", "articulation"):
            try:
                plan = cached_plan(fn, *args, budget=budget, method=method)
            except ScheduleError:
                assert method != "optimal"
                continue
            sim = plan.simulate()
            for p in params:
                p.grad.data[...] = 0        # steady state: gradients exist and are added into
            _step(fn, args, params, budget=budget, method=method)
            assert all(np.array_equal(p.grad.numpy(), r) for p, r in zip(params, ref)), (name, method)
            gc.collect()
            tracemalloc.start()
            with mg.profile() as prof:
                _step(fn, args, params, budget=budget, method=method)
            _, traced = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            measured = prof.peak_bytes - prof.start_bytes
            assert measured <= budget
            assert abs(measured - sim.peak_bytes) <= 0.1 * sim.peak_bytes, (measured, sim.peak_bytes)
            assert prof.flops["recompute"] == sim.recompute_flops
            # tracemalloc also sees Python's own objects and NumPy's small ufunc buffers, which weigh a lot
            # next to these tiny models: never more than a few of the largest array.
            assert measured <= traced <= measured + 4 * largest, (traced, measured)


def _traced_step(step):
    """(profiler peak, tracemalloc peak) of one step, in bytes beyond what was alive before it."""
    gc.collect()
    tracemalloc.start()
    try:
        with mg.profile() as prof:
            step()
        _, traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return prof.peak_bytes - prof.start_bytes, traced


# Plans that solve in seconds: (fraction of the plain peak, method) per network.
TRACED_PLANS = {"residual": [(1.0, "optimal"), (0.8, "greedy"), (0.65, "optimal"), (0.65, "articulation"),
                             (0.65, "blocks")],
                "unet": [(1.0, "optimal"), (0.8, "optimal"), (1.0, "articulation"), (1.0, "blocks")],
                "transformer": [(1.0, "optimal"), (0.8, "articulation"), (0.65, "optimal"), (0.8, "blocks")]}


@pytest.mark.bounds
@pytest.mark.parametrize("name", sorted(TRACED_PLANS))
def test_traced_peak_within_ten_percent_of_the_prediction(name):
    """What NumPy really allocates (tracemalloc) stays within 10% of the model; the profiler within the budget.

    The networks at their benchmark sizes (arrays of 64 kB and more, so Python's
    own objects are a few percent), plans of several methods at several budgets.
    """
    fn, args, _ = MODELS[name]()
    plain = plain_peak(capture(fn, *args))
    fn(*args).backward()                      # steady state: parameter gradients exist
    for frac, method in TRACED_PLANS[name]:
        budget = int(frac * plain)
        sim = cached_plan(fn, *args, budget=budget, method=method).simulate()
        assert frac == 1.0 or sim.recompute_flops > 0

        def step():
            checkpoint(fn, *args, budget=budget, method=method).backward()

        step()
        measured, traced = _traced_step(step)
        assert measured <= budget, (method, frac, measured, budget)
        assert abs(measured - sim.peak_bytes) <= 0.1 * sim.peak_bytes, (method, frac, measured, sim)
        assert abs(traced - sim.peak_bytes) <= 0.1 * sim.peak_bytes, (method, frac, traced, sim)


@pytest.mark.parametrize("name", sorted(SMALL) + ["chain"])
def test_per_block_plans_keep_block_inputs_and_run_as_predicted(name):
    """Per-block checkpointing keeps only what crosses a block boundary, re-runs each block once, and runs as predicted."""
    fn, args, _ = MODELS[name](**SMALL.get(name, {}))
    g = capture(fn, *args)
    assert len(g.blocks) >= 2 and {v.block for v in g.nodes} == set(range(len(g.blocks))) | {-1}
    params = mg.autograd.leaves(fn(*args))
    _step(fn, args, params)
    ref = [p.grad.numpy().copy() for p in params]
    budget = solve(g, 2 ** 60, "blocks").simulate().peak_bytes     # one plan: its own peak is the least that fits
    plan = cached_plan(fn, *args, budget=budget, method="blocks")
    crossing = {u for v in g.nodes for u in v.inputs if g.nodes[u].block != v.block}
    for v in plan.kept_nodes:                 # kept inside a block only when read outside it
        assert g.nodes[v].block < 0 or v in crossing, (name, v)
    ran = [v for r in plan.recompute for v in r if not g.nodes[v].view]
    assert len(ran) == len(set(ran)) and all(g.nodes[v].block >= 0 and v not in crossing for v in ran)
    sim = plan.simulate()
    assert sim.recompute_flops == sum(g.nodes[v].flops for v in ran)
    assert (sim.recompute_flops > 0) == (name != "chain")     # a chain's blocks read only their inputs and outputs
    for p in params:
        p.grad.data[...] = 0
    _step(fn, args, params, budget=budget, method="blocks")
    assert all(np.array_equal(p.grad.numpy(), r) for p, r in zip(params, ref))
    for p in params:
        p.grad.data[...] = 0
    with mg.profile() as prof:
        _step(fn, args, params, budget=budget, method="blocks")
    assert all(np.array_equal(p.grad.numpy(), r) for p, r in zip(params, ref))
    measured = prof.peak_bytes - prof.start_bytes
    assert measured <= budget and abs(measured - sim.peak_bytes) <= 0.1 * sim.peak_bytes
    assert prof.flops["recompute"] == sim.recompute_flops
    with pytest.raises(ScheduleError, match="per-block checkpointing .* peaks at"):
        solve(g, sim.peak_bytes - 1, "blocks")


def test_batchnorm_once_and_dropout_replayed():
    mg.manual_seed(1)
    lins = [mg.nn.Linear(32, 32) for _ in range(3)]
    bns = [mg.nn.BatchNorm1d(32) for _ in range(3)]
    head = mg.nn.Linear(32, 1)
    x = mg.randn(16, 32)

    def f(x):
        h = x
        for lin, bn in zip(lins, bns):
            h = mg.nn.functional.dropout(bn(lin(h)).relu(), 0.3)
        return (head(h).tanh() * 3.0).mean()

    g = capture(f, x)
    budget = minimum_budget(g)[1]
    assert budget < plain_peak(g)
    params = [p for m in lins + bns + [head] for p in m.parameters()]
    runs = []
    for kw in ({}, {"budget": budget}):
        mg.manual_seed(7)
        for p in params:
            p.grad = None
        for bn in bns:
            bn.running_mean.data[...] = 0
            bn.num_batches_tracked.data[...] = 0
        loss = checkpoint(f, x, **kw) if kw else f(x)
        loss.backward()
        runs.append(([p.grad.numpy().copy() for p in params], [bn.running_mean.numpy().copy() for bn in bns],
                     [int(bn.num_batches_tracked.item()) for bn in bns], mg.random.get_rng_state()))
    plan = cached_plan(f, x, budget=budget)
    assert {g.nodes[v].op for v in plan.recomputed_nodes} >= {"BatchNorm", "Dropout"}
    (g0, m0, n0, r0), (g1, m1, n1, r1) = runs
    assert all(np.array_equal(a, b) for a, b in zip(g0, g1))
    assert all(np.array_equal(a, b) for a, b in zip(m0, m1)) and n0 == n1 == [1, 1, 1] and r0 == r1


def test_forward_that_changes_is_refused():
    mg.manual_seed(0)
    lin = mg.nn.Linear(8, 8)
    x = mg.randn(4, 8)
    flag = [False]

    def f(x):
        h = lin(x)
        h = h.relu() if flag[0] else h.tanh()
        return (h * h).sum()

    budget = plain_peak(capture(f, x))
    checkpoint(f, x, budget=budget).backward()
    flag[0] = True
    with pytest.raises(CheckpointError, match="changed since its graph was captured"):
        checkpoint(f, x, budget=budget)
    with pytest.raises(CheckpointError, match="not a Tensor"):
        checkpoint(lambda x: None, x, budget=budget)
    with pytest.raises(ScheduleError, match="cannot read a byte size"):
        checkpoint(f, x, budget="lots")


def test_cli_plan_model(capsys):
    from minigrad.cli import main

    assert main(["plan", "--model", "unet", "--budget", "1.8MB", "--time-limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "U-Net-like" in out and "proven" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] and line.split()[0] in METHODS}
    assert set(rows) == set(METHODS) and "yes" in rows["optimal"]
    assert "does not fit" in rows["none"]


def test_import_does_not_load_scipy():
    import subprocess
    import sys

    code = "import sys, minigrad, minigrad.checkpoint; sys.exit('scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# The ops of the example networks whose arithmetic makes temporaries: op -> (inputs, keyword arguments).
# Arrays of 128 kB, so NumPy's 32 kB ufunc buffer is small next to them.
OP_CASES = {
    "Softmax": (lambda x: [x], {"axis": -1}),
    "GELU": (lambda x: [x], {}),
    "GELU tanh": (lambda x: [x], {"approximate": "tanh"}),
    "LayerNorm": (lambda x: [x, np.ones(512, np.float32), np.zeros(512, np.float32)], {}),
}


@pytest.mark.bounds
@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_ops_allocate_what_the_memory_model_counts(case):
    """Forward: its output and what it saves, nothing more; backward: the gradients and its declared workspace."""
    from minigrad import ops

    make, kw = OP_CASES[case]
    arrays = make(np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32))
    g = np.random.default_rng(1).standard_normal((64, 512)).astype(np.float32)
    node = getattr(ops, case.split()[0])()
    node.requires_grad, node.needs_input_grad = True, (True,) * len(arrays)
    slack = 40_000
    node.forward(*arrays, **kw)               # loads scipy.special for erf outside the measurement
    tracemalloc.start()
    try:
        out = node.forward(*arrays, **kw)
        _, fwd_peak = tracemalloc.get_traced_memory()
        node.out_meta = ((out.shape, out.dtype),)
        made = {id(a): a.nbytes for a in (out, *node._saved) if a is not None and not any(a is b for b in arrays)}
        assert fwd_peak <= sum(made.values()) + slack, (case, fwd_peak, made)
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        grads = node.backward(g)
        _, bwd_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    new = sum(a.nbytes for a in grads if a is not None)
    assert bwd_peak - base <= new + node.backward_workspace() + slack, (case, bwd_peak - base, new)
