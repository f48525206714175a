"""Multi-class non-maximum suppression from TFLite builtin ops only, with padded outputs.

The graph uses ``TopKV2``, ``GatherV2``, ``NonMaxSuppressionV5`` and elementwise ops, which
the TFLite converter maps to the builtins ``TOPK_V2``, ``GATHER``, ``NON_MAX_SUPPRESSION_V5``
(and ``WHILE`` for a batch whose size is not statically 1). It needs no Flex or custom op,
so the same function runs in a SavedModel, in ``tf.data`` and inside a ``.tflite`` file.
``tf.image.combined_non_max_suppression`` (no TFLite builtin) and
``tf.image.non_max_suppression_padded`` (a Python tile loop in TF 2.x, seconds per image
with many classes) are deliberately not used.

How it works, per image:

1. Candidates are (box, class) pairs. The ``pre_nms_top_k`` highest of the ``N * K``
   per-class scores are picked (:func:`top_k_candidates`: the best anchors by their best
   class first when ``N`` is larger than ``k``); pairs whose score is not above
   ``score_threshold`` are dropped. This keeps NMS cheap when ``N * K`` is large. A
   decoder that selects its own candidates (RetinaNet's top k per level) calls
   :func:`nms_candidates`, the rest of this function, directly.
2. Class-offset trick: every candidate box is shifted so that boxes of different classes
   can never overlap, and a single single-class NMS then suppresses within classes only.
   Classes are laid out on a ``ceil(sqrt(K))``-wide 2-D grid of offsets (not along one
   axis) so coordinates stay small and float32 IoUs stay accurate.
3. The kept detections are sorted by score (as NMS emits them), optionally capped per
   class, and padded to ``max_detections``.

Output padding: ``detection_boxes`` 0, ``detection_scores`` 0 and ``detection_classes``
:data:`PADDING_CLASS` (-1) beyond ``num_detections``.

Semantics shared with ``tf.image.non_max_suppression``: a candidate needs
``score > score_threshold`` (strictly); a box is suppressed by a kept box of the same
class when their IoU is ``> iou_threshold`` (strictly).

Shape legend: B batch, N boxes (anchors or RoIs), K classes, M detections, L levels.
"""
from __future__ import annotations

import math

import tensorflow as tf

from tfzoo.ops import boxes as box_ops

#: ``detection_classes`` value of the padding rows beyond ``num_detections``.
PADDING_CLASS = -1


def _static_dim(tensor, axis):
    """The static size of ``axis`` if known, else the dynamic scalar size."""
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


def _padded_top_k(values, k):
    """``tf.math.top_k`` over ``values [B, P]`` (probabilities, >= 0) with a static ``k``
    even when ``P < k``.

    Returns ``(top_values [B, k], top_indices [B, k])``, sorted descending. Missing entries
    (``P < k``) get value 0 and an index clamped into ``[0, max(P - 1, 0)]``, so a gather
    with it stays in range. The padding is 0, not ``-inf``, on purpose: an integer-quantized
    TFLite graph calibrates one scale for the padded tensor, and an infinite pad value makes
    that scale infinite (every score rounds to 0). Any threshold ``>= 0`` used with the strict
    ``score > threshold`` of NMS drops the padding.
    """
    p = values.shape[-1]
    if p is None or p < k:
        num = tf.shape(values)[-1]
        values = tf.pad(values, [[0, 0], [0, tf.maximum(k - num, 0)]], constant_values=0.0)
        top_values, top_indices = tf.math.top_k(values, k=k, sorted=True)
        top_indices = tf.minimum(top_indices, tf.maximum(num - 1, 0))
        return top_values, top_indices
    return tf.math.top_k(values, k=k, sorted=True)


def top_k_candidates(scores, k):
    """The ``k`` highest (anchor, class) scores of ``scores [B, A, K]`` (probabilities),
    over ``A * K``.

    Returns ``(top_scores [B, k], anchor_indices [B, k] int32, class_indices [B, k] int32)``
    sorted by score, descending. When ``A * K < k`` the missing entries have score 0 and
    valid (clamped) indices; NMS with any ``score_threshold >= 0`` drops them.

    With more than ``k`` anchors (static) it works in two stages that pick the same pairs
    (ties aside): the ``k`` anchors with the highest best-class score, then the ``k`` best
    pairs among their ``k * K``. A pair ranked ``j <= k`` has fewer than ``j`` anchors with
    a higher best-class score (each would own a higher pair), so its anchor is among the
    first ``k``. One ``top_k`` over ``A * K`` values (2.9 million on the finest level of a
    512-px, 80-class RetinaNet) runs on one thread; a max over classes and two small
    ``top_k`` take about a third of its time.
    """
    scores = tf.convert_to_tensor(scores)
    if scores.shape.rank != 3:
        raise ValueError(f"scores must have shape [B, A, K], got {scores.shape}")
    num_classes = scores.shape[-1]
    if num_classes is None:
        raise ValueError("scores must have a static number of classes K")
    k = int(k)
    scores = tf.cast(scores, tf.float32)
    batch = tf.shape(scores)[0]
    num_anchors = scores.shape[1]
    if num_anchors is not None and num_classes > 1 and num_anchors > k:
        _, anchors = tf.math.top_k(tf.reduce_max(scores, axis=-1), k=k)  # [B, k]
        subset = tf.gather(scores, anchors, batch_dims=1)  # [B, k, K]
        top_scores, flat_indices = tf.math.top_k(tf.reshape(subset, [batch, k * num_classes]), k=k)
        return (top_scores, tf.gather(anchors, flat_indices // num_classes, batch_dims=1),
                flat_indices % num_classes)
    flat = tf.reshape(scores, [batch, -1])  # [B, A * K]
    top_scores, flat_indices = _padded_top_k(flat, k)
    return top_scores, flat_indices // num_classes, flat_indices % num_classes


def top_k_per_level(scores_per_level, k=1000):
    """The ``k`` best (anchor, class) pairs of each level, merged (RetinaNet inference, Lin
    et al. 2017: the top 1000 predictions of each level enter NMS).

    Args:
      scores_per_level: list over L levels of ``[B, A_l, K]`` probabilities.
      k: pairs kept per level. A level with a static number of pairs below ``k`` keeps
        all of them (fewer rows, no padding); a dynamic one is padded with score 0.

    Returns:
      ``(scores [B, P], anchor_indices [B, P], class_indices [B, P])``, ``P <= L * k``:
      anchor indices count over all levels (level l's anchors follow those of levels
      ``< l``, as in the concatenated head outputs); an anchor chosen for two classes
      appears twice, once per class.
    """
    if not scores_per_level:
        raise ValueError("need one scores tensor per level, at least one level")
    all_scores, all_anchors, all_classes = [], [], []
    offset = 0
    for scores in scores_per_level:
        scores = tf.convert_to_tensor(scores)
        pairs = None if None in scores.shape[1:] else scores.shape[1] * scores.shape[2]
        level_k = k if pairs is None else max(1, min(k, pairs))
        top_scores, anchor_idx, class_idx = top_k_candidates(scores, level_k)  # [B, level_k]
        all_scores.append(top_scores)
        all_anchors.append(anchor_idx + offset)
        all_classes.append(class_idx)
        offset = offset + _static_dim(scores, 1)
    return tuple(tf.concat(parts, axis=1) for parts in (all_scores, all_anchors, all_classes))


def _class_offsets(class_indices, boxes, num_classes):
    """Shifts ``boxes [B, P, 4]`` so that boxes of different classes never overlap.

    Class ``c`` goes to cell ``(c // G, c % G)`` of a ``G = ceil(sqrt(K))`` grid whose
    cells are ``span`` wide, ``span`` exceeding the extent of all boxes of the image.
    Boxes are first moved to start at 0, so coordinates stay below ``G * span``.
    """
    grid = max(1, math.ceil(math.sqrt(num_classes)))
    finite = tf.where(tf.math.is_finite(boxes), boxes, tf.zeros_like(boxes))
    low = tf.reduce_min(finite, axis=[1, 2], keepdims=True)  # [B, 1, 1]
    high = tf.reduce_max(finite, axis=[1, 2], keepdims=True)  # [B, 1, 1]
    span = high - low + 1.0
    row = tf.cast(class_indices // grid, tf.float32)[..., None]  # [B, P, 1]
    col = tf.cast(class_indices % grid, tf.float32)[..., None]  # [B, P, 1]
    offset = tf.concat([row, col, row, col], axis=-1) * span  # [B, P, 4]
    return finite - low + offset


def _nms_one_image(boxes, scores, max_output_size, iou_threshold, score_threshold):
    """Single-class padded NMS of ``boxes [P, 4]``, ``scores [P]`` -> (indices [O], count)."""
    indices, _, count = tf.raw_ops.NonMaxSuppressionV5(
        boxes=boxes,
        scores=scores,
        max_output_size=max_output_size,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        soft_nms_sigma=0.0,
        pad_to_max_output_size=True,
    )
    return indices, count


def multiclass_nms(
    boxes,
    scores,
    max_detections=100,
    iou_threshold=0.5,
    score_threshold=0.05,
    pre_nms_top_k=1000,
    max_detections_per_class=None,
    per_class_top_k=False,
):
    """Per-class NMS of a batch, padded to ``max_detections`` (TFLite builtins only).

    Args:
      boxes: ``[B, N, 4]`` class-agnostic boxes or ``[B, N, K, 4]`` per-class boxes,
        ``[y1, x1, y2, x2]`` (normalized or pixels; any consistent units).
      scores: ``[B, N, K]`` per-class probabilities (no background column); K static.
      max_detections: M, detections kept per image.
      iou_threshold: a box is suppressed by a higher-scoring kept box of the same class
        when their IoU is ``> iou_threshold``.
      score_threshold: candidates need ``score > score_threshold``.
      pre_nms_top_k: only the ``pre_nms_top_k`` best (box, class) pairs of the ``N * K``
        enter NMS; with ``per_class_top_k``, the ``pre_nms_top_k`` best boxes of each class
        (torchvision's SSD), ``K * pre_nms_top_k`` pairs in all.
      max_detections_per_class: optional cap on detections of any one class (applied
        before the overall ``max_detections`` cut); ``None`` for no cap.

    Returns:
      dict with ``detection_boxes [B, M, 4]`` float32, ``detection_scores [B, M]`` float32,
      ``detection_classes [B, M]`` int32 and ``num_detections [B]`` int32. Rows are sorted
      by score, descending; rows ``>= num_detections`` are padding: boxes and scores 0,
      classes :data:`PADDING_CLASS` (-1).
    """
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    if scores.shape.rank != 3:
        raise ValueError(f"scores must have shape [B, N, K], got {scores.shape}")
    num_classes = scores.shape[-1]
    if num_classes is None:
        raise ValueError("scores must have a static number of classes K")
    if boxes.shape.rank not in (3, 4) or boxes.shape[-1] not in (4, None):
        raise ValueError(f"boxes must be [B, N, 4] or [B, N, K, 4], got {boxes.shape}")
    max_detections = int(max_detections)
    pre_nms_top_k = int(pre_nms_top_k)
    if max_detections < 1 or pre_nms_top_k < 1:
        raise ValueError("max_detections and pre_nms_top_k must be positive")
    if not float(score_threshold) >= 0.0:
        raise ValueError(f"score_threshold must be >= 0 (scores are probabilities), got {score_threshold}")
    per_class = boxes.shape.rank == 4

    # --- candidates: top-k (box, class) pairs ---
    if per_class_top_k:
        by_class = tf.transpose(scores, [0, 2, 1])  # [B, K, N]
        if scores.shape[1] is None:  # pad with zero scores (never kept) so that k always fits
            by_class = tf.pad(by_class, [[0, 0], [0, 0], [0, pre_nms_top_k]])
            k = pre_nms_top_k
        else:
            k = min(pre_nms_top_k, scores.shape[1])
        cand_scores, anchor_idx = tf.math.top_k(by_class, k=k)  # [B, K, k]
        if scores.shape[1] is None:
            anchor_idx = tf.minimum(anchor_idx, tf.maximum(tf.shape(scores)[1] - 1, 0))
        batch = tf.shape(scores)[0]
        cand_scores, anchor_idx = tf.reshape(cand_scores, [batch, -1]), tf.reshape(anchor_idx, [batch, -1])
        class_idx = tf.broadcast_to(tf.repeat(tf.range(num_classes), k)[None], tf.shape(anchor_idx))
    else:
        cand_scores, anchor_idx, class_idx = top_k_candidates(scores, pre_nms_top_k)  # [B, k]
    if per_class:
        flat_boxes = tf.reshape(boxes, [tf.shape(boxes)[0], -1, 4])  # [B, N * K, 4]
        gather_from, gather_idx = flat_boxes, anchor_idx * num_classes + class_idx
    else:
        gather_from, gather_idx = boxes, anchor_idx
    # An empty image (N == 0) gets one zero row so the clamped indices stay in range.
    if gather_from.shape[1] is None or gather_from.shape[1] == 0:
        gather_from = tf.pad(gather_from, [[0, 0], [0, 1], [0, 0]])
    cand_boxes = tf.gather(gather_from, gather_idx, batch_dims=1)  # [B, k, 4]

    return nms_candidates(cand_boxes, cand_scores, class_idx, num_classes, max_detections=max_detections,
                          iou_threshold=iou_threshold, score_threshold=score_threshold,
                          max_detections_per_class=max_detections_per_class)


def nms_candidates(
    boxes,
    scores,
    classes,
    num_classes,
    max_detections=100,
    iou_threshold=0.5,
    score_threshold=0.05,
    max_detections_per_class=None,
):
    """Per-class NMS of already selected (box, class) candidates, padded to ``max_detections``.

    The second half of :func:`multiclass_nms`, for decoders that pick their candidates
    themselves (e.g. top-k on logits per level with :func:`top_k_per_level`, so only the
    winners are decoded).

    Args:
      boxes: ``[B, P, 4]`` float32 ``[y1, x1, y2, x2]``, one box per candidate.
      scores: ``[B, P]`` probabilities; a candidate needs ``score > score_threshold``.
      classes: ``[B, P]`` int32 class of each candidate, in ``[0, num_classes)``.
      num_classes: K, static.
      Other arguments as in :func:`multiclass_nms`.

    An empty box (``y2 <= y1`` or ``x2 <= x1``: a zero padding proposal, a box clipped
    away) never becomes a detection.

    Returns:
      the detections dict of :func:`multiclass_nms`.
    """
    cand_boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    cand_scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    class_idx = tf.cast(tf.convert_to_tensor(classes), tf.int32)
    if cand_boxes.shape.rank != 3 or cand_scores.shape.rank != 2 or class_idx.shape.rank != 2:
        raise ValueError(f"need boxes [B, P, 4], scores [B, P] and classes [B, P], got {cand_boxes.shape}, "
                         f"{cand_scores.shape} and {class_idx.shape}")
    max_detections = int(max_detections)
    if max_detections < 1:
        raise ValueError("max_detections must be positive")
    if not float(score_threshold) >= 0.0:
        raise ValueError(f"score_threshold must be >= 0 (scores are probabilities), got {score_threshold}")
    num_candidates = cand_scores.shape[1]
    if max_detections_per_class is not None and num_candidates is None:
        raise ValueError("max_detections_per_class needs a static number of candidates P")

    # An empty box (zero area or inverted: a padding proposal, a box clipped away) is never a
    # detection, whatever its score: candidates need a score above the threshold (>= 0).
    cand_scores = tf.where(box_ops.valid_mask(cand_boxes), cand_scores, 0.0)  # [B, P]

    # --- one single-class NMS per image over class-shifted boxes ---
    shifted = _class_offsets(class_idx, cand_boxes, num_classes)  # [B, k, 4]
    nms_size = max_detections if max_detections_per_class is None else max(num_candidates, max_detections)
    iou_threshold = tf.constant(iou_threshold, tf.float32)
    score_threshold = tf.constant(score_threshold, tf.float32)

    def nms_fn(args):
        return _nms_one_image(args[0], args[1], nms_size, iou_threshold, score_threshold)

    if shifted.shape[0] == 1:
        keep, count = nms_fn((shifted[0], cand_scores[0]))
        keep, count = keep[None], count[None]  # [1, nms_size], [1]
    else:
        keep, count = tf.map_fn(
            nms_fn,
            (shifted, cand_scores),
            fn_output_signature=(tf.TensorSpec([nms_size], tf.int32),
                                 tf.TensorSpec([], tf.int32)),
        )  # [B, nms_size], [B]
    valid = tf.range(nms_size)[None, :] < count[:, None]  # [B, nms_size]
    det_classes = tf.gather(class_idx, keep, batch_dims=1)  # [B, nms_size]

    # --- optional cap per class, then compaction to the first M valid rows ---
    if max_detections_per_class is not None:
        one_hot = tf.one_hot(det_classes, num_classes, dtype=tf.int32)  # [B, nms_size, K]
        one_hot *= tf.cast(valid, tf.int32)[..., None]
        rank_in_class = tf.reduce_sum(tf.cumsum(one_hot, axis=1) * one_hot, axis=-1)
        valid &= rank_in_class <= int(max_detections_per_class)
        # Stable compaction: the valid rows in their (score) order, then the rest.
        position = tf.cast(tf.range(nms_size), tf.float32)[None, :]
        key = tf.where(valid, -position, -position - float(nms_size))
        _, order = tf.math.top_k(key, k=max_detections, sorted=True)  # [B, M]
        keep = tf.gather(keep, order, batch_dims=1)
        valid = tf.gather(valid, order, batch_dims=1)
        det_classes = tf.gather(det_classes, order, batch_dims=1)
    det_boxes = tf.gather(cand_boxes, keep, batch_dims=1)  # [B, M, 4]
    det_scores = tf.gather(cand_scores, keep, batch_dims=1)  # [B, M]
    return {
        "detection_boxes": tf.where(valid[..., None], det_boxes, 0.0),
        "detection_scores": tf.where(valid, det_scores, 0.0),
        "detection_classes": tf.where(valid, det_classes, PADDING_CLASS),
        "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1),
    }
