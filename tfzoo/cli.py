"""The ``tfzoo`` command: the only place in the package that parses arguments.

Errors are one line on stderr with a non-zero exit code (1 for failures, 2 for usage);
``--debug`` shows the traceback. Progress bars and logs go to stderr, so ``--json``
output on stdout stays a single JSON document.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings

EXIT_FAILURE = 1

DATA_HELP = "dataset spec: shapes | voc:PATH | coco:PATH | tfds:NAME (e.g. tfds:voc/2007)"


def _quiet_tensorflow():
    """Keeps TF's C++ start-up chatter off the terminal unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _progress(iterable, desc, total=None):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="img", file=sys.stderr, dynamic_ncols=True,
                disable=None)


# --- tfzoo list ---------------------------------------------------------------------


def cmd_list(args):
    import tfzoo
    from tfzoo.data import shapes

    models = tfzoo.list_models()
    print("models:")
    if models:
        for name in models:
            print(f"  {name}")
    else:
        print("  (none registered yet)")
    print("datasets:")
    print(f"  shapes            builtin synthetic data, classes: {', '.join(shapes.CLASS_NAMES)}")
    print("  voc:PATH          a VOCdevkit folder (JPEGImages/, Annotations/, ImageSets/Main/)")
    print("  coco:PATH         a COCO 2017 folder (annotations/instances_SPLIT.json, SPLIT/)")
    print("  tfds:NAME         a TensorFlow Datasets detection set, e.g. tfds:voc/2007")
    return 0


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


def inspect_dataset(spec, split, strict=False, anchors=None, image_size=640, limit=None):
    """Statistics and validation problems of a dataset split, as a JSON-ready dict."""
    import numpy as np

    import tfzoo.data
    from tfzoo.data.validate import Report

    report = Report(strict=strict)
    names = tfzoo.data.class_names(spec)
    dataset = tfzoo.data.load(spec, split, strict=strict, report=report)
    if limit is not None:
        dataset = dataset.take(limit)
    per_class = {name: 0 for name in names}
    sides_px, canvas_boxes = [], []
    images = objects = negatives = crowd = difficult = 0
    image_sides = []
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
        hw_px = (boxes[:, 2:] - boxes[:, :2]) * np.array([height, width], np.float32)
        sides_px.extend(np.sqrt(np.prod(hw_px, axis=1)).tolist())
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
        "problems": report.to_json(),
        "problem_summary": report.summary(),
        "conversions": report.notes_summary(),
    }
    if anchors:
        anchor_boxes, description = _anchor_set(anchors, image_size)
        all_boxes = np.concatenate(canvas_boxes) if canvas_boxes else np.zeros([0, 4], np.float32)
        best = _anchor_coverage(all_boxes, anchor_boxes)
        result["anchors"] = {
            "layout": anchors,
            "description": description,
            "image_size": image_size,
            "count": int(len(anchor_boxes)),
            "best_iou_median": float(np.median(best)) if best.size else None,
            "boxes_with_best_iou_ge_0.5": int((best >= 0.5).sum()),
            "boxes_with_best_iou_lt_0.4": int((best < 0.4).sum()),
        }
    return result


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
    if "anchors" in result:
        a = result["anchors"]
        print(f"anchors: {a['description']} at {a['image_size']} px ({a['count']} anchors): median best IoU "
              f"{a['best_iou_median'] if a['best_iou_median'] is None else round(a['best_iou_median'], 3)}, "
              f"{a['boxes_with_best_iou_ge_0.5']} boxes reach IoU >= 0.5, "
              f"{a['boxes_with_best_iou_lt_0.4']} stay below 0.4", file=out)
    from tfzoo.data.validate import Problem

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
                             image_size=args.image_size, limit=args.limit)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_inspection(result)
    return 0


# --- tfzoo evaluate -----------------------------------------------------------------

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "voc07_mAP", "voc12_mAP")


def evaluate_detections_file(detections, spec, split, strict=False):
    """Scores a COCO-format results file against a dataset split; returns the metrics dict."""
    import tfzoo.data
    from tfzoo.data.validate import Report
    from tfzoo.eval import evaluate_results_file

    report = Report(strict=strict)
    names = tfzoo.data.class_names(spec)
    examples = tfzoo.data.load(spec, split, strict=strict, report=report)
    metrics = evaluate_results_file(detections, examples, names, tfzoo.data.category_ids(spec))
    if len(report):
        print(f"tfzoo: warning: {len(report)} ground-truth problems were repaired or skipped; "
              f"'tfzoo inspect --data {spec} --split {split}' lists them", file=sys.stderr)
    return metrics


def _write_json_atomic(path, payload):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


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
            cells = "  ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, (int, float)))
            print(f"  {name:<{width}}  {cells}")


def cmd_evaluate(args):
    if not args.detections:
        args.parser.error("evaluate needs --detections RESULTS.json (scoring a model file arrives with the detectors)")
    if not os.path.exists(args.detections):
        raise CLIError(f"{args.detections}: no such file")
    metrics = evaluate_detections_file(args.detections, args.data, args.split, strict=args.strict)
    if args.json:
        _write_json_atomic(args.json, metrics)
        print(f"metrics written to {args.json}", file=sys.stderr)
    _print_metrics(metrics)
    return 0


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
    """The first line of ``error``'s message, without TensorFlow's tf.data wrapping."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return _TF_DATA_WRAPPING.sub("", text.splitlines()[0], count=1) or type(error).__name__


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

    p = sub.add_parser("list", help="list the registered models and the dataset specs")
    p.set_defaults(func=cmd_list)

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
    p.add_argument("--image-size", type=int, default=640,
                   help="square model input size the anchors are laid on (default: 640)")
    p.add_argument("--limit", type=int, default=None, help="inspect only the first N images")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("evaluate", help="COCO and VOC metrics of a detections file",
                       description="Scores a COCO-format results file (image_id, category_id in the dataset's "
                                   "own ids, bbox [x, y, w, h] in pixels, score; on VOC data image_id is the "
                                   "file stem) against a dataset split.")
    p.add_argument("--detections", help="COCO-format results JSON")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="val", help="split name (default: val)")
    p.add_argument("--strict", action="store_true", help="fail on the first ground-truth validation problem")
    p.add_argument("--json", metavar="OUT", help="also write the metrics to this JSON file (atomically)")
    p.set_defaults(func=cmd_evaluate, parser=p)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one ``tfzoo: warning:`` line on stderr (``--debug`` keeps Python's form)."""
    print(f"tfzoo: warning: {message}", file=sys.stderr)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if not args.debug:
        _quiet_tensorflow()
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _show_warning
            return args.func(args)
    except KeyboardInterrupt:
        print("tfzoo: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line unless --debug
        if args.debug:
            raise
        print(f"tfzoo: error: {_error_line(error)}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
