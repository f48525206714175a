"""The seed's speed story, side by side in one run: test time per image of the R-CNN
generations on the same backbone (VGG-16, random weights), the same input size and the same
region proposals, without and with the time to compute those proposals.

Contenders: ``rcnn``, ``spp_net``, ``fast_rcnn`` and ``faster_rcnn`` at ``--image-size``; the proposal-based ones take the same
``--proposals`` selective search boxes of one photograph (the first image of ``--data``
resized to 500 x 375, searched in fast mode on one core; the search time is measured in the
same run and added in the second column); Faster R-CNN makes its own (its RPN and proposal
layer are inside its time; ``--rpn-proposals`` after NMS, the paper's 300 by default). Each
contender: Keras ``detect`` in a ``tf.function``, batch 1, the median of ``--repeats``
calls after a warm-up, rounds interleaved across contenders (``common.interleaved``).
R-CNN, whose one image is minutes of CNN passes (2,000 warped windows through VGG-16), is
traced without running, then timed ``--rcnn-repeats`` times after the others' rounds. The
process's peak resident memory is printed at the end (run ``--models rcnn`` alone for
R-CNN's own).

``yolov1`` joins on request (issue 22, the seed's "45 fps against Faster R-CNN's 7"): at
its own 448 (its fully connected layers fix it), VOC's 20 classes. The detectors whose
random heads would give every (box, class) pair one score (Faster R-CNN's softmax, YOLOv1's
linear outputs) are calibrated on the image, as in ``bench_model.py``, so that
``--candidates`` pairs pass the score threshold, as a trained detector's would.

    python benchmarks/bench_generations.py --repeats 5
    python benchmarks/bench_generations.py --models rcnn --repeats 1
    python benchmarks/bench_generations.py --models faster_rcnn,yolov1 --repeats 20
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import common
import peers  # before TensorFlow: it imports torch first (see peers/__init__.py)

CONTENDERS = ("rcnn", "spp_net", "fast_rcnn", "faster_rcnn")
#: Contenders whose random class head is calibrated (``--candidates``), with their adapter.
CALIBRATED = ("faster_rcnn", "yolov1")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=608)
    parser.add_argument("--proposals", type=int, default=2000)
    parser.add_argument("--rpn-proposals", type=int, default=300)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--data", default="shapes", help="where the photograph comes from (its first val image)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rcnn-repeats", type=int, default=1)
    parser.add_argument("--models", default=",".join(CONTENDERS))
    parser.add_argument("--candidates", type=int, default=100,
                        help="(box, class) pairs above the score threshold of faster_rcnn and yolov1 (default: 100)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (a smoke run)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import cv2
    import tensorflow as tf
    from PIL import Image

    import tfzoo
    import tfzoo.data
    from tfzoo import proposals as P
    from tfzoo.models import MODELS

    cv2.setNumThreads(1)
    example = next(tfzoo.data.load(args.data, "val").as_numpy_iterator())
    photo = np.asarray(Image.fromarray(example["image"]).resize((500, 375), Image.BILINEAR))
    search_seconds = []
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        boxes = P.selective_search(photo, P.Settings("fast", args.proposals))
        search_seconds.append(time.perf_counter() - start)
    search_ms = 1000.0 * statistics.median(search_seconds)
    rng = np.random.default_rng(0)
    if len(boxes) < args.proposals:  # a simple photograph: fill up with random boxes, so every slot is real work
        centres = rng.uniform(0.1, 0.9, (args.proposals - len(boxes), 2))
        sides = rng.uniform(0.05, 0.5, (args.proposals - len(boxes), 2))
        extra = np.clip(np.concatenate([centres - sides / 2, centres + sides / 2], -1), 0, 1).astype(np.float32)
        boxes = np.concatenate([boxes, extra])
    image = np.asarray(tf.image.resize(photo[None].astype(np.float32), (args.image_size, args.image_size)))

    names = [n for n in args.models.split(",") if n in MODELS]
    missing = [n for n in args.models.split(",") if n not in MODELS]
    contenders = {}
    for name in names:
        preset = MODELS[name]
        overrides = dict(preset.detector.tiny) if args.tiny else {}
        overrides.update(num_classes=args.num_classes, backbone_weights=None)
        if not args.tiny and not preset.config.fixed_size:
            overrides["image_size"] = args.image_size
        if "max_proposals" in preset.config.to_dict():
            overrides.setdefault("max_proposals", args.proposals)
        if name == "faster_rcnn" and not args.tiny:
            overrides["rpn_post_nms_test"] = args.rpn_proposals
        detector = preset(**overrides)
        size = detector.config.image_size
        inputs = tf.image.resize(image, (size, size)).numpy()
        if "proposals" in detector.input_names:
            rows = detector.config.max_proposals
            inputs = {"images": inputs, "proposals": boxes[None, :rows]}
        if name in CALIBRATED:
            peers.adapter(preset.family).prepare_tfzoo(detector, inputs, args.candidates)
        contenders[name] = (tf.function(detector.detect), inputs, "proposals" in detector.input_names)
    runs = common.interleaved({name: (lambda fn=fn, inputs=inputs: fn(inputs))
                               for name, (fn, inputs, _) in contenders.items() if name != "rcnn"},
                              warmup=1, repeats=args.repeats) if len(set(contenders) - {"rcnn"}) else {}
    times = {name: [1000.0 * t for t in values] for name, values in runs.items()}
    if "rcnn" in contenders:
        fn, inputs, _ = contenders["rcnn"]
        concrete = fn.get_concrete_function(inputs)  # traced, not run: its one call is minutes
        times = {"rcnn": [], **times}
        for _ in range(max(1, args.rcnn_repeats)):
            start = time.perf_counter()
            concrete(inputs)
            times["rcnn"].append(1000.0 * (time.perf_counter() - start))
    print(f"VGG-16 (random weights), {args.image_size} px (yolov1: its 448), batch 1, Keras detect, median of "
          f"{args.repeats}; "
          f"selective search (fast, one core) on a 500 x 375 photograph: {search_ms:.0f} ms for "
          f"{args.proposals} proposal slots")
    if missing:
        print(f"not registered yet: {', '.join(missing)}")
    results = {"image_size": args.image_size, "proposals": args.proposals, "search_ms": search_ms, "models": {}}
    slowest = max(statistics.median(t) for t in times.values()) if times else 1.0
    print("| model | ms per image, median (min-max) | with proposals | speed-up over the slowest |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        with_search = median + (search_ms if contenders[name][2] else 0.0)
        results["models"][name] = {"median_ms": median, "min_ms": min(values), "max_ms": max(values),
                                   "with_proposals_ms": with_search}
        print(f"| {name} | {median:.0f} ({min(values):.0f}-{max(values):.0f}) | {with_search:.0f} | "
              f"{slowest / median:.1f}x |")
    if "yolov1" in times and "faster_rcnn" in times:
        ratio = statistics.median(times["faster_rcnn"]) / statistics.median(times["yolov1"])
        per_round = [f / y for f, y in zip(times["faster_rcnn"], times["yolov1"])]
        results["yolov1_speedup_over_faster_rcnn"] = ratio
        print(f"yolov1 is {ratio:.1f}x as fast as faster_rcnn (per round: median "
              f"{statistics.median(per_round):.1f}x, {min(per_round):.1f}-{max(per_round):.1f}; the seed: 45 fps "
              "against 7, 6.4x; target >= 4x)")
    import resource  # noqa: PLC0415

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
    results["peak_rss_gib"] = peak
    print(f"peak resident memory of this process ({', '.join(contenders)}): {peak:.2f} GiB")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
