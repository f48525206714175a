"""The command line shared by the paper-recipe scripts in ``train_scripts/``.

A recipe script pins a model, its data and the paper's settings, and calls :func:`main`::

    sys.exit(tfzoo.recipes.main(argv, doc=__doc__, model="retinanet", data="tfds:coco/2017",
                                split="train", val_split="validation", settings=SETTINGS,
                                out="runs/retinanet_coco", image_size=640, epochs=12))

This module imports no TensorFlow, so ``--help`` works at once and offline.
"""
from __future__ import annotations

import argparse
import sys

#: Strategies of :func:`tfzoo.train.train` (repeated here so that ``--help`` needs no
#: TensorFlow; a test keeps the two equal).
STRATEGIES = ("default", "mirrored", "multiworker")


def build_parser(doc, out, image_size, epochs):
    """The recipe scripts' argument parser; ``doc`` is the script's description."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=out, help="training directory (default: %(default)s)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="mirrored",
                        help="distribution strategy (default: %(default)s, all local GPUs)")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 on GPU")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global batch (default: 16, the recipe's); the learning rate scales with it")
    parser.add_argument("--image-size", type=int, default=image_size,
                        help="square input size, a multiple of 32 (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help=f"override the recipe's {epochs} epochs")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--eval-every-epoch", action="store_true", help="also evaluate after every epoch")
    return parser


def main(argv, *, doc, model, data, split, val_split, settings, out, image_size, epochs, val_data=None,
         metric="AP"):
    """Parses ``argv``, trains with :func:`tfzoo.train.train`, prints ``metric``; exit status."""
    args = build_parser(doc, out, image_size, epochs).parse_args(argv)
    import tfzoo.train  # after parsing: --help needs neither TensorFlow nor the data

    result = tfzoo.train.train(
        model, list(data) if isinstance(data, tuple) else data, split=split, val_split=val_split,
        val_data=val_data, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
        out=args.out, resume=args.resume, settings=settings, strategy=args.strategy,
        mixed_precision=args.mixed_precision, eval_every_epoch=args.eval_every_epoch,
    )
    if result.stopped:
        print(f"stopped: {result.stopped}", file=sys.stderr)
        return 1
    print(f"{result.out_dir}: {result.epochs} epochs, {result.steps} steps, {metric} "
          f"{(result.metrics or {}).get(metric, float('nan')):.4f}")
    return 0
