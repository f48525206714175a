"""RoI pooling (Fast R-CNN), a builtins-only bilinear crop, and spatial pyramid pooling.

RoI pooling samples each RoI on a regular grid of ``output_size * sampling_ratio`` points
with bilinear interpolation and max-pools every ``sampling_ratio x sampling_ratio`` block:
max pooling in each sub-window of size about ``h / H x w / W`` (Fast R-CNN), with the
sub-windows sampled rather than snapped to integer cells. Two implementations give the same
numbers:

- :func:`roi_pool` uses ``tf.image.crop_and_resize`` (fast; not a TFLite builtin);
- :func:`roi_pool_builtin` uses :func:`crop_and_resize_builtin`, which is made of
  ``GATHER``, ``FLOOR``, ``SELECT`` and arithmetic only, so it converts to TFLite with
  ``TFLITE_BUILTINS`` alone.

Layers choose with :func:`use_builtin_crops`: the builtin path inside :func:`builtin_crops`
(the TFLite export traces there), ``crop_and_resize`` everywhere else. Pyramid levels
(:func:`multilevel_roi_pool`) are read in one pass on either path.

**Sampling points (aligned, as RoIAlign with ``aligned=True``).** RoIs are canonical boxes,
normalized to the map's *edges*: ``0`` is the top edge of the first row, ``1`` the bottom
edge of the last. A crop of ``n`` rows over ``[y1, y2]`` on a map of height ``H`` samples
the centres of ``n`` equal cells of the RoI: row ``j`` at pixel index
``y1 * H + (j + 0.5) * (y2 - y1) * H / n - 0.5`` (pixel ``k``'s centre is index ``k``);
likewise for x. A point within half a pixel outside the map (index in ``[-1, 0)`` or
``(H - 1, H]``) reads the border pixel; one further out reads 0. Both implementations get
there from ``crop_and_resize``'s own rule (normalized ``0`` and ``1`` at the first and last
pixel *centres*: used as they are, every RoI shrank by ``(H - 1) / H`` and moved by up to
half a pixel) by padding the map with its border pixels and converting the RoIs
(:func:`_aligned_crop_boxes`).

:func:`crop_and_resize_builtin` itself reproduces ``tf.image.crop_and_resize`` exactly (for
an RoI ``[y1, x1, y2, x2]`` normalized to the sample grid and ``crop_h > 1``, row ``i``
samples ``y = y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (crop_h - 1)``; ``crop_h == 1``
samples ``0.5 * (y1 + y2) * (H - 1)``; a point outside ``[0, H - 1]`` reads 0).

Spatial pyramid pooling (He et al. 2014): an ``a x a`` map pooled to ``n x n`` bins with
window ``ceil(a / n)`` and stride ``floor(a / n)`` (:func:`spp_bins`). That rule does not
always give ``n`` bins (``a = 7, n = 4``: window 2, stride 1, 6 bins), so the pooling uses
the adaptive rule of :func:`spp_bin_edges` (bin ``i`` covers
``[floor(i * a / n), ceil((i + 1) * a / n))``), which gives exactly ``n`` bins for every
``a >= 1`` and the same windows as the paper's rule on the seed's sizes (13 and 10 for
``n = 3, 2, 1``).

Shape legend: B batch, R RoIs, C channels, H/W feature-map height/width, L levels.
"""
from __future__ import annotations

import contextlib
import math
import threading

import tensorflow as tf


_TRACING = threading.local()


@contextlib.contextmanager
def _tracing(flag):
    """Counts this thread's nesting in the tracing context ``flag`` while inside."""
    setattr(_TRACING, flag, getattr(_TRACING, flag, 0) + 1)
    try:
        yield
    finally:
        setattr(_TRACING, flag, getattr(_TRACING, flag) - 1)


def builtin_crops():
    """``with builtin_crops(): ...``: layers that pick their crop path with
    :func:`use_builtin_crops` trace the TFLite-builtin one inside (the TFLite export enters
    it); everywhere else they use ``crop_and_resize``, the faster one in TensorFlow."""
    return _tracing("depth")


def use_builtin_crops():
    """Whether the code being traced runs inside :func:`builtin_crops`."""
    return getattr(_TRACING, "depth", 0) > 0


def unrolled_chunks():
    """``with unrolled_chunks(): ...``: layers that run RoIs through a network in chunks
    (R-CNN's windows) lay the chunks out one after another in the graph being traced instead
    of a ``while`` loop (the int8 TFLite export enters it: its calibration cannot run a
    ``WHILE`` that holds convolutions)."""
    return _tracing("unrolled")


def use_unrolled_chunks():
    """Whether the code being traced runs inside :func:`unrolled_chunks`."""
    return getattr(_TRACING, "unrolled", 0) > 0


def _check_inputs(features, rois):
    features = tf.convert_to_tensor(features)
    rois = tf.cast(tf.convert_to_tensor(rois), tf.float32)
    if features.shape.rank != 4:
        raise ValueError(f"features must have shape [B, H, W, C], got {features.shape}")
    if rois.shape.rank != 3 or rois.shape[-1] not in (4, None):
        raise ValueError(f"rois must have shape [B, R, 4], got {rois.shape}")
    return features, rois


def _pair(size, name):
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {size}")
    return size


def _ratio(sampling_ratio):
    if int(sampling_ratio) != sampling_ratio or sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be a positive int, got {sampling_ratio}")
    return int(sampling_ratio)


# --- RoI pooling --------------------------------------------------------------------


POOL_MODES = ("max", "avg")


def roi_pool(features, rois, output_size=(7, 7), sampling_ratio=2, mode="max"):
    """RoI max pooling via ``tf.image.crop_and_resize`` (``mode="avg"``: the mean of each
    bin's samples, as RoIAlign).

    Args:
      features: ``[B, H, W, C]`` feature map.
      rois: ``[B, R, 4]`` RoIs ``[y1, x1, y2, x2]`` normalized to the feature map's edges
        (the same as to the image when the map covers the whole image); sampled at the
        aligned points of the module docstring.
      output_size: ``(out_h, out_w)`` bins per RoI (int for square).
      sampling_ratio: int ``s``; each bin is the max of ``s x s`` bilinear samples.
      mode: ``"max"`` or ``"avg"`` (the mean of the bin's samples).

    Returns:
      ``[B, R, out_h, out_w, C]``, dtype of ``features``.
    """
    return _roi_pool(features, rois, output_size, sampling_ratio, builtin=False, mode=mode)


def _roi_pool(features, rois, output_size, sampling_ratio, builtin, mode="max"):
    features, rois = _check_inputs(features, rois)
    (out_h, out_w), s = _pair(output_size, "output_size"), _ratio(sampling_ratio)
    crops = aligned_crops(features, rois, (out_h * s, out_w * s), builtin=builtin)  # [B, R, oh*s, ow*s, C]
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = features.shape[-1] if features.shape[-1] is not None else tf.shape(features)[-1]
    crops = tf.reshape(crops, [-1, out_h * s, out_w * s, channels])  # [B * R, oh*s, ow*s, C]
    return _max_pool_crops(crops, batch, num_rois, out_h, out_w, s, features, mode)


def aligned_crops(features, rois, crop_size, builtin=False):
    """Bilinear crops of each RoI at the aligned sample points of the module docstring.

    Args:
      features: ``[B, H, W, C]``.
      rois: ``[B, R, 4]`` normalized ``[y1, x1, y2, x2]`` (to the map's edges); RoIs of
        image ``b`` read ``features[b]``.
      crop_size: ``(crop_h, crop_w)`` (int for square).
      builtin: True uses :func:`crop_and_resize_builtin` (TFLite builtins only), False
        ``tf.image.crop_and_resize``; the same numbers to float rounding.

    Returns:
      ``[B, R, crop_h, crop_w, C]`` float32.
    """
    features, rois = _check_inputs(features, rois)
    crop_h, crop_w = _pair(crop_size, "crop_size")
    padded, boxes = _aligned_crop_boxes(features, rois, crop_h, crop_w)
    if builtin:
        return crop_and_resize_builtin(padded, boxes, (crop_h, crop_w))
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = features.shape[-1] if features.shape[-1] is not None else tf.shape(features)[-1]
    crops = tf.image.crop_and_resize(
        padded,
        tf.reshape(boxes, [-1, 4]),  # [B * R, 4]
        tf.repeat(tf.range(batch), num_rois),  # [B * R]
        crop_size=(crop_h, crop_w),
        method="bilinear",
        extrapolation_value=0.0,
    )  # [B * R, crop_h, crop_w, C]
    return tf.reshape(crops, [batch, num_rois, crop_h, crop_w, channels])


def fpn_levels(rois, image_size, min_level=2, max_level=5, canonical_level=4, canonical_size=224.0, eps=0.0):
    """The pyramid level each RoI is pooled from (Lin et al. 2017, eq. 1):
    ``k = floor(k0 + log2(sqrt(w h) / 224) + eps)``, clamped to ``[min_level, max_level]``
    (torchvision's ``MultiScaleRoIAlign`` adds ``eps = 1e-6``: a RoI of exactly 112 px goes
    to level 3 there, not to 2 as float rounding may send it).

    ``rois [..., 4]`` normalized; ``image_size`` ``(height, width)`` in pixels (w and h are
    the RoI's in pixels). An empty RoI goes to ``min_level``. Returns int32 ``[...]``.
    """
    height, width = (image_size, image_size) if isinstance(image_size, (int, float)) else image_size
    y1, x1, y2, x2 = tf.unstack(tf.cast(rois, tf.float32), axis=-1)
    side = tf.sqrt(tf.maximum(y2 - y1, 0.0) * float(height) * tf.maximum(x2 - x1, 0.0) * float(width))
    level = tf.floor(canonical_level + tf.math.log(tf.maximum(side, 1e-6) / canonical_size) / tf.math.log(2.0) + eps)
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)


def multilevel_aligned_crops(features_by_level, rois, levels, crop_size, builtin=False):
    """:func:`aligned_crops` of each RoI from its own pyramid level, in one pass.

    ``features_by_level``: list of ``[B, H_l, W_l, C]`` maps with static heights and widths,
    level ``min_level`` first; ``levels``: int ``[B, R]`` indices into that list (e.g.
    ``fpn_levels(...) - min_level``). Each RoI's samples are read on its own level only,
    with static shapes: ``builtin=False`` lays the levels' padded maps side by side on one
    canvas and crops every RoI from it with one ``tf.image.crop_and_resize`` (the fast path
    in TensorFlow); ``builtin=True`` reads the four neighbours of every sample from one table
    of rows (:func:`level_table`, :func:`level_crop_plan`, :func:`read_crop_plan`; TFLite
    builtins only). A sample outside its own level (beyond the half pixel of the module
    docstring) reads 0 on both paths, never a neighbouring level. Both give
    :func:`aligned_crops`' numbers to float rounding. Returns ``[B, R, crop_h, crop_w, C]``
    float32.
    """
    crop_h, crop_w = _pair(crop_size, "crop_size")
    rois = tf.cast(tf.convert_to_tensor(rois), tf.float32)
    maps = [tf.convert_to_tensor(f) for f in features_by_level]
    sizes = static_map_sizes(maps)
    channels = maps[0].shape[-1] if maps[0].shape[-1] is not None else tf.shape(maps[0])[-1]
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    if builtin:
        indices, weights = level_crop_plan(sizes, rois, levels, (crop_h, crop_w))
        crops = read_crop_plan(level_table(maps), indices, weights)
    else:
        ys, xs, height, width = _level_points(sizes, rois, levels, (crop_h, crop_w))
        crops = _canvas_level_crops([_pad_with_border(f) for f in maps], sizes, levels, batch, num_rois, ys, xs,
                                    height, width, (crop_h, crop_w))
    return tf.reshape(crops, [batch, num_rois, crop_h, crop_w, channels])


def unaligned_rois(rois, sizes, levels=None):
    """RoIs that, sampled at this module's aligned points, give RoIAlign's ``aligned=False``
    points (torchvision's ``MultiScaleRoIAlign``, Detectron's original RoIAlign): there row
    ``j`` of ``n`` over ``[y1, y2]`` on a map of ``H`` rows is at ``y1 * H + (j + 0.5) *
    max((y2 - y1) * H, 1) / n``, no half-pixel shift and a RoI at least one cell high; so
    each edge moves by ``0.5 / H`` and the side grows to at least ``1 / H`` (likewise for x).

    ``rois [B, R, 4]`` normalized to the maps' edges; ``sizes``: the maps' static ``(H, W)``
    (one map, or a pyramid's levels with ``levels [B, R]`` indices into them)."""
    rois = tf.cast(rois, tf.float32)
    if levels is None:
        levels = tf.zeros_like(rois[..., 0], tf.int32)
    height = _per_roi([float(h) for h, _ in sizes], tf.float32, levels)
    width = _per_roi([float(w) for _, w in sizes], tf.float32, levels)
    y1, x1, y2, x2 = tf.unstack(rois, axis=-1)
    y1, x1 = y1 + 0.5 / height, x1 + 0.5 / width
    return tf.stack([y1, x1, y1 + tf.maximum(y2 - rois[..., 0], 1.0 / height),
                     x1 + tf.maximum(x2 - rois[..., 1], 1.0 / width)], axis=-1)


def static_map_sizes(maps):
    """The static ``(H, W)`` of each ``[B, H, W, C]`` map (the builtin crop's table needs them)."""
    sizes = [(f.shape[1], f.shape[2]) for f in maps]
    if any(h is None or w is None for h, w in sizes):
        raise ValueError(f"multilevel crops need static map sizes, got {sizes}")
    return sizes


def _per_roi(values, dtype, levels):
    return tf.gather(tf.constant(values, dtype), levels)  # [B, R]


def _level_points(sizes, rois, levels, crop_size):
    """Each RoI's aligned sample points on its own level's padded map (rows ``[B, R, ch]``,
    columns ``[B, R, cw]``) and that level's height and width ``[B, R]``."""
    height = _per_roi([float(h) for h, _ in sizes], tf.float32, levels)
    width = _per_roi([float(w) for _, w in sizes], tf.float32, levels)
    y1, x1, y2, x2 = tf.unstack(rois, axis=-1)  # [B, R] each
    return (_aligned_points(y1, y2, height, crop_size[0]), _aligned_points(x1, x2, width, crop_size[1]),
            height, width)


def level_table(features_by_level):
    """The builtin crop's table of rows: each level's map padded by its border pixels
    (:func:`_pad_with_border`), flattened and stacked level by level then image by image:
    float32 ``[sum_l B (H_l + 2) (W_l + 2), C]``. Holds no coordinates, so an int8 TFLite
    export keeps it (and the reads of :func:`read_crop_plan`) in int8."""
    channels = features_by_level[0].shape[-1]
    channels = channels if channels is not None else tf.shape(features_by_level[0])[-1]
    return tf.concat([tf.reshape(_pad_with_border(f), [-1, channels]) for f in features_by_level], axis=0)


def level_crop_plan(sizes, rois, levels, crop_size):
    """Where the builtin crop reads: for the ``N = B * R * crop_h * crop_w`` aligned samples
    of each RoI on its own level (``sizes``: the levels' static ``(H_l, W_l)``; ``rois [B, R,
    4]``; ``levels`` int ``[B, R]``), the rows of :func:`level_table` holding their four
    bilinear neighbours and the neighbours' weights (0 for a sample outside its level):
    ``(indices, weights)``, lists of four int32 ``[N]`` and four float32 ``[N, 1]`` (lists,
    not stacked tensors: an int8 export must not unstack them in its int8 part). All the
    coordinate arithmetic of the crop is here (keep it float32); :func:`read_crop_plan`
    does the rest."""
    rois = tf.cast(rois, tf.float32)
    batch = tf.shape(rois)[0]
    ys, xs, _, _ = _level_points(sizes, rois, levels, _pair(crop_size, "crop_size"))
    cells = [(h + 2) * (w + 2) for h, w in sizes]  # rows of one image's padded map per level
    firsts = [sum(cells[:i]) for i in range(len(cells))]  # a level's first row, in units of B images
    padded_height = _per_roi([h + 2 for h, _ in sizes], tf.int32, levels)[..., None]  # [B, R, 1]
    padded_width = _per_roi([w + 2 for _, w in sizes], tf.int32, levels)[..., None]
    start = batch * _per_roi(firsts, tf.int32, levels) + tf.range(batch)[:, None] * _per_roi(cells, tf.int32, levels)

    def index(rows, cols):  # rows [B, R, ch, 1], cols [B, R, 1, cw]
        return tf.reshape(start[..., None, None] + rows * padded_width[..., None] + cols, [-1])

    return _bilinear_plan(index, _lerp_indices(ys, padded_height), _lerp_indices(xs, padded_width))


def read_crop_plan(table, indices, weights):
    """The bilinear samples of a crop plan (:func:`level_crop_plan`): the four neighbours'
    rows of ``table [rows, C]`` weighted and summed, ``[N, C]`` (the caller reshapes). Only
    gathers and elementwise products and sums of same-shape ``[N, C]`` tensors by ``[N, 1]``
    weights: in an int8 TFLite export these run in int8, a quarter of the float32 bytes."""
    reads = [tf.gather(table, i) * w for i, w in zip(indices, weights)]
    return (reads[0] + reads[1]) + (reads[2] + reads[3])


def _canvas_level_crops(padded, sizes, levels, batch, num_rois, ys, xs, height, width, crop_size):
    """The TensorFlow path of :func:`multilevel_aligned_crops`: the padded maps side by side
    on one canvas (zeros below the shorter ones), one ``crop_and_resize`` over it, and the
    samples outside their own level's padded map set to 0."""
    canvas_h = max(h for h, _ in sizes) + 2
    canvas = tf.concat([tf.pad(p, [[0, 0], [0, canvas_h - (h + 2)], [0, 0], [0, 0]])
                        for p, (h, _) in zip(padded, sizes)], axis=2)  # [B, canvas_h, canvas_w, C]
    canvas_w = sum(w + 2 for _, w in sizes)
    offset = _per_roi([float(sum(w + 2 for _, w in sizes[:i])) for i in range(len(sizes))], tf.float32, levels)
    boxes = tf.stack([ys[..., 0] / (canvas_h - 1.0), (xs[..., 0] + offset) / (canvas_w - 1.0),
                      ys[..., -1] / (canvas_h - 1.0), (xs[..., -1] + offset) / (canvas_w - 1.0)], axis=-1)
    crops = tf.image.crop_and_resize(canvas, tf.reshape(boxes, [-1, 4]), tf.repeat(tf.range(batch), num_rois),
                                     crop_size=crop_size, method="bilinear", extrapolation_value=0.0)
    crop_h, crop_w = crop_size
    crops = tf.reshape(crops, [batch, num_rois, crop_h, crop_w, -1])
    y_in = (ys >= 0.0) & (ys <= (height + 1.0)[..., None])  # [B, R, ch]
    x_in = (xs >= 0.0) & (xs <= (width + 1.0)[..., None])  # [B, R, cw]
    inside = y_in[:, :, :, None] & x_in[:, :, None, :]  # [B, R, ch, cw]
    # RoIs inside the image (clipped proposals, ground truth) have every sample inside: the
    # full-size select is skipped then.
    return tf.cond(tf.reduce_all(inside), lambda: crops, lambda: tf.where(inside[..., None], crops, 0.0))


def multilevel_roi_pool(features_by_level, rois, levels, output_size=(7, 7), sampling_ratio=2, builtin=False,
                        mode="max"):
    """:func:`roi_pool` with each RoI read from its own pyramid level (``levels [B, R]``
    indices into ``features_by_level``, see :func:`multilevel_aligned_crops`): the
    ``output_size * sampling_ratio`` aligned samples of each RoI, max-pooled (or, with
    ``mode="avg"``, averaged) per cell.
    Returns ``[B, R, out_h, out_w, C]`` in the maps' dtype."""
    out_h, out_w = _pair(output_size, "output_size")
    s = _ratio(sampling_ratio)
    crops = multilevel_aligned_crops(features_by_level, rois, levels, (out_h * s, out_w * s), builtin=builtin)
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = features_by_level[0].shape[-1]
    crops = tf.reshape(crops, [batch * num_rois, out_h * s, out_w * s, channels])
    return _max_pool_crops(crops, batch, num_rois, out_h, out_w, s, features_by_level[0], mode)


def _pad_with_border(features):
    """float32 ``[B, H + 2, W + 2, C]``: the map with its border rows and columns repeated
    once (``tf.pad``'s "SYMMETRIC" mode by 1, from slices and concatenations: about half
    MirrorPad's time on CPU)."""
    features = tf.cast(features, tf.float32)
    rows = tf.concat([features[:, :1], features, features[:, -1:]], axis=1)
    return tf.concat([rows[:, :, :1], rows, rows[:, :, -1:]], axis=2)


def _aligned_crop_boxes(features, rois, crop_h, crop_w):
    """The map padded by its border pixels (float32 ``[B, H + 2, W + 2, C]``) and the RoIs
    converted so that ``crop_and_resize``'s rule on it samples the aligned points of the
    module docstring: ``[B, R, 4]``.

    Aligned row ``j`` of a crop of ``n`` over ``[y1, y2]`` is at index
    ``y1 * H + (j + 0.5) * (y2 - y1) * H / n - 0.5``, ``+ 1`` on the padded map, whose
    ``crop_and_resize`` rule samples ``start * (H + 1) + j * (end - start) * (H + 1) / (n - 1)``:
    so ``start`` and ``end`` are the first and last aligned points divided by ``H + 1``
    (with ``n == 1`` both are the one point, which the rule's centre then samples).
    """
    padded = _pad_with_border(features)
    shape = tf.shape(features)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    y1, x1, y2, x2 = tf.unstack(rois, axis=-1)  # [B, R] each

    ys, xs = _aligned_points(y1, y2, height, crop_h), _aligned_points(x1, x2, width, crop_w)
    return padded, tf.stack([ys[..., 0] / (height + 1.0), xs[..., 0] / (width + 1.0),
                             ys[..., -1] / (height + 1.0), xs[..., -1] / (width + 1.0)], axis=-1)


def _aligned_points(low, high, size, crop):
    """The ``crop`` aligned sample points over ``[low, high]`` (normalized; the module
    docstring's rule) as indices on the border-padded map of ``size`` rows or columns:
    ``[..., crop]`` for ``low``, ``high`` and ``size`` broadcastable to ``[...]``."""
    cell = (high - low) * size / float(crop)
    steps = tf.range(crop, dtype=tf.float32) + 0.5  # [crop]
    return (low * size - 0.5 + 1.0)[..., None] + steps * cell[..., None]


def _max_pool_crops(crops, batch, num_rois, out_h, out_w, s, features, mode="max"):
    return tf.cast(max_pool_crops(crops, batch, num_rois, out_h, out_w, s, mode), features.dtype)


def max_pool_crops(crops, batch, num_rois, out_h, out_w, s, mode="max"):
    """RoI pooling of aligned crops ``[B * R, out_h * s, out_w * s, C]``: the max (``mode=
    "avg"``: the mean, RoIAlign's) of every ``s x s`` block, ``[B, R, out_h, out_w, C]``."""
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
    if s > 1:
        pool = tf.nn.max_pool2d if mode == "max" else tf.nn.avg_pool2d
        crops = pool(crops, ksize=s, strides=s, padding="VALID")
    channels = crops.shape[-1] if crops.shape[-1] is not None else tf.shape(crops)[-1]
    return tf.reshape(crops, [batch, num_rois, out_h, out_w, channels])


def _sample_coords(start, end, size, crop):
    """crop_and_resize's sample coordinates: ``[B, R]`` edges -> ``[B, R, crop]`` pixels."""
    size_m1 = tf.cast(size - 1, tf.float32)
    if crop > 1:
        scale = (end - start) * size_m1 / float(crop - 1)  # [B, R]
        steps = tf.range(crop, dtype=tf.float32)  # [crop]
        return start[..., None] * size_m1 + steps * scale[..., None]  # [B, R, crop]
    return (0.5 * (start + end) * size_m1)[..., None]  # [B, R, 1]


def _lerp_indices(coords, size):
    """Floor/ceil integer rows of ``coords``, their weight and the in-range mask."""
    size_m1 = tf.cast(size - 1, tf.float32)
    inside = (coords >= 0.0) & (coords <= size_m1)
    safe = tf.clip_by_value(coords, 0.0, size_m1)
    low = tf.floor(safe)
    lerp = safe - low
    low_i = tf.cast(low, tf.int32)
    high_i = tf.minimum(low_i + 1, tf.cast(size, tf.int32) - 1)
    return low_i, high_i, lerp, inside


def crop_and_resize_builtin(features, rois, crop_size):
    """``tf.image.crop_and_resize`` (bilinear, extrapolation 0) from TFLite builtins, with
    its sample points (normalized 0 and 1 at the first and last pixel centres; RoI pooling
    converts canonical boxes first, see the module docstring).

    Args:
      features: ``[B, H, W, C]``.
      rois: ``[B, R, 4]`` normalized ``[y1, x1, y2, x2]``; RoIs of image ``b`` read
        ``features[b]``.
      crop_size: ``(crop_h, crop_w)`` (int for square).

    Returns:
      ``[B, R, crop_h, crop_w, C]`` float32, equal to crop_and_resize up to float rounding;
      sample points follow the module docstring's convention.
    """
    features, rois = _check_inputs(features, rois)
    crop_h, crop_w = _pair(crop_size, "crop_size")
    features = tf.cast(features, tf.float32)
    shape = tf.shape(features)
    batch, height, width = shape[0], shape[1], shape[2]
    channels = features.shape[-1] if features.shape[-1] is not None else shape[3]
    num_rois = tf.shape(rois)[1]
    y1, x1, y2, x2 = tf.unstack(rois, axis=-1)  # [B, R] each

    ys = _sample_coords(y1, y2, height, crop_h)  # [B, R, crop_h]
    xs = _sample_coords(x1, x2, width, crop_w)  # [B, R, crop_w]
    top, bottom, y_lerp, y_in = _lerp_indices(ys, height)
    left, right, x_lerp, x_in = _lerp_indices(xs, width)

    # Flat row index b * H * W + y * W + x into features [B * H * W, C].
    base = (tf.range(batch) * height * width)[:, None, None, None]  # [B, 1, 1, 1]

    def index(rows, cols):  # rows [B, R, ch, 1], cols [B, R, 1, cw]
        return tf.reshape(base + rows * width + cols, [-1])  # [B * R * ch * cw]

    indices, weights = _bilinear_plan(index, (top, bottom, y_lerp, y_in), (left, right, x_lerp, x_in))
    crops = read_crop_plan(tf.reshape(features, [-1, channels]), indices, weights)
    return tf.reshape(crops, [batch, num_rois, crop_h, crop_w, channels])


def _bilinear_plan(index, rows, cols):
    """The four neighbours of every bilinear sample: ``(indices, weights)``, lists of four
    int32 ``[N]`` and four float32 ``[N, 1]``, with ``N = B * R * ch * cw``, given :func:`_lerp_indices`' ``(low,
    high, lerp, inside)`` of the rows ``[B, R, ch]`` and the columns ``[B, R, cw]``;
    ``index(rows [B, R, ch, 1], cols [B, R, 1, cw])`` returns the flat table rows ``[N]`` of
    those integer positions. A point outside the map gets weight 0 (reads 0)."""
    top, bottom, y_lerp, y_in = rows
    left, right, x_lerp, x_in = cols
    # The weights are computed on the small sample grid; the full-size arithmetic of
    # read_crop_plan (4 products, 3 sums) runs on 2-D [samples, C] tensors (in TFLite 6%
    # faster than the same on 5-D tensors, for 1,000 RoIs at 256 channels).
    y_w = tf.where(y_in, y_lerp, 0.0)[:, :, :, None]  # [B, R, ch, 1]
    y_v = tf.where(y_in, 1.0 - y_lerp, 0.0)[:, :, :, None]
    x_w = tf.where(x_in, x_lerp, 0.0)[:, :, None, :]  # [B, R, 1, cw]
    x_v = tf.where(x_in, 1.0 - x_lerp, 0.0)[:, :, None, :]
    corners = [(top, y_v, left, x_v), (top, y_v, right, x_w), (bottom, y_w, left, x_v), (bottom, y_w, right, x_w)]
    indices = [index(row[..., :, None], col[..., None, :]) for row, _, col, _ in corners]
    weights = [tf.reshape(wy * wx, [-1, 1]) for _, wy, _, wx in corners]
    return indices, weights


def roi_pool_builtin(features, rois, output_size=(7, 7), sampling_ratio=2, mode="max"):
    """:func:`roi_pool` made of TFLite builtin ops only (no ``crop_and_resize``).

    Same arguments, result and sampling points as :func:`roi_pool` (agrees to float
    rounding, ~1e-6; tested at 1e-5);
    returns ``[B, R, out_h, out_w, C]``.
    """
    return _roi_pool(features, rois, output_size, sampling_ratio, builtin=True, mode=mode)


# --- spatial pyramid pooling --------------------------------------------------------


def spp_bins(a, n):
    """SPP-Net's pooling for an ``a x a`` map and ``n x n`` bins: ``(window, stride)``.

    ``window = ceil(a / n)``, ``stride = floor(a / n)`` (seed: 13 -> (5, 4), (7, 6),
    (13, 13) for n = 3, 2, 1). Note this yields ``(a - window) // stride + 1`` bins, which
    is not ``n`` for every size; :func:`spatial_pyramid_pool` uses :func:`spp_bin_edges`.
    """
    a, n = int(a), int(n)
    if a < 1 or n < 1:
        raise ValueError(f"a and n must be positive, got a={a}, n={n}")
    return math.ceil(a / n), a // n


def spp_bin_edges(a, n):
    """The ``n`` bins ``[(start, end), ...]`` over ``a`` cells: ``[floor(i a/n), ceil((i+1) a/n))``.

    Every bin is non-empty, the bins cover ``[0, a)`` and there are exactly ``n`` of them,
    even when ``a < n`` (bins then repeat cells). On sizes where :func:`spp_bins` gives
    ``n`` bins covering the map (e.g. the seed's 13 and 10), the windows are the same.
    """
    a, n = int(a), int(n)
    if a < 1 or n < 1:
        raise ValueError(f"a and n must be positive, got a={a}, n={n}")
    return [((i * a) // n, -((-(i + 1) * a) // n)) for i in range(n)]


def _bin_edge(index, size, n, ceil):
    """``floor(index * size / n)`` or ``ceil(...)``, static int or int32 tensor."""
    if isinstance(size, int):
        return -((-index * size) // n) if ceil else (index * size) // n
    return (index * size + n - 1) // n if ceil else (index * size) // n


def _regular_window(size, n):
    """``(window, stride)`` of :func:`spp_bins` when ``size`` is static and those windows
    are exactly :func:`spp_bin_edges`' bins (the seed's 13 and 10 for n = 6, 3, 2, 1), else
    None."""
    if not isinstance(size, int):
        return None
    window, stride = spp_bins(size, n)
    if stride < 1:  # a map narrower than the level: the slices repeat cells
        return None
    regular = [(i * stride, i * stride + window) for i in range(n)]
    return (window, stride) if regular == spp_bin_edges(size, n) else None


def spatial_pyramid_pool(features, levels=(3, 2, 1)):
    """Spatial pyramid max pooling to a fixed length for any ``H, W``.

    Args:
      features: ``[B, H, W, C]``; H and W may be dynamic.
      levels: pyramid levels ``n`` (``n x n`` bins each), in output order.

    Returns:
      ``[B, C * sum(n * n)]``: for each level in order, its bins in row-major order
      (``[B, n, n, C]`` flattened), concatenated. A level whose bins are the seed's regular
      windows on a static size is one ``max_pool2d`` (SPP-Net's 13 x 13 grid at every
      level); the others take the max of each bin's slice.
    """
    features = tf.convert_to_tensor(features)
    if features.shape.rank != 4:
        raise ValueError(f"features must have shape [B, H, W, C], got {features.shape}")
    height = features.shape[1] if features.shape[1] is not None else tf.shape(features)[1]
    width = features.shape[2] if features.shape[2] is not None else tf.shape(features)[2]
    batch = tf.shape(features)[0]
    channels = features.shape[-1] if features.shape[-1] is not None else tf.shape(features)[-1]
    pooled = []
    for n in levels:
        n = int(n)
        regular = _regular_window(height, n), _regular_window(width, n)
        if None not in regular:  # the seed's window and stride give exactly these bins: one max pool
            (window_h, stride_h), (window_w, stride_w) = regular
            level = tf.nn.max_pool2d(features, (window_h, window_w), (stride_h, stride_w), "VALID")  # [B, n, n, C]
            pooled.append(tf.reshape(level, [batch, n * n * channels]))
            continue
        bins = []
        for i in range(n):
            y0, y1 = _bin_edge(i, height, n, False), _bin_edge(i + 1, height, n, True)
            for j in range(n):
                x0, x1 = _bin_edge(j, width, n, False), _bin_edge(j + 1, width, n, True)
                bins.append(tf.reduce_max(features[:, y0:y1, x0:x1, :], axis=[1, 2]))  # [B, C]
        level = tf.stack(bins, axis=1)  # [B, n * n, C]
        pooled.append(tf.reshape(level, [batch, n * n * channels]))  # [B, n * n * C]
    return tf.concat(pooled, axis=1)  # [B, C * sum(n * n)]


def roi_spatial_pyramid_pool(features, rois, levels=(4, 2, 1), grid=13, builtin=False):
    """SPP-Net detection pooling: each RoI's window pooled into a spatial pyramid.

    Each RoI is cropped densely to a ``grid x grid`` map (:func:`aligned_crops`: the
    centres of ``grid x grid`` equal cells of the RoI, bilinear), which
    :func:`spatial_pyramid_pool` then pools with the seed's window / stride rule (level
    ``n``: window ``ceil(grid / n)``, stride ``floor(grid / n)``; :func:`spp_bin_edges`).
    Every bin, the global ``1 x 1`` one included, is the max over its whole window of the
    RoI, interior included. ``grid`` defaults to 13, the seed's conv5 size at 224 px.
    ``builtin=True`` crops with TFLite builtins only.

    Args:
      features: ``[B, H, W, C]``.
      rois: ``[B, R, 4]`` normalized ``[y1, x1, y2, x2]``.

    Returns:
      ``[B, R, C * sum(n * n)]``, levels in order, each ``[n, n, C]`` row-major flattened.
    """
    features, rois = _check_inputs(features, rois)
    grid = _pair(grid, "grid")
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = features.shape[-1] if features.shape[-1] is not None else tf.shape(features)[-1]
    crops = aligned_crops(features, rois, grid, builtin=builtin)  # [B, R, g, g, C]
    pooled = spatial_pyramid_pool(tf.reshape(crops, [-1, grid[0], grid[1], channels]), levels)  # [B*R, C*sum]
    length = sum(int(n) * int(n) for n in levels)
    return tf.cast(tf.reshape(pooled, [batch, num_rois, length * channels]), features.dtype)
