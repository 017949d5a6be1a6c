"""The budget planner at scale: time and peak memory of its searches, their gaps, Revolve, the CLI.

1. Searches on chains of L layers, budget twice the least the chain runs in:
   a uniform chain (the CLI's: Linear(256, 256) + Tanh, batch 256, float32,
   20 MB) and a heterogeneous one (widths 64..512 drawn at random, Tanh or
   tanh-GELU, batch 64, float64). For each: the search the planner picked (or
   the one forced), CPU and wall seconds of ``planner.budget``, the peak bytes
   tracemalloc saw while planning (a second run), levels, recompute FLOPs.
2. Gaps: recompute FLOPs of the nested and the long-chain searches against the
   exact one on the chains the exact search solves, and the long-chain search
   against the nested one on a longer chain.
3. Revolve schedules built from the closed form, L up to 8000, 2 slots.
4. ``python -m minigrad plan --depth 100 --width 256 --batch 256 --budget 20MB``
   end to end (a subprocess, wall time).

Run:  python benchmarks/planner_scale.py   (about 4 minutes on 2 busy cores)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import tracemalloc

from _common import ROOT, add_repo_to_path, machine_report, pin_blas_threads, table

pin_blas_threads(1)
add_repo_to_path()

import numpy as np  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad.checkpoint import measure_chain, planner as P, schedules as S  # noqa: E402
from minigrad.models import Block  # noqa: E402
from planner import hetero_chain as hetero_layers  # noqa: E402


def uniform_chain(L):
    mg.manual_seed(0)
    blocks = [Block(256, 256, "tanh") for _ in range(L)]
    x = mg.tensor(np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32))
    return measure_chain(blocks, x)


def hetero_chain(L, seed=0):
    """The measured costs of planner.py's heterogeneous chain, at a batch of 64."""
    return measure_chain(*hetero_layers(L, batch=64, seed=seed))


def timed(costs, budget, **kw):
    """(schedule, cpu s, wall s, peak MB traced in a second run)."""
    wall, cpu = time.perf_counter(), time.process_time()
    sched = P.budget(costs, budget, **kw)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    P.budget(costs, budget, **kw)
    peak = (tracemalloc.get_traced_memory()[1] - base) / 1e6
    tracemalloc.stop()
    return sched, cpu, wall, peak


def row(name, L, costs, budget, **kw):
    sched, cpu, wall, peak = timed(costs, budget, **kw)
    note = sched.note.split("; planned in")[0]
    search = note.split(" search")[0]
    levels = note.split(" levels of")[0].split()[-1]
    return [name, L, search, levels, f"{cpu:.2f}", f"{wall:.2f}", f"{peak:.1f}",
            f"{sched.simulate().recompute_flops / 1e6:,.1f}"], sched


def searches(lengths):
    rows = []
    u = uniform_chain(100)
    rows.append(row("uniform, 20 MB", 100, u, 20_000_000)[0])
    rows.append(row("uniform, 20 MB, exact=True", 100, u, 20_000_000, exact=True)[0])
    for L in lengths:
        c = hetero_chain(L)
        rows.append(row("heterogeneous, 2x minimum", L, c, 2 * P.minimum_budget(c))[0])
    print("searches (budget as stated; CPU and wall seconds of planner.budget; peak MB traced while planning)")
    print(table(["chain", "L", "search", "levels", "CPU s", "wall s", "peak MB", "recompute MFLOP"], rows))


def gaps():
    rows = []
    for L, seeds in ((24, range(4)), (40, range(2)), (100, range(1))):
        for seed in seeds:
            c = hetero_chain(L, seed)
            for frac in (1.5, 2.0, 3.0):
                budget = int(frac * P.minimum_budget(c))
                exact = P.budget(c, budget, exact=True).simulate().recompute_flops
                nested = P.budget(c, budget, exact=False).simulate().recompute_flops
                grouped, _ = P._grouped(c, L // 3)
                long = (P.budget(c, budget, groups=L // 3).simulate().recompute_flops
                        if P.minimum_budget(grouped) <= budget else None)
                ratio = lambda v: "-" if v is None else f"{v / exact:.3f}" if exact else f"{v / 1e6:.1f} MFLOP"  # noqa: E731
                rows.append([L, seed, frac, f"{exact / 1e6:.1f}", ratio(nested),
                             ratio(long) if long is not None else "grouped chain does not fit"])
    print("gaps on chains the exact search solves: recompute FLOPs of each search / the exact search's "
          f"(long-chain search with L/3 groups of 3 layers)")
    print(table(["L", "seed", "budget / minimum", "exact MFLOP", "nested / exact", "long-chain / exact"], rows))
    rows = []
    for L in (200,):
        c = hetero_chain(L)
        for frac in (2.0, 3.0):
            budget = int(frac * P.minimum_budget(c))
            (nested, *_), (long, *_) = timed(c, budget, exact=False), timed(c, budget)
            n_flops, l_flops = nested.simulate().recompute_flops, long.simulate().recompute_flops
            rows.append([L, frac, long.note.split(":")[1].split(",")[0], f"{n_flops / 1e6:.1f}",
                         f"{l_flops / n_flops:.3f}" if n_flops else f"{l_flops / 1e6:.1f} MFLOP"])
    print("long-chain search against the nested search on the whole chain")
    print(table(["L", "budget / minimum", "groups", "nested MFLOP", "long-chain / nested"], rows))


def revolve_rows():
    rows = []
    for L in (1000, 2000, 4000, 8000):
        S._best_split.cache_clear()
        S._repetitions.cache_clear()
        t = time.perf_counter()
        sched = S.revolve(L, 2)
        took = time.perf_counter() - t
        forwards = sum(1 for a in sched.actions if a.kind in ("advance", "record"))
        assert forwards == S.revolve_forwards(L, 2)
        rows.append([L, 2, len(sched.actions), forwards, f"{took:.3f}"])
    print("revolve(L, 2): built from the closed-form split (cold caches), forwards checked against L + t(L, 2)")
    print(table(["L", "slots", "actions", "layer forwards", "seconds"], rows))


def cli_row():
    cmd = [sys.executable, "-m", "minigrad", "plan", "--depth", "100", "--width", "256", "--batch", "256",
           "--budget", "20MB"]
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    took = time.perf_counter() - t
    print(f"$ python -m minigrad plan --depth 100 --width 256 --batch 256 --budget 20MB   ({took:.2f} s end to end)")
    print(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=[40, 100, 300, 1000],
                        help="heterogeneous chain lengths (40 100 300 1000)")
    args = parser.parse_args()
    print("\n".join(machine_report()))
    print()
    searches(args.lengths)
    print()
    gaps()
    print()
    revolve_rows()
    print()
    cli_row()


if __name__ == "__main__":
    main()
