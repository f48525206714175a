"""The tf.data input pipeline and the :class:`Encoder` interface detectors plug into.

::

    canonical examples (a reader decodes) -> validate -> [cache] -> [shuffle] -> augment
      -> resize (+ pad) to the encoder's image_size -> encode -> batch -> prefetch

Every step runs in ``Dataset.map`` with ``num_parallel_calls=AUTOTUNE``. With a ``seed``
the output is deterministic (``options.deterministic``, seeded shuffle, one stateless
augmentation seed per example from ``Dataset.random``); each new iteration (epoch) still
draws a new shuffle order and new augmentations, reproducibly.

The Encoder interface
---------------------

An encoder turns one resized example into what ``model.fit`` consumes. It has:

- ``image_size``: ``(height, width)`` of the model input (an ``int`` means square);
- ``augment``: the default training augmentation, a preset name of
  :data:`tfzoo.data.augment.PRESETS` or a callable ``fn(example, seed) -> example``;
- ``flip``: whether the preset flips images horizontally (``False`` for data where a
  mirrored object is another class: characters, arrows);
- ``keep_aspect_ratio``: ``True`` resizes with :func:`~tfzoo.data.augment.resize_and_pad`
  (letterbox, bottom/right padding), ``False`` with :func:`~tfzoo.data.augment.resize`
  (warp, as SSD and YOLO do);
- ``inputs(example)``: model inputs of one example; default: the image, float32
  ``[H, W, 3]`` in [0, 255] (models normalize pixels themselves); with ``input_names``
  ``("images", "proposals")`` (a proposal-based detector's) the dict ``{"images": ...,
  "proposals": [max_proposals, 4]}``, the example's proposals (moved with the image by
  augmentation and resizing) cut or padded with zero boxes to ``max_proposals``;
- ``targets(example)``: training targets of one example (anchors matched, deltas encoded
  ...); a tensor or nest of tensors with *fully static shapes*. An encoder whose targets
  depend on the ground truth alone implements ``box_targets(ground_truth)`` instead (the
  :data:`schema.BOX_KEYS` tensors) and may set ``xla_targets = True`` to have it compiled
  with XLA (see :class:`Encoder`);
- ``encode(example) -> (inputs, targets)``: both at once (override to share work);
- ``train_sizes`` (optional): input sizes to train at, a new one drawn every
  ``size_period`` batches (YOLOv2/v3's multi-scale training, every 10 batches); the
  batches of one size are built together. ``encode`` then receives examples of each size
  (static within a call) and its targets may depend on it (a grid's cells); ``None``
  trains at ``image_size`` only.

Encoders receive the resized example: ``image`` float32 ``[H, W, 3]`` at ``image_size``,
``boxes`` normalized to that canvas, ``classes``, ``is_crowd``, ``difficult`` (``[G]``,
``G`` varies), ``image_id`` and ``image_info`` (see :mod:`tfzoo.data.augment`). They run
inside ``Dataset.map``, so they must be graph-safe TensorFlow. A Keras detector exposes
its encoder as ``detector.encoder``; :func:`pipeline` accepts either.

Outputs
-------

``training=True``: ``(inputs, targets)`` batched with ``drop_remainder=True`` (static
batch size ``B``), as returned by ``encoder.encode``.

``training=False``: no augmentation; ``(inputs, ground_truth)`` where ``ground_truth`` is::

    boxes       float32 [B, G, 4]  normalized to the model input canvas, padded with 0
    classes     int32   [B, G]     padded with PAD_CLASS (-1)
    is_crowd    bool    [B, G]     padded with False
    difficult   bool    [B, G]     padded with False
    image_id    string  [B]
    image_info  float32 [B, 4, 2]  [[orig h, w], [input h, w], [y, x scale], [y, x offset]]

so an evaluator maps detections (normalized to the model input) back to original-image
pixels with :func:`tfzoo.data.augment.boxes_to_original` ``(boxes, image_info)``.
``G`` is the batch's largest ground-truth count; the last batch may be smaller.
"""
from __future__ import annotations

import functools

import tensorflow as tf

from tfzoo.data import augment as aug
from tfzoo.data import schema
from tfzoo.ops import boxes as box_ops

#: Keys of the evaluation ground truth dict.
GROUND_TRUTH_KEYS = (schema.BOXES, schema.CLASSES, schema.IS_CROWD, schema.DIFFICULT, schema.IMAGE_ID, aug.IMAGE_INFO)


def _as_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


class Encoder:
    """Base class of the per-example target encoders (see the module doc for the contract)."""

    image_size = None
    augment = "flip"
    flip = True  # False: no horizontal flips in any preset (a mirrored object is another class)
    keep_aspect_ratio = True
    #: Run :meth:`box_targets` as one XLA-compiled function. Anchor encoders spend their
    #: time in a few dozen elementwise passes over an ``[A, G]`` IoU matrix, which XLA
    #: fuses into a few loops (RetinaNet's: about 1.2x the uncached pipeline's images/s,
    #: BENCHMARKS.md). XLA compiles once per input shape, so the ground truth is padded to a
    #: power-of-two row count first (:func:`pad_ground_truth_to_bucket`: at most 8 compiles
    #: up to 128 boxes); padding rows have class -1, so ``box_targets`` must let rows with a
    #: negative class match nothing. Only the box tensors go in (XLA takes no strings).
    xla_targets = False
    #: The model's inputs (a detector's ``input_names``) and, with ``"proposals"``, how many
    #: proposals each example carries (the first ones kept, zero boxes padding the rest).
    input_names = ("images",)
    max_proposals = 2000
    #: Sizes (``int`` or ``(h, w)``) to train at, one drawn per ``size_period`` batches;
    #: ``None``: ``image_size`` only (see the module doc).
    train_sizes = None
    size_period = 10

    def inputs(self, example):
        """Model inputs of one resized example: the float32 image ``[H, W, 3]`` in [0, 255],
        or with proposals ``{"images": image, "proposals": [max_proposals, 4]}``."""
        if tuple(self.input_names) == ("images",):
            return example[schema.IMAGE]
        if tuple(self.input_names) != ("images", "proposals"):
            raise ValueError(f"unknown input_names {self.input_names}: ('images',) or ('images', 'proposals')")
        if schema.PROPOSALS not in example:
            raise ValueError("the model takes proposals but the examples have none: add them to the dataset "
                             "(a 'proposals' [R, 4] key per example)")
        proposals = pad_rows(tf.cast(example[schema.PROPOSALS], tf.float32), int(self.max_proposals), 0.0)
        return {"images": example[schema.IMAGE], "proposals": proposals}

    def targets(self, example):
        """Training targets of one resized example, with static shapes: by default
        :meth:`box_targets` of its ground truth, XLA-compiled if :attr:`xla_targets`."""
        if not self.xla_targets:
            return self.box_targets({k: example[k] for k in schema.BOX_KEYS})
        return self._xla_box_targets(pad_ground_truth_to_bucket(example))

    @functools.cached_property
    def _xla_box_targets(self):
        return tf.function(self.box_targets, jit_compile=True, reduce_retracing=True)

    def box_targets(self, ground_truth):
        """Training targets from ``ground_truth``, the :data:`schema.BOX_KEYS` tensors of one
        example (``boxes [G, 4]``, ``classes``, ``is_crowd``, ``difficult`` ``[G]``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement targets(example) or "
                                  "box_targets(ground_truth)")

    def encode(self, example):
        """``(inputs, targets)`` of one resized example."""
        return self.inputs(example), self.targets(example)


def pad_rows(tensor, rows, value):
    """Cuts or pads ``tensor [N, ...]`` along axis 0 to exactly ``rows`` rows of ``value``
    (``rows`` an int, static in the result's shape, or a scalar tensor)."""
    tensor = tensor[:rows]
    pad = rows - tf.shape(tensor)[0]
    paddings = [[0, pad]] + [[0, 0]] * (tensor.shape.rank - 1)
    out = tf.pad(tensor, paddings, constant_values=tf.cast(value, tensor.dtype))
    if not isinstance(rows, int):
        return out
    return tf.ensure_shape(out, [rows] + tensor.shape[1:].as_list())


def pad_ground_truth(example, max_boxes):
    """Dense ground truth of one example: ``boxes [max_boxes, 4]``, ``classes``,
    ``is_crowd``, ``difficult`` ``[max_boxes]`` padded with :func:`schema.padding_values`
    (the first ``max_boxes`` boxes are kept when there are more)."""
    pads = schema.padding_values()
    return {k: pad_rows(example[k], max_boxes, pads[k]) for k in schema.BOX_KEYS}


def pad_ground_truth_to_bucket(example):
    """The :data:`schema.BOX_KEYS` tensors of ``example`` padded as in
    :func:`pad_ground_truth` to the next power of two of their row count G (at least 1).

    For encoders compiled with XLA, which compiles once per input shape: a handful of
    shapes (8 up to 128 boxes) instead of one per box count. Padding rows have class -1
    and so match no anchor.
    """
    rows = tf.shape(example[schema.BOXES])[0]
    bucket = tf.maximum(rows, 1) - 1  # the next power of two: set every bit below the top one
    for shift in (1, 2, 4, 8, 16):
        bucket = tf.bitwise.bitwise_or(bucket, tf.bitwise.right_shift(bucket, shift))
    pads = schema.padding_values()
    return {k: pad_rows(example[k], bucket + 1, pads[k]) for k in schema.BOX_KEYS}


class PaddedBoxesEncoder(Encoder):
    """Trivial encoder: inputs are the image, targets the padded ground truth.

    ``encode(example) -> (image float32 [S, S, 3], {"boxes" [max_boxes, 4], "classes",
    "is_crowd", "difficult" [max_boxes]})``, padded as in :func:`pad_ground_truth`. For
    tests, benchmarks, and detectors that match anchors inside the model.
    """

    def __init__(self, image_size, max_boxes=100, *, augment="flip", keep_aspect_ratio=True, flip=True,
                 input_names=("images",), max_proposals=2000):
        self.image_size = _as_size(image_size)
        self.input_names = tuple(input_names)
        self.max_proposals = int(max_proposals)
        self.max_boxes = int(max_boxes)
        self.augment = augment
        self.flip = bool(flip)
        self.keep_aspect_ratio = keep_aspect_ratio

    def targets(self, example):
        return pad_ground_truth(example, self.max_boxes)


def resolve_encoder(detector_or_encoder):
    """The encoder of a detector (its ``.encoder``) or the encoder itself."""
    obj = detector_or_encoder
    if not isinstance(obj, Encoder) and getattr(obj, "encoder", None) is not None:
        obj = obj.encoder
    if not callable(getattr(obj, "encode", None)):
        raise TypeError(
            f"expected an Encoder or a detector with an .encoder, got {type(detector_or_encoder).__name__}"
        )
    return obj


def validate(example):
    """Graph-side checks of one canonical example: dtypes and shapes enforced, missing
    ``is_crowd``/``difficult`` filled with False, boxes clipped to [0, 1] and invalid rows
    (non-finite, empty, inverted) dropped with their per-box fields; ``proposals``, when
    present, clipped and cleaned the same way. Readers report bad records; this only
    guarantees what later stages rely on."""
    boxes = tf.reshape(tf.cast(example[schema.BOXES], tf.float32), [-1, 4])
    n = tf.shape(boxes)[0]
    out = {
        schema.IMAGE: tf.ensure_shape(example[schema.IMAGE], [None, None, 3]),
        schema.BOXES: box_ops.clip(boxes),
        schema.CLASSES: tf.reshape(tf.cast(example[schema.CLASSES], tf.int32), [-1]),
        schema.IS_CROWD: tf.reshape(tf.cast(example.get(schema.IS_CROWD, tf.zeros([n], tf.bool)), tf.bool), [-1]),
        schema.DIFFICULT: tf.reshape(tf.cast(example.get(schema.DIFFICULT, tf.zeros([n], tf.bool)), tf.bool), [-1]),
        schema.IMAGE_ID: tf.cast(example.get(schema.IMAGE_ID, ""), tf.string),
    }
    keep = tf.math.reduce_all(tf.math.is_finite(boxes), axis=-1) & box_ops.valid_mask(out[schema.BOXES])
    if schema.PROPOSALS in example:
        proposals = tf.reshape(tf.cast(example[schema.PROPOSALS], tf.float32), [-1, 4])
        finite = tf.math.reduce_all(tf.math.is_finite(proposals), axis=-1)
        proposals = box_ops.clip(tf.where(finite[:, None], proposals, 0.0))
        out[schema.PROPOSALS] = tf.boolean_mask(proposals, finite & box_ops.valid_mask(proposals))
    return aug.filter_rows(out, keep)


def _fit(example, image_size, keep_aspect_ratio):
    if keep_aspect_ratio:
        return aug.resize_and_pad(example, image_size)
    return aug.resize(example, image_size)


def _multi_scale(ds, seeds, encoder, augment_fn, sizes, keep_aspect, batch_size, seed):
    """Training examples at a size drawn from ``sizes`` per ``encoder.size_period``
    batches: one size index per block of ``batch_size * size_period`` consecutive examples
    (drawn anew each epoch, reproducibly with ``seed``), each example resized and encoded
    in the branch of its size, so that ``encode`` sees a static size."""
    period = int(getattr(encoder, "size_period", 10))
    if period < 1:
        raise ValueError(f"size_period must be >= 1, got {period}")
    block = batch_size * period
    count = len(sizes)
    size_ids = (tf.data.Dataset.random(seed=None if seed is None else seed + 1, rerandomize_each_iteration=True)
                .map(lambda r: tf.cast(r % count, tf.int32))
                .flat_map(lambda k: tf.data.Dataset.from_tensors(k).repeat(block)))

    def _train(example, example_seed, size_id):
        example = augment_fn(example, example_seed)
        branches = [lambda s=s: encoder.encode(_fit(example, s, keep_aspect)) for s in sizes]
        return tf.switch_case(size_id, branches)

    return tf.data.Dataset.zip(ds, seeds, size_ids).map(_train, num_parallel_calls=tf.data.AUTOTUNE)


def _zeros_like_spec(spec):
    return tf.nest.map_structure(lambda s: tf.zeros([], s.dtype), spec)


def pipeline(
    dataset,
    detector_or_encoder,
    batch_size,
    training,
    *,
    image_size=None,
    seed=None,
    augment=None,
    cache=False,
    shuffle_buffer=1024,
):
    """Batches of model inputs and targets (training) or ground truth (evaluation).

    Args:
      dataset: ``tf.data.Dataset`` of canonical examples (e.g. :func:`tfzoo.data.load`).
      detector_or_encoder: an :class:`Encoder`, or a detector with ``.encoder``.
      batch_size: examples per batch.
      training: shuffle, augment and encode targets; else resize only and yield ground truth.
      image_size: model input size; defaults to ``encoder.image_size`` (must agree if both).
      seed: makes the output deterministic (order and augmentation); ``None``: not.
      augment: training augmentation, a preset name or ``fn(example, seed) -> example``;
        defaults to ``encoder.augment``. Must be ``None`` or ``"none"`` when not training.
      cache: ``True`` caches validated examples in memory, a path caches to files.
      shuffle_buffer: training shuffle buffer (0 disables shuffling).

    Returns:
      ``tf.data.Dataset`` of ``(inputs, targets)`` or ``(inputs, ground_truth)``; see the
      module doc.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"dataset must be a tf.data.Dataset (see tfzoo.data.load), got {type(dataset).__name__}")
    encoder = resolve_encoder(detector_or_encoder)
    size = _as_size(image_size)
    enc_size = _as_size(getattr(encoder, "image_size", None))
    if size is not None and enc_size is not None and size != enc_size:
        raise ValueError(f"image_size {size} disagrees with the encoder's image_size {enc_size}")
    size = size or enc_size
    if size is None:
        raise ValueError("image_size is needed: the encoder has none")
    keep_aspect = getattr(encoder, "keep_aspect_ratio", True)
    autotune = tf.data.AUTOTUNE
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    count = int(dataset.cardinality())
    if training and 0 <= count < batch_size:
        # Training batches drop the remainder: this dataset would give no batch at all.
        raise ValueError(f"the dataset has {count} examples, fewer than batch_size {batch_size}: "
                         "training would see no batch; lower batch_size or add data")

    ds = dataset.map(validate, num_parallel_calls=autotune)
    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))

    train_sizes = [_as_size(s) for s in (getattr(encoder, "train_sizes", None) or ())]
    if training:
        augment = getattr(encoder, "augment", "none") if augment is None else augment
        augment_fn = augment if callable(augment) else aug.preset(augment or "none", size,
                                                                  flip=getattr(encoder, "flip", True))
        if shuffle_buffer:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def _train(example, example_seed):
            example = _fit(augment_fn(example, example_seed), size, keep_aspect)
            return encoder.encode(example)

        if len(train_sizes) > 1:
            ds = _multi_scale(ds, seeds, encoder, augment_fn, train_sizes, keep_aspect, batch_size, seed)
        else:
            ds = tf.data.Dataset.zip(ds, seeds).map(_train, num_parallel_calls=autotune)
            for spec in tf.nest.flatten(ds.element_spec):
                if not spec.shape.is_fully_defined():
                    raise ValueError(
                        f"{type(encoder).__name__}.encode must return static shapes; got {ds.element_spec}"
                    )
        ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=autotune)
    else:
        if augment not in (None, "none"):
            raise ValueError("augment applies to training only; pass training=True or augment=None")
        inputs_fn = getattr(encoder, "inputs", lambda ex: ex[schema.IMAGE])

        def _eval(example):
            example = _fit(example, size, keep_aspect)
            truth = {k: example[k] for k in GROUND_TRUTH_KEYS}
            return inputs_fn(example), truth

        ds = ds.map(_eval, num_parallel_calls=autotune)
        inputs_spec, _ = ds.element_spec
        pads = dict(schema.padding_values())
        pads[aug.IMAGE_INFO] = tf.constant(0.0, tf.float32)
        truth_pads = {k: pads[k] for k in GROUND_TRUTH_KEYS}
        ds = ds.padded_batch(batch_size, padding_values=(_zeros_like_spec(inputs_spec), truth_pads))

    options = tf.data.Options()
    # Multi-scale batches need the examples in order: a parallel map that let one overtake
    # another across a size block would batch two sizes together.
    options.deterministic = seed is not None or not training or len(train_sizes) > 1
    return ds.prefetch(autotune).with_options(options)
