"""TensorFlow Datasets detection datasets (``voc/2007``, ``coco/2017`` ...) as canonical examples.

Any TFDS dataset with an ``image`` feature and an ``objects`` sequence holding ``bbox``
(``tfds.features.BBoxFeature``: float32 ``[y1, x1, y2, x2]`` normalized, already canonical)
and ``label`` (``ClassLabel``) is accepted. Optional object fields map as follows:

==========================  ==============  ================================
TFDS field                  canonical key   present in
==========================  ==============  ================================
``objects/is_crowd``        ``is_crowd``    ``coco/*``
``objects/is_difficult``    ``difficult``   ``voc/*``
``objects/area``            ``area``        ``coco/*`` (pixels, for APs/APm/APl)
``image/id``                ``image_id``    ``coco/*`` (the COCO integer as text)
``image/filename``          ``image_id``    ``voc/*`` (the stem, ``"000005"``)
==========================  ==============  ================================

Without either id field, ``image_id`` is the example's index in the split, as text.
``tfzoo_shapes`` (the builtin shapes, :mod:`tfzoo.data.shapes_tfds`) is registered with
TFDS on first use here; its ``image/filename`` stem is the shapes ``image_id``.

Validation happens in the graph, per example, since TFDS streams records: object fields
whose lengths disagree are cut to the shortest, boxes that are not finite, inverted or
empty after clipping to [0, 1] are dropped, labels outside ``0..C-1`` are dropped. Given a
``report`` (or ``strict=True``), each such example adds a :class:`~tfzoo.data.validate.Problem`
through a ``tf.py_function`` (slower: it takes the GIL once per example); with ``strict``,
iteration stops at the first problem with a ``tf.errors`` error whose message carries the
:class:`~tfzoo.data.validate.DataError` text (TFDS cannot be validated before reading).
"""
from __future__ import annotations

import tensorflow as tf

from tfzoo.data import schema
from tfzoo.data.validate import Report
from tfzoo.ops import boxes as box_ops

#: The 80 COCO category ids, in the order of TFDS' contiguous ``coco/*`` labels 0..79.
COCO_CATEGORY_IDS = (
    list(range(1, 12)) + list(range(13, 26)) + [27, 28] + list(range(31, 45))
    + list(range(46, 66)) + [67, 70] + list(range(72, 83)) + list(range(84, 91))
)


def _tfds(name):
    """``tensorflow_datasets``, with the builder of ``name`` registered if it is ours.

    ``tfzoo_shapes`` (:mod:`tfzoo.data.shapes_tfds`) is registered only when asked for, so
    that ``import tfzoo.data`` stays light.
    """
    import tensorflow_datasets as tfds

    if name.split(":")[0].split("/")[0] == "tfzoo_shapes":
        import tfzoo.data.shapes_tfds  # noqa: F401  (registers the builder)
    return tfds


def _label_feature(info):
    try:
        return info.features["objects"]["label"]
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"TFDS dataset {info.full_name!r} is not a detection dataset: it needs an "
            "'objects' sequence with 'bbox' and 'label'"
        ) from err


def class_names(name, *, data_dir=None):
    """Class names of TFDS dataset ``name`` from its builder's ``objects/label`` feature."""
    info = _tfds(name).builder(name, data_dir=data_dir).info
    return list(_label_feature(info).names)


def category_ids(name, *, data_dir=None):
    """Dataset ids per class: the COCO ids for ``coco/*`` with 80 classes, else ``1..C``."""
    n = len(class_names(name, data_dir=data_dir))
    if name.split("/")[0] == "coco" and n == len(COCO_CATEGORY_IDS):
        return list(COCO_CATEGORY_IDS)
    return list(range(1, n + 1))


def load(name, split, *, data_dir=None, download=True, strict=False, report=None):
    """``tf.data.Dataset`` of canonical examples of TFDS dataset ``name``, split ``split``.

    ``split`` is any TFDS split string (``"train"``, ``"validation[:10%]"`` ...). Files are
    read in order (``shuffle_files=False``) so the stream is reproducible; the pipeline
    shuffles. ``download=False`` requires the dataset to be prepared in ``data_dir``.
    """
    ds, info = _tfds(name).load(
        name, split=split, data_dir=data_dir, download=download, shuffle_files=False, with_info=True
    )
    num_classes = _label_feature(info).num_classes
    spec = ds.element_spec
    objects_spec = spec.get("objects", {}) if isinstance(spec, dict) else {}
    if "bbox" not in objects_spec or "label" not in objects_spec:
        raise ValueError(f"TFDS dataset {name!r} has no 'objects/bbox' and 'objects/label' features")
    if strict and report is None:
        report = Report(strict=True)
    source = f"tfds:{name}/{split}"

    def _record(image_id, misaligned, bad_boxes, bad_labels):
        image_id = image_id.numpy().decode()
        if int(misaligned):
            report.add(source, image_id, "object fields of different lengths", "cut to the shortest")
        if int(bad_boxes):
            report.add(source, image_id, f"{int(bad_boxes)} invalid or empty boxes", "dropped boxes")
        if int(bad_labels):
            report.add(source, image_id, f"{int(bad_labels)} labels outside 0..{num_classes - 1}", "dropped boxes")
        return 0

    def _convert(index, ex):
        obj = ex["objects"]
        fields = {schema.BOXES: obj["bbox"], schema.CLASSES: obj["label"]}
        if "is_crowd" in obj:
            fields[schema.IS_CROWD] = obj["is_crowd"]
        if "is_difficult" in obj:
            fields[schema.DIFFICULT] = obj["is_difficult"]
        if "area" in obj:
            fields[schema.AREA] = obj["area"]
        lengths = tf.stack([tf.shape(t)[0] for t in fields.values()])
        n = tf.reduce_min(lengths)
        fields = {k: t[:n] for k, t in fields.items()}
        boxes = tf.cast(fields[schema.BOXES], tf.float32)
        classes = tf.cast(fields[schema.CLASSES], tf.int32)
        is_crowd = tf.cast(fields.get(schema.IS_CROWD, tf.zeros([n], tf.bool)), tf.bool)
        difficult = tf.cast(fields.get(schema.DIFFICULT, tf.zeros([n], tf.bool)), tf.bool)

        if "image/id" in ex:
            image_id = tf.strings.as_string(ex["image/id"])
        elif "image/filename" in ex:
            image_id = tf.strings.regex_replace(ex["image/filename"], r"^(.*/)?([^/]*?)(\.[^./]*)?$", r"\2")
        else:
            image_id = tf.strings.as_string(index)

        finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
        good_box = finite & box_ops.valid_mask(box_ops.clip(tf.where(finite[:, None], boxes, 0.0)))
        good_label = (classes >= 0) & (classes < num_classes)
        keep = good_box & good_label
        if report is not None:
            misaligned = tf.reduce_max(lengths) - n
            bad_boxes = tf.reduce_sum(tf.cast(~good_box, tf.int32))
            bad_labels = tf.reduce_sum(tf.cast(good_box & ~good_label, tf.int32))
            done = tf.cond(
                misaligned + bad_boxes + bad_labels > 0,
                lambda: tf.py_function(_record, [image_id, misaligned, bad_boxes, bad_labels], tf.int32),
                lambda: tf.constant(0),
            )
            with tf.control_dependencies([done]):
                keep = tf.identity(keep)
        example = {
            schema.IMAGE: tf.ensure_shape(ex["image"], [None, None, 3]),
            schema.BOXES: box_ops.clip(tf.boolean_mask(boxes, keep)),
            schema.CLASSES: tf.boolean_mask(classes, keep),
            schema.IS_CROWD: tf.boolean_mask(is_crowd, keep),
            schema.DIFFICULT: tf.boolean_mask(difficult, keep),
            schema.IMAGE_ID: image_id,
        }
        if schema.AREA in fields:
            example[schema.AREA] = tf.boolean_mask(tf.cast(fields[schema.AREA], tf.float32), keep)
        return example

    return ds.enumerate().map(_convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
