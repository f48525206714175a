"""Balanced positive/negative sampling and SSD hard-negative mining, with static shapes.

Both return boolean masks the shape of their input, so they run inside ``tf.data``, under
``tf.function`` and in a TFLite-free training graph without dynamic shapes.

Randomness: unseeded calls draw anew each time; seeded ones are deterministic and take the
step (or an example's index) to fold into the seed (:func:`sampling_seed`), so that each
training step draws other candidates.

Input convention (the matcher's and the class targets'): a value ``>= 0`` is a positive
(a ground-truth index or a class id), ``BACKGROUND`` (-1) a negative, ``IGNORE`` (-2)
neither.

Shape legend: B batch, A anchors, N candidates (anchors or proposals); ``...`` any
leading dimensions.
"""
from __future__ import annotations

import tensorflow as tf

from tfzoo.ops.matcher import BACKGROUND


def _ranks(scores):
    """Rank of each entry along the last axis when sorted by descending score (0 = top)."""
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def sampling_seed(seed, *keys):
    """A ``[2]`` int64 stateless seed: ``seed`` (a Python int or a ``[2]`` tensor) with each
    key (Python or int tensor: an example's index, the training step, ...) folded in by
    ``tf.random.experimental.stateless_fold_in``. Different keys give unrelated draws, the
    same keys the same draws."""
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    seed = tf.cast(seed, tf.int64)
    for key in keys:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(key, tf.int64))
    return seed


def _uniform(shape, seed, step):
    if seed is None:
        if step is not None:
            raise ValueError("step needs a seed (with seed=None every call draws anew)")
        return tf.random.uniform(shape)
    if step is None and tf.convert_to_tensor(seed).shape.rank == 0:
        raise ValueError(f"an int seed ({seed}) draws the same samples at every call, so the same candidates "
                         "would win every training step: pass step= (the optimizer step, an example's index) or "
                         "a [2] seed made per call with sampling_seed(seed, ...)")
    return tf.random.stateless_uniform(shape, seed=sampling_seed(seed, *(() if step is None else (step,))))


def _balanced(labels, num_samples, positive_fraction, seed, step):
    """The sample mask, the positive mask and the noise that ranked the candidates."""
    labels = tf.convert_to_tensor(labels)
    positive = labels >= 0
    negative = tf.equal(labels, tf.cast(BACKGROUND, labels.dtype))
    noise = _uniform(tf.shape(labels), seed, step)  # [..., N] in [0, 1)
    max_pos = int(num_samples * positive_fraction)
    count_pos = tf.reduce_sum(tf.cast(positive, tf.int32), axis=-1, keepdims=True)  # [..., 1]
    count_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=-1, keepdims=True)  # [..., 1]
    num_pos = tf.minimum(count_pos, max_pos)
    num_neg = tf.minimum(count_neg, num_samples - num_pos)
    pos_rank = _ranks(tf.where(positive, noise, -1.0))
    neg_rank = _ranks(tf.where(negative, noise, -1.0))
    mask = (positive & (pos_rank < num_pos)) | (negative & (neg_rank < num_neg))
    return mask, positive, noise


def sample_balanced(labels, num_samples, positive_fraction, seed=None, step=None):
    """Draws up to ``num_samples`` candidates, at most ``positive_fraction`` of them positive.

    detectron2's ``subsample_labels``: ``num_pos = min(#positives, int(num_samples *
    positive_fraction))`` positives drawn uniformly, then ``num_neg = min(#negatives,
    num_samples - num_pos)`` negatives fill the rest. The total is
    ``min(num_samples, #positives + #negatives)`` unless negatives run out (positives are
    never drawn beyond their share). Sampled independently along the last axis for every
    leading index (image).

    Paper settings: RPN 256 anchors per image at 0.5 (Faster R-CNN); Fast R-CNN 128 RoIs
    per image at 0.25 (64 per image in a batch of 2 images, 25% foreground). The seed
    describes "64 positives and 64 negatives" per batch instead; pass ``(128, 0.5)`` for
    that.

    Args:
      labels: int ``[..., N]`` matches or class targets (``>= 0`` positive, -1 negative,
        -2 ignored).
      num_samples: Python int, samples per row.
      positive_fraction: float in [0, 1].
      seed: ``None`` (stateful random op: new draws at every call), a Python int, or a
        shape ``[2]`` int tensor (``tf.random.stateless_*`` seed). Seeded calls are
        deterministic: an int seed must come with ``step``, or every training step would
        draw the same candidates.
      step: with a seed, an int or int tensor folded into it (:func:`sampling_seed`): the
        optimizer step in a train step, an example's index and epoch in ``tf.data``.

    Returns:
      bool ``[..., N]``, True for the sampled candidates.
    """
    return _balanced(labels, num_samples, positive_fraction, seed, step)[0]


def sample_balanced_indices(labels, num_samples, positive_fraction, seed=None, step=None):
    """:func:`sample_balanced` as a fixed number of indices, what a RoI head gathers.

    Returns:
      ``(indices, valid)``: int32 ``[..., num_samples]`` positions along the last axis of
      ``labels``, the sampled positives first, then the sampled negatives, each group in
      random order; bool ``[..., num_samples]``, False for the padding slots at the end
      (index 0) when fewer than ``num_samples`` were drawn.
    """
    mask, positive, noise = _balanced(labels, num_samples, positive_fraction, seed, step)
    group = tf.where(mask & positive, 2.0, tf.where(mask, 1.0, 0.0))
    order = tf.argsort(group + 0.5 * noise, axis=-1, direction="DESCENDING", stable=True)  # [..., N]
    order = tf.cast(order, tf.int32)
    pad = tf.zeros(tf.concat([tf.shape(order)[:-1], [num_samples]], axis=0), tf.int32)
    order = tf.concat([order, pad], axis=-1)[..., :num_samples]  # [..., num_samples]
    count = tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1, keepdims=True)  # [..., 1]
    valid = tf.range(num_samples) < count
    return tf.where(valid, order, 0), valid


def hard_negative_mining(classification_loss, positive_mask, negative_mask=None, neg_pos_ratio=3.0, min_negatives=0):
    """SSD's hard-negative mining: the highest-loss negatives, ``neg_pos_ratio`` per positive.

    Per row (image) keeps the ``min(max(floor(neg_pos_ratio * #positives), min_negatives),
    #candidates)`` candidate negatives with the largest ``classification_loss`` (SSD: 3:1).
    Sort-based: exactly that many, ties broken by position; static shapes.

    Args:
      classification_loss: float ``[B, A]`` (or ``[..., A]``) per-anchor loss, e.g. the
        background cross-entropy; not differentiated through.
      positive_mask: bool ``[B, A]`` positives.
      negative_mask: optional bool ``[B, A]`` candidate negatives; default
        ``~positive_mask`` (pass ``matches == BACKGROUND`` to leave ignored anchors out).
      neg_pos_ratio: negatives per positive.
      min_negatives: negatives kept even in a row without positives.

    Returns:
      bool ``[B, A]``, True for the selected negatives (disjoint from ``positive_mask``).
    """
    loss = tf.stop_gradient(tf.cast(classification_loss, tf.float32))
    positive_mask = tf.cast(positive_mask, tf.bool)
    candidates = ~positive_mask if negative_mask is None else tf.cast(negative_mask, tf.bool) & ~positive_mask
    num_pos = tf.reduce_sum(tf.cast(positive_mask, tf.float32), axis=-1, keepdims=True)  # [B, 1]
    num_candidates = tf.reduce_sum(tf.cast(candidates, tf.int32), axis=-1, keepdims=True)  # [B, 1]
    num_neg = tf.cast(tf.floor(neg_pos_ratio * num_pos), tf.int32)
    num_neg = tf.minimum(tf.maximum(num_neg, min_negatives), num_candidates)  # [B, 1]
    # Candidates first (by descending loss, finite or +inf), everything else after.
    rank = _ranks(tf.where(candidates, tf.maximum(loss, -tf.float32.max), -float("inf")))
    return candidates & (rank < num_neg)
