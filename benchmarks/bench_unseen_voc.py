"""The default recipe on data it was not tuned on: a VOC-layout folder, as a new user runs it.

Issue 3, section 7: ``tfzoo train retinanet_mobile --data voc:PATH --minutes 20`` followed
by ``tfzoo evaluate`` on a VOC-layout dataset of a few hundred images of 240-420 px with
objects of 18-210 px. The real held-out set is not available here, so this script writes a
stand-in and runs exactly those two commands on it:

- images drawn by the ``shapes`` generator from seeds none of its shipped splits use
  (indices from 100,000 of its ``test`` seed), each resized to a height and a width drawn
  independently in [240, 420] px (so aspect ratios change too) and stored as JPEG
  (quality 95) in a VOC2012-style folder (``JPEGImages``, ``Annotations``,
  ``ImageSets/Main/{train,val}.txt``) with ``tfzoo.data.voc.write``;
- objects of 5-60% of the shorter side: about 12-250 px;
- ``--train-images`` (default 400) in ``train``, ``--val-images`` (default 100) in ``val``.

It differs from the held-out set in one way that matters: 5 classes (the shapes), not 10.

    python benchmarks/bench_unseen_voc.py --minutes 20 --out /tmp/unseen_voc_run

prints the commands, their wall time and the evaluation's AP50 / AP, and writes them to
``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

#: Index of the first generated image (the shipped splits use indices below 2,000).
FIRST_INDEX = 100_000
#: Image sides are drawn in this range (pixels).
MIN_SIDE, MAX_SIDE = 240, 420


def write_dataset(root, train_images, val_images, seed=0):
    """Writes the stand-in VOC folder at ``root`` (replaced if it exists); returns its stats."""
    import shutil

    from PIL import Image

    from tfzoo.data import shapes, voc

    if os.path.exists(root):
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    sizes = []

    def examples(start, count, split):
        for i in range(count):
            example = shapes.generate("test", FIRST_INDEX + start + i)
            height, width = (int(s) for s in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
            image = Image.fromarray(example["image"]).resize((width, height), Image.BILINEAR)
            example = dict(example, image=np.asarray(image), image_id=f"{split}_{i:06d}")
            boxes = np.asarray(example["boxes"]).reshape(-1, 4)
            sizes.extend(np.sqrt((boxes[:, 2] - boxes[:, 0]) * height * (boxes[:, 3] - boxes[:, 1]) * width))
            yield example

    voc.write(examples(0, train_images, "train"), root, "train", shapes.CLASS_NAMES)
    voc.write(examples(train_images, val_images, "val"), root, "val", shapes.CLASS_NAMES)
    # A user's VOC folder has no tfzoo labels.txt: the reader finds the classes in the XML.
    os.remove(os.path.join(root, voc.LABELS_FILE))
    sizes = np.asarray(sizes)
    return {"train_images": train_images, "val_images": val_images, "classes": len(shapes.CLASS_NAMES),
            "objects": int(sizes.size), "object_side_px": {"min": round(float(sizes.min()), 1),
                                                            "median": round(float(np.median(sizes)), 1),
                                                            "max": round(float(sizes.max()), 1)}}


def run(command):
    print("$", " ".join(command), flush=True)
    start = time.monotonic()
    subprocess.run(command, check=True)
    return time.monotonic() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/tfzoo_unseen_voc", help="where to write the VOC folder")
    parser.add_argument("--out", default="/tmp/tfzoo_unseen_voc_run", help="training directory")
    parser.add_argument("--model", default="retinanet_mobile")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    stats = write_dataset(args.root, args.train_images, args.val_images)
    print("dataset:", json.dumps(stats), flush=True)
    tfzoo = [sys.executable, "-m", "tfzoo.cli"]
    train_s = run(tfzoo + ["train", args.model, "--data", f"voc:{args.root}", "--minutes", f"{args.minutes:g}",
                           "--out", args.out])
    metrics_path = os.path.join(args.out, "evaluate.json")
    eval_s = run(tfzoo + ["evaluate", args.out, "--data", f"voc:{args.root}", "--split", "val",
                          "--json", metrics_path])
    with open(metrics_path, encoding="utf-8") as f:
        metrics = json.load(f)
    result = {"dataset": stats, "model": args.model, "minutes": args.minutes, "train_seconds": round(train_s, 1),
              "evaluate_seconds": round(eval_s, 1), "AP50": metrics.get("AP50"), "AP": metrics.get("AP"),
              "voc07_mAP": metrics.get("voc07_mAP")}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
