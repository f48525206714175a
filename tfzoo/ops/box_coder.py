"""Encode boxes as deltas ``(dy, dx, dh, dw)`` relative to anchors, and decode them back.

The R-CNN parameterization (Girshick et al. 2014; Faster R-CNN eq. 2), in our row-first
order, for a box of centre ``(y, x)`` and size ``(h, w)`` against an anchor
``(y_a, x_a, h_a, w_a)``::

    dy = wy * (y - y_a) / h_a        dx = wx * (x - x_a) / w_a
    dh = wh * log(h / h_a)           dw = ww * log(w / w_a)

``weights = (wy, wx, wh, ww)`` are explicit in every config: ``(1, 1, 1, 1)`` for RPN and
RetinaNet, ``(10, 10, 5, 5)`` for the Fast/Faster R-CNN second stage and for SSD (whose
"variances" ``(0.1, 0.1, 0.2, 0.2)`` are these weights' reciprocals).

Invariant (tested): ``decode(encode(boxes, anchors), anchors) == boxes`` for any boxes
whose size is within ``exp(clamp / wh)`` of the anchor's (the clamp bounds ``dh, dw``
before ``exp`` so a wild prediction cannot overflow).

All box math is float32 (inputs of other dtypes are cast). ``boxes`` and ``anchors`` are
``[..., 4]`` ``[y1, x1, y2, x2]`` in the same units (normalized or pixels) and broadcast
against each other, e.g. ``boxes [B, A, 4]`` with ``anchors [A, 4]``.
"""
from __future__ import annotations

import math

import tensorflow as tf

from tfzoo.ops import boxes as box_ops

#: Upper bound of ``dh, dw`` (after dividing by their weights) before ``exp`` in decode:
#: a box at most 1000/16 = 62.5 times its anchor's size (detectron2's ``scale_clamp``).
DEFAULT_CLAMP = math.log(1000.0 / 16)
#: Smallest height/width used inside ``log`` in encode, so zero-area (padding) boxes encode
#: to finite deltas.
_EPS = 1e-8


def _as_weights(weights):
    weights = tf.cast(tf.convert_to_tensor(weights), tf.float32)
    if weights.shape.rank is not None and weights.shape != [4]:
        raise ValueError(f"weights must have 4 entries (wy, wx, wh, ww), got shape {weights.shape}")
    return weights


def _as_float32_boxes(value, name):
    value = tf.convert_to_tensor(value)
    if value.dtype != tf.float32:
        value = tf.cast(value, tf.float32)
    if value.shape.rank is not None and (value.shape.rank == 0 or value.shape[-1] not in (None, 4)):
        raise ValueError(f"{name} must have shape [..., 4], got {value.shape}")
    return value


def encode(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Deltas that move ``anchors`` onto ``boxes``.

    Args:
      boxes: ``[..., 4]`` target boxes ``[y1, x1, y2, x2]``.
      anchors: ``[..., 4]`` anchors, same units, broadcastable against ``boxes``
        (typically ``[A, 4]`` against ``[B, A, 4]``).
      weights: ``(wy, wx, wh, ww)`` multipliers of the four deltas.

    Returns:
      float32 ``[..., 4]`` deltas ``(dy, dx, dh, dw)``. Zero-area boxes (padding) give
      large negative but finite ``dh, dw`` (sizes are floored at 1e-8), never NaN/Inf;
      mask them out of the loss with the matcher's result.
    """
    boxes = _as_float32_boxes(boxes, "boxes")
    anchors = _as_float32_boxes(anchors, "anchors")
    wy, wx, wh, ww = tf.unstack(_as_weights(weights))
    cy, cx, h, w = tf.unstack(box_ops.yxyx_to_cyxhw(boxes), axis=-1)
    cya, cxa, ha, wa = tf.unstack(box_ops.yxyx_to_cyxhw(anchors), axis=-1)
    h = tf.maximum(h, _EPS)
    w = tf.maximum(w, _EPS)
    ha = tf.maximum(ha, _EPS)
    wa = tf.maximum(wa, _EPS)
    dy = wy * (cy - cya) / ha
    dx = wx * (cx - cxa) / wa
    dh = wh * tf.math.log(h / ha)
    dw = ww * tf.math.log(w / wa)
    return tf.stack([dy, dx, dh, dw], axis=-1)


def decode(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0), clamp=DEFAULT_CLAMP):
    """Boxes obtained by applying ``deltas`` to ``anchors`` (the inverse of :func:`encode`).

    Args:
      deltas: ``[..., 4]`` ``(dy, dx, dh, dw)``, e.g. a head's output ``[B, A, 4]``.
      anchors: ``[..., 4]`` ``[y1, x1, y2, x2]`` broadcastable against ``deltas``.
      weights: the ``(wy, wx, wh, ww)`` that :func:`encode` used.
      clamp: upper bound of ``dh / wh`` and ``dw / ww`` before ``exp`` (default
        ``log(1000 / 16)``); ``None`` disables it.

    Returns:
      float32 ``[..., 4]`` boxes ``[y1, x1, y2, x2]`` in the anchors' units, not clipped.
    """
    deltas = _as_float32_boxes(deltas, "deltas")
    anchors = _as_float32_boxes(anchors, "anchors")
    wy, wx, wh, ww = tf.unstack(_as_weights(weights))
    dy, dx, dh, dw = tf.unstack(deltas, axis=-1)
    dy = dy / wy
    dx = dx / wx
    dh = dh / wh
    dw = dw / ww
    if clamp is not None:
        dh = tf.minimum(dh, clamp)
        dw = tf.minimum(dw, clamp)
    cya, cxa, ha, wa = tf.unstack(box_ops.yxyx_to_cyxhw(anchors), axis=-1)
    cy = dy * ha + cya
    cx = dx * wa + cxa
    h = tf.exp(dh) * ha
    w = tf.exp(dw) * wa
    return box_ops.cyxhw_to_yxyx(tf.stack([cy, cx, h, w], axis=-1))


# --- grid cells (YOLO) -------------------------------------------------------------------
#
# YOLO places a box by the grid cell holding its centre: ``(oy, ox)``, the centre's offset
# inside that cell in [0, 1) (Redmon et al. 2016, sec. 2: "relative to the bounds of the
# grid cell"). YOLOv1 predicts the size directly in fractions of the image; YOLOv2/v3 as
# ``prior * exp(t)`` with the offset through a sigmoid (Redmon & Farhadi 2017, sec. 2,
# "Direct location prediction": b_x = sigmoid(t_x) + c_x, b_w = p_w e^{t_w}).


def cell_encode(boxes, grid_hw):
    """The cell holding each box's centre and the centre's offset inside it.

    The seed's ``normal_to_yolo_format`` for a box whose supporting cell is the one that
    holds its centre: ``new_y = (y - y1_cell) / cell_h``, ``new_x`` likewise.

    Args:
      boxes: ``[..., 4]`` normalized ``[y1, x1, y2, x2]``.
      grid_hw: ``(H, W)`` cells of the grid (ints or scalar tensors).

    Returns:
      ``(cells int32 [..., 2]`` (row, column), clamped to the grid so a centre on the
      image's last edge stays in the last cell, ``offsets float32 [..., 2]`` (oy, ox) in
      [0, 1])``.
    """
    boxes = _as_float32_boxes(boxes, "boxes")
    grid = tf.cast(tf.stack(grid_hw), tf.float32)  # [2]
    centers = (boxes[..., :2] + boxes[..., 2:]) / 2.0 * grid  # [..., 2] in cells
    cells = tf.clip_by_value(tf.floor(centers), 0.0, grid - 1.0)
    return tf.cast(cells, tf.int32), centers - cells


def cell_grid(rows, cols):
    """``[rows, cols, 2]`` float32 (row, column) of every cell of a grid (ints or scalar
    tensors: a grid whose size is known only when the graph runs)."""
    cells = tf.meshgrid(tf.range(rows), tf.range(cols), indexing="ij")
    return tf.cast(tf.stack(cells, axis=-1), tf.float32)


def cell_decode(offsets_yx, sizes_hw, cells_yx, grid_hw):
    """Boxes from cell offsets and sizes (the inverse of :func:`cell_encode`).

    Args:
      offsets_yx: ``[..., 2]`` centre offsets (oy, ox) inside the cells, in cells.
      sizes_hw: ``[..., 2]`` box (h, w) in fractions of the image.
      cells_yx: ``[..., 2]`` (row, column) of each cell (int or float), broadcastable.
      grid_hw: ``(H, W)`` cells of the grid.

    Returns:
      float32 ``[..., 4]`` normalized ``[y1, x1, y2, x2]``, not clipped.
    """
    grid = tf.cast(tf.stack(grid_hw), tf.float32)
    centers = (tf.cast(cells_yx, tf.float32) + tf.cast(offsets_yx, tf.float32)) / grid
    return box_ops.cyxhw_to_yxyx(tf.concat([centers, tf.cast(sizes_hw, tf.float32)], axis=-1))


def prior_encode(sizes_hw, priors_hw):
    """YOLOv2/v3's size targets ``(t_h, t_w) = log(size / prior)`` (sizes floored at 1e-8)."""
    sizes = tf.maximum(tf.cast(sizes_hw, tf.float32), _EPS)
    return tf.math.log(sizes / tf.maximum(tf.cast(priors_hw, tf.float32), _EPS))


def prior_decode(log_sizes_hw, priors_hw, clamp=DEFAULT_CLAMP):
    """``prior * exp(t)`` (the inverse of :func:`prior_encode`), ``t`` clamped at ``clamp``
    before ``exp`` as :func:`decode` clamps ``dh, dw``."""
    t = tf.cast(log_sizes_hw, tf.float32)
    if clamp is not None:
        t = tf.minimum(t, clamp)
    return tf.cast(priors_hw, tf.float32) * tf.exp(t)
