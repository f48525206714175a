"""multiclass_nms against a slow NumPy greedy NMS; padding, graph modes, TFLite builtins."""
import numpy as np
import pytest
import tensorflow as tf

from tests.reference import box_iou
from tfzoo.ops import nms


# --- slow, obvious NumPy reference --------------------------------------------------


def reference_nms(boxes, scores, max_detections, iou_threshold, score_threshold,
                  pre_nms_top_k, max_per_class=None):
    """Greedy per-class NMS of one image: boxes [N, 4] or [N, K, 4], scores [N, K].

    Returns a list of (score, class, box) sorted by score, at most max_detections long.
    """
    boxes = np.asarray(boxes, np.float64)
    n, k = scores.shape
    flat = scores.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:pre_nms_top_k]
    candidates = [(flat[i], i // k, i % k) for i in order if flat[i] > score_threshold]
    kept = []
    for cls in range(k):
        kept_cls = []
        for score, anchor, c in candidates:  # already in score order
            if c != cls:
                continue
            box = boxes[anchor, c] if boxes.ndim == 3 else boxes[anchor]
            if all(box_iou(box, other) <= iou_threshold for _, _, other in kept_cls):
                kept_cls.append((score, cls, box))
        kept += kept_cls[:max_per_class] if max_per_class else kept_cls
    kept.sort(key=lambda t: -t[0])
    return kept[:max_detections]


def _random_boxes(rng, shape, max_size=0.3):
    yx = rng.uniform(0.0, 0.9, shape + (2,))
    hw = rng.uniform(0.02, max_size, shape + (2,))
    return np.concatenate([yx, yx + hw], axis=-1).astype(np.float32)


def _clustered_boxes(rng, batch, num, num_objects=40):
    """Detector-like boxes: jittered copies of a few objects, IoUs spread over (0, 1)."""
    objects = _random_boxes(rng, (batch, num_objects), max_size=0.4)
    pick = rng.integers(0, num_objects, (batch, num))
    base = np.take_along_axis(objects, pick[..., None], axis=1)  # [B, N, 4]
    size = np.concatenate([base[..., 2:] - base[..., :2]] * 2, axis=-1)
    return (base + rng.normal(0.0, 0.08, base.shape) * size).astype(np.float32)


def _assert_matches(out, b, expected):
    num = int(out["num_detections"][b])
    assert num == len(expected)
    np.testing.assert_allclose(out["detection_scores"][b, :num], [e[0] for e in expected],
                               rtol=1e-6)
    np.testing.assert_array_equal(out["detection_classes"][b, :num], [e[1] for e in expected])
    np.testing.assert_allclose(out["detection_boxes"][b, :num],
                               np.array([e[2] for e in expected]).reshape(-1, 4), atol=1e-6)


def _numpy(out):
    return {k: v.numpy() for k, v in out.items()}


# --- agreement with the reference ---------------------------------------------------


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_matches_reference_on_1000_random_boxes(iou_threshold):
    rng = np.random.default_rng(0)
    boxes = _clustered_boxes(rng, 2, 1000)  # [B, N, 4]
    scores = rng.uniform(0.0, 1.0, (2, 1000, 4)).astype(np.float32) ** 3  # [B, N, K]
    out = _numpy(nms.multiclass_nms(boxes, scores, max_detections=1000,
                                    iou_threshold=iou_threshold, score_threshold=0.05,
                                    pre_nms_top_k=1000))
    for b in range(2):
        expected = reference_nms(boxes[b], scores[b], 1000, iou_threshold, 0.05, 1000)
        # The comparison is meaningful: NMS removed many of the 1000 candidates.
        assert 20 < len(expected) < 700
        _assert_matches(out, b, expected)


def test_per_class_boxes_and_cap_per_class_match_reference():
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, (1, 400, 3))  # [B, N, K, 4]
    scores = rng.uniform(0.0, 1.0, (1, 400, 3)).astype(np.float32)
    for cap in (None, 5):
        out = _numpy(nms.multiclass_nms(boxes, scores, max_detections=50, iou_threshold=0.5,
                                        score_threshold=0.05, pre_nms_top_k=600,
                                        max_detections_per_class=cap))
        expected = reference_nms(boxes[0], scores[0], 50, 0.5, 0.05, 600, cap)
        _assert_matches(out, 0, expected)
    assert np.bincount(out["detection_classes"][0, :15]).max() <= 5
    assert out["num_detections"][0] == 15


def test_pre_nms_top_k_limits_candidates():
    # 3 disjoint boxes, one class: only the 2 best enter NMS.
    boxes = np.array([[[0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6], [0.8, 0.8, 0.9, 0.9]]],
                     np.float32)
    scores = np.array([[[0.9], [0.8], [0.7]]], np.float32)
    out = _numpy(nms.multiclass_nms(boxes, scores, max_detections=5, pre_nms_top_k=2))
    assert out["num_detections"][0] == 2
    np.testing.assert_allclose(out["detection_scores"][0, :3], [0.9, 0.8, 0.0])


def test_same_box_different_classes_both_kept_same_class_suppressed():
    boxes = np.array([[[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.52]]], np.float32)
    scores = np.array([[[0.9, 0.6], [0.8, 0.0]]], np.float32)
    out = _numpy(nms.multiclass_nms(boxes, scores, max_detections=4))
    assert out["num_detections"][0] == 2
    np.testing.assert_array_equal(out["detection_classes"][0], [0, 1, -1, -1])
    np.testing.assert_allclose(out["detection_scores"][0], [0.9, 0.6, 0.0, 0.0])


def test_padding_of_short_candidate_lists_is_finite_zero():
    """Fewer pairs than k: padded with score 0 (finite, so an int8 TFLite graph can calibrate
    the padded tensor), valid indices, and NMS never returns the padding."""
    scores = np.array([[[0.9, 0.2], [0.0, 0.7]]], np.float32)  # 4 pairs, k = 6
    top, anchors, classes = (t.numpy() for t in nms.top_k_candidates(scores, 6))
    np.testing.assert_allclose(top[0], [0.9, 0.7, 0.2, 0.0, 0.0, 0.0])
    assert np.all(np.isfinite(top)) and anchors.max() <= 1 and classes.max() <= 1
    boxes = np.array([[[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]]], np.float32)
    out = _numpy(nms.multiclass_nms(boxes, scores, max_detections=6, score_threshold=0.0, pre_nms_top_k=6))
    assert out["num_detections"][0] == 3
    with pytest.raises(ValueError, match="score_threshold must be >= 0"):
        nms.multiclass_nms(boxes, scores, score_threshold=-0.1)


def test_top_k_per_level_then_nms_candidates_equals_nms_over_all_pairs():
    """When k covers every pair of each level, NMS over the merged per-level candidates is
    the reference NMS over all pairs (the selection itself is checked below)."""
    rng = np.random.default_rng(2)
    sizes, num_classes = (50, 3), 4
    boxes = [_random_boxes(rng, (2, a)) for a in sizes]
    scores = [rng.uniform(0.0, 1.0, (2, a, num_classes)).astype(np.float32) for a in sizes]
    top, anchors, classes = nms.top_k_per_level(scores, k=200)
    cand_boxes = tf.gather(np.concatenate(boxes, axis=1), anchors, batch_dims=1)
    out = _numpy(nms.nms_candidates(cand_boxes, top, classes, num_classes, max_detections=100))
    merged = reference_nms(np.concatenate([x[0] for x in boxes]),
                           np.concatenate([x[0] for x in scores]), 100, 0.5, 0.05, 1000)
    _assert_matches(out, 0, merged)


def test_top_k_per_level_indexes_all_levels_and_two_stages_pick_the_top_pairs():
    """Anchor indices count over all levels; a level with more anchors than k takes the
    two-stage path (best anchors, then best pairs), which must pick exactly the pairs of a
    plain sort over A * K, including several classes of one anchor; a dynamic level
    shorter than k is padded with score 0."""
    rng = np.random.default_rng(5)
    sizes, k, num_classes = (40, 6, 2), 15, 3  # level 0: 40 anchors > k (two stages)
    scores = [rng.uniform(0.0, 1.0, (2, a, num_classes)).astype(np.float32) for a in sizes]
    scores[0][0, 3] = [0.999, 0.998, 0.997]  # one anchor owns the three best pairs
    top, anchors, classes = (t.numpy() for t in nms.top_k_per_level(scores, k))
    assert top.shape == (2, 15 + 15 + 6)
    offsets = np.cumsum([0] + list(sizes))
    for b in range(2):
        want = []
        for level, sc in enumerate(scores):
            flat = sc[b].reshape(-1)
            want += [(float(flat[i]), offsets[level] + i // num_classes, i % num_classes)
                     for i in np.argsort(-flat)[:k]]
        got = [(float(s), int(a), int(c)) for s, a, c in zip(top[b], anchors[b], classes[b])]
        assert sorted(got) == sorted(want)
        assert np.all(np.diff(top[b, :15]) <= 0)  # each level's rows sorted
    assert [(a, c) for a, c in zip(anchors[0, :3], classes[0, :3])] == [(3, 0), (3, 1), (3, 2)]
    all_scores = np.concatenate(scores, axis=1)
    np.testing.assert_array_equal(all_scores[np.arange(2)[:, None], anchors, classes], top)

    @tf.function(input_signature=[tf.TensorSpec([1, None, num_classes], tf.float32)])
    def dynamic(x):
        return nms.top_k_per_level([x], k)

    top, anchors, _ = (t.numpy() for t in dynamic(scores[2][:1]))  # 6 pairs, k = 15
    assert top.shape == (1, k) and np.all(top[0, 6:] == 0.0) and anchors.max() <= 1


def test_nms_candidates_matches_reference():
    """nms_candidates on (box, score, class) rows equals the reference NMS of the same pairs
    as one-hot scores (what multiclass_nms does after its top-k)."""
    rng = np.random.default_rng(6)
    num, num_classes = 300, 4
    boxes = _clustered_boxes(rng, 2, num)
    scores = rng.uniform(0.0, 1.0, (2, num)).astype(np.float32)
    classes = rng.integers(0, num_classes, (2, num)).astype(np.int32)
    out = _numpy(nms.nms_candidates(boxes, scores, classes, num_classes, max_detections=50))
    for b in range(2):
        one_hot = np.zeros((num, num_classes), np.float32)
        one_hot[np.arange(num), classes[b]] = scores[b]
        _assert_matches(out, b, reference_nms(boxes[b], one_hot, 50, 0.5, 0.05, num))
    capped = _numpy(nms.nms_candidates(boxes, scores, classes, num_classes, max_detections=50,
                                       max_detections_per_class=3))
    assert np.all(np.bincount(capped["detection_classes"][0, :capped["num_detections"][0]]) <= 3)
    with pytest.raises(ValueError, match=r"need boxes \[B, P, 4\]"):
        nms.nms_candidates(boxes[0], scores, classes, num_classes)


# --- empty inputs and padding -------------------------------------------------------


def test_no_box_above_threshold_gives_zero_detections_and_padding():
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, (2, 30))
    scores = np.full((2, 30, 5), 0.05, np.float32)  # equal to the threshold: not above
    out = _numpy(nms.multiclass_nms(boxes, scores, max_detections=8, score_threshold=0.05))
    np.testing.assert_array_equal(out["num_detections"], [0, 0])
    assert out["detection_boxes"].shape == (2, 8, 4) and not out["detection_boxes"].any()
    assert not out["detection_scores"].any()
    np.testing.assert_array_equal(out["detection_classes"], np.full((2, 8), -1))


def test_empty_input_gives_zero_detections_without_nan():
    boxes = np.zeros((2, 0, 4), np.float32)
    scores = np.zeros((2, 0, 3), np.float32)
    out = _numpy(nms.multiclass_nms(boxes, scores, max_detections=5))
    np.testing.assert_array_equal(out["num_detections"], [0, 0])
    assert all(np.isfinite(v).all() for v in out.values())
    assert out["detection_boxes"].shape == (2, 5, 4)
    # Dynamic N (unknown in the graph) with N == 0 too.
    fn = tf.function(nms.multiclass_nms, input_signature=[
        tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, 3])])
    out = _numpy(fn(boxes, scores))
    np.testing.assert_array_equal(out["num_detections"], [0, 0])


def test_padded_outputs_sorted_with_dtypes():
    rng = np.random.default_rng(4)
    boxes = _random_boxes(rng, (3, 6), max_size=0.05)
    scores = rng.uniform(0.0, 1.0, (3, 6, 2)).astype(np.float32)
    scores[1] = 0.0  # an image without detections inside a batch
    out = nms.multiclass_nms(boxes, scores, max_detections=20)
    dtypes = {k: v.dtype for k, v in out.items()}
    assert dtypes == {"detection_boxes": tf.float32, "detection_scores": tf.float32,
                      "detection_classes": tf.int32, "num_detections": tf.int32}
    out = _numpy(out)
    assert out["num_detections"][1] == 0 and out["num_detections"][0] > 0
    for b in range(3):
        num = out["num_detections"][b]
        s = out["detection_scores"][b]
        assert np.all(np.diff(s[:num]) <= 0) and np.all(s[:num] > 0.05)
        assert not s[num:].any() and not out["detection_boxes"][b, num:].any()
        assert np.all(out["detection_classes"][b, num:] == nms.PADDING_CLASS)
        assert np.all(out["detection_classes"][b, :num] >= 0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        nms.multiclass_nms(np.zeros((1, 5, 4), np.float32), np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError):
        nms.multiclass_nms(np.zeros((1, 5, 3), np.float32), np.zeros((1, 5, 2), np.float32))


# --- graph modes ------------------------------------------------------------------------


def test_runs_in_tf_function_with_dynamic_batch_and_in_dataset_map():
    rng = np.random.default_rng(5)
    boxes = _random_boxes(rng, (4, 100))
    scores = rng.uniform(0.0, 1.0, (4, 100, 3)).astype(np.float32)
    eager = _numpy(nms.multiclass_nms(boxes, scores, max_detections=10))

    fn = tf.function(lambda b, s: nms.multiclass_nms(b, s, max_detections=10),
                     input_signature=[tf.TensorSpec([None, None, 4]),
                                      tf.TensorSpec([None, None, 3])])
    graph = _numpy(fn(boxes, scores))
    ds = tf.data.Dataset.from_tensor_slices((boxes, scores)).batch(2).map(
        lambda b, s: nms.multiclass_nms(b, s, max_detections=10))
    mapped = [_numpy(x) for x in ds]
    single = _numpy(nms.multiclass_nms(boxes[:1], scores[:1], max_detections=10))  # B == 1
    for key in eager:
        np.testing.assert_allclose(graph[key], eager[key])
        np.testing.assert_allclose(np.concatenate([m[key] for m in mapped]), eager[key])
        np.testing.assert_allclose(single[key], eager[key][:1])
    assert eager["num_detections"].min() > 0


# --- TFLite, builtin ops only -------------------------------------------------------


@pytest.mark.parametrize("batch,per_class_boxes,cap", [(None, False, None), (1, True, 4)])
def test_tflite_builtins_only_conversion_matches_tf(batch, per_class_boxes, cap, tflite_op_names):
    """Dynamic batch (a WHILE loop over images) and static batch 1 with per-class boxes."""
    from ai_edge_litert.interpreter import Interpreter

    num, classes, max_det = 300, 3, 20
    box_shape = [batch, num, classes, 4] if per_class_boxes else [batch, num, 4]

    @tf.function(input_signature=[tf.TensorSpec(box_shape, tf.float32),
                                  tf.TensorSpec([batch, num, classes], tf.float32)])
    def detect(boxes, scores):
        out = nms.multiclass_nms(boxes, scores, max_detections=max_det, pre_nms_top_k=200,
                                 max_detections_per_class=cap)
        return [out[k] for k in sorted(out)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [detect.get_concrete_function()], detect)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = converter.convert()
    ops = tflite_op_names(model)
    assert "NON_MAX_SUPPRESSION_V5" in ops and ("WHILE" in ops) == (batch is None)
    assert not [op for op in ops if op.startswith("CUSTOM") or "FLEX" in op.upper()], ops

    rng = np.random.default_rng(6)
    images = batch or 2
    count = num * classes if per_class_boxes else num
    boxes = _clustered_boxes(rng, images, count).reshape([images] + box_shape[1:])
    scores = rng.uniform(0.0, 1.0, (images, num, classes)).astype(np.float32)
    scores[-1, :, 1] = 0.0
    interpreter = Interpreter(model_content=model)
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    box_in, score_in = inputs["boxes"], inputs["scores"]
    interpreter.resize_tensor_input(box_in["index"], boxes.shape)
    interpreter.resize_tensor_input(score_in["index"], scores.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(box_in["index"], boxes)
    interpreter.set_tensor(score_in["index"], scores)
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]

    expected = [t.numpy() for t in detect(boxes, scores)]
    assert expected[-1].min() > 0  # num_detections: something to compare
    if cap:
        assert expected[-1][0] == cap * 2  # two classes left, each capped
    got = sorted(outputs, key=lambda a: (a.ndim, a.dtype.str))
    want = sorted(expected, key=lambda a: (a.ndim, a.dtype.str))
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, atol=1e-6)


def test_an_empty_box_never_becomes_a_detection():
    """Padding proposals (zero boxes) and boxes clipped away score nothing, however high
    their score: every decoder's NMS drops them (TFLite builtins: a comparison and a select)."""
    boxes = np.array([[[0.0, 0.0, 0.0, 0.0], [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.5, 0.9], [0.6, 0.7, 0.5, 0.9]]],
                     np.float32)
    scores = np.array([[[0.99, 0.0], [0.6, 0.1], [0.98, 0.0], [0.97, 0.0]]], np.float32)
    out = nms.multiclass_nms(boxes, scores, max_detections=4, score_threshold=0.05)
    assert int(out["num_detections"][0]) == 2  # the one real box, once per class above the threshold
    np.testing.assert_allclose(out["detection_boxes"][0, :2], [[0.1, 0.1, 0.4, 0.4]] * 2)
    out = nms.nms_candidates(boxes[0:1, :, :], scores[..., 0], np.zeros([1, 4], np.int32), 2, max_detections=4,
                             score_threshold=0.0)
    assert int(out["num_detections"][0]) == 1 and float(out["detection_scores"][0, 0]) == pytest.approx(0.6)
