"""The budget planner on a heterogeneous chain, and selective recompute on attention blocks.

1. A chain of 32 blocks Linear + activation whose widths vary (64..512) and
   whose activations differ (Tanh saves its output; tanh-GELU also its input),
   batch 256, float64. For several budgets: which search the planner used
   (exact, or nested for chains too long for the exact tables), its predicted peak, the
   peak measured by the profiler and by tracemalloc (everything the step adds
   besides the parameters and their already-existing gradients, the input
   included), its recompute FLOPs, those of the nested search alone, and the fewest recompute FLOPs of any
   uniform (k segments, sqrt among them), recursive or Revolve schedule that
   fits the same budget in the same model.
2. Four transformer blocks (dim 64, hidden 256, batch 8, 256 tokens, float64)
   checkpointed at block boundaries: no checkpointing, full recompute,
   ``save_matmuls`` (matmul outputs kept, pointwise ops recomputed) and
   ``save_linears`` (only the projections kept; attention's T x T products recomputed): peak
   memory of the step, memory kept between forward and backward, and
   recompute FLOPs (with those of matmuls).

3. The exact search against the nested one (``budget(..., exact=False)``) on
   small random chains: how often the exact search is cheaper, and by how much
   (total forward FLOPs of one step).

Run:  python benchmarks/planner.py
"""
from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc

from _common import add_repo_to_path, machine_report, pin_blas_threads, table

pin_blas_threads(1)
add_repo_to_path()

import numpy as np  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad import models, profiler  # noqa: E402
from minigrad.checkpoint import checkpoint, plan, run_schedule, save_linears, save_matmuls, save_nothing  # noqa: E402
from minigrad.checkpoint import ChainCosts, measure_chain, planner as P  # noqa: E402
from minigrad.checkpoint import schedules as S  # noqa: E402


def hetero_chain(L=32, batch=256, seed=0):
    return models.hetero_chain(L, widths=(64, 128, 256, 512), d_in=64, batch=batch, seed=seed)


def step(layers, x, sched):
    y = run_schedule(layers, x, sched)
    (y * y).sum().backward()
    del y


def planner_table():
    layers, x = hetero_chain()
    costs = measure_chain(layers, x)
    sizes, flops, reserve = costs.sizes, costs.flops, costs.workspace
    L = len(layers)
    lowest = P.minimum_budget(costs)
    step(layers, x, S.none(L))                    # parameter gradients exist from here on
    rivals = [(f"uniform:{k}", S.uniform(L, k)) for k in range(1, L + 1)] + [("recursive", S.recursive(L))] + \
             [(f"revolve:{s}", S.revolve(L, s)) for s in range(1, L + 1)]
    rival_sims = [(name, costs.price(r).simulate()) for name, r in rivals]
    none_peak = costs.price(S.none(L)).simulate().peak_bytes + reserve
    rows = []
    for frac in (1.0, 1.25, 1.5, 2.0, 3.0):
        budget = int(lowest * frac)
        sched = plan(layers, x, "budget", budget=budget)
        sim = sched.simulate()
        x.grad = None
        gc.collect()
        with mg.profile() as prof:
            step(layers, x, sched)
        measured = prof.peak_bytes - prof.start_bytes + sizes[0]
        x.grad = None
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        step(layers, x, sched)
        traced = tracemalloc.get_traced_memory()[1] - base + sizes[0]
        tracemalloc.stop()
        fitting = [(n, s) for n, s in rival_sims if s.peak_bytes <= budget - reserve]
        best = min(fitting, key=lambda t: t[1].recompute_flops) if fitting else None
        nested = P.budget(costs, budget, exact=False).simulate()
        rows.append([f"{budget / 1e6:.2f}", sched.note.split()[0], f"{(sim.peak_bytes + reserve) / 1e6:.2f}",
                     f"{measured / 1e6:.2f}", f"{traced / 1e6:.2f}", f"{sim.recompute_flops / 1e6:.1f}",
                     f"{nested.recompute_flops / 1e6:.1f}",
                     f"{best[1].recompute_flops / 1e6:.1f} ({best[0]})" if best else "none fits",
                     f"{sim.layer_forwards}"])
    print(f"chain of {L} blocks, widths {sorted(set(sizes[1:]))[0] // (8 * 256)}..{max(sizes[1:]) // (8 * 256)}, "
          f"batch 256, float64; forward FLOPs of one pass {sum(flops) / 1e6:.1f} M; "
          f"no checkpointing needs {none_peak / 1e6:.2f} MB; smallest feasible budget {lowest / 1e6:.2f} MB "
          f"(includes {reserve / 1e6:.2f} MB reserved for temporaries inside ops)")
    print(table(["budget MB", "search", "predicted MB", "profiler MB", "tracemalloc MB", "recompute MFLOP",
                 "nested search: MFLOP", "best classic schedule that fits: recompute MFLOP", "layer forwards"], rows))


def attention_table():
    mg.set_default_dtype(np.float64)
    mg.manual_seed(0)
    blocks = [mg.nn.TransformerBlock(64, 256) for _ in range(4)]
    x = mg.tensor(np.random.default_rng(1).standard_normal((8, 256, 64)), requires_grad=True)
    rows = []
    for mode, policy in (("none", None), ("full recompute", save_nothing), ("save_matmuls", save_matmuls),
                         ("save_linears", save_linears)):
        for b in blocks:
            b.zero_grad()
        x.grad = None
        gc.collect()
        with mg.profile() as prof:
            y = x
            for b in blocks:
                y = b(y) if policy is None else checkpoint(b, y, policy=policy)
            kept = profiler.live_bytes() - prof.start_bytes - y.data.nbytes
            (y * y).mean().backward()
            del y
        mm = sum(f for (ph, op), f in prof.op_flops.items() if ph == "recompute" and op in ("MatMul", "Linear"))
        rows.append([mode, f"{(prof.peak_bytes - prof.start_bytes) / 1e6:.2f}", f"{kept / 1e6:.2f}",
                     f"{prof.flops['recompute'] / 1e6:.1f}", f"{mm / 1e6:.1f}",
                     f"{100 * prof.flops['recompute'] / prof.flops['forward']:.1f}%"])
    mg.set_default_dtype(np.float32)
    print("4 transformer blocks (dim 64, hidden 256), batch 8, 256 tokens, float64, checkpointed per block")
    print(table(["policy", "step peak MB", "kept after forward MB", "recompute MFLOP", "of which matmul",
                 "recompute / forward"], rows))


def searches_table(chains=340):
    """Exact against nested search on small random chains (every term of the memory model drawn)."""
    rng = np.random.default_rng(2026)
    cases, cheaper, worst, example = 0, 0, 1.0, None
    for _ in range(chains):
        L = int(rng.integers(1, 9))
        sizes = [int(v) for v in rng.integers(1, 4, L + 1)]
        extras = [0] + [int(v) for v in rng.integers(0, 3, L)]
        flops = [0] + [int(v) for v in rng.integers(1, 10, L)]
        params = [0] + [int(v) for v in rng.integers(0, 2, L)]
        inner = [0] + [int(v) for v in rng.integers(0, 3, L)]
        back = [0] + [sizes[i - 1] + int(rng.integers(0, 3)) for i in range(1, L + 1)]
        persist = bool(rng.integers(0, 2))
        chain = ChainCosts(sizes, flops, extras, params, inner, back, persist=persist)
        lo = P.minimum_budget(chain)
        for budget in (lo, lo + 2, lo + 4, lo + 7):
            exact = P.budget(chain, budget, exact=True).simulate()
            nested = P.budget(chain, budget, exact=False).simulate()
            cases += 1
            total = sum(flops)
            if nested.recompute_flops > exact.recompute_flops:
                cheaper += 1
                ratio = (total + nested.recompute_flops) / (total + exact.recompute_flops)
                if ratio > worst:
                    worst, example = ratio, (L, budget)
    print(f"exact against nested search, {chains} random chains with L = 1..8, 4 budgets each (minimum, +2, +4, +7)")
    print(f"{cases} (chain, budget) cases: the exact search is cheaper in {cheaper}; the nested search's "
          f"forward FLOPs are at most {worst:.3f}x the exact search's (L = {example[0]}, budget {example[1]})")


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    print("\n".join(machine_report()))
    print()
    planner_table()
    print()
    attention_table()
    print()
    searches_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
