"""Frozen inference (tfzoo.export.frozen): the same detections as the variable-weight
path, on every detector kind, a loaded SavedModel's signature included."""
import numpy as np
import pytest
import tensorflow as tf

import tfzoo.models
from tests.export import helpers
from tfzoo.export import frozen, load_model
from tfzoo.models import MODELS

#: float32 rounding: Grappler folds each batch norm into its convolution in the frozen graph.
TOLERANCE = 1e-4


def _same(got, want):
    assert set(got) == set(want)
    np.testing.assert_array_equal(np.asarray(got["num_detections"]), np.asarray(want["num_detections"]))
    np.testing.assert_array_equal(np.asarray(got["detection_classes"]), np.asarray(want["detection_classes"]))
    for key in ("detection_boxes", "detection_scores"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=TOLERANCE)


@pytest.mark.parametrize("name", ["yolov3_tiny", "fast_rcnn_mobile"])
def test_frozen_detect_equals_detect_and_reads_no_variable(name):
    preset = MODELS[name]
    detector = preset(**{**preset.detector.tiny, "num_classes": 3})
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, [2, 64, 64, 3]).astype(np.float32)
    inputs = images
    if "proposals" in detector.input_names:  # a proposal-based detector takes its proposals in a dict
        corners = np.sort(rng.uniform(0, 1, [2, detector.config.max_proposals, 2, 2]), axis=2)
        inputs = {"images": images, "proposals": corners.reshape(2, -1, 4)[..., [0, 2, 1, 3]].astype(np.float32)}
    fn = frozen.freeze_detect(detector)
    graph_ops = {op.type for op in fn._frozen.graph.get_operations()}
    assert not graph_ops & {"ReadVariableOp", "VarHandleOp"} and not fn._frozen.variables, "a variable is still read"
    _same(fn(inputs), detector.predict_on_batch(inputs))
    wrong = {"image": images} if isinstance(inputs, dict) else {"images": images}
    with pytest.raises(ValueError, match="this frozen function takes"):
        fn(wrong)
    # Frozen weights are those of the moment of freezing.
    detector.set_weights([w * 0.5 for w in detector.get_weights()])
    assert not np.allclose(np.asarray(fn(inputs)["detection_scores"]),
                           np.asarray(detector.predict_on_batch(inputs)["detection_scores"]))


def test_frozen_keeps_a_batch_of_one_when_asked():
    detector = tfzoo.models.MODELS["yolov3_tiny"](**{**tfzoo.models.MODELS["yolov3_tiny"].detector.tiny,
                                                      "num_classes": 3})
    fn = frozen.freeze_detect(detector, batch_size=1)
    assert fn.input_signature.shape.as_list() == [1, 64, 64, 3]
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        fn(np.zeros([2, 64, 64, 3], np.float32))


@pytest.mark.parametrize("kind", ["keras", "saved_model", "tflite"])
def test_loaded_models_freeze_with_the_same_detections(kind, artifacts_dir):
    model = load_model(helpers.artifact(kind, artifacts_dir), trust_model=True)
    fast = model.frozen()
    assert fast.is_frozen == (kind != "tflite") and fast.frozen() is fast
    if kind == "tflite":  # weights are constants in the file already
        assert fast is model
        return
    assert not model.is_frozen and fast.format == model.format and fast.class_names == model.class_names
    images = helpers.sample_images(2)
    _same(fast.detect(images), model.detect(images))
    original = images[0, 5:60, :50].astype(np.uint8)  # any size: resized, then the frozen detect (predict)
    got, want = fast.detect_original(original), model.detect_original(original)
    assert got["num_detections"] == want["num_detections"]
    np.testing.assert_allclose(got["detection_boxes"], want["detection_boxes"], atol=1e-4)
    if kind == "keras":  # --image-size after --frozen keeps it frozen
        assert model.frozen().with_image_size(96).is_frozen
