"""Shared fixtures: devices to run on, PyTorch when installed, a clean default dtype and seed."""
import gc

import numpy as np
import pytest

import minigrad as mg


def _devices():
    devs = [pytest.param("cpu", id="cpu")]
    reason = None
    if not mg.cuda_available():
        reason = "CuPy or a CUDA device is missing"
    devs.append(pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu] + (
        [pytest.mark.skip(reason=reason)] if reason else [])))
    return devs


DEVICES = _devices()


@pytest.fixture(params=DEVICES)
def device(request):
    """Each available device in turn: 'cpu' always, 'cuda' when CuPy sees a GPU (marked gpu)."""
    return request.param


@pytest.fixture
def torch():
    """PyTorch, or skip the test cleanly when it is not installed."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (it is an optional oracle)")
    gc.freeze()      # torch's many long-lived objects would slow every later gc.collect()
    return torch


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts from float32 default, seed 0, and no garbage from earlier tests."""
    mg.set_default_dtype(np.float32)
    mg.manual_seed(0)
    gc.collect()
    yield
    mg.set_default_dtype(np.float32)
