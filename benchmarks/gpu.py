"""minigrad on CuPy against PyTorch CUDA: step time of MLPs, and peak device memory under checkpointing.

What it measures, on one CUDA device:

1. One SGD training step (forward, cross-entropy, backward, update) of the same
   MLP in minigrad-on-CuPy and in PyTorch eager CUDA: the toy MLP of
   ``python -m minigrad train`` (width 64, depth 3, batch 64), and a wide MLP
   where the GPU is busy (width 4096, batch 4096, depth 8, float32). Each step
   is synchronised (``cupy.cuda.Device().synchronize()`` /
   ``torch.cuda.synchronize()``) before the clock stops; the two libraries run
   interleaved, and the reported numbers are medians of ``--steps`` steps after
   ``--warmup`` steps. Target on the wide MLP: minigrad within 1.25x of PyTorch.
2. Peak device memory of one step over a chain of 64 blocks Linear(4096, 4096)
   + Tanh at batch 4096: minigrad with none / sqrt / recursive / revolve(8) /
   sqrt with offloaded slots, measured by minigrad's profiler through CuPy's
   allocator hook (``device_peak_bytes``), next to PyTorch's
   ``torch.cuda.max_memory_allocated`` without checkpointing and with
   ``torch.utils.checkpoint.checkpoint_sequential`` (8 segments, non-reentrant).
   Peaks are reported above what was allocated before the step (the model and
   its gradients, which exist from a warm-up step).

Run:  python benchmarks/gpu.py            (needs CuPy and a CUDA device; PyTorch optional)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import add_repo_to_path, machine_report, table

add_repo_to_path()

import numpy as np  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad.checkpoint import checkpoint_sequential  # noqa: E402
from minigrad.nn import functional as F  # noqa: E402


def _sync_cupy():
    import cupy
    cupy.cuda.Device().synchronize()


# --------------------------------------------------------------------------- step time


def mg_mlp(width, depth, n_in, n_out, dtype):
    mg.manual_seed(0)
    sizes = [n_in] + [width] * depth
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [mg.nn.Linear(a, b, dtype=dtype, device="cuda"), mg.nn.ReLU()]
    layers.append(mg.nn.Linear(sizes[-1], n_out, dtype=dtype, device="cuda"))
    return mg.nn.Sequential(*layers)


def torch_mlp(torch, width, depth, n_in, n_out, dtype):
    torch.manual_seed(0)
    sizes = [n_in] + [width] * depth
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-1], n_out))
    return torch.nn.Sequential(*layers).to(device="cuda", dtype=dtype)


def time_steps(width, depth, batch, steps, warmup, torch):
    """Median seconds per synchronised SGD step: {'minigrad': s, 'PyTorch': s}."""
    n_in, n_out = width, 10
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, n_in)).astype(np.float32)
    y = rng.integers(0, n_out, batch)
    model = mg_mlp(width, depth, n_in, n_out, np.float32)
    opt = mg.optim.SGD(model.parameters(), lr=1e-3)
    xs, ys = mg.tensor(X, device="cuda"), mg.tensor(y, device="cuda")

    def mg_step():
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync_cupy()

    fns = {"minigrad": mg_step}
    if torch is not None:
        tmodel = torch_mlp(torch, width, depth, n_in, n_out, torch.float32)
        topt = torch.optim.SGD(tmodel.parameters(), lr=1e-3)
        tx, ty = torch.tensor(X, device="cuda"), torch.tensor(y, device="cuda")

        def torch_step():
            loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
            topt.zero_grad(set_to_none=True)
            loss.backward()
            topt.step()
            torch.cuda.synchronize()

        fns["PyTorch"] = torch_step
    times = {k: [] for k in fns}
    for r in range(warmup + steps):
        for name, fn in (fns.items() if r % 2 == 0 else reversed(list(fns.items()))):
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


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

    print("\n1. One SGD step, synchronised (median of %d after %d warm-up)" % (args.steps, args.warmup))
    rows = []
    for label, (w, d, b) in (("toy MLP (width 64, depth 3, batch 64)", (64, 3, 64)),
                             (f"wide MLP (width {args.width}, depth 8, batch {args.batch})", (args.width, 8, args.batch))):
        t = time_steps(w, d, b, args.steps, args.warmup, torch)
        ratio = t["minigrad"] / t["PyTorch"] if "PyTorch" in t else float("nan")
        rows.append([label, f"{t['minigrad'] * 1e3:.3f}", f"{t.get('PyTorch', float('nan')) * 1e3:.3f}",
                     f"{ratio:.2f}x"])
    print(table(["model", "minigrad ms", "PyTorch ms", "minigrad / PyTorch"], rows))
    print("target: minigrad within 1.25x of PyTorch eager on the wide MLP")

    print(f"\n2. Peak device memory of one step, {args.depth} blocks Linear({args.width},{args.width})+Tanh, "
          f"batch {args.batch}, float32 (above the model and its gradients)")
    peaks, unit = mg_chain_peaks(args.width, args.batch, args.depth)
    rows = [["minigrad", k, f"{v / 2**20:.1f}", f"{v / unit:.1f}"] for k, v in peaks.items()]
    if torch is not None:
        rows += [["PyTorch", k, f"{v / 2**20:.1f}", f"{v / unit:.1f}"]
                 for k, v in torch_chain_peaks(torch, args.width, args.batch, args.depth).items()]
    print(table(["library", "strategy", "peak MiB", "units"], rows))
    print(f"1 unit = one block output = {unit / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
