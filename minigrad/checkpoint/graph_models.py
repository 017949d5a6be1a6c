"""Graphs to plan on: synthetic ones (plain data, any size) and the three example networks.

``synthetic(n, seed)`` builds a random network-like ``Graph`` without running
anything: a spine of matmul, activation, normalisation and add ops with skip
connections. ``residual_mlp``, ``unet`` and ``transformer_block`` build small
minigrad models and an input; ``MODELS`` maps their names to builders, for
the CLI and the benchmark. The models mark the blocks a user would checkpoint
by hand (``block``): each residual block, U-Net level, attention and MLP.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, GraphNode, Leaf
from .graph_capture import block

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
                               leaf_grad_bytes=4 * width * width, block=k))
        nodes.append(GraphNode(t, "Tanh", (a,), (), out, out, 0, 0, (t,), batch * width, batch * width,
                               t + 1 if k < depth - 1 else 2 * depth, (batch, width), "float32", block=k))
    return Graph(tuple(nodes), tuple(leaves), (2 * depth - 1,), name=f"chain({depth})",
                 blocks=tuple(f"layer {k + 1}" for k in range(depth)))


# --------------------------------------------------------------------------- the three example networks


def _nn():
    import minigrad as mg  # noqa: PLC0415 - the models need the whole package; plain graphs above do not
    return mg


def chain_model(depth=16, width=256, batch=64, seed=0):
    """Linear+Tanh blocks and a mean-square loss: the shape the chain planner handles."""
    mg = _nn()
    mg.manual_seed(seed)
    layers = [mg.nn.Linear(width, width) for _ in range(depth)]
    x = mg.randn(batch, width)

    def step(x):
        h = x
        for k, lin in enumerate(layers):
            with block(f"layer {k + 1}"):
                h = lin(h).tanh()
        return (h * h).mean()

    return step, (x,), f"chain of {depth} Linear({width})+Tanh blocks, batch {batch}"


def residual_mlp(depth=8, width=256, batch=64, seed=0):
    """h <- h + W2·relu(W1·LayerNorm(h)), ``depth`` times, then a linear head and a mean-square loss."""
    mg = _nn()
    mg.manual_seed(seed)
    blocks = [(mg.nn.LayerNorm(width), mg.nn.Linear(width, 2 * width), mg.nn.Linear(2 * width, width))
              for _ in range(depth)]
    head = mg.nn.Linear(width, 16)
    x = mg.randn(batch, width)

    def step(x):
        h = x
        for k, (norm, up, down) in enumerate(blocks):
            with block(f"block {k + 1}"):
                h = h + down(up(norm(h)).relu())
        y = head(h)
        return (y * y).mean()

    return step, (x,), f"residual MLP: {depth} pre-norm blocks of width {width} (hidden {2 * width}), batch {batch}"


def unet(levels=3, width=512, batch=64, seed=0):
    """A U-Net-like MLP: each encoder level halves the width, each decoder level reads the encoder level's output."""
    mg = _nn()
    mg.manual_seed(seed)
    widths = [width // 2 ** k for k in range(levels + 1)]
    down = [mg.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    up = [mg.nn.Linear(2 * b, a) for a, b in zip(widths, widths[1:])]
    stem = mg.nn.Linear(width, width)
    x = mg.randn(batch, width)

    def step(x):
        with block("stem"):
            h = stem(x).relu()
        skips = []
        for k, lin in enumerate(down):
            skips.append(h)
            with block(f"down {k + 1}"):
                h = lin(h).relu()
        for k, (lin, s) in enumerate(zip(reversed(up), reversed(skips))):
            with block(f"up {levels - k}"):
                h = lin(mg.concatenate([h, s[:, : h.shape[1]]], axis=1)).relu() + s
        return (h * h).mean()

    return step, (x,), f"U-Net-like MLP: {levels} levels from width {width}, skip connections, batch {batch}"


def transformer_block(seq=256, dim=64, heads=2, blocks=2, seed=0):
    """Pre-norm transformer blocks on one sequence: attention's seq x seq matrices dominate memory."""
    mg = _nn()
    F = mg.nn.functional
    mg.manual_seed(seed)
    dh = dim // heads
    params = [dict(n1=mg.nn.LayerNorm(dim), qkv=mg.nn.Linear(dim, 3 * dim), out=mg.nn.Linear(dim, dim),
                   n2=mg.nn.LayerNorm(dim), up=mg.nn.Linear(dim, 4 * dim), down=mg.nn.Linear(4 * dim, dim))
              for _ in range(blocks)]
    x = mg.randn(seq, dim)
    scale = 1.0 / dh ** 0.5

    def step(x):
        h = x
        for n, p in enumerate(params):
            with block(f"attention {n + 1}"):
                qkv = p["qkv"](p["n1"](h)).reshape(seq, 3, heads, dh).transpose((1, 2, 0, 3))
                q, k, v = qkv[0], qkv[1], qkv[2]
                att = F.softmax((q @ k.transpose((0, 2, 1))) * scale, axis=-1)
                ctx = (att @ v).transpose((1, 0, 2)).reshape(seq, dim)
                h = h + p["out"](ctx)
            with block(f"MLP {n + 1}"):
                h = h + p["down"](F.gelu(p["up"](p["n2"](h))))
        return (h * h).mean()

    return step, (x,), f"{blocks} transformer blocks: sequence {seq}, width {dim}, {heads} heads"


MODELS = {"chain": chain_model, "residual": residual_mlp, "unet": unet, "transformer": transformer_block}
