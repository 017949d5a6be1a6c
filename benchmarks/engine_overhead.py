"""What does minigrad's engine cost? One SGD step of an MLP in minigrad, hand-written NumPy and PyTorch.

What is measured
----------------
The wall time of one training step -- forward, mean cross-entropy loss,
backward, SGD parameter update -- of the same MLP written three ways:

* **minigrad**: ``nn.Sequential`` of ``nn.Linear`` / ``nn.ReLU``,
  ``nn.functional.cross_entropy``, ``loss.backward()``, ``optim.SGD``
  (``zero_grad`` included in the step);
* **hand NumPy**: the same math with no engine at all -- ``x @ W.T + b``
  (bias added in place), ReLU in place, a stable log-softmax cross-entropy,
  the backward pass written out by hand, ``W -= lr * dW`` in place;
* **PyTorch (CPU)**, when it is importable: ``torch.nn`` / ``torch.optim.SGD``.

The MLP has ``--depth`` Linear layers (default 4): ``depth - 1`` hidden
layers of ``--width`` units followed by ReLU, then a Linear to ``--classes``
logits. Input features = width. float32 throughout. The three start from the
same weights and see the same fixed batch every step; before timing, one step
of each is compared (loss and updated weights) so the three really compute the
same thing.

How
---
BLAS is pinned to one thread (``--threads``) for every library: the
thread-count environment variables are set before NumPy loads, and PyTorch
gets ``torch.set_num_threads``. The three steps run interleaved (one of each
per round, the order rotated every round) after warm-up rounds; the table
gives the median ms per step, the interquartile range, the ratio of medians to
hand NumPy and the median of per-round ratios. ``--profile N`` then runs N
minigrad steps under cProfile and prints where the time went.

Run: ``python benchmarks/engine_overhead.py`` (``--help`` for the options).
"""
from __future__ import annotations

import argparse
import sys

try:
    import _common as C
except ImportError:          # run as ``python -m benchmarks.engine_overhead``
    from benchmarks import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="timed rounds (one step of each library per round)")
    p.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    p.add_argument("--width", type=int, default=512, help="input features and hidden units")
    p.add_argument("--batch", type=int, default=256, help="rows per batch")
    p.add_argument("--depth", type=int, default=4, help="Linear layers (depth - 1 of them followed by ReLU)")
    p.add_argument("--classes", type=int, default=10, help="output logits")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile N minigrad steps with cProfile and print the top functions")
    C.add_pinning_args(p)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.depth < 1:
        p.error("--steps and --depth must be >= 1, --warmup >= 0")
    return args


class HandMLP:
    """The same MLP with no engine: forward, cross-entropy and backward written out in NumPy."""

    def __init__(self, np, weights, biases, lr):
        self.np = np
        self.W = [w.copy() for w in weights]
        self.b = [b.copy() for b in biases]
        self.lr = lr

    def step(self, x, y):
        np, W, b = self.np, self.W, self.b
        n, last = x.shape[0], len(W) - 1
        acts, h = [x], x
        for i in range(len(W)):
            h = h @ W[i].T
            h += b[i]
            if i < last:
                np.maximum(h, 0, out=h)
            acts.append(h)
        # stable log-softmax cross-entropy, mean over rows
        logp = h - h.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        rows = np.arange(n)
        loss = -logp[rows, y].mean()
        g = np.exp(logp)                       # d loss / d logits = (softmax - onehot) / n
        g[rows, y] -= 1
        g *= g.dtype.type(1.0 / n)
        for i in range(last, -1, -1):
            a = acts[i]
            gw = g.T @ a
            gb = g.sum(axis=0)
            if i:
                g = g @ W[i]
                g *= a > 0                     # a is ReLU's output: positive exactly where it passed
            W[i] -= self.lr * gw
            b[i] -= self.lr * gb
        return loss


def build(args, np, mg, torch):
    """The three step functions (name -> callable returning the loss) and the first-layer weights of each."""
    F = mg.nn.functional
    mg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, args.width)).astype(np.float32)
    y = rng.integers(0, args.classes, args.batch).astype(np.int64)

    dims = [args.width] * args.depth + [args.classes]
    layers = []
    for i in range(args.depth):
        layers.append(mg.nn.Linear(dims[i], dims[i + 1], dtype=np.float32))
        if i < args.depth - 1:
            layers.append(mg.nn.ReLU())
    model = mg.nn.Sequential(*layers)
    linears = [m for m in layers if isinstance(m, mg.nn.Linear)]
    weights = [m.weight.data.copy() for m in linears]
    biases = [m.bias.data.copy() for m in linears]
    opt = mg.optim.SGD(model.parameters(), lr=args.lr)
    xt, yt = mg.tensor(x), mg.tensor(y)

    def minigrad_step():
        opt.zero_grad()
        loss = F.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        return loss

    hand = HandMLP(np, weights, biases, args.lr)

    def numpy_step():
        return hand.step(x, y)

    steps = {"hand NumPy": numpy_step, "minigrad": minigrad_step}
    first = {"hand NumPy": lambda: hand.W[0], "minigrad": lambda: linears[0].weight.data}

    if torch is not None:
        tlayers = []
        for i in range(args.depth):
            lin = torch.nn.Linear(dims[i], dims[i + 1], dtype=torch.float32)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(weights[i]))
                lin.bias.copy_(torch.from_numpy(biases[i]))
            tlayers.append(lin)
            if i < args.depth - 1:
                tlayers.append(torch.nn.ReLU())
        tmodel = torch.nn.Sequential(*tlayers)
        topt = torch.optim.SGD(tmodel.parameters(), lr=args.lr)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        tce = torch.nn.functional.cross_entropy

        def torch_step():
            topt.zero_grad()
            loss = tce(tmodel(tx), ty)
            loss.backward()
            topt.step()
            return loss

        steps["PyTorch (CPU)"] = torch_step
        first["PyTorch (CPU)"] = lambda: tlayers[0].weight.detach().numpy()
    return steps, first


def check_same_math(np, steps, first):
    """Run one step of each from the same weights; the losses and updated weights must agree."""
    losses = {}
    for name, step in steps.items():
        loss = step()
        losses[name] = float(loss.item() if hasattr(loss, "item") else loss)
    ref_w = first["hand NumPy"]()
    diffs = {k: float(np.max(np.abs(get() - ref_w))) for k, get in first.items() if k != "hand NumPy"}
    ref = losses["hand NumPy"]
    bad = [k for k, v in losses.items() if abs(v - ref) > 1e-4 * max(1.0, abs(ref))]
    bad += [k for k, d in diffs.items() if d > 1e-4]
    line = ("check    : one step from the same weights: loss " +
            ", ".join(f"{k} {v:.6f}" for k, v in losses.items()) +
            "; max |W1 - W1(hand NumPy)| after the update: " +
            ", ".join(f"{k} {d:.1e}" for k, d in diffs.items()))
    return line, sorted(set(bad))


def main(argv=None):
    args = parse_args(argv)
    notes, torch = C.start(args, "its column is")
    import numpy as np  # noqa: PLC0415  (after pinning)
    import minigrad as mg  # noqa: PLC0415

    print(f"engine_overhead: one SGD step (forward, cross-entropy, backward, update) of an MLP with "
          f"{args.depth} Linear layers, width {args.width}, batch {args.batch}, {args.classes} classes, "
          f"ReLU, float32")
    print("\n".join(C.machine_report(torch, notes)))

    steps, first = build(args, np, mg, torch)
    line, bad = check_same_math(np, steps, first)
    print(line)
    if bad:
        print(f"error: {', '.join(bad)} disagree with hand NumPy; the timings below would compare different math",
              file=sys.stderr)
        return 1

    times = C.interleaved(steps, rounds=args.steps, warmup=args.warmup)
    ref = times["hand NumPy"]
    print(f"timing   : {args.steps} interleaved rounds after {args.warmup} warm-up rounds; "
          "IQR = 25th-75th percentile; paired = median over rounds of (this / hand NumPy)")
    print()
    rows = []
    for name, ts in times.items():
        rows.append([name, C.ms(C.median(ts)), C.spread(ts), f"{C.median(ts) / C.median(ref):.3f}",
                     f"{C.paired_ratio(ts, ref):.3f}"])
    print(C.table(["library", "median ms/step", "IQR ms", "ratio to hand NumPy", "paired ratio"], rows))
    print()

    mg_med = C.median(times["minigrad"])
    r = mg_med / C.median(ref)
    print(f"target   : minigrad / hand NumPy = {r:.3f} <= 1.10: {C.verdict(r <= 1.10)}")
    if torch is not None:
        t_med = C.median(times["PyTorch (CPU)"])
        print(f"target   : minigrad {mg_med * 1e3:.2f} ms <= PyTorch {t_med * 1e3:.2f} ms "
              f"(minigrad / PyTorch = {mg_med / t_med:.3f}): {C.verdict(mg_med <= t_med)}")
    else:
        print("target   : minigrad vs PyTorch not measured (PyTorch skipped)")

    if args.profile:
        import cProfile  # noqa: PLC0415
        import io  # noqa: PLC0415
        import pstats  # noqa: PLC0415
        step = steps["minigrad"]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.profile):
            step()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
        print(f"\ncProfile of {args.profile} minigrad steps (sorted by own time):")
        print(out.getvalue().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
