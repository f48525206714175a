"""Box-aware augmentation for tf.data: pure TensorFlow, graph-safe, stateless-random.

Every op takes a canonical example dict (:mod:`tfzoo.data.schema`) and returns one. The
image may come in as uint8 or float; flips keep its dtype, every other op returns float32
in [0, 255]. Boxes stay
``[y1, x1, y2, x2]`` normalized to the *current* image. After every geometric op boxes are
clipped to the image and invalid (empty, inverted) boxes are dropped together with their
per-box fields (:data:`schema.BOX_KEYS`), so rows stay aligned. ``proposals``, where an
example has them, move with the image exactly as the boxes do (clipped, empty ones
dropped; they are not filtered with the ground truth). Other keys (``image_id`` ...) pass
through.

Random ops take ``seed``, an int32/int64 tensor of shape [2] as in ``tf.random.stateless_*``:
the same seed gives the same result, so a pipeline that derives one seed per example
(see :func:`tfzoo.data.pipeline.pipeline`) is deterministic when seeded.

The resize ops (:func:`resize_and_pad`, :func:`resize`, :func:`random_scale_crop`) also
write ``image_info``, float32 [4, 2] (TF Model Garden's layout)::

    [[in_height,  in_width ],   # the image the op received, pixels
     [out_height, out_width],   # the output canvas, pixels
     [y_scale,    x_scale  ],   # output pixels per input pixel
     [y_offset,   x_offset ]]   # output_px = input_px * scale - offset

relative to the image the op received: in evaluation (no augmentation before the resize)
that is the original image, and :func:`boxes_to_original` maps boxes on the output canvas
back to original pixels. :func:`resize_images` is the batched form of :func:`resize_and_pad`
and :func:`resize` (same pixels), for serving graphs.

Presets (:data:`PRESETS`, built by :func:`preset`): ``none``; ``flip``; ``scale_jitter``
(flip + :func:`random_scale_crop` with scale in [0.5, 2.0], RetinaNet / TF Model Garden);
``ssd`` (Liu et al. 2016: photometric distortions, zoom-out up to 4x filled with the mean,
IoU-constrained crop with options whole image / IoU >= 0.1, 0.3, 0.5, 0.7, 0.9 / any, flip); ``yolo`` (Redmon et al.: HSV jitter with exposure and saturation up to 1.5,
translation/scale jitter of up to 20% of the image, flip).
"""
from __future__ import annotations

import math

import tensorflow as tf

from tfzoo.data import schema
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import roi as roi_ops

#: Key of the resize bookkeeping written by the resize ops.
IMAGE_INFO = "image_info"
#: ImageNet mean RGB in [0, 255]: the SSD zoom-out fill.
MEAN_RGB = (123.68, 116.78, 103.94)


# --- helpers ------------------------------------------------------------------------


def _split(seed, n):
    """``n`` independent [2] seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=n))


def _uniform(seed, minval=0.0, maxval=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval, dtype=tf.float32)


def _float_image(example):
    image = example[schema.IMAGE]
    return image if image.dtype == tf.float32 else tf.cast(image, tf.float32)


def _hw(image):
    """Image height and width as float32 scalars."""
    shape = tf.shape(image)
    return tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)


def _size(output_size):
    """``int`` or ``(h, w)`` -> ``(h, w)`` ints."""
    if isinstance(output_size, int):
        return output_size, output_size
    h, w = output_size
    return int(h), int(w)


def filter_rows(example, keep):
    """Keeps rows ``keep`` (bool [G]) of every per-box field of ``example``."""
    out = dict(example)
    for key in schema.BOX_KEYS + schema.OPTIONAL_BOX_KEYS:
        if key in out:
            out[key] = tf.boolean_mask(out[key], keep)
    return out


def _set_boxes(example, image, move, keep=None):
    """Stores ``image``; moves the boxes (and ``proposals``, when the example has them) to
    it with ``move`` (normalized ``[N, 4]`` -> normalized to ``image``), clips them and
    drops invalid rows (``keep`` drops further ground-truth rows)."""
    out = dict(example)
    out[schema.IMAGE] = image
    out[schema.BOXES] = box_ops.clip(move(example[schema.BOXES]))
    valid = box_ops.valid_mask(out[schema.BOXES])
    if schema.PROPOSALS in example:
        proposals = box_ops.clip(move(example[schema.PROPOSALS]))
        out[schema.PROPOSALS] = tf.boolean_mask(proposals, box_ops.valid_mask(proposals))
    return filter_rows(out, valid if keep is None else keep & valid)


def _image_info(in_h, in_w, out_h, out_w, y_scale, x_scale, y_offset, x_offset):
    values = [in_h, in_w, out_h, out_w, y_scale, x_scale, y_offset, x_offset]
    return tf.reshape(tf.stack([tf.cast(v, tf.float32) for v in values]), [4, 2])


def boxes_to_canvas(boxes, image_info):
    """Boxes normalized to an input image -> normalized to the output canvas of its resize
    (:func:`resize_and_pad` / :func:`resize`): the mapping the resize ops apply, for boxes
    that come with an image from outside (proposals given with a serving request).

    ``boxes [..., N, 4]`` and ``image_info [..., 4, 2]``; clipped to the canvas. Inverse of
    :func:`boxes_to_original` (up to its normalization and clipping).
    """
    image_info = tf.convert_to_tensor(image_info, tf.float32)
    in_size, out_size, scale, offset = tf.unstack(image_info[..., None, :, :], axis=-2)
    boxes_px = box_ops.denormalize(boxes, in_size[..., 0], in_size[..., 1])
    boxes_px = boxes_px * tf.concat([scale, scale], axis=-1) - tf.concat([offset, offset], axis=-1)
    return box_ops.clip(box_ops.normalize(boxes_px, out_size[..., 0], out_size[..., 1]))


def boxes_to_original(boxes, image_info):
    """Boxes normalized to an output canvas -> pixel ``[y1, x1, y2, x2]`` of the input image.

    ``boxes [..., N, 4]`` and ``image_info [..., 4, 2]`` (see the module doc); the result is
    clipped to the input image. Inverse of the box mapping of the resize ops.
    """
    image_info = tf.convert_to_tensor(image_info, tf.float32)
    in_size, out_size, scale, offset = tf.unstack(image_info[..., None, :, :], axis=-2)
    boxes_px = box_ops.denormalize(boxes, out_size[..., 0], out_size[..., 1])
    offset = tf.concat([offset, offset], axis=-1)
    scale = tf.concat([scale, scale], axis=-1)
    boxes_px = (boxes_px + offset) / scale
    in_size = tf.concat([in_size, in_size], axis=-1)
    return tf.clip_by_value(boxes_px, 0.0, in_size)


def crop(example, window, fill=0.0, keep=None):
    """Crops the normalized ``window`` ``[y1, x1, y2, x2]`` of the image; it may reach outside.

    The window is snapped to whole pixels (at least one); parts outside the image are
    filled with ``fill`` (a scalar or an RGB triple in [0, 255]). Boxes are re-expressed in
    the crop, clipped and filtered; ``keep`` (bool [G]) drops further rows.
    """
    image = _float_image(example)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    window = tf.cast(window, tf.float32)
    y0 = tf.cast(tf.round(window[0] * hf), tf.int32)
    x0 = tf.cast(tf.round(window[1] * wf), tf.int32)
    y1 = tf.maximum(tf.cast(tf.round(window[2] * hf), tf.int32), y0 + 1)
    x1 = tf.maximum(tf.cast(tf.round(window[3] * wf), tf.int32), x0 + 1)
    pad_top, pad_left = tf.maximum(-y0, 0), tf.maximum(-x0, 0)
    pad_bottom, pad_right = tf.maximum(y1 - h, 0), tf.maximum(x1 - w, 0)
    fill = tf.cast(tf.broadcast_to(tf.convert_to_tensor(fill, tf.float32), [3]), tf.float32)
    padded = tf.pad(image - fill, [[pad_top, pad_bottom], [pad_left, pad_right], [0, 0]]) + fill
    image = padded[y0 + pad_top : y1 + pad_top, x0 + pad_left : x1 + pad_left]
    origin = tf.stack([tf.cast(y0, tf.float32) / hf, tf.cast(x0, tf.float32) / wf])
    extent = tf.stack([tf.cast(y1 - y0, tf.float32) / hf, tf.cast(x1 - x0, tf.float32) / wf])
    return _set_boxes(example, image, lambda boxes: (boxes - tf.tile(origin, [2])) / tf.tile(extent, [2]), keep)


# --- flips --------------------------------------------------------------------------


def flip_left_right(example):
    """Mirrors image and boxes horizontally (its own inverse)."""
    out = dict(example)
    out[schema.IMAGE] = tf.image.flip_left_right(example[schema.IMAGE])
    for key in (schema.BOXES, schema.PROPOSALS):
        if key in example:
            out[key] = box_ops.flip_left_right(example[key])
    return out


def random_flip_left_right(example, seed, prob=0.5):
    """:func:`flip_left_right` with probability ``prob``."""
    do = _uniform(seed) < prob
    flipped = flip_left_right(example)
    out = dict(example)
    for key in (schema.IMAGE, schema.BOXES, schema.PROPOSALS):
        if key in example:
            out[key] = tf.cond(do, lambda k=key: flipped[k], lambda k=key: example[k])
    return out


# --- resizing -----------------------------------------------------------------------


def _fit_size(in_h, in_w, out_h, out_w, scale=1.0):
    """int32 ``(new_h, new_w)`` of an aspect-preserving resize of an ``in_h x in_w`` image
    to ``scale`` x the largest size that fits ``out_h x out_w`` (at least 1 pixel each)."""
    factor = tf.minimum(out_h / in_h, out_w / in_w) * scale
    new_h = tf.maximum(tf.cast(tf.round(in_h * factor), tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.round(in_w * factor), tf.int32), 1)
    return new_h, new_w


def _resize_crop_pad(example, output_size, scale, offset_frac, pad_value):
    """Aspect-preserving resize to ``scale`` x the fit into ``output_size``, crop, pad."""
    out_h, out_w = _size(output_size)
    image = _float_image(example)
    in_h, in_w = _hw(image)
    new_h, new_w = _fit_size(in_h, in_w, out_h, out_w, scale)
    image = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear")
    off_y = tf.cast(tf.floor(tf.cast(tf.maximum(new_h - out_h, 0), tf.float32) * offset_frac[0]), tf.int32)
    off_x = tf.cast(tf.floor(tf.cast(tf.maximum(new_w - out_w, 0), tf.float32) * offset_frac[1]), tf.int32)
    image = image[off_y : off_y + out_h, off_x : off_x + out_w]
    crop_h, crop_w = tf.shape(image)[0], tf.shape(image)[1]
    image = tf.pad(image - pad_value, [[0, out_h - crop_h], [0, out_w - crop_w], [0, 0]]) + pad_value
    image = tf.ensure_shape(image, [out_h, out_w, 3])
    new_hf, new_wf = tf.cast(new_h, tf.float32), tf.cast(new_w, tf.float32)
    off_yf, off_xf = tf.cast(off_y, tf.float32), tf.cast(off_x, tf.float32)
    offset = tf.stack([off_yf, off_xf, off_yf, off_xf])
    out = _set_boxes(example, image,
                     lambda boxes: box_ops.normalize(box_ops.denormalize(boxes, new_hf, new_wf) - offset, out_h, out_w))
    out[IMAGE_INFO] = _image_info(in_h, in_w, out_h, out_w, new_hf / in_h, new_wf / in_w, off_yf, off_xf)
    return out


def resize_and_pad(example, output_size, *, pad_value=0.0):
    """Resizes keeping the aspect ratio so the image fits ``output_size``, pads bottom/right.

    ``output_size``: int or ``(height, width)``. Boxes are renormalized to the padded
    canvas; ``image_info`` records the scale (offset 0).
    """
    return _resize_crop_pad(example, output_size, 1.0, (0.0, 0.0), pad_value)


def resize(example, output_size):
    """Resizes to ``output_size`` ignoring the aspect ratio (SSD, YOLO); boxes unchanged."""
    out_h, out_w = _size(output_size)
    image = _float_image(example)
    in_h, in_w = _hw(image)
    out = dict(example)
    out[schema.IMAGE] = tf.ensure_shape(tf.image.resize(image, [out_h, out_w], method="bilinear"), [out_h, out_w, 3])
    out[IMAGE_INFO] = _image_info(in_h, in_w, out_h, out_w, out_h / in_h, out_w / in_w, 0.0, 0.0)
    return out


def resize_images(images, output_size, *, keep_aspect_ratio=True, pad_value=0.0):
    """Batched :func:`resize_and_pad` (or :func:`resize`) of images that share one size.

    ``images``: ``[B, H, W, 3]`` (any real dtype; H and W may be dynamic). Returns
    ``(images float32 [B, out_h, out_w, 3], image_info float32 [B, 4, 2])``, pixel for
    pixel what the per-example op gives each image (the same size arithmetic and resize
    kernel), so a serving graph resizes exactly as the evaluation pipeline. Map boxes back
    with :func:`boxes_to_original`.
    """
    out_h, out_w = _size(output_size)
    images = tf.convert_to_tensor(images)
    images = images if images.dtype == tf.float32 else tf.cast(images, tf.float32)
    shape = tf.shape(images)
    in_h, in_w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    if keep_aspect_ratio:
        new_h, new_w = _fit_size(in_h, in_w, out_h, out_w)
        images = tf.image.resize(images, tf.stack([new_h, new_w]), method="bilinear")
        paddings = [[0, 0], [0, out_h - new_h], [0, out_w - new_w], [0, 0]]
        images = tf.pad(images - pad_value, paddings) + pad_value
        new_hf, new_wf = tf.cast(new_h, tf.float32), tf.cast(new_w, tf.float32)
        info = _image_info(in_h, in_w, out_h, out_w, new_hf / in_h, new_wf / in_w, 0.0, 0.0)
    else:
        images = tf.image.resize(images, [out_h, out_w], method="bilinear")
        info = _image_info(in_h, in_w, out_h, out_w, out_h / in_h, out_w / in_w, 0.0, 0.0)
    images = tf.ensure_shape(images, [None, out_h, out_w, 3])
    return images, tf.tile(info[None], [shape[0], 1, 1])


def random_scale_crop(example, seed, output_size, scale_range=(0.5, 2.0), *, pad_value=0.0):
    """Scale jitter (TF Model Garden ``resize_and_crop_image``; RetinaNet, Mask R-CNN recipes).

    The image is resized keeping its aspect ratio to fit ``s * output_size`` with ``s``
    uniform in ``scale_range``; a random ``output_size`` window is cropped where it is
    larger, and the result padded bottom/right where it is smaller.
    """
    s_scale, s_y, s_x = _split(seed, 3)
    scale = _uniform(s_scale, scale_range[0], scale_range[1])
    return _resize_crop_pad(example, output_size, scale, (_uniform(s_y), _uniform(s_x)), pad_value)


# --- photometric --------------------------------------------------------------------


def _rand_scale(seed, factor):
    """darknet's ``rand_scale``: uniform in [1, factor], inverted with probability 1/2."""
    s_value, s_coin = _split(seed, 2)
    value = _uniform(s_value, 1.0, factor)
    return tf.where(_uniform(s_coin) < 0.5, value, 1.0 / value)


def random_hsv(example, seed, *, hue=0.1, saturation=1.5, exposure=1.5):
    """YOLO's HSV jitter: hue shift in ``[-hue, hue]`` (fraction of the colour wheel),
    saturation and value (exposure) scaled by up to ``saturation`` / ``exposure`` or its
    inverse (darknet defaults: 0.1, 1.5, 1.5)."""
    s_hue, s_sat, s_exp = _split(seed, 3)
    hsv = tf.image.rgb_to_hsv(_float_image(example) / 255.0)
    h, s, v = tf.unstack(hsv, axis=-1)
    h = tf.math.floormod(h + _uniform(s_hue, -hue, hue), 1.0)
    s = tf.clip_by_value(s * _rand_scale(s_sat, saturation), 0.0, 1.0)
    v = tf.clip_by_value(v * _rand_scale(s_exp, exposure), 0.0, 1.0)
    out = dict(example)
    out[schema.IMAGE] = tf.image.hsv_to_rgb(tf.stack([h, s, v], axis=-1)) * 255.0
    return out


def ssd_photometric(example, seed, *, brightness=32.0, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18.0 / 360.0):
    """SSD's photometric distortions (caffe ``distort_param``): brightness delta, contrast,
    saturation and hue, each applied with probability 1/2, in that order."""
    seeds = _split(seed, 8)
    image = _float_image(example) / 255.0

    def maybe(i, fn, img):
        return tf.cond(_uniform(seeds[2 * i]) < 0.5, lambda: fn(img, seeds[2 * i + 1]), lambda: img)

    image = maybe(0, lambda x, s: x + _uniform(s, -brightness, brightness) / 255.0, image)
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = maybe(1, lambda x, s: tf.image.adjust_contrast(x, _uniform(s, *contrast)), image)
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = maybe(2, lambda x, s: tf.image.adjust_saturation(x, _uniform(s, *saturation)), image)
    image = maybe(3, lambda x, s: tf.image.adjust_hue(x, _uniform(s, -hue, hue)), image)
    out = dict(example)
    out[schema.IMAGE] = tf.clip_by_value(image, 0.0, 1.0) * 255.0
    return out


# --- SSD geometric ------------------------------------------------------------------


def ssd_zoom_out(example, seed, *, max_ratio=4.0, prob=0.5, fill=MEAN_RGB, max_side=1536):
    """SSD zoom-out ("expand"): with probability ``prob`` places the image at a random spot
    of a canvas ``r`` times larger (``r`` uniform in [1, ``max_ratio``]) filled with ``fill``.

    The canvas's long side is capped at ``max_side`` pixels: a larger source is shrunk
    first (boxes are normalized, so the geometry is the same). Without the cap a 3000 x 4000
    photo zoomed out 4x is a 12000 x 16000 float canvas (2.3 GB) per example; the cap keeps
    it under 30 MB while leaving far more pixels than an SSD300/512 input uses.
    """
    s_do, s_ratio, s_y, s_x = _split(seed, 4)
    ratio = tf.where(_uniform(s_do) < prob, _uniform(s_ratio, 1.0, max_ratio), 1.0)
    top = _uniform(s_y) * (ratio - 1.0)
    left = _uniform(s_x) * (ratio - 1.0)
    window = tf.stack([-top, -left, ratio - top, ratio - left])
    image = example[schema.IMAGE]
    h, w = _hw(image)
    shrink = tf.minimum(1.0, float(max_side) / (tf.maximum(h, w) * ratio))
    size = tf.maximum(tf.cast(tf.round(tf.stack([h, w]) * shrink), tf.int32), 1)
    image = tf.cond(shrink < 1.0, lambda: tf.image.resize(_float_image(example), size),
                    lambda: _float_image(example))
    return crop({**example, schema.IMAGE: image}, window, fill=fill)


def ssd_random_crop(
    example,
    seed,
    *,
    options=(None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0),
    scale=(0.3, 1.0),
    aspect_ratio=(0.5, 2.0),
    max_trials=50,
):
    """SSD's IoU-constrained random crop (Liu et al. 2016, sec. 2.2, caffe ``batch_sampler``).

    One of ``options`` is drawn uniformly: ``None`` keeps the whole image; a number ``m``
    asks for a patch whose IoU with at least one object is ``>= m`` (``0.0``: any patch).
    Patches have side ``scale`` (fraction of the image) and aspect ratio (width / height,
    in normalized units) in ``aspect_ratio``, clamped so they fit. ``max_trials``
    candidates are drawn at once; the first that satisfies the option and contains the
    centre of at least one object is used; if none does, the whole image is kept. Objects
    whose centre falls outside the patch are dropped; the others are clipped to it.
    """
    window, keep = ssd_crop_window(example[schema.BOXES], seed, options=options, scale=scale,
                                   aspect_ratio=aspect_ratio, max_trials=max_trials)
    return crop(example, window, keep=keep)


def ssd_crop_window(boxes, seed, *, options=(None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0), scale=(0.3, 1.0),
                    aspect_ratio=(0.5, 2.0), max_trials=50):
    """The patch :func:`ssd_random_crop` picks for normalized ``boxes [G, 4]``: ``(window
    [4]`` normalized ``[y1, x1, y2, x2]``, ``keep [G]`` the objects whose centre it holds)."""
    s_opt, s_scale, s_ar, s_y, s_x = _split(seed, 5)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    thresholds = tf.constant([-1.0 if m is None else float(m) for m in options], tf.float32)
    option = tf.random.stateless_uniform([], s_opt, 0, len(options), dtype=tf.int32)
    min_iou = thresholds[option]  # -1: whole image
    size = _uniform(s_scale, scale[0], scale[1], [max_trials])
    ratio = tf.exp(_uniform(s_ar, math.log(aspect_ratio[0]), math.log(aspect_ratio[1]), [max_trials]))
    ratio = tf.clip_by_value(ratio, size * size, 1.0 / (size * size))
    ph = size / tf.sqrt(ratio)
    pw = size * tf.sqrt(ratio)
    py = _uniform(s_y, shape=[max_trials]) * (1.0 - ph)
    px = _uniform(s_x, shape=[max_trials]) * (1.0 - pw)
    patches = tf.stack([py, px, py + ph, px + pw], axis=-1)  # [T, 4]

    cy = 0.5 * (boxes[:, 0] + boxes[:, 2])
    cx = 0.5 * (boxes[:, 1] + boxes[:, 3])

    def centre_inside(p):  # [T, 4] -> [T, G]
        return (
            (cy[None, :] > p[:, 0:1]) & (cy[None, :] < p[:, 2:3])
            & (cx[None, :] > p[:, 1:2]) & (cx[None, :] < p[:, 3:4])
        )

    num_boxes = tf.shape(boxes)[0]
    inside = centre_inside(patches)
    overlap_ok = tf.reduce_any(box_ops.iou(patches, boxes) >= min_iou, axis=1)  # [T]
    ok = tf.where(min_iou > 0.0, overlap_ok, True) & (tf.reduce_any(inside, axis=1) | (num_boxes == 0))
    ok = ok & (min_iou >= 0.0)
    found = tf.reduce_any(ok)
    index = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
    window = tf.where(found, patches[index], tf.constant([0.0, 0.0, 1.0, 1.0]))
    keep = tf.where(found, centre_inside(window[None])[0], tf.ones([num_boxes], tf.bool))
    return window, keep


def ssd_zoom_out_crop(example, seed_zoom, seed_crop, output_size, *, max_ratio=4.0, prob=0.5, fill=MEAN_RGB,
                      **crop_options):
    """:func:`ssd_zoom_out` then :func:`ssd_random_crop` (the same random draws for the
    same seeds), resampled once, straight to ``output_size``.

    The zoom-out canvas is never built: the crop is chosen on the boxes as they lie on the
    canvas, mapped back to a window of the source image (reaching outside it where the
    canvas is fill), and that window is sampled bilinearly at ``output_size`` (the aligned
    sample points of :func:`tfzoo.ops.roi.aligned_crops`, as ``tf.image.resize`` places
    them), ``fill`` outside the image. The two-step path materializes a canvas of up to 16
    times the image's pixels, crops it and leaves the resize to the pipeline; on 2 CPU cores
    the SSD preset ran at 292 images/s that way (``shapes``, cached, batch 1; one-off probe).
    """
    s_do, s_ratio, s_y, s_x = _split(seed_zoom, 4)  # as ssd_zoom_out draws them
    ratio = tf.where(_uniform(s_do) < prob, _uniform(s_ratio, 1.0, max_ratio), 1.0)
    top = _uniform(s_y) * (ratio - 1.0)
    left = _uniform(s_x) * (ratio - 1.0)
    shift = tf.stack([top, left, top, left])
    on_canvas = (tf.convert_to_tensor(example[schema.BOXES], tf.float32) + shift) / ratio
    window, keep = ssd_crop_window(on_canvas, seed_crop, **crop_options)
    source_window = window * ratio - shift  # the same patch, normalized to the source image
    out_h, out_w = _size(output_size)
    fill = tf.broadcast_to(tf.convert_to_tensor(fill, tf.float32), [3])
    image = _float_image(example)
    sampled = roi_ops.aligned_crops((image - fill)[None], source_window[None, None], (out_h, out_w))[0, 0] + fill
    origin, extent = source_window[:2], source_window[2:] - source_window[:2]
    return _set_boxes(example, tf.ensure_shape(sampled, [out_h, out_w, 3]),
                      lambda boxes: (boxes - tf.tile(origin, [2])) / tf.tile(extent, [2]), keep)


def random_jitter_crop(example, seed, *, jitter=0.2, fill=127.5):
    """YOLO's translation/scale jitter (darknet ``jitter``): each image edge moves by up to
    ``jitter`` of the image side, inwards (crop) or outwards (pad with ``fill``)."""
    window = _uniform(seed, -jitter, jitter, [4]) + tf.constant([0.0, 0.0, 1.0, 1.0])
    return crop(example, window, fill=fill)


# --- presets ------------------------------------------------------------------------


#: Preset names accepted by :func:`preset` (``scale_jitter`` needs ``image_size``).
PRESETS = ("none", "flip", "scale_jitter", "ssd", "yolo")


def _no_flip(example, seed):
    del seed
    return example


def preset(name, image_size=None, *, flip=True):
    """The augmentation ``fn(example, seed) -> example`` called ``name`` (:data:`PRESETS`).

    Its output still goes through the pipeline's final resize to ``image_size``; only
    ``scale_jitter`` (which needs ``image_size``) and ``ssd`` given ``image_size`` already
    produce that size. ``flip=False``
    leaves out the horizontal flip of every preset (``flip`` then does nothing): for data
    where a mirrored object is another class or no class (characters, arrows, road
    signs); the other random draws stay the same, seed for seed.
    """
    maybe_flip = random_flip_left_right if flip else _no_flip
    if name == "none":
        return lambda example, seed: dict(example)
    if name == "flip":
        return lambda example, seed: dict(maybe_flip(example, seed))
    if name == "ssd":

        def _ssd(example, seed):
            s_photo, s_zoom, s_crop, s_flip = _split(seed, 4)
            example = ssd_photometric(example, s_photo)
            if image_size is None:
                example = ssd_random_crop(ssd_zoom_out(example, s_zoom), s_crop)
            else:  # the same draws, resampled once at the input size
                example = ssd_zoom_out_crop(example, s_zoom, s_crop, image_size)
            return maybe_flip(example, s_flip)

        return _ssd
    if name == "yolo":

        def _yolo(example, seed):
            s_hsv, s_jitter, s_flip = _split(seed, 3)
            example = random_hsv(example, s_hsv)
            example = random_jitter_crop(example, s_jitter)
            return maybe_flip(example, s_flip)

        return _yolo
    if name == "scale_jitter":
        if image_size is None:
            raise ValueError("the 'scale_jitter' preset needs image_size")

        def _scale_jitter(example, seed):
            s_flip, s_scale = _split(seed, 2)
            return random_scale_crop(maybe_flip(example, s_flip), s_scale, image_size)

        return _scale_jitter
    raise ValueError(f"unknown augmentation preset {name!r}; known presets: {', '.join(PRESETS)}")
