"""IoU matcher: assigns each anchor (or proposal) a ground-truth index, background or ignore.

The rule is TF Model Garden's ``box_matcher.BoxMatcher``: sorted ``thresholds`` cut the
similarity axis into ``len(thresholds) + 1`` intervals, ``[-inf, t0), [t0, t1), ...,
[t_last, inf)``, and ``labels`` says what an anchor whose best similarity falls in each
interval becomes: :data:`BACKGROUND`, :data:`IGNORE`, or :data:`POSITIVE` (matched to its
best ground truth). Named sentinels as in torchvision's ``Matcher``.

``matches`` (the result) holds, per anchor, the ground-truth index ``>= 0`` for positives,
``BACKGROUND`` (-1) for negatives and ``IGNORE`` (-2) for anchors that contribute no loss.
Class targets use the same values (``-1`` background, ``-2`` ignore), see
``tfzoo.data.schema``; :func:`gather_matched` turns matches into per-anchor targets.

Shape legend: A anchors (or proposals), G ground truth, D target width; ``...`` any
leading batch dimensions (e.g. B).
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfzoo.ops import anchors as anchor_ops
from tfzoo.ops import box_coder
from tfzoo.ops import boxes as box_ops

#: Match value of an anchor/proposal assigned to background (a negative).
BACKGROUND = -1
#: Match value of an anchor/proposal that contributes no loss.
IGNORE = -2
#: A *label* (never a match value): "positive, take the best ground truth's index".
POSITIVE = 1

_LABELS = (BACKGROUND, IGNORE, POSITIVE)
#: Similarity given to padding ground truth: below any threshold, finite.
_INVALID = -1e9


def match(similarity, thresholds, labels, allow_low_quality_matches=False, gt_valid=None, empty_label=None,
          anchor_valid=None):
    """Matches anchors to ground truth by similarity (usually ``boxes.iou(anchors, gt)``).

    Args:
      similarity: ``[..., A, G]`` float, e.g. IoU of anchors (rows) with ground truth.
      thresholds: sorted thresholds ``[t0, ..., t_{n-1}]``.
      labels: ``n + 1`` labels from ``{BACKGROUND, IGNORE, POSITIVE}``; ``labels[i]`` applies
        to a best similarity in ``[t_{i-1}, t_i)`` (so ``>= t_{n-1}`` gets ``labels[n]``).
      allow_low_quality_matches: every valid ground truth also gets its best anchor(s) as
        positives, all anchors tied at its maximum similarity (detectron2's rule for ties),
        if that maximum is > 0. Unlike detectron2, which keeps such an anchor's own best
        ground truth, the anchor is assigned to the ground truth it is best for (SSD's
        "match each ground truth to the default box with the best jaccard overlap", the TF
        Object Detection API's ``force_match_for_each_row``); an anchor that is the best
        of several goes to the one with the highest similarity (lowest index on ties).
      gt_valid: optional ``[..., G]`` bool, False for padding rows (e.g. ``classes != -1``).
      empty_label: what every anchor of an image with no (valid) ground truth becomes
        (``BACKGROUND`` or ``IGNORE``); ``None``: ``labels[0]``. Fast R-CNN's rule ignores
        proposals below IoU 0.1 with every object, but in an image without objects every
        proposal is background (:data:`FAST_RCNN` sets it).
      anchor_valid: optional ``[..., A]`` bool, False for padding anchors or proposals
        (a fixed count padded with empty boxes): they are ``IGNORE`` whatever their
        similarity, so that no sampler draws them and no loss sees them.

    Returns:
      int32 ``[..., A]``: ground-truth index for positives, ``BACKGROUND`` or ``IGNORE``.
      With no (valid) ground truth every anchor gets ``empty_label`` (no NaN, no error;
      ``labels[0]`` must not be ``POSITIVE``).
    """
    thresholds = tuple(float(t) for t in thresholds)
    labels = tuple(int(label) for label in labels)
    _check(thresholds, labels, empty_label)
    similarity = tf.convert_to_tensor(similarity)
    if not similarity.dtype.is_floating:
        similarity = tf.cast(similarity, tf.float32)
    if similarity.shape.rank is not None and similarity.shape.rank < 2:
        raise ValueError(f"similarity must have shape [..., A, G], got {similarity.shape}")
    if gt_valid is not None:
        gt_valid = tf.cast(gt_valid, tf.bool)
        similarity = tf.where(gt_valid[..., None, :], similarity, tf.cast(_INVALID, similarity.dtype))
    # One padding column so that max/argmax are defined when G == 0.
    pad = tf.fill(tf.concat([tf.shape(similarity)[:-1], [1]], axis=0), tf.cast(_INVALID, similarity.dtype))
    padded = tf.concat([similarity, pad], axis=-1)  # [..., A, G + 1]
    best = tf.reduce_max(padded, axis=-1)  # [..., A]
    best_gt = tf.argmax(padded, axis=-1, output_type=tf.int32)  # [..., A]

    matches = tf.fill(tf.shape(best_gt), tf.constant(_value(labels[0]), tf.int32))
    for threshold, label in zip(thresholds, labels[1:]):
        value = best_gt if label == POSITIVE else tf.fill(tf.shape(best_gt), tf.constant(label, tf.int32))
        matches = tf.where(best >= threshold, value, matches)

    if allow_low_quality_matches:
        gt_best = tf.reduce_max(padded, axis=-2, keepdims=True)  # [..., 1, G + 1]
        is_best = (padded == gt_best) & (gt_best > 0.0)  # [..., A, G + 1]
        claim = tf.where(is_best, padded, tf.cast(_INVALID, padded.dtype))
        claimed = tf.reduce_any(is_best, axis=-1)  # [..., A]
        claimant = tf.argmax(claim, axis=-1, output_type=tf.int32)  # [..., A]
        matches = tf.where(claimed, claimant, matches)
    if empty_label is not None:
        has_gt = tf.reduce_max(best, axis=-1) > _INVALID / 2  # [...]: a valid ground truth exists
        matches = tf.where(has_gt[..., None], matches, tf.constant(int(empty_label), tf.int32))
    if anchor_valid is not None:
        matches = tf.where(tf.cast(anchor_valid, tf.bool), matches, tf.constant(IGNORE, tf.int32))
    return matches


def _value(label):
    if label == POSITIVE:
        raise ValueError("labels[0] (similarity below every threshold) cannot be POSITIVE")
    return label


def _check(thresholds, labels, empty_label=None):
    if len(labels) != len(thresholds) + 1:
        raise ValueError(f"need len(labels) == len(thresholds) + 1, got {len(labels)} and {len(thresholds)}")
    if list(thresholds) != sorted(thresholds):
        raise ValueError(f"thresholds must be sorted, got {thresholds}")
    for label in labels:
        if label not in _LABELS:
            raise ValueError(f"labels must be BACKGROUND, IGNORE or POSITIVE, got {label}")
    _value(labels[0])
    if empty_label is not None and int(empty_label) not in (BACKGROUND, IGNORE):
        raise ValueError(f"empty_label must be BACKGROUND or IGNORE, got {empty_label}")


@dataclasses.dataclass(frozen=True)
class Matcher:
    """A matching rule as a value: ``Matcher(thresholds, labels, allow_low_quality_matches)``.

    ``matcher(similarity, gt_valid=None)`` is :func:`match` with these settings.
    """

    thresholds: tuple
    labels: tuple
    allow_low_quality_matches: bool = False
    empty_label: int | None = None  # match()'s: what anchors of an image without objects become

    def __post_init__(self):
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "labels", tuple(int(label) for label in self.labels))
        _check(self.thresholds, self.labels, self.empty_label)

    def __call__(self, similarity, gt_valid=None, anchor_valid=None):
        return match(similarity, self.thresholds, self.labels, self.allow_low_quality_matches, gt_valid,
                     self.empty_label, anchor_valid)

    match = __call__


# --- presets (the papers' rules) -------------------------------------------------------

#: Faster R-CNN RPN: IoU < 0.3 negative, [0.3, 0.7) ignored, >= 0.7 positive, plus each
#: ground truth's highest-IoU anchor(s). The seed says 0.4 for the negative threshold; the
#: paper (Ren et al. 2015, section 3.1.2) says 0.3, used here.
RPN = Matcher((0.3, 0.7), (BACKGROUND, IGNORE, POSITIVE), allow_low_quality_matches=True)
#: Fast R-CNN proposals: IoU >= 0.5 positive, [0.1, 0.5) background, < 0.1 ignored (the
#: paper's lower bound, a heuristic for hard example mining; detectron2 uses [0, 0.5)); in
#: an image without objects every proposal is background.
FAST_RCNN = Matcher((0.1, 0.5), (IGNORE, BACKGROUND, POSITIVE), empty_label=BACKGROUND)
#: R-CNN fine-tuning (Girshick et al. 2014, sec. 2.3): IoU >= 0.5 positive, every other
#: proposal background.
RCNN = Matcher((0.5,), (BACKGROUND, POSITIVE), empty_label=BACKGROUND)
#: RetinaNet: IoU >= 0.5 positive, < 0.4 background, [0.4, 0.5) ignored (Lin et al. 2017).
#: The paper states no low-quality matches; detectron2 and TF Model Garden enable them.
RETINANET = Matcher((0.4, 0.5), (BACKGROUND, IGNORE, POSITIVE))
#: SSD: each ground truth's best default box, plus every box with IoU >= 0.5.
SSD = Matcher((0.5,), (BACKGROUND, POSITIVE), allow_low_quality_matches=True)


def gather_matched(values, matches, fill_value=0):
    """Per-anchor targets: ``values[..., matches, :]``, ``fill_value`` where ``matches < 0``.

    Args:
      values: ``[..., G, *D]`` per-ground-truth values (boxes ``[..., G, 4]``, classes
        ``[..., G]``); the leading dimensions match ``matches``'.
      matches: int ``[..., A]`` from :func:`match`.
      fill_value: value of rows whose match is ``BACKGROUND`` or ``IGNORE``.

    Returns:
      ``[..., A, *D]``, same dtype as ``values``. Safe for ``G == 0`` (all fill).
    """
    values = tf.convert_to_tensor(values)
    matches = tf.convert_to_tensor(matches)
    batch_dims = matches.shape.rank - 1
    if batch_dims is None:
        raise ValueError("matches must have a known rank")
    num_gt = tf.shape(values)[batch_dims]
    fill_shape = tf.concat([tf.shape(values)[:batch_dims], [1], tf.shape(values)[batch_dims + 1 :]], axis=0)
    padded = tf.concat([values, tf.fill(fill_shape, tf.cast(fill_value, values.dtype))], axis=batch_dims)
    indices = tf.where(matches >= 0, tf.cast(matches, tf.int32), num_gt)  # [..., A]
    return tf.gather(padded, indices, axis=batch_dims, batch_dims=batch_dims)  # [..., A, *D]


def anchor_targets(matcher, anchors, boxes, classes, special, box_weights, special_iou):
    """Per-anchor training targets of one image: the shared recipe of the anchor encoders
    (RetinaNet, SSD, the RPN).

    Ground truth ``boxes [G, 4]`` / ``classes [G]`` (negative: padding) with ``special
    [G]`` (crowd or difficult: never a positive) are matched to ``anchors [A, 4]`` by
    ``matcher`` on IoU. A background anchor overlapping a special object by
    ``special_iou`` or more becomes IGNORE (neither positive nor negative, as Detectron
    treats crowd regions). Positives' boxes are encoded with ``box_weights``
    (:func:`tfzoo.ops.box_coder.encode`); other anchors' deltas are 0.

    Returns:
      ``(classes int32 [A]`` (class id, BACKGROUND or IGNORE), ``deltas float32 [A, 4])``.
    """
    classes = tf.cast(classes, tf.int32)
    special = tf.cast(special, tf.bool)
    similarity = box_ops.iou(anchors, boxes)  # [A, G]
    matches = matcher(similarity, gt_valid=(classes >= 0) & ~special)  # [A]
    target_classes = gather_matched(classes, matches, fill_value=BACKGROUND)
    target_classes = tf.where(matches == IGNORE, IGNORE, target_classes)
    special_similarity = tf.where(special[None, :], similarity, 0.0)  # [A, G]
    zero_column = tf.zeros_like(similarity[:, :1])  # keeps the max defined when G == 0
    special_overlap = tf.reduce_max(tf.concat([special_similarity, zero_column], axis=1), axis=1)  # [A]
    target_classes = tf.where((target_classes == BACKGROUND) & (special_overlap >= special_iou), IGNORE,
                              target_classes)
    matched_boxes = gather_matched(boxes, matches, fill_value=0.0)  # [A, 4]
    deltas = box_coder.encode(matched_boxes, anchors, box_weights)  # [A, 4]
    deltas = tf.where((matches >= 0)[:, None], deltas, 0.0)
    return tf.cast(target_classes, tf.int32), deltas


# --- grid assignment (YOLO) ----------------------------------------------------------------
#
# YOLO matches by position, not by IoU against anchors: an object belongs to the grid cell
# that holds its centre (Redmon et al. 2016, sec. 2), and in YOLOv2/v3 to the one prior of
# that cell whose shape fits it best (Redmon & Farhadi 2018, sec. 2.1: "one bounding box
# prior for each ground truth object"). A slot (a cell, or a cell's prior) predicts one
# object: where several objects want one slot (the seed's "problem with encodings"), the
# largest keeps it and the others are dropped from the targets. ``tfzoo inspect --model``
# counts what a dataset loses that way.


def one_per_slot(slots, priority, valid):
    """Which ground truths keep their slot: per slot, the valid one of highest ``priority``
    (ties: the first). ``slots [G]`` int32 (any values), ``priority [G]`` float, ``valid
    [G]`` bool -> ``keep [G]`` bool (False for invalid rows). Graph-safe, no loop."""
    valid = tf.cast(valid, tf.bool)
    count = tf.shape(slots)[0]
    index = tf.range(count)
    unique, dense = tf.unique(tf.cast(slots, tf.int32))  # slot ids made dense
    num = tf.shape(unique)[0]
    dense = tf.where(valid, dense, num)  # invalid rows: a slot of their own
    priority = tf.where(valid, tf.cast(priority, tf.float32), float("-inf"))
    best = tf.math.unsorted_segment_max(priority, dense, num + 1)
    is_best = valid & (priority >= tf.gather(best, dense))
    first = tf.math.unsorted_segment_min(tf.where(is_best, index, count), dense, num + 1)
    return is_best & tf.equal(index, tf.gather(first, dense))


def cell_targets(boxes, classes, assignable, grid_hw):
    """YOLOv1's targets of one image: each object in the cell holding its centre, with the
    seed's encoding (:func:`tfzoo.ops.box_coder.cell_encode`; size as a fraction of the
    image).

    Args:
      boxes: ``[G, 4]`` normalized ground truth; ``classes [G]`` (negative: padding);
        ``assignable [G]`` bool (False: crowd, difficult or padding, never a target).
      grid_hw: ``(S_h, S_w)`` Python ints.

    Returns:
      ``(classes int32 [S_h, S_w]`` (class or BACKGROUND), ``boxes float32 [S_h, S_w, 4]``
      ``(oy, ox, h, w)`` (0 off the objects' cells), ``dropped int32 []``: objects that
      lost their cell to a larger one)``.
    """
    rows, cols = (int(v) for v in grid_hw)
    boxes = tf.cast(boxes, tf.float32)
    classes = tf.cast(classes, tf.int32)
    valid = tf.cast(assignable, tf.bool) & (classes >= 0)
    cells, offsets = box_coder.cell_encode(boxes, (rows, cols))  # [G, 2]
    keep = one_per_slot(cells[:, 0] * cols + cells[:, 1], box_ops.area(boxes), valid)
    sizes = boxes[:, 2:] - boxes[:, :2]
    kept = tf.where(keep)[:, 0]
    at = tf.gather(cells, kept)
    target_boxes = tf.scatter_nd(at, tf.gather(tf.concat([offsets, sizes], axis=-1), kept), [rows, cols, 4])
    target_classes = tf.tensor_scatter_nd_update(tf.fill([rows, cols], BACKGROUND), at, tf.gather(classes, kept))
    dropped = tf.reduce_sum(tf.cast(valid & ~keep, tf.int32))
    return target_classes, target_boxes, dropped


def prior_targets(boxes, classes, assignable, map_sizes, priors_hw, masks):
    """YOLOv2/v3's targets of one image: each object to the prior with the best shape IoU
    over all priors (:func:`tfzoo.ops.anchors.shape_iou`), at the cell holding its centre
    on the map that predicts with that prior; its centre offset in the cell and
    ``log(size / prior)`` (:func:`tfzoo.ops.box_coder.prior_encode`).

    Args:
      boxes, classes, assignable: as :func:`cell_targets`.
      map_sizes: ``[(h_k, w_k)]`` Python ints, one per output map.
      priors_hw: ``[P, 2]`` (h, w) priors in fractions of the input.
      masks: per map, the prior indices it predicts with.

    Returns:
      ``(targets, dropped)``: ``targets`` a list with per map ``(classes int32 [h_k, w_k,
      P_k]`` (class or BACKGROUND), ``deltas float32 [h_k, w_k, P_k, 4]`` ``(oy, ox, t_h,
      t_w)``, 0 off the positives); ``dropped int32 []`` objects that lost their slot.
    """
    boxes = tf.cast(boxes, tf.float32)
    classes = tf.cast(classes, tf.int32)
    valid = tf.cast(assignable, tf.bool) & (classes >= 0)
    priors = tf.constant(priors_hw, tf.float32)  # [P, 2]
    sizes = boxes[:, 2:] - boxes[:, :2]  # [G, 2]
    best = tf.argmax(anchor_ops.shape_iou(sizes, priors), axis=-1, output_type=tf.int32)  # [G]
    owner = {p: (k, j) for k, mask in enumerate(masks) for j, p in enumerate(mask)}
    level = tf.gather(tf.constant([owner[p][0] if p in owner else -1 for p in range(len(priors_hw))]), best)
    slot_in_map = tf.gather(tf.constant([owner[p][1] if p in owner else 0 for p in range(len(priors_hw))]), best)
    valid = valid & (level >= 0)
    # One slot id over every map: (map, row, column, prior) flattened.
    slot = tf.zeros_like(best)
    offsets_all, cells_all = [], []
    for k, ((rows, cols), mask) in enumerate(zip(map_sizes, masks)):
        cells, offsets = box_coder.cell_encode(boxes, (rows, cols))
        on_map = tf.equal(level, k)
        base = sum(h * w * len(m) for (h, w), m in zip(map_sizes[:k], masks[:k]))
        slot = tf.where(on_map, base + (cells[:, 0] * cols + cells[:, 1]) * len(mask) + slot_in_map, slot)
        cells_all.append(cells)
        offsets_all.append(offsets)
    keep = one_per_slot(slot, box_ops.area(boxes), valid)
    deltas = tf.concat([tf.zeros_like(sizes), box_coder.prior_encode(sizes, tf.gather(priors, best))], axis=-1)
    targets = []
    for k, ((rows, cols), mask) in enumerate(zip(map_sizes, masks)):
        mine = tf.where(keep & tf.equal(level, k))[:, 0]
        at = tf.concat([tf.gather(cells_all[k], mine), tf.gather(slot_in_map, mine)[:, None]], axis=-1)
        values = tf.concat([tf.gather(offsets_all[k], mine), tf.gather(deltas[:, 2:], mine)], axis=-1)
        map_deltas = tf.scatter_nd(at, values, [rows, cols, len(mask), 4])
        map_classes = tf.tensor_scatter_nd_update(tf.fill([rows, cols, len(mask)], BACKGROUND), at,
                                                  tf.gather(classes, mine))
        targets.append((map_classes, map_deltas))
    dropped = tf.reduce_sum(tf.cast(valid & ~keep, tf.int32))
    return targets, dropped
