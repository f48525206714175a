"""tfzoo.pretrain: formula-driven backbone pretraining writes weights keras.applications loads."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfzoo import pretrain


def test_help_is_quick_and_names_the_options():
    done = subprocess.run([sys.executable, "-m", "tfzoo.pretrain", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--categories" in done.stdout and "FractalDB" in done.stdout


def test_budget_is_steps_or_minutes(tmp_path):
    with pytest.raises(ValueError, match="exactly one of steps and minutes"):
        pretrain.pretrain(str(tmp_path / "w.weights.h5"), steps=None, minutes=None)


@pytest.mark.slow  # builds and trains a MobileNetV2 for a few steps
def test_pretrain_writes_backbone_weights_that_keras_applications_loads(tmp_path):
    import keras

    out = tmp_path / "w.weights.h5"
    report = pretrain.pretrain(str(out), categories=3, instances=4, image_size=32, batch_size=4, steps=3,
                               progress=False)
    assert report["steps"] == 3 and report["categories"] == 3 and report["chance_top1"] == pytest.approx(1 / 3, abs=1e-4)
    assert 0.0 <= report["held_out_top1"] <= 1.0
    assert json.loads((tmp_path / "w.weights.h5.json").read_text()) == report
    assert sorted(os.listdir(tmp_path)) == ["w.weights.h5", "w.weights.h5.json"]  # no temporary file left
    # The file is the application's own layout: keras.applications loads it at another input size.
    app = keras.applications.MobileNetV2(include_top=False, weights=str(out), input_shape=(64, 64, 3), alpha=0.5)
    fresh = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3), alpha=0.5)
    loaded, random = app.get_weights(), fresh.get_weights()
    assert len(loaded) == len(random)
    assert any(not np.allclose(a, b) for a, b in zip(loaded, random))  # trained weights, not a fresh init


def test_colour_batch_keeps_the_shape_and_hides_the_class_colour():
    import tensorflow as tf

    masks = np.zeros([2, 32, 32], np.uint8)
    masks[:, 8:24, 8:24] = 255
    images = pretrain.colour_batch(tf.constant(masks), tf.constant([3, 4], tf.int64)).numpy()
    assert images.shape == (2, 32, 32, 3) and images.min() >= 0 and images.max() <= 255
    again = pretrain.colour_batch(tf.constant(masks), tf.constant([3, 4], tf.int64)).numpy()
    np.testing.assert_array_equal(images, again)  # stateless
    lum = images @ np.array([0.299, 0.587, 0.114])
    for k in range(2):
        assert abs(lum[k][masks[k] > 0].mean() - lum[k][masks[k] == 0].mean()) > 20
    assert not np.allclose(images[0], images[1])  # each image its own colours
