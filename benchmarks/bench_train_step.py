"""Where a `retinanet_mobile` training step spends its time (batch in memory, one CPU run).

Interleaved, on one random batch of ``--batch-size`` images at ``--image-size``:

- the whole model: forward (training mode) and forward + backward (gradients of every
  trainable variable);
- the model's backbone alone (``--backbone``, by default the preset's): the same two;
- the same backbone with ``keras.layers.BatchNormalization`` in place of tfzoo's
  ``FusedBatchNormalization`` (a copy with the same weights), forward + backward: the
  peer of the fused kernel;
- unless ``--skip-bfloat16``: the whole model's forward + backward built under the
  ``mixed_bfloat16`` policy (variables float32, the same weights), once with the backbone
  pinned to float32 (``backbone_dtype=float32``: bfloat16 FPN and heads, what ``tfzoo
  demo`` trains on CPUs with AMX) and once all mixed; the float32 model is their peer;
- for each ``--also-backbone NAME`` (e.g. ``mobilenet_v2``): the same model with that
  backbone (the preset's ``backbone_alpha``), its backbone's forward + backward and the
  model's, float32 and (unless ``--skip-bfloat16``) all mixed bfloat16, with the speed-up
  of its model over the preset's.

It also prints each backbone's size: parameters and GFLOP of one forward pass at
``--image-size`` (2 x the multiply-adds of its convolutions, from their kernel and output
shapes).

Weights are random (the arithmetic does not depend on them). Prints medians with
min-max, the backbone's share of the forward + backward time, the fused batch norm's
speed-up of the backbone and the bfloat16 speed-ups of the model (paired per round).

    python benchmarks/bench_train_step.py --image-size 256 --batch-size 8 --repeats 5
    python benchmarks/bench_train_step.py --image-size 320 --backbone mobilenet_v2 --also-backbone resnet10
"""
from __future__ import annotations

import argparse
import json
import sys

import common


def conv_gflop(model):
    """2 x multiply-adds of the convolutions of functional ``model`` (one image), in GFLOP."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            kh, kw, cin, cout = layer.kernel.shape
            _, oh, ow, _ = layer.output.shape
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                total += oh * ow * kh * kw * cin * cout  # cout = depth multiplier
            else:
                total += oh * ow * kh * kw * cin * cout // layer.groups
    return 2.0 * total / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip-bfloat16", action="store_true", help="leave out the mixed_bfloat16 contenders")
    parser.add_argument("--preset", default="retinanet_mobile")
    parser.add_argument("--backbone", help="the model's backbone (default: the preset's)")
    parser.add_argument("--also-backbone", nargs="*", default=(), metavar="NAME",
                        help="also time the preset with these backbones (tfzoo.backbones.BACKBONES)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import tfzoo
    from tfzoo import backbones
    from tfzoo.train import precision

    print(json.dumps(common.environment()))
    keras.utils.set_random_seed(0)
    build = dict(num_classes=5, backbone_weights=None, image_size=args.image_size)
    if args.backbone:
        build["backbone"] = args.backbone
    model = tfzoo.build_model(args.preset, **build)
    backbone = model.get_layer("backbone")
    images = tf.random.uniform([args.batch_size, args.image_size, args.image_size, 3], 0.0, 255.0)
    keras_bn_backbone = backbones.with_batchnorm(backbone, keras.layers.BatchNormalization)

    def forward_backward(layer, outputs_of):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.add_n([tf.reduce_sum(t) for t in outputs_of(layer(images, training=True))]) * 1e-6
            return tape.gradient(loss, layer.trainable_variables)
        return step

    model_outputs = lambda out: list(out.values())  # noqa: E731
    fns = {
        "model forward": tf.function(lambda: model(images, training=True)),
        "model forward+backward": forward_backward(model, model_outputs),
        "backbone forward": tf.function(lambda: backbone(images, training=True)),
        "backbone forward+backward": forward_backward(backbone, model_outputs),
        "backbone keras-BN fwd+bwd": forward_backward(keras_bn_backbone, model_outputs),
    }
    mixed = {"model fwd+bwd, bf16 FPN+heads": "float32", "model fwd+bwd, all mixed bf16": None}
    if not args.skip_bfloat16:
        for name, backbone_dtype in mixed.items():
            with precision("mixed_bfloat16"):
                twin = tfzoo.build_model(args.preset, backbone_dtype=backbone_dtype, **build)
            twin.set_weights(model.get_weights())
            fns[name] = forward_backward(twin, model_outputs)
    sized = {model.config.backbone: backbone}  # backbone name -> its layer (for the sizes)
    for name in args.also_backbone:
        other = tfzoo.build_model(args.preset, **{**build, "backbone": name})
        sized[name] = other.get_layer("backbone")
        fns[f"{name} backbone fwd+bwd"] = forward_backward(other.get_layer("backbone"), model_outputs)
        fns[f"{name} model fwd+bwd"] = forward_backward(other, model_outputs)
        if not args.skip_bfloat16:
            with precision("mixed_bfloat16"):
                twin = tfzoo.build_model(args.preset, **{**build, "backbone": name})
            fns[f"{name} model fwd+bwd, all mixed bf16"] = forward_backward(twin, model_outputs)
    for name, layer in sized.items():
        print(f"{name} backbone at {args.image_size}: {layer.count_params() / 1e6:.2f} M parameters, "
              f"{conv_gflop(layer):.2f} GFLOP")
    runs = common.interleaved(fns, args.warmup, args.repeats)
    for name, seconds in runs.items():
        print(f"{name:28s} {common.fmt(common.spread(seconds), 1000.0)} ms")
    share = common.paired_ratios(runs["backbone forward+backward"], runs["model forward+backward"])
    print(f"backbone share of forward+backward: {common.fmt(share, 1.0, 2)}")
    speedup = common.paired_ratios(runs["backbone keras-BN fwd+bwd"], runs["backbone forward+backward"])
    print(f"fused batch norm speed-up of the backbone's forward+backward: {common.fmt(speedup, 1.0, 2)}x")
    for name in mixed if not args.skip_bfloat16 else ():
        speedup = common.paired_ratios(runs["model forward+backward"], runs[name])
        print(f"speed-up of the model's forward+backward, {name.split(', ')[1]}: {common.fmt(speedup, 1.0, 2)}x")
    for name in args.also_backbone:
        for row in (f"{name} model fwd+bwd", f"{name} model fwd+bwd, all mixed bf16"):
            if row in runs:
                speedup = common.paired_ratios(runs["model forward+backward"], runs[row])
                print(f"speed-up of the model's forward+backward, {row}: {common.fmt(speedup, 1.0, 2)}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
