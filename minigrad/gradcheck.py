"""Check an op's backward against central finite differences, the way minitorch's ``grad_check`` does.

For each input element x_j the numerical derivative is

    (f(x + eps·e_j) - f(x - eps·e_j)) / (2·eps)

which is accurate to O(eps²) when f is smooth near x. In float64 with
eps = 1e-6 that leaves about 1e-9 of truncation and rounding error, so a
backward that agrees to 1e-5 is right and one that does not is a bug (or the
point sits on a kink: relu or abs at 0, ties in max, where the derivative is
undefined). Float32 has only ~7 significant digits, so finite differences there
measure rounding noise; gradcheck refuses it.
"""
from __future__ import annotations

import numpy as np

from . import checks
from .autograd import no_grad
from .errors import ArgumentError, DTypeError, GradcheckError
from .tensor import Tensor


def _weights(shape):
    """Fixed, reproducible weights for the output elements.

    A plain ``out.sum()`` hides bugs: softmax rows always sum to 1, so the
    gradient of the sum is 0 whatever backward returns. Weighting each output
    element differently makes every element of the Jacobian count.
    """
    if shape == ():
        return np.ones((), dtype=np.float64)
    return np.random.default_rng(20240601).uniform(0.5, 1.5, size=shape)


def _scalar(fn, inputs, weights):
    with no_grad():
        out = fn(*inputs)
    return float(np.sum(weights * out.numpy().astype(np.float64)))


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-4):
    """Raise ``GradcheckError`` unless backward of ``fn(*inputs)`` matches central differences.

    ``fn`` takes the tensors in ``inputs`` and returns a tensor; a non-scalar
    output is reduced with fixed weights. Inputs with ``requires_grad=True``
    are checked and must be float64; others (indices, masks) are passed through.
    Returns True when every entry agrees within ``atol + rtol·|numerical|``.
    """
    if not callable(fn):
        raise ArgumentError(f"gradcheck: fn must be a function of the inputs, got {type(fn).__name__}; "
                            "call gradcheck(fn, *inputs)")
    checks.real(eps, "gradcheck", "eps", 0.0, low_open=True)
    checks.real(atol, "gradcheck", "atol", 0.0)
    checks.real(rtol, "gradcheck", "rtol", 0.0)
    checked = []
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t.requires_grad:
            continue
        if t.dtype != np.float64:
            raise DTypeError(
                f"gradcheck: input[{i}] has dtype {t.dtype}; finite differences need float64 to be meaningful. "
                "Make it with mg.tensor(data, dtype=np.float64, requires_grad=True).")
        checked.append(i)
    if not checked:
        raise GradcheckError("gradcheck: no input has requires_grad=True, so there is no gradient to check; "
                             "create the inputs with requires_grad=True")
    name = getattr(fn, "__name__", type(fn).__name__)

    for i in checked:
        inputs[i].grad = None
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise GradcheckError(f"gradcheck of {name}: fn must return a Tensor, it returned {type(out).__name__}")
    weights = _weights(out.shape)
    if not out.requires_grad:
        raise GradcheckError(f"gradcheck of {name}: the output does not require grad, so backward cannot run; "
                             "check that fn uses its inputs and does not run under no_grad()")
    out.backward(grad=weights.astype(out.dtype))
    del out

    for i in checked:
        t = inputs[i]
        if t.grad is None:
            analytic = np.zeros(t.shape)
        else:
            analytic = t.grad.numpy()
            if analytic.shape != t.shape or analytic.dtype != t.dtype:
                raise GradcheckError(
                    f"gradcheck of {name}: input[{i}] has shape {t.shape} and dtype {t.dtype} but its gradient "
                    f"has shape {analytic.shape} and dtype {analytic.dtype}; a gradient must match its input")
        original = t.data
        work = original.copy()
        t.data = work
        numeric = np.zeros(t.shape)
        try:
            for j in np.ndindex(*t.shape):
                x = work[j].item()    # a Python float: on CuPy work[j] is a view that the next line would change
                work[j] = x + eps
                plus = _scalar(fn, inputs, weights)
                work[j] = x - eps
                minus = _scalar(fn, inputs, weights)
                work[j] = x
                numeric[j] = (plus - minus) / (2 * eps)
        finally:
            t.data = original
        bad = ~(np.abs(analytic - numeric) <= atol + rtol * np.abs(numeric))
        if bad.any():
            j = tuple(int(k) for k in np.argwhere(bad)[0])
            where = f"index {j}" if j else "the only element"
            raise GradcheckError(
                f"gradcheck of {name}: d/d input[{i}] at {where}: backward gave {float(analytic[j])!r}, "
                f"central difference gave {float(numeric[j])!r} (|difference| {abs(analytic[j] - numeric[j]):.3g} > "
                f"atol + rtol·|numerical| = {atol + rtol * abs(numeric[j]):.3g}); {int(bad.sum())} of "
                f"{bad.size} entries disagree. Either the op's backward is wrong, or the input sits on a kink "
                "(relu or abs at 0, ties in max) where the derivative is undefined: move it away.")
    return True
