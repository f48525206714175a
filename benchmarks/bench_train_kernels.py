"""The training kernels tfzoo writes itself, each against the formulation it replaces.

Interleaved, in one process, on random data; the first two of the sizes of ``retinanet``
(ResNet-50-FPN, 512 px, 80 classes) at batch 2:

- focal loss, forward + backward: ``tfzoo.ops.losses.sigmoid_focal_loss_sum`` (loss and
  gradient in one XLA pass) against autodiff through the per-element
  ``sigmoid_focal_loss``, summed in one XLA-compiled function (RetinaNet's loss before);
  2 x 49,104 anchors x ``--classes`` scores, 97% background, 1% ignored;
- SGD update of the model's trainable weights: ``tfzoo.optim.L2SGD(l2=0)`` (one fused
  kernel per weight) against ``keras.optimizers.SGD``, both momentum 0.9;
- AdamW update of the trainable weights of the demo's model (``retinanet_mobile``, 5
  classes, the preset that trains with AdamW): ``tfzoo.optim.FusedAdamW`` (two fused
  kernels per weight) against ``keras.optimizers.AdamW``, both learning rate 3e-3 and
  weight decay 1e-4 (the demo's).

Also prints the largest gradient difference of the two losses, whether the two SGD
optimizers left the weights identical and how far apart the two AdamW ones left them.

    python benchmarks/bench_train_kernels.py --repeats 20
"""
from __future__ import annotations

import argparse
import sys

import common


def focal_contenders(batch, anchors, classes, seed=0):
    import numpy as np
    import tensorflow as tf

    from tfzoo.ops import losses
    from tfzoo.ops.matcher import BACKGROUND, IGNORE

    rng = np.random.default_rng(seed)
    logits = tf.constant(rng.normal(size=(batch, anchors, classes)).astype(np.float32) * 2 - 4)
    draw = rng.random(size=(batch, anchors))
    target = np.where(draw < 0.97, BACKGROUND, rng.integers(0, classes, size=(batch, anchors)))
    target = tf.constant(np.where((draw >= 0.97) & (draw < 0.98), IGNORE, target).astype(np.int32))

    @tf.function(jit_compile=True)
    def per_element_sum(logits):
        onehot = tf.one_hot(target, classes)  # BACKGROUND / IGNORE -> all 0
        weights = tf.cast(target != IGNORE, tf.float32)
        return tf.reduce_sum(losses.sigmoid_focal_loss(onehot, logits, weights=weights))

    def with_gradient(loss_fn):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                tape.watch(logits)
                loss = loss_fn(logits)
            return loss, tape.gradient(loss, logits)
        return run

    return {
        "focal: sigmoid_focal_loss_sum (one pass)": with_gradient(lambda x: losses.sigmoid_focal_loss_sum(target, x)),
        "focal: autodiff of sigmoid_focal_loss (XLA)": with_gradient(per_element_sum),
    }


def update_contenders(preset, image_size, classes, optimizers):
    """``(contenders, variables, weight count)``: one ``apply`` of each optimizer in
    ``optimizers`` (``{name: optimizer}``) over its own copy of the trainable weights of a
    ``preset`` detector, with the same fixed gradients."""
    import keras
    import numpy as np
    import tensorflow as tf

    import tfzoo

    detector = tfzoo.build_model(preset, num_classes=classes, image_size=image_size, backbone_weights=None)
    start = [v.numpy() for v in detector.trainable_variables]
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(size=w.shape).astype(np.float32) * 1e-3) for w in start]
    contenders, copies = {}, {}
    for name, optimizer in optimizers.items():
        variables = [keras.Variable(w) for w in start]
        optimizer.build(variables)
        contenders[name] = _apply_fn(optimizer, grads, variables)
        copies[name] = variables
    return contenders, copies, sum(w.size for w in start)


def sgd_contenders(image_size, classes):
    import keras

    from tfzoo.optim import L2SGD

    return update_contenders("retinanet", image_size, classes, {
        "SGD: tfzoo L2SGD(l2=0), fused": L2SGD(1e-3, momentum=0.9, l2=0.0),
        "SGD: keras.optimizers.SGD": keras.optimizers.SGD(1e-3, momentum=0.9),
    })


def adamw_contenders(image_size=256, classes=5):
    import keras

    from tfzoo.train import FusedAdamW

    return update_contenders("retinanet_mobile", image_size, classes, {
        "AdamW: tfzoo FusedAdamW": FusedAdamW(3e-3, weight_decay=1e-4),
        "AdamW: keras.optimizers.AdamW": keras.optimizers.AdamW(3e-3, weight_decay=1e-4),
    })


def _apply_fn(optimizer, grads, variables):
    import tensorflow as tf

    return tf.function(lambda: optimizer.apply(grads, variables))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each first (default 2)")
    parser.add_argument("--image-size", type=int, default=512, help="default 512")
    parser.add_argument("--classes", type=int, default=80, help="default 80")
    parser.add_argument("--batch-size", type=int, default=2, help="focal loss batch (default 2)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.image_size % 128:
        parser.error("--repeats must be >= 1 and --image-size a multiple of 128")
    import numpy as np

    from tfzoo.ops import anchors as anchor_ops

    print(common.environment())
    sizes = anchor_ops.feature_map_sizes(args.image_size, 3, 7)
    anchors = sum(h * w * 9 for h, w in sizes)
    focal = focal_contenders(args.batch_size, anchors, args.classes)
    sgd, copies, weights = sgd_contenders(args.image_size, args.classes)
    adamw, adamw_copies, mobile_weights = adamw_contenders()
    runs = common.interleaved({**focal, **sgd, **adamw}, args.warmup, args.repeats)
    sgd_vars, adamw_vars = (len(next(iter(c.values()))) for c in (copies, adamw_copies))
    print(f"\nfocal loss: {args.batch_size} x {anchors} x {args.classes} scores; SGD: {weights:,} weights "
          f"(retinanet, {sgd_vars} variables); AdamW: {mobile_weights:,} weights (retinanet_mobile, "
          f"{adamw_vars} variables)")
    print("| contender | ms median (min-max) |\n|---|---:|")
    for name, seconds in runs.items():
        print(f"| {name} | {common.fmt(common.spread(seconds), 1e3)} |")
    (fused_loss, fused_grad), (plain_loss, plain_grad) = (fn() for fn in focal.values())
    print(f"\nfocal: loss {float(fused_loss):.6g} against {float(plain_loss):.6g}; largest gradient difference "
          f"{float(np.max(np.abs(fused_grad.numpy() - plain_grad.numpy()))):.2g}")
    same = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(*copies.values()))
    print(f"SGD: weights identical after {args.warmup + args.repeats} updates each: {same}")
    apart = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(*adamw_copies.values()))
    print(f"AdamW: largest weight difference after {args.warmup + args.repeats} updates each: {apart:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
