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

Sampling-point convention (``tf.image.crop_and_resize``'s, reproduced exactly): for an RoI
``[y1, x1, y2, x2]`` normalized to the feature map of height H and a crop of height
``crop_h > 1``, row ``i`` samples ``y = y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (crop_h - 1)``
(``crop_h == 1`` samples the centre ``0.5 * (y1 + y2) * (H - 1)``); likewise for x. So
``y1 = 0`` and ``y2 = 1`` hit the first and last pixel centres. A point outside
``[0, H - 1] x [0, W - 1]`` reads 0 (the extrapolation value).

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

import math

import tensorflow as tf


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


def roi_pool(features, rois, output_size=(7, 7), sampling_ratio=2):
    """RoI max pooling via ``tf.image.crop_and_resize``.

    Args:
      features: ``[B, H, W, C]`` feature map.
      rois: ``[B, R, 4]`` RoIs ``[y1, x1, y2, x2]`` normalized to the feature map (the
        same as to the image when the map covers the whole image).
      output_size: ``(out_h, out_w)`` bins per RoI (int for square).
      sampling_ratio: int ``s``; each bin is the max of ``s x s`` bilinear samples.

    Returns:
      ``[B, R, out_h, out_w, C]``, dtype of ``features``.
    """
    features, rois = _check_inputs(features, rois)
    (out_h, out_w), s = _pair(output_size, "output_size"), _ratio(sampling_ratio)
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    box_indices = tf.repeat(tf.range(batch), num_rois)  # [B * R]
    crops = tf.image.crop_and_resize(
        tf.cast(features, tf.float32),
        tf.reshape(rois, [-1, 4]),  # [B * R, 4]
        box_indices,
        crop_size=(out_h * s, out_w * s),
        method="bilinear",
        extrapolation_value=0.0,
    )  # [B * R, out_h * s, out_w * s, C]
    return _max_pool_crops(crops, batch, num_rois, out_h, out_w, s, features)


def _max_pool_crops(crops, batch, num_rois, out_h, out_w, s, features):
    if s > 1:
        crops = tf.nn.max_pool2d(crops, ksize=s, strides=s, padding="VALID")
    channels = features.shape[-1] if features.shape[-1] is not None else tf.shape(features)[-1]
    pooled = tf.reshape(crops, [batch, num_rois, out_h, out_w, channels])  # [B, R, oh, ow, C]
    return tf.cast(pooled, features.dtype)


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
    """``tf.image.crop_and_resize`` (bilinear, extrapolation 0) from TFLite builtins.

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
    flat = tf.reshape(features, [-1, channels])  # [B * H * W, C]
    base = (tf.range(batch) * height * width)[:, None, None, None]  # [B, 1, 1, 1]

    def read(rows, cols):
        index = base + (rows * width)[..., :, None] + cols[..., None, :]  # [B, R, ch, cw]
        return tf.gather(flat, index)  # [B, R, ch, cw, C]

    x_w = x_lerp[:, :, None, :, None]  # [B, R, 1, cw, 1]
    y_w = y_lerp[:, :, :, None, None]  # [B, R, ch, 1, 1]
    top_left, top_right = read(top, left), read(top, right)
    bottom_left, bottom_right = read(bottom, left), read(bottom, right)
    upper = top_left + (top_right - top_left) * x_w
    lower = bottom_left + (bottom_right - bottom_left) * x_w
    crops = upper + (lower - upper) * y_w  # [B, R, ch, cw, C]
    inside = (y_in[:, :, :, None] & x_in[:, :, None, :])[..., None]  # [B, R, ch, cw, 1]
    crops = tf.where(inside, crops, 0.0)
    return tf.reshape(crops, [batch, num_rois, crop_h, crop_w, channels])


def roi_pool_builtin(features, rois, output_size=(7, 7), sampling_ratio=2):
    """:func:`roi_pool` made of TFLite builtin ops only (no ``crop_and_resize``).

    Same arguments, result and sampling points as :func:`roi_pool` (agrees to float
    rounding, ~1e-6; tested at 1e-5);
    returns ``[B, R, out_h, out_w, C]``.
    """
    features, rois = _check_inputs(features, rois)
    (out_h, out_w), s = _pair(output_size, "output_size"), _ratio(sampling_ratio)
    crops = crop_and_resize_builtin(features, rois, (out_h * s, out_w * s))
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = features.shape[-1] if features.shape[-1] is not None else tf.shape(features)[-1]
    crops = tf.reshape(crops, [-1, out_h * s, out_w * s, channels])  # [B * R, oh*s, ow*s, C]
    return _max_pool_crops(crops, batch, num_rois, out_h, out_w, s, features)


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


def spatial_pyramid_pool(features, levels=(3, 2, 1)):
    """Spatial pyramid max pooling to a fixed length for any ``H, W``.

    Args:
      features: ``[B, H, W, C]``; H and W may be dynamic.
      levels: pyramid levels ``n`` (``n x n`` bins each), in output order.

    Returns:
      ``[B, C * sum(n * n)]``: for each level in order, its bins in row-major order
      (``[B, n, n, C]`` flattened), concatenated.
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
        bins = []
        for i in range(n):
            y0, y1 = _bin_edge(i, height, n, False), _bin_edge(i + 1, height, n, True)
            for j in range(n):
                x0, x1 = _bin_edge(j, width, n, False), _bin_edge(j + 1, width, n, True)
                bins.append(tf.reduce_max(features[:, y0:y1, x0:x1, :], axis=[1, 2]))  # [B, C]
        level = tf.stack(bins, axis=1)  # [B, n * n, C]
        pooled.append(tf.reshape(level, [batch, n * n * channels]))  # [B, n * n * C]
    return tf.concat(pooled, axis=1)  # [B, C * sum(n * n)]


def roi_spatial_pyramid_pool(features, rois, levels=(4, 2, 1), sampling_ratio=2,
                             builtin=False):
    """SPP-Net detection pooling: each RoI's window pooled into a spatial pyramid.

    Each level ``n`` is :func:`roi_pool` with ``output_size=(n, n)``: bins of the RoI's
    window max-pooled over ``sampling_ratio x sampling_ratio`` bilinear samples (a sampled
    form of SPP-Net's integer windows). ``builtin=True`` uses :func:`roi_pool_builtin`.

    Args:
      features: ``[B, H, W, C]``.
      rois: ``[B, R, 4]`` normalized ``[y1, x1, y2, x2]``.

    Returns:
      ``[B, R, C * sum(n * n)]``, levels in order, each ``[n, n, C]`` row-major flattened.
    """
    features, rois = _check_inputs(features, rois)
    pool = roi_pool_builtin if builtin else roi_pool
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = features.shape[-1] if features.shape[-1] is not None else tf.shape(features)[-1]
    pooled = []
    for n in levels:
        n = int(n)
        level = pool(features, rois, output_size=(n, n), sampling_ratio=sampling_ratio)
        pooled.append(tf.reshape(level, [batch, num_rois, n * n * channels]))  # [B, R, n*n*C]
    return tf.concat(pooled, axis=-1)  # [B, R, C * sum(n * n)]
