"""Activation checkpointing: schedules (pure plans), the budget planner, one executor, ``checkpoint(fn)``,
graph plans and dynamic rematerialization."""
from . import costs, planner, schedules
from .costs import ChainCosts, measure_chain, simulate
from .dynamic import dynamic
from .executor import checkpoint_sequential, plan, run_schedule
from .function import checkpoint
from .graph import Graph, GraphPlan, GraphSimulation
from .graph_capture import block, capture
from .graph_solve import solve
from .policies import Storage, save_linears, save_matmuls, save_nothing
from .schedules import (REGISTRY, STRATEGIES, Action, Schedule, Simulation, Strategy, binomial_extra_forwards,
                        recursive, register, revolve, revolve_forwards, sqrt, uniform)

__all__ = ["capture", "block", "Graph", "GraphPlan", "GraphSimulation", "solve", "dynamic", "save_matmuls", "save_linears",
           "save_nothing", "Storage", "checkpoint", "checkpoint_sequential", "plan", "run_schedule", "Schedule",
           "Simulation", "Action", "STRATEGIES", "REGISTRY", "Strategy", "register", "schedules", "planner", "costs",
           "ChainCosts", "measure_chain", "simulate", "binomial_extra_forwards", "revolve_forwards", "uniform", "sqrt",
           "recursive", "revolve"]
