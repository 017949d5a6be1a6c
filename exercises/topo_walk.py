"""Exercise (b): the reverse topological walk.

A tiny scalar graph: each ``Node`` holds its value, the nodes it read (``inputs``) and the local
derivatives d(node)/d(input) (``local``). Backward must visit a node only after *every* node that
read it has passed its gradient on; otherwise a node read twice (``b = a + a``) hands on half its
gradient. Write the walk without recursion: a chain of 10,000 nodes must not hit Python's
recursion limit.

    pytest exercises/test_topo_walk.py
"""
import math


class Node:
    """One scalar operation: its value, its inputs, d(node)/d(input) for each, and its gradient."""

    def __init__(self, value, inputs=(), local=()):
        self.value, self.inputs, self.local = float(value), tuple(inputs), tuple(local)
        self.grad = 0.0


def add(a, b):
    return Node(a.value + b.value, (a, b), (1.0, 1.0))


def mul(a, b):
    return Node(a.value * b.value, (a, b), (b.value, a.value))


def tanh(a):
    t = math.tanh(a.value)
    return Node(t, (a,), (1.0 - t * t,))


def reverse_topological(root):
    """Every node ``root`` depends on, once each, ``root`` first and every node before its inputs."""
    # hint: collect the nodes with an explicit stack, then order them (e.g. count each node's
    # consumers and release a node when its last consumer has been placed)
    raise NotImplementedError("exercise (b): write reverse_topological")


def backward(root):
    """Set ``.grad`` of every node to d(root)/d(node), walking in reverse topological order."""
    raise NotImplementedError("exercise (b): write backward")
