"""Dynamic rematerialization (DTR) next to the optimum: recompute at a memory cap, bookkeeping time, the theorem.

What is measured
----------------
The budget of ``dynamic`` counts what the profiler counts (every live array
beyond what was live when the step began, gradients in flight included: Note 2
in ``checkpoint/dynamic.py``), as the graph planner's budget does, so a
budget B means the same peak for both. Steps under ``dynamic`` are measured in
the steady state: the second of two steps in one region (the plans, too, are
measured after a first run).

1. **Bookkeeping time.** A chain of ``--layers`` blocks ``Linear(W, W)`` +
   ``Tanh`` (float64): the plain step, and steps under ``dynamic`` with an
   ample budget and at 100% of the plain step's peak, each row keeping one
   region across its steps (steps that repeat one needing no eviction run fast:
   Note 8), and a row that makes a new region every step (full bookkeeping).
   Interleaved rounds, BLAS pinned to one thread, medians, paired ratios and
   process CPU time (the machine may be shared).
2. **Recompute at 50% of the plain peak, against the optimum.** Three chains
   of blocks (MLP of Linear+Tanh, residual MLP, transformer blocks). Memory is
   ``mg.profile()``'s ``peak_bytes - start_bytes`` over one step whose
   parameter gradients already exist. The target M is half of the plain step's
   measured peak. The optimum is the exact chain planner (``strategy="budget"``):
   the largest planner budget whose run measures at most M; DTR runs under the
   budget M itself, per heuristic. Recompute = FLOPs booked to the "recompute"
   phase. The chain planner plans at block granularity, so its optimum is an
   upper bound on the op-level optimum; section 5 compares with the op-level
   graph planner.
3. **Overhead vs budget.** The MLP chain under ``dynamic`` at budgets from 100%
   of the plain step's peak down to the smallest that runs, per heuristic:
   recompute FLOPs as a percentage of the forward FLOPs.
4. **The DTR theorem.** A chain of N tanh layers on a vector (one unit per
   layer output), budget 2⌈√N⌉ + c units: layer forwards (N + replays) per
   heuristic, next to Revolve's L + t(L, s) at s = the same number of units
   (Revolve re-records every layer it reverses, so it counts N - 1 more).
5. **Recompute against the graph planner's optimum, under the same budget.**
   The residual MLP, the U-Net-like MLP and the transformer blocks of
   ``graph_models.MODELS``, at 50% of the plain step's peak (the graph memory
   model's ``plain_peak``), or, where no plan fits 50%, at the least any plan
   needs + 10% and halfway from that least to plain. The optimum is
   ``solve(g, budget, "optimal")`` (HiGHS, its default time limit; "proven" or
   the gap it stopped at), run through ``checkpoint(fn, x, budget=,
   method="optimal")``; DTR runs under the same budget. Both peaks are
   measured; a DTR run that measures above the budget is marked "(over)" and
   does not count as meeting the target.

Run: ``python benchmarks/dynamic.py`` (``--help`` for the options).
"""
from __future__ import annotations

import argparse
import math
import sys

try:
    import _common as C
except ImportError:          # run as ``python -m benchmarks.dynamic``
    from benchmarks import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=11, help="timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--layers", type=int, default=32, help="blocks in the timed chain")
    p.add_argument("--width", type=int, default=128, help="features of the timed chain")
    p.add_argument("--batch", type=int, default=512, help="rows of the timed chain")
    p.add_argument("--quick", action="store_true", help="smaller models (a smoke run)")
    p.add_argument("--sections", default="12345", help="which sections to run (digits 1-5)")
    C.add_pinning_args(p)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- models


def chains(np, mg, quick):
    """name -> (blocks, x): chains of blocks the planner and DTR both run."""
    nn = mg.nn
    rng = np.random.default_rng(0)
    L, W, B = (8, 32, 64) if quick else (16, 64, 256)
    mg.manual_seed(1)
    mlp = [nn.Sequential(nn.Linear(W, W, dtype=np.float64), nn.Tanh()) for _ in range(L)]
    mg.manual_seed(2)
    res = [nn.Residual(nn.Sequential(nn.Linear(W, W, dtype=np.float64), nn.Tanh(),
                                     nn.Linear(W, W, dtype=np.float64))) for _ in range(L // 2)]
    mg.manual_seed(3)
    D, T = (16, 8) if quick else (32, 32)
    tr = [nn.TransformerBlock(D, 2 * D, dtype=np.float64) for _ in range(2 if quick else 4)]
    return {
        "mlp": (mlp, mg.tensor(rng.standard_normal((B, W)))),
        "residual": (res, mg.tensor(rng.standard_normal((B, W)))),
        "transformer": (tr, mg.tensor(rng.standard_normal((8, T, D)))),
    }


def make_step(mg, blocks, x, how, **opts):
    """One step (forward, mean-square loss, backward) run plainly, under a plan, or under ``dynamic``."""
    from minigrad.checkpoint import checkpoint_sequential, dynamic, plan  # noqa: PLC0415

    if how == "plan":     # plan (measuring the chain) now, so the measured step only runs the cached plan
        plan(blocks, x, strategy="budget", budget=opts["budget"])

    def forward():
        if how == "plan":
            return checkpoint_sequential(blocks, x, strategy="budget", budget=opts["budget"])
        h = x
        for b in blocks:
            h = b(h)
        return h

    def step():
        if how == "dynamic":
            with dynamic(opts["budget"], heuristic=opts.get("heuristic", "dtr")) as d:
                h = forward()
                (h * h).mean().backward()
            return d
        h = forward()
        (h * h).mean().backward()
        return None
    return step


def measure(mg, step):
    """(measured peak bytes, recompute FLOPs, forward FLOPs, the region or None) of one step."""
    with mg.profile() as prof:
        d = step()
    return prof.peak_bytes - prof.start_bytes, prof.flops["recompute"], prof.flops["forward"], d


def measure_dynamic(mg, body, budget, heuristic="dtr"):
    """``measure`` of the second of two steps ``body()`` run in one ``dynamic`` region (the steady state,
    as the plans are measured after a first run), and the region."""
    from minigrad.checkpoint import dynamic  # noqa: PLC0415
    d = dynamic(budget, heuristic=heuristic)
    with d:
        body()
    with mg.profile() as prof, d:
        body()
    return prof.peak_bytes - prof.start_bytes, prof.flops["recompute"], prof.flops["forward"], d


def largest_fitting(mg, blocks, x, how, limit, hi, **opts):
    """The largest budget (bytes) in [0, hi] whose step measures at most ``limit``, and its measurement."""
    return largest_budget(mg, lambda b: make_step(mg, blocks, x, how, budget=b, **opts), limit, hi)


def largest_budget(mg, step_at, limit, hi):
    """The largest budget b in [0, hi] whose step ``step_at(b)`` measures at most ``limit``, and its measurement."""
    from minigrad.errors import MinigradError  # noqa: PLC0415
    lo, best = 0, None
    hi_ = hi
    while hi_ - lo > max(hi // 256, 64):
        mid = (lo + hi_) // 2
        try:
            m = measure(mg, step_at(mid))
        except MinigradError:
            lo = mid
            continue
        if m[0] <= limit:
            lo, best = mid, (mid, m)
        else:
            hi_ = mid
    return best


# --------------------------------------------------------------------------- sections


def section_time(args, np, mg):
    from minigrad.checkpoint import dynamic  # noqa: PLC0415
    mg.manual_seed(0)
    blocks = [mg.nn.Sequential(mg.nn.Linear(args.width, args.width, dtype=np.float64), mg.nn.Tanh())
              for _ in range(args.layers)]
    x = mg.tensor(np.random.default_rng(0).standard_normal((args.batch, args.width)))
    plain = make_step(mg, blocks, x, "plain")
    plain()                               # parameter gradients exist from here on
    peak = measure(mg, plain)[0]
    # one region each, entered for every step (as a training loop keeps one): steady state
    regions = {"dynamic, ample": dynamic(10**15), "dynamic, 100%": dynamic(peak)}

    def dyn(d):
        def run():
            with d:
                h = x
                for b in blocks:
                    h = b(h)
                (h * h).mean().backward()
        return run
    fns = {"plain": plain, **{name: dyn(d) for name, d in regions.items()}}
    fresh = "dynamic, 100%, new region each step"

    def first_step():                     # full bookkeeping: a new region knows no earlier step (Note 8)
        regions[fresh] = dynamic(peak)
        dyn(regions[fresh])()
    fns[fresh] = first_step
    cpu = {}
    times = C.interleaved(fns, args.steps, args.warmup, cpu=cpu)
    base, cbase = times["plain"], cpu["plain"]
    rows = []
    for name, ts in times.items():
        d = regions.get(name)
        rows.append([name, C.ms(C.median(ts)), C.spread(ts), f"{C.median(ts) / C.median(base):.3f}",
                     f"{C.paired_ratio(ts, base):.3f}", f"{C.median(cpu[name]) / C.median(cbase):.3f}",
                     f"{C.paired_ratio(cpu[name], cbase):.3f}", d.evictions if d else "-", d.remats if d else "-",
                     f"{d.peak_bytes:,}" if d else "-"])
    print(f"## 1. Bookkeeping time: {args.layers} x (Linear({args.width},{args.width}) + Tanh), "
          f"batch {args.batch}, float64; plain step peak {peak:,} B (profiler)")
    print(C.table(["step", "median ms", "IQR ms", "x plain", "paired x plain", "CPU x plain", "CPU paired",
                   "evictions", "replays", "region peak B"], rows))
    ok = {name: max(C.paired_ratio(times[name], base), C.median(times[name]) / C.median(base)) <= 1.05
          and regions[name].evictions == 0 for name in regions if name != fresh}
    print("target <= 1.05x plain with no evictions (medians and paired): " +
          ", ".join(f"{name} {C.verdict(v)}" for name, v in ok.items()) + "\n")


def section_optimum(args, np, mg):
    from minigrad.checkpoint.dynamic import HEURISTICS  # noqa: PLC0415
    from minigrad.errors import MinigradError  # noqa: PLC0415
    rows, worst = [], {}
    for name, (blocks, x) in chains(np, mg, args.quick).items():
        plain_step = make_step(mg, blocks, x, "plain")
        plain_step()                      # parameter gradients exist from here on: they are not measured
        plain, _, fwd, _ = measure(mg, plain_step)
        limit = plain // 2
        opt = largest_fitting(mg, blocks, x, "plan", limit, plain)
        if opt is None:
            rows.append([name, f"{plain:,}", f"{limit:,}", "none fits", "", "", "", "", "", ""])
            continue
        opt_budget, (opt_peak, opt_rec, _, _) = opt
        body = make_step(mg, blocks, x, "plain")
        for h in HEURISTICS:
            try:
                peak, rec, _, d = measure_dynamic(mg, body, limit, h)
            except MinigradError:
                peak = None
            if peak is None or peak > limit:
                rows.append([name, f"{plain:,}", f"{limit:,}", f"{opt_peak:,}", f"{opt_rec:,}", h,
                             "does not fit" if peak is None else f"{peak:,} (over)", "", "", ""])
                worst[(name, h)] = math.inf
                continue
            ratio = rec / opt_rec if opt_rec else (1.0 if rec == 0 else math.inf)
            worst[(name, h)] = ratio
            rows.append([name, f"{plain:,}", f"{limit:,}", f"{opt_peak:,}", f"{opt_rec:,}", h,
                         f"{peak:,}", f"{rec:,}", f"{ratio:.2f}", d.evictions])
    print("## 2. Recompute at 50% of the plain measured peak: DTR under budget M vs the exact chain planner (optimum)")
    print(C.table(["model", "plain peak B", "cap M B", "planner peak B", "planner recompute", "heuristic",
                   "DTR peak B", "DTR recompute", "x optimum", "evictions"], rows))
    dtr_ok = all(v <= 1.5 for (m, h), v in worst.items() if h == "dtr")
    print(f"target: DTR recompute within 1.5x the optimum on every model: {C.verdict(dtr_ok)}; per heuristic: " +
          ", ".join(f"{h} {C.verdict(all(v <= 1.5 for (m, hh), v in worst.items() if hh == h))}"
                    for h in HEURISTICS) + "\n")


def section_curve(args, np, mg):
    from minigrad.checkpoint.dynamic import HEURISTICS  # noqa: PLC0415
    from minigrad.errors import MinigradError  # noqa: PLC0415
    blocks, x = chains(np, mg, args.quick)["mlp"]
    step = make_step(mg, blocks, x, "plain")
    step()
    peak, _, fwd, _ = measure(mg, step)
    fracs = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1]
    rows = []
    for frac in fracs:
        row = [f"{frac:.0%}", f"{int(peak * frac):,}"]
        for h in HEURISTICS:
            try:
                got, rec, _, _ = measure_dynamic(mg, step, int(peak * frac), h)
                row.append(f"{100 * rec / fwd:.0f}%" + ("" if got <= int(peak * frac) else " (over)"))
            except MinigradError:
                row.append("too small")
        rows.append(row)
    print(f"## 3. Recompute overhead vs budget (MLP chain; recompute FLOPs / forward FLOPs, steady state; "
          f"100% = the plain step's peak {peak:,} B)")
    print(C.table(["budget", "bytes"] + list(HEURISTICS), rows) + "\n")


def section_theorem(args, np, mg):
    from minigrad.checkpoint import dynamic, revolve_forwards  # noqa: PLC0415
    from minigrad.checkpoint.dynamic import HEURISTICS  # noqa: PLC0415
    rows, ok = [], True
    for N in (64, 256):
        x = mg.tensor(np.linspace(-1, 1, 1024), requires_grad=True)
        unit = x.data.nbytes
        for c in (0, 2):
            units = 2 * math.ceil(math.sqrt(N)) + c
            row = [N, c, units]
            for h in HEURISTICS:
                with dynamic(units * unit, heuristic=h) as d:
                    hh = x
                    for _ in range(N):
                        hh = hh.tanh()
                    hh.sum().backward()
                del hh
                row.append(f"{N + d.remats} ({(N + d.remats) / N:.2f}N)")
                if h == "dtr":
                    ok &= N + d.remats <= 4 * N and d.peak_bytes <= units * unit
            row.append(revolve_forwards(N, units))
            rows.append(row)
    print("## 4. DTR theorem: N tanh layers, budget 2*ceil(sqrt N) + c units; layer forwards (N + replays)")
    print(C.table(["N", "c", "units"] + list(HEURISTICS) + ["Revolve L+t(L,s)"], rows))
    print(f"target: dtr <= 4N within the budget: {C.verdict(ok)}\n")


def graph_step(mg, fn, args, how, budget=None, heuristic="dtr"):
    """One step of a ``graph_models`` function: plain, under its graph plan, or under ``dynamic``."""
    from minigrad.checkpoint import checkpoint, dynamic  # noqa: PLC0415

    def step():
        if how == "plan":
            checkpoint(fn, *args, budget=budget, method="optimal").backward()
            return None
        if how == "dynamic":
            with dynamic(budget, heuristic=heuristic) as d:
                fn(*args).backward()
            return d
        fn(*args).backward()
        return None
    return step


def section_graph(args, np, mg):
    import gc  # noqa: PLC0415

    from minigrad.checkpoint import capture  # noqa: PLC0415
    from minigrad.checkpoint.dynamic import HEURISTICS  # noqa: PLC0415
    from minigrad.checkpoint.graph_models import MODELS  # noqa: PLC0415
    from minigrad.checkpoint.graph_run import cached_plan  # noqa: PLC0415
    from minigrad.checkpoint.graph_solve import minimum_budget, plain_peak  # noqa: PLC0415
    from minigrad.errors import MinigradError, ScheduleError  # noqa: PLC0415
    rows, notes, worst = [], [], {}
    for name in ("residual", "unet", "transformer"):
        fn, xs, about = MODELS[name]()
        g = capture(fn, *xs)
        plain = plain_peak(g)
        budgets = [(plain // 2, "50% of plain")]
        try:
            cached_plan(fn, *xs, budget=plain // 2, method="optimal")
        except ScheduleError:
            least = minimum_budget(g)[1]
            budgets = [(least * 11 // 10, f"the least {least:,} B + 10%"),
                       ((least + plain) // 2, f"halfway from the least {least:,} B to plain")]
        plain_step = graph_step(mg, fn, xs, "plain")
        plain_step()                      # parameter gradients exist from here on: they are not measured
        gc.collect()
        plain_meas, _, fwd, _ = measure(mg, plain_step)
        notes.append(f"{name}: {about}; {len(g)} ops, forward {fwd:,} FLOPs; graph plain peak {plain:,} B "
                     f"(measured {plain_meas:,} B)")
        for budget, where in budgets:
            p = cached_plan(fn, *xs, budget=budget, method="optimal")
            graph_step(mg, fn, xs, "plan", budget)()
            gc.collect()
            opt_peak, opt_rec, _, _ = measure(mg, graph_step(mg, fn, xs, "plan", budget))
            proven = "proven" if p.optimal else f"gap {100 * p.gap:.0f}%"
            bound = "" if p.optimal else f" (HiGHS's lower bound: {p.lower_bound:,.0f} FLOPs)"
            share = "" if where.endswith("of plain") else f" ({100 * budget / plain:.0f}% of plain)"
            notes.append(f"  budget {budget:,} B = {where}{share}: optimal plan "
                         f"{proven}, solved in {p.solve_seconds:.1f} s{bound}")
            body = lambda fn=fn, xs=xs: fn(*xs).backward()      # noqa: E731
            for h in HEURISTICS:
                head = [name, f"{budget:,} ({100 * budget / plain:.0f}%)", f"{opt_peak:,}", f"{opt_rec:,}", proven, h]
                gc.collect()
                try:
                    peak, rec, _, d = measure_dynamic(mg, body, budget, h)
                except MinigradError:
                    rows.append(head + ["does not fit", "", "", ""])
                    worst[(name, budget, h)] = math.inf
                    continue
                ratio = rec / opt_rec if opt_rec else (1.0 if rec == 0 else math.inf)
                worst[(name, budget, h)] = ratio if peak <= budget else math.inf
                rows.append(head + [f"{peak:,}" + ("" if peak <= budget else " (over)"), f"{rec:,}", f"{ratio:.2f}",
                                    d.evictions])
    print("## 5. Recompute under the same budget: DTR vs the graph planner's optimum (solve(g, budget, \"optimal\"))")
    print("\n".join(notes))
    print(C.table(["model", "budget B", "plan peak B", "plan recompute", "optimum", "heuristic", "DTR peak B",
                   "DTR recompute", "x optimum", "evictions"], rows))
    print("target: within the budget, recompute within 1.5x the optimum, per model, budget and heuristic: " +
          "; ".join(f"{h}: " + ", ".join(f"{m} {b // 1000:,}k {C.verdict(v <= 1.5)}"
                                         for (m, b, hh), v in worst.items() if hh == h)
                    for h in HEURISTICS) + "\n")


def main(argv=None):
    args = parse_args(argv)
    notes, _ = C.start(args, "nothing")
    import numpy as np  # noqa: PLC0415
    import minigrad as mg  # noqa: PLC0415
    print("\n".join(C.machine_report(notes=notes)) + "\n")
    for k, section in zip("12345", (section_time, section_optimum, section_curve, section_theorem, section_graph)):
        if k in args.sections:
            section(args, np, mg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
