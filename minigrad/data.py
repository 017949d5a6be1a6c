"""Toy datasets generated in code, deterministic by seed: spirals and moons."""
from __future__ import annotations

import numpy as np

from . import checks
from .errors import ArgumentError


def spirals(n_per_class=100, classes=3, noise=0.2, seed=0, dtype=np.float32):
    """Interleaved spiral arms (CS231n's classic): X of shape (n·classes, 2), integer labels y."""
    checks.integer(n_per_class, "spirals", "n_per_class")
    checks.integer(classes, "spirals", "classes")
    checks.real(noise, "spirals", "noise", 0.0)
    checks.dtype(dtype, "spirals", floating=True)
    if n_per_class < 1 or classes < 2:
        raise ArgumentError(f"spirals: need n_per_class >= 1 and classes >= 2, got {n_per_class}, {classes}")
    rng = np.random.default_rng(seed)
    X = np.zeros((n_per_class * classes, 2))
    y = np.zeros(n_per_class * classes, dtype=np.int64)
    for c in range(classes):
        ix = slice(n_per_class * c, n_per_class * (c + 1))
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, n_per_class) + rng.standard_normal(n_per_class) * noise
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = c
    return X.astype(dtype), y


def moons(n_samples=200, noise=0.1, seed=0, dtype=np.float32):
    """Two interleaving half circles: X of shape (n_samples, 2), labels 0/1."""
    checks.integer(n_samples, "moons", "n_samples")
    checks.real(noise, "moons", "noise", 0.0)
    checks.dtype(dtype, "moons", floating=True)
    if n_samples < 2:
        raise ArgumentError(f"moons: need n_samples >= 2, got {n_samples}")
    rng = np.random.default_rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    a = np.linspace(0, np.pi, n_out)
    b = np.linspace(0, np.pi, n_in)
    X = np.concatenate([np.c_[np.cos(a), np.sin(a)], np.c_[1 - np.cos(b), 1 - np.sin(b) - 0.5]])
    X += rng.standard_normal(X.shape) * noise
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    return X.astype(dtype), y


DATASETS = {"spirals": spirals, "moons": moons}
