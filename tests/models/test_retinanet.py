"""RetinaNet specifics: the paper's architecture figures, target encoding, loss and decoder."""
import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
from tfzoo.data import schema
from tfzoo.models import retinanet
from tfzoo.ops import anchors as anchor_ops
from tfzoo.ops import box_coder
from tfzoo.ops import matcher as matcher_ops
from tests.models.conftest import build_tiny
from tests.reference import pairwise_iou


def test_presets_are_listed():
    assert {"retinanet", "retinanet_r101", "retinanet_mobile"} <= set(tfzoo.list_models())


def test_paper_preset_defaults():
    config = retinanet.PRESETS["retinanet"]
    assert (config.backbone, config.image_size, config.fpn_channels, config.head_channels, config.head_convs) == (
        "resnet50", 640, 256, 256, 4)
    assert (config.min_level, config.max_level, config.num_anchors) == (3, 7, 9)
    assert (config.negative_iou, config.positive_iou, config.focal_alpha, config.focal_gamma) == (0.4, 0.5, 0.25, 2.0)
    assert (config.score_threshold, config.pre_nms_top_k, config.nms_iou_threshold, config.max_detections) == (
        0.05, 1000, 0.5, 100)
    assert (config.optimizer, config.momentum, config.weight_decay) == ("sgd", 0.9, 1e-4)
    assert retinanet.PRESETS["retinanet_r101"].backbone == "resnet101"
    mobile = retinanet.PRESETS["retinanet_mobile"]
    assert (mobile.backbone, mobile.backbone_weights, mobile.image_size, mobile.head_norm) == (
        "resnet10", None, 320, "group")
    assert mobile.head_separable and not config.head_separable


def test_76725_anchors_at_640():
    anchors = retinanet.anchors_for(retinanet.PRESETS["retinanet"])
    assert anchors.shape == (76725, 4)
    assert sum(retinanet.anchors_per_level(retinanet.PRESETS["retinanet"])) == 76725


def test_paper_model_head_sizes_and_anchor_count():
    """The full paper graph at 640: 76,725 anchors x 80 classes, A*K and A*4 output convs."""
    detector = tfzoo.build_model("retinanet", backbone_weights=None)
    assert detector.anchors.shape == (76725, 4)
    assert detector.output["class_logits"].shape[1:] == (76725, 80)
    assert detector.output["box_deltas"].shape[1:] == (76725, 4)
    assert detector.get_layer("class_head_predict").filters == 9 * 80
    assert detector.get_layer("box_head_predict").filters == 9 * 4
    assert len([l for l in detector.layers if l.name.startswith("class_head_conv")]) == 4
    # P6 from C5 by a stride-2 conv; P7 from ReLU(P6).
    assert detector.get_layer("fpn_p6").strides == (2, 2)
    assert detector.get_layer("fpn_relu_p6") is not None
    assert detector.get_layer("fpn_p7").input.shape[1:3] == (10, 10)


def test_classification_bias_is_the_prior():
    detector = build_tiny("retinanet_mobile")
    bias = detector.get_layer("class_head_predict").bias.numpy()
    np.testing.assert_allclose(bias, -math.log((1 - 0.01) / 0.01), rtol=1e-6)
    # With tiny random weights every anchor starts near probability 0.01.
    logits = detector(np.zeros((1, 64, 64, 3), np.float32))["class_logits"].numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), 0.01, atol=0.005)


def test_heads_are_shared_across_levels():
    detector = build_tiny("retinanet_mobile")
    layer = detector.get_layer("class_head_conv0")
    # One set of weights applied once per level (P3..P7).
    assert len(layer._inbound_nodes) == 5
    # The mobile preset's GroupNorm heads: one GN per conv, shared across levels too.
    norm = detector.get_layer("class_head_gn0")
    assert norm.groups == 2 and len(norm._inbound_nodes) == 5
    paper = build_tiny("retinanet")
    assert not [l for l in paper.layers if "_gn" in l.name]


def test_separable_heads():
    """retinanet_mobile's heads: a depthwise 3x3 + 1x1 conv in place of each 3x3 conv (the
    output conv too), shared across levels; the paper preset keeps plain 3x3 convs."""
    mobile = build_tiny("retinanet_mobile")
    for head in ("class_head", "box_head"):
        for name in (f"{head}_conv0", f"{head}_predict"):
            layer = mobile.get_layer(name)
            assert isinstance(layer, keras.layers.SeparableConv2D) and layer.kernel_size == (3, 3)
            assert len(layer._inbound_nodes) == 5
    predict = mobile.get_layer("class_head_predict")
    assert predict.depthwise_kernel.shape == (3, 3, 16, 1) and predict.pointwise_kernel.shape == (1, 1, 16, 9 * 3)
    plain = build_tiny("retinanet_mobile", head_separable=False)
    assert not [l for l in plain.layers if isinstance(l, keras.layers.SeparableConv2D)]
    assert plain.get_layer("class_head_predict").kernel.shape == (3, 3, 16, 9 * 3)
    # Fewer weights for the same outputs.
    assert mobile.count_params() < plain.count_params()
    assert mobile.output["class_logits"].shape == plain.output["class_logits"].shape
    paper = build_tiny("retinanet")
    assert not [l for l in paper.layers if isinstance(l, keras.layers.SeparableConv2D)]


def _ground_truth(rows, seed=0):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0.0, 0.6, [rows, 2])
    size = rng.uniform(0.05, 0.4, [rows, 2])
    return {
        schema.BOXES: tf.constant(np.concatenate([corner, corner + size], axis=1), tf.float32),
        schema.CLASSES: tf.constant(rng.integers(0, 3, rows), tf.int32),
        schema.IS_CROWD: tf.constant(rng.uniform(size=rows) < 0.2),
        schema.DIFFICULT: tf.constant(rng.uniform(size=rows) < 0.2),
    }


@pytest.mark.parametrize("rows", [0, 1, 3, 6])
def test_compiled_encoder_equals_the_plain_graph(rows):
    """targets() runs XLA on padded ground truth; the plain graph on the unpadded one gives
    the same class targets and the same box targets to float rounding."""
    detector = build_tiny("retinanet_mobile", allow_low_quality_matches=True)
    truth = _ground_truth(rows, seed=rows)
    compiled = detector.encoder.targets({**truth, schema.IMAGE_ID: tf.constant("x")})
    plain = tf.function(detector.encoder.box_targets)(truth)
    np.testing.assert_array_equal(compiled["classes"], plain["classes"])
    np.testing.assert_allclose(compiled["box_deltas"], plain["box_deltas"], atol=1e-5)
    assert (np.asarray(plain["classes"]) >= 0).any() == (rows > 0 and not np.all(
        np.asarray(truth[schema.IS_CROWD]) | np.asarray(truth[schema.DIFFICULT])))


def _encode(detector, boxes, classes, crowd=None, size=64):
    n = len(classes)
    example = {
        schema.IMAGE: tf.zeros([size, size, 3]),
        schema.BOXES: tf.constant(np.asarray(boxes, np.float32).reshape(-1, 4)),
        schema.CLASSES: tf.constant(classes, tf.int32),
        schema.IS_CROWD: tf.constant(crowd if crowd is not None else [False] * n, tf.bool),
        schema.DIFFICULT: tf.zeros([n], tf.bool),
        schema.IMAGE_ID: tf.constant("x"),
    }
    return {k: v.numpy() for k, v in detector.encoder.targets(example).items()}


def test_encoder_labels_follow_the_iou_thresholds():
    detector = build_tiny("retinanet", image_size=128)
    anchors = detector.anchors.numpy()
    gt = np.array([[0.1, 0.15, 0.55, 0.5]], np.float32)
    targets = _encode(detector, gt, [2], size=128)
    iou = pairwise_iou(anchors, gt)[:, 0]
    classes = targets["classes"]
    np.testing.assert_array_equal(classes[iou >= 0.5], 2)
    np.testing.assert_array_equal(classes[iou < 0.4], matcher_ops.BACKGROUND)
    between = (iou >= 0.4) & (iou < 0.5)
    np.testing.assert_array_equal(classes[between], matcher_ops.IGNORE)
    # Deltas: encoded for positives only, and they decode back to the ground truth.
    positive = classes >= 0
    assert positive.any()
    decoded = box_coder.decode(targets["box_deltas"][positive], anchors[positive]).numpy()
    np.testing.assert_allclose(decoded, np.repeat(gt, positive.sum(), 0), atol=1e-5)
    assert not targets["box_deltas"][~positive].any()


def test_low_quality_matches_only_when_enabled():
    tiny_box = np.array([[0.40, 0.40, 0.45, 0.45]], np.float32)  # far smaller than any anchor
    paper = build_tiny("retinanet", image_size=128)
    assert (_encode(paper, tiny_box, [1], size=128)["classes"] >= 0).sum() == 0
    lenient = build_tiny("retinanet", image_size=128, allow_low_quality_matches=True)
    classes = _encode(lenient, tiny_box, [1], size=128)["classes"]
    best = np.argmax(pairwise_iou(lenient.anchors.numpy(), tiny_box)[:, 0])
    assert classes[best] == 1


def test_crowd_boxes_make_ignored_not_positive_anchors():
    detector = build_tiny("retinanet", image_size=128)
    gt = np.array([[0.1, 0.15, 0.55, 0.5]], np.float32)
    classes = _encode(detector, gt, [2], crowd=[True], size=128)["classes"]
    assert (classes >= 0).sum() == 0
    iou = pairwise_iou(detector.anchors.numpy(), gt)[:, 0]
    np.testing.assert_array_equal(classes[iou >= 0.4], matcher_ops.IGNORE)


def _reference_losses(cls_targets, box_targets, logits, deltas, alpha=0.25, gamma=2.0, beta=0.1, ce_weight=0.0):
    """Focal (+ ``ce_weight`` x softmax cross-entropy over the classes of each positive
    anchor) and smooth L1, summed and divided by the positive count, in plain NumPy."""
    num_classes = logits.shape[-1]
    positives = max((cls_targets >= 0).sum(), 1)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    cls = 0.0
    box = 0.0
    for b, a in np.ndindex(cls_targets.shape):
        c = cls_targets[b, a]
        if c == matcher_ops.IGNORE:
            continue
        for k in range(num_classes):
            y = 1.0 if c == k else 0.0
            p_t = p[b, a, k] if y else 1 - p[b, a, k]
            alpha_t = alpha if y else 1 - alpha
            cls += -alpha_t * (1 - p_t) ** gamma * math.log(p_t)
        if c >= 0:
            z = logits[b, a].astype(np.float64)
            cls += ce_weight * -(z[c] - math.log(np.exp(z).sum()))
            for d in np.abs(deltas[b, a] - box_targets[b, a]):
                box += 0.5 * d * d / beta if d < beta else d - 0.5 * beta
    return cls / positives, box / positives


@pytest.mark.parametrize("ce_weight", [0.0, 1.0, 0.5])
def test_loss_matches_a_numpy_reference(ce_weight):
    detector = build_tiny("retinanet_mobile", class_ce_weight=ce_weight)
    rng = np.random.default_rng(0)
    a = detector.anchors.shape[0]
    cls_targets = rng.choice([-2, -1, -1, -1, 0, 1, 2], size=(2, a)).astype(np.int32)
    box_targets = rng.normal(size=(2, a, 4)).astype(np.float32) * (cls_targets >= 0)[..., None]
    logits = rng.normal(size=(2, a, 3)).astype(np.float32) * 3
    deltas = rng.normal(size=(2, a, 4)).astype(np.float32)
    losses = detector.compute_losses(
        {"classes": cls_targets, "box_deltas": box_targets}, {"class_logits": logits, "box_deltas": deltas}
    )
    cls_ref, box_ref = _reference_losses(cls_targets, box_targets, logits, deltas, ce_weight=ce_weight)
    np.testing.assert_allclose(float(losses["cls_loss"]), cls_ref, rtol=1e-4)
    np.testing.assert_allclose(float(losses["box_loss"]), box_ref, rtol=1e-4)


def test_cpu_preset_starts_from_the_shared_scratch_recipe():
    from tfzoo.models.base import SCRATCH_RECIPE, TrainingRecipe

    mobile, paper = retinanet.PRESETS["retinanet_mobile"], retinanet.PRESETS["retinanet"]
    assert {k: getattr(mobile, k) for k in SCRATCH_RECIPE} == SCRATCH_RECIPE
    assert mobile.class_ce_weight == 1.0 and paper.class_ce_weight == 0.0  # the paper: focal loss alone
    # The paper preset keeps the papers' recipe, TrainingRecipe's defaults.
    recipe = {f.name for f in dataclasses.fields(TrainingRecipe)}
    assert {k: getattr(paper, k) for k in recipe} == {k: getattr(TrainingRecipe(), k) for k in recipe}


def test_decoder_finds_a_confident_anchor_and_applies_nms():
    detector = build_tiny("retinanet_mobile")
    a = detector.anchors.shape[0]
    anchors = detector.anchors.numpy()
    logits = np.full((1, a, 3), -10.0, np.float32)
    target = 7  # an anchor of the finest level
    logits[0, target, 1] = 5.0
    deltas = np.zeros((1, a, 4), np.float32)
    out = {k: v.numpy() for k, v in detector.decode({"class_logits": logits, "box_deltas": deltas}).items()}
    assert int(out["num_detections"][0]) == 1
    assert int(out["detection_classes"][0, 0]) == 1
    np.testing.assert_allclose(out["detection_scores"][0, 0], 1 / (1 + math.exp(-5.0)), rtol=1e-5)
    np.testing.assert_allclose(out["detection_boxes"][0, 0], np.clip(anchors[target], 0, 1), atol=1e-6)
    # Two overlapping boxes of the same class: the weaker one disappears; another class stays.
    shifted = deltas.copy()
    neighbour = target + 9  # the same anchor shape one cell to the right
    shifted[0, neighbour] = 0.0
    logits[0, neighbour, 1] = 4.0
    logits[0, neighbour, 2] = 4.0
    out = {k: v.numpy() for k, v in detector.decode({"class_logits": logits, "box_deltas": shifted}).items()}
    iou = pairwise_iou(np.clip(anchors[[target]], 0, 1), np.clip(anchors[[neighbour]], 0, 1))[0, 0]
    classes = sorted(out["detection_classes"][0, : int(out["num_detections"][0])].tolist())
    expected = [1, 2] if iou > 0.5 else [1, 1, 2]
    assert classes == expected


def test_decoder_matches_a_numpy_reference_of_the_paper_inference():
    """Top k per level of all (anchor, class) scores, decoded boxes, per-class NMS: the
    decoder (top-k on logits, only the winners decoded) against NumPy on random outputs
    with thousands of pairs above the threshold, so the per-level cut matters."""
    from tests.ops.test_nms import reference_nms

    detector = build_tiny("retinanet_mobile", pre_nms_top_k=40)
    config = detector.config
    a = detector.anchors.shape[0]
    rng = np.random.default_rng(0)
    logits = rng.normal(-2.0, 2.0, (2, a, 3)).astype(np.float32)
    deltas = rng.normal(0.0, 0.5, (2, a, 4)).astype(np.float32)
    out = {k: v.numpy() for k, v in detector.decode({"class_logits": logits, "box_deltas": deltas}).items()}
    boxes = np.clip(box_coder.decode(deltas, detector.anchors, config.box_weights).numpy(), 0.0, 1.0)
    probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    bounds = np.cumsum([0] + retinanet.anchors_per_level(config))
    for b in range(2):
        cand_boxes, cand_scores = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            flat = probabilities[b, lo:hi].reshape(-1)
            for i in np.argsort(-flat, kind="stable")[:config.pre_nms_top_k]:
                row = np.zeros(3)
                box = boxes[b, lo + i // 3]
                if box[2] > box[0] and box[3] > box[1]:  # a box clipped away to nothing is no detection
                    row[i % 3] = flat[i]
                cand_boxes.append(box)
                cand_scores.append(row)
        want = reference_nms(np.array(cand_boxes), np.array(cand_scores), config.max_detections,
                             config.nms_iou_threshold, config.score_threshold, len(cand_scores))
        num = int(out["num_detections"][b])
        assert num == len(want) and num > 10
        np.testing.assert_allclose(out["detection_scores"][b, :num], [w[0] for w in want], rtol=1e-5)
        np.testing.assert_array_equal(out["detection_classes"][b, :num], [w[1] for w in want])
        np.testing.assert_allclose(out["detection_boxes"][b, :num], np.array([w[2] for w in want]), atol=1e-5)


def test_score_threshold_removes_weak_scores():
    detector = build_tiny("retinanet_mobile")
    a = detector.anchors.shape[0]
    logits = np.full((1, a, 3), math.log(0.04 / 0.96), np.float32)  # p = 0.04 < 0.05 everywhere
    out = detector.decode({"class_logits": logits, "box_deltas": np.zeros((1, a, 4), np.float32)})
    assert int(out["num_detections"][0]) == 0


def test_config_overrides_are_checked():
    config = retinanet.PRESETS["retinanet_mobile"]
    assert config.with_settings(["learning_rate=0.5", "augment=flip", "aspect_ratios=[1, 2]"]).aspect_ratios == (1.0, 2.0)
    with pytest.raises(ValueError, match="unknown config field"):
        config.replace(learnig_rate=1.0)
    with pytest.raises(ValueError, match="takes an integer"):
        config.with_settings(["num_classes=three"])
    with pytest.raises(ValueError, match="key=value"):
        config.with_settings(["learning_rate"])
    with pytest.raises(ValueError, match="multiple of 32"):
        config.replace(image_size=300)
    with pytest.raises(ValueError, match="class_names"):
        config.replace(num_classes=2, class_names=("a",))


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'vgg99'"):
        build_tiny("retinanet_mobile", backbone="vgg99")


def test_backbone_batchnorm_momentum_follows_the_config():
    """keras.applications' MobileNetV2 keeps moving statistics with momentum 0.999, too slow
    for a few hundred steps from scratch (the inference-mode model then detects nothing)."""
    for preset, want in (("retinanet_mobile", 0.9), ("retinanet", 0.99)):
        config = retinanet.PRESETS[preset]
        assert config.batchnorm_momentum == want
    model = tfzoo.build_model("retinanet_mobile", num_classes=2, image_size=64, backbone_weights=None,
                              backbone_alpha=0.35, fpn_channels=8, head_channels=8, head_convs=1)
    norms = [layer for layer in model.get_layer("backbone").layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {layer.momentum for layer in norms} == {0.9}
    with pytest.raises(ValueError, match="batchnorm_momentum"):
        retinanet.PRESETS["retinanet"].replace(batchnorm_momentum=1.0)
