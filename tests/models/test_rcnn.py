"""R-CNN: the paper's settings, warping with context, chunked inference, fine-tuning on
sampled windows, the post-fit stages (SVMs with hard-negative mining, ridge regression)
and one ``tfzoo train`` command running all three stages, resumable between them."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
import tfzoo.data
from tfzoo.models import MODELS
from tfzoo.models import rcnn
from tfzoo.models import stages
from tfzoo.train import stages as stage_ops

from tests.models.conftest import tiny_settings
from tests.models.test_fast_rcnn import _with_proposals


def _tiny(**overrides):
    return tfzoo.build_model("rcnn_mobile", **{**rcnn.RCNN.tiny, "num_classes": 6, **overrides})


def test_the_papers_settings():
    config = MODELS["rcnn"].config
    assert (config.warp_size, config.warp_context, config.max_proposals) == (224, 16, 2000)
    assert config.backbone == "vgg16" and config.feature == "C5" and config.head_fc == (4096, 4096)
    # 2 images x 64 windows at a quarter foreground: the paper's 32 positive, 96 background per 128
    assert config.batch_size * config.roi_samples == 128 and config.roi_positive_fraction == 0.25
    assert (config.svm_negative_iou, config.ridge_iou, config.ridge_lambda) == (0.3, 0.6, 1000.0)
    assert config.nms_iou_threshold == 0.3 and config.box_weights == (1.0, 1.0, 1.0, 1.0)
    assert rcnn.RCNN.stages == ("fit", "svm", "bbox") and MODELS["spp_net"].detector.stages == rcnn.RCNN.stages
    mobile = MODELS["rcnn_mobile"].config
    assert mobile.warp_size == 64 and mobile.max_proposals == 500 and MODELS["rcnn_mobile"].cpu
    with pytest.raises(ValueError, match="warp_context 112 leaves no box"):
        config.replace(warp_context=112)


def test_dilation_leaves_the_papers_context_around_the_box():
    """Warped to 224, the dilated window shows the box on the central 192 pixels: 16 of context."""
    box = tf.constant([[0.2, 0.3, 0.6, 0.5]])
    dilated = rcnn.dilate_for_context(box, 224, 16).numpy()[0]
    height, width = dilated[2] - dilated[0], dilated[3] - dilated[1]
    np.testing.assert_allclose((0.2 - dilated[0]) / height * 224, 16, rtol=1e-5)
    np.testing.assert_allclose((dilated[3] - 0.5) / width * 224, 16, rtol=1e-5)
    np.testing.assert_allclose(0.5 * (dilated[:2] + dilated[2:]), [0.4, 0.4], rtol=1e-6)


def test_each_window_is_its_own_warp_and_chunks_change_nothing():
    """A window's features depend on its own crop only (the same box alone or among others),
    and the chunked while loop gives what one pass over every window gives."""
    detector = _tiny()
    cnn = detector.get_layer("warped_cnn")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    corners = np.sort(rng.uniform(0, 1, (2, 24, 2, 2)), axis=2)
    rois = np.concatenate([corners[:, :, 0], corners[:, :, 1]], -1).astype(np.float32)
    chunked = cnn(images, rois).numpy()  # 24 windows, chunks of 10
    whole = cnn._windows(cnn.normalize(images), rois).numpy()
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    alone = cnn(images[1:], rois[1:, 7:8]).numpy()
    np.testing.assert_allclose(alone[0, 0], chunked[1, 7], atol=1e-4)
    # the warp: with no context, a window over the whole image at the image's own size is
    # the image itself through the CNN
    plain = rcnn.WarpedCNN("resnet10", 64, 0, 4, alpha=0.25)
    window = plain(images[:1], np.array([[[0.0, 0.0, 1.0, 1.0]]], np.float32)).numpy()
    direct = plain.trunk(plain.normalize(images[:1]))["C5"].numpy().reshape(1, -1)
    np.testing.assert_allclose(window[0], direct, atol=1e-4)
    # ... and 16 px of context (of 64) shrink it to the middle half: another crop
    wide = rcnn.WarpedCNN("resnet10", 64, 16, 4, alpha=0.25)
    wide.set_weights(plain.get_weights())
    assert np.abs(wide(images[:1], np.array([[[0.0, 0.0, 1.0, 1.0]]], np.float32)).numpy()[0] - direct).max() > 1e-3


def test_fine_tuning_learns_the_windows_and_stages_are_off_until_trained():
    keras.utils.set_random_seed(0)
    detector = _tiny()
    train = tfzoo.data.pipeline(tfzoo.data.load("shapes:4", "train").map(_with_proposals), detector, 4,
                                training=True, augment="none").repeat()
    detector.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = detector.fit(train, epochs=5, steps_per_epoch=4, verbose=0).history
    assert set(history) >= {"loss", "roi_cls_loss"} and "roi_box_loss" not in history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < 0.7 * history["loss"][0]
    data = tfzoo.data.load("shapes:2", "val").map(_with_proposals)
    x, _ = next(iter(tfzoo.data.pipeline(data, detector, 2, training=False)))
    out = detector(x)
    softmax = tf.nn.softmax(out["class_logits"], axis=-1)[..., :-1]
    np.testing.assert_allclose(out[stages.CLASS_SCORES], softmax, atol=1e-6)  # no SVM yet: the softmax
    assert not np.any(out["box_deltas"].numpy())  # no ridge yet: the proposals themselves
    assert not detector.get_layer("svm").is_ready and not detector.get_layer("bbox_ridge").is_ready
    # Keras' evaluate: the inference graph's outputs hold no images, the loss warps its
    # windows from the training pass's (in inference mode)
    val = tfzoo.data.pipeline(data, detector, 2, training=True, augment="none")
    scores = detector.evaluate(val, verbose=0, return_dict=True)
    assert np.isfinite(scores["loss"]) and scores["roi_cls_loss"] == pytest.approx(scores["loss"], rel=1e-5)


def test_ridge_is_the_least_squares_solution_in_both_forms():
    rng = np.random.default_rng(0)
    for n, d in ((50, 8), (6, 30)):  # the primal and the dual normal equations
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
        w, b = stage_ops.ridge(x, y, 2.5)
        # reference: the augmented least-squares problem [X 1; sqrt(lam) I 0] [w; b] = [Y; 0]
        design = np.block([[x, np.ones((n, 1))], [np.sqrt(2.5) * np.eye(d), np.zeros((d, 1))]])
        want = np.linalg.lstsq(design, np.vstack([y, np.zeros((d, 3))]), rcond=None)[0]
        np.testing.assert_allclose(w, want[:d], atol=1e-8)
        np.testing.assert_allclose(b, want[d], atol=1e-8)
    w, b = stage_ops.ridge(x, x[:, :2] * 3.0 + 1.0, 0.0)  # lam 0, N < D: an exact fit
    np.testing.assert_allclose(x @ w + b, x[:, :2] * 3.0 + 1.0, atol=1e-8)
    with pytest.raises(ValueError, match="ridge needs"):
        stage_ops.ridge(np.zeros((0, 3)), np.zeros((0, 4)), 1.0)


def test_window_labels_follow_the_papers_thresholds():
    config = MODELS["rcnn_mobile"].config.replace(num_classes=3)
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0]], np.float32)
    classes = np.array([0, 1, 0])
    positive = np.array([True, True, False])  # the third box is difficult
    windows = np.concatenate([gt, np.array([[0.0, 0.0, 0.45, 0.5],  # IoU 0.9 with box 0
                                            [0.0, 0.0, 0.25, 0.5],  # IoU 0.5 with box 0
                                            [0.0, 0.4, 0.5, 0.9]],  # IoU 0.67 with the difficult box
                                           np.float32)])
    labels, best_iou, best_gt = stage_ops._window_labels(windows, 3, gt, classes, positive, config)
    assert labels.tolist() == [
        [1, -1, -1],  # box 0: positive for its class, negative for the others
        [-1, 1, -1],
        [0, -1, -1],  # the difficult box: neither positive nor negative for class 0
        [0, -1, -1],  # a near box: between 0.3 and the box, no label for class 0
        [0, -1, -1],
        [0, -1, -1],  # overlaps the difficult box of class 0: never its negative
    ]
    np.testing.assert_allclose(best_iou[3:5], [0.9, 0.5], atol=1e-6)
    assert best_gt[3] == 0 and best_iou[5] < 0.6  # the difficult box teaches no regression


def _cache(rng, n_neg=600, dim=6, k=2):
    """Features where class c's positives sit at +3 on axis c; negatives around 0, and a
    few hard ones near the positives."""
    pos = np.concatenate([np.eye(dim)[c] * 3.0 + rng.normal(0, 0.3, (30, dim)) for c in range(k)])
    neg = rng.normal(0, 0.5, (n_neg, dim))
    hard = np.concatenate([np.eye(dim)[c] * 1.8 + rng.normal(0, 0.2, (10, dim)) for c in range(k)])
    fc7 = np.concatenate([pos, neg, hard]).astype(np.float16)
    labels = -np.ones((len(fc7), k), np.int8)
    for c in range(k):
        labels[30 * c:30 * (c + 1), c] = 1
    return stage_ops.FeatureCache(fc7=fc7, labels=labels, pool5=np.zeros((0, 4), np.float16),
                                  ridge_classes=np.zeros((0,), np.int32), ridge_targets=np.zeros((0, 4), np.float32),
                                  fc7_scale=2.0, pool5_scale=1.0, images=1, total_images=1, seconds=0.0)


def test_svms_separate_the_classes_and_mining_adds_the_hard_negatives():
    cache = _cache(np.random.default_rng(0))
    config = MODELS["rcnn_mobile"].config.replace(num_classes=2, svm_initial_negatives=50, svm_rounds=2,
                                                  svm_steps=300, svm_l2=1e-4)
    kernel, bias, ready, figures = stage_ops.train_svms(cache, config)
    assert figures["hard_negatives"] > 0 and figures["mining_rounds"] >= 1 and figures["positives"] == 60
    assert ready.tolist() == [1.0, 1.0]
    scores = cache.fc7.astype(np.float32) / 2.0 @ kernel + bias  # the kernel applies to unscaled features
    for c in range(2):
        assert scores[cache.labels[:, c] > 0, c].min() > scores[cache.labels[:, c] < 0, c].max()
    # without mining, the 50 random negatives seldom hold the hard ones: they score higher
    lazy, lazy_bias, _, _ = stage_ops.train_svms(cache, config.replace(svm_rounds=0))
    hard = slice(len(cache.fc7) - 20, None)
    assert (cache.fc7[hard].astype(np.float32) / 2.0 @ lazy + lazy_bias).max() > scores[hard].max()


def test_ridge_stage_learns_each_classs_deltas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float16)
    true = rng.normal(size=(5, 4))
    classes = np.repeat([0, 2], 100)
    targets = np.where(classes[:, None] == 0, x.astype(np.float64) @ true, -(x.astype(np.float64) @ true)) + 0.1
    cache = stage_ops.FeatureCache(fc7=np.zeros((0, 2), np.float16), labels=np.zeros((0, 3), np.int8), pool5=x,
                                   ridge_classes=classes, ridge_targets=targets.astype(np.float32), fc7_scale=1.0,
                                   pool5_scale=4.0, images=1, total_images=1, seconds=0.0)
    config = MODELS["rcnn_mobile"].config.replace(num_classes=3, ridge_lambda=1e-3)
    kernel, bias, ready, figures = stage_ops.fit_ridge(cache, config)
    assert ready.tolist() == [1.0] * 4 + [0.0] * 4 + [1.0] * 4  # class 1 keeps fit's boxes
    assert figures["ridge_classes"] == 2 and figures["ridge_relative_residual"] < 1e-3
    unscaled = x.astype(np.float64) / 4.0
    np.testing.assert_allclose(unscaled[:100] @ kernel[:, 0:4] + bias[0:4], targets[:100], atol=2e-3)
    np.testing.assert_allclose(unscaled[100:] @ kernel[:, 8:12] + bias[8:12], targets[100:], atol=2e-3)
    assert not kernel[:, 4:8].any() and not bias[4:8].any()  # class 1 had no window


@pytest.mark.slow
def test_tfzoo_train_runs_fit_svm_and_bbox_and_resumes_between_them(tmp_path, monkeypatch):
    """One ``train`` command: fine-tuning, then the SVM and ridge stages on cached
    features, each checkpointed; a run interrupted after the SVMs resumes with the ridge
    only; the saved model serves the SVM scores and ridge boxes."""
    from tfzoo import train as T

    settings = tiny_settings("rcnn_mobile")
    settings += ["svm_steps=5", "svm_rounds=1"]
    run = dict(out=str(tmp_path / "run"), image_size=64, batch_size=4, settings=settings, val_data="shapes:4",
               diagnostics=False, verbose=0)
    original = stages.StagesMixin.train_stage_bbox

    def broken(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages.StagesMixin, "train_stage_bbox", broken)
    with pytest.raises(KeyboardInterrupt):
        T.train("rcnn_mobile", "shapes:8", epochs=1, **run)
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert set(state["stages"]) == {"svm"} and not state["finished"]
    assert state["stages"]["svm"]["positives"] > 0 and state["stages"]["svm"]["windows"] > 8
    saved = keras.saving.load_model(tmp_path / "run" / T.MODEL_FILE)
    assert saved.get_layer("svm").is_ready and not saved.get_layer("bbox_ridge").is_ready
    monkeypatch.setattr(stages.StagesMixin, "train_stage_bbox", original)
    svm_figures = state["stages"]["svm"]
    result = T.train("rcnn_mobile", "shapes:8", epochs=1, resume=True, **run)
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert result.finished and set(state["stages"]) == {"svm", "bbox"} and result.steps == 2
    assert state["stages"]["svm"] == svm_figures  # done before the interruption: not run again
    assert state["stages"]["svm"]["images"] == state["stages"]["svm"]["train_images"] == 8
    assert any((tmp_path / "run" / "logs" / "stages").iterdir())  # the stages' figures in TensorBoard
    assert {"AP", "AP50"} <= set(result.metrics)
    detector = keras.saving.load_model(tmp_path / "run" / T.MODEL_FILE)
    assert detector.get_layer("svm").is_ready and detector.get_layer("bbox_ridge").is_ready
    data = tfzoo.data.load("shapes:1", "val").map(_with_proposals)
    x, _ = next(iter(tfzoo.data.pipeline(data, detector, 1, training=False)))
    out = detector(x)
    fc7 = detector.stage_features(x)["fc7"]
    kernel, bias, ready = detector.get_layer("svm").get_weights()
    assert ready.shape == (5,)  # the shapes classes
    np.testing.assert_allclose(out[stages.CLASS_SCORES], tf.sigmoid(fc7 @ kernel + bias), atol=1e-5)


@pytest.mark.slow
def test_training_further_resets_the_stages_and_runs_them_again(tmp_path, monkeypatch):
    """A finished run trained for more epochs: the SVMs and ridge no longer fit the new
    features, so they are reset before fit (the softmax serves meanwhile) and learned again."""
    from tfzoo import train as T

    settings = tiny_settings("rcnn_mobile")
    settings += ["svm_steps=5", "svm_rounds=0"]
    run = dict(out=str(tmp_path / "run"), image_size=64, batch_size=4, settings=settings, val_split=None,
               diagnostics=False, verbose=0)
    first = T.train("rcnn_mobile", "shapes:8", epochs=1, **run)
    assert first.finished and first.detector.get_layer("svm").is_ready
    seen = []
    original = stages.StagesMixin.train_stage_svm

    def spy(self, *args, **kwargs):
        seen.append(self.get_layer("svm").is_ready or self.get_layer("bbox_ridge").is_ready)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(stages.StagesMixin, "train_stage_svm", spy)
    again = T.train("rcnn_mobile", "shapes:8", epochs=2, resume=True, **run)
    assert again.finished and again.steps == 4 and seen == [False]  # reset before the stage ran again
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert set(state["stages"]) == {"svm", "bbox"} and again.detector.get_layer("bbox_ridge").is_ready


def test_the_feature_cache_stays_under_its_budget_and_keeps_the_ground_truth():
    rng = np.random.default_rng(0)
    parts = stage_ops._Parts(budget=40_000, rng=rng)
    for image in range(1, 11):  # per image: 3 ground-truth rows kept, 500 negatives that may be sampled
        gt = np.full((3, 10), image, np.float16)
        negatives = np.full((500, 10), -image, np.float16)
        parts.add((gt, np.ones(3)), (negatives, -np.ones(500)))
        assert parts.bytes <= parts.budget  # halved as soon as it would go over
    rows, labels = parts.joined(2)
    assert rows.nbytes + labels.nbytes <= 40_000 and len(rows) < 10 * 503
    for image in range(1, 11):  # every image keeps its ground truth and some of its negatives
        assert (rows == image).all(axis=1).sum() == 3
        assert 0 < (rows == -image).all(axis=1).sum() <= 500


def test_exports_loop_over_the_chunks_and_agree(tmp_path):
    """SavedModel and fp32 TFLite run the chunks in a loop (a WHILE builtin), int8 TFLite
    one after another; all builtin-only, the raw scores and detections as Keras's."""
    from tfzoo.export import export_saved_model, export_tflite, load_model
    from tfzoo.export.tflite import non_builtin_ops, op_input_types, op_names

    detector = _tiny()
    data = tfzoo.data.load("shapes:2", "val").map(_with_proposals)
    x, _ = next(iter(tfzoo.data.pipeline(data, detector, 1, training=False)))
    x = {k: v.numpy() for k, v in x.items()}
    want = {k: v.numpy() for k, v in detector.detect(x).items()}
    n = int(want["num_detections"][0])
    saved = load_model(export_saved_model(detector, str(tmp_path / "saved_model")), trust_model=True)
    fp32 = load_model(export_tflite(detector, str(tmp_path / "model.tflite"), raw_outputs=True))
    assert "WHILE" in op_names((tmp_path / "model.tflite").read_bytes())
    for model in (saved, fp32):
        got = model.detect(x)
        assert int(got["num_detections"][0]) == n, model.format
        np.testing.assert_allclose(got["detection_boxes"][0, :n], want["detection_boxes"][0, :n], atol=1e-4)
        np.testing.assert_allclose(model.raw_outputs(x)[stages.CLASS_SCORES],
                                   detector(x)[stages.CLASS_SCORES].numpy(), atol=1e-4)
    path = export_tflite(detector, str(tmp_path / "int8.tflite"), quantize="int8",
                         calibration_images=tfzoo.data.pipeline(data, detector, 1, training=False))
    model_bytes = (tmp_path / "int8.tflite").read_bytes()
    assert not non_builtin_ops(op_names(model_bytes)) and "WHILE" not in op_names(model_bytes)
    assert "INT8" in op_input_types(model_bytes)["CONV_2D"]
    assert int(load_model(path).detect(x)["num_detections"][0]) > 0
