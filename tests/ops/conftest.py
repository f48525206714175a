"""Shared helpers for the ops tests: run an op eagerly, under tf.function and in Dataset.map."""
import numpy as np
import pytest
import tensorflow as tf


def _numpy(structure):
    return tf.nest.map_structure(lambda t: np.asarray(t), structure)


def _assert_same(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    if np.issubdtype(a.dtype, np.floating):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(a, b)


def run_three_ways(fn, *args):
    """``fn(*args)`` eagerly, inside ``tf.function`` and inside ``tf.data.Dataset.map``.

    ``args`` are tensors (array-likes); static settings go in a closure. Returns the three
    results as NumPy structures, after asserting that they agree.
    """
    args = tuple(tf.convert_to_tensor(a) for a in args)
    eager = _numpy(fn(*args))
    graph = _numpy(tf.function(fn)(*args))
    dataset = tf.data.Dataset.from_tensors(args).map(lambda *xs: fn(*xs))
    mapped = _numpy(next(iter(dataset)))
    for other in (graph, mapped):
        tf.nest.map_structure(_assert_same, eager, other)
    return eager


@pytest.fixture
def three_ways():
    """The :func:`run_three_ways` helper as a fixture."""
    return run_three_ways


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_boxes(rng, shape, min_size=0.01):
    """Valid normalized ``[y1, x1, y2, x2]`` boxes of ``shape + [4]``."""
    y = np.sort(rng.uniform(0, 1, size=tuple(shape) + (2,)), axis=-1)
    x = np.sort(rng.uniform(0, 1, size=tuple(shape) + (2,)), axis=-1)
    y[..., 1] = np.maximum(y[..., 1], y[..., 0] + min_size)
    x[..., 1] = np.maximum(x[..., 1], x[..., 0] + min_size)
    return np.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], axis=-1).astype(np.float32)


@pytest.fixture
def make_boxes(rng):
    """``make_boxes(*shape)`` -> random valid boxes ``shape + [4]`` (seeded)."""
    return lambda *shape: random_boxes(rng, shape)


@pytest.fixture
def tflite_op_names():
    """``tflite_op_names(model_bytes)`` -> set of operator names in a ``.tflite`` model."""
    from tfzoo.export.tflite import op_names

    return op_names
