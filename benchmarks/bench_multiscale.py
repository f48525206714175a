"""What multi-scale training costs (issue 22: at most 10 % of the images/s of training at
the mean size).

Two contenders train the same preset (default ``yolov3_tiny``) on ``shapes`` through
``tfzoo.data.pipeline`` (the examples cached in memory after the first epoch; the preset's
augmentation, optimizer and batch): one with the preset's multi-scale sizes (a new size
every ``size_period`` batches), one at their mean size alone (``multi_scale=()``). After a
warm-up epoch each (tracing, filling the cache), ``--rounds`` rounds time one epoch of each,
the order alternating, and report images/s per contender and the per-round ratio.

    python benchmarks/bench_multiscale.py --rounds 5
    python benchmarks/bench_multiscale.py --model yolov2_tiny --images 800
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import common


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="yolov3_tiny")
    parser.add_argument("--images", type=int, default=640, help="shapes train images per epoch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="the preset's tiny widths (a smoke run)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import keras

    import tfzoo
    import tfzoo.data
    from tfzoo.models import MODELS
    from tfzoo.optim import make_optimizer, make_schedule

    preset = MODELS[args.model]
    overrides = {"num_classes": 5}
    if args.tiny:
        overrides.update({k: v for k, v in preset.detector.tiny.items() if k not in ("num_classes", "multi_scale")})
        overrides["image_size"] = 96
        overrides["multi_scale"] = (2 / 3, 4 / 3)
    config = preset.config.replace(**overrides)
    sizes = config.train_sizes
    if len(sizes) < 2:
        raise SystemExit(f"{args.model} trains at one size; nothing to compare")
    mean = statistics.mean(sizes)
    single = int(round(mean / config.size_divisor)) * config.size_divisor
    examples = tfzoo.data.load(f"shapes:{args.images}", "train")
    contenders = {}
    for label, settings in ((f"multi-scale {sizes[0]}..{sizes[-1]}", {}),
                            (f"single {single}", {"multi_scale": (), "image_size": single})):
        keras.utils.set_random_seed(0)
        detector = preset(**{**overrides, **settings})
        steps = args.images // detector.config.batch_size
        detector.compile(optimizer=make_optimizer(detector.config, make_schedule(detector.config, 100 * steps)))
        data = tfzoo.data.pipeline(examples, detector, detector.config.batch_size, training=True, seed=0, cache=True)
        detector.fit(data, epochs=1, verbose=0)  # warm-up: tracing, the cache filled
        contenders[label] = (detector, data, steps * detector.config.batch_size)
    rates = {label: [] for label in contenders}
    labels = list(contenders)
    for r in range(args.rounds):
        for label in (labels if r % 2 == 0 else labels[::-1]):
            detector, data, images = contenders[label]
            start = time.perf_counter()
            detector.fit(data, epochs=1, verbose=0)
            rates[label].append(images / (time.perf_counter() - start))
    multi, mono = labels
    ratios = [a / b for a, b in zip(rates[multi], rates[mono])]
    result = {"model": args.model, "sizes": list(sizes), "mean_size": mean, "single_size": single,
              "images_per_epoch": args.images, "rounds": args.rounds,
              "images_per_s": {k: common.spread(v) for k, v in rates.items()},
              "ratio_multi_to_single": common.spread(ratios)}
    print(f"{args.model} on shapes ({args.images} images per epoch, cached), {args.rounds} rounds:")
    for label, values in rates.items():
        print(f"  {label}: {common.fmt(common.spread(values), 1, 1)} images/s")
    cost = 1 - result["ratio_multi_to_single"]["median"]
    print(f"multi-scale / single size: {common.fmt(result['ratio_multi_to_single'], 1, 3)} per round; cost "
          f"{100 * cost:.1f}% of the images/s (target <= 10%)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
