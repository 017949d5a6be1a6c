"""minigrad on CuPy against PyTorch CUDA: step time of MLPs, eager and captured, and peak device memory.

What it measures, on one CUDA device:

1. One training step (forward, cross-entropy, backward, update) of the same
   model in minigrad-on-CuPy and in PyTorch, each eager and captured as a CUDA
   graph (``minigrad.cuda_graph``; ``torch.cuda.graph`` with ``capturable=True``
   Adam), every step synchronised before the clock stops, the variants
   interleaved, medians of ``--steps`` steps after ``--warmup``:
   - the toy MLP of ``python -m minigrad train`` with its defaults: 3 residual
     blocks of width 64 (x + Linear(relu(LayerNorm(x)))), LayerNorm and a linear
     head, Adam(lr 0.003), spirals batches of 64, float32;
   - a wide MLP where the GPU is busy: 8 layers Linear(4096, 4096) + ReLU and a
     head of 10, batch 4096, SGD(lr 1e-3), float32; minigrad as Linear then ReLU
     modules, and as ``Linear(activation="relu")`` (bias and ReLU one kernel),
     also with fusion turned off (``kernels.disabled()``) to show what it saves.
   Targets: toy MLP captured <= 1.0x PyTorch eager; wide MLP <= 1.02x PyTorch eager.
2. Peak device memory of one step over a chain of 64 blocks Linear(4096, 4096)
   + Tanh at batch 4096: minigrad with none / sqrt / recursive / revolve(8) /
   sqrt with offloaded slots, measured by minigrad's profiler through CuPy's
   allocator hook (``device_peak_bytes``), next to PyTorch's
   ``torch.cuda.max_memory_allocated`` without checkpointing and with
   ``torch.utils.checkpoint.checkpoint_sequential`` (8 segments, non-reentrant).
   Peaks are reported above what was allocated before the step (the model and
   its gradients, which exist from a warm-up step).
3. Where one wide layer's step time goes: each kernel of one Linear(4096,
   4096)+ReLU layer's forward, backward and SGD update timed alone with CUDA
   events (median of 20), minigrad fused and separate, PyTorch's counterparts.

Run:  python benchmarks/gpu.py            (needs CuPy and a CUDA device; PyTorch optional)
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

from _common import add_repo_to_path, machine_report, table

add_repo_to_path()

import numpy as np  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad import kernels  # noqa: E402
from minigrad.checkpoint import checkpoint_sequential  # noqa: E402
from minigrad.models import Classifier  # noqa: E402
from minigrad.nn import functional as F  # noqa: E402


def _sync_cupy():
    import cupy
    cupy.cuda.Device().synchronize()


# --------------------------------------------------------------------------- step time: the models


def mg_wide(width, depth, n_in, n_out, fused):
    mg.manual_seed(0)
    sizes = [n_in] + [width] * depth
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += ([mg.nn.Linear(a, b, device="cuda", activation="relu")] if fused
                   else [mg.nn.Linear(a, b, device="cuda"), mg.nn.ReLU()])
    layers.append(mg.nn.Linear(sizes[-1], n_out, device="cuda"))
    return mg.nn.Sequential(*layers)


def torch_wide(torch, width, depth, n_in, n_out):
    torch.manual_seed(0)
    sizes = [n_in] + [width] * depth
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-1], n_out))
    return torch.nn.Sequential(*layers).cuda()


def torch_toy(torch, width, depth, n_in, n_out):
    """The train command's Classifier in PyTorch: stem, residual blocks x + W relu(LN(x)), LN, head."""
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.linear = torch.nn.LayerNorm(width), torch.nn.Linear(width, width)
            with torch.no_grad():
                self.linear.weight *= 1 / math.sqrt(depth)

        def forward(self, x):
            return x + self.linear(torch.relu(self.norm(x)))
    return torch.nn.Sequential(torch.nn.Linear(n_in, width), *[Block() for _ in range(depth)],
                               torch.nn.LayerNorm(width), torch.nn.Linear(width, n_out)).cuda()


def mg_step(model, opt):
    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    return step


def torch_step(torch, model, opt):
    def step(x, y):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def torch_graphed(torch, step, x, y):
    """PyTorch's whole-step capture recipe: warm up on a side stream, capture, then replay."""
    static_x, static_y = x.clone(), y.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step(static_x, static_y)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_loss = step(static_x, static_y)

    def replay(x, y):
        static_x.copy_(x)
        static_y.copy_(y)
        g.replay()
        return static_loss
    return replay


def time_variants(fns, batches, steps, warmup, syncs):
    """Median seconds per synchronised step of each variant, interleaved (order alternates each round)."""
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(warmup + steps):
        x, y = batches[r % len(batches)]
        for name in (names if r % 2 == 0 else names[::-1]):
            fn, sync = fns[name], syncs[name]
            xb, yb = x[name], y[name]
            sync()
            t0 = time.perf_counter()
            fn(xb, yb)
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def step_times(which, args, torch):
    """{variant: median seconds} for the toy or the wide model."""
    rng = np.random.default_rng(0)
    if which == "toy":
        X, Y = mg.data.spirals(200)
        X = X.astype(np.float32)
        n_in, n_out, batch = 2, int(Y.max()) + 1, 64
        data = []
        for _ in range(8):
            idx = rng.choice(len(X), batch, replace=False)
            data.append((X[idx], Y[idx].astype(np.int64)))
    else:
        n_in, n_out, batch = args.width, 10, args.batch
        data = [(rng.standard_normal((batch, n_in)).astype(np.float32), rng.integers(0, n_out, batch))
                for _ in range(2)]
    fns, syncs, inputs = {}, {}, {}

    def add(name, fn, dev_x, dev_y, sync):
        fns[name], syncs[name] = fn, sync
        inputs[name] = (dev_x, dev_y)

    def mg_model(fused=True):
        if which == "toy":
            mg.manual_seed(0)
            model = Classifier(n_in, 64, 3, n_out).to("cuda")
            return model, mg.optim.Adam(model.parameters(), lr=0.003)
        model = mg_wide(args.width, 8, n_in, n_out, fused)
        return model, mg.optim.SGD(model.parameters(), lr=1e-3)
    mgx = [mg.tensor(x, device="cuda") for x, _ in data]
    mgy = [mg.tensor(y, device="cuda") for _, y in data]
    variants = [("minigrad eager", False, True, None)]
    if which == "wide":
        variants = [("minigrad eager, Linear+ReLU modules", False, False, None),
                    ("minigrad eager, Linear(activation)", False, True, None),
                    ("minigrad eager, fusion off", False, True, "off")]
    variants.append(("minigrad captured", True, True, None))
    for name, captured, fused, mode in variants:
        model, opt = mg_model(fused)
        step = mg_step(model, opt)
        if mode == "off":
            plain = step

            def step(x, y, plain=plain):
                with kernels.disabled():
                    return plain(x, y)
        add(name, mg.cuda_graph(step) if captured else step, mgx, mgy, _sync_cupy)
    if torch is not None:
        tx = [torch.tensor(x, device="cuda") for x, _ in data]
        ty = [torch.tensor(y, device="cuda") for _, y in data]
        for name, captured in (("PyTorch eager", False), ("PyTorch CUDA graph", True)):
            model = (torch_toy(torch, 64, 3, n_in, n_out) if which == "toy"
                     else torch_wide(torch, args.width, 8, n_in, n_out))
            opt = (torch.optim.Adam(model.parameters(), lr=0.003, capturable=captured) if which == "toy"
                   else torch.optim.SGD(model.parameters(), lr=1e-3))
            step = torch_step(torch, model, opt)
            if captured:
                step = torch_graphed(torch, step, tx[0], ty[0])
            add(name, step, tx, ty, torch.cuda.synchronize)
    batches = [({k: inputs[k][0][i] for k in fns}, {k: inputs[k][1][i] for k in fns}) for i in range(len(data))]
    return time_variants(fns, batches, args.steps, args.warmup, syncs)


# --------------------------------------------------------------------------- where the wide step's time goes


def _event_median(fn, reps=20):
    import cupy
    fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def layer_breakdown(width, batch, torch):
    """Rows (kernel, minigrad ms, PyTorch ms) for one Linear(width, width)+ReLU layer's step."""
    import cupy as cp
    rng = np.random.default_rng(0)
    X = cp.asarray(rng.standard_normal((batch, width)).astype(np.float32))
    W = cp.asarray((rng.standard_normal((width, width)) / math.sqrt(width)).astype(np.float32))
    b = cp.asarray(rng.standard_normal(width).astype(np.float32))
    G = cp.asarray(rng.standard_normal((batch, width)).astype(np.float32))
    Y = cp.maximum(X @ W.T + b, 0)
    GW = cp.asarray(rng.standard_normal((width, width)).astype(np.float32))
    rows = []

    def off(fn):
        def run():
            with kernels.disabled():
                fn()
        return run
    mgk = {
        "forward matmul x @ W.T": lambda: X @ W.T,
        "bias + ReLU, fused (in place)": lambda: kernels.bias_act_(Y, b, "relu"),
        "bias + ReLU, separate": off(lambda: kernels.bias_act_(Y, b, "relu")),
        "ReLU backward, fused": lambda: kernels.relu_backward(G, Y),
        "ReLU backward, separate": off(lambda: kernels.relu_backward(G, Y)),
        "dX = g @ W": lambda: G @ W,
        "dW = g.T @ x": lambda: G.T @ X,
        "db = g.sum(axis=0), CuPy's reduction": lambda: G.sum(axis=0),
        "db = ones @ g, cuBLAS (what Linear uses)": lambda: kernels.column_sums(G),
        "SGD update, fused": lambda: kernels.sgd_(W, GW, None, 1e-9, 0.0, 0.0),
        "SGD update, separate": off(lambda: kernels.sgd_(W, GW, None, 1e-9, 0.0, 0.0)),
    }
    tk = {}
    if torch is not None:
        tX, tW, tb, tG, tGW = (torch.as_tensor(a, device="cuda") for a in (X, W, b, G, GW))
        tY = torch.relu(torch.addmm(tb, tX, tW.t()))
        tk = {"forward matmul x @ W.T": lambda: torch.addmm(tb, tX, tW.t()),
              "bias + ReLU, fused (in place)": lambda: torch.relu_(tY),
              "ReLU backward, fused": lambda: torch.ops.aten.threshold_backward(tG, tY, 0),
              "dX = g @ W": lambda: tG @ tW,
              "dW = g.T @ x": lambda: tG.t() @ tX,
              "db = ones @ g, cuBLAS (what Linear uses)": lambda: tG.sum(0),
              "SGD update, fused": lambda: torch._foreach_add_([tW], [tGW], alpha=-1e-9)}
    for name, fn in mgk.items():
        t = _event_median(tk[name]) if name in tk else float("nan")
        rows.append([name, f"{_event_median(fn):.3f}", "" if math.isnan(t) else f"{t:.3f}"])
    if torch is not None:
        rows.append(["(PyTorch: addmm adds the bias in the matmul; ReLU in place; db by sum(0); SGD foreach)", "",
                     ""])
    return rows


# --------------------------------------------------------------------------- device memory


class Block(mg.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = mg.nn.Linear(width, width, device="cuda")

    def forward(self, x):
        return self.linear(x).tanh()


def mg_chain_peaks(width, batch, depth):
    mg.manual_seed(0)
    blocks = [Block(width) for _ in range(depth)]
    x = mg.tensor(np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32), device="cuda")
    rows = {}
    cases = [("none", {}), ("sqrt", {}), ("recursive", {}), ("revolve", {"slots": 8}),
             ("sqrt", {"offload": True})]
    for strategy, opts in cases:
        def step():
            y = checkpoint_sequential(blocks, x, strategy=strategy, **opts)
            (y * y).mean().backward()
            del y
        step()                                  # warm-up: gradients exist, kernels compiled
        _sync_cupy()
        with mg.profile() as prof:
            step()
            _sync_cupy()
        name = strategy + (f"({opts['slots']})" if "slots" in opts else "") + (" + offload" if opts.get("offload")
                                                                                  else "")
        rows[name] = prof.device_peak_bytes - prof.device_start_bytes
    return rows, batch * width * 4


def torch_chain_peaks(torch, width, batch, depth):
    from torch.utils.checkpoint import checkpoint_sequential as torch_ckpt
    torch.manual_seed(0)
    chain = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh())
                                  for _ in range(depth)]).cuda()
    x = torch.randn(batch, width, device="cuda")
    rows = {}
    for name, run in (("none", lambda: chain(x)),
                      ("checkpoint_sequential(8)", lambda: torch_ckpt(chain, 8, x, use_reentrant=False))):
        y = run()
        (y * y).mean().backward()
        del y
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        y = run()
        (y * y).mean().backward()
        del y
        torch.cuda.synchronize()
        rows[name] = torch.cuda.max_memory_allocated() - base
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50, help="timed steps per library (50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (10)")
    p.add_argument("--depth", type=int, default=64, help="blocks in the memory chain (64)")
    p.add_argument("--width", type=int, default=4096, help="width of the wide MLP and the chain (4096)")
    p.add_argument("--batch", type=int, default=4096, help="batch of the wide MLP and the chain (4096)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    args = p.parse_args(argv)
    if not mg.cuda_available():
        print("benchmarks/gpu.py needs CuPy and a CUDA device; none is usable here "
              "(python -m pip install \".[cuda12]\" or \".[cuda13]\" from the repository, "
              "on a machine with an NVIDIA GPU).")
        return 2
    torch = None
    if not args.no_torch:
        try:
            import torch
            if not torch.cuda.is_available():
                torch = None
        except ImportError:
            torch = None
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    notes = [f"device: {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}, "
             f"CuPy {cupy.__version__}"]
    print("\n".join(machine_report(torch, notes)))

    print("\n1. One training step, synchronised (median of %d after %d warm-up, variants interleaved)"
          % (args.steps, args.warmup))
    rows = []
    verdicts = []
    for which, label in (("toy", "toy MLP: train defaults (3 residual blocks of 64, batch 64, Adam)"),
                         ("wide", f"wide MLP: 8 x Linear({args.width})+ReLU, batch {args.batch}, SGD")):
        t = step_times(which, args, torch)
        ref = t.get("PyTorch eager")
        for name, sec in t.items():
            rows.append([label, name, f"{sec * 1e3:.3f}", f"{sec / ref:.2f}x" if ref else ""])
            label = ""
        if ref:
            goal, best = (("minigrad captured", 1.0) if which == "toy"
                          else ("minigrad eager, Linear(activation)", 1.02))
            ratio = t[goal] / ref
            verdicts.append(f"{which}: {goal} / PyTorch eager = {ratio:.3f} (target <= {best}): "
                            f"{'met' if ratio <= best else 'MISSED'}")
    print(table(["model", "variant", "ms per step", "/ PyTorch eager"], rows))
    for v in verdicts:
        print("target " + v)

    print(f"\n2. Peak device memory of one step, {args.depth} blocks Linear({args.width},{args.width})+Tanh, "
          f"batch {args.batch}, float32 (above the model and its gradients)")
    peaks, unit = mg_chain_peaks(args.width, args.batch, args.depth)
    rows = [["minigrad", k, f"{v / 2**20:.1f}", f"{v / unit:.1f}"] for k, v in peaks.items()]
    if torch is not None:
        rows += [["PyTorch", k, f"{v / 2**20:.1f}", f"{v / unit:.1f}"]
                 for k, v in torch_chain_peaks(torch, args.width, args.batch, args.depth).items()]
    print(table(["library", "strategy", "peak MiB", "units"], rows))
    print(f"1 unit = one block output = {unit / 2**20:.1f} MiB")

    print(f"\n3. One Linear({args.width},{args.width})+ReLU layer at batch {args.batch}: each kernel alone "
          "(CUDA events, median of 20), ms")
    print(table(["kernel", "minigrad", "PyTorch"], layer_breakdown(args.width, args.batch, torch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
