"""Faster R-CNN (Ren et al. 2015): the seed's anchors, the two-stage training path (RoIs
sampled with the ground truth in the loss, the head's weights shared with the graph),
the decoder, and an int8 export with the proposal layer, RoI crops and decoder in float32."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
import tfzoo.data
from tfzoo.models import faster_rcnn as frcnn
from tfzoo.ops import anchors as anchor_ops
from tfzoo.ops import box_coder

TINY = dict(frcnn.FasterRCNN.tiny)


def _tiny(name="faster_rcnn_mobile", **overrides):
    keras.utils.set_random_seed(0)
    return tfzoo.build_model(name, **{**TINY, "num_classes": 5, **overrides})


def test_the_papers_anchors_and_settings():
    config = frcnn.PRESETS["faster_rcnn"]
    assert (config.backbone, config.image_size, config.num_anchors) == ("vgg16", 800, 9)
    anchors = frcnn.anchors_of((50, 50), 800, 16, config.anchor_ratios, config.anchor_scales)
    assert anchors.shape == (22500, 4)
    np.testing.assert_allclose(anchors[:9] * 800, anchor_ops.anchor_base(16, (0.5, 1.0, 2.0), (8, 16, 32)), atol=1e-3)
    assert (config.rpn_pre_nms_train, config.rpn_post_nms_train, config.rpn_pre_nms_test, config.rpn_post_nms_test) \
        == (12000, 2000, 6000, 300)
    assert (config.roi_samples, config.roi_positive_fraction, config.box_weights) == (128, 0.25, (10.0, 10.0, 5.0, 5.0))
    with pytest.raises(ValueError, match="at most as many proposals"):
        config.replace(rpn_post_nms_test=7000)


def test_fpn_preset_holds_the_papers_pyramid():
    config = frcnn.PRESETS["faster_rcnn_fpn"]
    assert (config.backbone, config.fpn, config.levels, config.roi_levels) == ("resnet50", True, (2, 3, 4, 5, 6), (2, 5))
    assert (config.num_anchors, config.head_fc, config.roi_samples, config.roi_positive_fraction) == (
        3, (1024, 1024), 512, 0.25)
    assert (config.rpn_post_nms_train, config.rpn_post_nms_test) == (2000, 1000)
    detector = _tiny("faster_rcnn_fpn_mobile", anchor_scales=(8.0,))
    assert detector.map_sizes == ((16, 16), (8, 8), (4, 4), (2, 2), (1, 1))  # P2 ... P6 at 64 px
    start = 0
    for level, count in zip(range(2, 7), detector.level_sizes):
        square = detector.anchors[start + 1] * 64  # ratio 1 is the second of (0.5, 1, 2)
        assert np.allclose(square[2:] - square[:2], 8 * 2 ** level)  # 32 px at P2 ... 512 at P6
        start += count
    assert set(detector.feature_keys) == {"rpn_features_p2", "rpn_features_p3", "rpn_features_p4", "rpn_features_p5"}


@pytest.mark.parametrize("name", ["faster_rcnn_mobile", "faster_rcnn_fpn_mobile"])
def test_training_head_shares_the_graphs_weights(name):
    detector = _tiny(name)
    assert detector.config.roi_samples == detector.config.rpn_post_nms_test  # one RoI count for both
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    out = detector(images, training=False)
    logits, deltas = detector._roi_head_model()([*(out[k] for k in detector.feature_keys), out["proposals"]],
                                                training=True)
    np.testing.assert_allclose(logits.numpy(), out["class_logits"].numpy(), atol=1e-4)
    np.testing.assert_allclose(deltas.numpy(), out["box_deltas"].numpy(), atol=1e-4)
    # fit's forward pass stops after the RPN; the loss runs the head on sampled RoIs
    assert set(detector(images, training=True)) == {"rpn_objectness", "rpn_deltas", *detector.feature_keys}
    before = [w.numpy().copy() for w in detector.get_layer("roi_fc0").weights]
    train = tfzoo.data.pipeline(tfzoo.data.load("shapes:4", "train"), detector, 2, training=True)
    detector.compile(optimizer=keras.optimizers.SGD(0.01))
    history = detector.fit(train, epochs=1, steps_per_epoch=2, verbose=0).history
    assert set(frcnn.FasterRCNN.loss_names) <= set(history) and np.isfinite(history["loss"]).all()
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, detector.get_layer("roi_fc0").weights))


def test_decoder_decodes_each_class_from_its_proposal_and_drops_padding():
    detector = _tiny()
    k = detector.config.num_classes
    proposals = np.zeros([1, 16, 4], np.float32)
    proposals[0, 0] = [0.2, 0.2, 0.6, 0.5]  # the rest: padding (zeros)
    logits = np.full([1, 16, k + 1], -10.0, np.float32)
    logits[:, :, -1] = 10.0  # background everywhere ...
    logits[0, 0, 3], logits[0, 0, -1] = 10.0, -10.0  # ... but proposal 0 is class 3
    logits[0, 5, 2], logits[0, 5, -1] = 10.0, -10.0  # a padding row that claims class 2
    deltas = np.zeros([1, 16, 4 * k], np.float32)
    deltas[0, 0, 12:16] = [1.0, 0.0, 0.0, 0.0]  # class 3's deltas move the box down by 0.1 of its height
    out = detector.decode({"proposals": proposals, "class_logits": logits, "box_deltas": deltas})
    assert int(out["num_detections"][0]) == 1 and int(out["detection_classes"][0, 0]) == 3
    want = box_coder.decode(deltas[0, 0, 12:16], proposals[0, 0], (10, 10, 5, 5)).numpy()
    np.testing.assert_allclose(out["detection_boxes"][0, 0], want, atol=1e-6)


@pytest.mark.slow
def test_int8_export_keeps_proposals_and_decoder_float_and_reads_crops_in_int8(tmp_path):
    """The RoI coordinates, proposals and decoder stay float32; the crops' table, gathers,
    weighted sums and max pooling run in int8 (a quarter of the float bytes)."""
    from tfzoo.export import export_tflite, load_model
    from tfzoo.export.tflite import decoder_requantizations, non_builtin_ops, op_input_types, op_names

    detector = _tiny()
    images = tfzoo.data.pipeline(tfzoo.data.load("shapes:4", "train"), detector, 1, training=False)
    path = export_tflite(detector, str(tmp_path / "int8.tflite"), quantize="int8", calibration_images=images)
    model_bytes = (tmp_path / "int8.tflite").read_bytes()
    assert not non_builtin_ops(op_names(model_bytes)) and not decoder_requantizations(model_bytes)
    types = op_input_types(model_bytes)
    assert "INT8" in types["CONV_2D"] and "INT8" in types["FULLY_CONNECTED"]
    assert types["NON_MAX_SUPPRESSION_V5"] == {"FLOAT32"}
    assert types["MAX_POOL_2D"] == {"INT8"} and "INT8" in types["GATHER"]
    x = next(iter(images.map(lambda x, y: x))).numpy()
    got = load_model(path).detect(x)
    assert got["num_detections"].shape == (1,) and int(got["num_detections"][0]) > 0


@pytest.mark.slow
def test_tfzoo_train_runs_faster_rcnn_with_no_specific_flag(tmp_path):
    """``tfzoo train``'s path for a Faster R-CNN preset on its tiny widths, in mixed
    precision, then resumed to one more epoch."""
    from tfzoo import train as T

    settings = [f"{k}={json.dumps(v)}" for k, v in TINY.items() if k not in ("image_size", "num_classes")]
    run = dict(out=str(tmp_path / "run"), image_size=64, batch_size=4, settings=settings, val_data="shapes:4",
               diagnostics=False, verbose=0)
    result = T.train("faster_rcnn_mobile", "shapes:8", epochs=1, mixed_precision=True, **run)
    assert result.finished and result.steps == 2 and np.isfinite(result.history["loss"]).all()
    assert set(result.metrics) >= {"AP", "AP50"}
    loaded = keras.saving.load_model(str(tmp_path / "run" / T.MODEL_FILE), safe_mode=True)
    images = np.zeros([1, 64, 64, 3], np.float32)
    np.testing.assert_allclose(loaded(images)["rpn_objectness"], result.detector.as_float32()(images)["rpn_objectness"],
                               atol=1e-5)
    assert tf.is_tensor(loaded.detect(images)["num_detections"])
    # --resume to one more epoch (mixed precision throughout: the proposal layer, RoI
    # sampling and decoder stay float32, and so does the saved model)
    resumed = T.train("faster_rcnn_mobile", "shapes:8", epochs=2, resume=True, mixed_precision=True, **run)
    assert resumed.finished and resumed.steps == 4 and np.isfinite(resumed.history["loss"]).all()
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert state["epoch"] == 2 and state["precision"] == "mixed_bfloat16"
    assert keras.saving.load_model(str(tmp_path / "run" / T.MODEL_FILE), safe_mode=True).detect(images)[
        "detection_boxes"].dtype == tf.float32


@pytest.mark.slow
def test_vgg16_classifier_fc_layers_initialize_the_roi_head():
    """The paper's initialization on random weights (no download here): keras' VGG-16 fc1 and
    fc2 land in the RoI head's two 4,096-wide layers, whose input (7 x 7 x 512 RoI pools of
    conv5_3) has fc1's flatten order."""
    keras.utils.set_random_seed(2)
    classifier = keras.applications.VGG16(include_top=True, weights=None)
    detector = tfzoo.build_model("faster_rcnn", image_size=224, num_classes=3, backbone_weights=None,
                                 rpn_pre_nms_test=100, rpn_post_nms_test=8, roi_samples=8)
    assert frcnn._vgg16_head_fits(detector.config)
    assert not frcnn._vgg16_head_fits(frcnn.PRESETS["faster_rcnn_mobile"])
    frcnn.load_vgg16_head(detector, classifier)
    for ours, theirs in (("roi_fc0", "fc1"), ("roi_fc1", "fc2")):
        for got, want in zip(detector.get_layer(ours).get_weights(), classifier.get_layer(theirs).get_weights()):
            np.testing.assert_array_equal(got, want)
    # a RoI covering the whole 224 image pools conv5_3 (14 x 14) to 7 x 7: what pool5 gives the classifier
    features = detector.get_layer("backbone").output["C4"]
    assert tuple(features.shape[1:]) == (14, 14, 512)


def test_voc_script_holds_the_papers_recipe():
    import importlib.util
    import pathlib

    from tfzoo import train as T

    path = pathlib.Path(__file__).resolve().parents[2] / "train_scripts" / "faster_rcnn_voc.py"
    spec = importlib.util.spec_from_file_location("faster_rcnn_voc", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(20)], image_size=800, settings=script.SETTINGS)
    assert (config.backbone, config.image_size, config.batch_size, config.epochs) == ("vgg16", 800, 2, 5)
    assert (config.optimizer, config.momentum, config.weight_decay, config.lr_decay_at) == ("sgd", 0.9, 5e-4, (0.75,))
    # 1e-3 per image, as the paper's one-image mini-batches
    assert T.resolve_config(script.MODEL, ["a"], batch_size=1, settings=script.SETTINGS).learning_rate == 1e-3
    assert script.PROTOCOL.data == ("tfds:voc/2007", "tfds:voc/2012") and script.PROTOCOL.val_split == "test"


def _spread_out(detector, images, seed=0):
    """Gives a random tiny Faster R-CNN distinct, confident scores and visible box deltas:
    seeded random kernels for the RPN's and the RoI head's output layers, scaled to a fixed
    output spread (a fresh model's N(0, 0.01) predictors leave every score near 1 / (K + 1))."""
    rng = np.random.default_rng(seed)
    for name, key, std in (("rpn_objectness", "rpn_objectness", 2.0), ("rpn_deltas", "rpn_deltas", 0.2),
                           ("roi_class", "class_logits", 3.0), ("roi_box", "box_deltas", 0.2)):
        layer = detector.get_layer(name)
        kernel, bias = layer.get_weights()
        kernel = rng.normal(0.0, 1.0, kernel.shape).astype(np.float32)
        layer.set_weights([kernel, np.zeros_like(bias)])
        kernel *= std / float(np.std(np.asarray(detector(images, training=False)[key])))
        layer.set_weights([kernel, np.zeros_like(bias)])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["faster_rcnn_fpn_mobile"])
def test_exports_match_keras_raw_rpn_detections_and_ap(name, tmp_path):
    """The issue's parity: raw RPN outputs within 1e-5 (SavedModel) and 1e-4 (TFLite fp32) of
    Keras, every detection matched by IoU >= 0.99 and class, AP within 0.5 point. On the FPN
    preset, whose graph holds the single-level one's parts and more (RPN on every level, the
    levelled RoI pooling); the contract test holds ``faster_rcnn_mobile``'s raw outputs to
    its SavedModel and TFLite files."""
    from tfzoo.export import export_saved_model, export_tflite, load_model, parity_report

    detector = _tiny(name, num_classes=len(tfzoo.data.class_names("shapes")), score_threshold=0.3)
    dataset = tfzoo.data.load("shapes:4", "val")
    images = np.asarray(tfzoo.data.pipeline(dataset, detector, 4, training=False).map(lambda x, y: x)
                        .get_single_element(), np.float32)
    _spread_out(detector, images)
    saved = export_saved_model(detector, str(tmp_path / "saved_model"))
    tflite = export_tflite(detector, str(tmp_path / "model.tflite"))
    tflite_raw = export_tflite(detector, str(tmp_path / "raw.tflite"), raw_outputs=True)
    want = {k: v.numpy() for k, v in detector(images, training=False).items()}
    for path, tolerance in ((saved, 1e-5), (tflite_raw, 1e-4)):
        model = load_model(path, trust_model=True)
        for i in range(len(images)):  # the TFLite file takes batch 1
            got = model.raw_outputs(images[i:i + 1])
            for key in ("rpn_objectness", "rpn_deltas"):
                scale = max(1.0, float(np.max(np.abs(want[key][i]))))
                assert np.max(np.abs(got[key][0] - want[key][i])) <= tolerance * scale, (path, key)
    report = parity_report(detector, [saved, tflite], dataset, batch_size=4, min_score=0.31)
    assert report["keras"]["AP"] >= 0.0
    for entry in report["exports"]:
        found = entry["detections"]
        assert found["agree"] and found["only_a"] == found["only_b"] == 0 and found["matched"] >= 8, entry
        assert abs(entry["delta_AP_points"]) <= 0.5, entry


def test_encoder_flags_crowd_and_difficult_boxes_in_one_int_column():
    """No bool target reaches fit (a distribution strategy averages the first batch over
    its replicas); crowd or difficult boxes arrive as gt_ignore = 1."""
    from tfzoo.data import schema

    detector = _tiny()
    example = dict(tfzoo.data.load("shapes:1", "train").get_single_element())
    n = int(example[schema.BOXES].shape[0])
    example[schema.IS_CROWD] = tf.constant([True] + [False] * (n - 1))
    example[schema.DIFFICULT] = tf.constant([False] * (n - 1) + [True])
    _, targets = tfzoo.data.pipeline(tf.data.Dataset.from_tensors(example), detector, 1, training=True,
                                     augment="none", shuffle_buffer=0).get_single_element()
    assert all(v.dtype != tf.bool for v in targets.values())
    assert schema.IS_CROWD not in targets and targets[frcnn.GT_IGNORE].dtype == tf.int32
    flags = targets[frcnn.GT_IGNORE].numpy()[0]
    classes = targets[schema.CLASSES].numpy()[0]
    assert n >= 2 and flags[0] == 1 and flags[n - 1] == 1 and flags[1:n - 1].sum() == 0 and (classes[:n] >= 0).all()


@pytest.mark.parametrize("name", ["faster_rcnn_mobile", "faster_rcnn_fpn_mobile"])
def test_roi_crops_use_crop_and_resize_except_when_traced_for_tflite(name):
    """TensorFlow (Keras, SavedModel, fit) crops with ``crop_and_resize``; inside
    ``roi.builtin_crops()`` (what the TFLite export enters) the same layer traces to builtin
    ops with the same outputs."""
    from tfzoo.ops import roi as roi_ops

    detector = _tiny(name)
    images = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3)).astype("float32")

    def traced():
        function = tf.function(lambda x: detector(x, training=False))
        graph = function.get_concrete_function(tf.TensorSpec([1, 64, 64, 3], tf.float32)).graph.as_graph_def()
        types = {node.op for node in graph.node}
        for library_function in graph.library.function:
            types |= {node.op for node in library_function.node_def}
        return types, {k: v.numpy() for k, v in function(images).items()}

    native_ops, native = traced()
    with roi_ops.builtin_crops():
        assert roi_ops.use_builtin_crops()
        builtin_ops, builtin = traced()
    assert not roi_ops.use_builtin_crops()
    assert "CropAndResize" in native_ops and "CropAndResize" not in builtin_ops and "GatherV2" in builtin_ops
    for key in native:
        np.testing.assert_allclose(builtin[key], native[key], atol=1e-4, rtol=1e-4)
