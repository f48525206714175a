"""The Detector contract, checked on every registered detector (tiny configurations)."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
from tfzoo.data import schema
from tfzoo.models import MODELS
from tfzoo.models.base import Detector
from tests.models.conftest import build_tiny

DETECTION_KEYS = {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}


def _example(boxes, classes, size):
    """One canonical example with an all-grey image of ``size``."""
    n = len(classes)
    return {
        schema.IMAGE: tf.fill([size, size, 3], 127.0),
        schema.BOXES: tf.constant(np.asarray(boxes, np.float32).reshape(-1, 4)),
        schema.CLASSES: tf.constant(classes, tf.int32),
        schema.IS_CROWD: tf.zeros([n], tf.bool),
        schema.DIFFICULT: tf.zeros([n], tf.bool),
        schema.IMAGE_ID: tf.constant("x"),
    }


@pytest.fixture(scope="module", params=sorted(MODELS))
def detector(request):
    keras.utils.set_random_seed(0)
    return build_tiny(request.param)


def test_is_a_functional_keras_detector(detector):
    assert isinstance(detector, Detector) and isinstance(detector, keras.Model)
    assert detector.config.num_classes == 3
    assert detector.image_size == (64, 64)
    assert callable(detector.encoder.encode)


def test_raw_outputs_and_detections_shapes_and_dtypes(detector):
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    raw = detector(images)
    for value in tf.nest.flatten(raw):
        assert value.dtype == tf.float32 and value.shape[0] == 2
    out = detector.predict(images, verbose=0)
    assert set(out) == DETECTION_KEYS
    m = detector.config.max_detections
    assert out["detection_boxes"].shape == (2, m, 4) and out["detection_boxes"].dtype == np.float32
    assert out["detection_scores"].shape == (2, m)
    assert out["detection_classes"].shape == (2, m) and out["detection_classes"].dtype == np.int32
    assert out["num_detections"].shape == (2,) and out["num_detections"].dtype == np.int32
    same = detector.predict_on_batch(images)
    np.testing.assert_allclose(same["detection_scores"], out["detection_scores"], atol=1e-6)


def test_uint8_inputs_equal_float_inputs(detector):
    images = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)
    a = detector(images)
    b = detector(images.astype(np.float32))
    tf.nest.map_structure(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), a, b)


def test_one_fit_step_gives_finite_losses_and_changes_weights(detector):
    dataset = tfzoo.data.load("shapes:4", "train")
    batches = tfzoo.data.pipeline(dataset, detector, batch_size=2, training=True, seed=0)
    detector.compile(optimizer=keras.optimizers.SGD(1e-3))
    before = [w.numpy().copy() for w in detector.trainable_weights[-2:]]
    history = detector.fit(batches.take(1), epochs=1, verbose=0).history
    for key in ("loss", "cls_loss", "box_loss"):
        assert np.isfinite(history[key][-1]), (key, history)
    assert history["loss"][-1] > 0
    after = [w.numpy() for w in detector.trainable_weights[-2:]]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_image_without_objects_gives_zero_box_loss(detector):
    example = _example(np.zeros([0, 4]), [], 64)
    inputs, targets = detector.encoder.encode(example)
    targets = tf.nest.map_structure(lambda t: t[None], targets)
    losses = detector.compute_losses(targets, detector(inputs[None]))
    assert float(losses["box_loss"]) == 0.0
    assert np.isfinite(float(losses["cls_loss"])) and float(losses["cls_loss"]) > 0


def test_keras_file_round_trip_in_safe_mode(detector, tmp_path):
    path = str(tmp_path / "model.keras")
    detector.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(detector)
    assert loaded.config == detector.config.replace(backbone_weights=None)
    images = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    tf.nest.map_structure(
        lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), detector(images), loaded(images)
    )


def test_config_saves_as_json_and_rebuilds(detector, tmp_path):
    path = tmp_path / "config.json"
    detector.save_config(path)
    values = json.loads(path.read_text())
    assert values["num_classes"] == 3 and values["name"] == detector.config.name
    assert type(detector.config).from_dict(values) == detector.config


def test_with_image_size_serves_the_same_weights_at_another_size(detector):
    name = detector.config.name
    copy = detector.with_image_size(96)
    assert copy.image_size == (96, 96) and copy.config == detector.config.replace(image_size=96)
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    for got, want in zip(copy.get_weights(), detector.get_weights()):
        np.testing.assert_array_equal(got, want)
    # Exactly a model built at 96 holding these weights: its anchors and its outputs.
    fresh = build_tiny(name, image_size=96)
    fresh.set_weights(detector.get_weights())
    if hasattr(fresh, "anchors"):
        np.testing.assert_array_equal(np.asarray(copy.anchors), np.asarray(fresh.anchors))
    images = np.random.default_rng(1).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)
    for key, value in fresh(images).items():
        np.testing.assert_allclose(copy(images)[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-5)
    out = copy.predict_on_batch(images)
    assert out["detection_boxes"].shape == (1, detector.config.max_detections, 4)
    assert detector.with_image_size(64) is detector  # its own size: itself (already float32)
    for bad in (16, 64.5, "big"):
        with pytest.raises((ValueError, TypeError)):
            detector.with_image_size(bad)
