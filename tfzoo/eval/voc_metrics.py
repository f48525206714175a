"""Pascal VOC mean average precision at IoU 0.5: VOC07 11-point and VOC12 all-point.

The procedure is the VOC devkit's (``VOCevaldet.m``, and ``voc_eval.py`` of py-faster-rcnn):

1. Per class, all detections of every image are ranked by score, highest first.
2. Each detection is compared with the ground truth of its class in its image; ``jmax`` is
   the ground-truth box of largest IoU (difficult and already-matched boxes included).
   - IoU ``> iou_threshold`` (strictly greater, like the devkit's ``ovmax > ovthresh``;
     pycocotools instead matches at ``>=``):
     if ``jmax`` is difficult the detection is *ignored* (neither TP nor FP); else if
     ``jmax`` is still unmatched it is a TP and ``jmax`` becomes matched; else it is a
     duplicate, a FP.
   - otherwise it is a FP.
   The greedy choice of ``jmax`` never falls back to a second-best unmatched box.
3. ``recall = cumTP / npos`` with ``npos`` the number of non-difficult ground-truth boxes,
   ``precision = cumTP / (cumTP + cumFP)``.
4. AP from the precision/recall curve (:func:`voc_ap`):
   - VOC07: mean over the 11 recall levels ``t = 0, 0.1, ..., 1`` of the largest precision
     at recall ``>= t`` (0 when that recall is never reached);
   - VOC12 (and VOC2010 onwards): area under the monotone precision envelope,
     ``sum (r[i+1] - r[i]) * max(p[j] for r[j] >= r[i+1])``.

Differences from the devkit, all deliberate:

- Coordinates are continuous: area is ``(x2 - x1) * (y2 - y1)``, where the devkit works in
  integer pixel indices and adds one (``x2 - x1 + 1``). IoUs differ slightly, mostly for
  small boxes; results are within a few 0.1 AP of the devkit's on real data.
- Classes without any non-difficult ground truth have an undefined AP: they get ``-1``
  (pycocotools' marker) and are left out of the mean. The devkit would divide by zero.
- VOC07's recall levels are exactly ``k / 10``; the Python devkits' ``np.arange(0, 1.1, 0.1)``
  holds 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001, which a recall of
  exactly 3/10, 6/10 or 7/10 fails to reach there (a rare, small difference).
- Ties in score are broken by detection order (stable sort), where the devkit's
  ``argsort`` leaves it to the sorting algorithm.
- COCO ``is_crowd`` boxes, which VOC has none of, are treated as difficult (ignore regions).

Shape legend: D detections, G ground truth, C classes.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfzoo.ops import boxes as box_ops

#: Per-detection labels returned by :func:`match_image`.
TRUE_POSITIVE = 1
FALSE_POSITIVE = 0
IGNORED = -1

#: AP of a class that has no (non-difficult) ground truth: undefined, left out of the mean.
UNDEFINED_AP = -1.0

#: :func:`tfzoo.ops.boxes.iou` of float64 boxes, traced once for all images (eager, its op
#: dispatch costs ~4 ms per image); the VOC matching and the evaluation plots share it.
pairwise_iou = tf.function(box_ops.iou, input_signature=[tf.TensorSpec([None, 4], tf.float64)] * 2)


def voc_ap(recall, precision, use_07_metric=False):
    """Average precision from a ranked precision/recall curve.

    Args:
      recall: ``[D]`` cumulative recall, non-decreasing, of detections ranked by score.
      precision: ``[D]`` cumulative precision of the same ranking.
      use_07_metric: True for the VOC07 11-point interpolated AP, False for the VOC12
        all-point AP (area under the monotone precision envelope).

    Returns:
      AP as a Python float in [0, 1]; 0 for an empty curve.
    """
    recall = np.asarray(recall, np.float64).reshape(-1)
    precision = np.asarray(precision, np.float64).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(f"recall {recall.shape} and precision {precision.shape} differ in shape")
    if recall.size == 0:
        return 0.0
    if use_07_metric:
        # t = k / 10 exactly: np.arange(0, 1.1, 0.1) (the Python devkits) has t = 0.30000000000000004,
        # so a recall of exactly 3/10 would miss its point.
        points = [
            precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.arange(11) / 10.0
        ]
        return float(np.sum(points) / 11.0)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def match_image(det_boxes, det_scores, det_classes, gt_boxes, gt_classes, gt_difficult, iou_threshold=0.5):
    """Labels one image's detections TP / FP / ignored, the devkit's greedy way.

    Boxes are ``[y1, x1, y2, x2]`` in any one unit shared by detections and ground truth
    (IoU does not depend on it). Detections are visited by descending score, per class.

    Args:
      det_boxes: ``[D, 4]``; det_scores: ``[D]``; det_classes: ``[D]`` int.
      gt_boxes: ``[G, 4]``; gt_classes: ``[G]`` int; gt_difficult: ``[G]`` bool.
      iou_threshold: a match needs IoU strictly greater than this.

    Returns:
      ``[D]`` int8 labels: :data:`TRUE_POSITIVE`, :data:`FALSE_POSITIVE` or :data:`IGNORED`.
    """
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    det_classes = np.asarray(det_classes).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes).reshape(-1)
    gt_difficult = np.asarray(gt_difficult, bool).reshape(-1)
    labels = np.full([len(det_scores)], FALSE_POSITIVE, np.int8)
    if len(det_scores) == 0 or len(gt_classes) == 0:
        return labels
    ious = pairwise_iou(det_boxes, gt_boxes).numpy()  # [D, G]
    # Other classes' ground truth can never be matched: IoU -1 keeps them out of argmax.
    ious = np.where(det_classes[:, None] == gt_classes[None, :], ious, -1.0)
    matched = np.zeros([len(gt_classes)], bool)
    for d in np.argsort(-det_scores, kind="stable"):
        j = int(np.argmax(ious[d]))
        if ious[d, j] > iou_threshold:
            if gt_difficult[j]:
                labels[d] = IGNORED
            elif not matched[j]:
                labels[d] = TRUE_POSITIVE
                matched[j] = True
    return labels


def class_average_precisions(scores, labels, classes, num_positives):
    """Per-class VOC07 and VOC12 AP from the labelled detections of a whole dataset.

    Args:
      scores: ``[D]`` detection scores over all images.
      labels: ``[D]`` from :func:`match_image`; ignored detections are dropped.
      classes: ``[D]`` contiguous class ids.
      num_positives: ``[C]`` non-difficult ground-truth boxes per class.

    Returns:
      ``(ap07, ap12)``, each ``[C]`` float64, :data:`UNDEFINED_AP` where
      ``num_positives`` is 0.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    num_positives = np.asarray(num_positives).reshape(-1)
    ap07 = np.full([len(num_positives)], UNDEFINED_AP)
    ap12 = np.full([len(num_positives)], UNDEFINED_AP)
    for c, npos in enumerate(num_positives):
        if npos == 0:
            continue
        keep = (classes == c) & (labels != IGNORED)
        order = np.argsort(-scores[keep], kind="stable")
        tp = np.cumsum(labels[keep][order] == TRUE_POSITIVE)
        fp = np.cumsum(labels[keep][order] == FALSE_POSITIVE)
        recall = tp / float(npos)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap07[c] = voc_ap(recall, precision, use_07_metric=True)
        ap12[c] = voc_ap(recall, precision, use_07_metric=False)
    return ap07, ap12


def mean_ap(per_class_ap):
    """Mean of the defined per-class APs (those ``!= -1``); -1 if none is defined."""
    per_class_ap = np.asarray(per_class_ap, np.float64)
    defined = per_class_ap[per_class_ap > UNDEFINED_AP]
    return float(defined.mean()) if defined.size else UNDEFINED_AP
