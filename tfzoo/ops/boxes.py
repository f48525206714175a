"""Box format conversion, area, IoU/GIoU, clipping, flipping and filtering.

Canonical boxes are ``[y1, x1, y2, x2]`` float32, normalized to [0, 1] of the image
(tf.image's convention). Other forms carry a suffix in their names:

- ``xyxy``: ``[x1, y1, x2, y2]``;
- ``xywh``: COCO ``[x, y, w, h]`` (top-left corner, width, height);
- ``cyxhw``: centre form ``[cy, cx, h, w]``;
- ``_px``: absolute pixels instead of normalized coordinates.

Every function accepts any number of leading batch dimensions (``[..., 4]``) and works
eagerly, inside ``tf.function`` and inside ``tf.data.Dataset.map``. None of them produces
NaN or Inf for zero-area, inverted-to-empty, disjoint or all-zero (padding) boxes.

Shape legend: B batch, N and M box counts, G ground truth.
"""
from __future__ import annotations

import tensorflow as tf

_EPS = 1e-8


def _as_boxes(boxes, name="boxes"):
    """Converts to a float32 tensor and checks the last dimension is 4."""
    boxes = tf.convert_to_tensor(boxes)
    if not boxes.dtype.is_floating:
        boxes = tf.cast(boxes, tf.float32)
    if boxes.shape.rank is not None and boxes.shape.rank == 0:
        raise ValueError(f"{name} must have shape [..., 4], got a scalar")
    last = boxes.shape[-1] if boxes.shape.rank is not None else None
    if last is not None and last != 4:
        raise ValueError(f"{name} must have shape [..., 4], got {boxes.shape}")
    return boxes


# --- format conversion -------------------------------------------------------------


def yxyx_to_xyxy(boxes):
    """``[y1, x1, y2, x2]`` -> ``[x1, y1, x2, y2]``; shape ``[..., 4]`` kept."""
    y1, x1, y2, x2 = tf.unstack(_as_boxes(boxes), axis=-1)
    return tf.stack([x1, y1, x2, y2], axis=-1)


def xyxy_to_yxyx(boxes_xyxy):
    """``[x1, y1, x2, y2]`` -> ``[y1, x1, y2, x2]``; the swap is its own inverse."""
    return yxyx_to_xyxy(boxes_xyxy)


def yxyx_to_xywh(boxes):
    """``[y1, x1, y2, x2]`` -> COCO ``[x, y, w, h]`` (same units in and out)."""
    y1, x1, y2, x2 = tf.unstack(_as_boxes(boxes), axis=-1)
    return tf.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


def xywh_to_yxyx(boxes_xywh):
    """COCO ``[x, y, w, h]`` -> ``[y1, x1, y2, x2]`` (same units in and out)."""
    x, y, w, h = tf.unstack(_as_boxes(boxes_xywh, "boxes_xywh"), axis=-1)
    return tf.stack([y, x, y + h, x + w], axis=-1)


def yxyx_to_cyxhw(boxes):
    """``[y1, x1, y2, x2]`` -> centre form ``[cy, cx, h, w]``."""
    y1, x1, y2, x2 = tf.unstack(_as_boxes(boxes), axis=-1)
    h = y2 - y1
    w = x2 - x1
    return tf.stack([y1 + 0.5 * h, x1 + 0.5 * w, h, w], axis=-1)


def cyxhw_to_yxyx(boxes_cyxhw):
    """Centre form ``[cy, cx, h, w]`` -> ``[y1, x1, y2, x2]``."""
    cy, cx, h, w = tf.unstack(_as_boxes(boxes_cyxhw, "boxes_cyxhw"), axis=-1)
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def _scale(height, width, dtype):
    height = tf.cast(height, dtype)
    width = tf.cast(width, dtype)
    return tf.stack([height, width, height, width], axis=-1)


def normalize(boxes_px, height, width):
    """Pixel ``[y1, x1, y2, x2]`` -> normalized, dividing by the image ``height``/``width``.

    ``height`` and ``width`` may be scalars or tensors broadcastable to ``boxes_px[..., 0]``
    (e.g. ``[B, 1]`` for a batch of images of different sizes).
    """
    boxes_px = _as_boxes(boxes_px, "boxes_px")
    scale = _scale(height, width, boxes_px.dtype)
    return boxes_px / scale


def denormalize(boxes, height, width):
    """Normalized ``[y1, x1, y2, x2]`` -> pixels, multiplying by ``height``/``width``."""
    boxes = _as_boxes(boxes)
    return boxes * _scale(height, width, boxes.dtype)


# --- measures -----------------------------------------------------------------------


def area(boxes):
    """Area of ``[..., 4]`` boxes -> ``[...]``; inverted boxes have area 0, never negative."""
    y1, x1, y2, x2 = tf.unstack(_as_boxes(boxes), axis=-1)
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def intersection(boxes_a, boxes_b):
    """Pairwise intersection areas: ``[..., N, 4]`` x ``[..., M, 4]`` -> ``[..., N, M]``."""
    a = _as_boxes(boxes_a, "boxes_a")
    b = _as_boxes(boxes_b, "boxes_b")
    ay1, ax1, ay2, ax2 = [t[..., :, None] for t in tf.unstack(a, axis=-1)]
    by1, bx1, by2, bx2 = [t[..., None, :] for t in tf.unstack(b, axis=-1)]
    h = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0)
    w = tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
    return h * w


def iou(boxes_a, boxes_b):
    """Pairwise IoU: ``[..., N, 4]`` x ``[..., M, 4]`` -> ``[..., N, M]`` in [0, 1].

    A pair whose union is empty (two zero-area boxes, e.g. padding) has IoU 0.
    """
    inter = intersection(boxes_a, boxes_b)
    union = area(boxes_a)[..., :, None] + area(boxes_b)[..., None, :] - inter
    return tf.math.divide_no_nan(inter, union)


def giou(boxes_a, boxes_b):
    """Pairwise generalized IoU (Rezatofighi et al. 2019): ``[..., N, M]`` in [-1, 1].

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with C the smallest box enclosing both.
    Pairs whose enclosing box is empty get GIoU 0 (not NaN).
    """
    a = _as_boxes(boxes_a, "boxes_a")
    b = _as_boxes(boxes_b, "boxes_b")
    inter = intersection(a, b)
    union = area(a)[..., :, None] + area(b)[..., None, :] - inter
    ay1, ax1, ay2, ax2 = [t[..., :, None] for t in tf.unstack(a, axis=-1)]
    by1, bx1, by2, bx2 = [t[..., None, :] for t in tf.unstack(b, axis=-1)]
    enclose = tf.maximum(tf.maximum(ay2, by2) - tf.minimum(ay1, by1), 0.0) * tf.maximum(
        tf.maximum(ax2, bx2) - tf.minimum(ax1, bx1), 0.0
    )
    return tf.math.divide_no_nan(inter, union) - tf.math.divide_no_nan(enclose - union, enclose)


def aligned_iou(boxes_a, boxes_b):
    """Element-wise IoU of two aligned ``[..., 4]`` tensors -> ``[...]`` (for losses)."""
    iou_value, _ = _aligned_iou_and_enclosure(boxes_a, boxes_b)
    return iou_value


def aligned_giou(boxes_a, boxes_b):
    """Element-wise GIoU of two aligned ``[..., 4]`` tensors -> ``[...]`` (for losses)."""
    iou_value, penalty = _aligned_iou_and_enclosure(boxes_a, boxes_b)
    return iou_value - penalty


def _aligned_iou_and_enclosure(boxes_a, boxes_b):
    a = _as_boxes(boxes_a, "boxes_a")
    b = _as_boxes(boxes_b, "boxes_b")
    ay1, ax1, ay2, ax2 = tf.unstack(a, axis=-1)
    by1, bx1, by2, bx2 = tf.unstack(b, axis=-1)
    inter = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0) * tf.maximum(
        tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0
    )
    union = area(a) + area(b) - inter
    enclose = tf.maximum(tf.maximum(ay2, by2) - tf.minimum(ay1, by1), 0.0) * tf.maximum(
        tf.maximum(ax2, bx2) - tf.minimum(ax1, bx1), 0.0
    )
    return tf.math.divide_no_nan(inter, union), tf.math.divide_no_nan(enclose - union, enclose)


# --- geometric edits ----------------------------------------------------------------


def clip(boxes, min_value=0.0, max_value=1.0):
    """Clips every coordinate into ``[min_value, max_value]`` (default: the image)."""
    boxes = _as_boxes(boxes)
    return tf.clip_by_value(boxes, min_value, max_value)


def flip_left_right(boxes):
    """Mirrors normalized boxes about the vertical axis: ``x -> 1 - x`` (order kept valid)."""
    y1, x1, y2, x2 = tf.unstack(_as_boxes(boxes), axis=-1)
    return tf.stack([y1, 1.0 - x2, y2, 1.0 - x1], axis=-1)


def flip_up_down(boxes):
    """Mirrors normalized boxes about the horizontal axis: ``y -> 1 - y``."""
    y1, x1, y2, x2 = tf.unstack(_as_boxes(boxes), axis=-1)
    return tf.stack([1.0 - y2, x1, 1.0 - y1, x2], axis=-1)


def valid_mask(boxes, min_size=0.0):
    """True where a box is finite, not inverted and larger than ``min_size`` on both sides.

    ``min_size`` is in the boxes' own units; zero-area and inverted boxes are invalid.
    Shape ``[..., 4]`` -> ``[...]`` bool.
    """
    boxes = _as_boxes(boxes)
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    safe = tf.where(tf.math.is_finite(boxes), boxes, tf.zeros_like(boxes))
    y1, x1, y2, x2 = tf.unstack(safe, axis=-1)
    return finite & (y2 - y1 > min_size) & (x2 - x1 > min_size)


def filter_boxes(boxes, *aligned, min_size=0.0):
    """Drops invalid rows (see :func:`valid_mask`) of ``boxes [N, 4]`` and aligned tensors.

    Returns ``(boxes, *aligned)`` with the same rows kept in each; unbatched only, since the
    number of rows kept varies per image.
    """
    keep = valid_mask(boxes, min_size)
    return (tf.boolean_mask(boxes, keep),) + tuple(tf.boolean_mask(t, keep) for t in aligned)
