"""Accumulates ground truth and detections image by image, then scores COCO and VOC metrics.

Usage::

    from tfzoo import data
    evaluator = Evaluator(data.class_names(spec), data.category_ids(spec))
    evaluator.add_ground_truth_examples(data.load(spec, "val"))    # tqdm bar on stderr
    evaluator.add_results("results.json")     # or add_detections / add_inference_outputs
    metrics = evaluator.result()               # plain floats and ints: json.dumps-able

or in one call ``evaluate_results_file("results.json", data.load(spec, "val"),
data.class_names(spec), data.category_ids(spec))``. Nothing here prints to stdout.

Every evaluated image needs its ground truth (possibly zero boxes): it gives the image's
size in pixels and the set of images the metrics run over. Detections for an image with no
ground truth are an error.

:meth:`Evaluator.result` returns a dict with exactly these keys:

- ``AP AP50 AP75 APs APm APl AR1 AR10 AR100``: pycocotools' box metrics (``-1`` where it
  gives ``-1``, e.g. ``APs`` without small objects);
- ``voc07_mAP``, ``voc12_mAP``: Pascal VOC mAP at IoU 0.5, 11-point and all-point
  (see :mod:`tfzoo.eval.voc_metrics`);
- ``per_class``: ``{class_name: {"AP", "AP50", "voc07_AP", "voc12_AP", "num_gt"}}``, where
  ``num_gt`` counts boxes that are neither crowd nor difficult and each AP is ``-1`` for a
  class without such boxes (left out of every mean).

Conventions shared by both metrics:

- COCO metrics see ``difficult`` boxes as ``iscrowd=1`` ignore regions (as mmdetection
  does for VOC); VOC metrics see ``is_crowd`` boxes as difficult. Either way a detection
  on them is neither a true nor a false positive.
- Boxes are compared in pixels of the original image (``height`` x ``width`` of the ground
  truth), continuous coordinates, no ``+1``. Object areas for APs/APm/APl are box areas in
  pixels unless ``area`` is given (COCO's official areas are segmentation areas: the COCO
  reader passes them on, so tfzoo's APs/APm/APl equal pycocotools' on the same file).
- Detection boxes with ``x2 < x1`` or ``y2 < y1`` are made empty: they match nothing.
"""
from __future__ import annotations

import collections
import json
import math
import numbers
import os
import sys
import warnings

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfzoo.data import schema
from tfzoo.eval import coco_metrics, voc_metrics
from tfzoo.ops import boxes as box_ops

RESULT_KEYS = coco_metrics.COCO_KEYS + ("voc07_mAP", "voc12_mAP", "per_class")

# Ground-truth boxes are normalized; readers clip, so anything far outside [0, 1] is pixels.
_NORMALIZED_TOLERANCE = 0.01

_GroundTruth = collections.namedtuple(
    "_GroundTruth", ["boxes_px", "classes", "is_crowd", "difficult", "height", "width", "area"]
)


def image_key(image_id):
    """An image id as the text key used throughout (bytes decoded, ints as decimal text)."""
    if isinstance(image_id, (np.ndarray, tf.Tensor)):
        image_id = np.asarray(image_id)
        if image_id.shape != ():
            raise ValueError(f"image_id must be a scalar, got shape {image_id.shape}")
        image_id = image_id.item()
    if isinstance(image_id, bytes):
        return image_id.decode("utf-8")
    if isinstance(image_id, str):
        return image_id
    if isinstance(image_id, numbers.Integral) and not isinstance(image_id, bool):
        return str(int(image_id))
    raise ValueError(f"image_id must be text or an integer, got {image_id!r}")


class Evaluator:
    """COCO (pycocotools) and VOC07/VOC12 box metrics accumulated over images.

    Args:
      class_names: ``[C]`` names of the contiguous classes ``0..C-1`` (unique).
      category_ids: ``[C]`` the dataset's own category id of each class (COCO: 1..90 with
        gaps); default ``1..C``. Used in results files and inside pycocotools.
      voc_iou_threshold: VOC match threshold; a match needs IoU strictly greater.
    """

    def __init__(self, class_names, category_ids=None, voc_iou_threshold=0.5):
        self.class_names = [str(name) for name in class_names]
        if not self.class_names:
            raise ValueError("class_names is empty")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be unique, got {self.class_names}")
        num_classes = len(self.class_names)
        if category_ids is None:
            category_ids = range(1, num_classes + 1)
        self.category_ids = [int(c) for c in category_ids]
        if len(self.category_ids) != num_classes:
            raise ValueError(f"{len(self.category_ids)} category_ids for {num_classes} classes")
        if len(set(self.category_ids)) != num_classes:
            raise ValueError(f"category_ids must be unique, got {self.category_ids}")
        self.voc_iou_threshold = float(voc_iou_threshold)
        self._class_of_category = {c: k for k, c in enumerate(self.category_ids)}
        self._class_of_name = {name: k for k, name in enumerate(self.class_names)}
        self._ground_truth = {}  # image key -> _GroundTruth
        self._detections = collections.defaultdict(list)  # image key -> [(boxes, scores, classes, normalized)]

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_ids(self):
        """Image keys with ground truth, in the order they were added."""
        return list(self._ground_truth)

    # --- ground truth -------------------------------------------------------------------

    def add_ground_truth(self, image_id, boxes, classes, height, width, is_crowd=None, difficult=None, area=None):
        """Adds one image's ground truth (may have zero boxes).

        Args:
          image_id: the example's ``image_id`` (str, bytes or int); unique.
          boxes: ``[G, 4]`` ``[y1, x1, y2, x2]`` normalized to the image.
          classes: ``[G]`` contiguous ids; rows with :data:`schema.PAD_CLASS` are padding
            and dropped.
          height, width: image size in pixels.
          is_crowd, difficult: ``[G]`` bool, default all False.
          area: ``[G]`` object areas in pixels for APs/APm/APl (COCO's ``area``, the
            segment's); default, and for entries below 0 (:data:`schema.NO_AREA`), box areas.
        """
        key = image_key(image_id)
        if key in self._ground_truth:
            raise ValueError(f"ground truth for image {key!r} was already added")
        height, width = int(height), int(width)
        if height <= 0 or width <= 0:
            raise ValueError(f"image {key!r}: height and width must be positive, got {height}x{width}")
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        classes = np.asarray(classes).reshape(-1).astype(np.int64)
        num = len(classes)
        is_crowd = np.zeros([num], bool) if is_crowd is None else np.asarray(is_crowd, bool).reshape(-1)
        difficult = np.zeros([num], bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
        area = None if area is None else np.asarray(area, np.float64).reshape(-1)
        for name, value in (("boxes", boxes), ("is_crowd", is_crowd), ("difficult", difficult), ("area", area)):
            if value is not None and len(value) != num:
                raise ValueError(f"image {key!r}: {name} has {len(value)} rows for {num} classes")
        keep = classes != schema.PAD_CLASS
        boxes, classes, is_crowd, difficult = boxes[keep], classes[keep], is_crowd[keep], difficult[keep]
        area = None if area is None else area[keep]
        self._check_classes(classes, f"image {key!r} ground truth")
        if not np.all(np.isfinite(boxes)):
            raise ValueError(f"image {key!r}: ground-truth boxes are not finite")
        if boxes.size and (boxes.min() < -_NORMALIZED_TOLERANCE or boxes.max() > 1 + _NORMALIZED_TOLERANCE):
            raise ValueError(
                f"image {key!r}: ground-truth boxes must be normalized to [0, 1], got values in "
                f"[{boxes.min():.3g}, {boxes.max():.3g}]"
            )
        boxes_px = box_ops.denormalize(boxes, height, width).numpy()
        self._ground_truth[key] = _GroundTruth(boxes_px, classes, is_crowd, difficult, height, width, area)

    def add_ground_truth_examples(self, examples, progress=True):
        """Adds the ground truth of canonical examples (unbatched numpy dicts).

        ``examples``: an iterable of examples (e.g. ``tfzoo.data.load(spec, split)
        .as_numpy_iterator()``) or an unbatched ``tf.data.Dataset``. Height and width come
        from ``image``. A tqdm bar on stderr shows progress unless ``progress=False``.
        Returns the number of examples added.
        """
        total = None
        if isinstance(examples, tf.data.Dataset):
            cardinality = int(examples.cardinality())
            total = cardinality if cardinality >= 0 else None
            examples = examples.as_numpy_iterator()
        elif hasattr(examples, "__len__"):
            total = len(examples)
        count = 0
        bar = tqdm(examples, total=total, desc="ground truth", unit="img", file=sys.stderr, disable=None if progress else True)
        for example in bar:
            image = np.asarray(example[schema.IMAGE])
            if image.ndim != 3:
                raise ValueError(
                    f"examples must be unbatched ([H, W, 3] images), got an image of shape {image.shape}"
                )
            self.add_ground_truth(
                example[schema.IMAGE_ID],
                example[schema.BOXES],
                example[schema.CLASSES],
                height=image.shape[0],
                width=image.shape[1],
                is_crowd=example.get(schema.IS_CROWD),
                difficult=example.get(schema.DIFFICULT),
                area=example.get(schema.AREA),
            )
            count += 1
        return count

    # --- detections ---------------------------------------------------------------------

    def add_detections(self, image_id, boxes, scores, classes, num_detections=None):
        """Adds one image's detections; several calls for one image accumulate.

        Args:
          image_id: as in :meth:`add_ground_truth`.
          boxes: ``[M, 4]`` ``[y1, x1, y2, x2]`` normalized to the *original* image (undo any
            resize padding first).
          scores: ``[M]``; classes: ``[M]`` contiguous ids ``0..C-1``.
          num_detections: keep only the first ``num_detections`` rows (padded outputs).
        """
        self._add(image_id, boxes, scores, classes, num_detections, normalized=True)

    def add_detections_xywh_px(self, image_id, boxes_xywh_px, scores, classes):
        """Adds detections given as COCO ``[x, y, w, h]`` pixels of the original image."""
        boxes_px = box_ops.xywh_to_yxyx(np.asarray(boxes_xywh_px, np.float64).reshape(-1, 4)).numpy()
        self._add(image_id, boxes_px, scores, classes, None, normalized=False)

    def add_inference_outputs(self, image_ids, outputs):
        """Adds a model's output dict (the serving signature's keys).

        ``outputs``: ``detection_boxes [B, M, 4]``, ``detection_scores [B, M]``,
        ``detection_classes [B, M]``, optional ``num_detections [B]``, with
        ``image_ids [B]``; or the same without the batch dimension and a scalar image id.
        Boxes must be normalized to the original images.
        """
        boxes = np.asarray(outputs["detection_boxes"])
        scores = np.asarray(outputs["detection_scores"])
        classes = np.asarray(outputs["detection_classes"])
        num = outputs.get("num_detections")
        if boxes.ndim == 2:  # one unbatched image
            boxes, scores, classes = boxes[None], scores[None], classes[None]
        image_ids = np.asarray(image_ids).reshape(-1)
        if boxes.ndim != 3 or len(image_ids) != len(boxes):
            raise ValueError(f"{len(image_ids)} image ids for detection_boxes of shape {boxes.shape}")
        num = [None] * len(boxes) if num is None else np.asarray(num).reshape(-1)
        for b, image_id in enumerate(image_ids):
            self.add_detections(image_id, boxes[b], scores[b], classes[b], num[b])

    def _add(self, image_id, boxes, scores, classes, num_detections, normalized):
        key = image_key(image_id)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        classes = np.asarray(classes).reshape(-1)
        if num_detections is not None:
            num_detections = int(num_detections)
            boxes, scores, classes = boxes[:num_detections], scores[:num_detections], classes[:num_detections]
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(
                f"image {key!r}: boxes {len(boxes)}, scores {len(scores)} and classes {len(classes)} rows differ"
            )
        if classes.size and not np.all(classes == np.round(classes)):
            raise ValueError(f"image {key!r}: detection classes must be integers")
        classes = classes.astype(np.int64)
        self._check_classes(classes, f"image {key!r} detections")
        if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
            raise ValueError(f"image {key!r}: detection boxes or scores are not finite")
        boxes = boxes.copy()
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])  # inverted -> empty
        if len(scores):
            self._detections[key].append((boxes, scores, classes, normalized))

    def _check_classes(self, classes, where):
        if classes.size and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise ValueError(
                f"{where}: class ids must be in 0..{self.num_classes - 1}, got {classes.min()}..{classes.max()}"
            )

    # --- COCO results files -------------------------------------------------------------

    def add_results(self, results, unknown_images="error"):
        """Adds detections from a COCO results file (path) or its parsed list.

        Each entry is ``{"image_id", "category_id", "bbox": [x, y, w, h] px of the original
        image, "score"}``. ``image_id`` is an int (COCO, compared as decimal text with the
        examples' ids) or text (VOC file stems). ``category_id`` is one of ``category_ids``
        or a class name. A malformed entry raises ``ValueError`` naming its index.
        ``unknown_images``: ``"error"`` (default) raises on an image id without ground
        truth; ``"skip"`` drops such entries with one warning (evaluating a subset).
        Returns the number of entries added.
        """
        if unknown_images not in ("error", "skip"):
            raise ValueError(f"unknown_images must be 'error' or 'skip', got {unknown_images!r}")
        where = "results"
        if isinstance(results, (str, os.PathLike)):
            where = f"{os.fspath(results)}"
            with open(results, encoding="utf-8") as f:
                try:
                    results = json.load(f)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{where}: not valid JSON ({error})") from None
        if not isinstance(results, (list, tuple)):
            raise ValueError(f"{where}: a results file holds a JSON list of entries, got {type(results).__name__}")
        grouped = collections.defaultdict(lambda: ([], [], []))
        skipped = []
        for index, entry in enumerate(results):
            parsed = self._parse_entry(entry, f"{where}[{index}]", skip_unknown=unknown_images == "skip")
            if parsed is None:
                skipped.append(entry["image_id"])
                continue
            key, box, score, cls = parsed
            grouped[key][0].append(box)
            grouped[key][1].append(score)
            grouped[key][2].append(cls)
        if skipped:
            warnings.warn(
                f"{where}: skipped {len(skipped)} entries of {len(set(map(str, skipped)))} image ids without "
                f"ground truth (e.g. {skipped[0]!r})",
                stacklevel=2,
            )
        for key, (boxes, scores, classes) in grouped.items():
            self.add_detections_xywh_px(key, boxes, scores, classes)
        return sum(len(scores) for _, scores, _ in grouped.values())

    def _parse_entry(self, entry, where, skip_unknown):
        """Validates one results entry -> ``(image key, bbox, score, class)`` or None (skip)."""
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: entry must be an object, got {type(entry).__name__}")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        image_id = entry["image_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, (str, numbers.Integral)):
            raise ValueError(f"{where}: image_id must be an integer or text, got {image_id!r}")
        key = image_key(image_id)
        if key not in self._ground_truth:
            if skip_unknown:
                return None
            example = next(iter(self._ground_truth), None)
            raise ValueError(
                f"{where}: image_id {image_id!r} is not among the {len(self._ground_truth)} ground-truth images "
                f"(e.g. {example!r}); pass unknown_images='skip' to evaluate a subset"
            )
        category = entry["category_id"]
        if isinstance(category, str):
            if category not in self._class_of_name:
                raise ValueError(f"{where}: unknown category name {category!r}")
            cls = self._class_of_name[category]
        elif isinstance(category, numbers.Integral) and not isinstance(category, bool):
            if int(category) not in self._class_of_category:
                raise ValueError(
                    f"{where}: unknown category_id {category!r} (known: {sorted(self._class_of_category)} "
                    "or a class name)"
                )
            cls = self._class_of_category[int(category)]
        else:
            raise ValueError(f"{where}: category_id must be an integer or a class name, got {category!r}")
        bbox = entry["bbox"]
        if (
            not isinstance(bbox, (list, tuple, np.ndarray))
            or len(bbox) != 4
            or not all(_is_real(v) for v in bbox)
        ):
            raise ValueError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        if not all(math.isfinite(v) for v in bbox):
            raise ValueError(f"{where}: bbox is not finite: {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{where}: bbox width and height must be >= 0, got {bbox!r}")
        score = entry["score"]
        if not _is_real(score) or not math.isfinite(score):
            raise ValueError(f"{where}: score must be a finite number, got {score!r}")
        return key, [float(v) for v in bbox], float(score), cls

    # --- metrics ------------------------------------------------------------------------

    def result(self):
        """COCO and VOC metrics over everything added so far (see the module docstring)."""
        if not self._ground_truth:
            raise ValueError("no ground truth was added: nothing to evaluate")
        unknown = [key for key in self._detections if key not in self._ground_truth]
        if unknown:
            raise ValueError(f"detections for {len(unknown)} images without ground truth, e.g. {unknown[0]!r}")
        detections = {key: self._image_detections(key) for key in self._detections}
        if not detections:
            warnings.warn(coco_metrics.NO_DETECTIONS_WARNING, stacklevel=2)
        coco_summary, coco_per_category = self._coco(detections)
        ap07, ap12, num_gt = self._voc(detections)
        metrics = dict(coco_summary)
        metrics["voc07_mAP"] = voc_metrics.mean_ap(ap07)
        metrics["voc12_mAP"] = voc_metrics.mean_ap(ap12)
        metrics["per_class"] = {
            name: {
                "AP": coco_per_category[self.category_ids[k]]["AP"],
                "AP50": coco_per_category[self.category_ids[k]]["AP50"],
                "voc07_AP": float(ap07[k]),
                "voc12_AP": float(ap12[k]),
                "num_gt": int(num_gt[k]),
            }
            for k, name in enumerate(self.class_names)
        }
        return metrics

    def image_records(self):
        """``(image key, ground truth, (boxes_px, scores, classes))`` of every image with
        ground truth, in the order added: the ground truth as stored (``boxes_px`` ``[G, 4]``
        yxyx pixels, ``classes``, ``is_crowd``, ``difficult``, ``height``, ``width``,
        ``area``), the detections in pixels (empty arrays for an image without any). For
        analyses beyond the metrics (recall by object size, confusions between classes)."""
        empty = (np.zeros([0, 4], np.float32), np.zeros([0], np.float32), np.zeros([0], np.int64))
        for key, gt in self._ground_truth.items():
            yield key, gt, self._image_detections(key) if key in self._detections else empty

    def _image_detections(self, key):
        """All detections of one image in pixels: ``(boxes_px [M, 4] yxyx, scores, classes)``."""
        gt = self._ground_truth[key]
        boxes, scores, classes = [], [], []
        for chunk_boxes, chunk_scores, chunk_classes, normalized in self._detections[key]:
            if normalized:
                chunk_boxes = box_ops.denormalize(chunk_boxes, gt.height, gt.width).numpy()
            boxes.append(chunk_boxes)
            scores.append(chunk_scores)
            classes.append(chunk_classes)
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)

    def _coco(self, detections):
        """pycocotools on everything added; internal image ids ``1..N`` in insertion order."""
        internal_id = {key: i + 1 for i, key in enumerate(self._ground_truth)}
        images = [
            {"id": internal_id[key], "height": gt.height, "width": gt.width, "file_name": key}
            for key, gt in self._ground_truth.items()
        ]
        gts = list(self._ground_truth.values())
        gt_image = np.concatenate([np.full(len(gt.classes), i + 1) for i, gt in enumerate(gts)])
        gt_xywh_px = box_ops.yxyx_to_xywh(np.concatenate([gt.boxes_px for gt in gts])).numpy()
        gt_classes = np.concatenate([gt.classes for gt in gts])
        gt_crowd = np.concatenate([gt.is_crowd | gt.difficult for gt in gts])
        gt_area = np.concatenate(
            [
                gt_box[:, 2] * gt_box[:, 3] if gt.area is None else np.where(gt.area >= 0, gt.area, gt_box[:, 2] * gt_box[:, 3])
                for gt, gt_box in zip(gts, np.split(gt_xywh_px, np.cumsum([len(gt.classes) for gt in gts])[:-1]))
            ]
        )
        annotations = [
            {
                "id": i + 1,  # pycocotools needs ids >= 1
                "image_id": int(image),
                "category_id": self.category_ids[cls],
                "bbox": box,
                "area": float(box_area),
                "iscrowd": int(crowd),
            }
            for i, (image, cls, box, box_area, crowd) in enumerate(
                zip(gt_image, gt_classes, gt_xywh_px.tolist(), gt_area, gt_crowd)
            )
        ]
        categories = [{"id": c, "name": name} for c, name in zip(self.category_ids, self.class_names)]
        results = []
        if detections:
            det_image = np.concatenate([np.full(len(d[1]), internal_id[key]) for key, d in detections.items()])
            det_xywh_px = box_ops.yxyx_to_xywh(np.concatenate([d[0] for d in detections.values()])).numpy()
            det_scores = np.concatenate([d[1] for d in detections.values()])
            det_classes = np.concatenate([d[2] for d in detections.values()])
            results = [
                {"image_id": int(image), "category_id": self.category_ids[cls], "bbox": box, "score": float(score)}
                for image, cls, box, score in zip(det_image, det_classes, det_xywh_px.tolist(), det_scores)
            ]
        dataset = {"images": images, "annotations": annotations, "categories": categories}
        return coco_metrics.evaluate_coco(dataset, results, warn_empty=False)

    def _voc(self, detections):
        num_gt = np.zeros([self.num_classes], np.int64)
        all_scores, all_labels, all_classes = [], [], []
        for key, gt in self._ground_truth.items():
            ignore = gt.difficult | gt.is_crowd
            num_gt += np.bincount(gt.classes[~ignore], minlength=self.num_classes)
            if key not in detections:
                continue
            boxes_px, scores, classes = detections[key]
            labels = voc_metrics.match_image(
                boxes_px, scores, classes, gt.boxes_px, gt.classes, ignore, self.voc_iou_threshold
            )
            all_scores.append(scores)
            all_labels.append(labels)
            all_classes.append(classes)
        if all_scores:
            scores, labels, classes = map(np.concatenate, (all_scores, all_labels, all_classes))
        else:
            scores, labels, classes = np.zeros([0]), np.zeros([0], np.int8), np.zeros([0], np.int64)
        ap07, ap12 = voc_metrics.class_average_precisions(scores, labels, classes, num_gt)
        return ap07, ap12, num_gt


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def evaluate_results_file(
    results, examples, class_names, category_ids=None, *, unknown_images="error", progress=True
):
    """Scores a COCO results file against canonical examples; returns :meth:`Evaluator.result`.

    Args:
      results: path of a COCO results JSON file, or its parsed list of entries.
      examples: unbatched canonical examples (iterable of numpy dicts or a ``tf.data``
        dataset), e.g. ``tfzoo.data.load(spec, "val")``.
      class_names, category_ids: as :class:`Evaluator`.
      unknown_images, progress: as :meth:`Evaluator.add_results` and
        :meth:`Evaluator.add_ground_truth_examples`.
    """
    evaluator = Evaluator(class_names, category_ids)
    evaluator.add_ground_truth_examples(examples, progress=progress)
    evaluator.add_results(results, unknown_images=unknown_images)
    return evaluator.result()
