"""A tiny detector with distinct, confident scores and its exports, built once per session.

Tests in ``tests/export`` and ``tests/test_cli.py`` share them through :func:`artifact`
(exports take seconds each, so every kind is written once and only read afterwards).
"""
from __future__ import annotations

import functools
import os

import numpy as np

import tfzoo
import tfzoo.data

IMAGE_SIZE = 64
CLASS_NAMES = tuple(tfzoo.data.class_names("shapes"))
#: The tiny model's score threshold; detections near it may flip between formats.
SCORE_THRESHOLD = 0.3


def _batch_norms(layer):
    import keras

    for inner in getattr(layer, "layers", []):
        yield from _batch_norms(inner)
    if isinstance(layer, keras.layers.BatchNormalization):
        yield layer


#: Fraction of (anchor, class) pairs of the sample images the tiny detector scores above
#: SCORE_THRESHOLD, and the spread (std) of its class logits and box deltas.
CANDIDATE_FRACTION = 0.004
LOGIT_STD = 1.5
DELTA_STD = 0.2


def _rescale_predict_layer(model, name, images, output_key, target_std, rng):
    """Seeded random kernel for ``name`` scaled so that ``output_key`` has std ``target_std``."""
    layer = model.get_layer(name)
    # [kernel], or [depthwise, pointwise] in separable heads (the depthwise one keeps its
    # seeded initialization; the pointwise one is drawn and scaled)
    *kernels, bias = layer.get_weights()
    kernels[-1] = rng.normal(0.0, 1.0, kernels[-1].shape).astype(np.float32)
    layer.set_weights([*kernels, np.zeros_like(bias)])
    std = float(np.std(np.asarray(model(images, training=False)[output_key])))
    kernels[-1] *= target_std / std
    layer.set_weights([*kernels, np.zeros_like(bias)])


@functools.lru_cache(maxsize=None)
def detector():
    """Tiny RetinaNet (64 px, 5 shapes classes) with spread-out, distinct scores and boxes.

    A freshly initialized RetinaNet detects nothing useful for parity tests: a random
    backbone's inference-mode batch norms shrink its features to ~1e-11 and the heads
    score every anchor at the 0.01 prior (ties everywhere). So the batch-norm statistics
    are set from one batch of shapes images (momentum 0, one training-mode pass), the
    output convs get seeded random kernels scaled to a fixed output spread, and the class
    bias is set so that a small fraction of (anchor, class) pairs clears the score
    threshold: a few to a few dozen distinct detections per image, whatever the preset's
    head layout.
    """
    import keras

    keras.utils.set_random_seed(0)
    model = tfzoo.build_model(
        "retinanet_mobile", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, backbone_weights=None,
        image_size=IMAGE_SIZE, backbone_alpha=0.35, fpn_channels=16, head_channels=16, head_convs=1,
        score_threshold=SCORE_THRESHOLD,
    )
    images = sample_images(8)
    norms = list(_batch_norms(model))
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    rng = np.random.default_rng(0)
    _rescale_predict_layer(model, "box_head_predict", images, "box_deltas", DELTA_STD, rng)
    _rescale_predict_layer(model, "class_head_predict", images, "class_logits", LOGIT_STD, rng)
    logits = np.asarray(model(images, training=False)["class_logits"])
    threshold_logit = np.log(SCORE_THRESHOLD / (1.0 - SCORE_THRESHOLD))
    layer = model.get_layer("class_head_predict")
    *kernels, bias = layer.get_weights()
    bias = np.full_like(bias, threshold_logit - np.quantile(logits, 1.0 - CANDIDATE_FRACTION))
    layer.set_weights([*kernels, bias])
    return model


def sample_images(count=2):
    """The first ``count`` shapes val images, letterboxed: float32 ``[count, S, S, 3]``."""
    from tfzoo.data import augment

    images = [augment.resize_and_pad(example, IMAGE_SIZE)["image"].numpy()
              for example in tfzoo.data.load(f"shapes:{count}", "val").as_numpy_iterator()]
    return np.stack(images).astype(np.float32)


def keras_raw_outputs(detector, images):
    """The Keras model's raw outputs in graph mode (as ``predict`` runs it), NumPy dict."""
    import tensorflow as tf

    outputs = tf.function(lambda x: detector(x, training=False))(tf.constant(images, tf.float32))
    return {k: v.numpy() for k, v in outputs.items()}


def assert_close_to_scale(got, want, tolerance):
    """``max |got - want| <= tolerance * max(1, max |want|)``.

    Float32 networks run by different kernels (oneDNN graph vs eager, XNNPACK) agree to
    about 1e-5 of their output scale, not absolutely: class logits reach ~10.
    """
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.max(np.abs(want))))
    diff = float(np.max(np.abs(got - want)))
    assert diff <= tolerance * scale, f"max difference {diff:g} > {tolerance:g} x scale {scale:g}"


_PATHS = {}


def artifact(kind, base_dir):
    """Path of the tiny detector's artifact ``kind``, written under ``base_dir`` on first use.

    Kinds: ``keras`` (a ``.keras`` file), ``run`` (a training directory: model.keras +
    config.json), ``saved_model`` (directory), ``tflite`` (float32, with the raw_outputs
    signature), ``tflite_int8`` (full integer, calibrated on 8 val images, with raw_outputs),
    ``h5``.
    """
    if kind in _PATHS and os.path.exists(_PATHS[kind]):
        return _PATHS[kind]
    from tfzoo import export

    model = detector()
    base_dir = str(base_dir)
    if kind == "keras":
        path = os.path.join(base_dir, "tiny.keras")
        model.save(path)
    elif kind == "run":
        path = os.path.join(base_dir, "run")
        os.makedirs(path, exist_ok=True)
        model.save(os.path.join(path, "model.keras"))
        model.save_config(os.path.join(path, "config.json"))
    elif kind == "saved_model":
        path = export.export_saved_model(model, os.path.join(base_dir, "saved_model"))
    elif kind == "tflite":
        path = export.export_tflite(model, os.path.join(base_dir, "tiny_fp32.tflite"), raw_outputs=True)
    elif kind == "tflite_int8":
        path = export.export_tflite(model, os.path.join(base_dir, "tiny_int8.tflite"), quantize="int8",
                                    calibration_images=sample_images(8), raw_outputs=True)
    elif kind == "h5":
        import warnings

        path = os.path.join(base_dir, "tiny.h5")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras: "HDF5 is a legacy format"
            model.save(path)
    else:
        raise ValueError(f"unknown artifact kind {kind!r}")
    _PATHS[kind] = path
    return path
