"""RoI crops of FPN levels at ``faster_rcnn_fpn``'s test setting: where the two-stage
pipeline's crop time goes in TensorFlow and in TFLite.

Four random maps (P2-P5 of a ``--image-size`` input, ``--channels`` channels), ``--rois``
random RoIs clipped to the image, each on its FPN level; RoI max pooling 7 x 7 from 14 x 14
aligned samples (:func:`tfzoo.ops.roi.multilevel_roi_pool`). Contenders, each the median of
``--repeats`` calls after one warm-up:

- TensorFlow, ``crop_and_resize`` over the levels laid side by side (what Keras, the
  SavedModel and ``fit`` run);
- TensorFlow, the builtin crop (gathers; what the TFLite export traces);
- TFLite (``ai_edge_litert``, ``--threads``), the builtin crop as exported.

    python benchmarks/bench_roi_crops.py --rois 1000 --channels 256 --image-size 640
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def _median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rois", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from tfzoo.ops import roi

    rng = np.random.default_rng(0)
    shapes = [(1, args.image_size // 2 ** level, args.image_size // 2 ** level, args.channels) for level in (2, 3, 4, 5)]
    maps = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    centres = rng.uniform(0, 1, (1, args.rois, 2))
    sides = rng.uniform(0.02, 0.5, (1, args.rois, 2))
    rois = np.clip(np.concatenate([centres - sides / 2, centres + sides / 2], -1), 0, 1).astype(np.float32)

    def pool(builtin):
        def run(p2, p3, p4, p5, boxes):
            levels = roi.fpn_levels(boxes, args.image_size, 2, 5) - 2
            return roi.multilevel_roi_pool([p2, p3, p4, p5], boxes, levels, 7, 2, builtin=builtin)
        return run

    specs = [tf.TensorSpec(shape, tf.float32) for shape in shapes] + [tf.TensorSpec(rois.shape, tf.float32)]
    inputs = [tf.constant(m) for m in maps] + [tf.constant(rois)]
    results = {}
    for name, builtin in (("TensorFlow, crop_and_resize on one canvas", False), ("TensorFlow, builtin gathers", True)):
        fn = tf.function(pool(builtin), input_signature=specs)
        results[name] = _median_ms(lambda fn=fn: fn(*inputs), args.repeats)
    concrete = tf.function(pool(True), input_signature=specs).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], pool(True))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "crops.tflite")
        with open(path, "wb") as f:
            f.write(converter.convert())
        interpreter = Interpreter(model_path=path, num_threads=args.threads)
        interpreter.allocate_tensors()
        details = sorted(interpreter.get_input_details(), key=lambda d: d["index"])
        by_shape = {tuple(a.shape): a for a in [*maps, rois]}

        def invoke():
            for detail in details:
                interpreter.set_tensor(detail["index"], by_shape[tuple(detail["shape"])])
            interpreter.invoke()

        results["TFLite, builtin gathers"] = _median_ms(invoke, args.repeats)
    print(f"{args.rois} RoIs, {args.channels} channels, P2-P5 of {args.image_size} px, median of {args.repeats}:")
    for name, ms in results.items():
        print(f"| {name} | {ms:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
