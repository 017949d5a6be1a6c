"""Exercise (e): exact gradients, BatchNorm updated once, dropout replayed, generators untouched."""
import numpy as np

import minigrad as mg

EXERCISE = "safe_checkpoint"


def segment_of(*layers):
    calls = [0]

    def segment(x):
        calls[0] += 1
        for layer in layers:
            x = layer(x)
        return x
    return segment, calls


def step(exercise, layers, x, checkpointed):
    segment, calls = segment_of(*layers)
    y = exercise.SegmentCheckpoint.apply(x, fn=segment) if checkpointed else segment(x)
    noise = mg.randn(*y.shape) * 0.01      # random numbers drawn between the forward and the backward
    ((y + noise) * y).sum().backward()
    return calls[0]


def grads(layers, x):
    return [x.grad.numpy().copy()] + [p.grad.numpy().copy() for layer in layers for p in layer.parameters()]


def fresh(seed=0):
    mg.manual_seed(seed)
    layers = [mg.nn.Linear(6, 6), mg.nn.BatchNorm1d(6), mg.nn.Tanh(), mg.nn.Dropout(0.5), mg.nn.Linear(6, 3)]
    x = mg.tensor(np.random.default_rng(seed).standard_normal((16, 6)).astype(np.float32), requires_grad=True)
    return layers, x


def test_gradients_are_bit_identical_and_the_segment_runs_twice(exercise):
    layers, x = fresh()
    mg.manual_seed(1)
    assert step(exercise, layers, x, checkpointed=False) == 1
    plain = grads(layers, x)
    layers, x = fresh()
    mg.manual_seed(1)
    assert step(exercise, layers, x, checkpointed=True) == 2, "forward, then the recompute"
    for a, b in zip(grads(layers, x), plain):
        assert np.array_equal(a, b), "dropout must draw the same mask when recomputed"


def test_batchnorm_statistics_are_updated_once(exercise):
    layers, x = fresh()
    step(exercise, layers, x, checkpointed=False)
    plain = (layers[1].running_mean.numpy().copy(), layers[1].running_var.numpy().copy())
    layers, x = fresh()
    step(exercise, layers, x, checkpointed=True)
    assert int(layers[1].num_batches_tracked.item()) == 1
    assert np.array_equal(layers[1].running_mean.numpy(), plain[0])
    assert np.array_equal(layers[1].running_var.numpy(), plain[1])


def test_the_next_random_numbers_are_those_of_a_step_without_checkpointing(exercise):
    layers, x = fresh()
    mg.manual_seed(2)
    step(exercise, layers, x, checkpointed=False)
    after_plain = mg.randn(5).numpy()
    layers, x = fresh()
    mg.manual_seed(2)
    step(exercise, layers, x, checkpointed=True)
    assert np.array_equal(mg.randn(5).numpy(), after_plain)


def test_nothing_inside_the_segment_is_kept(exercise):
    layers, x = fresh()
    segment, _ = segment_of(*layers)
    y = exercise.SegmentCheckpoint.apply(x, fn=segment)
    assert mg.tape(y).saved_bytes == x.data.nbytes, "the node saves its input, nothing else"
