"""SSD (Liu et al. 2016): the paper's maps and default-box counts, conv4_3's L2
normalization, the reduced VGG-16 and its weight conversion, targets, the mined loss."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
import tfzoo.data
from tfzoo.backbones import vgg
from tfzoo.data import schema
from tfzoo.layers import L2Normalization
from tfzoo.models import ssd
from tfzoo.ops import box_coder, matcher as matcher_ops

TINY = dict(ssd.SSD.tiny)


@pytest.mark.parametrize("name, maps, boxes", [
    ("ssd300", [38, 19, 10, 5, 3, 1], 8732),
    ("ssd512", [64, 32, 16, 8, 4, 2, 1], 24564),
    ("ssd_mobile", [20, 10, 5, 3, 2, 1], 2424),
])
def test_presets_have_the_papers_maps_and_default_boxes(name, maps, boxes):
    detector = tfzoo.build_model(name, backbone_weights=None)
    assert [h for h, _ in detector.map_sizes] == maps and detector.anchors.shape == (boxes, 4)
    per_location = detector.config.anchors_per_map
    assert sum(f * f * a for f, a in zip(maps, per_location)) == boxes
    # 20 VOC classes + background, one row per default box.
    assert detector(np.zeros([1, *detector.image_size, 3], np.float32))["class_logits"].shape == (1, boxes, 21)


def test_ssd300_holds_the_papers_layout():
    config = ssd.PRESETS["ssd300"]
    assert config.anchors_per_map == (4, 6, 6, 6, 4, 4)
    np.testing.assert_allclose(config.scales, [0.1, 0.2, 0.375, 0.55, 0.725, 0.9, 1.0])
    assert config.box_weights == (10.0, 10.0, 5.0, 5.0)  # variances 0.1, 0.1, 0.2, 0.2
    assert (config.score_threshold, config.nms_iou_threshold, config.max_detections) == (0.01, 0.45, 200)
    assert (config.optimizer, config.learning_rate, config.momentum, config.weight_decay) == ("sgd", 1e-3, 0.9, 5e-4)
    detector = tfzoo.build_model("ssd300", backbone_weights=None)
    norm = detector.get_layer("conv4_3_norm")
    assert np.allclose(norm.gamma.numpy(), 20.0) and norm.gamma.shape == (512,)
    fc6 = detector.get_layer("backbone").get_layer("fc6")
    assert fc6.dilation_rate == (6, 6) and fc6.filters == 1024 and fc6.kernel_size == (3, 3)


def test_l2_normalization_is_unit_norm_times_the_learned_scale():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype(np.float32)
    layer = L2Normalization(20.0)
    want = x / np.sqrt((x ** 2).sum(-1, keepdims=True) + 1e-10) * 20.0
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-5)
    layer.gamma.assign(np.arange(8, dtype=np.float32))
    np.testing.assert_allclose(layer(x).numpy(), want / 20.0 * np.arange(8), rtol=1e-5, atol=1e-6)


def test_vgg16_fc_layers_are_subsampled_into_fc6_and_fc7():
    """The paper's conversion on random weights: fc6 keeps rows and columns 0, 3, 6 of the
    7x7 kernel and every 4th output; fc7 every 4th input and output."""
    rng = np.random.default_rng(0)
    fc1, b1 = rng.normal(size=(7 * 7 * 512, 4096)), rng.normal(size=4096)
    fc2, b2 = rng.normal(size=(4096, 4096)), rng.normal(size=4096)
    k6, c6, k7, c7 = vgg.reduce_fc(fc1, b1, fc2, b2)
    assert k6.shape == (3, 3, 512, 1024) and k7.shape == (1, 1, 1024, 1024)
    assert k6[1, 2, 7, 5] == fc1.reshape(7, 7, 512, 4096)[3, 6, 7, 20]
    assert c6[5] == b1[20] and k7[0, 0, 3, 5] == fc2[12, 20] and c7[5] == b2[20]


def test_vgg16_imagenet_layout_loads_by_name():
    """A keras.applications VGG-16 classifier's weights (random here: no download) land in
    the reduced trunk: the 13 convolutions by name, fc6/fc7 reduced."""
    keras.utils.set_random_seed(1)
    classifier = keras.applications.VGG16(include_top=True, weights=None)
    trunk, maps = vgg.vgg16_ssd((300, 300))
    vgg.load_vgg16_weights(trunk, classifier)
    for name in ("block1_conv1", "block4_conv3", "block5_conv3"):
        for got, want in zip(trunk.get_layer(name).get_weights(), classifier.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    k6, c6, _, _ = vgg.reduce_fc(*classifier.get_layer("fc1").get_weights(), *classifier.get_layer("fc2").get_weights())
    np.testing.assert_array_equal(trunk.get_layer("fc6").get_weights()[0], k6)
    assert tuple(maps["conv4_3"].shape[1:]) == (38, 38, 512) and tuple(maps["fc7"].shape[1:]) == (19, 19, 1024)


def _tiny():
    keras.utils.set_random_seed(0)
    return tfzoo.build_model("ssd300", **{**TINY, "num_classes": 3})


def test_targets_match_each_object_and_encode_its_box():
    detector = _tiny()
    anchors = detector.anchors.numpy()
    box = np.array([[0.2, 0.1, 0.7, 0.5]], np.float32)
    targets = detector.encoder.box_targets({schema.BOXES: tf.constant(box), schema.CLASSES: tf.constant([2]),
                                           schema.IS_CROWD: tf.constant([False]),
                                           schema.DIFFICULT: tf.constant([False])})
    classes = targets["classes"].numpy()
    best = int(np.argmax(tfzoo.ops.boxes.iou(anchors, box).numpy()[:, 0]))
    assert classes[best] == 2  # the object's best default box, whatever its IoU
    positives = np.flatnonzero(classes >= 0)
    decoded = box_coder.decode(targets["box_deltas"].numpy()[positives], anchors[positives], (10, 10, 5, 5)).numpy()
    np.testing.assert_allclose(decoded, np.repeat(box, len(positives), 0), atol=1e-5)
    assert set(classes[classes < 0]) == {matcher_ops.BACKGROUND}


def test_compiled_targets_equal_the_plain_ones():
    """The encoder's targets are XLA-compiled in tf.data (``xla_targets``): the same classes
    and deltas as the eager ones, on SSD300's 8,732 boxes with a crowd object and padding."""
    anchors = ssd.default_boxes(ssd.PRESETS["ssd300"], [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)])
    encoder = ssd.SSDEncoder(ssd.PRESETS["ssd300"], anchors)
    assert encoder.xla_targets
    corners = np.array([[0.1, 0.1, 0.4, 0.35], [0.3, 0.3, 0.9, 0.9], [0.5, 0.05, 0.7, 0.3],
                        [0.05, 0.6, 0.3, 0.95], [0.62, 0.6, 0.8, 0.83]], np.float32)
    example = {schema.IMAGE: tf.zeros([300, 300, 3]), schema.BOXES: tf.constant(corners),
               schema.CLASSES: tf.constant([0, 4, 7, 2, 2]), schema.IS_CROWD: tf.constant([False, True] + [False] * 3),
               schema.DIFFICULT: tf.zeros([5], tf.bool), schema.IMAGE_ID: tf.constant("x")}
    compiled = encoder.targets(example)
    plain = encoder.box_targets({k: example[k] for k in schema.BOX_KEYS})
    np.testing.assert_array_equal(compiled["classes"].numpy(), plain["classes"].numpy())
    assert (plain["classes"].numpy() == matcher_ops.IGNORE).any() and (plain["classes"].numpy() >= 0).sum() >= 4
    np.testing.assert_allclose(compiled["box_deltas"].numpy(), plain["box_deltas"].numpy(), atol=1e-4)


def test_loss_mines_three_negatives_per_positive_and_survives_an_empty_image():
    """cls_loss = (CE over positives + CE over the 3 N hardest background boxes) / N and
    box_loss the positives' smooth L1 / N, against NumPy; no positives: box 0, cls finite."""
    detector = _tiny()
    a = detector.anchors.shape[0]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, a, 4)).astype(np.float32)
    deltas = rng.normal(size=(1, a, 4)).astype(np.float32)
    classes = np.full((1, a), matcher_ops.BACKGROUND, np.int32)
    classes[0, :2] = [0, 2]
    classes[0, 5] = matcher_ops.IGNORE
    target_deltas = rng.normal(size=(1, a, 4)).astype(np.float32)
    losses = detector.compute_losses({"classes": classes, "box_deltas": target_deltas},
                                     {"class_logits": logits, "box_deltas": deltas})
    z = logits[0] - logits[0].max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ce = -log_p[np.arange(a), np.where(classes[0] >= 0, classes[0], 3)]
    background = np.flatnonzero(classes[0] == matcher_ops.BACKGROUND)
    hardest = background[np.argsort(-ce[background], kind="stable")[:6]]
    want_cls = (ce[:2].sum() + ce[hardest].sum()) / 2
    diff = np.abs(deltas[0, :2] - target_deltas[0, :2])
    want_box = np.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5).sum() / 2
    assert float(losses["cls_loss"]) == pytest.approx(want_cls, rel=1e-5)
    assert float(losses["box_loss"]) == pytest.approx(want_box, rel=1e-5)
    empty = np.full((1, a), matcher_ops.BACKGROUND, np.int32)
    losses = detector.compute_losses({"classes": empty, "box_deltas": target_deltas},
                                     {"class_logits": logits, "box_deltas": deltas})
    assert float(losses["box_loss"]) == 0.0 and np.isfinite(float(losses["cls_loss"]))


def test_decoder_keeps_the_top_scoring_boxes_of_each_class():
    detector = _tiny()
    a = detector.anchors.shape[0]
    logits = np.full((1, a, 4), -10.0, np.float32)
    logits[..., 3] = 10.0  # background everywhere ...
    logits[0, 7] = [10.0, -10.0, -10.0, -10.0]  # ... except one box of class 0
    out = detector.decode({"class_logits": logits, "box_deltas": np.zeros((1, a, 4), np.float32)})
    assert int(out["num_detections"][0]) == 1 and int(out["detection_classes"][0, 0]) == 0
    np.testing.assert_allclose(out["detection_boxes"][0, 0], np.clip(detector.anchors.numpy()[7], 0, 1), atol=1e-6)


@pytest.mark.slow
def test_tfzoo_train_runs_ssd_with_no_ssd_specific_flag(tmp_path):
    """``tfzoo train``'s path (recipe, SSD augmentation, checkpoint, evaluation) for an SSD
    preset, on its tiny widths, in mixed precision, then resumed to one more epoch."""
    import json

    from tfzoo import train as T

    settings = [f"{k}={json.dumps(v)}" for k, v in TINY.items() if k not in ("image_size", "num_classes")]
    run = dict(out=str(tmp_path / "run"), image_size=64, batch_size=4, settings=settings, val_data="shapes:4",
               diagnostics=False, verbose=0)
    result = T.train("ssd_mobile", "shapes:8", epochs=1, mixed_precision=True, **run)
    assert result.finished and result.steps == 2 and np.isfinite(result.history["loss"]).all()
    assert result.detector.config.augment == "ssd" and set(result.metrics) >= {"AP", "AP50"}
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert state["precision"] == "mixed_bfloat16"
    resumed = T.train("ssd_mobile", "shapes:8", epochs=2, resume=True, mixed_precision=True, **run)
    assert resumed.finished and resumed.steps == 4 and np.isfinite(resumed.history["loss"]).all()
    assert json.loads((tmp_path / "run" / T.STATE_FILE).read_text())["epoch"] == 2


@pytest.mark.slow
def test_int8_export_keeps_the_softmax_scores_float(tmp_path):
    """The int8 TFLite file quantizes the network and keeps the decoder float32: the class
    probabilities never pass through an int8 grid (a slice of the softmax's output was
    quantized with it until the decoder sliced the logits instead)."""
    from tfzoo.export import export_tflite, load_model
    from tfzoo.export.tflite import decoder_requantizations, op_input_types

    detector = _tiny()
    images = tfzoo.data.pipeline(tfzoo.data.load("shapes:4", "train"), detector, 1, training=False)
    path = export_tflite(detector, str(tmp_path / "int8.tflite"), quantize="int8", calibration_images=images)
    model_bytes = (tmp_path / "int8.tflite").read_bytes()
    assert not decoder_requantizations(model_bytes)
    types = op_input_types(model_bytes)
    assert "INT8" in types["CONV_2D"] and types["EXP"] == {"FLOAT32"}
    assert load_model(path).detect(np.zeros([1, 64, 64, 3], np.float32))["num_detections"].shape == (1,)
