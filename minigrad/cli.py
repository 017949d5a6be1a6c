"""``python -m minigrad train | compare | plan``: train a toy MLP, compare checkpointing strategies, plan a budget."""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

import minigrad as mg
from minigrad.checkpoint import checkpoint_sequential, dynamic
from minigrad.checkpoint import planner, schedules
from minigrad.checkpoint.costs import measure_chain
from minigrad.checkpoint.schedules import parse_bytes
from minigrad.errors import MinigradError, ScheduleError
from minigrad.nn import functional as F

STRATEGY_CHOICES = ("none, sqrt, recursive, revolve:S (S slots), budget:BYTES (e.g. budget:2MB), "
                    "dynamic:BYTES[:HEURISTIC] (e.g. dynamic:2MB)")


# --------------------------------------------------------------------------- argument types


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _budget(text):
    try:
        return parse_bytes(text)
    except ScheduleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _strategy(text):
    """'none' | 'sqrt' | 'recursive' | 'revolve:S' | 'budget:BYTES' -> (strategy, options)."""
    name, _, arg = text.partition(":")
    if name in ("none", "sqrt", "recursive") and not arg:
        return name, {}
    if name == "revolve":
        try:
            slots = int(arg) if arg else None
        except ValueError:
            slots = 0
        if slots is not None and slots < 1:
            raise argparse.ArgumentTypeError(f"revolve:S needs a number of slots S >= 1, got {text!r}")
        return name, ({"slots": slots} if slots else {})
    if name == "budget" and arg:
        return name, {"budget": _budget(arg)}
    if name == "dynamic" and arg:
        size, _, heuristic = arg.partition(":")
        return name, {"budget": _budget(size), "heuristic": heuristic or "dtr"}
    raise argparse.ArgumentTypeError(f"invalid checkpoint strategy {text!r}; choose from {STRATEGY_CHOICES}")


# --------------------------------------------------------------------------- models


class Block(mg.nn.Module):
    """Linear then an activation: one layer of the chain that checkpointing sees."""

    def __init__(self, n_in, n_out, act="relu", dtype=None, device=None):
        super().__init__()
        self.linear = mg.nn.Linear(n_in, n_out, dtype=dtype, device=device)
        self.act = act

    def forward(self, x):
        y = self.linear(x)
        return y.relu() if self.act == "relu" else y.tanh()


class MLP(mg.nn.Module):
    """A chain of Blocks and a linear head; ``checkpoint`` chooses how the chain is run."""

    def __init__(self, n_in, width, depth, n_out, act="relu", dtype=None, device=None, checkpoint=("none", {})):
        super().__init__()
        sizes = [n_in] + [width] * depth
        self.blocks = mg.nn.Sequential(*[Block(a, b, act, dtype, device) for a, b in zip(sizes, sizes[1:])])
        self.head = mg.nn.Linear(sizes[-1], n_out, dtype=dtype, device=device)
        self.strategy, self.options = checkpoint

    def forward(self, x):
        if self.strategy in ("none", "dynamic"):      # dynamic: the whole run is one region (see cmd_train)
            h = self.blocks(x)
        else:
            h = checkpoint_sequential(self.blocks, x, strategy=self.strategy, **self.options)
        return self.head(h)


def pick_device(name):
    """'auto' -> cuda when CuPy sees a GPU, else cpu; 'cuda' without one is an error."""
    if name == "auto":
        return "cuda" if mg.cuda_available() else "cpu"
    mg.device(name)        # raises DeviceError with the fix when CUDA is unavailable
    return name


def fmt_bytes(n) -> str:
    """Human-readable bytes (decimal units)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def fmt_flops(n) -> str:
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} FLOP"


def measure_step(model, x, target, loss_fn):
    """Profile one forward+backward whose gradients already exist, so the peak is activation memory.

    Gradients are accumulated into existing ones and then restored, so the
    model is left exactly as it was. Returns the Profile.
    """
    saved = [(p, p.grad) for p in model.parameters()]
    loss = loss_fn(model(x), target)
    loss.backward()                       # make every gradient exist
    del loss
    with mg.profile() as prof:
        loss = loss_fn(model(x), target)
        loss.backward()
        del loss
    for p, g in saved:
        p.grad = g
    return prof


# --------------------------------------------------------------------------- train


def cmd_train(args):
    if args.checkpoint[0] != "dynamic":
        return _train(args, None)
    with dynamic(**args.checkpoint[1]) as region:
        return _train(args, region)


def _train(args, region):
    from tqdm import tqdm  # noqa: PLC0415

    device = pick_device(args.device)
    mg.manual_seed(args.seed)
    make = mg.data.DATASETS[args.dataset]
    X, y = make(args.samples, seed=args.seed) if args.dataset == "spirals" else make(args.samples * 2, seed=args.seed)
    n_classes = int(y.max()) + 1
    # Built on the CPU and then moved, so one seed gives the same initial weights on every device.
    model = MLP(2, args.width, args.depth, n_classes, checkpoint=args.checkpoint).to(device)
    opt = (mg.optim.Adam(model.parameters(), lr=args.lr) if args.optimizer == "adam"
           else mg.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9))
    xs, ys = mg.tensor(X, device=device), mg.tensor(y, device=device)
    rng = np.random.default_rng(args.seed)
    n = len(X)
    batch = min(args.batch, n)
    losses = []
    start = time.perf_counter()
    bar = tqdm(range(args.epochs), desc="train", unit="epoch", disable=args.quiet, file=sys.stderr,
               mininterval=0.2)
    xp = mg.device(device).xp
    for _ in bar:
        # Batches are cut on the device (indices copied over once per epoch), and the loss is
        # summed there too: a step never waits for a copy back to the host.
        order = xp.asarray(rng.permutation(n))
        total = 0.0
        for k in range(0, n, batch):
            idx = order[k:k + batch]
            loss = F.cross_entropy(model(xs[idx]), ys.data[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total = total + loss.data * len(idx)
        losses.append(float(total) / n)
        with mg.no_grad():
            acc = float((model(xs).argmax(axis=1).numpy() == y).mean())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", acc=f"{acc:.3f}")
    elapsed = time.perf_counter() - start
    prof = measure_step(model, xs[:batch], ys.data[:batch], F.cross_entropy)
    peak = prof.peak_bytes - prof.start_bytes
    f = prof.flops
    print(f"accuracy {acc:.4f} | loss {losses[-1]:.4f} | {args.epochs} epochs in {elapsed:.1f} s on {device} | "
          f"checkpoint {args.checkpoint[0]} | peak activation memory {fmt_bytes(peak)} (batch {batch}) | "
          f"FLOPs per step {fmt_flops(prof.total_flops)} (forward {fmt_flops(f['forward'])}, "
          f"backward {fmt_flops(f['backward'])}, recompute {fmt_flops(f['recompute'])})" + (
              "" if region is None else f" | dynamic {fmt_bytes(region.budget)} ({region.heuristic}): "
              f"{region.evictions} evictions, {region.remats} replays, recompute {fmt_flops(region.remat_flops)} "
              f"in all, peak {fmt_bytes(region.peak_bytes)}"))
    if args.plot:
        plot_training(args.plot, model, X, y, losses)
        print(f"wrote {args.plot}")
    return 0


def _pyplot():
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        return plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib, which is not installed: pip install matplotlib "
                         "(or pip install 'minigrad[notebooks]')") from None


def plot_training(path, model, X, y, losses):
    """Decision boundary and loss curve, side by side, as a PNG."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    lo, hi = X.min(0) - 0.3, X.max(0) + 0.3
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.c_[gx.ravel(), gy.ravel()].astype(X.dtype)
    dev = model.head.weight.device
    with mg.no_grad():
        z = model(mg.tensor(grid, device=dev)).argmax(axis=1).numpy().reshape(gx.shape)
    ax1.contourf(gx, gy, z, alpha=0.3, cmap="brg")
    ax1.scatter(X[:, 0], X[:, 1], c=y, s=8, cmap="brg")
    ax1.set_title("decision boundary")
    ax2.plot(losses)
    ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss")
    ax2.set_title("loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- compare


class CountingLayer(mg.nn.Module):
    """Wraps a layer and counts how many times its forward runs."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.layer(x)


def compare_rows(depth, width, batch, strategies, steps=5, dtype=np.float64, seed=0):
    """Measure each strategy on a chain of Linear+Tanh blocks: forwards, recompute, peak, time.

    Returns a list of dicts (one per strategy) and the per-strategy timelines.
    """
    mg.manual_seed(seed)
    blocks = [CountingLayer(Block(width, width, "tanh", dtype=dtype)) for _ in range(depth)]
    x = mg.tensor(np.random.default_rng(seed).standard_normal((batch, width)).astype(dtype), requires_grad=False)
    unit = batch * width * np.dtype(dtype).itemsize

    def loss_fn(out, _):
        return (out * out).mean()

    rows, timelines = [], {}
    chain = mg.nn.Sequential(*blocks)
    for name, opts in strategies:
        model = _ChainModel(chain, name, opts)
        for b in blocks:
            b.calls = 0
        model(x)    # warm-up forward (not counted below)
        prof = measure_step(model, x, None, loss_fn)     # includes one unprofiled step, counted too
        for b in blocks:
            b.calls = 0
        loss = loss_fn(model(x), None)
        loss.backward()
        forwards = sum(b.calls for b in blocks)
        del loss
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = loss_fn(model(x), None)
            loss.backward()
            del loss
            times.append(time.perf_counter() - t0)
        peak = prof.peak_bytes - prof.start_bytes
        f = prof.flops
        rows.append({"strategy": name + (f":{opts.get('slots')}" if "slots" in opts else "")
                     + (f":{fmt_bytes(opts['budget'])}" if "budget" in opts else ""),
                     "forwards": forwards, "recompute_pct": 100.0 * f["recompute"] / max(f["forward"], 1),
                     "peak_bytes": peak, "peak_units": peak / unit, "median_s": statistics.median(times)})
        timelines[rows[-1]["strategy"]] = [b for (_, _, b) in prof.timeline]
        chain.zero_grad()
    base = next((r["median_s"] for r in rows if r["strategy"] == "none"), rows[0]["median_s"])
    for r in rows:
        r["time_ratio"] = r["median_s"] / base
    return rows, timelines


class _ChainModel(mg.nn.Module):
    def __init__(self, chain, strategy, options):
        super().__init__()
        self.chain, self.strategy, self.options = chain, strategy, options

    def forward(self, x):
        if self.strategy == "none":
            return self.chain(x)
        return checkpoint_sequential(self.chain, x, strategy=self.strategy, **self.options)


def format_compare(rows, depth, width, batch, unit_bytes):
    head = (f"chain of {depth} blocks Linear({width},{width})+Tanh, batch {batch}, float64; "
            f"1 unit = one block output = {fmt_bytes(unit_bytes)}")
    cols = ["strategy", "layer forwards", "recompute FLOPs", "peak units", "peak bytes", "time / none"]
    table = [cols] + [[r["strategy"], str(r["forwards"]), f"{r['recompute_pct']:.1f}%", f"{r['peak_units']:.1f}",
                       fmt_bytes(r["peak_bytes"]), f"{r['time_ratio']:.2f}x"] for r in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(cols))]
    lines = [head] + ["  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in
                                enumerate(zip(row, widths))) for row in table]
    return "\n".join(lines)


def cmd_compare(args):
    given = {"slots": args.slots, "budget": args.budget}
    strategies = [(name, e.cli(args.depth, given) if e.cli else {}) for name, e in schedules.REGISTRY.items()]
    strategies = [(name, opts) for name, opts in strategies if opts is not None]
    rows, timelines = compare_rows(args.depth, args.width, args.batch, strategies, steps=args.steps)
    print(format_compare(rows, args.depth, args.width, args.batch, args.batch * args.width * 8))
    if args.plot:
        plot_compare(args.plot, rows, timelines)
        print(f"wrote {args.plot}")
    return 0


def plot_compare(path, rows, timelines):
    """Memory–compute trade-off (left) and live memory over one step per strategy (right)."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in rows:
        ax1.scatter(r["peak_units"], r["forwards"], s=40)
        ax1.annotate(r["strategy"], (r["peak_units"], r["forwards"]), textcoords="offset points", xytext=(5, 3))
    ax1.set_xlabel("peak activation memory (units)")
    ax1.set_ylabel("layer forwards per step")
    ax1.set_title("memory vs compute")
    for name, series in timelines.items():
        base = series[0] if series else 0
        ax2.plot([(b - base) / 1e6 for b in series], label=name, lw=1)
    ax2.set_xlabel("op (forward, then backward)")
    ax2.set_ylabel("live MB above start")
    ax2.set_title("live memory through one step")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- plan


def cmd_plan_graph(args):
    """``plan --model NAME``: the op-level graph plan of an example network next to the baselines."""
    from minigrad.checkpoint import capture, graph_models, graph_solve  # noqa: PLC0415 - loads scipy

    fn, inputs, about = graph_models.MODELS[args.model]()
    g = capture(fn, *inputs)
    plain, (lo, found) = graph_solve.plain_peak(g), graph_solve.minimum_budget(g, args.time_limit)
    low = f"{fmt_bytes(found)}" if lo == found else f"{fmt_bytes(lo)}..{fmt_bytes(found or 0)}"
    print(f"{about}: {len(g)} ops, forward {fmt_flops(g.forward_flops)}; plain step peaks at {fmt_bytes(plain)}, "
          f"the least any plan needs is {low}; budget {fmt_bytes(args.budget)} ({100 * args.budget / plain:.0f}% "
          "of plain). Bytes are what one step adds beyond parameters and inputs.")
    cols = ["method", "peak", "recompute", "of forward", "lower bound", "proven", "seconds"]
    rows, plans = [], {}
    for method in graph_solve.METHODS:
        try:
            p = plans[method] = graph_solve.solve(g, args.budget, method, time_limit=args.time_limit)
        except ScheduleError as exc:
            rows.append([method, "does not fit", "", "", "", "", ""])
            if method == "optimal":
                print(f"optimal: {exc}")
            continue
        s = p.simulate()
        lb = fmt_flops(p.lower_bound) if method in ("optimal", "lp") else "-"
        rows.append([method, fmt_bytes(s.peak_bytes), fmt_flops(s.recompute_flops),
                     f"{100 * s.recompute_flops / g.forward_flops:.1f}%", lb, "yes" if p.optimal else "no",
                     f"{p.solve_seconds:.2f}"])
    widths = [max(len(r[c]) for r in [cols] + rows) for c in range(len(cols))]
    for r in [cols] + rows:
        print("  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(r, widths))))
    best = plans.get("optimal") or plans.get("lp")
    if best is not None:
        print()
        print(best)
        if args.plot:
            from minigrad.checkpoint.graph_plot import plot_plan  # noqa: PLC0415
            print(f"plot: {plot_plan(best, args.plot, f'{args.model}: {best.method} plan')}")
    return 0


def cmd_plan(args):
    if args.model is not None:
        return cmd_plan_graph(args)
    dtype = np.dtype(args.dtype)
    mg.manual_seed(0)
    blocks = [Block(args.width, args.width, "tanh", dtype=dtype) for _ in range(args.depth)]
    x = mg.tensor(np.random.default_rng(0).standard_normal((args.batch, args.width)).astype(dtype))
    costs = measure_chain(blocks, x)
    sizes, flops, reserve = costs.sizes, costs.flops, costs.workspace
    L, unit = args.depth, sizes[1]
    print(f"chain of {L} blocks Linear({args.width},{args.width})+Tanh, batch {args.batch}, {args.dtype}; "
          f"1 unit = one block output = {fmt_bytes(unit)}; budget {fmt_bytes(args.budget)} "
          f"({args.budget / unit:.1f} units) for activations and their gradients "
          "(parameters and their accumulated gradients are outside it)")
    if reserve:
        print(f"reserved for NumPy temporaries inside ops (measured): {fmt_bytes(reserve)}")
    planned = None
    try:
        planned = schedules.make("budget", L, costs=costs, budget=args.budget)
    except ScheduleError as exc:
        print(f"budget: {exc}")
    if planned is not None:
        print()
        print(planned.summary())
        kept = ", ".join(f"x{i}" for i in planned.kept) or "nothing besides the input x0"
        print(f"the forward pass keeps in slots: {kept}; runs of layers are recorded whole where memory allows")
        print(f"planner: {planned.note}")
        if args.timeline:
            print(planned.timeline())
    # a FLOP rate for predicted times: one plain step, timed
    loss_x = mg.tensor(x.data, requires_grad=True)
    elapsed = []
    for _ in range(3):                       # the median of three plain steps
        with mg.profile() as prof:
            t0 = time.perf_counter()
            h = loss_x
            for b in blocks:
                h = b(h)
            (h * h).mean().backward()
            del h
            elapsed.append(time.perf_counter() - t0)
        for b in blocks:
            b.zero_grad()
    rate = prof.total_flops / statistics.median(elapsed)
    fwd, bwd = sum(flops), prof.flops["backward"]
    print()
    cols = ["strategy", "layer forwards", "recompute", "predicted peak", "fits", "largest batch",
            "time/sample there (pred.)"]
    rows = []
    for name in schedules.REGISTRY:
        found = planned if name == "budget" else planner.fit(name, costs, args.budget)
        if found is None:          # show the least memory the strategy can do, marked as not fitting
            least, smallest = planner.least(name, costs)
            sim = smallest.simulate(costs) if smallest is not None else None
            cells = [f"{name} (smallest)", str(sim.layer_forwards) if sim else "-",
                     f"{100.0 * sim.recompute_flops / fwd:.0f}%" if sim else "-", fmt_bytes(least), "no"]
        else:
            sim = found.simulate(costs)
            cells = [schedules.label(found), str(sim.layer_forwards), f"{100.0 * sim.recompute_flops / fwd:.0f}%",
                     fmt_bytes(sim.peak_bytes + reserve), "yes"]
        big = planner.largest_batch(name, costs, args.budget, args.batch)
        per_sample = "-"
        there = planner.fit(name, costs.scaled(big / args.batch), args.budget) if big else None
        if there is not None:
            work = (fwd + bwd) * big / args.batch + there.simulate().recompute_flops
            per_sample = f"{work / rate / big * 1e6:.1f} us ({schedules.label(there)})"
        rows.append(cells + [str(big), per_sample])
    widths = [max(len(r[c]) for r in [cols] + rows) for c in range(len(cols))]
    for r in [cols] + rows:
        print("  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(r, widths))))
    print(f"\npredicted time uses the FLOP rate of one plain step measured here: {rate / 1e9:.2f} GFLOP/s")
    return 0


# --------------------------------------------------------------------------- parser


def _chain_arguments(parser, depth):
    """--depth, --width and --batch of a chain of Linear+Tanh blocks."""
    parser.add_argument("--depth", type=_positive_int, default=depth, help=f"blocks in the chain ({depth})")
    parser.add_argument("--width", type=_positive_int, default=256, help="block width (256)")
    parser.add_argument("--batch", type=_positive_int, default=256, help="batch size (256)")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minigrad",
                                description="minigrad: a small autograd engine that measures where training "
                                            "memory goes and what activation checkpointing buys.")
    sub = p.add_subparsers(dest="command", metavar="{train,compare,plan}")
    sub.required = True

    t = sub.add_parser("train", help="train an MLP on a toy dataset and report accuracy, memory and FLOPs",
                       description="Train an MLP classifier on a 2-D toy dataset (spirals by default) and end "
                                   "with a summary: accuracy, peak activation memory and FLOPs of one step.")
    t.add_argument("--dataset", choices=sorted(mg.data.DATASETS), default="spirals", help="toy dataset (spirals)")
    t.add_argument("--samples", type=_positive_int, default=200, help="points per class (200)")
    t.add_argument("--depth", type=_positive_int, default=3, help="hidden layers (3)")
    t.add_argument("--width", type=_positive_int, default=64, help="units per hidden layer (64)")
    t.add_argument("--batch", type=_positive_int, default=64, help="mini-batch size (64)")
    t.add_argument("--epochs", type=_positive_int, default=150, help="passes over the data (150)")
    t.add_argument("--lr", type=_positive_float, default=0.003, help="learning rate (0.003)")
    t.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="adam (default) or sgd with momentum")
    t.add_argument("--seed", type=int, default=0, help="seed of data, init and shuffling (0)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto picks cuda when CuPy sees a GPU (auto)")
    t.add_argument("--checkpoint", type=_strategy, default=("none", {}), metavar="STRATEGY",
                   help=f"checkpoint the hidden chain: {STRATEGY_CHOICES} (none)")
    t.add_argument("--plot", metavar="PATH", help="save the decision boundary and loss curve as a PNG")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="measure every checkpointing strategy on a deep chain",
                       description="One row per strategy on a chain of Linear+Tanh blocks: layer forwards, "
                                   "recompute FLOPs, peak activation memory (units and bytes), step time "
                                   "relative to no checkpointing.")
    _chain_arguments(c, depth=64)
    c.add_argument("--slots", type=_positive_int, default=None, help="slots for revolve (default: as many as recursive uses)")
    c.add_argument("--steps", type=_positive_int, default=5, help="timed steps per strategy (5)")
    c.add_argument("--budget", type=_budget, default=None, metavar="BYTES",
                   help="also run the budget planner with this budget (e.g. 20MB)")
    c.add_argument("--plot", metavar="PATH", help="save the trade-off and memory timelines as a PNG")
    c.set_defaults(func=cmd_compare)

    pl = sub.add_parser("plan", help="plan checkpointing for a memory budget, and the largest batch that fits",
                        description="Measure a chain of Linear+Tanh blocks, plan the cheapest schedule within "
                                    "the budget, compare it with none/sqrt/recursive/revolve, and find the "
                                    "largest batch that fits the budget under each strategy.")
    _chain_arguments(pl, depth=100)
    pl.add_argument("--budget", type=_budget, required=True, metavar="BYTES",
                    help="memory for the activations of one training step and their gradients "
                         "(e.g. 20MB, 1.5GiB)")
    pl.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="float32 (default)")
    pl.add_argument("--timeline", action="store_true", help="print the planned schedule's whole timeline")
    pl.add_argument("--model", choices=["chain", "residual", "unet", "transformer"], default=None,
                    help="plan an example network's op-level graph instead (optimal MILP, LP, greedy, "
                         "articulation, none)")
    pl.add_argument("--time-limit", type=_positive_float, default=30.0, metavar="SECONDS",
                    help="with --model: time limit of each MILP/LP solve (30)")
    pl.add_argument("--plot", metavar="PATH", help="with --model: save the graph, kept and recomputed ops "
                                                  "coloured, as a PNG")
    pl.set_defaults(func=cmd_plan)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MinigradError as exc:
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
