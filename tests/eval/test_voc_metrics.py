"""Pascal VOC AP: hand-computed curves, devkit matching rules, and a slow NumPy reference."""
import numpy as np
import pytest

from tests.reference import box_iou
from tfzoo.eval import voc_metrics


def test_voc07_and_voc12_differ_on_a_hand_computed_curve():
    """Three positives; ranked detections TP, FP, TP (the third positive is missed).

    recall    = 1/3, 1/3, 2/3
    precision = 1,   1/2, 2/3

    VOC12 (all-point): the envelope is 1 up to recall 1/3, 2/3 up to 2/3, 0 after:
        AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 0 = 5/9 = 0.5556
    VOC07 (11-point): t = 0, .1, .2, .3 reach recall >= t with max precision 1 (4 points),
    t = .4, .5, .6 only at recall 2/3 with precision 2/3 (3 points), t >= .7 never (0):
        AP = (4 * 1 + 3 * 2/3) / 11 = 6/11 = 0.5455
    """
    recall = np.array([1, 1, 2]) / 3
    precision = np.array([1, 1 / 2, 2 / 3])
    assert voc_metrics.voc_ap(recall, precision, use_07_metric=False) == pytest.approx(5 / 9)
    assert voc_metrics.voc_ap(recall, precision, use_07_metric=True) == pytest.approx(6 / 11)


def test_voc07_recall_levels_are_exact_tenths():
    """Ten positives, three found first: recall reaches exactly 3/10, which earns the t = 0.3
    point (0.30000000000000004 in np.arange(0, 1.1, 0.1) would miss it): AP = 4/11."""
    recall = np.array([1, 2, 3]) / 10
    precision = np.ones(3)
    assert voc_metrics.voc_ap(recall, precision, use_07_metric=True) == pytest.approx(4 / 11)


def test_perfect_and_empty_curves():
    assert voc_metrics.voc_ap([0.5, 1.0], [1.0, 1.0]) == 1.0
    assert voc_metrics.voc_ap([0.5, 1.0], [1.0, 1.0], use_07_metric=True) == 1.0
    assert voc_metrics.voc_ap([], []) == 0.0
    with pytest.raises(ValueError, match="shape"):
        voc_metrics.voc_ap([0.5], [1.0, 1.0])


def test_match_needs_iou_strictly_above_threshold():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    half = np.array([[0.0, 0.0, 10.0, 5.0]])  # IoU exactly 0.5
    labels = voc_metrics.match_image(half, [0.9], [0], gt, [0], [False], iou_threshold=0.5)
    assert labels.tolist() == [voc_metrics.FALSE_POSITIVE]
    labels = voc_metrics.match_image(half, [0.9], [0], gt, [0], [False], iou_threshold=0.49)
    assert labels.tolist() == [voc_metrics.TRUE_POSITIVE]


def test_match_duplicates_difficult_and_other_classes():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float64)
    gt_classes = [0, 0, 1]
    difficult = [False, True, False]
    dets = np.array(
        [
            [0, 0, 10, 10],  # TP
            [0, 0, 10, 10],  # duplicate of a matched box: FP
            [20, 20, 30, 30],  # on a difficult box: ignored
            [20, 20, 30, 30],  # again on the difficult box: ignored again, not a duplicate FP
            [40, 40, 50, 50],  # exact box of class 1 but predicted as class 0: FP
        ],
        np.float64,
    )
    labels = voc_metrics.match_image(dets, [0.9, 0.8, 0.7, 0.6, 0.5], [0] * 5, gt, gt_classes, difficult)
    assert labels.tolist() == [1, 0, -1, -1, 0]


def test_greedy_match_does_not_fall_back_to_second_best_box():
    """The devkit takes the max-IoU box; if it is already matched the detection is a FP even
    though another unmatched box overlaps it by more than 0.5."""
    gt = np.array([[0, 0, 10, 10], [0, 1, 10, 11]], np.float64)
    dets = np.array([[0, 0, 10, 10], [0, 0.2, 10, 10.2]], np.float64)  # both closest to gt 0
    labels = voc_metrics.match_image(dets, [0.9, 0.8], [0, 0], gt, [0, 0], [False, False])
    assert labels.tolist() == [1, 0]


def test_class_without_ground_truth_is_undefined_and_left_out_of_the_mean():
    ap07, ap12 = voc_metrics.class_average_precisions([0.9, 0.8], [1, 0], [0, 1], num_positives=[1, 0])
    assert ap12.tolist() == [1.0, voc_metrics.UNDEFINED_AP]
    assert ap07.tolist() == [1.0, voc_metrics.UNDEFINED_AP]
    assert voc_metrics.mean_ap(ap12) == 1.0
    assert voc_metrics.mean_ap([voc_metrics.UNDEFINED_AP]) == voc_metrics.UNDEFINED_AP


# --- a slow, obvious reference ------------------------------------------------------------


def _reference_voc_ap(images, cls, use_07):
    """py-faster-rcnn's voc_eval, loop by loop, for one class over ``images``."""
    npos = sum(1 for im in images for c, d in zip(im["gt_classes"], im["difficult"]) if c == cls and not d)
    if npos == 0:
        return -1.0
    dets = [
        (s, i, b)
        for i, im in enumerate(images)
        for s, b, c in zip(im["scores"], im["boxes"], im["classes"])
        if c == cls
    ]
    dets.sort(key=lambda d: -d[0])
    used = {i: [False] * len(im["gt_classes"]) for i, im in enumerate(images)}
    tp, fp = [], []
    for _, i, box in dets:
        im = images[i]
        best, jmax = -1.0, -1
        for j, (g, c) in enumerate(zip(im["gt_boxes"], im["gt_classes"])):
            if c == cls:
                o = box_iou(box, g)
                if o > best:
                    best, jmax = o, j
        if best > 0.5:
            if im["difficult"][jmax]:
                continue
            if not used[i][jmax]:
                used[i][jmax] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    rec, prec, ctp, cfp = [], [], 0, 0
    for t, f in zip(tp, fp):
        ctp += t
        cfp += f
        rec.append(ctp / npos)
        prec.append(ctp / (ctp + cfp))
    if use_07:
        ap = 0.0
        for k in range(11):
            t = k / 10
            ps = [p for r, p in zip(rec, prec) if r >= t]
            ap += (max(ps) if ps else 0.0) / 11
        return ap
    mrec = [0.0] + rec + [1.0]
    mpre = [0.0] + prec + [0.0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    return sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k])


def _random_images(rng, num_images=12, num_classes=3):
    images = []
    for _ in range(num_images):
        g = int(rng.integers(0, 7))
        yx = rng.uniform(0, 80, (g, 2))
        gt_boxes = np.concatenate([yx, yx + rng.uniform(5, 40, (g, 2))], 1)
        gt_classes = rng.integers(0, num_classes, g)
        # detections: jittered ground truth (some with a wrong class) plus clutter
        jitter = gt_boxes + rng.normal(0, 3, gt_boxes.shape)
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 1)
        n = int(rng.integers(0, 8))
        yx = rng.uniform(0, 80, (n, 2))
        clutter = np.concatenate([yx, yx + rng.uniform(5, 40, (n, 2))], 1)
        boxes = np.concatenate([jitter, jitter[: g // 2], clutter])
        classes = np.concatenate(
            [np.where(rng.uniform(size=g) < 0.8, gt_classes, rng.integers(0, num_classes, g)), gt_classes[: g // 2],
             rng.integers(0, num_classes, n)]
        )
        images.append(
            {
                "gt_boxes": gt_boxes,
                "gt_classes": gt_classes,
                "difficult": rng.uniform(size=g) < 0.2,
                "boxes": boxes,
                "scores": rng.uniform(size=len(boxes)),
                "classes": classes,
            }
        )
    return images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_slow_numpy_reference_on_random_detections(seed):
    rng = np.random.default_rng(seed)
    num_classes = 3
    images = _random_images(rng, num_classes=num_classes)
    labels = [
        voc_metrics.match_image(
            im["boxes"], im["scores"], im["classes"], im["gt_boxes"], im["gt_classes"], im["difficult"]
        )
        for im in images
    ]
    num_positives = sum(
        np.bincount(im["gt_classes"][~im["difficult"]], minlength=num_classes) for im in images
    )
    ap07, ap12 = voc_metrics.class_average_precisions(
        np.concatenate([im["scores"] for im in images]),
        np.concatenate(labels),
        np.concatenate([im["classes"] for im in images]),
        num_positives,
    )
    for c in range(num_classes):
        assert ap07[c] == pytest.approx(_reference_voc_ap(images, c, use_07=True), abs=1e-12)
        assert ap12[c] == pytest.approx(_reference_voc_ap(images, c, use_07=False), abs=1e-12)
    # the random cases are not trivial: APs strictly between 0 and 1, VOC07 != VOC12
    assert np.any((ap12 > 0) & (ap12 < 1))
    assert np.any(np.abs(ap07 - ap12) > 1e-6)
