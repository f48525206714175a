"""Region proposals from an RPN, and the RoIs a second stage trains on (Faster R-CNN, FPN).

:func:`generate_proposals` turns the RPN's objectness logits and box deltas at every anchor
into a fixed number of proposals per image (Ren et al. 2015, sec. 3.3; Lin et al. 2017 for
several levels; torchvision's ``RegionProposalNetwork.filter_proposals``):

1. per level, the ``pre_nms_top_k`` anchors with the highest objectness;
2. their deltas decoded (:func:`tfzoo.ops.box_coder.decode`), clipped to the image, boxes
   with a side under ``min_size`` dropped (score 0);
3. NMS at ``iou_threshold`` within each level (the levels as the classes of the shared
   builtin-only :func:`tfzoo.ops.nms.nms_candidates`: one NMS call for all levels);
4. the ``post_nms_top_n`` best survivors over all levels, sorted by objectness, padded.

Every step is a TFLite builtin (``TOPK_V2``, ``GATHER``, ``NON_MAX_SUPPRESSION_V5``,
arithmetic), so the proposal layer lives inside exported models. Proposals carry no
gradient (approximate joint training).

:func:`roi_targets` samples the second stage's training RoIs from the proposals plus the
ground-truth boxes (as torchvision and detectron2 add them): matched by IoU with
:data:`tfzoo.ops.matcher.FAST_RCNN` (foreground >= 0.5, background [0.1, 0.5)), a fixed
number per image with at most ``positive_fraction`` foreground
(:func:`tfzoo.ops.sampling.sample_balanced_indices`), padded with background rows that
carry no loss.

The RPN's own training targets (:func:`rpn_targets`, computed per image in tf.data) are the
paper's: anchors matched with :data:`tfzoo.ops.matcher.RPN` (IoU >= 0.7 or an object's best
anchor positive, < 0.3 negative), then 256 of them drawn at up to 1:1.

Shape legend: B batch, A anchors, L levels, N proposals, G ground truth, S sampled RoIs.
"""
from __future__ import annotations

import tensorflow as tf

from tfzoo.ops import box_coder
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import matcher as matcher_ops
from tfzoo.ops import nms as nms_ops
from tfzoo.ops import sampling


#: ``rpn_targets`` labels: a sampled positive, a sampled negative, an anchor without loss.
RPN_POSITIVE, RPN_NEGATIVE, RPN_UNSAMPLED = 1, 0, -1


def rpn_matches(anchors, boxes, classes, special=None, *, straddle=None, box_weights=(1.0, 1.0, 1.0, 1.0)):
    """The RPN's anchor matching of one image, before sampling (what tf.data encodes).

    Args:
      anchors: ``[A, 4]`` normalized.
      boxes, classes: the image's ground truth ``[G, 4]`` / ``[G]`` (negative classes:
        padding); ``special [G]`` bool (crowd, difficult): never positive, and a
        background anchor overlapping one by 0.5 carries no loss.
      straddle: ``None`` keeps every anchor; a number ``t`` gives no loss to anchors
        reaching more than ``t`` (normalized) outside the image (the paper ignores
        cross-boundary anchors in training: ``t = 0``).
      box_weights: the RPN's box coder weights.

    Returns:
      ``(matched int32 [A]`` (the matched object's class id, ``BACKGROUND`` or ``IGNORE``),
      ``deltas float32 [A, 4]`` (zeros off the positives)).
    """
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
    classes = tf.cast(classes, tf.int32)
    special = tf.zeros_like(classes, tf.bool) if special is None else tf.cast(special, tf.bool)
    matched, deltas = matcher_ops.anchor_targets(matcher_ops.RPN, anchors, boxes, classes, special, box_weights,
                                                 special_iou=0.5)
    if straddle is not None:
        inside = tf.reduce_all((anchors[:, :2] >= -float(straddle)) & (anchors[:, 2:] <= 1.0 + float(straddle)),
                               axis=-1)
        matched = tf.where(inside, matched, matcher_ops.IGNORE)
        deltas = tf.where(inside[:, None], deltas, 0.0)
    return matched, deltas


def rpn_sample(matched, *, num_samples=256, positive_fraction=0.5, seed=None, step=None):
    """``labels int32 [..., A]``: :data:`RPN_POSITIVE` / :data:`RPN_NEGATIVE` for the
    ``num_samples`` anchors drawn per image at up to ``positive_fraction`` positive
    (:func:`tfzoo.ops.sampling.sample_balanced`), :data:`RPN_UNSAMPLED` elsewhere."""
    matched = tf.cast(matched, tf.int32)
    sampled = sampling.sample_balanced(matched, int(num_samples), positive_fraction, seed, step)
    return tf.where(sampled, tf.where(matched >= 0, RPN_POSITIVE, RPN_NEGATIVE), RPN_UNSAMPLED)


def rpn_targets(anchors, boxes, classes, special=None, *, num_samples=256, positive_fraction=0.5, straddle=None,
                box_weights=(1.0, 1.0, 1.0, 1.0), seed=None, step=None):
    """:func:`rpn_matches` then :func:`rpn_sample` for one image: ``(labels int32 [A],
    deltas float32 [A, 4])``, the deltas zero off the sampled positives."""
    matched, deltas = rpn_matches(anchors, boxes, classes, special, straddle=straddle, box_weights=box_weights)
    labels = rpn_sample(matched, num_samples=num_samples, positive_fraction=positive_fraction, seed=seed, step=step)
    return labels, tf.where((labels == RPN_POSITIVE)[:, None], deltas, 0.0)


def _level_of(anchor_indices, level_sizes):
    """int32 level of each index into the concatenated anchors."""
    starts, total = [], 0
    for size in level_sizes[:-1]:
        total += int(size)
        starts.append(total)
    level = tf.zeros_like(anchor_indices)
    for start in starts:
        level += tf.cast(anchor_indices >= start, tf.int32)
    return level


def generate_proposals(objectness, deltas, anchors, level_sizes=None, *, pre_nms_top_k=12000,
                       post_nms_top_n=2000, iou_threshold=0.7, min_size=0.0, box_weights=(1.0, 1.0, 1.0, 1.0)):
    """Proposals of an RPN's outputs (see the module doc).

    Args:
      objectness: ``[B, A]`` logits (object against background), anchors of all levels
        concatenated.
      deltas: ``[B, A, 4]`` box deltas of those anchors.
      anchors: ``[A, 4]`` normalized ``[y1, x1, y2, x2]``.
      level_sizes: static anchor counts per level, summing to ``A``; ``None``: one level.
      pre_nms_top_k: anchors kept per level before NMS (Faster R-CNN: 12,000 in training,
        6,000 at test; FPN: 2,000 and 1,000).
      post_nms_top_n: proposals kept per image after NMS (2,000 / 300; FPN 2,000 / 1,000).
      iou_threshold: NMS threshold (0.7).
      min_size: boxes with a side under this (normalized units) are dropped.
      box_weights: the box coder's weights (the RPN's: 1, 1, 1, 1).

    Returns:
      ``(proposals [B, post_nms_top_n, 4], scores [B, post_nms_top_n], num_proposals [B])``:
      sorted by objectness (sigmoid); rows from ``num_proposals`` on are zeros.
    """
    objectness = tf.stop_gradient(tf.cast(objectness, tf.float32))
    deltas = tf.stop_gradient(tf.cast(deltas, tf.float32))
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
    if objectness.shape.rank != 2 or deltas.shape.rank != 3:
        raise ValueError(f"need objectness [B, A] and deltas [B, A, 4], got {objectness.shape} and {deltas.shape}")
    num_anchors = anchors.shape[0]
    level_sizes = tuple(int(s) for s in (level_sizes or (num_anchors,)))
    if num_anchors is not None and sum(level_sizes) != num_anchors:
        raise ValueError(f"level_sizes {level_sizes} sum to {sum(level_sizes)}, not the {num_anchors} anchors")
    scores = tf.sigmoid(objectness)[..., None]  # [B, A, 1]
    per_level, start = [], 0
    for size in level_sizes:
        per_level.append(scores[:, start:start + size])
        start += size
    top_scores, anchor_idx, _ = nms_ops.top_k_per_level(per_level, int(pre_nms_top_k))  # [B, P]
    boxes = box_coder.decode(tf.gather(deltas, anchor_idx, batch_dims=1), tf.gather(anchors, anchor_idx),
                             box_weights)
    boxes = box_ops.clip(boxes)  # [B, P, 4]
    top_scores = tf.where(box_ops.valid_mask(boxes, min_size), top_scores, 0.0)
    kept = nms_ops.nms_candidates(boxes, top_scores, _level_of(anchor_idx, level_sizes), len(level_sizes),
                                  max_detections=int(post_nms_top_n), iou_threshold=iou_threshold,
                                  score_threshold=0.0)
    return kept["detection_boxes"], kept["detection_scores"], kept["num_detections"]


def roi_targets(proposals, num_proposals, gt_boxes, gt_classes, *, num_samples=128, positive_fraction=0.25,
                box_weights=(10.0, 10.0, 5.0, 5.0), matcher=matcher_ops.FAST_RCNN, gt_ignore=None, seed=None,
                step=None):
    """The second stage's training RoIs and their targets (see the module doc).

    Args:
      proposals: ``[B, N, 4]`` normalized, the first ``num_proposals [B]`` rows valid.
      gt_boxes: ``[B, G, 4]``; ``gt_classes [B, G]`` int, negative for padding rows.
      num_samples, positive_fraction: RoIs per image and their foreground share (Fast
        R-CNN: 128 at 0.25; FPN: 512 at 0.25; the seed's 64/64 split: 0.5).
      box_weights: the second stage's box coder weights (10, 10, 5, 5).
      matcher: foreground / background rule (:data:`tfzoo.ops.matcher.FAST_RCNN`).
      gt_ignore: optional bool ``[B, G]`` (crowd, difficult): never a foreground match.
      seed, step: the sampler's (:func:`tfzoo.ops.sampling.sample_balanced_indices`).

    Returns:
      dict of ``rois [B, S, 4]``, ``classes [B, S]`` int32 (class id, ``BACKGROUND`` -1 for
      background, ``IGNORE`` -2 for padding slots), ``box_deltas [B, S, 4]`` (zeros off the
      foreground). Foreground RoIs come first.
    """
    proposals = tf.stop_gradient(tf.cast(proposals, tf.float32))
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    num_rows = tf.shape(proposals)[1]
    candidates = tf.concat([proposals, gt_boxes], axis=1)  # [B, N + G, 4]
    gt_valid = gt_classes >= 0
    if gt_ignore is not None:
        gt_valid &= ~tf.cast(gt_ignore, tf.bool)
    proposal_valid = tf.range(num_rows)[None, :] < tf.cast(num_proposals, tf.int32)[:, None]  # [B, N]
    candidate_valid = tf.concat([proposal_valid, gt_valid], axis=1)  # [B, N + G]
    similarity = box_ops.iou(candidates, gt_boxes)  # [B, N + G, G]
    matches = matcher(similarity, gt_valid=gt_valid, anchor_valid=candidate_valid)  # [B, N + G]
    indices, valid = sampling.sample_balanced_indices(matches, int(num_samples), positive_fraction, seed, step)
    rois = tf.gather(candidates, indices, batch_dims=1)  # [B, S, 4]
    sampled = tf.where(valid, tf.gather(matches, indices, batch_dims=1), matcher_ops.IGNORE)  # [B, S]
    classes = tf.where(sampled >= 0, tf.gather(gt_classes, tf.maximum(sampled, 0), batch_dims=1), sampled)
    matched_boxes = tf.gather(gt_boxes, tf.maximum(sampled, 0), batch_dims=1)  # [B, S, 4]
    deltas = box_coder.encode(matched_boxes, rois, box_weights)
    deltas = tf.where((sampled >= 0)[..., None], deltas, 0.0)
    return {"rois": rois, "classes": tf.cast(classes, tf.int32), "box_deltas": deltas}
