"""Per-epoch rates of the uncached ``retinanet_mobile`` training pipeline on ``shapes``
under chosen ``tf.data.Options``, with the CPU cores the process kept busy in each epoch.

On a 2-core machine some epochs of this pipeline run at about half speed with one core
busy (the work serialized); this script counts them under each setting. It also times the
``shapes`` generator on one thread, which bounds the uncached pipeline.

Examples::

    python benchmarks/bench_pipeline_modes.py --epochs 10                        # defaults
    python benchmarks/bench_pipeline_modes.py --epochs 10 --threadpool 4
    python benchmarks/bench_pipeline_modes.py --epochs 10 --threadpool 4 --no-autotune
    python benchmarks/bench_pipeline_modes.py --epochs 6 --plain-encoder         # no XLA targets
    python benchmarks/bench_pipeline_modes.py --generator 300                    # generator only
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import common

ALGORITHMS = ("DEFAULT", "HILL_CLIMB", "GRADIENT_DESCENT", "MAX_PARALLELISM", "STAGE_BASED")


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_generator(count):
    """Images/s of ``shapes.generate`` over the first ``count`` train images, one thread."""
    from tfzoo.data import shapes

    start = time.perf_counter()
    for index in range(count):
        shapes.generate("train", index)
    return count / (time.perf_counter() - start)


def data_options(args):
    import tensorflow as tf

    options = tf.data.Options()
    if args.threadpool:
        options.threading.private_threadpool_size = args.threadpool
    if args.no_autotune:
        options.autotune.enabled = False
    if args.autotune_algorithm:
        options.autotune.autotune_algorithm = getattr(tf.data.experimental.AutotuneAlgorithm, args.autotune_algorithm)
    if args.initial_parallelism:
        options.autotune.initial_parallelism = args.initial_parallelism
    return options


def run_epochs(args):
    """``[(images/s, cores busy)]`` of ``args.epochs`` epochs after one warm-up epoch."""
    import tfzoo
    import tfzoo.data as data
    from tfzoo.data.pipeline import pipeline

    detector = tfzoo.build_model("retinanet_mobile", num_classes=len(data.class_names("shapes")),
                                 backbone_weights=None)
    if args.plain_encoder:  # the encoder's targets as a plain graph, not XLA-compiled
        detector.encoder.xla_targets = False
    stream = pipeline(data.load(f"shapes:{args.images}", "train"), detector, args.batch_size, training=True,
                      seed=0, augment="scale_jitter", cache=False, shuffle_buffer=args.images)
    stream = stream.with_options(data_options(args))
    common.epoch(stream)
    rows = []
    for _ in range(args.epochs):
        cpu = _cpu_seconds()
        seconds, images = common.epoch(stream)
        rows.append((images / seconds, (_cpu_seconds() - cpu) / seconds))
    return rows


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs (default 10)")
    parser.add_argument("--images", type=int, default=256, help="images per epoch (default 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="default 16")
    parser.add_argument("--threadpool", type=int, default=0,
                        help="options.threading.private_threadpool_size (default 0: the shared pool)")
    parser.add_argument("--no-autotune", action="store_true", help="options.autotune.enabled = False")
    parser.add_argument("--autotune-algorithm", choices=ALGORITHMS, default=None)
    parser.add_argument("--initial-parallelism", type=int, default=0,
                        help="options.autotune.initial_parallelism (default: TF's)")
    parser.add_argument("--plain-encoder", action="store_true",
                        help="run RetinaNetEncoder's targets as a plain graph instead of XLA")
    parser.add_argument("--generator", type=int, default=0, metavar="N",
                        help="only time shapes.generate over N images on one thread")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.generator:
        print(f"shapes.generate, one thread: {time_generator(args.generator):.1f} images/s")
        return 0
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    rows = run_epochs(args)
    print("| epoch | images/s | cores busy |\n|---:|---:|---:|")
    for index, (rate, cores) in enumerate(rows, 1):
        print(f"| {index} | {rate:.1f} | {cores:.2f} |")
    rates = [rate for rate, _ in rows]
    print(f"\nmedian {common.fmt(common.spread(rates))} images/s; {common.cpu_model()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
