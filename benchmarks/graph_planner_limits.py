"""Why ``optimal`` stops short of a proof at 100 ops and ``lp`` finds no bound at 400: the evidence, printed.

Two of the graph planner's targets are not met (``RESULTS.md`` section 6):
a proven optimum for 100-op graphs within 60 s, and ``lp`` within 10% of its
own bound on 400-op graphs within 60 s. This script prints what stands in
the way, on the graphs of ``benchmarks/graph_planner.py`` at the same budgets:

1. The size of the program against the graph's size: stages, columns, rows
   and nonzeros of Checkmate's program alone (no covering cuts) and with
   covering paths of length 1 and 2 (Note [The MILP] in
   ``minigrad/checkpoint/graph_solve.py``). Every form is quadratic in the
   ops; the bound the 10% target needs comes from the largest.
2. Branching at 100 ops. The LP relaxation (paths of length 2, under the cap
   of the ``lp`` plan's cost) is nearly integral: a handful of ops are re-run
   a fractional number of times in total. For each, the LP is solved again
   with that op never re-run, and with it re-run at least once. If one such
   split lifted the bound to the plan's cost, branch and bound would close
   quickly; the table shows how little each lifts it (the LP moves the
   fractional saving elsewhere), which is why HiGHS's tree does not close
   the last few percent within the time limit.
3. Optionally (``--milp-seconds S``), HiGHS's MILP on the restricted program
   with one-op paths for S seconds: its incumbent and bound.
4. The LP relaxation at 400 ops (``--lp-size``), Checkmate's program alone and
   with one-op paths, each under the cap of the best baseline plan's cost
   (Note [The cap]) and a time limit (``--lp-seconds``): seconds, and the bound
   against that plan.

Run:  python benchmarks/graph_planner_limits.py [--sizes 25 50 100 200 400] [--milp-seconds 0]
      [--lp-size 400] [--lp-seconds 200]
"""
from __future__ import annotations

import argparse
import math
import time

from _common import add_repo_to_path, machine_report, pin_blas_threads, table

pin_blas_threads(1)
add_repo_to_path()

import numpy as np  # noqa: E402

import minigrad.checkpoint.graph_solve as gs  # noqa: E402
from graph_planner import benchmark_budget  # noqa: E402
from minigrad.checkpoint.graph import Model  # noqa: E402
from minigrad.checkpoint.graph_models import synthetic  # noqa: E402


def program_sizes(sizes):
    rows, saved = [], gs.DEPTH_OPS
    gs.DEPTH_OPS = 10 ** 9           # build length-2 paths at every size, as the bound needs
    try:
        for n in sizes:
            m = Model(synthetic(n, seed=n))
            row = [n, len(m.stages)]
            for depth, restrict in ((0, False), (1, True), (2, True)):
                t0 = time.perf_counter()
                p = gs._Program(m, depth=depth, restrict=restrict)
                row += [f"{p.A.shape[1]:,}", f"{p.A.shape[0]:,}", f"{p.A.nnz:,}", f"{time.perf_counter() - t0:.1f}"]
            rows.append(row)
            print(f"  {n} ops built", flush=True)
    finally:
        gs.DEPTH_OPS = saved
    head = ["ops", "stages"]
    for name in ("Checkmate", "paths 1", "paths 2"):
        head += [f"{name}: columns", "rows", "nonzeros", "build s"]
    print(table(head, rows), flush=True)


def _runs_of(res):
    """Total re-runs of each node in a solution (``res.Rfrac``: per stage, node -> value)."""
    tot = {}
    for R in res.Rfrac:
        for v, x in R.items():
            tot[v] = tot.get(v, 0.0) + x
    return tot


def _lp_with(p, budget, cap, fix):
    """The LP of program p at ``budget`` under ``cap``, with each (node, at_least_once) of ``fix`` imposed."""
    from scipy.sparse import csr_array  # noqa: PLC0415

    ri, ci = [], []
    for k, (v, _) in enumerate(fix):
        for R in p.R:
            if v in R:
                ri.append(k)
                ci.append(R[v])
    rows = csr_array((np.ones(len(ri)), (ri, ci)), shape=(len(fix), p.ncols))
    extra = (rows, [1.0 if once else 0.0 for _, once in fix], [np.inf if once else 0.0 for _, once in fix])
    return p.solve(budget, integral=False, time_limit=300.0, cap=cap, extra=extra if fix else None)


def branching(n, milp_seconds):
    g = synthetic(n, seed=n)
    budget, frac = benchmark_budget(g)
    m = Model(g)
    t0 = time.perf_counter()
    plan = gs.solve(g, budget, "lp", time_limit=60.0)
    print(f"{n} ops at {budget:,} bytes ({100 * frac:.0f}% of the plain peak): lp's plan {plan.cost:,} FLOPs "
          f"in {time.perf_counter() - t0:.1f} s (bound {plan.lower_bound:,})")
    cap = plan.cost
    p = gs._Program(m, depth=2)
    t0 = time.perf_counter()
    base = _lp_with(p, budget, cap, [])
    lp = min(cap, base.fun)
    print(f"LP with two-op covering paths, re-runs capped at {cap:,} FLOPs: bound {lp:,.0f} "
          f"({100 * (cap - lp) / cap:.1f}% below the plan) in {time.perf_counter() - t0:.1f} s")
    runs = _runs_of(base)
    fractional = sorted(v for v, x in runs.items() if abs(x - round(x)) > 1e-4)
    print(f"ops re-run a fractional number of times in the LP: {len(fractional)} of "
          f"{sum(1 for x in runs.values() if x > 1e-4)} ops it re-runs at all")
    rows = []
    for v in fractional:
        node = g.nodes[v]
        bounds = []
        for once in (False, True):
            res = _lp_with(p, budget, cap, [(v, once)])
            bounds.append(math.inf if res.x is None else min(cap, res.fun))
        lift = min(bounds) - lp
        rows.append([v, node.op, f"{node.flops:,}", f"{runs[v]:.2f}", *(f"{b:,.0f}" if math.isfinite(b) else "no plan" for b in bounds),
                     f"{lift:,.0f}", f"{100 * lift / (cap - lp):.0f}%"])
    print(table(["op", "kind", "FLOPs", "LP re-runs", "bound, never re-run", "bound, re-run >= once",
                 "bound lifted by", "of the gap"], rows), flush=True)
    if milp_seconds > 0:
        t0 = time.perf_counter()
        res = gs._Program(m, depth=gs.MILP_DEPTH).solve(budget, integral=True, time_limit=milp_seconds)
        bound = getattr(res, "mip_dual_bound", math.nan)
        cost = res.fun if res.x is not None else math.nan
        print(f"HiGHS's MILP (one-op paths) for {milp_seconds:g} s: stopped after {time.perf_counter() - t0:.0f} s "
              f"at {cost:,.0f} FLOPs, bound {bound:,.0f} (gap {100 * (cost - bound) / cost:.1f}%)", flush=True)


def large_lps(n, seconds):
    g = synthetic(n, seed=n)
    budget, frac = benchmark_budget(g)
    m = Model(g)
    plan, label = gs._best_of(m, budget, gs._greedy_keeps(m) + gs._articulation_keeps(m) + gs._selective_keeps(m))
    cap = gs._cost(m, plan)
    print(f"{n} ops at {budget:,} bytes ({100 * frac:.0f}% of the plain peak): best baseline plan {cap:,} FLOPs "
          f"({label}); LPs capped there, time limit {seconds:g} s each")
    rows = []
    for name, depth, restrict in (("Checkmate", 0, False), ("paths 1", 1, True)):
        p = gs._Program(m, depth=depth, restrict=restrict)
        t0 = time.perf_counter()
        res = p.solve(budget, integral=False, time_limit=seconds, cap=cap)
        took = time.perf_counter() - t0
        if res.x is None:
            rows.append([name, f"{p.A.shape[0]:,}", f"{took:.1f}", "not finished", ""])
            continue
        bound = min(cap, res.fun)
        rows.append([name, f"{p.A.shape[0]:,}", f"{took:.1f}", f"{bound:,.0f}", f"{100 * (cap - bound) / cap:.0f}%"])
    print(table(["program", "rows", "LP s", "bound FLOPs", "below the plan"], rows), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    ap.add_argument("--branch-size", type=int, default=100, help="graph size of part 2 (100)")
    ap.add_argument("--milp-seconds", type=float, default=0.0, help="also run HiGHS's MILP this long (0: skip)")
    ap.add_argument("--lp-size", type=int, default=400, help="graph size of part 4 (400; 0: skip)")
    ap.add_argument("--lp-seconds", type=float, default=200.0, help="time limit of each LP of part 4 (200)")
    args = ap.parse_args()
    print("\n".join(machine_report()))
    print("\n1. The program against the graph's size (synthetic graphs of benchmarks/graph_planner.py)")
    program_sizes(args.sizes)
    print(f"\n2. Branching on the re-runs of one op at a time, {args.branch_size} ops")
    branching(args.branch_size, args.milp_seconds)
    if args.lp_size:
        print(f"\n4. The LP relaxation at {args.lp_size} ops")
        large_lps(args.lp_size, args.lp_seconds)


if __name__ == "__main__":
    main()
