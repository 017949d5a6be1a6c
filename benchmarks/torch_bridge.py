"""minigrad's plans executed in PyTorch against PyTorch's own ``checkpoint_sequential`` (CPU).

Two chains, float32:

1. 64 blocks Linear(256, 256) + Tanh, batch 256 (every activation the same size);
2. a heterogeneous chain of 32 blocks Linear + GELU whose widths cycle through
   256, 1024, 128, 2048, 256, 512, 64, 1024 (activations from 32 KiB to 1 MiB at batch 128).

For each: no checkpointing, ``torch.utils.checkpoint.checkpoint_sequential``
with round(sqrt(L)) uniform segments (reentrant, so every tensor it keeps
passes the saved-tensor hooks), and minigrad's sqrt, revolve and budget plans
run by ``minigrad.torch_bridge``; the budget plans get the predicted peak
of the sqrt plan, then of the revolve plan ("the same memory, the fewest
recompute FLOPs"). Columns: step time
(forward, then backward of sum(y^2) seeded with 2y; median of the rounds,
interquartile range), layer forwards (counted by forward pre-hooks), the
measured peak of bytes held for backward (``Meter``: every tensor saved
through the hooks while the graph holds it, plus the slots and activations
the bridge's executor holds; parameters and gradients not counted), minigrad's
prediction of that peak, its whole memory model's peak (gradients in flight
included: what ``budget=`` bounds) and the recompute FLOPs it predicts.
The input requires grad for every candidate (PyTorch's reentrant checkpoint
computes no parameter gradients otherwise).

Run:  python benchmarks/torch_bridge.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import math
import sys

from _common import add_pinning_args, interleaved, machine_report, median, ms, spread, start, table


def blocks(torch, widths, d0):
    nn = torch.nn
    torch.manual_seed(0)
    act = nn.Tanh if len(set(widths)) == 1 else nn.GELU
    return nn.Sequential(*[nn.Sequential(nn.Linear(a, b), act()) for a, b in zip([d0] + widths[:-1], widths)])


def candidates(torch, tb, chain, x):
    """name -> (run(meter=None) -> output, schedule or None)."""
    from torch.utils.checkpoint import checkpoint_sequential as torch_cs
    L = len(chain)
    k = round(math.sqrt(L))
    costs = tb.measure(chain, x)
    sqrt_plan, revolve_plan = tb.plan(chain, x, "sqrt"), tb.plan(chain, x, "revolve", slots=k)
    plans = {"minigrad sqrt": sqrt_plan, f"minigrad revolve:{k}": revolve_plan}
    for name, rival in (("sqrt", sqrt_plan), (f"revolve:{k}", revolve_plan)):
        limit = tb.predict(rival, costs).peak_bytes          # the same memory, in minigrad's model
        plans[f"minigrad budget={name}'s"] = tb.plan(chain, x, "budget", budget=limit)
    out = {"none (PyTorch)": (lambda meter=None: chain(x), None),
           f"torch checkpoint_sequential({k})": (lambda meter=None: torch_cs(chain, k, x, use_reentrant=True), None)}
    for name, sched in plans.items():
        out[name] = ((lambda s: lambda meter=None: tb.run_schedule(chain, x, s, meter=meter))(sched), sched)
    return out, costs


def measure_once(torch, tb, chain, x, run):
    """(layer forwards, peak bytes held for backward) of one step."""
    calls = [0]
    hooks = [m.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1)) for m in chain]
    meter = tb.Meter(chain)
    try:
        with meter.hooks():
            y = run(meter)
            y.backward(2 * y.detach())
    finally:
        for h in hooks:
            h.remove()
    del y
    chain.zero_grad(set_to_none=True)
    return calls[0], meter.peak


def bench(torch, tb, title, chain, x, rounds, warmup):
    runs, costs = candidates(torch, tb, chain, x)

    def step(run):
        def go():
            y = run()
            y.backward(2 * y.detach())
            chain.zero_grad(set_to_none=True)
        return go

    times = interleaved({name: step(run) for name, (run, _) in runs.items()}, rounds, warmup)
    base = median(times["none (PyTorch)"])
    rows = []
    for name, (run, sched) in runs.items():
        forwards, peak = measure_once(torch, tb, chain, x, run)
        pred = tb.predict(sched, costs) if sched is not None else None
        rows.append([name, ms(median(times[name])), spread(times[name]), f"{median(times[name]) / base:.2f}",
                     forwards, f"{peak / 2**20:.2f}",
                     f"{pred.saved_peak_bytes / 2**20:.2f}" if pred else "-",
                     f"{pred.peak_bytes / 2**20:.2f}" if pred else "-",
                     f"{pred.recompute_flops / 1e6:.0f}" if pred else "-"])
    flops = sum(costs.flops) / 1e6
    print(f"\n{title}: {len(chain)} layers, forward {flops:.0f} MFLOP, activations "
          f"{min(costs.sizes) / 2**10:.0f}..{max(costs.sizes) / 2**10:.0f} KiB")
    print(table(["candidate", "step ms", "IQR ms", "vs none", "layer forwards", "held MiB (measured)",
                 "held MiB (predicted)", "model peak MiB (predicted)", "recompute MFLOP (predicted)"], rows))


def main(argv=None):
    p = add_pinning_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args(argv)
    notes, torch = start(args, "everything")
    if torch is None:
        sys.exit("this benchmark needs PyTorch: pip install 'minigrad[torch]'")
    import minigrad.torch_bridge as tb  # noqa: PLC0415
    print("\n".join(machine_report(torch, notes)))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 256, generator=g).requires_grad_(True)
    bench(torch, tb, "uniform chain: 64 x (Linear(256, 256) + Tanh), batch 256, float32",
          blocks(torch, [256] * 64, 256), x, args.rounds, args.warmup)
    widths = [256, 1024, 128, 2048, 256, 512, 64, 1024] * 4
    bench(torch, tb, "heterogeneous chain: 32 x (Linear + GELU), widths 64..2048, batch 128, float32",
          blocks(torch, widths, 256), torch.randn(128, 256, generator=g).requires_grad_(True), args.rounds, args.warmup)


if __name__ == "__main__":
    main()
