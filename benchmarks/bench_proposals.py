"""Selective search on one core: seconds per image at VOC's size, proposals per image and
recall, in fast and quality mode (issue 21's target: <= 2 s per 500 x 375 image on one core
in fast mode).

Each image of ``--data``/``--split`` (the first ``--images``) is resized to exactly
``--size`` (500 x 375 by default: a VOC photograph) and searched by
:func:`tfzoo.proposals.selective_search` with OpenCV on one thread, without the cache; the
ground-truth boxes, normalized, stay where they are. Reports the median and spread of the
seconds per image, the proposals per image and the recall at IoU 0.5 and 0.7 of the top
100 / 300 / 1,000 / 2,000 (:func:`tfzoo.proposals.recall`).

    python benchmarks/bench_proposals.py --data voc:/tmp/tfzoo_standins/symbols --split val --images 40
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="shapes", help="dataset spec (default: shapes)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT every image is resized to")
    parser.add_argument("--methods", default="fast,quality")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import cv2
    from PIL import Image

    import tfzoo.data
    from tfzoo import proposals as P

    cv2.setNumThreads(1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    examples = []
    for example in tfzoo.data.load(args.data, args.split).take(args.images).as_numpy_iterator():
        image = np.asarray(Image.fromarray(example["image"]).resize((width, height), Image.BILINEAR))
        keep = ~example["is_crowd"].astype(bool)
        examples.append((image, example["boxes"][keep]))
    print(f"{len(examples)} images of {args.data} [{args.split}] at {width} x {height}, "
          f"{sum(len(b) for _, b in examples)} objects; OpenCV {cv2.__version__}, one thread", file=sys.stderr)
    results = {"data": args.data, "split": args.split, "size": [width, height], "images": len(examples),
               "opencv": cv2.__version__, "methods": {}}
    for method in args.methods.split(","):
        settings = P.Settings(method, P.DEFAULT_MAX_BOXES, max(width, height))
        seconds, found = [], []
        for image, _ in examples:
            start = time.perf_counter()
            found.append(P.selective_search(image, settings))
            seconds.append(time.perf_counter() - start)
        recall = P.recall(found, [b for _, b in examples])
        counts = [len(f) for f in found]
        row = {"seconds_median": statistics.median(seconds), "seconds_min": min(seconds),
               "seconds_max": max(seconds), "seconds_mean": statistics.fmean(seconds),
               "proposals_mean": statistics.fmean(counts), "proposals_min": min(counts),
               "recall": {f"{top}@{iou}": value for (top, iou), value in recall.items()}}
        results["methods"][method] = row
        print(f"{method}: {row['seconds_median']:.2f} s per image (median; {row['seconds_min']:.2f}-"
              f"{row['seconds_max']:.2f}), {row['proposals_mean']:.0f} proposals per image (fewest "
              f"{row['proposals_min']})")
        for iou in P.RECALL_IOUS:
            print(f"  recall at IoU {iou}: " + ", ".join(f"top {top} {recall[(top, iou)]:.3f}"
                                                         for top in P.RECALL_TOPS))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
