"""RPN proposals and second-stage RoI targets against slow NumPy references; FPN level
assignment against the paper's formula; builtin-only TFLite conversion of the proposal layer."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.reference import box_iou, pairwise_iou
from tfzoo.ops import anchors as anchors_ops
from tfzoo.ops import box_coder, matcher, proposals, roi


def _anchors(rng, count):
    yx = rng.uniform(0.0, 0.8, (count, 2))
    hw = rng.uniform(0.05, 0.3, (count, 2))
    return np.concatenate([yx, yx + hw], axis=1).astype(np.float32)


def _decode(delta, anchor, weights=(1.0, 1.0, 1.0, 1.0)):
    """One box from its deltas, the paper's parametrization, plain Python."""
    ha, wa = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cya, cxa = anchor[0] + 0.5 * ha, anchor[1] + 0.5 * wa
    dy, dx, dh, dw = (d / w for d, w in zip(delta, weights))
    cy, cx = cya + dy * ha, cxa + dx * wa
    h, w = ha * math.exp(min(dh, math.log(1000.0 / 16))), wa * math.exp(min(dw, math.log(1000.0 / 16)))
    return [min(max(v, 0.0), 1.0) for v in (cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w)]


def reference_proposals(logits, deltas, anchors, level_sizes, pre_nms_top_k, post_nms_top_n, iou, min_size):
    """One image: per level the top-k anchors by objectness, decoded, clipped, small ones
    dropped, greedy NMS within the level; the best post_nms_top_n over all levels."""
    kept, start = [], 0
    for size in level_sizes:
        scores = 1.0 / (1.0 + np.exp(-logits[start:start + size].astype(np.float64)))
        order = np.argsort(-scores, kind="stable")[:pre_nms_top_k]
        level_kept = []
        for i in order:
            box = _decode(deltas[start + i], anchors[start + i])
            if box[2] - box[0] < max(min_size, 1e-12) or box[3] - box[1] < max(min_size, 1e-12):
                continue
            if all(box_iou(box, other) <= iou for _, other in level_kept):
                level_kept.append((scores[i], box))
        kept += level_kept
        start += size
    kept.sort(key=lambda t: -t[0])
    return kept[:post_nms_top_n]


@pytest.mark.parametrize("level_sizes, pre, post", [((300,), 200, 50), ((200, 80, 20), 60, 40), ((30, 10), 500, 80)])
def test_proposals_match_the_reference(level_sizes, pre, post):
    rng = np.random.default_rng(sum(level_sizes) + pre)
    total = sum(level_sizes)
    anchors = _anchors(rng, total)
    logits = rng.normal(0, 2, (2, total)).astype(np.float32)
    deltas = rng.normal(0, 0.3, (2, total, 4)).astype(np.float32)
    boxes, scores, count = proposals.generate_proposals(logits, deltas, anchors, level_sizes, pre_nms_top_k=pre,
                                                        post_nms_top_n=post, iou_threshold=0.6, min_size=0.01)
    assert boxes.shape == (2, post, 4) and scores.shape == (2, post) and count.shape == (2,)
    for b in range(2):
        want = reference_proposals(logits[b], deltas[b], anchors, level_sizes, pre, post, 0.6, 0.01)
        n = int(count[b])
        assert n == len(want)
        np.testing.assert_allclose(scores[b, :n], [s for s, _ in want], rtol=1e-5)
        np.testing.assert_allclose(boxes[b, :n], [box for _, box in want], atol=2e-5)
        assert not np.any(boxes[b, n:]) and not np.any(scores[b, n:])


def test_proposals_of_one_anchor_and_no_gradient():
    anchors = np.array([[0.2, 0.2, 0.6, 0.5]], np.float32)
    logits = tf.Variable([[0.3]])
    deltas = tf.Variable(tf.zeros([1, 1, 4]))
    with tf.GradientTape() as tape:
        boxes, scores, count = proposals.generate_proposals(logits, deltas, anchors, pre_nms_top_k=10,
                                                            post_nms_top_n=5)
        total = tf.reduce_sum(boxes) + tf.reduce_sum(scores)
    assert int(count[0]) == 1 and boxes.shape == (1, 5, 4)
    np.testing.assert_allclose(boxes[0, 0], anchors[0], atol=1e-6)
    assert all(g is None for g in tape.gradient(total, [logits, deltas]))
    with pytest.raises(ValueError, match="sum to"):
        proposals.generate_proposals(logits, deltas, anchors, (2,))


def test_proposal_layer_converts_to_builtin_tflite(tflite_op_names):
    rng = np.random.default_rng(5)
    anchors = _anchors(rng, 120)

    @tf.function(input_signature=[tf.TensorSpec([1, 120]), tf.TensorSpec([1, 120, 4])])
    def layer(logits, deltas):
        return proposals.generate_proposals(logits, deltas, anchors, (90, 30), pre_nms_top_k=50, post_nms_top_n=20)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([layer.get_concrete_function()], layer)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flat = converter.convert()
    assert "NON_MAX_SUPPRESSION_V5" in tflite_op_names(flat)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flat)
    interpreter.allocate_tensors()
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    logits = rng.normal(0, 2, (1, 120)).astype(np.float32)
    deltas = rng.normal(0, 0.3, (1, 120, 4)).astype(np.float32)
    interpreter.set_tensor(inputs["logits"]["index"], logits)
    interpreter.set_tensor(inputs["deltas"]["index"], deltas)
    interpreter.invoke()
    got = sorted((interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()),
                 key=lambda a: (a.ndim, a.dtype.str))
    want = sorted((t.numpy() for t in layer(logits, deltas)), key=lambda a: (a.ndim, a.dtype.str))
    assert want[0][0] > 0  # proposals to compare
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_roi_targets_sample_foreground_first_and_encode_it():
    rng = np.random.default_rng(7)
    gt = np.array([[[0.1, 0.1, 0.4, 0.45], [0.5, 0.55, 0.9, 0.95], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[3, 0, -1]])
    jitter = rng.normal(0, 0.03, (40, 4)).astype(np.float32)
    near = np.clip(np.concatenate([gt[0, :2]] * 20) + jitter, 0, 1)
    near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 0.01)
    props = np.concatenate([near, _anchors(rng, 60)])[None].astype(np.float32)  # [1, 100, 4]
    out = proposals.roi_targets(props, [90], gt, classes, num_samples=32, positive_fraction=0.25, seed=3, step=0)
    rois, got_classes, deltas = (out[k].numpy()[0] for k in ("rois", "classes", "box_deltas"))
    assert rois.shape == (32, 4) and got_classes.shape == (32,) and deltas.shape == (32, 4)
    # the reference: candidates = the 90 valid proposals and the 2 ground-truth boxes
    candidates = np.concatenate([props[0, :90], gt[0, :2]])
    best = pairwise_iou(candidates, gt[0, :2])
    foreground = best.max(1) >= 0.5
    background = (best.max(1) >= 0.1) & ~foreground
    n_fg = min(int(foreground.sum()), 8)
    assert (got_classes[:n_fg] >= 0).all() and (got_classes[n_fg:] < 0).all()
    assert (got_classes == matcher.BACKGROUND).sum() == min(32 - n_fg, int(background.sum()))
    for k in range(32):
        iou_row = [box_iou(rois[k], g) for g in gt[0, :2]]
        if got_classes[k] >= 0:
            j = int(np.argmax(iou_row))
            assert max(iou_row) >= 0.5 and got_classes[k] == classes[0, j]
            np.testing.assert_allclose(box_coder.decode(deltas[k], rois[k], (10, 10, 5, 5)).numpy(), gt[0, j],
                                       atol=1e-5)
        elif got_classes[k] == matcher.BACKGROUND:
            assert 0.1 <= max(iou_row) < 0.5 and not deltas[k].any()


def test_roi_targets_without_objects_or_proposals_pad_without_nan():
    props = np.zeros([2, 10, 4], np.float32)
    props[0, :3] = [[0.1, 0.1, 0.3, 0.3], [0.4, 0.4, 0.8, 0.9], [0.0, 0.5, 0.2, 0.7]]
    gt = np.zeros([2, 2, 4], np.float32)
    classes = -np.ones([2, 2], np.int32)
    out = proposals.roi_targets(props, [3, 0], gt, classes, num_samples=8, seed=1, step=0)
    got = out["classes"].numpy()
    assert (got[0, :3] == matcher.BACKGROUND).all() and (got[0, 3:] == matcher.IGNORE).all()
    assert (got[1] == matcher.IGNORE).all()
    assert np.isfinite(out["box_deltas"].numpy()).all() and not out["box_deltas"].numpy().any()


def test_fpn_levels_follow_the_papers_formula():
    sides = np.array([10, 111, 112, 224, 447, 448, 1000, 0], np.float32)  # pixels, square RoIs at 1000 px
    rois = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides / 1000, sides / 1000], axis=1)
    got = roi.fpn_levels(rois, 1000).numpy()
    want = [min(max(math.floor(4 + math.log2(max(s, 1e-6) / 224)), 2), 5) for s in sides]
    assert list(got) == want == [2, 2, 3, 4, 4, 5, 5, 2]


@pytest.mark.parametrize("builtin", [False, True])
def test_multilevel_crops_take_each_roi_from_its_level(builtin):
    """Both paths (crop_and_resize on every level, or the builtin one-pass read of each
    RoI's own level) equal aligned_crops on the RoI's level, for two images, non-square
    maps, RoIs over the border and a single-sample crop."""
    rng = np.random.default_rng(2)
    maps = [rng.normal(size=(2, 16 // 2 ** i, 12 // 2 ** i, 3)).astype(np.float32) for i in range(3)]
    rois = np.array([[[0.1, 0.1, 0.5, 0.6], [0.2, 0.3, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0], [-0.1, 0.7, 0.3, 1.2]],
                     [[0.3, 0.2, 0.35, 0.9], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.99, 0.97], [0.05, 0.1, 0.6, 0.4]]],
                    np.float32)
    levels = np.array([[2, 0, 1, 0], [1, 0, 2, 2]], np.int32)
    for boxes in (rois, np.clip(rois, 0.0, 1.0)):  # some samples off their level / every one on it
        for crop in (4, (3, 5), 1):
            got = roi.multilevel_aligned_crops(maps, boxes, levels, crop, builtin=builtin).numpy()
            for b in range(2):
                for r, level in enumerate(levels[b]):
                    want = roi.aligned_crops(maps[level][b:b + 1], boxes[b:b + 1, r:r + 1], crop).numpy()[0, 0]
                    np.testing.assert_allclose(got[b, r], want, atol=1e-5)


def _grid_anchors_normalized(size=128, stride=16):
    base = anchors_ops.anchor_base(16, (0.5, 1.0, 2.0), (2, 4, 8))
    return (anchors_ops.grid_anchors(size // stride, size // stride, stride, base) / size).numpy()


def test_rpn_targets_follow_the_papers_rule():
    anchors = _grid_anchors_normalized()  # 8x8 x 9 = 576 anchors, some across the border
    gt = np.array([[0.1, 0.1, 0.45, 0.4], [0.5, 0.55, 0.95, 0.9], [0.3, 0.6, 0.36, 0.66], [0, 0, 0, 0]], np.float32)
    classes = np.array([2, 0, 1, -1])
    labels, deltas = proposals.rpn_targets(anchors, gt, classes, num_samples=64, positive_fraction=0.5, seed=4, step=0)
    labels, deltas = labels.numpy(), deltas.numpy()
    iou = pairwise_iou(anchors, gt[:3])  # [A, 3]
    best_for_gt = (iou == iou.max(0, keepdims=True)) & (iou > 0)
    positive = (iou.max(1) >= 0.7) | best_for_gt.any(1)
    negative = (iou.max(1) < 0.3) & ~positive
    sampled_pos, sampled_neg = labels == proposals.RPN_POSITIVE, labels == proposals.RPN_NEGATIVE
    assert sampled_pos.sum() == min(positive.sum(), 32) and sampled_neg.sum() == min(negative.sum(), 64 - sampled_pos.sum())
    assert not (sampled_pos & ~positive).any() and not (sampled_neg & ~negative).any()
    assert best_for_gt[:, 2].any() and iou[:, 2].max() < 0.7  # the small object only has its best anchor ...
    assert positive[best_for_gt[:, 2]].all()  # ... which is a positive
    for a in np.flatnonzero(sampled_pos):
        decoded = box_coder.decode(deltas[a], anchors[a]).numpy()
        j = int(np.argmin(np.abs(gt[:3] - decoded).sum(1)))
        np.testing.assert_allclose(decoded, gt[j], atol=1e-5)
        assert iou[a, j] >= 0.7 or best_for_gt[a, j]
    assert not deltas[~sampled_pos].any()


def test_rpn_targets_straddle_and_empty_images():
    anchors = _grid_anchors_normalized()
    outside = ~np.all((anchors[:, :2] >= 0) & (anchors[:, 2:] <= 1), axis=1)
    assert outside.any()
    gt = np.array([[0.0, 0.0, 0.3, 0.3]], np.float32)
    labels, _ = proposals.rpn_targets(anchors, gt, [0], straddle=0.0, seed=1, step=0)
    assert not (labels.numpy()[outside] != proposals.RPN_UNSAMPLED).any()
    assert (labels.numpy() == proposals.RPN_POSITIVE).any()
    labels, deltas = proposals.rpn_targets(anchors, np.zeros([0, 4], np.float32), np.zeros([0], np.int32), seed=1,
                                           step=0)
    assert (labels.numpy() == proposals.RPN_NEGATIVE).sum() == 256 and not (labels.numpy() == 1).any()
    assert np.isfinite(deltas.numpy()).all()


def test_rpn_head_is_shared_across_levels_and_ordered_like_the_anchors():
    import keras

    from tfzoo.layers import rpn_head

    inputs = [keras.Input((8, 8, 6)), keras.Input((4, 4, 6))]
    objectness, deltas = rpn_head(inputs, num_anchors=3, channels=5, name="rpn")
    model = keras.Model(inputs, [objectness, deltas])
    assert objectness.shape[1:] == (8 * 8 * 3 + 4 * 4 * 3,) and deltas.shape[1:] == (8 * 8 * 3 + 4 * 4 * 3, 4)
    assert model.count_params() == (9 * 6 * 5 + 5) + (5 * 3 + 3) + (5 * 12 + 12)  # one set of weights
    logits = model.get_layer("rpn_objectness")
    logits.kernel.assign(np.zeros(logits.kernel.shape, np.float32))
    logits.bias.assign(np.arange(3, dtype=np.float32))  # objectness = the anchor's index at its location
    boxes = model.get_layer("rpn_deltas")
    boxes.kernel.assign(np.zeros(boxes.kernel.shape, np.float32))
    boxes.bias.assign(np.arange(12, dtype=np.float32))
    rng = np.random.default_rng(0)
    out_logits, out_deltas = model([rng.normal(size=(2, 8, 8, 6)), rng.normal(size=(2, 4, 4, 6))])
    np.testing.assert_array_equal(out_logits[0], np.tile(np.arange(3), 64 + 16))
    np.testing.assert_array_equal(out_deltas[1, :3], np.arange(12).reshape(3, 4))
