"""Exercise (a): the backward of a few ops.

An op is a ``minigrad.autograd.Function``: ``forward(self, *arrays)`` computes its output from
NumPy arrays and keeps what backward will need with ``self.save_for_backward(...)`` (read back as
``self.saved``); ``backward(self, grad)`` receives the gradient of the loss with respect to the
output and returns one gradient per input, each of that input's shape. ``Op.apply(*tensors)``
runs it on tensors and records it on the tape. Forward is written for you; write the backward.

    pytest exercises/test_backward_ops.py
"""
import numpy as np

from minigrad.autograd import Function
from minigrad.ops import unbroadcast   # unbroadcast(g, shape): sum g over the axes broadcasting added


class Mul(Function):
    """a * b, with NumPy broadcasting."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad):
        # d(a*b)/da = b and d(a*b)/db = a; where an input was broadcast, sum back to its shape
        raise NotImplementedError("exercise (a): write Mul.backward")


class Tanh(Function):
    """tanh(a), elementwise."""

    def forward(self, a):
        out = np.tanh(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        # the derivative of tanh can be written with its output alone
        raise NotImplementedError("exercise (a): write Tanh.backward")


class MatMul(Function):
    """a @ b for 2-D a (m, k) and b (k, n)."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a @ b

    def backward(self, grad):
        # grad has shape (m, n); the results must have shapes (m, k) and (k, n)
        raise NotImplementedError("exercise (a): write MatMul.backward")


class Sum(Function):
    """The sum of every element: a 0-d array."""

    def forward(self, a):
        self.shape = a.shape
        return np.asarray(a.sum())

    def backward(self, grad):
        # every element contributed once
        raise NotImplementedError("exercise (a): write Sum.backward")
