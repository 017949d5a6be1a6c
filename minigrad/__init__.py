"""minigrad: a small reverse-mode autograd engine on NumPy (and CuPy) that measures memory."""
from . import autograd, backend, errors, profiler, random
from .autograd import enable_grad, is_grad_enabled, no_grad, tape
from .backend import cuda_available, device
from .errors import (ArgumentError, CaptureError, CheckpointError, DeviceError, DTypeError, GradcheckError, GraphError,
                     IndexingError, MinigradError, ScheduleError, ShapeError, StateDictError)
from .profiler import profile
from .random import manual_seed
from .tensor import (Tensor, concatenate, exp, get_default_dtype, log, maximum, ones, rand, randn, relu,
                     set_default_dtype, sigmoid, sqrt, stack, tanh, tensor, where, zeros)
from .gradcheck import gradcheck  # noqa: E402
from . import data, nn, optim  # noqa: E402
from . import checkpoint  # noqa: E402
from .capture import CapturedStep, cuda_graph  # noqa: E402

__version__ = "0.1.0"
