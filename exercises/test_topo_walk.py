"""Exercise (b): the order is topological, each node appears once, and the gradients are right."""
import random

import pytest

EXERCISE = "topo_walk"


def random_graph(ex, seed, n_leaves=3, n_ops=25):
    rng = random.Random(seed)
    leaves = [ex.Node(rng.uniform(-1, 1)) for _ in range(n_leaves)]
    nodes = list(leaves)
    for _ in range(n_ops):
        op = rng.choice(["add", "mul", "tanh"])
        a, b = rng.choice(nodes), rng.choice(nodes)   # inputs may repeat: b = a + a
        nodes.append(ex.tanh(a) if op == "tanh" else getattr(ex, op)(a, b))
    return leaves, nodes[-1]


def evaluate(ex, seed, leaf_values):
    """Rebuild the same random graph from other leaf values and return the root's value."""
    rng = random.Random(seed)
    leaves = [ex.Node(rng.uniform(-1, 1)) for _ in range(len(leaf_values))]
    for leaf, v in zip(leaves, leaf_values):
        leaf.value = v
    nodes = list(leaves)
    for _ in range(25):
        op = rng.choice(["add", "mul", "tanh"])
        a, b = rng.choice(nodes), rng.choice(nodes)
        nodes.append(ex.tanh(a) if op == "tanh" else getattr(ex, op)(a, b))
    return nodes[-1].value


@pytest.mark.parametrize("seed", range(8))
def test_order_is_reverse_topological_and_complete(exercise, seed):
    _, root = random_graph(exercise, seed)
    order = exercise.reverse_topological(root)
    position = {id(n): k for k, n in enumerate(order)}
    assert order[0] is root and len(position) == len(order), "each node exactly once, the root first"
    reachable, stack = {id(root)}, [root]
    while stack:
        for inp in stack.pop().inputs:
            if id(inp) not in reachable:
                reachable.add(id(inp))
                stack.append(inp)
    assert set(position) == reachable, "every node the root depends on, and no other"
    for node in order:
        for inp in node.inputs:
            assert position[id(node)] < position[id(inp)], "a node comes before the nodes it reads"


def test_a_node_read_twice_gets_both_gradients(exercise):
    a = exercise.Node(3.0)
    b = exercise.add(a, a)            # db/da = 2
    c = exercise.mul(b, a)            # c = 2a², dc/da = 4a = 12
    exercise.backward(c)
    assert a.grad == 12.0 and b.grad == 3.0


@pytest.mark.parametrize("seed", range(8))
def test_gradients_match_central_differences(exercise, seed):
    leaves, root = random_graph(exercise, seed)
    exercise.backward(root)
    values, eps = [leaf.value for leaf in leaves], 1e-6
    for k, leaf in enumerate(leaves):
        up = values[:k] + [values[k] + eps] + values[k + 1:]
        down = values[:k] + [values[k] - eps] + values[k + 1:]
        numeric = (evaluate(exercise, seed, up) - evaluate(exercise, seed, down)) / (2 * eps)
        assert leaf.grad == pytest.approx(numeric, rel=1e-5, abs=1e-7)


def test_a_deep_chain_needs_no_recursion(exercise):
    x = exercise.Node(0.1)
    y = x
    for _ in range(10_000):           # far past Python's recursion limit
        y = exercise.add(y, x)
    exercise.backward(y)
    assert x.grad == 10_001.0
