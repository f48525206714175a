"""What a training run's figures say, in terms a user can act on.

- :func:`analyze`: recall by object size and confusions between classes, from
  :meth:`~tfzoo.eval.Evaluator.image_records` (what the metrics saw);
- :func:`confused_pairs`: the class pairs most often taken for each other;
- :func:`diagnose`: AP on a sample of the training split beside val AP, named:
  *underfitting* (the model has not learned even the images it trains on: more capacity,
  a longer or stronger schedule, or augmentation that hides the classes is to blame),
  *overfitting* (it learned its training images but not the task: more data or more
  augmentation), or neither;
- :func:`report_lines`: the lines ``tfzoo train`` prints;
- :func:`plot_training`: ``training.png``, the losses per epoch and, when the run was
  evaluated after every epoch, val AP per epoch.
"""
from __future__ import annotations

import collections

import numpy as np

from tfzoo.atomic import atomic_file

#: Upper edges (pixels, ``sqrt(area)`` in the original image) of the object-size buckets.
SIZE_EDGES = (12, 16, 24, 48, 96)
#: IoU at which a detection counts as finding (or confusing) an object.
MATCH_IOU = 0.5
#: Detections under this score are left out of recall and confusions.
SCORE_THRESHOLD = 0.3
#: Train-sample AP50 under this: the model has not learned its own training images.
UNDERFIT_AP50 = 0.6
#: Train-sample AP50 minus val AP50 above this: it learned the images, not the task.
OVERFIT_GAP = 0.15
#: Verdicts of :func:`diagnose`.
UNDERFITTING, OVERFITTING, FITS = "underfitting", "overfitting", "fits"


def size_bucket_names(edges=SIZE_EDGES):
    """Names of the buckets of :func:`analyze`'s ``recall_by_size`` (``"<12"``, ``"12-16"`` ...)."""
    return [f"<{edges[0]}"] + [f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:])] + [f">={edges[-1]}"]


def analyze(records, class_names, score_threshold=SCORE_THRESHOLD, edges=SIZE_EDGES):
    """Recall by object size and confusions between classes.

    ``records`` are :meth:`Evaluator.image_records` (ground truth and detections in
    original-image pixels). Crowd and difficult objects are left out. An object is
    *found* when a detection of its class with score ``>= score_threshold`` overlaps it at
    IoU ``>= MATCH_IOU``; it is *confused* with class ``b`` when a detection of ``b``
    does.

    Returns ``{"score_threshold", "recall_by_size": {bucket: {"objects", "found",
    "recall"}}, "objects", "found", "confused_objects", "confusions": {"a->b": count}}``
    (confusions most common first).
    """
    from tfzoo.ops import boxes as box_ops  # noqa: PLC0415  (TensorFlow only when used)

    buckets = size_bucket_names(edges)
    totals = {name: [0, 0] for name in buckets}  # objects, found
    confusions = collections.Counter()
    confused_objects = 0
    for _, gt, (boxes, scores, classes) in records:
        keep_gt = ~(gt.is_crowd | gt.difficult)
        gt_boxes, gt_classes = gt.boxes_px[keep_gt], gt.classes[keep_gt]
        if not len(gt_classes):
            continue
        keep = scores >= score_threshold
        boxes, classes = boxes[keep], classes[keep]
        sizes = np.sqrt(np.maximum(gt_boxes[:, 2] - gt_boxes[:, 0], 0) * np.maximum(gt_boxes[:, 3] - gt_boxes[:, 1], 0))
        which = np.searchsorted(np.asarray(edges), sizes, side="right")
        if len(classes):
            overlaps = box_ops.iou(np.asarray(gt_boxes, np.float32), np.asarray(boxes, np.float32)).numpy() >= MATCH_IOU
        else:
            overlaps = np.zeros([len(gt_classes), 0], bool)
        same = gt_classes[:, None] == classes[None, :]
        found = np.any(overlaps & same, axis=1)
        for g in range(len(gt_classes)):
            totals[buckets[which[g]]][0] += 1
            totals[buckets[which[g]]][1] += int(found[g])
            others = set(classes[overlaps[g] & ~same[g]].tolist())
            confused_objects += bool(others)
            for other in sorted(others):
                confusions[f"{class_names[gt_classes[g]]}->{class_names[other]}"] += 1
    objects = sum(t[0] for t in totals.values())
    return {
        "score_threshold": score_threshold,
        "recall_by_size": {name: {"objects": n, "found": f, "recall": f / n if n else None}
                           for name, (n, f) in totals.items()},
        "objects": objects,
        "found": sum(t[1] for t in totals.values()),
        "confused_objects": confused_objects,
        "confusions": dict(confusions.most_common()),
    }


def confused_pairs(confusions, top=5):
    """The ``top`` unordered class pairs with the most confusions (``a->b`` plus ``b->a``):
    ``[{"classes": [a, b], "count": n, "a->b": .., "b->a": ..}]``, most first, then by name."""
    pairs = {}
    for key, count in confusions.items():
        a, b = key.split("->", 1)
        pair = tuple(sorted((a, b)))
        entry = pairs.setdefault(pair, {"classes": list(pair), "count": 0,
                                        f"{pair[0]}->{pair[1]}": 0, f"{pair[1]}->{pair[0]}": 0})
        entry["count"] += count
        entry[key] += count
    ranked = sorted(pairs.values(), key=lambda e: (-e["count"], e["classes"]))
    return ranked[:top]


def diagnose(train_ap50, val_ap50):
    """``{"verdict", "message"}`` from AP50 on a training sample and on val (either may be None)."""
    if train_ap50 is None:
        return {"verdict": None, "message": "no training-split AP: nothing to compare val AP with"}
    train_text = f"train-sample AP50 {train_ap50:.3f}"
    val_text = f"val AP50 {val_ap50:.3f}" if val_ap50 is not None else "no val AP50"
    if train_ap50 < UNDERFIT_AP50:
        gap = ""
        if val_ap50 is not None and train_ap50 - val_ap50 > OVERFIT_GAP:
            gap = (f"; val already trails the training images by {train_ap50 - val_ap50:.2f}, so more epochs "
                   "alone will also widen that gap")
        return {"verdict": UNDERFITTING, "message": (
            f"underfitting: {train_text} and {val_text}: the model has not learned even the images it trains on; "
            "train longer (--minutes), check that augmentation keeps each class itself (--no-flip where a mirrored "
            f"object is another class), or use a larger model{gap}")}
    if val_ap50 is not None and train_ap50 - val_ap50 > OVERFIT_GAP:
        return {"verdict": OVERFITTING, "message": (
            f"overfitting: {train_text} but {val_text}: the model learned its training images more than the task; "
            "add data or augmentation, or train for fewer epochs")}
    return {"verdict": FITS, "message": f"no sign of under- or overfitting: {train_text}, {val_text}"}


def report_lines(val_metrics, train_metrics, pairs, diagnosis, class_names):
    """The lines ``tfzoo train`` prints: the verdict, a per-class AP50 table, confused pairs."""
    lines = [diagnosis["message"]]
    val_pc = (val_metrics or {}).get("per_class", {})
    train_pc = (train_metrics or {}).get("per_class", {})
    if class_names and (val_pc or train_pc):
        width = max(5, *(len(n) for n in class_names))
        lines.append(f"  {'class':<{width}}  val AP50  train AP50  val objects")
        for name in class_names:
            v, t = val_pc.get(name, {}), train_pc.get(name, {})
            lines.append(f"  {name:<{width}}  {_fmt(v.get('AP50')):>8}  {_fmt(t.get('AP50')):>10}  "
                         f"{v.get('num_gt', '-'):>11}")
    if pairs:
        lines.append(f"  most confused class pairs on val (objects of one that drew a detection of the other at IoU >= "
                     f"{MATCH_IOU}, score >= {SCORE_THRESHOLD}): "
                     + ", ".join(f"{p['classes'][0]}/{p['classes'][1]} {p['count']}" for p in pairs))
    else:
        lines.append("  no class pair confused on val")
    return lines


def _fmt(value):
    return "-" if value is None or value < 0 else f"{value:.3f}"


def plot_training(history, path, final=None):
    """Writes ``training.png`` at ``path`` (atomically) from ``history`` ``{key: [[epoch,
    value], ...]}``: the losses per epoch and, where the run was evaluated after every
    epoch, val AP and AP50 per epoch (``val_AP``, ``val_AP50``); ``final`` (``{label:
    AP}``, e.g. the final val and train-sample AP50) is marked at the last epoch."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # noqa: PLC0415  (no pyplot: no global state)

    def series(rows):
        return [r[0] for r in rows], [r[1] for r in rows]

    losses = {k: v for k, v in history.items() if k.endswith("loss") and not k.startswith("val_") and v}
    aps = {k: v for k, v in history.items() if k in ("val_AP", "val_AP50") and v}
    final = {k: v for k, v in (final or {}).items() if v is not None}
    last = max((rows[-1][0] for rows in history.values() if rows), default=1)
    panels = 2 if (aps or final) else 1
    fig = Figure(figsize=(6 * panels, 4), dpi=100)
    ax = fig.add_subplot(1, panels, 1)
    for key, rows in sorted(losses.items()):
        ax.plot(*series(rows), marker="." if len(rows) < 30 else None, label=key)
    ax.set_xlim(0.5, last + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (epoch mean)")
    ax.set_title("losses")
    ax.grid(alpha=0.3)
    if losses:
        ax.legend()
    if panels == 2:
        ax = fig.add_subplot(1, panels, 2)
        for key, rows in sorted(aps.items()):
            ax.plot(*series(rows), marker=".", label=key)
        for i, (label, value) in enumerate(sorted(final.items())):
            ax.scatter([last], [value], marker="*xP"[i % 3], s=80, zorder=3, label=f"{label} {value:.3f}")
        ax.set_xlim(0.5, last + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("AP")
        ax.set_ylim(0, 1)
        ax.set_title("evaluation")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
