"""Parity checks: do an export's detections and AP match the Keras model's?

- :func:`compare_detections`: detections of two models on the same images, matched by
  class and IoU (``tfzoo.ops.boxes.iou``);
- :func:`parity_report`: COCO AP of the Keras model and of each export on a dataset, the
  AP difference in points, the detection match, and the largest raw-output difference.
"""
from __future__ import annotations

import numpy as np

from tfzoo.ops import boxes as box_ops

#: Default AP tolerance of :func:`parity_report`, in AP points (0.5 = 0.005 AP).
AP_TOLERANCE_POINTS = 0.5


def _valid(detections, image, min_score):
    count = int(np.asarray(detections["num_detections"])[image])
    boxes = np.asarray(detections["detection_boxes"])[image, :count]
    scores = np.asarray(detections["detection_scores"])[image, :count]
    classes = np.asarray(detections["detection_classes"])[image, :count]
    return boxes, scores, classes, scores >= min_score


def _match_image(a, b, iou_threshold):
    """Greedy one-to-one matching (by a's score) of a's to b's detections of the same class.

    Returns ``(pairs, iou_matrix)``: ``pairs`` a list of ``(i, j)``.
    """
    boxes_a, scores_a, classes_a = a
    boxes_b, _, classes_b = b
    if not len(boxes_a) or not len(boxes_b):
        return [], None
    ious = np.asarray(box_ops.iou(boxes_a.astype(np.float32), boxes_b.astype(np.float32)))  # [Na, Nb]
    ious = np.where(classes_a[:, None] == classes_b[None, :], ious, -1.0)
    taken = np.zeros(len(boxes_b), bool)
    pairs = []
    for i in np.argsort(-scores_a, kind="stable"):
        candidates = np.where(~taken & (ious[i] >= iou_threshold), ious[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            taken[j] = True
            pairs.append((int(i), j))
    return pairs, ious


def compare_detections(a, b, iou=0.99, min_score=0.0):
    """Matches detections ``a`` and ``b`` (batched dicts of the same images), one to one.

    A detection of ``a`` matches one of ``b`` with the same class and IoU ``>= iou``.
    Only detections scoring ``>= min_score`` have to find a partner, but they may match a
    partner below it, so a score that lands just across ``min_score`` in one model is no
    mismatch.

    Returns:
      dict: ``matched`` (pairs with at least one side ``>= min_score``), ``only_a`` and
      ``only_b`` (detections ``>= min_score`` without a partner), ``count_a`` and
      ``count_b`` (detections ``>= min_score``), ``max_score_diff`` over the matched
      pairs (0.0 when none), ``match_rate`` = ``matched / max(count_a, count_b)`` (1.0
      when both are empty), and ``agree`` (no unmatched detection).
    """
    batch = len(np.asarray(a["num_detections"]))
    if len(np.asarray(b["num_detections"])) != batch:
        raise ValueError(f"a has {batch} images, b has {len(np.asarray(b['num_detections']))}")
    matched = only_a = only_b = count_a = count_b = 0
    max_diff = 0.0
    for image in range(batch):
        boxes_a, scores_a, classes_a, keep_a = _valid(a, image, min_score)
        boxes_b, scores_b, classes_b, keep_b = _valid(b, image, min_score)
        pairs, _ = _match_image((boxes_a, scores_a, classes_a), (boxes_b, scores_b, classes_b), iou)
        paired_a = np.zeros(len(boxes_a), bool)
        paired_b = np.zeros(len(boxes_b), bool)
        for i, j in pairs:
            paired_a[i] = paired_b[j] = True
            if keep_a[i] or keep_b[j]:
                matched += 1
                max_diff = max(max_diff, float(abs(scores_a[i] - scores_b[j])))
        count_a += int(keep_a.sum())
        count_b += int(keep_b.sum())
        only_a += int((keep_a & ~paired_a).sum())
        only_b += int((keep_b & ~paired_b).sum())
    largest = max(count_a, count_b)
    return {
        "matched": matched,
        "only_a": only_a,
        "only_b": only_b,
        "count_a": count_a,
        "count_b": count_b,
        "max_score_diff": max_diff,
        "match_rate": 1.0 if largest == 0 else min(matched / largest, 1.0),
        "agree": only_a == 0 and only_b == 0,
    }


def _merge(total, part):
    if total is None:
        return dict(part)
    out = {k: total[k] + part[k] for k in ("matched", "only_a", "only_b", "count_a", "count_b")}
    out["max_score_diff"] = max(total["max_score_diff"], part["max_score_diff"])
    largest = max(out["count_a"], out["count_b"])
    out["match_rate"] = 1.0 if largest == 0 else min(out["matched"] / largest, 1.0)
    out["agree"] = out["only_a"] == 0 and out["only_b"] == 0
    return out


def _arrays(images):
    """A batch of model inputs (images, or the dict with proposals) as NumPy arrays."""
    if isinstance(images, dict):
        return {k: np.asarray(v) for k, v in images.items()}
    return np.asarray(images)


def parity_report(detector, exported_paths, dataset, *, class_names=None, category_ids=None, batch_size=8,
                  tolerance_points=AP_TOLERANCE_POINTS, iou=0.99, min_score=0.0, trust_model=True,
                  progress=False, raw_batches=None):
    """AP and detection parity of exports of ``detector`` on ``dataset``.

    Args:
      detector: the Keras detector the files were exported from.
      exported_paths: paths of its exports (SavedModel directories, ``.tflite`` files ...),
        loaded with :func:`tfzoo.export.load_model`.
      dataset: unbatched canonical examples (``tfzoo.data.load(spec, "val")``).
      class_names / category_ids: the dataset's (default: the detector's class names).
      batch_size: images per detect call (TFLite runs them one by one).
      tolerance_points: an export is ``within_tolerance`` when its AP is within this many
        AP points (1 point = 0.01 AP) of the Keras model's.
      iou / min_score: as :func:`compare_detections` (export vs Keras, per batch).
      trust_model: passed to ``load_model`` (your own SavedModel exports need it).
      progress: show the evaluator's progress bars.
      raw_batches: compare raw head outputs on the first this many batches only (``None``:
        all of them; ``0``: none). Detections and AP are compared on every image either way.

    Returns:
      ``{"keras": {"AP", "AP50", "metrics"}, "tolerance_points", "exports": [{"path",
      "format", "AP", "AP50", "delta_AP_points", "within_tolerance", "detections" (the
      :func:`compare_detections` dict summed over the dataset), "raw_max_abs_diff" and
      "raw_scale" (the largest raw difference, and ``max(1, largest |Keras raw output|)``;
      float32 kernels agree to ~1e-5 of the scale; both ``None`` when the format has no raw
      outputs or ``raw_batches`` is 0), "raw_images" (images whose raw outputs were
      compared)}, ...]}``.
    """
    from tfzoo.eval import evaluate_detector
    from tfzoo.export import artifacts
    from tfzoo.export.loading import KerasModel, load_model

    reference = KerasModel("<keras>", detector)
    names = list(class_names or artifacts.class_names_of(detector.config))
    common = dict(category_ids=category_ids, batch_size=batch_size, keep_aspect_ratio=reference.keep_aspect_ratio,
                  progress=progress)
    if reference.max_proposals:  # the examples carry proposals (tfzoo.proposals), fed beside the images
        common.update(input_names=reference.input_names, max_proposals=reference.max_proposals)
    batches = []
    # Batch index -> Keras raw outputs, shared by the exports; kept only for a bounded
    # raw_batches (raw outputs of a whole large dataset would not fit in memory).
    keras_raw = {}

    def keras_detect(images):
        outputs = reference.detect(images)
        batches.append((_arrays(images), outputs))
        return outputs

    keras_metrics = evaluate_detector(keras_detect, dataset, reference.image_size, names, **common)
    report = {
        "keras": {"AP": keras_metrics["AP"], "AP50": keras_metrics["AP50"], "metrics": keras_metrics},
        "tolerance_points": tolerance_points,
        "exports": [],
    }
    for path in exported_paths:
        model = load_model(path, trust_model=trust_model)
        if model.image_size != reference.image_size:
            raise ValueError(f"{path}: input size {model.image_size} differs from the detector's {reference.image_size}")
        state = {"index": 0, "match": None, "raw": None, "scale": None, "raw_images": 0}

        def export_detect(images, model=model, state=state):
            outputs = model.detect(images)
            index = state["index"]
            seen_images, keras_outputs = batches[index]
            state["index"] += 1
            state["match"] = _merge(state["match"], compare_detections(keras_outputs, outputs, iou, min_score))
            if raw_batches is not None and index >= raw_batches:
                return outputs
            try:
                raw = model.raw_outputs(images)
            except NotImplementedError:
                return outputs
            expected = keras_raw.get(index)
            if expected is None:
                expected = reference.raw_outputs(seen_images)
                if raw_batches is not None:
                    keras_raw[index] = expected
            state["raw_images"] += len(seen_images["images"] if isinstance(seen_images, dict) else seen_images)
            diff = max(float(np.max(np.abs(raw[k] - expected[k]))) for k in expected)
            scale = max([1.0] + [float(np.max(np.abs(expected[k]))) for k in expected])
            state["raw"] = diff if state["raw"] is None else max(state["raw"], diff)
            state["scale"] = scale if state["scale"] is None else max(state["scale"], scale)
            return outputs

        metrics = evaluate_detector(export_detect, dataset, model.image_size, names, **common)
        delta = 100.0 * (metrics["AP"] - keras_metrics["AP"])
        report["exports"].append({
            "path": str(path),
            "format": model.format,
            "quantize": getattr(model, "quantize", None),
            "AP": metrics["AP"],
            "AP50": metrics["AP50"],
            "delta_AP_points": delta,
            "within_tolerance": abs(delta) <= tolerance_points,
            "detections": state["match"],
            "raw_max_abs_diff": state["raw"],
            "raw_scale": state["scale"],
            "raw_images": state["raw_images"],
        })
    return report
