"""The exceptions minigrad raises: each message names the op, what it got, and the fix."""


class MinigradError(Exception):
    """Base class of every error minigrad raises on purpose."""


class StateDictError(MinigradError, KeyError):
    """A state dict whose keys do not match the module's parameters and buffers."""


class ArgumentError(MinigradError, ValueError):
    """An option outside what the op or optimizer accepts (reduction="avg", p=1.5, lr=-1, ...)."""


class ShapeError(MinigradError, ValueError):
    """Operands whose shapes do not fit the op (matmul, broadcasting, reshape...)."""


class IndexingError(MinigradError, IndexError):
    """An index that does not fit the tensor it indexes."""


class DTypeError(MinigradError, TypeError):
    """Data of a dtype the op cannot use (strings, objects, integers that need gradients)."""


class DeviceError(MinigradError, RuntimeError):
    """A device that is unavailable, unknown, or mixed with another in one op."""


class GraphError(MinigradError, RuntimeError):
    """Misuse of the tape: backward through a freed graph, on a non-scalar, ..."""


class CheckpointError(MinigradError, RuntimeError):
    """A checkpointed function misbehaved: non-tensor output, non-deterministic recompute, ..."""


class ScheduleError(MinigradError, ValueError):
    """A checkpointing schedule that cannot be built: unknown strategy, bad slots or segments."""


class GradcheckError(MinigradError, AssertionError):
    """``gradcheck`` found a gradient from backward that disagrees with central finite differences."""


class CaptureError(MinigradError, RuntimeError):
    """A step that cannot be captured as a CUDA graph, or a call that does not fit the captured one."""
