"""Graph plans: solve time and optimality gap against graph size, and the methods on three networks.

1. Synthetic network-like graphs of 25..400 ops (``graph_models.synthetic``)
   at the first of 60/70/80/90% of the plain step's peak where greedy fits: for ``optimal`` (the MILP,
   HiGHS, a time limit per solve) the time (wall and this process's CPU
   seconds: the machine may be shared), whether optimality was proven and
   the gap to HiGHS's bound; for ``lp`` the same times, the rounded plan's
   cost and its gap to the LP bound.
2. The residual MLP, the U-Net-like MLP and the transformer blocks: at equal
   memory, recompute FLOPs of optimal, lp, greedy, articulation, per-block
   checkpointing (each block the model marks: residual block, U-Net level,
   attention, MLP) and none at 50% of the plain peak when any plan fits there,
   else halfway between the least any plan needs and the plain peak
   (Checkmate's headline comparison); at equal recompute, each baseline's peak
   next to the least budget at which the MILP recomputes no more (per-block
   checkpointing is one plan, so it is taken at its own peak). Every plan is
   run: measured peak (profiler) and recompute FLOPs next to the prediction.

Run:  python benchmarks/graph_planner.py [--time-limit 60] [--sizes 25 50 100 200 400] [--models-only]
"""
from __future__ import annotations

import argparse
import gc
import time

from _common import add_repo_to_path, machine_report, pin_blas_threads, table

pin_blas_threads(1)
add_repo_to_path()

import minigrad as mg  # noqa: E402
from minigrad.checkpoint import capture, checkpoint  # noqa: E402
from minigrad.checkpoint.graph_models import MODELS, synthetic  # noqa: E402
from minigrad.checkpoint.graph_run import cached_plan  # noqa: E402
from minigrad.checkpoint.graph_solve import METHODS, minimum_budget, plain_peak, solve  # noqa: E402
from minigrad.errors import ScheduleError  # noqa: E402


def mflop(x):
    return f"{x / 1e6:.2f}"


def benchmark_budget(g):
    """(bytes, fraction of the plain peak): the first of 60/70/80/90% of the plain step's peak where greedy fits."""
    plain = plain_peak(g)
    for frac in (0.6, 0.7, 0.8, 0.9):
        budget = int(frac * plain)
        try:
            solve(g, budget, "greedy")
            break
        except ScheduleError:
            continue
    return budget, frac


def sizes_table(sizes, limit):
    rows = []
    for n in sizes:
        g = synthetic(n, seed=n)
        budget, frac = benchmark_budget(g)
        row = [n, f"{budget / 1e6:.2f} ({100 * frac:.0f}%)"]
        for method in ("optimal", "lp"):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                p = solve(g, budget, method, time_limit=limit)
            except ScheduleError as exc:
                row += ["-", "", "infeasible" if "below" in str(exc) else "no plan", "", ""]
                continue
            row += [f"{time.perf_counter() - t0:.1f}", f"{time.process_time() - c0:.1f}", mflop(p.cost),
                    mflop(p.lower_bound), ("proven" if p.optimal else f"{100 * p.gap:.1f}%")]
        rows.append(row)
    print(table(["ops", "budget MB", "optimal s", "CPU s", "optimal MFLOP", "bound MFLOP", "gap", "lp s", "CPU s",
                 "lp MFLOP", "LP bound MFLOP", "gap to LP bound"], rows), flush=True)


def equal_recompute_budget(g, target, lo, hi, limit):
    """A budget (bytes, to 2% of the peak) at which the MILP recomputes no more than ``target`` FLOPs.

    Bisection with short solves: a plan found within the time limit is a real
    plan, so the budget returned is an upper bound on the least one.
    """
    def fits(budget):
        try:
            return solve(g, budget, "optimal", time_limit=limit).cost <= target
        except ScheduleError:        # no plan found within the time limit: count it as not reaching the target
            return False

    if fits(lo):
        return lo
    while hi - lo > 0.02 * hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def run_plan(fn, args, budget, method):
    """(plan, prediction, measured peak, measured recompute FLOPs): a warm-up step, then one profiled."""
    p = cached_plan(fn, *args, budget=budget, method=method)
    checkpoint(fn, *args, budget=budget, method=method).backward()
    gc.collect()
    with mg.profile() as prof:
        checkpoint(fn, *args, budget=budget, method=method).backward()
    return p, p.simulate(), prof.peak_bytes - prof.start_bytes, prof.flops["recompute"]


def model_table(name, limit):
    fn, args, about = MODELS[name]()
    g = capture(fn, *args)
    plain = plain_peak(g)
    low = minimum_budget(g, limit)       # (proven lower bound, bytes of the least plan found)
    least = low[1]
    budget = int(0.5 * plain)
    where = "50% of plain"
    if budget < least and budget >= low[0]:
        # the least-budget solve stopped above 50% unproven: whether a plan fits there is asked directly
        try:
            solve(g, budget, "optimal", time_limit=limit)
            least = budget
        except ScheduleError:
            pass
    if budget < least:
        budget = (least + plain) // 2
        where = f"halfway from the least ({least / 1e6:.2f} MB) to plain: {100 * budget / plain:.0f}% of plain"
    print(f"\n{name}: {about}; {len(g)} ops, {len(g.blocks)} blocks, forward {mflop(g.forward_flops)} MFLOP, "
          f"plain peak {plain / 1e6:.2f} MB; budget {budget / 1e6:.3f} MB ({where})")
    params = mg.autograd.leaves(fn(*args))
    fn(*args).backward()
    rows, baselines = [], {}
    for method in METHODS:
        try:
            p, sim, measured, flops = run_plan(fn, args, budget, method)
        except ScheduleError:
            rows.append([method, "does not fit", "", "", "", "", ""])
            continue
        if method in ("greedy", "articulation", "blocks") and sim.recompute_flops > 0:
            baselines[method] = (budget, sim, measured)
        rows.append([method, mflop(sim.recompute_flops), f"{100 * sim.recompute_flops / g.forward_flops:.1f}%",
                     mflop(flops), f"{sim.peak_bytes / 1e6:.3f}", f"{measured / 1e6:.3f}",
                     "yes" if p.optimal else f"{100 * p.gap:.0f}%" if method in ("optimal", "lp") else "-"])
    print("at equal memory (the budget): recompute FLOPs")
    print(table(["method", "recompute MFLOP", "of forward", "measured MFLOP", "predicted MB", "measured MB",
                 "proven / gap"], rows), flush=True)
    if "blocks" not in baselines:             # one plan: where it does not fit the budget, take it at its own peak
        own = solve(g, 2 ** 62, "blocks").simulate().peak_bytes
        _, sim, measured, _ = run_plan(fn, args, own, "blocks")
        baselines["blocks"] = (own, sim, measured)
    rows = []
    for method in ("greedy", "articulation", "blocks"):
        if method not in baselines:
            rows.append([method, "does not fit the budget", "", "", "", ""])
            continue
        at, sim, measured = baselines[method]
        b = equal_recompute_budget(g, sim.recompute_flops, least, max(sim.peak_bytes, least), min(limit, 10.0))
        rows.append([method, mflop(sim.recompute_flops), f"{sim.peak_bytes / 1e6:.3f}", f"{measured / 1e6:.3f}",
                     f"{b / 1e6:.3f}", f"{100 * (1 - b / sim.peak_bytes):.0f}%"])
    for p in params:
        p.grad = None
    print("at equal recompute (each baseline's FLOPs): peak bytes")
    print(table(["method", "recompute MFLOP", "its peak MB", "measured MB", "optimal MB at no more recompute",
                 "optimal saves"], rows), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per MILP/LP solve (60)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    ap.add_argument("--models", nargs="+", default=["residual", "unet", "transformer"])
    ap.add_argument("--models-only", action="store_true", help="run part 2 (the three networks) only")
    args = ap.parse_args()
    print("\n".join(machine_report()))
    if not args.models_only:
        print(f"\n1. Synthetic graphs at the first of 60/70/80/90% of the plain peak where greedy fits; "
              f"time limit {args.time_limit:g} s per solve")
        sizes_table(args.sizes, args.time_limit)
    print("\n2. The three networks (minigrad.checkpoint.graph_models), every plan run and measured")
    for name in args.models:
        model_table(name, args.time_limit)


if __name__ == "__main__":
    main()
