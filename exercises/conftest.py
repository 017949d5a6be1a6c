"""Runs each exercise's tests against your module, or with --solutions against the reference."""
import importlib

import numpy as np
import pytest

import minigrad as mg


def pytest_addoption(parser):
    parser.addoption("--solutions", action="store_true",
                     help="test the reference solutions in exercises/solutions/ instead of your code")


@pytest.fixture
def exercise(request):
    """The module under test: exercises/<EXERCISE>.py, or exercises/solutions/<EXERCISE>.py."""
    package = "exercises.solutions" if request.config.getoption("--solutions") else "exercises"
    return importlib.import_module(f"{package}.{request.module.EXERCISE}")


@pytest.fixture(autouse=True)
def _fresh_state():
    mg.set_default_dtype(np.float32)
    mg.manual_seed(0)
    yield
    mg.set_default_dtype(np.float32)
