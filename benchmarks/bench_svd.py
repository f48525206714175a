"""Fast R-CNN's truncated SVD (Girshick 2015, sec. 3.1 and 5.5): detection time with and
without it, and, given a trained model, the AP it costs.

Latency: ``--model`` (default ``fast_rcnn``: VGG-16, 608 px, 2,000 proposals, fc6/fc7 of
4,096) with random weights, one image with ``--proposals`` random proposals, Keras
``detect`` (a ``tf.function``), the median of ``--repeats`` calls after a warm-up, for the
whole layers and for each ``--ranks`` (``truncated_svd``; the paper's 1,024 and 256).
Accuracy: with ``--trained RUN_OR_KERAS`` (a trained Fast R-CNN, e.g. the
``fast_rcnn_mobile`` demo model) and ``--data``, its AP on ``--split`` whole and factorized
(``--trained-ranks``), both through the same evaluator.

    python benchmarks/bench_svd.py --repeats 3 --trained saved_models/fast_rcnn_mobile_shapes/model.keras \\
        --trained-ranks 64,16
"""
from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

import common


def _ranks(text):
    return tuple(int(v) for v in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="fast_rcnn")
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--proposals", type=int, default=2000)
    parser.add_argument("--ranks", type=_ranks, default=(1024, 256))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trained", help="a trained Fast R-CNN (training directory or .keras)")
    parser.add_argument("--trained-ranks", type=_ranks, default=(64, 16))
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--split", default="val")
    args = parser.parse_args(argv)

    import tensorflow as tf

    import tfzoo
    from tfzoo.models.fast_rcnn import truncated_svd

    detector = tfzoo.build_model(args.model, num_classes=args.num_classes, backbone_weights=None,
                                 max_proposals=args.proposals)
    size = detector.config.image_size
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.1, 0.9, (1, args.proposals, 2))
    sides = rng.uniform(0.05, 0.5, (1, args.proposals, 2))
    boxes = np.clip(np.concatenate([centres - sides / 2, centres + sides / 2], -1), 0, 1).astype(np.float32)
    inputs = {"images": rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32), "proposals": boxes}

    def median_ms(model):
        fn = tf.function(model.detect)
        times = [1000.0 * t for t in common.time_calls(lambda: fn(inputs), warmup=1, repeats=args.repeats)]
        return statistics.median(times), min(times), max(times)

    rows = [("whole", detector)]
    rows.append((",".join(map(str, args.ranks)), truncated_svd(detector, args.ranks)))
    print(f"{args.model}: {size} px, {args.proposals} proposals, fc {detector.config.head_fc}, random weights, "
          f"batch 1, Keras detect, median of {args.repeats}")
    base = None
    for name, model in rows:
        median, low, high = median_ms(model)
        base = base or median
        head = sum(layer.count_params() for layer in model.layers if layer.name.startswith("roi_fc"))
        print(f"  fc {name:>12}: {median:8.1f} ms ({low:.1f}-{high:.1f}), {median / base:.2f}x; "
              f"fc weights {head / 1e6:.1f} M")

    if args.trained:
        import tfzoo.data
        from tfzoo import proposals as proposal_source
        from tfzoo.eval import evaluate_detector
        from tfzoo.export import load_model

        trained = load_model(args.trained).detector
        names = tfzoo.data.class_names(args.data)
        examples = proposal_source.for_config(tfzoo.data.load(args.data, args.split), trained.config,
                                              progress=False)[0].cache()
        print(f"{args.trained} on {args.data} [{args.split}]:")
        for name, model in (("whole", trained), (",".join(map(str, args.trained_ranks)),
                                                 truncated_svd(trained, args.trained_ranks))):
            metrics = evaluate_detector(tf.function(model.detect), examples, model.image_size, names, progress=False,
                                        keep_aspect_ratio=model.encoder.keep_aspect_ratio,
                                        input_names=model.input_names, max_proposals=model.config.max_proposals)
            print(f"  fc {name:>12}: AP {metrics['AP']:.4f}, AP50 {metrics['AP50']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
