"""Plan in minigrad, run in PyTorch: minigrad's checkpointing schedules on ``torch.nn`` chains.

Optional (``python -m pip install ".[torch]"`` from a clone); the core never imports torch.

    from minigrad.torch_bridge import checkpoint_sequential
    y = checkpoint_sequential(model_blocks, x, strategy="budget", budget="64MB")

The chain's costs are measured in PyTorch (``measure.py``), planned by
minigrad's planners (``planning.py``, a thin adapter) and the plan's actions
are executed by one ``torch.autograd.Function`` (``executor.py``).

Inside ``DistributedDataParallel`` the call is unchanged (parameter gradients
reach the engine once each). With FSDP2 (``fully_shard`` on each layer, then
the root) every process must run the same schedule, since recomputing a
layer gathers its parameters: same shapes and the same budget give the same
plan. FSDP1 (``FullyShardedDataParallel``) refuses to run without an
accelerator in PyTorch 2.13.
"""
from ..errors import MinigradError


class TorchMissingError(MinigradError, ImportError):
    """``minigrad.torch_bridge`` was imported but PyTorch is not installed."""


try:
    import torch  # noqa: F401
except ImportError as exc:   # the bridge is the one place minigrad needs torch: say how to get it
    raise TorchMissingError(
        "minigrad.torch_bridge runs minigrad's checkpointing plans on PyTorch modules, but PyTorch is not "
        f"installed ({exc}). Install the extra from the repository: python -m pip install \".[torch]\" "
        "(torch>=2.1); the rest of minigrad works without it.") from exc

from .executor import checkpoint_sequential, run_schedule  # noqa: E402
from .measure import Meter, measure  # noqa: E402
from .planning import plan, predict  # noqa: E402

__all__ = ["checkpoint_sequential", "run_schedule", "plan", "predict", "measure", "Meter", "TorchMissingError"]
