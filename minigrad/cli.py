"""``python -m minigrad train | compare | plan``: train a classifier, compare checkpointing strategies, plan a budget.

This module parses arguments and prints; the models live in ``minigrad.models``
and the plans in ``minigrad.checkpoint``. Every failure is one line on stderr
and exit code 2; Ctrl-C is "interrupted" and exit code 130.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import minigrad as mg
from minigrad.checkpoint import checkpoint_sequential, dynamic, plan as make_plan
from minigrad.checkpoint.dynamic import HEURISTICS as DYNAMIC_HEURISTICS
from minigrad.checkpoint import planner, schedules
from minigrad.checkpoint.costs import measure_chain
from minigrad.checkpoint.schedules import parse_bytes
from minigrad.errors import MinigradError, ScheduleError
from minigrad.blas import blas_threads
from minigrad.models import Block, Classifier
from minigrad.nn import functional as F

STRATEGY_CHOICES = ("none, sqrt, sqrt:K (K segments), recursive, revolve, revolve:S (S slots), "
                    "budget:BYTES (e.g. budget:2MB), dynamic:BYTES[:HEURISTIC] (e.g. dynamic:2MB, dynamic:2MB:lru)")
# strategy -> the option it takes after ':' (none and recursive take none)
STRATEGY_OPTIONS = {"sqrt": "segments", "revolve": "slots", "budget": "budget"}
PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
DTYPES = ("float32", "float64")


class CLIError(Exception):
    """A failure of the command line itself (a path that cannot be written, a missing extra)."""


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


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed from 0 to 2**32 - 1, got {text!r}") from None
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer seed from 0 to 2**32 - 1, got {v}")
    return v


def _fraction(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 0.9, got {text!r}") from None
    if not 0 <= v <= 0.9:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 0.9, got {text!r}")
    return v


def _budget(text):
    try:
        return parse_bytes(text)
    except ScheduleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _strategy(text):
    """'none' | 'sqrt[:K]' | 'recursive' | 'revolve[:S]' | 'budget:BYTES' -> (strategy, options).

    The option may also be named: 'sqrt:segments=8', 'revolve:slots=4', 'budget:budget=2MB';
    an option that belongs to another strategy ('sqrt:slots=3') is refused, not ignored.
    """
    name, colon, arg = text.partition(":")
    if name == "dynamic":
        return name, _dynamic_options(text, arg)
    if name not in schedules.STRATEGIES:
        raise argparse.ArgumentTypeError(f"invalid checkpoint strategy {text!r}; choose from {STRATEGY_CHOICES}")
    option = STRATEGY_OPTIONS.get(name)
    if not colon:
        if name == "budget":
            raise argparse.ArgumentTypeError(f"budget needs a size: budget:BYTES (e.g. budget:2MB), got {text!r}")
        return name, {}
    if option is None:
        raise argparse.ArgumentTypeError(f"{name} takes no options, got {text!r}; choose from {STRATEGY_CHOICES}")
    key, eq, value = arg.partition("=")
    if not eq:
        key, value = option, arg
    if key != option:
        raise argparse.ArgumentTypeError(f"{name} takes {option}=, not {key}= (in {text!r}); "
                                         f"choose from {STRATEGY_CHOICES}")
    if option == "budget":
        return name, {"budget": _budget(value)}
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        letter = "S" if option == "slots" else "K"
        raise argparse.ArgumentTypeError(f"{name}:{letter} needs {option} {letter} >= 1, got {text!r}")
    return name, {option: number}


def _dynamic_options(text, arg):
    """'dynamic:BYTES[:HEURISTIC]' -> dynamic()'s options, checked before any work."""
    size, _, heuristic = arg.partition(":")
    if not size:
        raise argparse.ArgumentTypeError(f"dynamic needs a size: dynamic:BYTES[:HEURISTIC] (e.g. dynamic:2MB), "
                                         f"got {text!r}")
    heuristic = heuristic or "dtr"
    if heuristic not in DYNAMIC_HEURISTICS:
        raise argparse.ArgumentTypeError(f"unknown heuristic {heuristic!r} in {text!r}; choose from "
                                         f"{', '.join(DYNAMIC_HEURISTICS)}")
    return {"budget": _budget(size), "heuristic": heuristic}


def _plot_path(text):
    """Where a plot goes, checked before any work: a writable folder, a file name, a format matplotlib writes."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name, e.g. {str(path / 'plot.png')!r}")
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower() not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(f"cannot write a plot as {path.suffix!r} ({text!r}); "
                                         f"use one of {', '.join(PLOT_FORMATS)}")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {str(path)!r}: permission denied")
    return str(path)


# --------------------------------------------------------------------------- output


def pick_device(name):
    """'auto' -> cuda when CuPy sees a GPU, else cpu; 'cuda' without one is an error."""
    if name == "auto":
        return "cuda" if mg.cuda_available() else "cpu"
    mg.device(name)        # raises DeviceError with the fix when CUDA is unavailable
    return name


def fmt_bytes(n, exact=False) -> str:
    """Memory in MB (decimal) everywhere, with the digits that matter; in bytes when ``exact``."""
    if exact:
        return f"{int(n):,} B"
    mb = n / 1e6
    return f"{mb:.{2 if abs(mb) >= 1 else 3 if abs(mb) >= 0.01 else 4}f} MB"


def fmt_flops(n) -> str:
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} FLOP"


def plural(n, word) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _LogLines:
    """A log (not a terminal) as tqdm's output: each refresh is a line of its own, not a carriage return."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self):
        self.stream.flush()


class _Silent:
    """What ``progress`` returns when disabled: the same calls, no output."""

    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass

    def set_description_str(self, text, refresh=True):
        pass

    def close(self):
        pass


@functools.lru_cache(maxsize=None)
def _bar_class():
    from tqdm import tqdm  # noqa: PLC0415

    class Bar(tqdm):
        # tqdm's monitor thread (started by the first bar, even a disabled one, and left running) wakes
        # every 10 s; minigrad's bars refresh themselves, so they never start it.
        monitor_interval = 0

    return Bar


def progress(iterable=None, total=None, desc="", unit="it", enabled=True, delay=1.0):
    """A progress bar on stderr, shown once ``delay`` seconds have passed.

    On a terminal it redraws in place; in a log it writes a plain line at most
    every 10 s. Use it as a context manager so it is closed on any exit.
    """
    if not enabled:
        return _Silent(iterable)
    tty = sys.stderr.isatty()
    return _bar_class()(iterable, total=total, desc=desc, unit=unit, delay=delay, leave=False,
                        file=sys.stderr if tty else _LogLines(sys.stderr), ascii=not tty,
                        mininterval=0.2 if tty else 10.0, maxinterval=10.0 if tty else 60.0, dynamic_ncols=tty)


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
    """Train; under ``dynamic:BYTES`` the whole run is one dynamic-rematerialization region."""
    if args.graph and args.checkpoint[0] == "dynamic":
        raise CLIError("--graph cannot capture dynamic rematerialisation: it decides evictions on the host from "
                       "the memory each step measures, which a CUDA graph would freeze; use a static strategy "
                       "(e.g. --checkpoint sqrt or budget:BYTES) with --graph, or drop --graph")
    if args.checkpoint[0] != "dynamic":
        return _train(args, None)
    with dynamic(**args.checkpoint[1]) as region:
        return _train(args, region)


def _split(n, fraction, seed):
    """Indices of the training and held-out points: a seeded shuffle, the last ``fraction`` held out."""
    order = np.random.default_rng(seed).permutation(n)
    held = int(round(n * fraction))
    return np.sort(order[:n - held]), np.sort(order[n - held:])


def _accuracy(model, xs, y):
    """Fraction of ``xs`` classified as ``y``, under no_grad (nothing saved, so nothing to checkpoint)."""
    if len(y) == 0:
        return float("nan")
    with mg.no_grad():
        return float((model(xs).argmax(axis=1).numpy() == y).mean())


def chain_needs(model, x):
    """(least, without checkpointing, NumPy temporaries): the budget planner's bytes for the model's chain at x."""
    with mg.no_grad():
        h = model.chain_input(x)
    c = measure_chain(model.blocks, h)
    least = planner.minimum_budget(c)              # the op-temporary reserve included
    plain = c.price(schedules.none(len(model.blocks))).simulate().peak_bytes
    return least, plain + c.workspace, c.workspace


def describe_plan(model, x, checkpoint, needs=None, exact=False):
    """Lines naming the strategy, its parameters and what it costs per step on the model's chain."""
    strategy, options = checkpoint
    L = len(model.blocks)
    if strategy == "dynamic":            # no plan: evictions are decided while the step runs
        return (f"checkpoint dynamic (budget {fmt_bytes(options['budget'], exact)}, heuristic {options['heuristic']}): "
                f"the {L} blocks run eagerly; the cap counts every array the step holds (gradients in flight "
                f"included); saved arrays are evicted under it and recomputed on demand")
    with mg.no_grad():
        h = model.chain_input(x)
    sim = make_plan(model.blocks, h, strategy, **options).simulate()
    params = ", ".join(f"{k} {fmt_bytes(v, exact)}" if k == "budget" else f"{k} {v}" for k, v in options.items())
    kept = ("every block keeps what its backward needs" if strategy == "none" else
            f"at most {plural(sim.peak_slots, 'checkpoint')} (block outputs, the chain's input counted) kept")
    lines = [f"checkpoint {strategy}{f' ({params})' if params else ''}: {sim.layer_forwards} block forwards per "
             f"step ({L} without checkpointing); {kept}"]
    if needs is not None:
        least, plain, workspace = needs
        lines.append(f"budget accounting for this chain at batch {x.shape[0]}: at least {fmt_bytes(least, exact)}, "
                     f"{fmt_bytes(plain, exact)} without checkpointing; more than the peak measured below because "
                     f"it adds NumPy's temporaries inside ops ({fmt_bytes(workspace, exact)}) and is an upper bound "
                     "(a reversed block's arrays are held until its backward ends)")
    return "\n".join(lines)


def _check_budget(checkpoint, needs, batch, exact=False):
    """Refuse, before training, a budget below what the chain needs at this batch."""
    if needs is not None and checkpoint[1]["budget"] < needs[0]:
        raise CLIError(f"--checkpoint budget:{fmt_bytes(checkpoint[1]['budget'], exact)} is below the least this "
                       f"chain needs at batch {batch}: {fmt_bytes(needs[0], exact)} (its activations, their "
                       "gradients and NumPy temporaries); raise the budget, or lower --batch or --width")


def _train(args, region):
    device = pick_device(args.device)
    if args.graph and device != "cuda":
        raise CLIError(f"--graph captures the training step as a CUDA graph and needs --device cuda (the device "
                       f"is {device}); drop --graph on the CPU")
    if args.plot:
        _pyplot()                        # a missing matplotlib is found before training, not after
    dtype = np.dtype(args.dtype)
    mg.manual_seed(args.seed)
    make = mg.data.DATASETS[args.dataset]
    X, y = make(args.samples, seed=args.seed) if args.dataset == "spirals" else make(args.samples * 2, seed=args.seed)
    X = X.astype(dtype)
    n_classes = int(y.max()) + 1
    train_idx, test_idx = _split(len(X), args.holdout, args.seed)
    # Built on the CPU and then moved, so one seed gives the same initial weights on every device.
    model = Classifier(2, args.width, args.depth, n_classes, checkpoint=args.checkpoint, dtype=dtype).to(device)
    opt = (mg.optim.Adam(model.parameters(), lr=args.lr) if args.optimizer == "adam"
           else mg.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9))
    xs, ys = mg.tensor(X[train_idx], device=device), mg.tensor(y[train_idx], device=device)
    xt = mg.tensor(X[test_idx], device=device)
    y_train, y_test = y[train_idx], y[test_idx]
    n = len(train_idx)
    batch = min(args.batch, n)
    needs = chain_needs(model, xs[:batch]) if args.checkpoint[0] == "budget" else None
    _check_budget(args.checkpoint, needs, batch, args.bytes)
    rng = np.random.default_rng(args.seed)
    xp = mg.device(device).xp
    losses = []

    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    graphs = {}      # --graph: one captured step per batch size (the last batch may be shorter)
    start = time.perf_counter()
    with progress(range(args.epochs), desc="train", unit="epoch", enabled=not args.quiet, delay=0) as bar:
        for _ in bar:
            # Batches are cut on the device (indices copied over once per epoch), and the loss is
            # summed there too: a step never waits for a copy back to the host.
            order = xp.asarray(rng.permutation(n))
            total = 0.0
            for k in range(0, n, batch):
                idx = order[k:k + batch]
                if args.graph and len(idx) not in graphs:
                    graphs[len(idx)] = mg.cuda_graph(step)
                loss = graphs.get(len(idx), step)(xs[idx], ys.data[idx])
                total = total + loss.data * len(idx)
            losses.append(float(total) / n)
            bar.set_postfix_str(f"loss {losses[-1]:.4f}", refresh=False)     # shown at the bar's own pace
    elapsed = time.perf_counter() - start
    acc_train, acc_test = _accuracy(model, xs, y_train), _accuracy(model, xt, y_test)
    prof = measure_step(model, xs[:batch], ys.data[:batch], F.cross_entropy)
    peak = prof.peak_bytes - prof.start_bytes
    f = prof.flops
    held = f"held-out accuracy {acc_test:.4f} ({plural(len(y_test), 'point')})" if len(y_test) else "no held-out points"
    graph = (f", steps replayed from {plural(len(graphs), 'CUDA graph')}" if args.graph else "")
    print(f"training accuracy {acc_train:.4f} ({plural(n, 'point')}) | {held} | loss {losses[-1]:.4f} | "
          f"{plural(args.epochs, 'epoch')} in {elapsed:.1f} s on {device}, {args.dtype}{graph}")
    print(f"model: {args.depth} residual blocks of width {args.width} "
          f"(x + Linear(relu(LayerNorm(x))), branch scaled by 1/sqrt(depth))")
    print(describe_plan(model, xs[:batch], args.checkpoint, needs, args.bytes))
    print(f"peak activation memory {fmt_bytes(peak, args.bytes)} (one step, batch {batch}) | FLOPs per step "
          f"{fmt_flops(prof.total_flops)} (forward {fmt_flops(f['forward'])}, backward {fmt_flops(f['backward'])}, "
          f"recompute {fmt_flops(f['recompute'])})")
    if region is not None:
        print(f"dynamic region: budget {fmt_bytes(region.budget, args.bytes)}, heuristic {region.heuristic}: "
              f"{region.evictions} evictions, {region.remats} replays, recompute {fmt_flops(region.remat_flops)} "
              f"over the whole run, {region.fast_steps} steps fast (no eviction needed); the region's own peak "
              f"{fmt_bytes(region.peak_bytes, args.bytes)} (what its cap counts)")
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
        raise CLIError('--plot needs matplotlib, which is not installed: python -m pip install matplotlib '
                       '(or, from the repository, python -m pip install ".[notebooks]")') from None


def _save(fig, path):
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise CLIError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def plot_training(path, model, X, y, losses):
    """Decision boundary and loss curve, side by side."""
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
    try:
        _save(fig, path)
    finally:
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


def _synchronize(device):
    """Wait for the device's queued work, so a clock read after it measures the work."""
    if device != "cpu":
        mg.device(device).xp.cuda.Device().synchronize()


def compare_rows(depth, width, batch, strategies, repeats=7, dtype=np.float32, seed=0, device="cpu", bar=None):
    """Measure each strategy on a chain of Linear+Tanh blocks: forwards, recompute, peak, time.

    Forwards, FLOPs and the peak come from one profiled step per strategy. Times
    come from ``repeats`` rounds that run every strategy once, in an order
    rotated each round, so drift in the machine's speed (other work, clocks)
    falls on all strategies alike; each round's time is also divided by that
    round's ``none`` step, and the ratio's median and range are reported.
    ``bar`` (optional) is advanced once per step run. Returns the rows (dicts)
    and the per-strategy memory timelines.
    """
    bar = bar or _Silent()
    mg.manual_seed(seed)
    blocks = [CountingLayer(Block(width, width, "tanh", dtype=dtype)).to(device) for _ in range(depth)]
    x = mg.tensor(np.random.default_rng(seed).standard_normal((batch, width)).astype(dtype), device=device)
    unit = batch * width * np.dtype(dtype).itemsize

    def step(model):
        loss = (lambda out: (out * out).mean())(model(x))
        loss.backward()

    chain = mg.nn.Sequential(*blocks)
    models = [_ChainModel(chain, name, opts) for name, opts in strategies]
    step(models[0])                 # every parameter gradient exists from here on: the peaks are activations
    rows, timelines = [], {}
    for model, (name, opts) in zip(models, strategies):
        model(x)                    # plans (the budget planner measures the chain) outside the profile
        for b in blocks:
            b.calls = 0
        with mg.profile() as prof:
            step(model)
        bar.update()
        peak = prof.peak_bytes - prof.start_bytes
        f = prof.flops
        label = name + "".join(f":{fmt_bytes(v).replace(' ', '') if k == 'budget' else v}" for k, v in opts.items())
        rows.append({"strategy": label, "forwards": sum(b.calls for b in blocks),
                     "recompute_pct": 100.0 * f["recompute"] / max(f["forward"], 1),
                     "peak_bytes": peak, "peak_units": peak / unit, "times": []})
        timelines[label] = [b for (_, _, b) in prof.timeline]
    for r in range(repeats):
        for i in [(k + r) % len(models) for k in range(len(models))]:
            _synchronize(device)
            t0 = time.perf_counter()
            step(models[i])
            _synchronize(device)
            rows[i]["times"].append(time.perf_counter() - t0)
            bar.update()
    base = next((r for r in rows if r["strategy"] == "none"), rows[0])["times"]
    for r in rows:
        ratios = [t / b for t, b in zip(r["times"], base)]
        r["median_s"] = statistics.median(r["times"])
        r["time_ratio"], r["ratio_range"] = statistics.median(ratios), (min(ratios), max(ratios))
    chain.zero_grad()
    return rows, timelines


class _ChainModel(mg.nn.Module):
    def __init__(self, chain, strategy, options):
        super().__init__()
        self.chain, self.strategy, self.options = chain, strategy, options

    def forward(self, x):
        if self.strategy == "none":
            return self.chain(x)
        return checkpoint_sequential(self.chain, x, strategy=self.strategy, **self.options)


def format_compare(rows, depth, width, batch, unit_bytes, dtype="float32", device="cpu", repeats=None,
                   exact=False):
    head = (f"chain of {depth} blocks Linear({width},{width})+Tanh, batch {batch}, {dtype} on {device}; "
            f"1 unit = one block output = {fmt_bytes(unit_bytes, exact)}")
    cols = ["strategy", "layer forwards", "recompute FLOPs (% of forward)", "peak units", "peak memory",
            "step ms (median)", "time / none (min-max)"]
    table = [cols] + [[r["strategy"], str(r["forwards"]), f"{r['recompute_pct']:.1f}%", f"{r['peak_units']:.1f}",
                       fmt_bytes(r["peak_bytes"], exact), f"{r['median_s'] * 1e3:.1f}",
                       f"{r['time_ratio']:.2f}x ({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})"]
                      for r in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(cols))]
    lines = [head] + ["  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in
                                enumerate(zip(row, widths))) for row in table]
    if repeats:
        lines.append(f"times: {repeats} rounds, each running every strategy once in a rotated order; "
                     "time / none is the median of each round's ratio, with its range")
    return "\n".join(lines)


def cmd_compare(args):
    device = pick_device(args.device)
    if args.plot:
        _pyplot()
    given = {"slots": args.slots, "budget": args.budget}
    strategies = [(name, e.cli(args.depth, given) if e.cli else {}) for name, e in schedules.REGISTRY.items()]
    strategies = [(name, opts) for name, opts in strategies if opts is not None]
    dtype = np.dtype(args.dtype)
    with blas_threads(args.threads), progress(total=len(strategies) * (1 + args.repeats), desc="compare",
                                              unit="step", enabled=not args.quiet) as bar:
        rows, timelines = compare_rows(args.depth, args.width, args.batch, strategies, repeats=args.repeats,
                                       dtype=dtype, device=device, bar=bar)
    print(format_compare(rows, args.depth, args.width, args.batch, args.batch * args.width * dtype.itemsize,
                         args.dtype, device, args.repeats, args.bytes))
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
    try:
        _save(fig, path)
    finally:
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


def _mb_text(text, exact=False):
    """A planner message with its byte counts ("4,512 bytes") written as the rest of the output writes them."""
    if exact:
        return text
    return re.sub(r"(\d[\d,]*) bytes", lambda m: fmt_bytes(int(m.group(1).replace(",", ""))), text)


BATCH_SEARCH_LIMIT = (1 << 24) - 1     # _largest_batch stops doubling here


def cmd_plan(args):
    if args.model is not None:
        return cmd_plan_graph(args)
    device = pick_device(args.device)
    dtype = np.dtype(args.dtype)
    exact = args.bytes
    mg.manual_seed(0)
    blocks = [Block(args.width, args.width, "tanh", dtype=dtype).to(device) for _ in range(args.depth)]
    x = mg.tensor(np.random.default_rng(0).standard_normal((args.batch, args.width)).astype(dtype), device=device)
    names = list(schedules.REGISTRY)
    bar = progress(total=3 + len(names), desc="plan", unit="task", enabled=not args.quiet)
    with blas_threads(args.threads), bar:
        bar.set_description_str("plan: measuring the chain", refresh=False)
        costs = measure_chain(blocks, x)
        bar.update()
        flops, reserve = costs.flops, costs.workspace
        L, unit = args.depth, costs.sizes[1]
        least = planner.minimum_budget(costs)
        if args.budget < least:
            raise CLIError(f"a budget of {fmt_bytes(args.budget, exact)} is below the least this chain needs: "
                           f"{fmt_bytes(least, exact)} ({least / unit:.1f} units of {fmt_bytes(unit, exact)}, "
                           "NumPy temporaries included); raise --budget, or lower --batch or --width")
        print(f"chain of {L} blocks Linear({args.width},{args.width})+Tanh, batch {args.batch}, {args.dtype} on "
              f"{device}; 1 unit = one block output = {fmt_bytes(unit, exact)}; budget {fmt_bytes(args.budget, exact)} "
              f"({args.budget / unit:.1f} units) for activations, their gradients and NumPy temporaries inside ops "
              f"({fmt_bytes(reserve, exact)}, measured); parameters and their accumulated gradients are outside it")
        bar.set_description_str("plan: searching schedules", refresh=False)
        # the same search plan(layers, x, "budget") runs, on the costs measured above
        planned = schedules.make("budget", L, costs=costs, budget=args.budget)
        bar.update()
        sim = planned.simulate()
        print()
        print(f"planned: {sim.layer_forwards} layer forwards ({sim.recomputed_forwards} recomputed), peak "
              f"{sim.peak_units} units, {plural(sim.peak_slots, 'slot')}; predicted peak "
              f"{fmt_bytes(sim.peak_bytes + reserve, exact)} (temporaries included), "
              f"recompute {fmt_flops(sim.recompute_flops)}")
        kept = ", ".join(f"x{i}" for i in planned.kept) or "nothing besides the input x0"
        print(f"the forward pass keeps in slots: {kept}; runs of layers are recorded whole where memory allows")
        print(f"planner: {_mb_text(planned.note, exact)}")
        if args.timeline:
            print(planned.timeline())
        # a FLOP rate for predicted times: one plain step, timed
        bar.set_description_str("plan: timing a plain step", refresh=False)
        loss_x = mg.tensor(x.data, requires_grad=True)
        elapsed = []
        for _ in range(3):                       # the median of three plain steps
            with mg.profile() as prof:
                _synchronize(device)
                t0 = time.perf_counter()
                h = loss_x
                for b in blocks:
                    h = b(h)
                (h * h).mean().backward()
                del h
                _synchronize(device)
                elapsed.append(time.perf_counter() - t0)
            for b in blocks:
                b.zero_grad()
        bar.update()
        rate = prof.total_flops / statistics.median(elapsed)
        fwd, bwd = sum(flops), prof.flops["backward"]
        cols = ["strategy", "layer forwards", "recompute (% of forward FLOPs)", "predicted peak", "fits",
                "largest batch", "time/sample there (pred.)"]
        rows = []
        for name in names:
            bar.set_description_str(f"plan: {name}, the largest batch", refresh=False)
            found = planned if name == "budget" else planner.fit(name, costs, args.budget)
            if found is None:          # show the least memory the strategy can do, marked as not fitting
                smallest_bytes, smallest = planner.least(name, costs)
                s = smallest.simulate(costs) if smallest is not None else None
                cells = [f"{name} (smallest)", str(s.layer_forwards) if s else "-",
                         f"{100.0 * s.recompute_flops / fwd:.0f}%" if s else "-", fmt_bytes(smallest_bytes, exact),
                         "no"]
            else:
                s = found.simulate(costs)
                cells = [schedules.label(found), str(s.layer_forwards), f"{100.0 * s.recompute_flops / fwd:.0f}%",
                         fmt_bytes(s.peak_bytes + reserve, exact), "yes"]
            big = planner.largest_batch(name, costs, args.budget, args.batch)
            per_sample = "-"
            there = planner.fit(name, costs.scaled(big / args.batch), args.budget) if big else None
            if there is not None:
                work = (fwd + bwd) * big / args.batch + there.simulate().recompute_flops
                per_sample = f"{work / rate / big * 1e6:.1f} us ({schedules.label(there)})"
            shown = f"over {BATCH_SEARCH_LIMIT:,} (search limit)" if big >= BATCH_SEARCH_LIMIT else f"{big:,}"
            rows.append(cells + [shown, per_sample])
            bar.update()
    print()
    widths = [max(len(r[c]) for r in [cols] + rows) for c in range(len(cols))]
    for r in [cols] + rows:
        print("  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(r, widths))))
    print(f"\npredicted time uses the FLOP rate of one plain step measured here: {rate / 1e9:.2f} GFLOP/s")
    return 0


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage is one --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _chain_arguments(parser, depth, width, batch):
    """--depth, --width, --batch, --dtype and --device of a chain of Linear+Tanh blocks."""
    parser.add_argument("--depth", type=_positive_int, default=depth, help=f"blocks in the chain ({depth})")
    parser.add_argument("--width", type=_positive_int, default=width, help=f"block width ({width})")
    parser.add_argument("--batch", type=_positive_int, default=batch, help=f"batch size ({batch})")
    _common_arguments(parser)


def _common_arguments(parser):
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="float32 (default) or float64")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto picks cuda when CuPy sees a GPU (auto)")
    parser.add_argument("--bytes", action="store_true", help="memory in exact bytes instead of MB")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def _threads_argument(parser):
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="BLAS threads for the measured steps (1: steady times on a small shared machine)")


def build_parser():
    p = _Parser(prog="python -m minigrad",
                description="minigrad: a small autograd engine that measures where training memory goes and "
                            "what activation checkpointing buys.")
    p.add_argument("--version", action="version", version=f"minigrad {mg.__version__}")
    sub = p.add_subparsers(dest="command", metavar="{train,compare,plan}")
    sub.required = True

    t = sub.add_parser("train", help="train a residual classifier on a toy dataset; accuracy, memory, FLOPs",
                       description="Train a classifier of residual blocks on a 2-D toy dataset (spirals by "
                                   "default), holding out a share of the points, and end with a summary: "
                                   "training and held-out accuracy, the checkpointing plan, peak activation "
                                   "memory and FLOPs of one step.")
    t.add_argument("--dataset", choices=sorted(mg.data.DATASETS), default="spirals", help="toy dataset (spirals)")
    t.add_argument("--samples", type=_positive_int, default=200, help="points per class (200)")
    t.add_argument("--holdout", type=_fraction, default=0.2, help="share of the points held out (0.2)")
    t.add_argument("--depth", type=_positive_int, default=3, help="residual blocks (3)")
    t.add_argument("--width", type=_positive_int, default=64, help="units per block (64)")
    t.add_argument("--batch", type=_positive_int, default=64, help="mini-batch size (64)")
    t.add_argument("--epochs", type=_positive_int, default=150, help="passes over the data (150)")
    t.add_argument("--lr", type=_positive_float, default=0.003, help="learning rate (0.003)")
    t.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="adam (default) or sgd with momentum")
    t.add_argument("--seed", type=_seed, default=0, help="seed of data, split, init and shuffling (0)")
    t.add_argument("--checkpoint", type=_strategy, default=("none", {}), metavar="STRATEGY",
                   help=f"checkpoint the chain of blocks: {STRATEGY_CHOICES} (none)")
    t.add_argument("--plot", type=_plot_path, metavar="PATH",
                   help="save the decision boundary and loss curve (.png unless PATH says .pdf, .svg, .jpg)")
    t.add_argument("--graph", action="store_true",
                   help="capture the training step as a CUDA graph once and replay it (needs --device cuda)")
    _common_arguments(t)
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="measure every checkpointing strategy on a deep chain",
                       description="One row per strategy on a chain of Linear+Tanh blocks: layer forwards, "
                                   "recompute FLOPs, peak activation memory (units and MB), step time "
                                   "(median of interleaved repetitions, with its spread) relative to no "
                                   "checkpointing.")
    _chain_arguments(c, depth=64, width=256, batch=128)
    c.add_argument("--slots", type=_positive_int, default=None,
                   help="slots for revolve (default: as many as recursive uses)")
    c.add_argument("--repeats", "--steps", dest="repeats", type=_positive_int, default=7,
                   help="timed rounds; each round runs every strategy once, in a rotated order (7)")
    c.add_argument("--budget", type=_budget, default=None, metavar="BYTES",
                   help="also run the budget planner with this budget (e.g. 20MB)")
    c.add_argument("--plot", type=_plot_path, metavar="PATH", help="save the trade-off and memory timelines")
    _threads_argument(c)
    c.set_defaults(func=cmd_compare)

    pl = sub.add_parser("plan", help="plan checkpointing for a memory budget, and the largest batch that fits",
                        description="Measure a chain of Linear+Tanh blocks, plan the cheapest schedule within "
                                    "the budget, compare it with none/sqrt/recursive/revolve, and find the "
                                    "largest batch that fits the budget under each strategy.")
    _chain_arguments(pl, depth=100, width=256, batch=256)
    pl.add_argument("--budget", type=_budget, required=True, metavar="BYTES",
                    help="memory for the activations of one training step and their gradients "
                         "(e.g. 20MB, 1.5GiB)")
    pl.add_argument("--timeline", action="store_true", help="print the planned schedule's whole timeline")
    pl.add_argument("--model", choices=["chain", "residual", "unet", "transformer"], default=None,
                    help="plan an example network's op-level graph instead (optimal MILP, LP, greedy, "
                         "articulation, per-block checkpointing, none)")
    pl.add_argument("--time-limit", type=_positive_float, default=30.0, metavar="SECONDS",
                    help="with --model: time limit of each MILP/LP solve (30)")
    pl.add_argument("--plot", type=_plot_path, metavar="PATH", help="with --model: save the graph, kept and recomputed ops "
                                                  "coloured, as a PNG")
    _threads_argument(pl)
    pl.set_defaults(func=cmd_plan)
    return p


def main(argv=None):
    """Run one command; returns its exit code (0), or exits 2 on any failure and 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}"
    try:
        return args.func(args)
    except (MinigradError, CLIError) as exc:
        message = " ".join(str(exc).split())          # one line, whatever the message
        parser.exit(2, f"{prog}: error: {message}\n")
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        # the reader went away (`... | head`): nobody is left to tell; keep Python's exit-time flush quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
