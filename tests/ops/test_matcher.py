"""tfzoo.ops.matcher: thresholds and labels, low-quality matches, padding, presets, gather."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfzoo.ops import boxes
from tfzoo.ops.matcher import (
    BACKGROUND,
    FAST_RCNN,
    IGNORE,
    POSITIVE,
    RETINANET,
    RPN,
    SSD,
    Matcher,
    gather_matched,
    match,
)


def np_match(similarity, thresholds, labels, low_quality, gt_valid=None):
    """Slow reference: one anchor, then one ground truth at a time."""
    num_anchors, num_gt = similarity.shape
    valid = np.ones(num_gt, bool) if gt_valid is None else np.asarray(gt_valid)
    out = np.zeros(num_anchors, np.int32)
    for a in range(num_anchors):
        candidates = [(similarity[a, g], -g) for g in range(num_gt) if valid[g]]
        best, neg_g = max(candidates) if candidates else (-np.inf, 0)
        interval = sum(best >= t for t in thresholds)
        label = labels[interval]
        out[a] = -neg_g if label == POSITIVE else label
    if low_quality:
        claims = {}
        for g in range(num_gt):
            if not valid[g]:
                continue
            top = similarity[:, g].max() if num_anchors else 0
            if top <= 0:
                continue
            for a in range(num_anchors):
                if similarity[a, g] == top and (a not in claims or top > similarity[a, claims[a]]):
                    claims[a] = g
        for a, g in claims.items():
            out[a] = g
    return out


def test_thresholds_and_labels_intervals():
    # Anchors' best IoU: 0.2, 0.3, 0.5, 0.69, 0.7, 0.9 against a single ground truth.
    sim = np.array([[0.2], [0.3], [0.5], [0.69], [0.7], [0.9]], np.float32)
    np.testing.assert_array_equal(
        RPN(sim), [BACKGROUND, IGNORE, IGNORE, IGNORE, 0, 0]
    )  # low-quality adds nothing here: the best anchor is already positive
    np.testing.assert_array_equal(
        match(sim, (0.3, 0.7), (BACKGROUND, IGNORE, POSITIVE)), [BACKGROUND, IGNORE, IGNORE, IGNORE, 0, 0]
    )
    np.testing.assert_array_equal(FAST_RCNN(np.array([[0.05], [0.1], [0.49], [0.5]])), [IGNORE, BACKGROUND, BACKGROUND, 0])
    np.testing.assert_array_equal(RETINANET(np.array([[0.39], [0.4], [0.49], [0.5]])), [BACKGROUND, IGNORE, IGNORE, 0])


def test_positive_takes_best_ground_truth_index():
    sim = np.array([[0.1, 0.8, 0.6], [0.55, 0.2, 0.9], [0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(match(sim, (0.5,), (BACKGROUND, POSITIVE)), [1, 2, BACKGROUND])


def test_low_quality_matches_keep_every_ground_truths_best_anchors_with_ties():
    sim = np.array(
        [
            [0.35, 0.0, 0.0],  # best for gt 0 (tie with row 1)
            [0.35, 0.1, 0.0],  # best for gt 0 (tie)
            [0.1, 0.2, 0.0],  # best for gt 1
            [0.0, 0.0, 0.0],  # gt 2 overlaps nothing: no forced match
        ],
        np.float32,
    )
    plain = match(sim, (0.3, 0.7), (BACKGROUND, IGNORE, POSITIVE))
    np.testing.assert_array_equal(plain, [IGNORE, IGNORE, BACKGROUND, BACKGROUND])
    forced = RPN(sim)
    np.testing.assert_array_equal(forced, [0, 0, 1, BACKGROUND])


def test_low_quality_assigns_the_anchor_to_the_ground_truth_it_is_best_for():
    # Anchor 0 is gt 1's best (0.3) but its own argmax is gt 0 (0.8); gt 0's best is anchor 1.
    sim = np.array([[0.8, 0.3], [0.9, 0.0]], np.float32)
    np.testing.assert_array_equal(SSD(sim), [1, 0])
    # Anchor 0 is the best of both: the higher similarity wins.
    sim = np.array([[0.4, 0.3], [0.1, 0.1]], np.float32)
    np.testing.assert_array_equal(SSD(sim), [0, BACKGROUND])


def test_matches_numpy_reference_batched(rng):
    for low_quality in (False, True):
        iou = rng.uniform(0, 1, size=(3, 40, 6)).astype(np.float32) ** 3
        iou[..., 5] = iou[..., 4]  # duplicate columns: ties across ground truth
        valid = rng.uniform(size=(3, 6)) > 0.3
        got = match(iou, (0.3, 0.7), (BACKGROUND, IGNORE, POSITIVE), low_quality, gt_valid=valid).numpy()
        assert got.shape == (3, 40) and got.dtype == np.int32
        for b in range(3):
            want = np_match(iou[b], (0.3, 0.7), (BACKGROUND, IGNORE, POSITIVE), low_quality, valid[b])
            np.testing.assert_array_equal(got[b], want)


def test_padding_is_never_matched():
    sim = np.array([[0.9, 0.95], [0.1, 0.8]], np.float32)
    valid = np.array([True, False])
    np.testing.assert_array_equal(SSD(sim, gt_valid=valid), [0, BACKGROUND])
    np.testing.assert_array_equal(SSD(sim), [1, 1])


@pytest.mark.parametrize("matcher", [RPN, FAST_RCNN, RETINANET, SSD])
def test_no_ground_truth_gives_the_empty_label(matcher):
    """An image without objects: every anchor is the matcher's empty label, labels[0] unless
    set; Fast R-CNN's is background (its lowest interval, IoU < 0.1, is ignore: with no
    object every proposal would have been ignored and no background RoI drawn)."""
    want = matcher.labels[0] if matcher.empty_label is None else matcher.empty_label
    assert (matcher is FAST_RCNN) == (want == BACKGROUND and matcher.labels[0] == IGNORE)
    empty = matcher(tf.zeros([2, 5, 0]))
    np.testing.assert_array_equal(empty, np.full([2, 5], want))
    # All padding: boxes of zeros, IoU 0, all invalid.
    anchors = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32)
    iou = boxes.iou(anchors, np.zeros([3, 4], np.float32))
    padded = matcher(iou, gt_valid=np.zeros([3], bool))
    np.testing.assert_array_equal(padded, [want, want])
    # The plain function without empty_label keeps labels[0].
    lowest = match(tf.zeros([2, 5, 0]), matcher.thresholds, matcher.labels, matcher.allow_low_quality_matches)
    np.testing.assert_array_equal(lowest, np.full([2, 5], matcher.labels[0]))


def test_empty_label_is_per_image_and_padded_anchors_are_ignored():
    sim = np.array([[[0.05, 0.6], [0.3, 0.2], [0.0, 0.0]],  # image 0: objects
                    [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], np.float32)  # image 1: none valid
    gt_valid = np.array([[True, True], [False, False]])
    anchor_valid = np.array([[True, True, False], [True, False, True]])
    got = FAST_RCNN(sim, gt_valid=gt_valid, anchor_valid=anchor_valid).numpy()
    np.testing.assert_array_equal(got, [[1, BACKGROUND, IGNORE], [BACKGROUND, IGNORE, BACKGROUND]])
    with pytest.raises(ValueError, match="empty_label must be BACKGROUND or IGNORE"):
        Matcher((0.5,), (BACKGROUND, POSITIVE), empty_label=POSITIVE)


def test_gather_matched_fills_negatives_and_handles_empty():
    gt_boxes = np.array([[[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.6, 0.6]]], np.float32)  # [1, 2, 4]
    gt_classes = np.array([[4, 7]], np.int32)
    matches = np.array([[1, BACKGROUND, 0, IGNORE]], np.int32)
    targets = gather_matched(gt_boxes, matches).numpy()
    np.testing.assert_allclose(targets, [[gt_boxes[0, 1], [0] * 4, gt_boxes[0, 0], [0] * 4]])
    classes = gather_matched(gt_classes, matches, fill_value=BACKGROUND).numpy()
    np.testing.assert_array_equal(classes, [[7, BACKGROUND, 4, BACKGROUND]])
    empty = gather_matched(tf.zeros([1, 0, 4]), tf.fill([1, 3], BACKGROUND)).numpy()
    np.testing.assert_array_equal(empty, np.zeros([1, 3, 4]))
    unbatched = gather_matched(gt_boxes[0], matches[0]).numpy()
    np.testing.assert_allclose(unbatched, targets[0])


def test_matcher_is_a_frozen_validated_value():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RPN.thresholds = (0.4, 0.7)
    with pytest.raises(ValueError):
        Matcher((0.3, 0.7), (BACKGROUND, POSITIVE))  # wrong label count
    with pytest.raises(ValueError):
        Matcher((0.7, 0.3), (BACKGROUND, IGNORE, POSITIVE))  # unsorted
    with pytest.raises(ValueError):
        Matcher((0.5,), (POSITIVE, BACKGROUND))  # positive below every threshold
    with pytest.raises(ValueError):
        Matcher((0.5,), (BACKGROUND, 3))
    assert RPN.thresholds == (0.3, 0.7) and RPN.allow_low_quality_matches
    assert RETINANET.thresholds == (0.4, 0.5) and SSD.thresholds == (0.5,)


def test_in_graph_and_dataset(three_ways, make_boxes):
    anchors, gt = make_boxes(30), make_boxes(2, 4)
    classes = np.array([[1, 2, -1, -1], [0, -1, -1, -1]], np.int32)

    def encode(gt_boxes, gt_classes):
        iou = boxes.iou(anchors, gt_boxes)  # [B, A, G] by broadcasting [A, 4] against [B, G, 4]
        matches = RPN(iou, gt_valid=gt_classes >= 0)
        return matches, gather_matched(gt_boxes, matches), gather_matched(gt_classes, matches, BACKGROUND)

    matches, _, _ = three_ways(encode, gt, classes)
    iou = boxes.iou(anchors, gt).numpy()
    for b in range(2):
        want = np_match(iou[b], (0.3, 0.7), (BACKGROUND, IGNORE, POSITIVE), True, classes[b] >= 0)
        np.testing.assert_array_equal(matches[b], want)
    # Works on an example with no ground truth at all, inside Dataset.map.
    matches, targets, target_classes = three_ways(encode, np.zeros([1, 0, 4], np.float32), np.zeros([1, 0], np.int32))
    np.testing.assert_array_equal(matches, BACKGROUND)
    np.testing.assert_array_equal(targets, 0.0)
    np.testing.assert_array_equal(target_classes, BACKGROUND)


# --- grid assignment (YOLO) ------------------------------------------------------------

from tfzoo.ops import anchors as anchor_ops  # noqa: E402
from tfzoo.ops import box_coder  # noqa: E402
from tfzoo.ops.matcher import cell_targets, one_per_slot, prior_targets  # noqa: E402


def test_one_per_slot_keeps_the_highest_priority_then_the_first():
    slots = [5, 5, 2, 5, 2, 9]
    priority = [1.0, 3.0, 2.0, 3.0, 1.0, 0.5]
    valid = [True, True, True, True, True, False]
    keep = one_per_slot(tf.constant(slots), tf.constant(priority), tf.constant(valid)).numpy()
    assert keep.tolist() == [False, True, True, False, False, False]
    assert one_per_slot(tf.zeros([0], tf.int32), tf.zeros([0]), tf.zeros([0], tf.bool)).shape == (0,)


def test_cell_targets_put_each_object_in_its_centres_cell_and_the_larger_keeps_a_shared_cell():
    boxes = np.array([[0.05, 0.05, 0.25, 0.25],  # centre (0.15, 0.15): cell (1, 1) of 7
                      [0.10, 0.10, 0.20, 0.20],  # the same cell, smaller: dropped
                      [0.50, 0.60, 0.90, 1.00],  # centre (0.7, 0.8): cell (4, 5)
                      [0.00, 0.00, 0.00, 0.00]], np.float32)  # padding
    classes = np.array([3, 1, 0, -1], np.int32)
    target_classes, target_boxes, dropped = cell_targets(boxes, classes, np.ones(4, bool), (7, 7))
    assert int(dropped) == 1
    assert target_classes.shape == (7, 7) and target_boxes.shape == (7, 7, 4)
    assert np.argwhere(target_classes.numpy() >= 0).tolist() == [[1, 1], [4, 5]]
    assert target_classes[1, 1] == 3 and target_classes[4, 5] == 0
    np.testing.assert_allclose(target_boxes[1, 1], [0.15 * 7 - 1, 0.15 * 7 - 1, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(target_boxes[4, 5], [0.7 * 7 - 4, 0.8 * 7 - 5, 0.4, 0.4], atol=1e-5)
    # an object that may not be a target (crowd, difficult) takes no cell and is not counted
    target_classes, _, dropped = cell_targets(boxes, classes, np.array([False, True, True, True]), (7, 7))
    assert target_classes[1, 1] == 1 and int(dropped) == 0


def np_prior_targets(boxes, classes, map_sizes, priors, masks):
    """Slow reference: one object at a time, the larger first, a taken slot refused."""
    out = [(np.full((h, w, len(m)), -1, np.int32), np.zeros((h, w, len(m), 4), np.float32))
           for (h, w), m in zip(map_sizes, masks)]
    order = sorted(range(len(boxes)), key=lambda g: -np.prod(boxes[g, 2:] - boxes[g, :2]))
    dropped = 0
    for g in order:
        if classes[g] < 0:
            continue
        hw = boxes[g, 2:] - boxes[g, :2]
        ious = [np.prod(np.minimum(hw, p)) / (np.prod(hw) + np.prod(p) - np.prod(np.minimum(hw, p))) for p in priors]
        best = int(np.argmax(ious))
        k = next(i for i, m in enumerate(masks) if best in m)
        j = list(masks[k]).index(best)
        h, w = map_sizes[k]
        cy, cx = (boxes[g, :2] + boxes[g, 2:]) / 2
        row, col = min(int(cy * h), h - 1), min(int(cx * w), w - 1)
        if out[k][0][row, col, j] >= 0:
            dropped += 1
            continue
        out[k][0][row, col, j] = classes[g]
        out[k][1][row, col, j] = [cy * h - row, cx * w - col, np.log(hw[0] / priors[best][0]),
                                  np.log(hw[1] / priors[best][1])]
    return out, dropped


def test_prior_targets_match_a_slow_reference():
    rng = np.random.default_rng(3)
    priors = np.asarray(anchor_ops.YOLOV3_COCO_PRIORS_HW_PX, np.float32) / 416
    masks, sizes = anchor_ops.YOLOV3_MASKS, [(4, 4), (8, 8), (16, 16)]
    for trial in range(5):
        count = 30
        centre = rng.uniform(0.1, 0.9, (count, 2))
        hw = np.exp(rng.uniform(np.log(0.02), np.log(0.8), (count, 2)))
        boxes = np.clip(np.concatenate([centre - hw / 2, centre + hw / 2], -1), 0, 1).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1e-3)
        classes = rng.integers(-1, 4, count).astype(np.int32)
        got, dropped = prior_targets(boxes, classes, np.ones(count, bool), sizes, priors.tolist(), masks)
        want, want_dropped = np_prior_targets(boxes, classes, sizes, priors, masks)
        assert int(dropped) == want_dropped
        for (gc, gd), (wc, wd) in zip(got, want):
            np.testing.assert_array_equal(gc.numpy(), wc)
            np.testing.assert_allclose(gd.numpy(), wd, atol=1e-4)


def test_prior_targets_decode_back_to_the_objects():
    priors = [[0.1, 0.1], [0.3, 0.2], [0.6, 0.7]]
    boxes = np.array([[0.1, 0.2, 0.22, 0.33], [0.3, 0.1, 0.9, 0.8]], np.float32)
    (targets,), dropped = prior_targets(boxes, [0, 1], [True, True], [(5, 5)], priors, ((0, 1, 2),))
    classes, deltas = targets
    found = np.argwhere(classes.numpy() >= 0)
    assert int(dropped) == 0 and len(found) == 2
    for row, col, j in found:
        d = deltas[row, col, j]
        box = box_coder.cell_decode(d[:2], box_coder.prior_decode(d[2:], priors[j]), [row, col], (5, 5))
        g = int(classes[row, col, j])
        np.testing.assert_allclose(box, boxes[g], atol=1e-5)
