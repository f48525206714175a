"""The ``tfzoo`` command: the only place in the package that parses arguments.

Errors are one line on stderr with a non-zero exit code (1 for failures, 2 for usage);
``--debug`` shows the traceback. Progress bars and logs go to stderr, so ``--json``
output on stdout stays a single JSON document.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import re
import sys
import warnings

EXIT_FAILURE = 1

DATA_HELP = "dataset spec: shapes | voc:PATH | coco:PATH | yolo:PATH | tfds:NAME (e.g. tfds:voc/2007)"
FROZEN_HELP = ("run the model with its weights read once into constants (a Keras model or SavedModel; "
               "tfzoo.export.frozen): faster on an x86 CPU for the wide paper presets (yolov3 at 416: "
               "1.6x), after a one-off cost of seconds that few images do not repay")
MODEL_HELP = "a training directory, a .keras or .tflite file, or (with --trust-model) a SavedModel directory or .h5"
IMAGE_SIZE_HELP = ("run a Keras model at this square input size instead of its own (same weights; the "
                   "detectors are fully convolutional, and one trained small often finds small objects "
                   "better served larger)")
TRUST_HELP = ("allow SavedModel directories and .h5 files, which can run arbitrary code when loaded: only for "
              "files from a source you trust")


def _quiet_tensorflow():
    """Keeps TensorFlow's start-up chatter off the terminal unless the user asked for it
    (``--debug``). TensorFlow's C++ logging writes to file descriptor 2 before its log
    level applies (oneDNN and CUDA-driver notes, then "failed call to cuInit" on a machine
    without a GPU, which reads as a failure): the import and the device discovery run
    with descriptor 2 pointed at /dev/null, and later C++ logs below FATAL are off. Python
    errors and warnings are untouched; a failing import is re-raised after stderr is back.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        import tensorflow as tf  # noqa: PLC0415

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _progress(iterable, desc, total=None):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="img", file=sys.stderr, dynamic_ncols=True,
                disable=None)


# --- tfzoo list ---------------------------------------------------------------------


def cmd_list(args):
    from tfzoo.data import shapes
    from tfzoo.models import MODELS

    if args.model:
        return _show_preset(MODELS[args.model])
    print("models:")
    if not MODELS:
        print("  (none registered yet)")
    rows = [(name, p.family, p.kind, str(p.config.image_size), p.config.backbone, "yes" if p.cpu else "")
            for name, p in sorted(MODELS.items())]
    header = ("name", "family", "kind", "input", "backbone", "CPU preset")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("  ('tfzoo list MODEL' shows a preset's settings: the keys --set accepts, with their defaults)")
    print("datasets:")
    print(f"  shapes            builtin synthetic data, classes: {', '.join(shapes.CLASS_NAMES)}")
    print("  voc:PATH          a VOCdevkit folder (JPEGImages/, Annotations/, ImageSets/Main/)")
    print("  coco:PATH         a COCO 2017 folder (annotations/instances_SPLIT.json, SPLIT/)")
    print("  yolo:PATH         a YOLO txt folder (data.yaml, images/SPLIT/, labels/SPLIT/ of 'class cx cy w h' lines)")
    print("  tfds:NAME         a TensorFlow Datasets detection set, e.g. tfds:voc/2007")
    return 0


def _show_preset(preset):
    """Prints a preset's family and every config field with its default (``--set`` keys)."""
    import dataclasses
    import typing

    config = preset.config
    hints = typing.get_type_hints(type(config))
    print(f"{preset.name}: {preset.family} ({preset.kind}), input {config.image_size} px, backbone "
          f"{config.backbone}{', a CPU preset' if preset.cpu else ''}")
    print("settings (tfzoo train ... --set KEY=VALUE; values are JSON, e.g. null, true, [0.5, 1.0]):")
    fields = [(f.name, json.dumps(getattr(config, f.name) if not isinstance(getattr(config, f.name), tuple)
                                  else list(getattr(config, f.name))), _type_text(hints[f.name]))
              for f in dataclasses.fields(config)]
    width = max(len(name) for name, _, _ in fields)
    for name, value, kind in fields:
        print(f"  {name:<{width}}  {value}  ({kind})")
    return 0


def _type_text(annotation):
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "")


# --- tfzoo inspect ------------------------------------------------------------------

#: Octave edges (pixels, side sqrt(w * h) of the original image) of the size histogram.
SIZE_EDGES_PX = (0, 8, 16, 32, 64, 128, 256, 512, 1024, math.inf)


def _anchor_set(kind, image_size):
    """Normalized anchors ``[A, 4]`` of one of the zoo's anchor layouts for a square input."""
    import numpy as np

    from tfzoo.ops import anchors

    if kind == "fpn":
        return np.asarray(anchors.multilevel_anchors(image_size)), "FPN/RetinaNet levels P3-P7"
    if kind == "ssd":
        return np.asarray(anchors.ssd_default_boxes()), "SSD300 default boxes"
    if kind == "rpn":
        return np.asarray(anchors.single_level_anchors(image_size)), "Faster R-CNN RPN, stride 16"
    raise ValueError(f"unknown anchor layout {kind!r}")


def _anchor_coverage(boxes_canvas, anchor_boxes, chunk=256):
    """Best IoU of each box against the anchors, in chunks to bound memory."""
    import numpy as np

    from tfzoo.ops import boxes as box_ops

    best = []
    for start in range(0, len(boxes_canvas), chunk):
        ious = box_ops.iou(boxes_canvas[start:start + chunk], anchor_boxes)
        best.append(np.max(np.asarray(ious), axis=1))
    return np.concatenate(best) if best else np.zeros([0], np.float32)


#: Bins of the best-IoU histograms of ``tfzoo inspect --model``.
IOU_EDGES = tuple(round(0.1 * i, 1) for i in range(11))


def _iou_histogram(best):
    """``[{"min", "max", "boxes"}]`` of ``best`` over :data:`IOU_EDGES` (the last bin holds 1.0)."""
    import numpy as np

    counts = np.histogram(np.clip(best, 0.0, 1.0), bins=IOU_EDGES)[0] if len(best) else [0] * (len(IOU_EDGES) - 1)
    return [{"min": lo, "max": hi, "boxes": int(n)} for lo, hi, n in zip(IOU_EDGES[:-1], IOU_EDGES[1:], counts)]


def _box_coverage(best, matcher):
    """The coverage figures of boxes whose best IoU with the candidates (anchors, default
    boxes, proposals) is ``best``, against ``matcher``'s positive threshold (and its
    background threshold, where its lowest band is background)."""
    from tfzoo.ops import matcher as matcher_ops

    positive = matcher.thresholds[matcher.labels.index(matcher_ops.POSITIVE) - 1]
    background = matcher.thresholds[0] if matcher.labels[0] == matcher_ops.BACKGROUND else None
    below = int((best < positive).sum())
    return {"best_iou_median": _median(best), "positive_iou": positive, "background_iou": background,
            "low_quality_matches": bool(matcher.allow_low_quality_matches), "boxes": int(len(best)),
            "boxes_below_positive": below, "share_below_positive": round(below / len(best), 4) if len(best) else 0.0,
            "best_iou_histogram": _iou_histogram(best)}


def _model_coverage(model, images, image_size=None, examples=None):
    """How preset ``model`` sees the boxes of ``images`` (``[(boxes [G, 4], classes [G],
    (height, width), assignable [G])]``, crowd regions left out; ``assignable`` False for
    difficult objects, which no encoder makes a target): for a YOLO, the objects it loses
    to one object per cell (YOLOv1) or per cell and prior (YOLOv2/v3), and how well its
    priors' shapes fit the boxes; for an anchor model, each box's best IoU with its
    anchors (the RPN's for Faster R-CNN) against its matcher's positive threshold; for a
    proposal-based model, the same with each image's proposals (its own source, computed
    and cached for ``examples``, the canonical examples behind ``images``)."""
    import numpy as np

    import tfzoo
    from tfzoo.models import MODELS
    from tfzoo.ops import anchors as anchor_ops
    from tfzoo.ops import matcher

    overrides = {"backbone_weights": None}
    if image_size is not None:
        overrides["image_size"] = image_size
    preset = MODELS[model]
    if preset.config.fixed_size and image_size not in (None, preset.config.image_size):
        from tfzoo.train.config import fixed_size_message

        raise ValueError(fixed_size_message(model, preset.config))
    if preset.kind == "proposals":
        return _proposal_coverage(model, preset.config, images, examples)
    if hasattr(preset.config, "grid_size"):  # YOLOv1: the grid is all it needs, no network built
        detector, config = None, preset.config
    else:
        detector = tfzoo.build_model(model, **overrides)
        config = detector.config
    result = {"model": model, "image_size": config.image_size}
    objects = sum(int(assignable.sum()) for _, _, _, assignable in images)
    if hasattr(config, "grid_size") or hasattr(config, "priors"):
        dropped = 0
        for boxes, classes, _, assignable in images:
            if hasattr(config, "grid_size"):
                grid = (config.grid_size, config.grid_size)
                dropped += int(matcher.cell_targets(boxes, classes, assignable, grid)[2])
            else:
                dropped += int(matcher.prior_targets(boxes, classes, assignable, detector.map_sizes, config.priors,
                                                     config.masks)[1])
        rule = "one object per cell" if hasattr(config, "grid_size") else "one object per cell and prior"
        result.update({"rule": rule, "objects": objects, "objects_dropped": dropped,
                       "dropped_share": round(dropped / objects, 4) if objects else 0.0})
    if hasattr(config, "priors"):
        sizes = (np.concatenate([b[a][:, 2:] - b[a][:, :2] for b, _, _, a in images]) if images
                 else np.zeros([0, 2]))
        best = (np.max(anchor_ops.shape_iou(sizes, np.asarray(config.priors, np.float32)).numpy(), axis=1)
                if len(sizes) else np.zeros([0]))
        result["priors"] = {"count": len(config.priors), "best_shape_iou_median": _median(best),
                            "boxes_with_best_shape_iou_ge_0.5": int((best >= 0.5).sum()), "boxes": int(len(best)),
                            "best_shape_iou_histogram": _iou_histogram(best)}
    elif getattr(detector, "anchors", None) is not None:
        warp = not detector.encoder.keep_aspect_ratio
        canvas = []
        for boxes, _, (height, width), assignable in images:
            scale = 1.0 if warp else np.array([height, width, height, width], np.float32) / max(height, width)
            canvas.append(boxes[assignable] * scale)
        best = _anchor_coverage(np.concatenate(canvas) if canvas else np.zeros([0, 4], np.float32),
                                np.asarray(detector.anchors))
        # the encoder's rule; Faster R-CNN's anchors are the RPN's (its head learns from proposals)
        rule = getattr(detector.encoder, "matcher", None) or matcher.RPN
        result["anchors"] = {"count": int(len(detector.anchors)), **_box_coverage(best, rule)}
    return result


#: Images ``tfzoo inspect --model`` searches for a proposal-based preset's coverage (``--limit``
#: inspects fewer).
PROPOSAL_COVERAGE_IMAGES = 200


def _proposal_coverage(model, config, images, examples):
    """:func:`_model_coverage` for a proposal-based preset: each box's best IoU with its
    image's proposals (the preset's source and count, computed and cached as training does)."""
    import numpy as np

    from tfzoo import proposals as proposal_source
    from tfzoo.ops import matcher

    result = {"model": model, "proposals": config.proposals, "max_proposals": config.max_proposals}
    if examples is None:
        return result
    # selective search takes about 0.2 s an image: the first PROPOSAL_COVERAGE_IMAGES (cached)
    images = images[:PROPOSAL_COVERAGE_IMAGES]
    with_proposals, seconds = proposal_source.for_config(examples.take(len(images)), config, subset=True,
                                                         desc=f"proposals for {model}")
    result["images"] = len(images)
    best = []
    for (boxes, _, _, assignable), example in zip(images, with_proposals.as_numpy_iterator()):
        proposals = example["proposals"][:config.max_proposals]
        if len(proposals):
            best.append(_anchor_coverage(boxes[assignable], proposals))
        else:
            best.append(np.zeros([int(assignable.sum())], np.float32))
    best = np.concatenate(best) if best else np.zeros([0], np.float32)
    from tfzoo.models.rcnn import RCNNConfig

    rule = matcher.RCNN if isinstance(config, RCNNConfig) else matcher.FAST_RCNN  # the windows' / RoIs' rule
    result["coverage"] = {**_box_coverage(best, rule), "seconds": round(seconds, 1)}
    return result


def _median(values):
    import numpy as np

    return round(float(np.median(values)), 4) if len(values) else None


def inspect_dataset(spec, split, strict=False, anchors=None, image_size=None, limit=None, model=None):
    """Statistics and validation problems of a dataset split, as a JSON-ready dict; with
    ``model``, also how that preset's grid, priors or anchors cover the boxes
    (:func:`_model_coverage`, at ``image_size`` when given, else the preset's)."""
    import numpy as np

    import tfzoo.data
    from tfzoo.data.mirror import MirrorCheck
    from tfzoo.data.validate import Report

    report = Report(strict=strict)
    names = tfzoo.data.class_names(spec, split)
    mirror = MirrorCheck(names)
    dataset = tfzoo.data.load(spec, split, strict=strict, report=report)
    if limit is not None:
        dataset = dataset.take(limit)
    per_class = {name: 0 for name in names}
    sides_px, canvas_boxes = [], []
    images = objects = negatives = crowd = difficult = 0
    image_sides, model_images = [], []
    for example in _progress(dataset.as_numpy_iterator(), desc=f"inspect {split}"):
        images += 1
        height, width = example["image"].shape[:2]
        image_sides.append((height, width))
        boxes = example["boxes"]
        objects += len(boxes)
        negatives += int(len(boxes) == 0)
        crowd += int(example["is_crowd"].sum())
        difficult += int(example["difficult"].sum())
        for c in example["classes"]:
            per_class[names[int(c)]] += 1
        mirror.add(example["image"], boxes, example["classes"])
        hw_px = (boxes[:, 2:] - boxes[:, :2]) * np.array([height, width], np.float32)
        sides_px.extend(np.sqrt(np.prod(hw_px, axis=1)).tolist())
        if model:
            keep = ~example["is_crowd"].astype(bool)
            assignable = ~example["difficult"][keep].astype(bool)  # the encoders' rule: never a target
            model_images.append((boxes[keep], example["classes"][keep].astype(np.int32), (height, width),
                                 assignable))
        if anchors:
            # Where the boxes land on a square input after an aspect-preserving resize + pad.
            scale = np.array([height, width, height, width], np.float32) / max(height, width)
            canvas_boxes.append(boxes * scale)
    sides = np.asarray(sides_px, np.float32)
    histogram = []
    for lo, hi in zip(SIZE_EDGES_PX[:-1], SIZE_EDGES_PX[1:]):
        histogram.append({"min_px": lo, "max_px": None if math.isinf(hi) else hi,
                          "boxes": int(((sides >= lo) & (sides < hi)).sum())})
    result = {
        "spec": spec,
        "split": split,
        "images": images,
        "objects": objects,
        "images_without_objects": negatives,
        "crowd": crowd,
        "difficult": difficult,
        "per_class": per_class,
        "image_sizes": {
            "min_hw": [int(min(s[0] for s in image_sides)), int(min(s[1] for s in image_sides))] if images else None,
            "max_hw": [int(max(s[0] for s in image_sides)), int(max(s[1] for s in image_sides))] if images else None,
        },
        "box_side_px": {
            "min": float(sides.min()) if sides.size else None,
            "median": float(np.median(sides)) if sides.size else None,
            "max": float(sides.max()) if sides.size else None,
            "histogram": histogram,
        },
        "mirror": mirror.result(),
        "problems": report.to_json(),
        "problem_summary": report.summary(),
        "conversions": report.notes_summary(),
    }
    if model:
        result["model"] = _model_coverage(model, model_images, image_size, examples=dataset)
    if anchors:
        anchor_size = image_size or 640
        anchor_boxes, description = _anchor_set(anchors, anchor_size)
        all_boxes = np.concatenate(canvas_boxes) if canvas_boxes else np.zeros([0, 4], np.float32)
        best = _anchor_coverage(all_boxes, anchor_boxes)
        result["anchors"] = {
            "layout": anchors,
            "description": description,
            "image_size": anchor_size,
            "count": int(len(anchor_boxes)),
            "best_iou_median": float(np.median(best)) if best.size else None,
            "boxes_with_best_iou_ge_0.5": int((best >= 0.5).sum()),
            "boxes_with_best_iou_lt_0.4": int((best < 0.4).sum()),
        }
    return result


def _print_histogram(rows, out, label="best IoU"):
    peak = max([row["boxes"] for row in rows] + [1])
    for row in rows:
        print(f"  {label} [{row['min']:.1f}, {row['max']:.1f}{']' if row['max'] == 1.0 else ')'} {row['boxes']:>7} "
              f"{'#' * round(40 * row['boxes'] / peak)}", file=out)


def _print_coverage(name, what, c, out):
    rule = f"positive at IoU >= {c['positive_iou']}"
    if c["low_quality_matches"]:
        rule += "; a box below it still makes its best-overlapping one a positive"
    print(f"{name} {what}: median best IoU {c['best_iou_median']}; {c['boxes_below_positive']} of {c['boxes']} boxes "
          f"({100 * c['share_below_positive']:.1f}%) stay below the matcher's positive IoU ({rule})", file=out)
    _print_histogram(c["best_iou_histogram"], out)


def _print_model_coverage(m, out):
    name = m["model"]
    if "objects_dropped" in m:
        print(f"{name} at {m['image_size']} px, {m['rule']}: {m['objects_dropped']} of {m['objects']} objects "
              f"({100 * m['dropped_share']:.1f}%) share a slot with a larger one and are left out of training",
              file=out)
    if "priors" in m:
        p = m["priors"]
        print(f"{name} priors ({p['count']}): median best shape IoU {p['best_shape_iou_median']}, "
              f"{p['boxes_with_best_shape_iou_ge_0.5']} of {p['boxes']} boxes reach 0.5 (each box is assigned its "
              "best prior; 'tfzoo anchors' fits priors to the data)", file=out)
        _print_histogram(p["best_shape_iou_histogram"], out, "shape IoU")
    if "anchors" in m:
        _print_coverage(name, f"anchors at {m['image_size']} px ({m['anchors']['count']})", m["anchors"], out)
    if "coverage" in m:
        _print_coverage(name, f"proposals ({m['proposals']}, up to {m['max_proposals']} per image, the first "
                              f"{m['images']} images)", m["coverage"], out)


def _print_inspection(result):
    out = sys.stdout
    print(f"{result['spec']} [{result['split']}]: {result['images']} images, {result['objects']} objects, "
          f"{result['images_without_objects']} without objects", file=out)
    if result["image_sizes"]["min_hw"]:
        print(f"image sizes (h, w): {tuple(result['image_sizes']['min_hw'])} .. "
              f"{tuple(result['image_sizes']['max_hw'])}", file=out)
    print("objects per class:", file=out)
    width = max([len(n) for n in result["per_class"]] + [5])
    for name, count in result["per_class"].items():
        print(f"  {name:<{width}} {count:>8}", file=out)
    sides = result["box_side_px"]
    if sides["min"] is not None:
        print(f"box side sqrt(w*h) in pixels: min {sides['min']:.1f}, median {sides['median']:.1f}, "
              f"max {sides['max']:.1f}", file=out)
    peak = max([b["boxes"] for b in sides["histogram"]] + [1])
    for b in sides["histogram"]:
        hi = "inf" if b["max_px"] is None else b["max_px"]
        bar = "#" * round(40 * b["boxes"] / peak)
        print(f"  [{b['min_px']:>4}, {hi:>4}) {b['boxes']:>8} {bar}", file=out)
    if "model" in result:
        _print_model_coverage(result["model"], out)
    if "anchors" in result:
        a = result["anchors"]
        print(f"anchors: {a['description']} at {a['image_size']} px ({a['count']} anchors): median best IoU "
              f"{a['best_iou_median'] if a['best_iou_median'] is None else round(a['best_iou_median'], 3)}, "
              f"{a['boxes_with_best_iou_ge_0.5']} boxes reach IoU >= 0.5, "
              f"{a['boxes_with_best_iou_lt_0.4']} stay below 0.4", file=out)
    from tfzoo.data.mirror import summary_lines
    from tfzoo.data.validate import Problem

    mirror = summary_lines(result["mirror"])
    if mirror:
        print("horizontal flips:", file=out)
        for line in mirror:
            print(f"  {line}", file=out)
    else:
        print("horizontal flips: no class looks like another one mirrored", file=out)
    if result["conversions"]:
        print("normal conversions (not problems):", file=out)
        for line in result["conversions"]:
            print(f"  {line}", file=out)
    problems = result["problems"]
    print(f"problems: {len(problems)}", file=out)
    if len(result["problem_summary"]) > 1:
        for line in result["problem_summary"]:
            print(f"  {line}", file=out)
    for p in problems:
        print(f"  {Problem(**p)}", file=out)


def cmd_inspect(args):
    result = inspect_dataset(args.data, args.split, strict=args.strict, anchors=args.anchors,
                             image_size=args.image_size, limit=args.limit, model=args.model)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_inspection(result)
    return 0


# --- tfzoo anchors ------------------------------------------------------------------


def cmd_anchors(args):
    import tfzoo.data
    from tfzoo.train import priors
    from tfzoo.train.config import preset_config

    config = preset_config(args.model)
    if not hasattr(config, "priors"):
        raise ValueError(f"{args.model} has no priors to fit: --model takes a YOLOv2 or YOLOv3 preset")
    if args.k is not None and args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    sizes = priors.box_sizes(tfzoo.data.load(args.data, args.split), args.limit or priors.PRIOR_IMAGES)
    result = priors.report(sizes, config, args.k, args.seed)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{args.data} [{args.split}]: {result['boxes']} boxes; {result['k']} priors by k-means (1 - IoU), "
          f"by area (h x w, pixels at {args.model}'s {result['image_size']}):")
    for (h, w), (hp, wp) in zip(result["priors"], result["priors_px"]):
        print(f"  {h:.4f} x {w:.4f}   ({hp:g} x {wp:g} px)")
    print(f"mean IoU with the boxes: {result['mean_iou']:.3f} (the preset's priors: "
          f"{result['default_priors_mean_iou']:.3f})")
    print(f"train with them: --set {' '.join(result['settings'])}  (or --set priors=auto)")
    return 0


# --- tfzoo proposals ----------------------------------------------------------------


def _finite(value):
    """``value`` (nested dicts and lists) with NaN and infinite floats as None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cmd_proposals(args):
    import tfzoo.data
    from tfzoo import proposals as P
    from tfzoo.data.validate import Report

    report = Report(strict=args.strict)
    examples = tfzoo.data.load(args.data, args.split, strict=args.strict, report=report)
    if args.limit:
        examples = examples.take(args.limit)
    examples = examples.cache()  # read twice: the search, then the recall
    result = {"data": args.data, "split": args.split}
    if args.file:
        source = P.load_json(args.file, P.image_sizes(examples), report, max_boxes=args.max,
                             subset=bool(args.limit))
        result.update(source=f"json:{args.file}")
    else:
        # Cached at no fewer than 2,000 boxes, as the presets read them (--max cuts the recall).
        source = P.Settings.cached(args.method, args.max, args.max_side)
        if args.max_side != P.DEFAULT_MAX_SIDE:
            print(f"tfzoo: note: --max-side {args.max_side} fills its own cache; the presets read the "
                  f"{P.DEFAULT_MAX_SIDE}-px one", file=sys.stderr)
        done = P.compute(examples, source, workers=args.workers, desc=f"selective search ({args.method})")
        result.update(source=f"ss:{args.method}", settings=dataclasses.asdict(source), cache=P.cache_dir(),
                      computed=done.computed, cached=done.cached, seconds_per_image=done.seconds_per_image)
    result.update(P.dataset_recall(examples, source, max_boxes=args.max))
    result["problems"] = [str(p) for p in report]
    if args.json:  # one strict JSON document: NaN (no computed image, no object) as null
        json.dump(_finite(result), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    print(f"{result['images']} images, {result['objects']} objects; {result['proposals_per_image']:.0f} "
          f"proposals per image (fewest {result['min_proposals']})")
    if not args.file:
        seconds = result["seconds_per_image"]
        timing = "all read from the cache" if done.computed == 0 else f"{seconds:.2f} s per image on one core"
        print(f"selective search {args.method}: {done.computed} computed, {done.cached} cached ({timing}); "
              f"cache {P.cache_dir()}")
    print("recall     " + "  ".join(f"top {top:>5}" for top in P.RECALL_TOPS))
    for threshold in P.RECALL_IOUS:
        print(f"IoU {threshold:.1f}    " + "  ".join(f"{result['recall'][f'{top}@{threshold}']:9.3f}"
                                                  for top in P.RECALL_TOPS))
    for line in report.summary():
        print(f"problem: {line}")
    return 0


# --- tfzoo evaluate -----------------------------------------------------------------

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "voc07_mAP", "voc12_mAP")


def evaluate_detections_file(detections, spec, split, strict=False, return_evaluator=False):
    """Scores a COCO-format results file against a dataset split; returns the metrics dict
    (``(metrics, evaluator)`` with ``return_evaluator``)."""
    import tfzoo.data
    from tfzoo.data.validate import Report, problems_warning
    from tfzoo.eval import Evaluator

    report = Report(strict=strict)
    names = tfzoo.data.class_names(spec, split)
    examples = tfzoo.data.load(spec, split, strict=strict, report=report)
    evaluator = Evaluator(names, tfzoo.data.category_ids(spec, split))  # as evaluate_results_file
    evaluator.add_ground_truth_examples(examples)
    evaluator.add_results(detections)
    metrics = evaluator.result()
    warning = problems_warning(report, spec, split, "scored without them")
    if warning:
        print(f"tfzoo: warning: {warning}", file=sys.stderr)
    return (metrics, evaluator) if return_evaluator else metrics


def _write_json_atomic(path, payload):
    from tfzoo.atomic import write_json_atomic

    write_json_atomic(path, payload, sort_keys=False)


def _print_metrics(metrics):
    for key in METRIC_KEYS:
        value = metrics.get(key)
        shown = "n/a" if value is None else f"{value:.4f}"
        print(f"{key:>10}  {shown}")
    per_class = metrics.get("per_class") or {}
    if per_class:
        print("per class:")
        width = max(len(n) for n in per_class)
        for name, values in per_class.items():
            cells = "  ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}"
                              for k, v in values.items() if isinstance(v, (int, float)))
            print(f"  {name:<{width}}  {cells}")


def _load(args):
    """The model at ``args.model`` (:func:`tfzoo.export.load_model`), at ``--image-size``
    when given (a Keras model's copy at that input size, same weights), frozen with
    ``--frozen``."""
    from tfzoo.export import load_model
    from tfzoo.models.base import MIN_IMAGE_SIZE

    size = getattr(args, "image_size", None)
    if size is not None and size < MIN_IMAGE_SIZE:
        args.parser.error(f"--image-size must be >= {MIN_IMAGE_SIZE}, got {size}")
    model = load_model(args.model, trust_model=args.trust_model)
    if size is not None:
        try:
            model = model.with_image_size(size)
        except ValueError as error:  # an export: fixed input size
            raise CLIError(f"{error} (--image-size)") from None
    return model.frozen() if getattr(args, "frozen", False) else model


def evaluate_model(model, spec, split, batch_size=8, strict=False, return_evaluator=False):
    """Scores a loaded model (:func:`tfzoo.export.load_model`) on a dataset split
    (:func:`tfzoo.eval.loaded.evaluate_loaded`); returns the metrics dict (``(metrics,
    evaluator)`` with ``return_evaluator``)."""
    from tfzoo.eval.loaded import ModelDataMismatch, evaluate_loaded

    try:
        return evaluate_loaded(model, spec, split, batch_size=batch_size, strict=strict,
                               return_evaluator=return_evaluator)
    except ModelDataMismatch as error:
        raise CLIError(str(error)) from None


def cmd_evaluate(args):
    if args.model and args.detections:
        args.parser.error("give either MODEL_PATH or --detections, not both")
    if not args.model and not args.detections:
        args.parser.error("evaluate needs MODEL_PATH (a model to run) or --detections RESULTS.json")
    if args.batch_size < 1:
        args.parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.detections and args.image_size is not None:
        args.parser.error("--image-size applies to a MODEL_PATH, not to --detections")
    if args.detections and args.frozen:
        args.parser.error("--frozen applies to a MODEL_PATH, not to --detections")
    if not 0.0 <= args.plot_score_threshold <= 1.0:
        args.parser.error(f"--plot-score-threshold must be in [0, 1], got {args.plot_score_threshold}")
    if args.plots and os.path.exists(args.plots) and not os.path.isdir(args.plots):
        raise CLIError(f"--plots {args.plots}: exists and is not a folder")
    if args.detections:
        if not os.path.exists(args.detections):
            raise CLIError(f"{args.detections}: no such file")
        metrics, evaluator = evaluate_detections_file(args.detections, args.data, args.split, strict=args.strict,
                                                      return_evaluator=True)
    else:
        model = _load(args)
        metrics, evaluator = evaluate_model(model, args.data, args.split, batch_size=args.batch_size,
                                            strict=args.strict, return_evaluator=True)
    if args.json:
        _write_json_atomic(args.json, metrics)
        print(f"metrics written to {args.json}", file=sys.stderr)
    if args.plots:
        from tfzoo.eval.plots import write_plots

        plotted = write_plots(evaluator.image_records(), evaluator.class_names, args.plots,
                              score_threshold=args.plot_score_threshold)
        _write_json_atomic(os.path.join(args.plots, "metrics.json"), metrics)
        print(f"plots written to {args.plots}: {', '.join(os.path.basename(f) for f in plotted['files'])}, "
              "metrics.json", file=sys.stderr)
    source = f"detections {args.detections}" if args.detections else f"{model.path} ({model.format})"
    objects = sum(int(v.get("num_gt", 0)) for v in (metrics.get("per_class") or {}).values())
    print(f"{source} on {args.data} [{args.split}]: {objects} objects")
    _print_metrics(metrics)
    return 0


# --- tfzoo predict ------------------------------------------------------------------


def _unique_stems(paths):
    """Output stems of ``paths``: the file stem, with ``_2``, ``_3`` ... for repeats."""
    seen, stems = {}, []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        stems.append(stem if count == 1 else f"{stem}_{count}")
    return stems


def cmd_predict(args):
    import numpy as np

    from tfzoo.data.images import ImageError, decode_image, image_files
    from tfzoo.draw import draw_detections, image_detections, save_png_atomic

    if not 0.0 <= args.score_threshold <= 1.0:
        args.parser.error(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    try:
        paths = image_files(args.images)  # a folder stands for its images
    except FileNotFoundError as error:
        raise CLIError(str(error)) from None
    model = _load(args)
    os.makedirs(args.out, exist_ok=True)
    results, failures = [], []
    for path, stem in zip(_progress(paths, desc="predict"), _unique_stems(paths)):
        try:
            image = decode_image(path)
        except ImageError as e:
            print(f"tfzoo: error: {e}", file=sys.stderr)
            failures.append({"file": path, "error": str(e)})
            continue
        rows = image_detections(model, image, args.score_threshold)
        drawn = draw_detections(image, np.array([r["box_yxyx_px"] for r in rows], np.float32).reshape(-1, 4),
                                [r["class_id"] for r in rows], [r["score"] for r in rows], model.class_names)
        output = os.path.join(args.out, f"{stem}.png")
        save_png_atomic(drawn, output)
        results.append({"file": path, "output": output, "height": int(image.shape[0]),
                        "width": int(image.shape[1]), "detections": rows})
        print(f"{path}: {len(rows)} detections -> {output}")
    payload = {"model": args.model, "format": model.format, "score_threshold": args.score_threshold,
               "box_format": "box_yxyx_px: [y1, x1, y2, x2], bbox_xywh_px: [x, y, width, height], "
                             "pixels of the original image",
               "images": results, "failed": failures}
    _write_json_atomic(os.path.join(args.out, "detections.json"), payload)
    print(f"detections written to {os.path.join(args.out, 'detections.json')}", file=sys.stderr)
    if failures:
        raise CLIError(f"{len(failures)} of {len(paths)} images could not be read "
                       f"(first: {failures[0]['error']})")
    return 0


# --- tfzoo export -------------------------------------------------------------------


def _calibration_images(model, spec, split, count):
    """``count`` images of ``spec``/``split`` resized to the model input by the eval pipeline."""
    from tfzoo.compare import calibration_images

    return calibration_images(model.detector, spec, split, count)


def _size_text(path):
    from tfzoo.compare import size_bytes

    return f"{size_bytes(path) / 1e6:.1f} MB"


def cmd_export(args):
    from tfzoo.export import export_saved_model, export_tflite

    if args.format == "saved_model" and args.quantize:
        args.parser.error("--quantize applies to --format tflite only")
    if args.quantize == "int8" and not args.data:
        args.parser.error("--quantize int8 needs --data (calibration images from the training split)")
    if args.format == "tflite" and not args.out.endswith(".tflite"):
        args.parser.error(f"--out must end with .tflite for --format tflite, got {args.out}")
    if args.calibration_images < 1:
        args.parser.error(f"--calibration-images must be >= 1, got {args.calibration_images}")
    ranks = None
    if args.svd:
        try:
            ranks = tuple(int(r) for r in args.svd.split(","))
        except ValueError:
            args.parser.error(f"--svd takes ranks separated by commas (e.g. 1024,256), got {args.svd!r}")
    model = _load(args)
    if model.format != "keras":
        raise CLIError(f"{args.model}: export needs a Keras model (a training directory, .keras or .h5), "
                       f"not a {model.format} export")
    detector = model.detector
    if ranks is not None:
        from tfzoo.models.fast_rcnn import truncated_svd

        try:
            detector = truncated_svd(detector, ranks)
        except ValueError as error:
            raise CLIError(f"--svd: {error}") from None
        model.detector = detector
    if args.format == "saved_model":
        export_saved_model(detector, args.out)
    else:
        calibration = None
        if args.quantize == "int8":
            calibration = _calibration_images(model, args.data, args.split, args.calibration_images)
        export_tflite(detector, args.out, quantize=args.quantize, calibration_images=calibration)
    print(f"wrote {args.out} ({_size_text(args.out)})")
    return 0


# --- tfzoo export-data --------------------------------------------------------------

#: Formats ``export-data`` writes, and the flags of the objects each one leaves out (it has
#: no such flag): VOC has no crowd flag, YOLO neither a crowd nor a difficult flag.
EXPORT_FORMATS = {"voc": ("is_crowd",), "coco": (), "yolo": ("is_crowd", "difficult")}


def _spec_folder(spec):
    """The folder (or file) a ``voc:``/``coco:``/``yolo:`` spec reads, else None."""
    import tfzoo.data

    kind, arg = tfzoo.data._parse(spec)
    return arg if kind in tfzoo.data.FOLDER_READERS else None


def _check_export_out(out, spec, overwrite):
    """Refuses an ``--out`` that is not empty (without ``overwrite``), is a file, holds the
    dataset being read, or is the filesystem root or the home folder."""
    real = os.path.realpath(out)
    if real in (os.path.realpath(os.sep), os.path.realpath(os.path.expanduser("~"))):
        raise CLIError(f"--out {out}: refusing to replace {real}")
    source = _spec_folder(spec)
    if source is not None:
        src = os.path.realpath(source)
        if src == real or src.startswith(real.rstrip(os.sep) + os.sep):
            raise CLIError(f"--out {out} holds the dataset being read ({source}); choose another folder")
    if os.path.lexists(out):
        if not os.path.isdir(out):
            raise CLIError(f"--out {out}: exists and is not a folder")
        if os.listdir(out) and not overwrite:
            raise CLIError(f"--out {out}: not empty; pass --overwrite to replace it")


def _export_stream(examples, fmt, split, counts, used_stems):
    """The examples as NumPy dicts, counting images and the objects ``fmt`` writes (and
    those it leaves out) in ``counts``. VOC keeps every split's images in one folder: an
    ``image_id`` an earlier split used, or one that is not a safe file name, becomes
    ``<split>_<index>``."""
    import numpy as np

    from tfzoo.data import images

    left_out_flags = EXPORT_FORMATS[fmt]
    for index, example in enumerate(examples):
        ex = images.numpy_example(example)
        classes = ex["classes"].reshape(-1)
        rows = classes >= 0
        left_out = np.zeros(len(classes), bool)
        for flag in left_out_flags:
            left_out |= np.asarray(ex.get(flag, left_out), bool).reshape(-1)
        counts["images"] += 1
        counts["objects"] += int(np.sum(rows & ~left_out))
        counts["left_out"] += int(np.sum(rows & left_out))
        if fmt == "voc":
            stem = str(ex.get("image_id") or "")
            if images.file_stem(stem, index) != stem or stem in used_stems:  # unsafe as a file name, or taken
                stem = f"{split}_{index:06d}"
                counts["renamed"] += 1
            while stem in used_stems:
                stem = f"{split}_{stem}"
            used_stems.add(stem)
            ex["image_id"] = stem
        yield ex


def export_dataset(spec, splits, fmt, out, overwrite=False, strict=False, limit=None):
    """Writes splits ``splits`` of dataset ``spec`` in layout ``fmt`` (``voc``, ``coco`` or
    ``yolo``) into the folder ``out``, atomically; returns ``(per-split counts, report)``."""
    import collections

    import tfzoo.data
    from tfzoo.atomic import atomic_directory
    from tfzoo.data.validate import Report

    _check_export_out(out, spec, overwrite)
    names = list(tfzoo.data.class_names(spec, splits[0]))
    for split in splits[1:]:
        other = list(tfzoo.data.class_names(spec, split))
        if other != names:
            raise CLIError(f"{spec}: split {split} has other classes than {splits[0]}: {other} vs {names}")
    module = importlib.import_module(f"tfzoo.data.{tfzoo.data.FOLDER_READERS[fmt]}")
    report = Report(strict=strict)
    summary, used_stems = {}, set()
    with atomic_directory(out, lambda _: overwrite) as tmp:
        for split in splits:
            dataset = tfzoo.data.load(spec, split, strict=strict, report=report)
            if limit is not None:
                dataset = dataset.take(limit)
            known = int(dataset.cardinality())
            counts = collections.Counter(images=0, objects=0, left_out=0, renamed=0)
            stream = _export_stream(_progress(dataset.as_numpy_iterator(), desc=f"export {split}",
                                              total=known if known >= 0 else None), fmt, split, counts, used_stems)
            if fmt == "coco":
                module.write(stream, tmp, split, names, category_ids=tfzoo.data.category_ids(spec, split))
            else:
                module.write(stream, tmp, split, names)
            summary[split] = dict(counts)
    return summary, report


def cmd_export_data(args):
    splits = list(dict.fromkeys(args.split or ["train"]))
    summary, report = export_dataset(args.data, splits, args.format, args.out, overwrite=args.overwrite,
                                     strict=args.strict, limit=args.limit)
    for split, counts in summary.items():
        notes = []
        if counts["left_out"]:
            flags = "/".join(f.replace("is_", "") for f in EXPORT_FORMATS[args.format])
            notes.append(f"{counts['left_out']} {flags} objects left out ({args.format} has no such flag)")
        if counts["renamed"]:
            notes.append(f"{counts['renamed']} images renamed {split}_NNNNNN (ids unsafe as file names or used by "
                         "an earlier split)")
        print(f"{split}: {counts['images']} images, {counts['objects']} objects" +
              (f"; {'; '.join(notes)}" if notes else ""))
    print(f"wrote {args.out} (read it back as --data {args.format}:{args.out})")
    if len(report):
        print(f"tfzoo: warning: {len(report)} problems were repaired or skipped while reading {args.data}; "
              f"'tfzoo inspect --data {args.data} --split SPLIT' lists them", file=sys.stderr)
    return 0


# --- tfzoo convert ------------------------------------------------------------------


def cmd_convert(args):
    import tfzoo.convert

    if args.check and args.source.endswith(".weights"):
        raise ValueError("--check compares with torchvision: it applies to torchvision checkpoints, not .weights")
    source = {}  # what the conversion found (format, architecture, batch-norm epsilon)
    detector = tfzoo.convert.convert(args.source, args.model, args.out, cfg=args.cfg, overwrite=args.overwrite,
                                     image_size=args.image_size, bn_eps=args.bn_eps, info=source)
    config = detector.config
    print(f"{args.source} -> {args.out}: {config.name} at {config.image_size} px, {config.num_classes} classes, "
          f"{detector.count_params():,} parameters ('tfzoo predict/evaluate/export {args.out}' take it)")
    if "bn_eps" in source:
        print(f"torchvision's batch-norm epsilon: {source['bn_eps']:g} ("
              + ("given" if args.bn_eps is not None else "inferred: 1e-5 with num_batches_tracked entries, else 0 as "
                 "the published COCO files; --bn-eps 1e-5 for a frozen-backbone fine-tune") + ")")
    if args.check:
        report = tfzoo.convert.check(detector, args.source, images=2, bn_eps=args.bn_eps)
        gaps = {**report["features"], **report["heads"]}
        print(f"against torchvision on 2 random images: largest difference relative to torchvision's largest "
              f"value {max(gaps.values()):.1e} ({max(gaps, key=gaps.get)})")
        for key in ("proposals", "detections"):
            if key in report:
                found = report[key]
                print(f"  {key}: torchvision {found['theirs']}, tfzoo {found['ours']}, matched by class and IoU >= "
                      f"0.99: {found['matched']} (boxes under 1 px left out: {found['theirs_small']} / "
                      f"{found['ours_small']})")
    return 0


# --- tfzoo train --------------------------------------------------------------------


def demo_epochs():
    """The demo's default number of epochs (``--help`` shows it without importing TensorFlow)."""
    from tfzoo.demo import DEMO_EPOCHS

    return DEMO_EPOCHS


def _check_budget(args):
    """Usage errors for a bad ``--epochs`` / ``--minutes`` / ``--checkpoint-minutes`` (train, demo)."""
    if args.epochs is not None and args.epochs < 1:
        args.parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.minutes is not None and not args.minutes > 0:
        args.parser.error(f"--minutes must be > 0, got {args.minutes}")
    if getattr(args, "checkpoint_minutes", None) is not None and not args.checkpoint_minutes > 0:
        args.parser.error(f"--checkpoint-minutes must be > 0, got {args.checkpoint_minutes}")


def cmd_train(args):
    import tfzoo.train

    _check_budget(args)
    result = tfzoo.train.train(
        args.model,
        args.data,
        split=args.split,
        val_split=args.val_split,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        minutes=args.minutes,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        settings=list(args.set or ()) + (["flip=false"] if args.no_flip else []),
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        eval_every_epoch=args.eval_every_epoch,
        seed=args.seed,
        cache=args.cache,
        checkpoint_minutes=args.checkpoint_minutes,
        strict=args.strict,
    )
    if result.stopped:
        print(f"tfzoo: warning: training stopped early: {result.stopped}", file=sys.stderr)
    print(f"training directory: {result.out_dir}")
    if result.metrics:
        print(f"AP {result.metrics['AP']:.4f}  AP50 {result.metrics['AP50']:.4f} "
              f"({os.path.join(result.out_dir, 'metrics.json')})")
    else:
        print("no evaluation (no validation split)")
    return 0


# --- tfzoo demo ---------------------------------------------------------------------


def cmd_demo(args):
    import tfzoo.demo

    from tfzoo.models.base import MIN_IMAGE_SIZE

    _check_budget(args)
    try:
        recipe = tfzoo.demo.demo_recipe(args.model)
    except ValueError as error:
        args.parser.error(str(error))
    if args.serve_size is not None and args.serve_size < MIN_IMAGE_SIZE:
        args.parser.error(f"--serve-size must be >= {MIN_IMAGE_SIZE}, got {args.serve_size}")
    time_limit = args.time_limit
    if time_limit is None and args.epochs is None and args.minutes is None:
        time_limit = tfzoo.demo.DEMO_TIME_LIMIT
    if time_limit is not None and time_limit < 0:
        args.parser.error(f"--time-limit must be >= 0 (0: none), got {time_limit:g}")
    try:
        tfzoo.demo.check_time_limit(time_limit or None, "--time-limit")
    except ValueError as error:
        args.parser.error(str(error))
    summary = tfzoo.demo.run(out=args.out, epochs=args.epochs or recipe.epochs, minutes=args.minutes,
                             seed=args.seed, precision=args.precision, model=args.model,
                             serve_size=tfzoo.demo.FROM_RECIPE if args.serve_size is None else args.serve_size,
                             time_limit=time_limit or None)
    print(tfzoo.demo.format_summary(summary))
    return 0


def cmd_compare(args):
    from tfzoo import compare

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.minutes is not None and args.epochs is not None:
        args.parser.error("give --minutes or --epochs, not both")
    if args.minutes is not None and args.minutes <= 0:
        args.parser.error(f"--minutes must be > 0, got {args.minutes:g}")
    if args.epochs is not None and args.epochs < 1:
        args.parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.latency_images < 1:
        args.parser.error(f"--latency-images must be >= 1, got {args.latency_images}")
    if args.calibration_images < 1:
        args.parser.error(f"--calibration-images must be >= 1, got {args.calibration_images}")
    try:
        results = compare.run(args.models, args.data, out=args.out, trained=args.trained or (), split=args.split,
                              val_split=args.val_split, minutes=args.minutes, epochs=args.epochs, formats=formats,
                              settings=args.set, latency_images=args.latency_images,
                              calibration_count=args.calibration_images, seed=args.seed,
                              command=compare.command_line(args.argv))
    except compare.CompareError as error:
        args.parser.error(str(error))
    with open(os.path.join(args.out, compare.TABLE_FILE), encoding="utf-8") as f:
        print(f.read(), end="")
    failed = [k for k, r in results["models"].items() if r.get("status") != "done"]
    return EXIT_FAILURE if failed and len(failed) == len(results["models"]) else 0


# --- entry point --------------------------------------------------------------------


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


#: TensorFlow's wrapping of an error raised inside a ``tf.data`` function (e.g. a reader's
#: ``DataError`` in strict mode): ``{{function_node ...}} Error in user-defined function
#: passed to MapDataset:3 transformation with iterator: Iterator::Root::Map: <the error>``.
_TF_DATA_WRAPPING = re.compile(
    r"^(\{\{function_node [^}]*\}\}\s*)?(Error in user-defined function passed to .*? "
    r"transformation with iterator: \S+: )?"
)


def _error_line(error):
    """The first line of ``error``'s message, without TensorFlow's tf.data wrapping; for an
    error AutoGraph re-raised from a ``tf.function`` (first line "in user code:", then the
    user's stack), the original exception's line, which comes last."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = lines[-1] if lines[0] == "in user code:" else lines[0]
    return _TF_DATA_WRAPPING.sub("", line, count=1) or type(error).__name__


def _usage_problem(args):
    """What is wrong with the arguments themselves, before any work: a malformed dataset
    spec, an unknown model, ``--set`` keys or values the preset refuses, sizes out of range.
    These are usage errors (exit 2) like argparse's own; problems found while working
    (a missing file, a broken dataset) are failures (exit 1)."""
    import tfzoo

    spec = getattr(args, "data", None)
    if spec is not None:
        import tfzoo.data

        try:
            tfzoo.data._parse(spec)
        except ValueError as error:
            return f"--data: {error}"
    for flag in ("image_size", "batch_size", "limit"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            return f"--{flag.replace('_', '-')} must be >= 1, got {value}"
    if args.command in ("train", "list", "inspect", "anchors") and getattr(args, "model", None) is not None:
        from tfzoo.models import MODELS

        if args.model not in tfzoo.list_models():
            return f"unknown model {args.model!r}; known models: {', '.join(tfzoo.list_models())}"
        config = MODELS[args.model].config if args.command in ("train", "inspect") else None
        if config is not None and config.fixed_size and getattr(args, "image_size", None) not in (
                None, config.image_size):
            from tfzoo.train.config import fixed_size_message

            return fixed_size_message(args.model, config)
        if args.command == "train" and args.set:
            from tfzoo.train import preset_config

            from tfzoo.train.loop import _split_auto_priors

            try:
                preset_config(args.model).with_settings(_split_auto_priors(args.set)[0])
            except (ValueError, TypeError) as error:
                return f"--set: {error} ('tfzoo list {args.model}' shows the keys and their defaults)"
    return None


def build_parser():
    import tfzoo

    parser = argparse.ArgumentParser(
        prog="tfzoo",
        description="tfzoo: classic object detectors in TensorFlow 2 / Keras 3.",
        epilog="Boxes are [y1, x1, y2, x2] normalized to [0, 1]; see the README for conventions.",
    )
    parser.add_argument("--version", action="version", version=f"tfzoo {tfzoo.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and TF logs on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models and the dataset specs; with MODEL, its settings",
                       description="Lists the model presets (family, input size, backbone, CPU preset) and the "
                                   "dataset specs. With MODEL: that preset's config, every key --set accepts "
                                   "with its default.")
    p.add_argument("model", metavar="MODEL", nargs="?", help="a preset to show in full")
    p.set_defaults(func=cmd_list, parser=p)

    p = sub.add_parser("inspect", help="dataset statistics and validation problems",
                       description="Counts images, objects and classes of a dataset split, histograms box "
                                   "sizes, and lists every validation problem found.")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="train", help="split name (default: train)")
    p.add_argument("--strict", action="store_true",
                   help="fail before any work on the first validation problem (default: skip and report)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--anchors", choices=("fpn", "ssd", "rpn"),
                   help="also report how well the boxes match this anchor layout (best IoU per box)")
    p.add_argument("--model", metavar="MODEL",
                   help="also report how this preset sees the boxes: for a YOLO the objects it loses to one object "
                        "per cell (and prior) and how its priors fit; for an anchor model each box's best IoU")
    p.add_argument("--image-size", type=int, default=None,
                   help="square model input size (default: the --model preset's, 640 for --anchors)")
    p.add_argument("--limit", type=int, default=None, help="inspect only the first N images")
    p.set_defaults(func=cmd_inspect, parser=p)

    p = sub.add_parser("anchors", help="fit YOLOv2/v3 priors to a dataset's boxes (k-means, 1 - IoU)",
                       description="Runs YOLOv2's dimension clusters on the training boxes: k-means on their "
                                   "(height, width) with the distance 1 - IoU. Prints the priors (fractions of the "
                                   "input and pixels at the model's size), their mean IoU with the boxes beside the "
                                   "preset's own priors', and the --set arguments that train with them "
                                   "(tfzoo train ... --set priors=auto fits them at the start of training).")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--model", default="yolov3", help="a YOLOv2 or YOLOv3 preset (default: yolov3)")
    p.add_argument("-k", type=int, default=None, help="number of priors (default: the preset's)")
    p.add_argument("--split", default="train", help="split name (default: train)")
    p.add_argument("--limit", type=int, default=None,
                   help="boxes of the first N images only (default: 5000 images)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=cmd_anchors, parser=p)

    p = sub.add_parser("proposals", help="compute and cache selective search proposals; print their recall",
                       description="Runs selective search (OpenCV, the papers' fast mode by default) on every image "
                                   "of a dataset split, in parallel processes, and caches the boxes outside the "
                                   "dataset (keyed by the image's content and the settings; an interrupted run "
                                   "resumes). Prints the papers' figures: recall at IoU 0.5 and 0.7 of the top "
                                   "100, 300, 1,000 and 2,000 proposals, proposals per image and seconds per "
                                   "image. With --file, checks a user's proposals file instead and prints its "
                                   "recall.")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="train", help="split name (default: train)")
    p.add_argument("--method", choices=("fast", "quality"), default="fast",
                   help="selective search mode (default: fast, as R-CNN, SPP-Net and Fast R-CNN)")
    p.add_argument("--max", type=int, default=2000, metavar="N", help="proposals kept per image (default: 2000)")
    p.add_argument("--max-side", type=int, default=500, metavar="PX",
                   help="search larger images at this longer side (default: 500, VOC's size)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="processes (default: the CPUs)")
    p.add_argument("--file", metavar="JSON",
                   help="a user's proposals {image_id: [[x1, y1, x2, y2], ...]} in pixels, best first: "
                        "checked and scored instead of running selective search")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--strict", action="store_true", help="fail on the first validation problem")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=cmd_proposals, parser=p)

    p = sub.add_parser("evaluate", help="COCO and VOC metrics of a model or of a detections file",
                       description="Runs a model (MODEL_PATH) on a dataset split, or scores a COCO-format "
                                   "results file (--detections: image_id, category_id in the dataset's own ids, "
                                   "bbox [x, y, w, h] in pixels, score; on VOC data image_id is the file stem), "
                                   "and prints the COCO and VOC metrics. --plots DIR also draws the per-class "
                                   "precision-recall curves and the confusion matrix.")
    p.add_argument("model", nargs="?", metavar="MODEL_PATH", help=MODEL_HELP)
    p.add_argument("--detections", help="COCO-format results JSON (instead of MODEL_PATH)")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="val", help="split name (default: val)")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call (default: 8)")
    p.add_argument("--strict", action="store_true", help="fail on the first ground-truth validation problem")
    p.add_argument("--json", metavar="OUT", help="also write the metrics to this JSON file (atomically)")
    p.add_argument("--plots", metavar="DIR",
                   help="also write pictures to DIR (created if missing): per-class precision-recall curves at IoU "
                        "0.5 (pr_curves.png, one line per class with its AP50; pr_curves_per_class.png, one panel "
                        "per class), the confusion matrix with a background row and column (confusion_matrix.png), "
                        "their data (plots.json) and the metrics (metrics.json)")
    p.add_argument("--plot-score-threshold", type=float, default=0.3, metavar="T",
                   help="detections scoring below T are left out of the confusion matrix (default: 0.3, as "
                        "'tfzoo predict'; the curves use every detection)")
    p.add_argument("--image-size", type=int, metavar="N", help=IMAGE_SIZE_HELP)
    p.add_argument("--frozen", action="store_true", help=FROZEN_HELP)
    p.add_argument("--trust-model", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=cmd_evaluate, parser=p)

    p = sub.add_parser("predict", help="detect objects in image files; draw them and write JSON",
                       description="Runs a model on image files. For each image writes OUT/<stem>.png with the "
                                   "boxes, class names and scores drawn, and OUT/detections.json with the "
                                   "detections in pixel coordinates of the original image.")
    p.add_argument("model", metavar="MODEL_PATH", help=MODEL_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (JPEG, PNG, ...) or folders (their images, not subfolders)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="keep detections scoring at least this (default: 0.3)")
    p.add_argument("--image-size", type=int, metavar="N", help=IMAGE_SIZE_HELP)
    p.add_argument("--frozen", action="store_true", help=FROZEN_HELP)
    p.add_argument("--trust-model", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=cmd_predict, parser=p)

    p = sub.add_parser("export", help="export a Keras model to a SavedModel or a TFLite file",
                       description="Exports a Keras model (training directory, .keras or .h5) with NMS inside: "
                                   "a SavedModel taking uint8 images of any size, or a TFLite file (builtin ops "
                                   "only) taking one float32 image resized to the model input. Every file is "
                                   "checked (loaded back and run) before it replaces an earlier one.")
    p.add_argument("model", metavar="MODEL_PATH", help=MODEL_HELP)
    p.add_argument("--format", required=True, choices=("saved_model", "tflite"), help="what to write")
    p.add_argument("--quantize", choices=("float16", "dynamic", "int8"),
                   help="TFLite quantization (default: none, float32); int8 needs --data")
    p.add_argument("--data", help=f"calibration data for int8: {DATA_HELP}")
    p.add_argument("--split", default="train", help="calibration split (default: train)")
    p.add_argument("--calibration-images", type=int, default=100,
                   help="calibration images for int8 (default: 100)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="SavedModel directory, or .tflite file (replaced if it is an earlier export)")
    p.add_argument("--image-size", type=int, metavar="N", help=IMAGE_SIZE_HELP)
    p.add_argument("--svd", metavar="RANKS",
                   help="Fast R-CNN only: truncated SVD of the RoI head's fully connected layers, one rank per "
                        "layer, e.g. 1024,256 (the paper's fc6/fc7; 0 keeps a layer whole)")
    p.add_argument("--trust-model", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=cmd_export, parser=p)

    p = sub.add_parser("export-data", help="write a dataset as a VOC, COCO or YOLO folder",
                       description="Reads splits of any dataset tfzoo reads (shapes, voc:, coco:, yolo:, tfds:) and "
                                   "writes them in the VOC (JPEGImages/, Annotations/, ImageSets/Main/, labels.txt), "
                                   "COCO (annotations/instances_SPLIT.json, SPLIT/) or YOLO (data.yaml, "
                                   "images/SPLIT/, labels/SPLIT/) layout, images as JPEG (quality 95). The folder "
                                   "is built under a temporary name and renamed into place when complete. Objects "
                                   "a format has no flag for are left out and counted: crowd regions in VOC and "
                                   "YOLO, difficult objects in YOLO. Problems of the source are skipped and "
                                   "reported as in 'tfzoo inspect' (--strict: stop at the first).")
    p.add_argument("data", metavar="SPEC", help=DATA_HELP)
    p.add_argument("--split", action="append", metavar="SPLIT",
                   help="a split to write, repeatable (default: train)")
    p.add_argument("--format", required=True, choices=tuple(EXPORT_FORMATS), help="the layout to write")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder; an existing one must be empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (once the new one is complete)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images of each split")
    p.add_argument("--strict", action="store_true", help="fail on the first validation problem of the source")
    p.set_defaults(func=cmd_export_data, parser=p)

    p = sub.add_parser("convert", help="convert published weights (torchvision RetinaNet, Faster R-CNN, SSD300; "
                                       "Darknet YOLOv3) into a tfzoo model folder",
                       description="Reads published detector weights into a tfzoo preset and writes OUT/model.keras, "
                                   "config.json and converted.json, which predict, evaluate, export and compare "
                                   "--trained take like a training directory. Sources: torchvision checkpoints "
                                   "(.pth, read with torch.load(weights_only=True): pip install 'tfzoo[convert]'; or "
                                   ".safetensors, read without torch) of retinanet_resnet50_fpn, "
                                   "fasterrcnn_resnet50_fpn and ssd300_vgg16 into retinanet, faster_rcnn_fpn and "
                                   "ssd300 (COCO's 80 classes from their 91-entry heads); a Darknet .weights file of "
                                   "YOLOv3 or "
                                   "YOLOv3-tiny (with the .cfg it goes with; without one, the published yolov3.cfg / "
                                   "yolov3-tiny.cfg: 608 / 416 px, 80 COCO classes) into yolov3 / yolov3_tiny.")
    p.add_argument("source", metavar="SOURCE", help="a torchvision checkpoint (.pth, .pt, .safetensors) or a Darknet "
                                                    ".weights file (yolov3.weights, yolov3-tiny.weights)")
    p.add_argument("--model", choices=("retinanet", "faster_rcnn_fpn", "ssd300", "yolov3", "yolov3_tiny"), default=None,
                   help="the preset to fill (default: the checkpoint's; for Darknet the cfg's layout, else yolov3)")
    p.add_argument("--image-size", type=int, metavar="N", default=None,
                   help="the square input size (default: 1024 for torchvision's RetinaNet and Faster R-CNN, 300 "
                        "for its SSD300 (fixed), the cfg's or the published cfg's for Darknet)")
    p.add_argument("--check", action="store_true",
                   help="then run torchvision's own model on the checkpoint and the converted one on two random "
                        "images and print how far apart they are (needs torch and torchvision)")
    p.add_argument("--bn-eps", type=float, metavar="EPS", default=None,
                   help="torchvision's batch-norm epsilon (default: 1e-5 when the file has num_batches_tracked "
                        "entries, else 0, as the published COCO checkpoints load)")
    p.add_argument("--cfg", metavar="CFG", help="the Darknet .cfg the weights go with (size, classes, anchors, masks; "
                                                "every convolutional section is checked against the model)")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    p.set_defaults(func=cmd_convert, parser=p)

    p = sub.add_parser("compare", help="train, export and measure several models on one dataset: AP, latency, size",
                       description="Trains each MODEL with its default recipe on --split for --minutes (or takes "
                                   "finished --trained directories), exports each to --formats, and measures every "
                                   "format on the same --val-split images with the same evaluator: COCO AP, AP50, "
                                   "APs, batch-1 latency from the original image to its detections (median and "
                                   "10th-90th percentile), file size and the peak memory of the measuring process. "
                                   "Writes DIR/compare.json, DIR/compare.md (one row per model and format) and "
                                   "DIR/compare.png (AP against latency, the Pareto front marked). Run the same "
                                   "command again to resume a stopped compare: finished models are skipped, "
                                   "failed ones tried again.")
    p.add_argument("models", nargs="*", metavar="MODEL", help="presets to train ('tfzoo list')")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="train", help="training split (default: train)")
    p.add_argument("--val-split", default="val", help="the split every format is scored on (default: val)")
    p.add_argument("--minutes", type=float, default=None, help="training time budget per model")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per model (instead of --minutes)")
    p.add_argument("--trained", nargs="+", metavar="RUN_DIR", help="finished training directories to measure as they are")
    p.add_argument("--formats", default=",".join(("keras", "saved_model", "tflite", "int8")),
                   help="comma-separated formats to measure: keras, saved_model, tflite, int8 (default: all four)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every trained model (repeatable)")
    p.add_argument("--latency-images", type=int, default=10, help="val images timed per format, 3 passes (default: 10)")
    p.add_argument("--calibration-images", type=int, default=100,
                   help="training images calibrating the int8 export (default: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="the compare's folder (resumed when it holds one)")
    p.set_defaults(func=cmd_compare, parser=p)

    p = sub.add_parser("train", help="train a model on a dataset (writes a training directory)",
                       description="Trains a registered model ('tfzoo list') with its recipe and writes a "
                                   "training directory: config.json, model.keras (after every epoch), "
                                   "state.json, metrics.json, training.png, logs/. At the end it scores a "
                                   "sample of the training split beside val and says whether the model "
                                   "under- or overfits, with per-class AP and the most confused class pairs.")
    p.add_argument("model", metavar="MODEL",
                   help="a registered model name, e.g. retinanet_mobile ('tfzoo list MODEL' shows its settings: "
                        "the keys --set accepts, with their defaults)")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="train", help="training split (default: train)")
    p.add_argument("--val-split", default="val", help="evaluation split (default: val)")
    p.add_argument("--image-size", type=int, help="square input size (default: the model's)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the model's)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="epochs to train (default: the model's)")
    budget.add_argument("--minutes", type=float, help="time budget; the schedule is fitted to it")
    p.add_argument("--out", metavar="DIR",
                   help="training directory (default: a new folder per run: runs/MODEL, runs/MODEL-2, ...); a "
                        "folder that holds a run or other files is refused unless --resume or --overwrite")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the latest runs/MODEL[-N]) from its last checkpoint; "
                        "with --epochs above its plan, train a finished run further")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds a run (replaced) or other files (left alone)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set learning_rate=0.005); 'tfzoo list MODEL' lists "
                        "the keys and their defaults")
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                   help="distribution strategy (default: default)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on GPU, mixed_bfloat16 on CPU (variables, prediction convs and losses stay "
                        "float32). On a CPU with AMX it trains retinanet_mobile (ResNet-10) 1.3x faster; with "
                        "--set backbone_dtype=float32 only the FPN and heads run in 16 bits (the faster choice for "
                        "a MobileNetV2 backbone, whose depthwise convolutions are slower in bfloat16)")
    p.add_argument("--no-flip", action="store_true",
                   help="no horizontal flips in the augmentation (same as --set flip=false): for data where a "
                        "mirrored object is another class or none, e.g. characters (b/d) or arrows. Without it, "
                        "flips are turned off by themselves (with a warning) when mirrored classes of the training "
                        "data look like each other, as 'tfzoo inspect' shows; --set flip=true keeps them")
    p.add_argument("--eval-every-epoch", action="store_true",
                   help="evaluate on --val-split after every epoch (val AP per epoch in training.png)")
    p.add_argument("--cache", action="store_true",
                   help="keep the decoded training examples in memory after the first epoch (augmentation "
                        "still runs every epoch); default: read and decode them every epoch")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                   help="also checkpoint inside an epoch every M minutes (default: 10), so an interrupt loses "
                        "minutes, not an epoch; --resume then finishes that epoch. Ctrl-C checkpoints too")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first bad record of the data (named by file, record and problem): before "
                        "training for a folder's annotations and image headers, during it for an image that fails "
                        "to decode; default: train without the records the reader skips or repairs, each split's "
                        "named in a warning ('tfzoo inspect --data SPEC' lists them all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=cmd_train, parser=p)

    p = sub.add_parser(
        "demo", help="the main job: train retinanet_mobile on shapes, evaluate, export, time, draw",
        description="Trains retinanet_mobile (or --model, a CPU preset) on the builtin shapes data (from random "
                    "initialization, no download) at 256 px, then evaluates it on shapes/val at --serve-size, "
                    "saves it and exports a SavedModel and a builtin-only TFLite file at that size, scores both "
                    "exports, times each format and draws detections on a few val images. "
                    "Everything lands in --out; a summary is printed at the end.")
    p.add_argument("--model", default="retinanet_mobile", metavar="MODEL",
                   help="the CPU preset to train (default: retinanet_mobile; 'tfzoo list' marks the CPU presets)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: saved_models/retinanet_shapes for retinanet_mobile, else "
                        "saved_models/MODEL_shapes)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int,
                        help=f"training epochs (default: {demo_epochs()}, about 10 minutes on 2 CPU cores; more "
                             "epochs, higher AP)")
    budget.add_argument("--minutes", type=float, help="training time budget instead of a number of epochs")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    from tfzoo.demo import DEMO_SERVE_SIZE, DEMO_TIME_LIMIT, POST_TRAINING_SECONDS, PRECISIONS  # no TensorFlow import

    p.add_argument("--time-limit", type=float, metavar="MIN",
                   help=f"minutes for the whole demo: training stops early if it would leave less than "
                        f"{POST_TRAINING_SECONDS:g} s for the steps after it (default: {DEMO_TIME_LIMIT:g} when "
                        "neither --epochs nor --minutes is given, else none; 0: none)")

    p.add_argument("--serve-size", type=int, metavar="N",
                   help=f"input size the trained model is evaluated and exported at (default for retinanet_mobile: "
                        f"{DEMO_SERVE_SIZE}; it trains at 256, and the same weights served at 320 find more of the "
                        "small objects; --serve-size 256 serves at the training size)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="training precision: 'mixed' runs the FPN and heads in bfloat16 (float16 on a GPU) with "
                        "the backbone and losses in float32; 'auto' (default) picks it on a CPU with AMX and no "
                        "GPU, where it trains about 1.2x faster, else float32. Exports are float32 either way")
    p.set_defaults(func=cmd_demo, parser=p)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one ``tfzoo: warning:`` line on stderr (``--debug`` keeps Python's form)."""
    print(f"tfzoo: warning: {message}", file=sys.stderr)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: compare records its command
    if not args.command:
        parser.print_help()
        return 2
    if not args.debug:
        _quiet_tensorflow()
    problem = _usage_problem(args)
    if problem:
        getattr(args, "parser", parser).error(problem)  # usage errors exit with 2, like argparse's own
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _show_warning
            return args.func(args)
    except KeyboardInterrupt:
        print("tfzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as a killed pipe member
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as error:  # one clear line unless --debug
        if args.debug:
            raise
        print(f"tfzoo: error: {_error_line(error)}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
