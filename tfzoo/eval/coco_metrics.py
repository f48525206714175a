"""COCO box metrics through pycocotools, from in-memory ground truth and results.

Everything stays in memory: the ground truth is a COCO-format dict (``images``,
``annotations``, ``categories``; ``info`` and ``licenses`` are optional) and the results a
list of COCO results entries ``{image_id, category_id, bbox: [x, y, w, h] px, score}``.
The numbers are pycocotools' own (``COCOeval.stats``, ``-1`` where it gives ``-1``: no
ground truth in that area range). pycocotools prints its progress to stdout; here it goes
to the ``tfzoo.eval`` logger at DEBUG level instead, so stdout stays clean.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import warnings

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tfzoo.ops import boxes as box_ops

logger = logging.getLogger("tfzoo.eval")

#: Summary keys, in ``COCOeval.stats`` order (the first nine of its twelve numbers).
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")

NO_DETECTIONS_WARNING = "no detections to evaluate: every AP and AR is 0"

_COCO_INT_ID = re.compile(r"0|[1-9][0-9]*")


@contextlib.contextmanager
def _quiet():
    """Captures pycocotools' prints and logs them at DEBUG level."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            logger.debug("pycocotools:\n%s", text)


def coco_from_dict(dataset):
    """A ``pycocotools.coco.COCO`` indexed from a COCO-format dict (no file, no prints)."""
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def evaluate_coco(dataset, results, warn_empty=True):
    """COCO box AP/AR of ``results`` against the ground truth ``dataset``.

    Args:
      dataset: COCO-format dict. ``images``: ``[{"id"}]``; ``categories``:
        ``[{"id", "name"}]``; ``annotations``: ``[{"id" (>= 1), "image_id",
        "category_id", "bbox": [x, y, w, h], "area", "iscrowd"}]``.
      results: list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
        whose image ids are among ``dataset``'s. Empty is allowed: a warning, and every
        AP/AR is 0 (``-1`` where no ground truth exists, as pycocotools).
      warn_empty: warn (``warnings.warn``) when ``results`` is empty.

    Returns:
      ``(summary, per_category)``: ``summary`` maps :data:`COCO_KEYS` to floats;
      ``per_category`` maps each category id to ``{"AP": AP@[.5:.95], "AP50": AP@.5}``
      (area "all", 100 detections; ``-1`` for a category without ground truth).
    """
    gt = coco_from_dict(dataset)
    with _quiet():
        if results:
            # loadRes adds fields to the entries it is given: hand it copies.
            dt = gt.loadRes([dict(entry) for entry in results])
        else:
            if warn_empty:
                warnings.warn(NO_DETECTIONS_WARNING, stacklevel=2)
            # loadRes cannot take an empty list; an empty result set is a COCO without boxes.
            dt = coco_from_dict(
                {
                    "images": list(dataset["images"]),
                    "categories": copy.deepcopy(dataset["categories"]),
                    "annotations": [],
                }
            )
        evaluation = COCOeval(gt, dt, iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    summary = {key: float(value) for key, value in zip(COCO_KEYS, evaluation.stats)}
    precision = evaluation.eval["precision"]  # [T iou, R recall, K class, A area, M maxDets]
    per_category = {}
    for k, category_id in enumerate(evaluation.params.catIds):
        per_category[category_id] = {
            "AP": _mean_defined(precision[:, :, k, 0, -1]),
            "AP50": _mean_defined(precision[0, :, k, 0, -1]),
        }
    return summary, per_category


def _mean_defined(values):
    """pycocotools' averaging: mean of the entries > -1, or -1 if there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0


def results_image_id(image_id):
    """The ``image_id`` to write in a results file for a canonical example's id.

    COCO ids (decimal text without leading zeros, e.g. ``"139"``) become ints as COCO tools
    expect; anything else (VOC stems such as ``"000005"`` or ``"2008_000001"``) stays text.
    """
    if isinstance(image_id, bytes):
        image_id = image_id.decode("utf-8")
    image_id = str(image_id)
    return int(image_id) if _COCO_INT_ID.fullmatch(image_id) else image_id


def coco_results(image_id, boxes, scores, classes, height, width, category_ids=None, num_detections=None):
    """One image's detections as COCO results entries.

    Args:
      image_id: the example's ``image_id`` (written through :func:`results_image_id`).
      boxes: ``[M, 4]`` ``[y1, x1, y2, x2]`` normalized to the original image.
      scores: ``[M]``; classes: ``[M]`` contiguous ids ``0..C-1``.
      height, width: the original image size in pixels.
      category_ids: ``[C]`` dataset category id of each class; default ``1..C``.
      num_detections: keep only the first ``num_detections`` rows (padded model outputs,
        whose padding rows have class -1).

    Returns:
      list of ``{"image_id", "category_id", "bbox": [x, y, w, h] px, "score"}``.

    Raises:
      ValueError: rows differ in number, or a class id is outside ``0..C-1`` (e.g. padding
        passed without ``num_detections``), which would otherwise be written as a wrong
        category.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if num_detections is not None:
        num_detections = int(num_detections)
        boxes, scores, classes = boxes[:num_detections], scores[:num_detections], classes[:num_detections]
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(f"boxes {len(boxes)}, scores {len(scores)} and classes {len(classes)} rows differ")
    num_classes = len(category_ids) if category_ids is not None else None
    if classes.size and (classes.min() < 0 or (num_classes is not None and classes.max() >= num_classes)):
        upper = "C-1" if num_classes is None else num_classes - 1
        raise ValueError(f"class ids must be in 0..{upper}, got {classes.min()}..{classes.max()}")
    boxes_xywh_px = box_ops.yxyx_to_xywh(box_ops.denormalize(boxes, height, width)).numpy()
    out_id = results_image_id(image_id)
    return [
        {
            "image_id": out_id,
            "category_id": int(category_ids[c]) if category_ids is not None else int(c) + 1,
            "bbox": [round(float(v), 3) for v in box],
            "score": float(s),
        }
        for box, s, c in zip(boxes_xywh_px, scores, classes)
    ]
