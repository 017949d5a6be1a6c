"""Small models the command line trains and measures: a plain block, a residual block, a classifier;
and the heterogeneous chain the budget planner's tests and benchmarks plan.

Why residual and normalised blocks: a plain stack of Linear+ReLU layers stops
learning somewhere past ten layers (the signal and its gradient shrink or blow
up layer after layer), and checkpointing only matters for deep chains. A
pre-norm residual block, ``x + W·relu(LayerNorm(x))`` with ``W`` scaled by
1/√depth, keeps every depth trainable: the skip path carries the signal and
the gradient unchanged, and the scaled branch keeps the residual stream's
variance near 1 at initialisation (as in GPT-2's residual scaling).
"""
from __future__ import annotations

import math

import numpy as np

from . import autograd, nn
from .random import manual_seed
from .tensor import tensor
from .checkpoint import checkpoint_sequential


class Block(nn.Module):
    """Linear then an activation: one layer of a plain chain (``compare`` and ``plan`` measure these)."""

    def __init__(self, n_in, n_out, act="relu", dtype=None, device=None):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, dtype=dtype, device=device)
        self.act = act

    def forward(self, x):
        y = self.linear(x)
        return y.relu() if self.act == "relu" else y.tanh()


class ResidualBlock(nn.Module):
    """``x + linear(relu(norm(x)))``, the branch's weights scaled by ``scale`` (1/√depth in a chain)."""

    def __init__(self, width, scale=1.0, dtype=None, device=None):
        super().__init__()
        self.norm = nn.LayerNorm(width, dtype=dtype, device=device)
        self.linear = nn.Linear(width, width, dtype=dtype, device=device)
        self.linear.weight.data *= scale

    def forward(self, x):
        return x + self.linear(self.norm(x).relu())


class Classifier(nn.Module):
    """Input projection, a chain of ``depth`` residual blocks, a normalised linear head.

    ``checkpoint`` is ``(strategy, options)`` for ``checkpoint_sequential`` and
    applies to the chain while gradients are recorded; without them (evaluation
    under ``no_grad``) nothing is saved for backward, so the chain simply runs.
    """

    def __init__(self, n_in, width, depth, n_out, checkpoint=("none", {}), dtype=None, device=None):
        super().__init__()
        self.stem = nn.Linear(n_in, width, dtype=dtype, device=device)
        self.blocks = nn.Sequential(*[ResidualBlock(width, 1 / math.sqrt(depth), dtype, device)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(width, dtype=dtype, device=device)
        self.head = nn.Linear(width, n_out, dtype=dtype, device=device)
        self.strategy, self.options = checkpoint

    def chain_input(self, x):
        """What the checkpointed chain receives for an input batch (the planner measures on it)."""
        return self.stem(x)

    def forward(self, x):
        h = self.chain_input(x)
        if self.strategy in ("none", "dynamic") or not autograd.is_grad_enabled():   # dynamic: the caller's region
            h = self.blocks(h)
        else:
            h = checkpoint_sequential(self.blocks, h, strategy=self.strategy, **self.options)
        return self.head(self.norm(h))


def hetero_chain(L, widths=(64, 128, 256, 512), d_in=64, batch=256, seed=0):
    """(layers, x): L blocks Linear(a, b) + Tanh or tanh-GELU (a coin flip each), widths drawn from
    ``widths``, float64, and an input of shape (batch, d_in): a chain whose activations differ in size and
    in what they save, so a planner cannot treat its layers alike. The same arguments give the same chain."""
    rng = np.random.default_rng(seed)
    outs = [int(w) for w in rng.choice(list(widths), L)]
    manual_seed(seed)
    layers = []
    for a, b in zip([d_in] + outs, outs):
        act = nn.Tanh() if rng.random() < 0.5 else nn.GELU(approximate="tanh")
        layers.append(nn.Sequential(nn.Linear(a, b, dtype=np.float64), act))
    return layers, tensor(rng.standard_normal((batch, d_in)), requires_grad=True)
