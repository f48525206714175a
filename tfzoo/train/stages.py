"""R-CNN's training stages after fine-tuning (Girshick et al. 2014; SPP-Net uses them too):
features cached once, per-class linear SVMs with hard-negative mining, ridge box regression.

**Features** (:func:`feature_cache`). Every training image (in a seeded shuffled order)
goes through the fine-tuned network once, at inference settings, with its ground-truth
boxes as the first windows and its proposals after them. Each window's fc7 vector (the
SVMs') and, for proposals with IoU > ``ridge_iou`` with a box, its pool5 vector (the
ridge's) are kept in memory as float16, scaled so that their mean L2 norm is 20 (the
paper's normalization, appendix B). Each kind stays under ``stage_cache_gib``: past it,
the negatives (and regression windows) of every image are halved at random.

**SVMs** (:func:`train_svms`, sec. 2.3 and appendix B). One linear SVM per class, trained
all at once as a Keras ``Dense(K)`` over the cached fc7 vectors with the squared hinge
loss ``sum_k c_k max(0, 1 - y_k s_k)^2`` (``y_k`` +1 for a ground-truth box of class k,
-1 for a window under ``svm_negative_iou`` IoU with every box of class k, 0 elsewhere;
``c_k`` = ``svm_positive_weight`` on positives) and an L2 penalty. The first round sees
the positives and ``svm_initial_negatives`` random windows; each mining round scores every
cached window and adds the negatives scoring above ``svm_hard_score`` (the paper's
"hard negatives", margin -1) to the training set, then trains again; it stops early when a
round finds none.

**Box regression** (:func:`fit_ridge`, appendix C). For each class, ridge regression from
pool5 to the deltas ``(dy, dx, dh, dw)`` (the config's box coder weights) of its
proposals with IoU > ``ridge_iou`` with a box of the class (at most ``ridge_max_windows``
of them, a random subset), lambda ``ridge_lambda`` (1,000), intercept unpenalized:
:func:`ridge` solves the normal equations in whichever of the feature and the sample
dimensions is smaller.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings

import numpy as np
import tensorflow as tf

from tfzoo.data import schema
from tfzoo.data.pipeline import pipeline
from tfzoo.ops import box_coder
from tfzoo.ops import boxes as box_ops

#: The mean L2 norm the cached features are scaled to (R-CNN, appendix B).
FEATURE_NORM = 20.0
#: Of the time left to the stages, the share feature caching may take (the rest trains).
EXTRACT_SHARE = 0.7
#: Feature caching reads images for at least this long, even past the deadline.
MIN_EXTRACT_SECONDS = 60.0
#: Windows per SVM optimizer step.
SVM_BATCH = 256


@dataclasses.dataclass
class FeatureCache:
    """What the stages learn from (see the module doc): ``fc7 [N, D7]`` float16 with
    ``labels [N, K]`` int8 (+1, -1, 0); ``pool5 [M, D5]`` float16 with ``ridge_classes [M]``
    and ``ridge_targets [M, 4]``; the scales applied; how many images it covers."""

    fc7: np.ndarray
    labels: np.ndarray
    pool5: np.ndarray
    ridge_classes: np.ndarray
    ridge_targets: np.ndarray
    fc7_scale: float
    pool5_scale: float
    images: int
    total_images: int
    seconds: float


def ridge(features, targets, lam):
    """Ridge regression with an unpenalized intercept: ``(W [D, T], b [T])`` minimizing
    ``|X W + b - Y|^2 + lam |W|^2`` for ``features X [N, D]``, ``targets Y [N, T]``, in
    float64 through the ``D x D`` normal equations or, when ``N < D``, the ``N x N`` dual
    ones (the same solution)."""
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"ridge needs features [N, D] and targets [N, T] with N >= 1, got {x.shape} and {y.shape}")
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    n, d = xc.shape
    if d <= n:
        weights = np.linalg.solve(xc.T @ xc + lam * np.eye(d), xc.T @ yc)
    else:  # W = X^T (X X^T + lam I)^-1 Y
        weights = xc.T @ np.linalg.solve(xc @ xc.T + lam * np.eye(n), yc)
    return weights, y_mean - x_mean @ weights


def _scale_of(rows):
    norms = np.linalg.norm(np.asarray(rows, np.float32), axis=1)
    mean = float(norms.mean()) if len(norms) else 0.0
    return FEATURE_NORM / mean if mean > 0 else 1.0


def feature_cache(detector, examples, deadline=None, progress=False, seed=0):
    """The :class:`FeatureCache` of ``detector`` on ``examples`` (canonical examples with
    proposals, read in a seeded shuffled order), computed once and kept on the detector
    until :func:`drop_feature_cache`. With a ``deadline`` (``time.monotonic()``), images stop
    being read once :data:`EXTRACT_SHARE` of the time left has passed, or
    :data:`MIN_EXTRACT_SECONDS` if more (a warning and the stage's figures say how many).
    Memory: the fc7 rows and the pool5 rows each stay under ``stage_cache_gib``: past it,
    every image's stored negatives (pool5: regression windows) are halved at random, and
    the images after keep as many."""
    cached = detector.__dict__.get("_stage_cache")
    if cached is not None:
        return cached
    config = detector.config
    started = time.monotonic()
    stop_at = None if deadline is None else started + max(EXTRACT_SHARE * (deadline - started), MIN_EXTRACT_SECONDS)
    rows = config.max_proposals
    total = int(examples.cardinality()) if int(examples.cardinality()) >= 0 else None
    features = tf.function(detector.stage_features, reduce_retracing=True)
    rng = np.random.default_rng(seed)
    budget = config.stage_cache_gib * 2 ** 30
    fc7_parts = _Parts(budget, rng)  # per image: (gt rows, negative rows) of fc7 with their labels
    pool5_parts = _Parts(budget, rng)  # per image: regression windows of pool5 with class and targets
    bar = _bar(progress, total, "stage features")
    images = 0
    for inputs, truth in pipeline(examples.shuffle(64, seed=seed), detector, 1, training=False):
        if stop_at is not None and images and time.monotonic() > stop_at:
            break
        gt_boxes, gt_classes, positive = _ground_truth(truth)
        proposals = inputs["proposals"][0].numpy()
        proposals = proposals[np.any(proposals != 0.0, axis=-1)]
        windows = np.concatenate([gt_boxes, proposals])[:rows]
        num_gt = min(len(gt_boxes), rows)
        padded = np.zeros((rows, 4), np.float32)
        padded[:len(windows)] = windows
        out = features({"images": inputs["images"], "proposals": padded[None]})
        fc7 = out["fc7"][0, :len(windows)].numpy().astype(np.float16)
        labels, best_iou, best_gt = _window_labels(windows, num_gt, gt_boxes, gt_classes, positive, config)
        fc7_parts.add((fc7[:num_gt], labels[:num_gt]), (fc7[num_gt:], labels[num_gt:]))
        regress = num_gt + np.flatnonzero(best_iou[num_gt:] > config.ridge_iou)
        if len(regress):
            pool5 = out["pool5"][0].numpy()[regress].astype(np.float16)
            targets = box_coder.encode(gt_boxes[best_gt[regress]], windows[regress], config.box_weights).numpy()
            pool5_parts.add(None, (pool5, gt_classes[best_gt[regress]], targets))
        images += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not images:
        raise ValueError("the training split gave no image to the post-fit stages")
    if total is not None and images < total:
        warnings.warn(f"the post-fit stages learn from {images} of the {total} training images: the time budget "
                      "ran out while caching their features (a longer --minutes covers more)")
    fc7, labels = fc7_parts.joined(2)
    pool5, ridge_classes, ridge_targets = pool5_parts.joined(3)
    if pool5 is None:
        dim = int(detector.__dict__["_features"].output["pool5"].shape[-1])
        pool5, ridge_classes, ridge_targets = (np.zeros((0, dim), np.float16), np.zeros((0,), np.int32),
                                               np.zeros((0, 4), np.float32))
    fc7_scale, pool5_scale = _scale_of(fc7[:20000]), _scale_of(pool5[:20000])
    fc7 *= np.float16(fc7_scale)  # in place: no float32 copy of the cache
    pool5 *= np.float16(pool5_scale)
    cache = FeatureCache(fc7=fc7, labels=labels, pool5=pool5, ridge_classes=ridge_classes.astype(np.int32),
                         ridge_targets=ridge_targets.astype(np.float32), fc7_scale=fc7_scale,
                         pool5_scale=pool5_scale, images=images, total_images=total or images,
                         seconds=round(time.monotonic() - started, 1))
    detector.__dict__["_stage_cache"] = cache
    return cache


class _Parts:
    """Per-image rows under a byte budget: ``add(kept, sampled)`` stores one image's rows
    (``kept``: a tuple of aligned arrays always kept, or None; ``sampled``: a tuple whose
    rows may be subsampled). Past the budget every image's ``sampled`` rows are halved at
    random and later images keep at most as many as the fewest kept so far."""

    def __init__(self, budget, rng):
        self.budget, self.rng = budget, rng
        self.kept, self.sampled = [], []
        self.bytes, self.cap = 0, None

    def _subsample(self, arrays, count):
        if len(arrays[0]) <= count:
            return arrays
        pick = np.sort(self.rng.choice(len(arrays[0]), count, replace=False))
        return tuple(a[pick] for a in arrays)

    def add(self, kept, sampled):
        if self.cap is not None:
            sampled = self._subsample(sampled, self.cap)
        self.kept.append(kept)
        self.sampled.append(sampled)
        self.bytes += sum(a.nbytes for a in (kept or ())) + sum(a.nbytes for a in sampled)
        while self.bytes > self.budget and any(len(part[0]) > 1 for part in self.sampled):
            self.cap = max(1, max(len(part[0]) for part in self.sampled) // 2)
            self.sampled = [self._subsample(part, self.cap) for part in self.sampled]
            self.bytes = (sum(a.nbytes for part in self.kept for a in (part or ()))
                          + sum(a.nbytes for part in self.sampled for a in part))

    def joined(self, width):
        """The ``width`` arrays, each image's kept rows then its sampled ones; ``None``
        (all of them) when nothing was stored."""
        parts = [p for pair in zip(self.kept, self.sampled) for p in pair if p is not None and len(p[0])]
        if not parts:
            return (None,) * width
        joined = tuple(np.concatenate([p[i] for p in parts]) for i in range(width))
        self.kept, self.sampled = [], []
        return joined


def drop_feature_cache(detector):
    detector.__dict__.pop("_stage_cache", None)


def _bar(progress, total, desc):
    if not progress:
        return None
    import sys  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(desc=desc, total=total, unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)


def _ground_truth(truth):
    """``(boxes [G, 4], classes [G], positive [G])`` of one evaluation batch's ground truth:
    the valid rows; ``positive`` False for crowd or difficult boxes (no SVM positive, no
    ridge target, but still never a negative of their class)."""
    classes = truth[schema.CLASSES][0].numpy().astype(np.int32)
    valid = classes >= 0
    boxes = truth[schema.BOXES][0].numpy().astype(np.float32)[valid]
    ignore = (truth[schema.IS_CROWD][0].numpy() | truth[schema.DIFFICULT][0].numpy())[valid]
    return boxes, classes[valid], ~ignore.astype(bool)


def _window_labels(windows, num_gt, gt_boxes, gt_classes, positive, config):
    """``(labels [N, K] int8, best_iou [N], best_gt [N])`` of one image's windows (the first
    ``num_gt`` its ground-truth boxes): +1 for a positive ground-truth box's own class, -1
    for a class none of whose boxes the window overlaps by ``svm_negative_iou``; the best
    IoU with a positive box and which one (for the ridge)."""
    k = config.num_classes
    labels = np.full((len(windows), k), -1, np.int8)
    best_iou = np.zeros(len(windows), np.float32)
    best_gt = np.zeros(len(windows), np.int64)
    if len(gt_boxes):
        iou = box_ops.iou(tf.constant(windows), tf.constant(gt_boxes)).numpy()  # [N, G]
        for c in np.unique(gt_classes):
            overlap = iou[:, gt_classes == c].max(axis=1)
            labels[overlap >= config.svm_negative_iou, c] = 0
        rows = np.arange(num_gt)
        labels[rows[positive[:num_gt]], gt_classes[:num_gt][positive[:num_gt]]] = 1
        scored = np.where(positive[None, :], iou, -1.0)
        best_gt = scored.argmax(axis=1)
        best_iou = scored.max(axis=1)
    return labels, best_iou, best_gt


def _squared_hinge(positive_weight):
    def loss(labels, scores):
        labels = tf.cast(labels, tf.float32)
        weights = tf.where(labels > 0, positive_weight, tf.abs(labels))  # 0 where the class ignores the row
        return tf.reduce_sum(weights * tf.square(tf.nn.relu(1.0 - labels * scores)), axis=-1)
    return loss


def train_svms(cache, config, deadline=None, progress=False, seed=0):
    """``(kernel [D7, K], bias [K], ready [K], figures)``: the per-class SVMs of the module
    doc on ``cache``, as weights on the unscaled fc7 (the cache's scale folded in); a class
    without a positive window is not ready (it keeps the softmax's scores)."""
    import keras  # noqa: PLC0415

    started = time.monotonic()
    x = cache.fc7
    labels = cache.labels.astype(np.float32)
    k = labels.shape[1]
    rng = np.random.default_rng(seed)
    positives = (labels > 0).any(axis=1)
    negatives = np.flatnonzero((labels < 0).any(axis=1) & ~positives)
    active = np.zeros_like(labels, bool)  # which (row, class) pairs train
    active[labels > 0] = True
    first = rng.choice(negatives, min(len(negatives), config.svm_initial_negatives), replace=False)
    active[first] = labels[first] < 0
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(k, kernel_initializer="zeros", dtype="float32",  # not the run's policy
                                                 kernel_regularizer=keras.regularizers.L2(config.svm_l2))])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=_squared_hinge(config.svm_positive_weight))
    added, rounds, loss = [], 0, float("nan")
    for round_number in range(config.svm_rounds + 1):
        rows = np.flatnonzero(active.any(axis=1))
        steps = max(config.svm_steps, math.ceil(len(rows) / SVM_BATCH))  # at least one pass over the rows
        windows = tf.data.Dataset.from_tensor_slices((x[rows].astype(np.float32),
                                                      np.where(active[rows], labels[rows], 0.0)))
        windows = windows.shuffle(min(len(rows), 65536), seed=seed + round_number).repeat().batch(SVM_BATCH)
        history = model.fit(windows, epochs=1, steps_per_epoch=steps, verbose=0)
        loss = float(history.history["loss"][-1])
        rounds = round_number
        if round_number == config.svm_rounds or (deadline is not None and time.monotonic() > deadline):
            break
        kernel, bias = model.layers[-1].get_weights()
        scores = np.concatenate([x[i:i + 65536].astype(np.float32) @ kernel + bias
                                 for i in range(0, len(x), 65536)])  # in slices: no float32 copy of the cache
        hard = (labels < 0) & (scores > config.svm_hard_score) & ~active
        added.append(int(hard.sum()))
        if progress:
            print(f"  svm mining round {round_number + 1}: {added[-1]} hard negatives "
                  f"(loss {loss:.4f})", flush=True)
        if not hard.any():
            break
        active |= hard
    kernel, bias = model.layers[-1].get_weights()
    figures = {"svm_loss": loss, "mining_rounds": rounds, "hard_negatives": int(sum(added)),
               "positives": int((labels > 0).sum()), "windows": int(len(x)), "images": cache.images,
               "train_images": cache.total_images,
               "features_seconds": cache.seconds, "svm_seconds": round(time.monotonic() - started, 1)}
    ready = (labels > 0).any(axis=0).astype(np.float32)
    figures["svm_classes"] = int(ready.sum())
    return kernel * cache.fc7_scale, bias, ready, figures


def fit_ridge(cache, config, seed=0):
    """``(kernel [D5, 4 K], bias [4 K], ready [4 K], figures)``: each class's ridge regressor
    (module doc) on the unscaled pool5, from at most ``ridge_max_windows`` of its windows (a
    random subset beyond); a class without windows is not ready (it keeps fit's boxes)."""
    rng = np.random.default_rng(seed)
    k = config.num_classes
    dim = cache.pool5.shape[1]
    kernel = np.zeros((dim, 4 * k), np.float32)
    bias = np.zeros((4 * k,), np.float32)
    ready = np.zeros((4 * k,), np.float32)
    residual = []
    for c in range(k):
        rows = np.flatnonzero(cache.ridge_classes == c)
        if not len(rows):
            continue
        if len(rows) > config.ridge_max_windows:
            rows = np.sort(rng.choice(rows, config.ridge_max_windows, replace=False))
        x = cache.pool5[rows].astype(np.float64)
        y = cache.ridge_targets[rows].astype(np.float64)
        weights, intercept = ridge(x, y, config.ridge_lambda)
        kernel[:, 4 * c:4 * c + 4] = weights * cache.pool5_scale
        bias[4 * c:4 * c + 4] = intercept
        ready[4 * c:4 * c + 4] = 1.0
        residual.append(float(np.mean((x @ weights + intercept - y) ** 2) / max(np.mean(y ** 2), 1e-12)))
    figures = {"ridge_windows": int(len(cache.ridge_classes)), "ridge_classes": len(residual),
               "ridge_relative_residual": float(np.mean(residual)) if residual else float("nan")}
    return kernel, bias, ready, figures
