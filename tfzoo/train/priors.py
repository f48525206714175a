"""Priors fitted to a dataset's boxes: ``tfzoo anchors`` and ``--set priors=auto``.

YOLOv2's dimension clusters (Redmon & Farhadi 2017, sec. 2 "Dimension Clusters"): k-means
on the training boxes' (h, w) with the distance ``1 - IoU`` (:func:`tfzoo.ops.anchors.kmeans_priors`).
The YOLOs warp each image to their square input, so a box's size as a fraction of its
image is its size as a fraction of the input: the priors are fitted on those fractions,
and serve at any input size.
"""
from __future__ import annotations

import numpy as np

#: Training images whose boxes the priors are fitted on (the first ones of the split).
PRIOR_IMAGES = 5000
#: ``tfzoo train`` says that the data's own priors would fit better when their mean IoU
#: with the boxes beats the config's by this much.
BETTER_BY = 0.05
#: The ``--set priors=...`` value that fits the priors to the training data.
AUTO = "auto"


def box_sizes(dataset, limit=PRIOR_IMAGES):
    """``[N, 2]`` float32 (h, w) of the boxes of the first ``limit`` examples of ``dataset``
    (canonical examples, normalized boxes), crowd regions left out."""
    sizes = []
    for example in dataset.take(limit).as_numpy_iterator():
        boxes = np.asarray(example["boxes"], np.float32).reshape(-1, 4)
        keep = ~np.asarray(example.get("is_crowd", np.zeros(len(boxes), bool)), bool)
        hw = boxes[keep, 2:] - boxes[keep, :2]
        sizes.append(hw[(hw > 0).all(axis=1)])
    return np.concatenate(sizes) if sizes else np.zeros([0, 2], np.float32)


def mean_iou(sizes, priors):
    """Mean over boxes of the shape IoU with their best prior."""
    from tfzoo.ops import anchors  # noqa: PLC0415

    if not len(sizes):
        return float("nan")
    return float(np.mean(np.max(anchors.shape_iou(sizes, np.asarray(priors, np.float32)).numpy(), axis=1)))


def fit(sizes, k, seed=0):
    """``(priors, mean_iou)``: ``k`` priors ((h, w) fractions, by area ascending, 6 places)."""
    from tfzoo.ops import anchors  # noqa: PLC0415

    if len(sizes) < k:
        raise ValueError(f"k-means needs at least {k} boxes, the data has {len(sizes)}")
    priors, iou = anchors.kmeans_priors(np.asarray(sizes, np.float32), k, seed=seed)
    return tuple((round(float(h), 6), round(float(w), 6)) for h, w in priors.numpy()), float(iou)


def masks_for(k, outputs):
    """Masks that give each of ``outputs`` maps ``k / outputs`` priors, the largest to the
    coarsest map (stride 32 first), as YOLOv3's."""
    if k % outputs:
        raise ValueError(f"{k} priors do not split evenly over {outputs} outputs")
    per = k // outputs
    return tuple(tuple(range(k - per * (i + 1), k - per * i)) for i in range(outputs))


def report(sizes, config, k=None, seed=0):
    """What ``tfzoo anchors`` prints, as a dict: the fitted priors (fractions and pixels at
    ``config.image_size``), their mean IoU with the boxes and the config's own priors' mean
    IoU, and the ``--set`` arguments that use them."""
    k = len(config.priors) if k is None else int(k)
    priors, iou = fit(sizes, k, seed)
    masks = config.masks if k == len(config.priors) else masks_for(k, len(config.masks))
    settings = [f"priors={_compact(priors)}"]
    if masks != config.masks:
        settings.append(f"masks={_compact(masks)}")
    size = config.image_size
    return {
        "model": config.name,
        "boxes": int(len(sizes)),
        "k": k,
        "priors": [list(p) for p in priors],
        "priors_px": [[round(h * size, 1), round(w * size, 1)] for h, w in priors],
        "image_size": size,
        "mean_iou": round(iou, 4),
        "default_priors_mean_iou": round(mean_iou(sizes, config.priors), 4),
        "masks": [list(m) for m in masks],
        "settings": settings,
    }


def _compact(nested):
    return str([list(p) for p in nested]).replace(" ", "")
