"""Where a detector's AP goes: recall by object size and confusions between classes, at one
or several input sizes.

For each ``--image-size`` (a Keras model is run at that size with the same weights,
:meth:`tfzoo.models.base.Detector.with_image_size`; an export only at its own size), the
model detects the split's images once and the script prints:

- the COCO and VOC metrics of the foundation's evaluator (AP, AP50, APs/APm/APl);
- recall by object size: the share of ground-truth objects (crowd / difficult left out)
  that a detection of the **same class** with score >= ``--score-threshold`` overlaps at
  IoU >= 0.5, by the object's size ``sqrt(box area)`` in original-image pixels;
- confusions: objects that a detection of **another class** with score >= the threshold
  overlaps at IoU >= 0.5 (each such detection is a false positive of its class), with the
  commonest (true class -> detected class) pairs.

IoU is :func:`tfzoo.ops.boxes.iou`; detections and ground truth come from
:meth:`tfzoo.eval.Evaluator.image_records`, as the metrics saw them.

    python benchmarks/analyze_detections.py saved_models/retinanet_shapes/train \\
        --data shapes --split val --image-size 256 320 --json /tmp/analysis.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from tfzoo.eval.diagnostics import MATCH_IOU, analyze


def _report(size, metrics, analysis):
    lines = [f"input {size} px: AP {metrics['AP']:.3f}  AP50 {metrics['AP50']:.3f}  AP75 {metrics['AP75']:.3f}  "
             f"APs {metrics['APs']:.3f}  APm {metrics['APm']:.3f}  APl {metrics['APl']:.3f}",
             f"  recall at IoU {MATCH_IOU} by object size (sqrt(area), original px), score >= "
             f"{analysis['score_threshold']}:"]
    for name, row in analysis["recall_by_size"].items():
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        lines.append(f"    {name:>7} px  {row['objects']:5d} objects  recall {recall}")
    lines.append(f"  all: {analysis['found']} of {analysis['objects']} objects found; "
                 f"{analysis['confused_objects']} also drew a wrong-class detection")
    top = list(analysis["confusions"].items())[:6]
    if top:
        lines.append("  commonest confusions: " + ", ".join(f"{pair} {count}" for pair, count in top))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL_PATH",
                        help="a training directory, .keras, .tflite or (with --trust-model) SavedModel")
    parser.add_argument("--data", default="shapes", help="dataset spec (default: shapes)")
    parser.add_argument("--split", default="val", help="split (default: val)")
    parser.add_argument("--image-size", type=int, nargs="+", metavar="N",
                        help="input sizes to run a Keras model at (default: its own)")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="detections scoring below this are left out of recall and confusions (default: 0.3)")
    parser.add_argument("--trust-model", action="store_true", help="allow SavedModel directories and .h5 files")
    parser.add_argument("--json", metavar="OUT", help="also write the results here")
    args = parser.parse_args(argv)
    from tfzoo.models.base import MIN_IMAGE_SIZE

    if args.image_size and min(args.image_size) < MIN_IMAGE_SIZE:
        parser.error(f"--image-size values must be >= {MIN_IMAGE_SIZE}")
    if not 0.0 <= args.score_threshold <= 1.0:
        parser.error(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if not os.path.exists(args.model):
        parser.error(f"{args.model}: no such file or directory")

    import tfzoo.data
    from tfzoo.eval import evaluate_detector
    from tfzoo.export import load_model

    loaded = load_model(args.model, trust_model=args.trust_model)
    sizes = args.image_size or [loaded.image_size[0]]
    if loaded.format != "keras" and sizes != [loaded.image_size[0]]:
        parser.error(f"{args.model} is a {loaded.format} export with a fixed input size {loaded.image_size[0]}")
    names = list(tfzoo.data.class_names(args.data))
    results = {}
    for size in sizes:
        model = loaded.with_image_size(size) if loaded.format == "keras" else loaded
        metrics, evaluator = evaluate_detector(
            model.detect, tfzoo.data.load(args.data, args.split), model.image_size, names,
            tfzoo.data.category_ids(args.data), keep_aspect_ratio=model.keep_aspect_ratio, progress=False,
            return_evaluator=True)
        analysis = analyze(evaluator.image_records(), names, args.score_threshold)
        print(_report(size, metrics, analysis), flush=True)
        results[str(size)] = {"metrics": {k: v for k, v in metrics.items() if k != "per_class"},
                              "per_class": metrics["per_class"], **analysis}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "data": args.data, "split": args.split, "sizes": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
