"""Fast R-CNN: the paper's settings, training on proposals with the shared RoI sampler,
decoding from the proposals, and the exports with proposals as an input."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
import tfzoo.data
from tfzoo.data import schema
from tfzoo.models import MODELS
from tfzoo.models import fast_rcnn as fr
from tfzoo.models import faster_rcnn as frcnn
from tfzoo.ops import boxes as box_ops

from tests.models.conftest import tiny_settings


def _tiny(**overrides):
    return tfzoo.build_model("fast_rcnn_mobile", **{**fr.FastRCNN.tiny, "num_classes": 6, **overrides})


def _with_proposals(example):
    """Proposals: shifted copies of the ground truth (IoU ~0.6-0.8), then far-off boxes."""
    boxes = example[schema.BOXES]
    shifted = box_ops.clip(boxes + tf.constant([0.03, 0.03, 0.03, 0.03]))
    corner = tf.constant([[0.0, 0.0, 0.1, 0.1], [0.9, 0.9, 1.0, 1.0]])
    return {**example, schema.PROPOSALS: tf.concat([shifted, corner], 0)}


def _batch(detector, count=2, split="val"):
    data = tfzoo.data.load(f"shapes:{count}", split).map(_with_proposals)
    x, y = next(iter(tfzoo.data.pipeline(data, detector, count, training=False)))
    return {k: v.numpy() for k, v in x.items()}, y


def test_the_papers_settings():
    config = MODELS["fast_rcnn"].config
    assert (config.backbone, config.feature, config.image_size) == ("vgg16", "C4", 608)
    assert (config.roi_size, config.head_fc, config.max_proposals, config.proposals) == (7, (4096, 4096), 2000,
                                                                                           "ss:fast")
    # 2 images x 64 RoIs = 128 per mini-batch, a quarter foreground (IoU >= 0.5, background [0.1, 0.5))
    assert (config.batch_size, config.roi_samples, config.roi_positive_fraction) == (2, 64, 0.25)
    assert (config.box_weights, config.smooth_l1_beta, config.nms_iou_threshold) == ((10.0, 10.0, 5.0, 5.0), 1.0, 0.3)
    assert (config.learning_rate, config.momentum, config.weight_decay, config.lr_decay_at) == (1e-3, 0.9, 5e-4,
                                                                                               (0.75,))
    assert MODELS["fast_rcnn_mobile"].cpu and MODELS["fast_rcnn"].kind == "proposals"
    with pytest.raises(ValueError, match="proposal source"):
        config.replace(proposals="edgeboxes")
    with pytest.raises(ValueError, match="max_proposals"):
        config.replace(max_proposals=0)


def test_inputs_outputs_and_detections_come_from_the_proposals():
    detector = _tiny()
    assert [tuple(i.shape) for i in detector.inputs] == [(None, 64, 64, 3), (None, 24, 4)]
    x, _ = _batch(detector)
    raw = detector(x)
    assert raw[frcnn.CLASS_LOGITS].shape == (2, 24, 7) and raw[frcnn.BOX_DELTAS].shape == (2, 24, 24)
    np.testing.assert_array_equal(raw[frcnn.PROPOSALS], x["proposals"])
    # With zero box deltas every detection is one of the proposals; padding (zero boxes) never is one.
    box_layer = detector.get_layer("roi_box")
    box_layer.set_weights([np.zeros_like(w) for w in box_layer.get_weights()])
    cls_layer = detector.get_layer("roi_class")
    kernel, bias = cls_layer.get_weights()
    bias[:] = 0.0
    bias[2] = 5.0  # class 2 wins everywhere
    cls_layer.set_weights([np.zeros_like(kernel), bias])
    out = detector.detect(x)
    for b in range(2):
        n = int(out["num_detections"][b])
        real = x["proposals"][b][np.asarray(box_ops.valid_mask(x["proposals"][b]))]
        assert 0 < n <= len(real)  # class 2 above the threshold everywhere
        got = out["detection_boxes"][b, :n].numpy()
        assert np.all(out["detection_classes"][b, :n] == 2)
        ious = np.asarray(box_ops.iou(got, real))
        assert np.allclose(ious.max(axis=1), 1.0, atol=1e-5)


def test_training_learns_from_the_proposals_and_an_empty_image_has_no_box_loss():
    keras.utils.set_random_seed(0)
    detector = _tiny()
    train = tfzoo.data.pipeline(tfzoo.data.load("shapes:4", "train").map(_with_proposals), detector, 4,
                                training=True, augment="none").repeat()  # the same 4 images: overfit them
    detector.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = detector.fit(train, epochs=5, steps_per_epoch=4, verbose=0).history
    assert set(history) >= {"loss", "roi_cls_loss", "roi_box_loss"}
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < 0.6 * history["loss"][0]
    # an image without objects: background RoIs only, box loss 0
    example = dict(tfzoo.data.load("shapes:1", "val").map(_with_proposals).get_single_element())
    example.update({schema.BOXES: tf.zeros([0, 4]), schema.CLASSES: tf.zeros([0], tf.int32),
                    schema.IS_CROWD: tf.zeros([0], tf.bool), schema.DIFFICULT: tf.zeros([0], tf.bool),
                    schema.PROPOSALS: tf.constant([[0.1, 0.1, 0.5, 0.5]])})
    x, y = tfzoo.data.pipeline(tf.data.Dataset.from_tensors(example), detector, 1, training=True, augment="none",
                               shuffle_buffer=0).get_single_element()
    losses = detector.compute_losses(y, detector(x, training=True))
    assert float(losses["roi_box_loss"]) == 0.0 and np.isfinite(float(losses["roi_cls_loss"]))
    # no proposal at all: the RoIs are the ground truth's, nothing breaks
    example[schema.PROPOSALS] = tf.zeros([0, 4])
    x, y = tfzoo.data.pipeline(tf.data.Dataset.from_tensors(example), detector, 1, training=True, augment="none",
                               shuffle_buffer=0).get_single_element()
    losses = detector.compute_losses(y, detector(x, training=True))
    assert all(np.isfinite(float(v)) for v in losses.values())


def test_exports_take_the_proposals_and_agree(tmp_path):
    from tfzoo.export import export_saved_model, export_tflite, load_model
    from tfzoo.export.tflite import non_builtin_ops, op_input_types, op_names

    detector = _tiny()
    x, _ = _batch(detector, 1)
    want = {k: v.numpy() for k, v in detector.detect(x).items()}
    n = int(want["num_detections"][0])
    assert n > 0
    saved = load_model(export_saved_model(detector, str(tmp_path / "saved_model")), trust_model=True)
    tflite = load_model(export_tflite(detector, str(tmp_path / "model.tflite"), raw_outputs=True))
    for model in (saved, tflite):
        assert model.input_names == ("images", "proposals") and model.max_proposals == 24
        got = model.detect(x)
        assert int(got["num_detections"][0]) == n, model.format
        np.testing.assert_allclose(got["detection_boxes"][0, :n], want["detection_boxes"][0, :n], atol=1e-4)
        np.testing.assert_allclose(model.raw_outputs(x)[frcnn.CLASS_LOGITS], detector(x)[frcnn.CLASS_LOGITS].numpy(),
                                   atol=1e-4)
    data = tfzoo.data.pipeline(tfzoo.data.load("shapes:4", "val").map(_with_proposals), detector, 1, training=False)
    path = export_tflite(detector, str(tmp_path / "int8.tflite"), quantize="int8", calibration_images=data)
    model_bytes = (tmp_path / "int8.tflite").read_bytes()
    assert not non_builtin_ops(op_names(model_bytes))
    types = op_input_types(model_bytes)
    assert "INT8" in types["CONV_2D"] and types["MAX_POOL_2D"] == {"INT8"}
    assert int(load_model(path).detect(x)["num_detections"][0]) > 0


def test_a_loaded_model_computes_the_proposals_of_an_image_itself(tmp_path):
    """``detect_original`` (what ``tfzoo predict`` runs) searches a bare image with the
    model's own source, and gives what explicit proposals give."""
    from tfzoo import proposals as P
    from tfzoo.export import load_model

    detector = _tiny()
    path = tmp_path / "model.keras"
    detector.save(path)
    model = load_model(str(path))
    image = next(tfzoo.data.load("shapes:1", "val").as_numpy_iterator())["image"]
    own = model.detect_original(image)
    boxes = P.for_image(image, "ss:fast", 24)
    given = model.detect_original(image, proposals=boxes)
    assert own["num_detections"] == given["num_detections"]
    np.testing.assert_allclose(own["detection_boxes"], given["detection_boxes"], atol=1e-6)


def test_truncated_svd_factorizes_the_head():
    detector = _tiny(head_fc=(32, 16))
    x, _ = _batch(detector)
    want = detector(x)
    full = fr.truncated_svd(detector, (32, 16))  # full rank: the same function
    assert full.config.head_svd == (32, 16)
    for key in (frcnn.CLASS_LOGITS, frcnn.BOX_DELTAS):
        np.testing.assert_allclose(full(x)[key], want[key], atol=1e-4)
    low = fr.truncated_svd(detector, (4, 0))  # fc6 at rank 4, fc7 whole
    first = low.get_layer("roi_fc0_svd").get_weights()[0]
    assert first.shape == (detector.get_layer("roi_fc0").get_weights()[0].shape[0], 4)
    assert low.get_layer("roi_fc0").get_weights()[0].shape == (4, 32)
    with pytest.raises(ValueError):
        low.get_layer("roi_fc1_svd")
    # the best rank-4 approximation of fc6's kernel (Eckart-Young): its error is the tail of
    # the singular values
    kernel = detector.get_layer("roi_fc0").get_weights()[0].astype(np.float64)
    product = first.astype(np.float64) @ low.get_layer("roi_fc0").get_weights()[0]
    tail = np.linalg.svd(kernel, compute_uv=False)[4:]
    np.testing.assert_allclose(np.linalg.norm(kernel - product), np.sqrt(np.sum(tail ** 2)), rtol=1e-4)
    assert low.count_params() < detector.count_params()
    with pytest.raises(ValueError, match="already factorized"):
        fr.truncated_svd(low, (2,))
    with pytest.raises(ValueError, match="between 0 and"):
        fr.truncated_svd(detector, (10_000,))
    with pytest.raises(ValueError, match="not to faster_rcnn"):
        fr.truncated_svd(tfzoo.build_model("faster_rcnn_mobile", **frcnn.FasterRCNN.tiny), (4,))


def test_tfzoo_export_svd_writes_a_smaller_file(tmp_path, capsys):
    from tfzoo import cli
    from tfzoo.export import load_model

    detector = _tiny(head_fc=(32, 16))
    path = tmp_path / "model.keras"
    detector.save(path)
    assert cli.main(["export", str(path), "--format", "tflite", "--out", str(tmp_path / "full.tflite")]) == 0
    assert cli.main(["export", str(path), "--format", "tflite", "--svd", "4,4", "--out",
                     str(tmp_path / "svd.tflite")]) == 0
    assert (tmp_path / "svd.tflite").stat().st_size < (tmp_path / "full.tflite").stat().st_size
    assert load_model(str(tmp_path / "svd.tflite")).config["head_svd"] == [4, 4]
    with pytest.raises(SystemExit):  # a usage error
        cli.main(["export", str(path), "--format", "tflite", "--svd", "4,x", "--out", str(tmp_path / "bad.tflite")])
    assert "--svd takes ranks" in capsys.readouterr().err
    assert not (tmp_path / "bad.tflite").exists()


def test_the_cli_fills_the_proposals_of_an_exported_file(tmp_path, capsys):
    """``tfzoo evaluate`` and ``tfzoo predict`` on a TFLite file of a proposal-based
    preset: no proposal flag, selective search by the file's own config."""
    import json

    from PIL import Image

    from tfzoo import cli

    detector = _tiny(num_classes=5)  # the shapes classes
    keras_path = tmp_path / "model.keras"
    detector.save(keras_path)
    tflite = str(tmp_path / "model.tflite")
    assert cli.main(["export", str(keras_path), "--format", "tflite", "--out", tflite]) == 0
    assert cli.main(["evaluate", tflite, "--data", "shapes:3", "--split", "val", "--json",
                     str(tmp_path / "metrics.json")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["AP50"] <= 1.0
    image = next(tfzoo.data.load("shapes:1", "val").as_numpy_iterator())["image"]
    Image.fromarray(image).save(tmp_path / "photo.png")
    assert cli.main(["predict", tflite, str(tmp_path / "photo.png"), "--out", str(tmp_path / "preds")]) == 0
    payload = json.loads((tmp_path / "preds" / "detections.json").read_text())
    assert payload["images"][0]["file"].endswith("photo.png") and not payload["failed"]
    capsys.readouterr()


def test_tfzoo_train_fetches_the_proposals_and_scores_with_them(tmp_path):
    """``tfzoo train``'s path for a proposal-based preset: proposals of the train and val
    splits by the preset's source (selective search, cached), fit, evaluation, resume."""
    from tfzoo import train as T

    settings = tiny_settings("fast_rcnn_mobile")
    run = dict(out=str(tmp_path / "run"), image_size=64, batch_size=4, settings=settings, val_data="shapes:4",
               diagnostics=True, verbose=0)
    result = T.train("fast_rcnn_mobile", "shapes:8", epochs=1, **run)
    assert result.finished and result.steps == 2 and np.isfinite(result.history["loss"]).all()
    assert {"AP", "AP50"} <= set(result.metrics)
    resumed = T.train("fast_rcnn_mobile", "shapes:8", epochs=2, resume=True, **run)
    assert resumed.finished and resumed.steps == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fast_rcnn_mobile", "spp_net_mobile", "rcnn_mobile"])
def test_proposal_based_presets_train_in_mixed_precision_with_float32_outputs(tmp_path, name):
    """Mixed precision for the proposal-based three (R-CNN's post-fit stages included): the
    layers compute in 16 bits, the losses stay finite, the outputs are float32."""
    from tfzoo import train as T

    settings = tiny_settings(name, **({"svm_steps": 5, "svm_rounds": 1} if name == "rcnn_mobile" else {}))
    result = T.train(name, "shapes:8", epochs=1, batch_size=4, image_size=64, mixed_precision=True, settings=settings,
                     out=str(tmp_path / "run"), val_data="shapes:4", diagnostics=False, verbose=0)
    assert result.finished and np.isfinite(result.history["loss"]).all() and set(result.metrics) >= {"AP", "AP50"}
    assert any(layer.dtype_policy.name == T.mixed_policy_name() for layer in result.detector.layers)
    data = tfzoo.data.load("shapes:1", "val").map(_with_proposals)
    x, _ = next(iter(tfzoo.data.pipeline(data, result.detector, 1, training=False)))
    outputs = result.detector(x)
    # the head's outputs are float32 (the shared map the RoI head reads stays 16-bit)
    heads = {key: value.dtype for key, value in outputs.items() if key != fr.FEATURES}
    assert {frcnn.BOX_DELTAS} < set(heads) and set(heads.values()) == {tf.float32}, heads
