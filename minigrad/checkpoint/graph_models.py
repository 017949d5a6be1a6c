"""Graphs to plan on: synthetic ones (plain data, any size) and the three example networks.

``synthetic(n, seed)`` builds a random network-like ``Graph`` without running
anything: a spine of matmul, activation, normalisation and add ops with skip
connections. ``residual_mlp``, ``unet`` and ``transformer_block`` build small
minigrad models and an input; ``MODELS`` maps their names to builders, for
the CLI and the benchmark.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, GraphNode, Leaf

# op -> (saves its inputs?, saves its output?, residual bytes per output byte, FLOPs per output element)
_KINDS = {"Linear": (True, False, 0.0, None), "Tanh": (False, True, 0.0, 1), "Add": (False, False, 0.0, 1),
          "LayerNorm": (False, False, 1.0, 8), "Mul": (True, False, 0.0, 1)}


def synthetic(n: int, seed: int = 0, skip: float = 0.25, width=(64, 512), batch: int = 32) -> Graph:
    """A random ``n``-op graph shaped like a network: matmuls, activations, norms, adds over skip connections."""
    rng = np.random.default_rng(seed)
    nodes, dims = [], []
    leaves = [Leaf("input", (batch, 128), "float32", batch * 128 * 4, False)]
    d_prev = 128
    for v in range(n):
        if v == 0:
            op = "Linear"
        else:
            op = rng.choice(["Linear", "Tanh", "LayerNorm", "Add", "Mul"], p=[0.35, 0.3, 0.1, 0.15, 0.1])
        d = d_prev
        ins, lv = [], []
        if op == "Linear":
            d = int(rng.integers(width[0] // 16, width[1] // 16 + 1)) * 16
            if v == 0:
                lv = [0]
            else:
                ins = [v - 1]
            leaves.append(Leaf("param", (d, d_prev), "float32", 4 * d * d_prev, True))
            lv.append(len(leaves) - 1)
            flops = 2 * batch * d * d_prev
        elif op in ("Add", "Mul"):
            same = [u for u in range(v - 1) if dims[u] == d_prev and u not in (v - 1,)]
            if same and rng.random() < skip * 4:
                ins = [v - 1, int(rng.choice(same))]
            else:
                op, ins = "Tanh", [v - 1]
            flops = batch * d
        else:
            ins = [v - 1]
            flops = _KINDS[op][3] * batch * d
        saves_in, saves_out, resid, _ = _KINDS[op]
        saves = tuple(ins) if saves_in else ((v,) if saves_out else ())
        out = 4 * batch * d
        nodes.append(dict(index=v, op=str(op), inputs=tuple(ins), leaves=tuple(lv), out_bytes=out, grad_bytes=out,
                          residual_bytes=int(resid * out), pinned_bytes=0, saves=saves, flops=int(flops),
                          backward_flops=int(flops) * max(1, len(ins)), shape=(batch, d), dtype="float32",
                          leaf_grad_bytes=4 * d * d_prev if op == "Linear" else 0))
        dims.append(d)
        d_prev = d
    last = {}
    for v in nodes:
        for u in v["inputs"]:
            last[u] = v["index"]
    result = []
    for v in nodes:
        free = n if v["index"] == n - 1 else last.get(v["index"], v["index"])
        result.append(GraphNode(free_after=free, **v))
    return Graph(tuple(result), tuple(leaves), (n - 1,), name=f"synthetic({n}, seed={seed})")


def chain(depth: int, width: int = 64, batch: int = 16) -> Graph:
    """A chain of ``depth`` Linear+Tanh blocks as plain data (the shape the chain planner handles)."""
    nodes, leaves = [], [Leaf("input", (batch, width), "float32", 4 * batch * width, False)]
    out = 4 * batch * width
    mm = 2 * batch * width * width
    for k in range(depth):
        a, t = 2 * k, 2 * k + 1
        leaves.append(Leaf("param", (width, width), "float32", 4 * width * width, True))
        nodes.append(GraphNode(a, "Linear", (a - 1,) if k else (), (0, k + 1) if k == 0 else (k + 1,), out, out, 0, 0,
                               (a - 1,) if k else (), mm, 2 * mm if k else mm, a + 1, (batch, width), "float32",
                               leaf_grad_bytes=4 * width * width))
        nodes.append(GraphNode(t, "Tanh", (a,), (), out, out, 0, 0, (t,), batch * width, batch * width,
                               t + 1 if k < depth - 1 else 2 * depth, (batch, width), "float32"))
    return Graph(tuple(nodes), tuple(leaves), (2 * depth - 1,), name=f"chain({depth})")
