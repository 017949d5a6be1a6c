"""Exercise (b), solved: the reverse topological walk."""
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
    consumers, seen, stack = {id(root): 0}, {id(root)}, [root]
    while stack:                                   # count, for each node, the edges that read it
        node = stack.pop()
        for inp in node.inputs:
            consumers[id(inp)] = consumers.get(id(inp), 0) + 1
            if id(inp) not in seen:
                seen.add(id(inp))
                stack.append(inp)
    order, ready = [], [root]
    while ready:                                   # Kahn's algorithm: a node is ready once all its readers are placed
        node = ready.pop()
        order.append(node)
        for inp in node.inputs:
            consumers[id(inp)] -= 1
            if consumers[id(inp)] == 0:
                ready.append(inp)
    return order


def backward(root):
    """Set ``.grad`` of every node to d(root)/d(node), walking in reverse topological order."""
    order = reverse_topological(root)
    for node in order:
        node.grad = 0.0
    root.grad = 1.0
    for node in order:
        for inp, d in zip(node.inputs, node.local):
            inp.grad += node.grad * d
