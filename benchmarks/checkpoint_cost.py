"""What does activation checkpointing cost in time, and what does it save in memory? minigrad next to PyTorch.

What is measured
----------------
A chain of ``--layers`` blocks (default 64), each ``Linear(W, W)`` then
``Tanh`` (W = ``--width``, 256), on a batch of ``--batch`` rows (256), float64.
One step is: forward, loss = mean of squares of the output, backward
(parameter gradients set to None first). The input needs no gradient.

* minigrad, three ways: the blocks called in a plain Python loop (no
  checkpointing); ``checkpoint_sequential(blocks, x, strategy="none")`` (the
  checkpoint executor with nothing dropped: its own overhead); and
  ``strategy="sqrt"`` (ceil(sqrt(L)) = 8 uniform segments for L = 64).
* PyTorch (CPU), when importable: ``nn.Sequential`` of the same blocks, and
  ``torch.utils.checkpoint.checkpoint_sequential(blocks, segments, x,
  use_reentrant=False)`` with as many segments as minigrad's sqrt plan.

Both libraries start from the same weights; before timing, the gradients of
every variant are compared (minigrad's checkpointed gradients must equal its
plain ones bit for bit; PyTorch's must match to float64 rounding).

Time: the variants run interleaved (one step of each per round, the order
rotated every round) after warm-up rounds, BLAS pinned to one thread
(``--threads``) for both libraries; the table gives the median ms per step,
its interquartile range, and the ratio to the same library's plain
(no-checkpoint) step, as a ratio of medians and as the median of per-round
ratios. A forward-only step (recorded, no backward) of each library is timed
in the same rounds to predict the ratio from this machine's own
forward / backward split.

Peak activation memory: one extra, untimed step per variant, with the
parameter gradients already allocated by an earlier step (they accumulate,
so the peak is activations, saved tensors and gradients in flight -- not the
parameter gradients themselves). minigrad: ``mg.profile()``'s ``peak_bytes -
start_bytes`` (the arrays minigrad holds; temporaries inside one NumPy call are
not counted). PyTorch: the CPU allocator's allocation and free events recorded
by ``torch.profiler.profile(profile_memory=True)``, summed in time order; the
peak of that running sum (every tensor PyTorch allocates during the step,
temporaries inside ops included). ``units`` = peak / bytes of one block output
(batch x width x 8).

Run: ``python benchmarks/checkpoint_cost.py`` (``--help`` for the options).
"""
from __future__ import annotations

import argparse
import sys

try:
    import _common as C
except ImportError:          # run as ``python -m benchmarks.checkpoint_cost``
    from benchmarks import _common as C

MIB = 2 ** 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=21, help="timed rounds (one step of each variant per round)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--layers", type=int, default=64, help="blocks in the chain (L)")
    p.add_argument("--width", type=int, default=256, help="features of every Linear")
    p.add_argument("--batch", type=int, default=256, help="rows per batch")
    p.add_argument("--seed", type=int, default=0)
    C.add_pinning_args(p)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.layers < 2:
        p.error("--steps must be >= 1, --warmup >= 0, --layers >= 2")
    return args


# --------------------------------------------------------------------------- the variants


def build_minigrad(args, np, mg):
    """minigrad's blocks, input and step functions: name -> step(zero_grad=True)."""
    from minigrad.checkpoint import checkpoint_sequential  # noqa: PLC0415
    mg.manual_seed(args.seed)
    blocks = [mg.nn.Sequential(mg.nn.Linear(args.width, args.width, dtype=np.float64), mg.nn.Tanh())
              for _ in range(args.layers)]
    params = [p for b in blocks for p in b.parameters()]
    rng = np.random.default_rng(args.seed)
    x = mg.tensor(rng.standard_normal((args.batch, args.width)))

    def loss_of(h):
        return (h * h).mean()

    def plain_forward():
        h = x
        for block in blocks:
            h = block(h)
        return loss_of(h)

    def make(forward, backward=True):
        def step(zero_grad=True):
            if zero_grad:
                for p in params:
                    p.grad = None
            loss = forward()
            if backward:
                loss.backward()
        return step

    steps = {
        "plain": make(plain_forward),
        "none": make(lambda: loss_of(checkpoint_sequential(blocks, x, strategy="none"))),
        "sqrt": make(lambda: loss_of(checkpoint_sequential(blocks, x, strategy="sqrt"))),
        "forward": make(plain_forward, backward=False),
    }
    grads = lambda: [p.grad.data.copy() for p in params]   # noqa: E731
    return blocks, x, steps, grads


def build_torch(args, torch, mg_blocks, x, segments):
    """The same chain in PyTorch, with minigrad's weights: name -> step(zero_grad=True)."""
    from torch.utils.checkpoint import checkpoint_sequential  # noqa: PLC0415
    blocks = []
    for b in mg_blocks:
        lin = torch.nn.Linear(args.width, args.width, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(b[0].weight.data))
            lin.bias.copy_(torch.from_numpy(b[0].bias.data))
        blocks.append(torch.nn.Sequential(lin, torch.nn.Tanh()))
    model = torch.nn.Sequential(*blocks)
    tx = torch.from_numpy(x.data.copy())

    def loss_of(h):
        return (h * h).mean()

    def make(forward, backward=True):
        def step(zero_grad=True):
            if zero_grad:
                model.zero_grad(set_to_none=True)
            loss = forward()
            if backward:
                loss.backward()
        return step

    steps = {
        "plain": make(lambda: loss_of(model(tx))),
        "checkpoint": make(lambda: loss_of(checkpoint_sequential(model, segments, tx, use_reentrant=False))),
        "forward": make(lambda: loss_of(model(tx)), backward=False),
    }
    grads = lambda: [t.grad.numpy().copy() for b in blocks for t in (b[0].weight, b[0].bias)]   # noqa: E731
    return steps, grads


# --------------------------------------------------------------------------- checks and memory


def check_gradients(np, mg_steps, mg_grads, t_steps, t_grads):
    """One step of each variant from the same weights; returns a report line and the names that disagree."""
    mg_steps["plain"]()
    ref = mg_grads()
    bad, parts = [], []
    for name in ("none", "sqrt"):
        mg_steps[name]()
        same = all(np.array_equal(a, b) for a, b in zip(mg_grads(), ref))
        parts.append(f"minigrad {name} == plain bit for bit: {'yes' if same else 'NO'}")
        if not same:
            bad.append(f"minigrad {name}")
    if t_steps is not None:
        def rel(gs):
            return max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300)) for a, b in zip(gs, ref))
        for name in ("plain", "checkpoint"):
            t_steps[name]()
            err = rel(t_grads())
            parts.append(f"PyTorch {name} vs minigrad max rel diff {err:.1e}")
            if err > 1e-9:
                bad.append(f"PyTorch {name}")
    return "check    : gradients after one step: " + "; ".join(parts), bad


def minigrad_peak(mg, step):
    """(peak bytes above the start, FLOPs by phase) of one step with parameter gradients already allocated."""
    step()                                   # make sure every gradient exists
    with mg.profile() as prof:
        step(zero_grad=False)
    return prof.peak_bytes - prof.start_bytes, dict(prof.flops)


def torch_peak(torch, step):
    """Peak bytes above the start of one step, from the profiler's CPU allocation events (None if unavailable)."""
    step()
    try:
        from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415
        with C.quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(zero_grad=False)
        cpu = torch._C._autograd.DeviceType.CPU
        events = [e for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == cpu]
    except (ImportError, AttributeError, RuntimeError):
        return None
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


# --------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    notes, torch = C.start(args, "its rows are")
    import numpy as np  # noqa: PLC0415  (after pinning)
    import minigrad as mg  # noqa: PLC0415
    from minigrad.checkpoint import plan  # noqa: PLC0415

    L = args.layers
    blocks, x, mg_steps, mg_grads = build_minigrad(args, np, mg)
    sched, base = plan(blocks, x, strategy="sqrt"), plan(blocks, x, strategy="none")
    k = sched.params["segments"]
    sim, sim0 = sched.simulate(), base.simulate()
    t_steps = t_grads = None
    if torch is not None:
        t_steps, t_grads = build_torch(args, torch, blocks, x, k)

    print(f"checkpoint_cost: {L} blocks of Linear({args.width}, {args.width}) + Tanh, batch {args.batch}, "
          "float64; step = forward + mean-of-squares loss + backward")
    print("\n".join(C.machine_report(torch, notes)))
    print(f"plan     : {sched.summary()}")
    line, bad = check_gradients(np, mg_steps, mg_grads, t_steps, t_grads)
    print(line)
    if bad:
        print(f"error: {', '.join(bad)} gave different gradients; the timings would compare different math",
              file=sys.stderr)
        return 1

    fns = {f"minigrad {n}": s for n, s in mg_steps.items()}
    if t_steps is not None:
        fns.update({f"torch {n}": s for n, s in t_steps.items()})
    times = C.interleaved(fns, rounds=args.steps, warmup=args.warmup)

    unit = args.batch * args.width * 8
    mem, flops = {}, {}
    for n in ("plain", "none", "sqrt"):
        mem[f"minigrad {n}"], flops[n] = minigrad_peak(mg, mg_steps[n])
    if t_steps is not None:
        for n in ("plain", "checkpoint"):
            mem[f"torch {n}"] = torch_peak(torch, t_steps[n])

    print(f"timing   : {args.steps} interleaved rounds after {args.warmup} warm-up rounds; IQR = 25th-75th "
          "percentile; ratio = median / median of the same library's plain step; paired = median over rounds "
          "of the per-round ratio")
    print(f"memory   : peak above the step's start with parameter gradients already allocated; "
          f"1 unit = one block output = {unit / MIB:.2f} MiB")
    print()
    labels = [("minigrad", "minigrad plain", "plain loop (no checkpoint)"),
              ("minigrad", "minigrad none", 'checkpoint_sequential "none"'),
              ("minigrad", "minigrad sqrt", f'checkpoint_sequential "sqrt" ({k} segments)')]
    if t_steps is not None:
        labels += [("PyTorch (CPU)", "torch plain", "nn.Sequential (no checkpoint)"),
                   ("PyTorch (CPU)", "torch checkpoint", f"checkpoint_sequential, segments={k}, non-reentrant")]
    rows = []
    for lib, key, strategy in labels:
        ts = times[key]
        ref = times[key.split()[0] + " plain"]
        peak = mem.get(key)
        rows.append([lib, strategy, C.ms(C.median(ts)), C.spread(ts), f"{C.median(ts) / C.median(ref):.3f}",
                     f"{C.paired_ratio(ts, ref):.3f}",
                     "n/a" if peak is None else f"{peak / MIB:.1f}",
                     "n/a" if peak is None else f"{peak / unit:.1f}"])
    print(C.table(["library", "strategy", "median ms", "IQR ms", "ratio", "paired", "peak act. MiB", "units"],
                  rows, right=range(2, 8)))
    print()

    # what the ratio should be: FLOPs, and this machine's own forward/backward split
    f = flops["sqrt"]
    flop_model = 1 + f["recompute"] / (f["forward"] + f["backward"])
    med = {key: C.median(ts) for key, ts in times.items()}
    share = sim.recomputed_forwards / L
    print(f"model    : {sched.strategy} re-runs {sim.recomputed_forwards} of {L} block forwards. By FLOPs "
          f"(minigrad's profiler): 1 + recompute / (forward + backward) = {flop_model:.3f} "
          f"(the textbook 1 + {sim.recomputed_forwards}/(3*{L}) = {1 + share / 3:.3f} assumes backward = 2 x forward)")
    pred = 1 + share * med["minigrad forward"] / med["minigrad plain"]
    print(f"model    : minigrad forward-only step {C.ms(med['minigrad forward'])} ms of "
          f"{C.ms(med['minigrad plain'])} ms -> 1 + {sim.recomputed_forwards}/{L} x forward/step = {pred:.3f}")
    if t_steps is not None:
        t_recomputed = (k - 1) * (L // k)    # PyTorch runs the last segment (and the remainder) unchecked
        t_pred = 1 + t_recomputed / L * med["torch forward"] / med["torch plain"]
        print(f"model    : PyTorch forward-only step {C.ms(med['torch forward'])} ms of "
              f"{C.ms(med['torch plain'])} ms -> 1 + {t_recomputed}/{L} x forward/step = {t_pred:.3f}")
    print(f"model    : predicted peak (schedule simulation): none {sim0.peak_units} units, "
          f"{sched.strategy} {sim.peak_units} units")
    print()

    r = med["minigrad sqrt"] / med["minigrad plain"]
    print(f"target   : minigrad sqrt / plain = {r:.3f} <= 1.35: {C.verdict(r <= 1.35)} "
          f"(sqrt / none = {med['minigrad sqrt'] / med['minigrad none']:.3f})")
    if t_steps is not None:
        tr = med["torch checkpoint"] / med["torch plain"]
        print(f"target   : minigrad {r:.3f} < PyTorch checkpoint / plain {tr:.3f}: {C.verdict(r < tr)}")
    else:
        print("target   : comparison with PyTorch not measured (PyTorch skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
