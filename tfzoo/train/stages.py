"""R-CNN's training stages after fine-tuning (Girshick et al. 2014; SPP-Net uses them too):
features cached once, per-class linear SVMs with hard-negative mining, ridge box regression.

**Features** (:func:`feature_cache`). Every training image goes through the fine-tuned
network once, at inference settings, with its ground-truth boxes as the first windows and
its proposals after them. Each window's fc7 vector (the SVMs') and, for proposals with
IoU > ``ridge_iou`` with a box, its pool5 vector (the ridge's) are kept in memory as
float16, scaled so that their mean L2 norm is 20 (the paper's normalization, appendix B),
up to ``stage_cache_gib``: past it, each image keeps a random subset of its negatives.

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
proposals with IoU > ``ridge_iou`` with a box of the class, lambda ``ridge_lambda``
(1,000), intercept unpenalized: :func:`ridge` solves the normal equations in whichever of
the feature and the sample dimensions is smaller.
"""
from __future__ import annotations

import dataclasses
import math
import time

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
    proposals), computed once and kept on the detector until :func:`drop_feature_cache`.
    With a ``deadline`` (``time.monotonic()``), images stop being read once
    :data:`EXTRACT_SHARE` of the time left has passed, or :data:`MIN_EXTRACT_SECONDS` if
    more (the cache and the stage's figures say how many images it holds)."""
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
    fc7_parts, label_parts, pool5_parts, ridge_class_parts, ridge_target_parts = [], [], [], [], []
    fc7_bytes, per_image = 0, None
    budget = config.stage_cache_gib * 2 ** 30
    bar = _bar(progress, total, "stage features")
    images = 0
    for inputs, truth in pipeline(examples, detector, 1, training=False):
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
        fc7 = out["fc7"][0, :len(windows)].numpy().astype(np.float32)
        pool5 = out["pool5"][0, :len(windows)].numpy().astype(np.float32)
        labels, best_iou, best_gt = _window_labels(windows, num_gt, gt_boxes, gt_classes, positive, config)
        if per_image is None:  # the first image sets the negatives each image may keep
            per_image = max(1, int(budget / max(fc7.shape[1] * 2, 1) / max(total or 1000, 1)))
        keep = np.arange(len(windows))
        if len(windows) - num_gt > per_image:
            keep = np.concatenate([np.arange(num_gt), num_gt + np.sort(rng.choice(len(windows) - num_gt, per_image,
                                                                                  replace=False))])
        fc7_parts.append(fc7[keep].astype(np.float16))
        label_parts.append(labels[keep])
        fc7_bytes += fc7_parts[-1].nbytes
        regress = np.flatnonzero((np.arange(len(windows)) >= num_gt) & (best_iou > config.ridge_iou))
        if len(regress):
            pool5_parts.append(pool5[regress].astype(np.float16))
            ridge_class_parts.append(gt_classes[best_gt[regress]])
            ridge_target_parts.append(box_coder.encode(gt_boxes[best_gt[regress]], windows[regress],
                                                       config.box_weights).numpy())
        images += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not images:
        raise ValueError("the training split gave no image to the post-fit stages")
    fc7 = np.concatenate(fc7_parts)
    pool5 = (np.concatenate(pool5_parts) if pool5_parts
             else np.zeros((0, int(detector.__dict__["_features"].output["pool5"].shape[-1])), np.float16))
    fc7_scale, pool5_scale = _scale_of(fc7[:20000]), _scale_of(pool5[:20000])
    cache = FeatureCache(
        fc7=(fc7.astype(np.float32) * fc7_scale).astype(np.float16), labels=np.concatenate(label_parts),
        pool5=(pool5.astype(np.float32) * pool5_scale).astype(np.float16),
        ridge_classes=np.concatenate(ridge_class_parts) if ridge_class_parts else np.zeros((0,), np.int32),
        ridge_targets=np.concatenate(ridge_target_parts) if ridge_target_parts else np.zeros((0, 4), np.float32),
        fc7_scale=fc7_scale, pool5_scale=pool5_scale, images=images, total_images=total or images,
        seconds=round(time.monotonic() - started, 1))
    detector.__dict__["_stage_cache"] = cache
    return cache


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
    """``(kernel [D7, K], bias [K], figures)``: the per-class SVMs of the module doc on
    ``cache``, as weights on the unscaled fc7 (the cache's scale folded in)."""
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
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(k, kernel_regularizer=keras.regularizers.L2(config.svm_l2))])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=_squared_hinge(config.svm_positive_weight))
    added, rounds, loss = [], 0, float("nan")
    for round_number in range(config.svm_rounds + 1):
        rows = np.flatnonzero(active.any(axis=1))
        epochs = max(1, math.ceil(config.svm_steps / math.ceil(len(rows) / SVM_BATCH)))
        history = model.fit(x[rows].astype(np.float32), np.where(active[rows], labels[rows], 0.0),
                            batch_size=SVM_BATCH, epochs=epochs, shuffle=True, verbose=0)
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
               "features_seconds": cache.seconds, "svm_seconds": round(time.monotonic() - started, 1)}
    return kernel * cache.fc7_scale, bias, figures


def fit_ridge(cache, config):
    """``(kernel [D5, 4 K], bias [4 K], figures)``: each class's ridge regressor (module
    doc) on the unscaled pool5, zeros for a class without training windows."""
    k = config.num_classes
    dim = cache.pool5.shape[1]
    kernel = np.zeros((dim, 4 * k), np.float32)
    bias = np.zeros((4 * k,), np.float32)
    trained, residual = 0, []
    for c in range(k):
        rows = np.flatnonzero(cache.ridge_classes == c)
        if not len(rows):
            continue
        x = cache.pool5[rows].astype(np.float64)
        y = cache.ridge_targets[rows].astype(np.float64)
        weights, intercept = ridge(x, y, config.ridge_lambda)
        kernel[:, 4 * c:4 * c + 4] = weights * cache.pool5_scale
        bias[4 * c:4 * c + 4] = intercept
        residual.append(float(np.mean((x @ weights + intercept - y) ** 2) / max(np.mean(y ** 2), 1e-12)))
        trained += 1
    figures = {"ridge_windows": int(len(cache.ridge_classes)), "ridge_classes": trained,
               "ridge_relative_residual": float(np.mean(residual)) if residual else float("nan")}
    return kernel, bias, figures
