"""Anchors: grid anchors (RPN, FPN, RetinaNet), SSD default boxes, YOLO priors, k-means.

Conventions (tfzoo's, stated once in the README):

- Anchor sizes are in pixels of the model input; the functions that return normalized
  boxes say so and divide by the image size.
- Aspect ratio = height / width: a box of size ``s`` and ratio ``r`` has
  ``h = s * sqrt(r)`` and ``w = s / sqrt(r)`` (the seed's ``h = sub_sample * scale *
  sqrt(ratio)``), so ``ratio=2`` is a tall box.
- The centre of feature-map cell ``(i, j)`` at stride ``s`` is ``((i + 0.5) s, (j + 0.5) s)``.
- Order is location-major: for each row ``i``, each column ``j``, all ``A`` anchors of
  that cell. That is the order of a conv head's ``[B, H, W, A * 4]`` reshaped to
  ``[B, H * W * A, 4]``; levels are concatenated from the finest (``min_level``) up.

Shape legend: A anchors, L levels, H/W feature-map height/width, N boxes, K clusters.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfzoo.ops import boxes as box_ops

# --- base tables -----------------------------------------------------------------------


def _yxyx_from_hw(hw, center_y=0.0, center_x=0.0):
    """``[(h, w), ...]`` -> float32 ``[A, 4]`` boxes centred at ``(center_y, center_x)``."""
    hw = np.asarray(hw, np.float64).reshape(-1, 2)
    h, w = hw[:, 0], hw[:, 1]
    table = np.stack([center_y - h / 2.0, center_x - w / 2.0, center_y + h / 2.0, center_x + w / 2.0], axis=-1)
    return tf.constant(table, tf.float32)


def _hw(size, ratio):
    """(h, w) of a box of ``size`` and aspect ratio ``ratio`` = h / w (area ``size**2``)."""
    return size * math.sqrt(ratio), size / math.sqrt(ratio)


def anchor_base(base_size=16, ratios=(0.5, 1.0, 2.0), scales=(8, 16, 32)):
    """The anchors of one feature-map cell, in pixels, as the seed (Faster R-CNN) builds them.

    Row ``i * len(scales) + j`` has ratio ``ratios[i]`` and size ``base_size * scales[j]``
    (ratios outer, scales inner), centred at ``(base_size / 2, base_size / 2)``: the centre
    of cell ``(0, 0)`` when ``base_size`` is the stride. With the defaults this is the
    seed's 9-row table, row for row (first row ``[-37.254833, -82.50967, 53.254833,
    98.50967]``).

    Returns:
      float32 ``[A, 4]`` pixel ``[y1, x1, y2, x2]``, ``A = len(ratios) * len(scales)``.
    """
    hw = [_hw(base_size * scale, ratio) for ratio in ratios for scale in scales]
    return _yxyx_from_hw(hw, base_size / 2.0, base_size / 2.0)


def grid_anchors(feature_height, feature_width, stride, base_anchors_px):
    """Tiles ``base_anchors_px`` over a feature map, centres at ``(i + 0.5) * stride``.

    Only the shapes of ``base_anchors_px`` matter: each row is re-centred on every cell
    centre ``((i + 0.5) * stride_y, (j + 0.5) * stride_x)``. The seed's table from
    :func:`anchor_base` is centred at ``base_size / 2``, which is exactly the centre of cell
    ``(0, 0)`` when ``base_size == stride`` (the seed's 16 and 16), so the first ``A`` rows
    returned are that table unchanged, and cell ``(i, j)`` is it shifted by
    ``(i * stride, j * stride)`` (the seed's loop over centres). A 50x50 map with the 9
    seed anchors gives 22,500 anchors. (py-faster-rcnn centres at ``(base_size - 1) / 2``
    instead, half a pixel off; tfzoo does not.)

    Args:
      feature_height, feature_width: ``H``, ``W``; Python ints or scalar int tensors.
      stride: pixels per cell, a number or ``(stride_y, stride_x)``.
      base_anchors_px: ``[A, 4]`` pixel ``[y1, x1, y2, x2]`` (any centre).

    Returns:
      float32 ``[H * W * A, 4]`` pixel ``[y1, x1, y2, x2]``, location-major.
    """
    base = tf.cast(tf.convert_to_tensor(base_anchors_px), tf.float32)
    if base.shape.rank != 2 or base.shape[-1] != 4:
        raise ValueError(f"base_anchors_px must have shape [A, 4], got {base.shape}")
    stride_y, stride_x = (stride, stride) if np.ndim(stride) == 0 else tuple(stride)
    y1, x1, y2, x2 = tf.unstack(base, axis=-1)
    cy, cx = (y1 + y2) / 2.0, (x1 + x2) / 2.0
    offsets = tf.stack([y1 - cy, x1 - cx, y2 - cy, x2 - cx], axis=-1)  # [A, 4], centred at 0
    centers_y = (tf.range(feature_height, dtype=tf.float32) + 0.5) * tf.cast(stride_y, tf.float32)
    centers_x = (tf.range(feature_width, dtype=tf.float32) + 0.5) * tf.cast(stride_x, tf.float32)
    grid_y, grid_x = tf.meshgrid(centers_y, centers_x, indexing="ij")  # [H, W]
    centers = tf.stack([grid_y, grid_x, grid_y, grid_x], axis=-1)  # [H, W, 4]
    anchors = centers[:, :, None, :] + offsets[None, None, :, :]  # [H, W, A, 4]
    return tf.reshape(anchors, [-1, 4])  # [H * W * A, 4]


def _image_hw(image_size):
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or (height, width), got {image_size}")
        return image_size[0], image_size[1]
    return image_size, image_size


def _ceil_div(value, stride):
    """``ceil(value / stride)`` for Python ints or int tensors."""
    return (value + stride - 1) // stride


def feature_map_sizes(image_size, min_level=3, max_level=7):
    """``[(H_l, W_l), ...]`` for levels ``min_level..max_level``: ``ceil(image / 2**l)``."""
    height, width = _image_hw(image_size)
    return [(_ceil_div(height, 2**level), _ceil_div(width, 2**level)) for level in range(min_level, max_level + 1)]


def single_level_anchors(image_size, stride=16, ratios=(0.5, 1.0, 2.0), scales=(8, 16, 32)):
    """Faster R-CNN RPN anchors on one feature map, normalized to the image.

    The feature map is ``ceil(image / stride)`` cells; anchors are :func:`anchor_base`
    (``base_size = stride``) tiled by :func:`grid_anchors`. 800x800 at stride 16 gives the
    seed's 22,500 anchors.

    Returns:
      float32 ``[A, 4]`` normalized ``[y1, x1, y2, x2]`` (not clipped).
    """
    height, width = _image_hw(image_size)
    anchors_px = grid_anchors(
        _ceil_div(height, stride), _ceil_div(width, stride), stride, anchor_base(stride, ratios, scales)
    )
    return box_ops.normalize(anchors_px, height, width)


def anchor_sizes(min_level=3, max_level=7, anchor_scale=4.0, scales_per_octave=3):
    """RetinaNet anchor sizes in pixels, level by level: ``anchor_scale * 2**l * 2**(k / S)``.

    With the defaults: ``[32.0, 40.317, 50.797, 64.0, ..., 812.75]`` (the seed's list, 15
    sizes: 3 octave scales on each of P3-P7).
    """
    return [
        anchor_scale * 2.0**level * 2.0 ** (k / scales_per_octave)
        for level in range(min_level, max_level + 1)
        for k in range(scales_per_octave)
    ]


def multilevel_anchors(
    image_size, min_level=3, max_level=7, anchor_scale=4.0, scales_per_octave=3, ratios=(0.5, 1.0, 2.0)
):
    """FPN / RetinaNet anchors over levels ``min_level..max_level``, normalized to the image.

    Level ``l`` has stride ``2**l``, ``ceil(image / 2**l)`` cells per side, and at each cell
    ``scales_per_octave * len(ratios)`` anchors of size ``anchor_scale * 2**l * 2**(k/S)``
    (octave scales outer, ratios inner, as the seed's loop). RetinaNet at 640x640:
    ``8525 * 9 = 76,725`` anchors. FPN's Faster R-CNN anchors (one size 32..512 per level on
    P2-P6) are ``min_level=2, max_level=6, anchor_scale=8, scales_per_octave=1``.

    Args:
      image_size: int or ``(height, width)`` of the model input, in pixels.

    Returns:
      float32 ``[A, 4]`` normalized ``[y1, x1, y2, x2]`` (not clipped), finest level first.
    """
    height, width = _image_hw(image_size)
    per_level = []
    for level, (feature_height, feature_width) in zip(
        range(min_level, max_level + 1), feature_map_sizes(image_size, min_level, max_level)
    ):
        stride = 2**level
        hw = [
            _hw(anchor_scale * stride * 2.0 ** (k / scales_per_octave), ratio)
            for k in range(scales_per_octave)
            for ratio in ratios
        ]
        per_level.append(grid_anchors(feature_height, feature_width, stride, _yxyx_from_hw(hw)))
    anchors_px = tf.concat(per_level, axis=0)  # [A, 4]
    return box_ops.normalize(anchors_px, height, width)


ANCHOR_STYLES = ("exact", "torchvision")


def torchvision_multilevel_anchors(image_size, sizes_per_level, ratios=(0.5, 1.0, 2.0), min_level=3):
    """Grid anchors laid out as torchvision's ``AnchorGenerator`` lays them, for its weights.

    Three things differ from :func:`multilevel_anchors`: at each cell the anchors are
    ratio-major (``a = ratio_index * len(sizes) + size_index``); each anchor's half height
    and half width are rounded to whole pixels (float32, half to even, as ``torch.round``),
    so a 32-px anchor of ratio 0.5 is 22 x 46; cell ``(i, j)``'s anchors are centred on
    ``(i * s_y, j * s_x)`` (offset 0), ``s = image // cells`` in whole pixels. Level ``l``
    has ``ceil(image / 2**l)`` cells per side, as tfzoo's maps (torchvision's too when the
    input side is a multiple of 32).

    Args:
      image_size: int or ``(height, width)`` in pixels.
      sizes_per_level: per level from ``min_level`` up, the anchor sizes in pixels
        (torchvision's ``sizes``, e.g. RetinaNet's ``(32, 40, 50), (64, 80, 101), ...``).
      ratios: aspect ratios ``h / w``.

    Returns:
      float32 ``[A, 4]`` normalized ``[y1, x1, y2, x2]``, finest level first.
    """
    height, width = _image_hw(image_size)
    max_level = min_level + len(sizes_per_level) - 1
    h_ratios = np.sqrt(np.asarray(ratios, np.float32))
    w_ratios = np.float32(1.0) / h_ratios
    per_level = []
    for (rows, cols), sizes in zip(feature_map_sizes(image_size, min_level, max_level), sizes_per_level):
        scales = np.asarray(sizes, np.float32)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)  # [A], ratio-major
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        base = np.round(np.stack([-hs, -ws, hs, ws], axis=-1) / np.float32(2.0))  # [A, 4]
        ys = np.arange(rows, dtype=np.float32) * np.float32(height // rows)
        xs = np.arange(cols, dtype=np.float32) * np.float32(width // cols)
        grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
        shifts = np.stack([grid_y, grid_x, grid_y, grid_x], axis=-1).reshape(-1, 1, 4)
        per_level.append((shifts + base[None]).reshape(-1, 4))
    anchors_px = tf.constant(np.concatenate(per_level, axis=0), tf.float32)
    return box_ops.normalize(anchors_px, height, width)


def torchvision_sizes(min_level, max_level, anchor_scale, scales_per_octave):
    """torchvision's integer anchor sizes per level: ``int(anchor_scale * 2**l * 2**(k / S))``
    (RetinaNet's ``(32, 40, 50), (64, 80, 101), ..., (512, 645, 812)``)."""
    return [tuple(int(anchor_scale * 2.0**level * 2.0 ** (k / scales_per_octave)) for k in range(scales_per_octave))
            for level in range(min_level, max_level + 1)]


# --- SSD ---------------------------------------------------------------------------------


def ssd_scales(num_layers=6, s_min=0.2, s_max=0.9):
    """SSD's ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)``, ``k = 1..m``, plus ``1.0``.

    The extra last entry ``s_{m+1} = 1.0`` is used only by the last layer's
    ``sqrt(s_m * s_{m+1})`` box (the paper leaves it unspecified; 1.0 is the TF Object
    Detection API's choice).
    """
    if num_layers == 1:
        return [s_min, 1.0]
    return [s_min + (s_max - s_min) * k / (num_layers - 1) for k in range(num_layers)] + [1.0]


def ssd_default_boxes(
    feature_sizes=(38, 19, 10, 5, 3, 1),
    s_min=0.2,
    s_max=0.9,
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    scales=None,
    clip=False,
    steps=None,
    clip_sizes=False,
):
    """SSD default boxes (Liu et al. 2016, section 2.2), normalized ``[y1, x1, y2, x2]``.

    On layer ``k`` (an ``f x f`` map) each cell centre ``((i + 0.5) / f, (j + 0.5) / f)``
    has, in this order: a box of ratio 1 and size ``s_k``, one of ratio 1 and size
    ``sqrt(s_k s_{k+1})``, then for each ``r`` in ``aspect_ratios[k]`` a box of ratio ``r``
    and one of ratio ``1 / r`` (size ``s_k``). Ratios are height / width (tfzoo's
    convention; the paper's ``a_r`` is width / height, so each pair is the same set of
    boxes in swapped order). Defaults are SSD300's: ``[4, 6, 6, 6, 4, 4]`` boxes per cell,
    8732 in all. SSD512: ``feature_sizes=(64, 32, 16, 8, 4, 2, 1)``,
    ``s_min=0.1`` (or explicit ``scales``) and seven ``aspect_ratios`` entries.

    Args:
      feature_sizes: per layer, an int ``f`` or ``(f_h, f_w)``.
      s_min, s_max: scale range of :func:`ssd_scales`.
      aspect_ratios: per layer, the extra ratios ``r`` (each adds ``r`` and ``1 / r``).
      scales: optional explicit ``m + 1`` scales overriding ``s_min``/``s_max`` (e.g. the
        Caffe SSD300 sizes ``(30, 60, 111, 162, 213, 264, 315) / 300``).
      clip: clip the boxes to [0, 1].
      steps: optional per layer, the cell pitch as a fraction of the image (torchvision's
        SSD300: ``(8, 16, 32, 64, 100, 300) / 300``): cell ``(i, j)`` is centred at
        ``((i + 0.5) * step, (j + 0.5) * step)`` instead of ``(i + 0.5) / f``.
      clip_sizes: clamp each box's height and width to at most 1, keeping its centre
        (torchvision's ``DefaultBoxGenerator(clip=True)``; only the last map's wide and tall
        boxes of SSD300 change, 1.23 to 1.0).

    Returns:
      float32 ``[A, 4]`` normalized ``[y1, x1, y2, x2]``.
    """
    num_layers = len(feature_sizes)
    if len(aspect_ratios) != num_layers:
        raise ValueError(f"need one aspect_ratios entry per layer: {len(aspect_ratios)} != {num_layers}")
    scales = ssd_scales(num_layers, s_min, s_max) if scales is None else list(scales)
    if len(scales) != num_layers + 1:
        raise ValueError(f"scales must have len(feature_sizes) + 1 = {num_layers + 1} entries, got {len(scales)}")
    per_layer = []
    for k, (size, ratios) in enumerate(zip(feature_sizes, aspect_ratios)):
        f_h, f_w = (size, size) if np.ndim(size) == 0 else tuple(size)
        hw = [_hw(scales[k], 1.0), _hw(math.sqrt(scales[k] * scales[k + 1]), 1.0)]
        for r in ratios:
            hw += [_hw(scales[k], r), _hw(scales[k], 1.0 / r)]
        if clip_sizes:
            hw = [(min(h, 1.0), min(w, 1.0)) for h, w in hw]
        pitch = (1.0 / f_h, 1.0 / f_w) if steps is None else (float(steps[k]), float(steps[k]))
        per_layer.append(grid_anchors(f_h, f_w, pitch, _yxyx_from_hw(hw)))
    default_boxes = tf.concat(per_layer, axis=0)  # [A, 4]
    return box_ops.clip(default_boxes) if clip else default_boxes


# --- YOLO priors -------------------------------------------------------------------------

#: YOLOv2 VOC priors (yolo-voc.cfg), in grid cells of the 13x13 map (stride 32 at 416).
#: Darknet lists them as (w, h); stored here as (h, w), tfzoo's order.
YOLOV2_VOC_PRIORS_HW = (
    (1.73145, 1.3221),
    (4.00944, 3.19275),
    (8.09892, 5.05587),
    (4.84053, 9.47112),
    (10.0071, 11.2364),
)

#: YOLOv3 COCO priors in pixels at 416x416. The paper lists (w, h) = (10, 13), (16, 30),
#: (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326); stored here
#: as (h, w), tfzoo's order.
YOLOV3_COCO_PRIORS_HW_PX = (
    (13, 10),
    (30, 16),
    (23, 33),
    (61, 30),
    (45, 62),
    (119, 59),
    (90, 116),
    (198, 156),
    (326, 373),
)
#: Which YOLOv3 priors each output uses: strides 32 (13x13), 16 (26x26), 8 (52x52).
YOLOV3_MASKS = ((6, 7, 8), (3, 4, 5), (0, 1, 2))


def yolo_prior_boxes(map_sizes, priors_hw, masks):
    """YOLOv2/v3's priors laid on their grids: ``[A, 4]`` normalized boxes of each prior's
    size centred on every cell, location-major then prior (the order of the heads' outputs
    flattened: map by map, row by row, cell by cell, prior by prior).

    Args:
      map_sizes: ``[(h, w)]`` of the output grids (13 x 13 at 416 for stride 32).
      priors_hw: ``[P, 2]`` prior sizes ``(h, w)`` in fractions of the input side.
      masks: per map, the indices of the priors it predicts with (YOLOv3's
        :data:`YOLOV3_MASKS`; YOLOv2: every prior on its one map).

    Returns:
      float32 ``[sum_k h_k * w_k * len(masks[k]), 4]``: 10,647 rows for YOLOv3 at 416
      (13, 26 and 52 squared, times 3), 845 for YOLOv2 (13 x 13 x 5).
    """
    if len(map_sizes) != len(masks):
        raise ValueError(f"one prior mask per map: {len(masks)} masks for {len(map_sizes)} maps")
    priors = np.asarray(priors_hw, np.float32).reshape(-1, 2)
    per_map = []
    for (f_h, f_w), mask in zip(map_sizes, masks):
        sizes = tf.constant(priors[list(mask)], tf.float32)  # [P_k, 2]
        per_map.append(grid_anchors(f_h, f_w, (1.0 / f_h, 1.0 / f_w), _centred_boxes(sizes)))
    return tf.concat(per_map, axis=0)  # [A, 4]


def shape_iou(sizes_a_hw, sizes_b_hw):
    """IoU of box sizes aligned at a common centre, ``[N, 2]`` x ``[M, 2]`` -> ``[N, M]``:
    how YOLOv2's k-means compares boxes and how YOLOv2/v3 pick each object's prior."""
    return box_ops.iou(_centred_boxes(tf.cast(sizes_a_hw, tf.float32)),
                       _centred_boxes(tf.cast(sizes_b_hw, tf.float32)))


def _centred_boxes(sizes_hw):
    """``[..., 2]`` (h, w) -> ``[..., 4]`` boxes centred at the origin."""
    half = sizes_hw / 2.0
    return tf.concat([-half, half], axis=-1)


def kmeans_priors(box_sizes_hw, k, iterations=100, seed=0):
    """YOLOv2's dimension clusters: k-means on box sizes with distance ``1 - IoU``.

    Boxes are compared by size only, aligned at a common centre (``boxes.iou`` on boxes
    centred at the origin). Centres start by k-means++ seeding (stateless, from ``seed``),
    then alternate assignment to the highest-IoU centre and the mean (h, w) of each
    cluster; an empty cluster keeps its centre. Stops after ``iterations`` or when
    assignments stop changing. Graph-safe (a ``tf.while_loop``); loops only over ``k``.

    Args:
      box_sizes_hw: ``[N, 2]`` ground-truth (h, w), any units (pixels, normalized, cells).
      k: number of priors ``K``.
      iterations: maximum number of Lloyd iterations.
      seed: int seed of the initialization.

    Returns:
      ``(priors [K, 2] float32 (h, w) in the input units, sorted by area ascending,
      mean_iou [] float32)``: the mean over boxes of the IoU with their best prior.
    """
    sizes = tf.cast(tf.reshape(box_sizes_hw, [-1, 2]), tf.float32)  # [N, 2]
    num = tf.shape(sizes)[0]

    # k-means++ initialization: each next centre drawn with probability ~ distance**2.
    first = tf.random.stateless_uniform([], seed=[seed, 0], maxval=num, dtype=tf.int32)
    centers = tf.gather(sizes, first)[None]  # [1, 2]
    for c in range(1, k):
        distance = 1.0 - tf.reduce_max(shape_iou(sizes, centers), axis=-1)  # [N]
        logits = tf.math.log(tf.square(distance) + 1e-12)
        pick = tf.random.stateless_categorical(logits[None], 1, seed=[seed, c], dtype=tf.int32)[0, 0]
        centers = tf.concat([centers, tf.gather(sizes, pick)[None]], axis=0)  # [c + 1, 2]

    def assign(centers):
        return tf.argmax(shape_iou(sizes, centers), axis=-1, output_type=tf.int32)  # [N]

    def body(step, centers, assignment, _):
        means = tf.math.unsorted_segment_mean(sizes, assignment, k)  # [K, 2]
        counts = tf.math.unsorted_segment_sum(tf.ones_like(assignment), assignment, k)  # [K]
        centers = tf.where(counts[:, None] > 0, means, centers)
        new_assignment = assign(centers)
        changed = tf.reduce_any(new_assignment != assignment)
        return step + 1, centers, new_assignment, changed

    def cond(step, centers, assignment, changed):
        return (step < iterations) & changed

    centers.set_shape([k, 2])
    _, centers, _, _ = tf.while_loop(cond, body, (tf.constant(0), centers, assign(centers), tf.constant(True)))
    order = tf.argsort(centers[:, 0] * centers[:, 1])
    priors = tf.gather(centers, order)  # [K, 2]
    mean_iou = tf.reduce_mean(tf.reduce_max(shape_iou(sizes, priors), axis=-1))
    return priors, mean_iou
