"""Activation checkpointing: schedules (pure plans), one executor, and ``checkpoint(fn)``."""
from . import schedules
from .dynamic import dynamic
from .executor import checkpoint_sequential, plan, run_schedule
from .function import checkpoint
from .policies import Storage, save_linears, save_matmuls, save_nothing
from .schedules import (STRATEGIES, Action, Schedule, Simulation, binomial_extra_forwards, recursive, revolve,
                        revolve_forwards, sqrt, uniform)

__all__ = ["dynamic", "save_matmuls", "save_linears", "save_nothing", "Storage", "checkpoint", "checkpoint_sequential", "plan", "run_schedule", "Schedule", "Simulation", "Action",
           "STRATEGIES", "schedules", "binomial_extra_forwards", "revolve_forwards", "uniform", "sqrt",
           "recursive", "revolve"]
