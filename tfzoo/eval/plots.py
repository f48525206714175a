"""Per-class precision-recall curves and the confusion matrix: the data (NumPy) and the pictures.

The data come from :meth:`~tfzoo.eval.Evaluator.image_records` (ground truth and detections
in original-image pixels, what the metrics saw):

- :func:`pr_curves`: per class, precision and recall of the detections ranked by score at
  IoU 0.5, matched by :func:`tfzoo.eval.voc_metrics.match_image` exactly as the VOC
  metrics match them (IoU strictly above the threshold, greedy by score, crowd and
  difficult objects ignored). Each curve's ``ap`` is the all-point area under its
  precision envelope (:func:`~tfzoo.eval.voc_metrics.voc_ap`): the metrics' ``voc12_AP``.
- :func:`confusion_matrix`: ``[K + 1, K + 1]`` counts, rows the true class, columns the
  detected class, the last row and column *background*. Detections scoring below
  ``score_threshold`` (default :data:`SCORE_THRESHOLD`, the one ``tfzoo train``'s
  confusion report and ``tfzoo predict`` use) are left out. In each image a detection and
  an object are paired when their IoU is above ``iou_threshold``, one to one, greedily by
  IoU (then score): first pairs of the same class, then the remaining pairs of different
  classes (a confusion). A paired object counts in ``[true, detected]``; an object left
  unpaired is *missed* (``[true, background]``); a detection left unpaired is *spurious*
  (``[background, detected]``, duplicates included), unless it overlaps a crowd or
  difficult object above the threshold (ignored, as in the metrics). ``[background,
  background]`` stays 0.

The pictures (:func:`write_plots`, matplotlib's Agg backend, no pyplot state):
``pr_curves.png`` (one line per class, the legend giving each class's AP50),
``pr_curves_per_class.png`` (small multiples, one panel per class) and
``confusion_matrix.png`` (counts, coloured by the share of each true class's row).

Shape legend: D detections, G ground truth, K classes.
"""
from __future__ import annotations

import math
import os

import numpy as np

from tfzoo.atomic import atomic_file, write_json_atomic
from tfzoo.eval import voc_metrics
from tfzoo.eval.diagnostics import SCORE_THRESHOLD

#: IoU of the curves and of the matrix.
IOU_THRESHOLD = 0.5
#: File names :func:`write_plots` writes in its folder.
PR_CURVES, PR_GRID, CONFUSION, PLOTS_JSON = ("pr_curves.png", "pr_curves_per_class.png", "confusion_matrix.png",
                                             "plots.json")
BACKGROUND = "background"


# --- data ---------------------------------------------------------------------------


def pr_curves(records, num_classes, iou_threshold=IOU_THRESHOLD):
    """Precision-recall curve of every class.

    Args:
      records: :meth:`Evaluator.image_records` (or any iterable of ``(key, ground truth,
        (boxes_px [D, 4], scores [D], classes [D]))`` with the ground truth's
        ``boxes_px``, ``classes``, ``is_crowd`` and ``difficult``).
      num_classes: K.
      iou_threshold: a match needs IoU strictly above it.

    Returns:
      ``K`` dicts: ``recall``, ``precision``, ``scores`` (``[D_k]``, detections of the class
      ranked by score, ignored ones left out), ``num_gt`` (objects neither crowd nor
      difficult) and ``ap`` (all-point AP; :data:`voc_metrics.UNDEFINED_AP` without objects).
    """
    num_gt = np.zeros([num_classes], np.int64)
    scores, labels, classes = [np.zeros([0])], [np.zeros([0], np.int8)], [np.zeros([0], np.int64)]
    for _, gt, (boxes_px, det_scores, det_classes) in records:
        ignore = np.asarray(gt.difficult, bool) | np.asarray(gt.is_crowd, bool)
        num_gt += np.bincount(np.asarray(gt.classes)[~ignore], minlength=num_classes)
        if len(det_scores):
            labels.append(voc_metrics.match_image(boxes_px, det_scores, det_classes, gt.boxes_px, gt.classes, ignore,
                                                  iou_threshold))
            scores.append(np.asarray(det_scores, np.float64))
            classes.append(np.asarray(det_classes, np.int64))
    scores, labels, classes = map(np.concatenate, (scores, labels, classes))
    curves = []
    for c in range(num_classes):
        keep = (classes == c) & (labels != voc_metrics.IGNORED)
        order = np.argsort(-scores[keep], kind="stable")  # ties by detection order, as the metrics
        tp = np.cumsum(labels[keep][order] == voc_metrics.TRUE_POSITIVE)
        fp = np.cumsum(labels[keep][order] == voc_metrics.FALSE_POSITIVE)
        npos = int(num_gt[c])
        recall = tp / npos if npos else np.zeros(len(tp))
        precision = tp / np.maximum(tp + fp, 1)
        ap = voc_metrics.voc_ap(recall, precision) if npos else voc_metrics.UNDEFINED_AP
        curves.append({"recall": recall, "precision": precision, "scores": scores[keep][order], "num_gt": npos,
                       "ap": float(ap)})
    return curves


def _greedy_pairs(ious, allowed, det_scores, taken_gt, taken_det, iou_threshold):
    """Pairs ``(g, d)`` with ``allowed`` and IoU above the threshold, one to one, by
    descending IoU, then score, then index; marks ``taken_*`` in place."""
    g_idx, d_idx = np.nonzero(allowed & (ious > iou_threshold))
    order = np.lexsort((d_idx, g_idx, -det_scores[d_idx], -ious[g_idx, d_idx]))
    pairs = []
    for g, d in zip(g_idx[order], d_idx[order]):
        if not taken_gt[g] and not taken_det[d]:
            taken_gt[g] = taken_det[d] = True
            pairs.append((g, d))
    return pairs


def confusion_matrix(records, num_classes, iou_threshold=IOU_THRESHOLD, score_threshold=SCORE_THRESHOLD):
    """``[K + 1, K + 1]`` int64 counts: rows true class, columns detected class, index
    ``K`` background (the module docstring gives the rule). ``records`` as :func:`pr_curves`."""
    k = num_classes
    matrix = np.zeros([k + 1, k + 1], np.int64)
    for _, gt, (boxes_px, det_scores, det_classes) in records:
        ignore = np.asarray(gt.difficult, bool) | np.asarray(gt.is_crowd, bool)
        gt_boxes = np.asarray(gt.boxes_px, np.float64).reshape(-1, 4)
        gt_classes = np.asarray(gt.classes, np.int64).reshape(-1)
        det_scores = np.asarray(det_scores, np.float64).reshape(-1)
        keep = det_scores >= score_threshold
        boxes = np.asarray(boxes_px, np.float64).reshape(-1, 4)[keep]
        det_classes, det_scores = np.asarray(det_classes, np.int64).reshape(-1)[keep], det_scores[keep]
        if len(gt_classes) and len(det_classes):
            ious = voc_metrics.pairwise_iou(gt_boxes, boxes).numpy()  # [G, D], the metrics' IoU
        else:
            ious = np.zeros([len(gt_classes), len(det_classes)])
        taken_gt, taken_det = ignore.copy(), np.zeros([len(det_classes)], bool)  # ignored objects never pair
        same = gt_classes[:, None] == det_classes[None, :]
        pairs = _greedy_pairs(ious, same, det_scores, taken_gt, taken_det, iou_threshold)
        pairs += _greedy_pairs(ious, ~same, det_scores, taken_gt, taken_det, iou_threshold)
        for g, d in pairs:
            matrix[gt_classes[g], det_classes[d]] += 1
        np.add.at(matrix[:, k], gt_classes[~taken_gt], 1)  # missed
        on_ignored = (ious[ignore] > iou_threshold).any(axis=0) if ignore.any() else np.zeros(len(det_classes), bool)
        np.add.at(matrix[k], det_classes[~taken_det & ~on_ignored], 1)  # spurious
    return matrix


# --- pictures -----------------------------------------------------------------------


def _figure(width, height):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # noqa: PLC0415  (no pyplot: no global state)

    return Figure(figsize=(width, height), dpi=100)


def _save(fig, path):
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _label(name, curve):
    ap = "n/a" if curve["ap"] < 0 else f"{curve['ap']:.3f}"
    return f"{name} AP50 {ap} ({curve['num_gt']} objects)"


def precision_envelope(precision):
    """``[D]`` the largest precision at each rank or below it (at this recall or more): the
    monotone curve whose area is the all-point AP."""
    precision = np.asarray(precision, np.float64)
    return np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision


def _envelope_xy(curve):
    """The envelope as a step line from recall 0 (``drawstyle="steps-pre"``), dropping to 0
    after the largest recall: the area under it is the curve's AP."""
    recall, envelope = curve["recall"], precision_envelope(curve["precision"])
    if not len(recall):
        return np.zeros([0]), np.zeros([0])
    return np.concatenate([[0.0], recall, recall[-1:]]), np.concatenate([envelope[:1], envelope, [0.0]])


def plot_pr_curves(curves, class_names, path, title=None):
    """One figure, one precision-recall line per class (its precision envelope, whose area is
    the AP), each class's AP50 in the legend."""
    fig = _figure(7.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in zip(class_names, curves):
        if curve["num_gt"] or len(curve["recall"]):
            ax.plot(*_envelope_xy(curve), drawstyle="steps-pre", linewidth=1.4, label=_label(name, curve))
    defined = [c["ap"] for c in curves if c["ap"] >= 0]
    mean = f", mean AP50 {np.mean(defined):.3f}" if defined else ""
    ax.set_title(title or f"precision-recall at IoU {IOU_THRESHOLD} (VOC matching){mean}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small" if len(curves) <= 12 else "x-small", loc="lower left",
                  ncol=1 if len(curves) <= 20 else 2)
    return _save(fig, path)


def plot_pr_grid(curves, class_names, path):
    """Small multiples: one panel per class: the raw precision-recall points ranked by score
    (line), the envelope's area shaded (the AP50 in the title)."""
    count = max(len(curves), 1)
    cols = min(count, max(1, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / cols)
    size = 2.6 if count <= 25 else 2.0
    fig = _figure(size * cols, size * rows)
    for i, (name, curve) in enumerate(zip(class_names, curves)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.fill_between(*_envelope_xy(curve), step="pre", alpha=0.25)
        ax.plot(curve["recall"], curve["precision"], linewidth=1.0)
        ap = "n/a" if curve["ap"] < 0 else f"{curve['ap']:.3f}"
        ax.set_title(f"{name}\nAP50 {ap}, {curve['num_gt']} objects", fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize="x-small")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion_matrix(matrix, class_names, path, score_threshold=SCORE_THRESHOLD,
                          iou_threshold=IOU_THRESHOLD):
    """The matrix of :func:`confusion_matrix` as a picture: counts written in the cells,
    colour the share of the row (of each true class's objects; of all spurious detections)."""
    labels = list(class_names) + [BACKGROUND]
    n = len(labels)
    matrix = np.asarray(matrix, np.int64)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    side = min(4 + 0.45 * n, 24)
    fig = _figure(side + 1, side)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    font = "small" if n <= 15 else "xx-small"
    ax.set_xticklabels(labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=font)
    ax.set_yticklabels(labels, fontsize=font)
    ax.set_xlabel("detected class (background: the object was missed)")
    ax.set_ylabel("true class (background: a spurious detection)")
    ax.set_title(f"confusion matrix at IoU {iou_threshold}, score >= {score_threshold}")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j] or i == j:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=font,
                            color="white" if share[i, j] > 0.5 else "black")
    return _save(fig, path)


def write_plots(records, class_names, out_dir, score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD):
    """Computes the curves and the matrix and writes the three PNG files and ``plots.json``
    (the matrix, the thresholds and each class's AP50 and object count) into ``out_dir``
    (created if missing; each file atomically). Returns the JSON's dict, with ``files``."""
    records = list(records)
    names = list(class_names)
    curves = pr_curves(records, len(names), iou_threshold)
    matrix = confusion_matrix(records, len(names), iou_threshold, score_threshold)
    os.makedirs(out_dir, exist_ok=True)
    files = [plot_pr_curves(curves, names, os.path.join(out_dir, PR_CURVES)),
             plot_pr_grid(curves, names, os.path.join(out_dir, PR_GRID)),
             plot_confusion_matrix(matrix, names, os.path.join(out_dir, CONFUSION), score_threshold, iou_threshold)]
    summary = {
        "iou_threshold": iou_threshold,
        "score_threshold": score_threshold,
        "confusion_matrix": {"labels": names + [BACKGROUND], "rows": "true class", "columns": "detected class",
                             "counts": matrix.tolist()},
        "per_class": {name: {"AP50": c["ap"], "num_gt": c["num_gt"], "detections": int(len(c["scores"])),
                             "max_recall": float(c["recall"][-1]) if len(c["recall"]) else 0.0}
                      for name, c in zip(names, curves)},
    }
    path = os.path.join(out_dir, PLOTS_JSON)
    write_json_atomic(path, summary, sort_keys=False)
    summary["files"] = files + [path]
    return summary
