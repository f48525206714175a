"""Multi-class NMS latency: tfzoo's builtin-only NMS against TF's combined NMS, same inputs.

One image of RetinaNet-at-640 size (76,725 anchors x 80 classes, class-agnostic boxes),
IoU 0.5, score threshold 0.05, 100 detections, in two scenarios:

- ``trained``: scores like a trained detector's: about 800 background (anchor, class)
  pairs above the threshold plus 8 objects, each covered by 40 overlapping anchors;
- ``dense``: scores like an untrained one's: about 494,000 pairs above the threshold.

Implementations:

- ``tfzoo``: :func:`tfzoo.ops.nms.multiclass_nms` (top-1000 pre-selection, class offsets,
  one NonMaxSuppressionV5) inside ``tf.function``;
- ``tfzoo tflite``: the same graph converted with TFLite builtin ops only, in the
  ``ai-edge-litert`` interpreter;
- ``tf combined``: ``tf.image.combined_non_max_suppression`` (not a TFLite builtin), the peer,
  with the same thresholds and 100 detections per class and in total.

Each runs ``--warmup`` times, then ``--repeats`` timed runs; median and min-max in ms.

Usage::

    python benchmarks/bench_nms.py --repeats 30
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile

import numpy as np
import tensorflow as tf

from tfzoo.ops import nms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


#: Beta(a, b) of the background scores per scenario.
SCENARIOS = {"trained": (0.1, 100.0), "dense": (0.5, 30.0)}


def make_inputs(num_anchors, num_classes, num_objects, scenario="trained", seed=0):
    """Boxes ``[1, N, 4]`` and scores ``[1, N, K]`` of a dense detector (see the scenarios)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, (num_anchors, 2))
    sizes = rng.uniform(0.02, 0.3, (num_anchors, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).clip(0, 1)
    scores = rng.beta(*SCENARIOS[scenario], (num_anchors, num_classes))
    for _ in range(num_objects):  # a few objects, each covered by tens of overlapping anchors
        cls = rng.integers(num_classes)
        centre = rng.uniform(0.2, 0.8, 2)
        near = rng.choice(num_anchors, 40, replace=False)
        boxes[near, :2] = centre - 0.1 + rng.normal(0, 0.01, (40, 2))
        boxes[near, 2:] = centre + 0.1 + rng.normal(0, 0.01, (40, 2))
        scores[near, cls] = rng.uniform(0.3, 0.95, 40)
    return boxes[None].astype(np.float32), scores[None].astype(np.float32)


def _time(fn, warmup, repeats):
    """``(median, min, max)`` latency in ms of ``fn()`` (see :func:`common.time_calls`)."""
    stats = common.spread(common.time_calls(fn, warmup, repeats))
    return tuple(1000 * stats[k] for k in ("median", "min", "max"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--anchors", type=int, default=76725)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS) + ["both"], default="both")
    args = parser.parse_args(argv)
    for scenario in sorted(SCENARIOS) if args.scenario == "both" else [args.scenario]:
        run(args, scenario)


def run(args, scenario):
    boxes, scores = make_inputs(args.anchors, args.classes, args.objects, scenario)
    spec = (tf.TensorSpec(boxes.shape, tf.float32), tf.TensorSpec(scores.shape, tf.float32))

    @tf.function(input_signature=spec)
    def ours(b, s):
        out = nms.multiclass_nms(b, s, max_detections=100, iou_threshold=0.5, score_threshold=0.05,
                                 pre_nms_top_k=1000)
        return out["detection_boxes"], out["detection_scores"], out["detection_classes"], out["num_detections"]

    @tf.function(input_signature=spec)
    def combined(b, s):
        out = tf.image.combined_non_max_suppression(
            b[:, :, None, :], s, max_output_size_per_class=100, max_total_size=100, iou_threshold=0.5,
            score_threshold=0.05, clip_boxes=False)
        return out.nmsed_boxes, out.nmsed_scores, out.nmsed_classes, out.valid_detections

    results = {}
    results["tfzoo (tf.function)"] = _time(lambda: ours(boxes, scores), args.warmup, args.repeats)
    results["tf.image.combined_non_max_suppression"] = _time(lambda: combined(boxes, scores), args.warmup,
                                                             args.repeats)

    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_concrete_functions([ours.get_concrete_function()], ours)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nms.tflite")
        with open(path, "wb") as f:
            f.write(converter.convert())
        interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
        interpreter.allocate_tensors()
        inputs = interpreter.get_input_details()
        by_shape = {tuple(d["shape"]): d["index"] for d in inputs}

        def run_tflite():
            interpreter.set_tensor(by_shape[boxes.shape], boxes)
            interpreter.set_tensor(by_shape[scores.shape], scores)
            interpreter.invoke()

        results["tfzoo (TFLite builtins, ai-edge-litert)"] = _time(run_tflite, args.warmup, args.repeats)

    found_ours = int(ours(boxes, scores)[3][0])
    found_peer = int(combined(boxes, scores)[3][0])
    peer = results["tf.image.combined_non_max_suppression"][0]
    above = int((scores > 0.05).sum())
    print(f"\nscenario {scenario}: 1 image, {args.anchors} anchors x {args.classes} classes, {above} pairs with "
          f"score > 0.05, IoU 0.5, 100 detections; median (min-max) of {args.repeats} runs after "
          f"{args.warmup} warm-up runs")
    print("| implementation | latency ms median (min-max) | vs combined NMS |")
    print("|---|---:|---:|")
    for name, (median, lo, hi) in results.items():
        print(f"| {name} | {median:.1f} ({lo:.1f}-{hi:.1f}) | {median / peer:.2f}x |")
    print(f"detections: tfzoo {found_ours}, combined NMS {found_peer}; TF {tf.__version__}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
