"""Input-pipeline throughput: images/s through read/decode -> augment -> encode -> batch.

Measures :func:`tfzoo.data.pipeline` alone (no model) with the trivial
:class:`~tfzoo.data.pipeline.PaddedBoxesEncoder`, on

- ``shapes``: the builtin synthetic dataset, generated on the fly with NumPy;
- ``voc``: the same images written once as a VOCdevkit-layout copy (JPEG files + XML,
  with :func:`tfzoo.data.voc.write`) in a temporary folder, read back with the VOC reader,

for each augmentation preset asked for, without and with ``cache=True`` (the validated,
decoded examples kept in memory; augmentation still runs every epoch). A ``reader`` row
times the reader alone (iterating the canonical examples). Each configuration runs one
warm-up epoch (which also fills the cache), then ``--repeats`` timed epochs; the table
reports the median and the spread (min-max). ``first batch`` is the latency of a fresh,
uncached pipeline.

The peer, measured in the same run: the training step the pipeline has to feed. Until the
first detector lands, a stand-in: ``keras.applications.MobileNetV2`` (``weights=None``) at
``--image-size`` with a 1x1-conv dense head and an MSE loss, ``train_on_batch`` at
``--step-batch-size``. A real detector step (FPN, heads, matching loss) is slower than this
stand-in, so the pipeline/step ratio printed here is a lower bound.

Usage::

    python benchmarks/bench_pipeline.py --images 256 --batch-size 32 --image-size 320 \\
        --repeats 3 --augment flip ssd --json /tmp/bench_pipeline.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import tfzoo.data as data
from tfzoo.data import schema, shapes
from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment  # noqa: E402
from common import epoch as _epoch  # noqa: E402


def _first_batch(make):
    start = time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - start


def _measure(ds, repeats):
    _epoch(ds)  # warm-up: traces the functions, fills the cache
    rates = []
    for _ in range(repeats):
        seconds, n = _epoch(ds)
        rates.append(n / seconds)
    return statistics.median(rates), rates


def _train_step_rate(args):
    """Images/s of the stand-in training step (median of ``--repeats`` x 5 steps)."""
    import keras
    import numpy as np

    size = args.image_size
    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
    head = keras.layers.Conv2D(9 * (4 + 5), 1)(backbone.output)  # 9 anchors x (4 box + 5 classes)
    model = keras.Model(backbone.input, head)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.step_batch_size, size, size, 3)).astype("float32")
    targets = np.zeros((args.step_batch_size,) + tuple(model.output.shape[1:]), "float32")
    model.train_on_batch(images, targets)  # warm-up: traces and builds the optimizer
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(5):
            model.train_on_batch(images, targets)
        rates.append(5 * args.step_batch_size / (time.perf_counter() - start))
    return statistics.median(rates), rates


def run(args):
    encoder = PaddedBoxesEncoder(args.image_size, max_boxes=32)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        voc_root = os.path.join(tmp, "VOC2007")
        start = time.perf_counter()
        from tfzoo.data import voc

        voc.write(shapes.examples("train", args.images), voc_root, "train", shapes.class_names())
        write_seconds = time.perf_counter() - start
        sources = {"shapes": f"shapes:{args.images}", "voc": f"voc:{voc_root}"}
        for name, spec in sources.items():
            reader = data.load(spec, "train")
            rate, rates = _measure(reader.padded_batch(args.batch_size, padding_values=schema.padding_values()), args.repeats)
            results.append(dict(dataset=name, augment="-", cache=False, stage="reader", images_per_s=rate, runs=rates))
            for preset in args.augment:
                for cache in (False, True):
                    make = lambda: pipeline(  # noqa: E731
                        data.load(spec, "train"), encoder, args.batch_size, True,
                        seed=0, augment=preset, cache=cache, shuffle_buffer=args.shuffle_buffer,
                    )
                    first = None if cache else _first_batch(make)
                    rate, rates = _measure(make(), args.repeats)
                    results.append(dict(
                        dataset=name, augment=preset, cache=cache, stage="pipeline",
                        images_per_s=rate, runs=rates, first_batch_s=first,
                    ))
                    print(f"  {name:6s} {preset:12s} cache={cache!s:5s} {rate:8.1f} img/s", flush=True)
    return results, write_seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per configuration")
    parser.add_argument("--augment", nargs="+", default=["flip", "ssd"], help="augmentation presets")
    parser.add_argument("--shuffle-buffer", type=int, default=256)
    parser.add_argument("--step-batch-size", type=int, default=8, help="batch of the training-step peer")
    parser.add_argument("--no-step", action="store_true", help="skip the training-step peer")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    results, write_seconds = run(args)
    step = None if args.no_step else _train_step_rate(args)
    header = "| dataset | stage | augment | cache | images/s median (min-max) | first batch (s) |"
    if step:
        header += " x training step |"
    lines = [header, "|---|---|---|---|---:|---:|" + ("---:|" if step else "")]
    for r in results:
        first = "" if r.get("first_batch_s") is None else f"{r['first_batch_s']:.2f}"
        line = (
            f"| {r['dataset']} | {r['stage']} | {r['augment']} | {'yes' if r['cache'] else 'no'} "
            f"| {r['images_per_s']:.1f} ({min(r['runs']):.1f}-{max(r['runs']):.1f}) | {first} |"
        )
        if step:
            line += f" {r['images_per_s'] / step[0]:.1f}x |"
        lines.append(line)
    env = environment()
    print()
    print("\n".join(lines))
    print(f"\n{args.images} images, batch {args.batch_size}, input {args.image_size}, median of "
          f"{args.repeats} epochs after one warm-up; VOC copy written in {write_seconds:.1f} s; {env}")
    if step:
        print(f"training-step peer (MobileNetV2 {args.image_size}, batch {args.step_batch_size}): "
              f"{step[0]:.1f} img/s median ({min(step[1]):.1f}-{max(step[1]):.1f})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "env": env, "voc_write_s": write_seconds, "results": results,
                       "train_step_images_per_s": None if step is None else {"median": step[0], "runs": step[1]}},
                      f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
