"""Backbone pretraining without a download: classify formula-driven fractals (FractalDB).

Kataoka et al. 2020 ("Pre-training without Natural Images") pretrain on FractalDB, images
of iterated-function-system fractals labelled by their system (:mod:`tfzoo.data.fractals`),
and find the features transfer to natural images far better than random initialization.
This module pretrains a ``keras.applications`` MobileNetV2 that way, so that a detector
trained on a user's data without a download need not start from noise (no weights are
shipped: a 3-minute probe did not learn yet, BENCHMARKS.md; ``retinanet_mobile`` now trains
tfzoo's ``resnet10`` from random weights, and takes these with ``--set
backbone=mobilenet_v2 --set backbone_weights=FILE``)::

    python -m tfzoo.pretrain --backbone mobilenet_v2 --alpha 0.5 --categories 256 --minutes 60 \\
        --out tfzoo/backbones/weights/mobilenet_v2_0.5_fractal.weights.h5

What it does: draws ``--categories`` systems that pass the paper's filling-rate filter
(seed ``--seed``), renders ``--instances`` masks of each at ``--image-size`` (the paper's
intra-category variation: one parameter weighted by 0.8-1.2, flips; plus rotation, scale and
position), and trains the ``keras.applications`` backbone (include_top=False, random
initialization) with global average pooling and a softmax classifier, on images coloured
anew every epoch (a random colour with noise over a random texture, so that only the shape
tells the category). AdamW, linear warm-up then cosine decay to 0 over the planned steps,
label smoothing 0.1. With ``--minutes`` the step count is planned from the speed of the
first 20 steps. The backbone's weights are written atomically to ``--out`` (the layout
``keras.applications`` loads with ``weights=PATH``) with ``--out``.json beside them: the
recipe, the steps, and top-1 accuracy on new instances of the same categories (a held-out
render seed), against chance ``1 / categories``.

This module imports TensorFlow only in :func:`main` and below, so ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

#: Momentum of the batch-norm moving statistics while pretraining.
BATCHNORM_MOMENTUM = 0.99
#: Backbones :func:`pretrain` knows (keras.applications constructors).
BACKBONES = {"mobilenet_v2": "MobileNetV2"}


def render_masks(categories, instances, size, seed, progress=True):
    """``(masks uint8 [C * instances, size, size], labels int32)`` rendered from ``seed``."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    from tfzoo.data import fractals  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    masks = np.zeros((len(categories) * instances, size, size), np.uint8)
    labels = np.repeat(np.arange(len(categories), dtype=np.int32), instances)
    for i in tqdm(range(len(masks)), desc="render", unit="image", file=sys.stderr, disable=not progress or None):
        masks[i] = fractals.render_instance(categories[labels[i]], rng, size)
    return masks, labels


def colour_batch(masks, seed):
    """TensorFlow version of :func:`tfzoo.data.fractals.colourize` for a batch ``[B, S, S]``
    uint8 of masks: float32 RGB ``[B, S, S, 3]`` in [0, 255]; stateless in ``seed``."""
    import tensorflow as tf  # noqa: PLC0415

    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    shape = tf.shape(masks)
    batch, size = shape[0], shape[1]
    base = tf.random.stateless_uniform([batch, 1, 1, 3], seeds[0], 30.0, 225.0)
    texture = tf.zeros([batch, size, size, 3])
    for octave, grid in enumerate((4, 8, 16)):  # about 1/f: coarse noise loud, fine noise quiet
        noise = tf.random.stateless_normal([batch, grid, grid, 3], tf.random.experimental.stateless_fold_in(
            seeds[1], octave))
        texture += tf.image.resize(noise, [size, size]) / (2.0 ** octave)
    amplitude = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[2], 5.0, 40.0)
    background = base + texture * amplitude
    colour = tf.random.stateless_uniform([batch, 1, 1, 3], seeds[3], 0.0, 255.0)
    # Keep the fractal 40+ luminance levels from the background: flip its luminance if not.
    weights = tf.constant([0.299, 0.587, 0.114])
    gap = tf.reduce_sum((colour - base) * weights, axis=-1, keepdims=True)
    colour = tf.where(tf.abs(gap) < 40.0, 255.0 - colour, colour)
    grain = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[4], 2.0, 20.0)
    foreground = colour + grain * tf.random.stateless_normal([batch, size, size, 3], seeds[5])
    alpha = tf.cast(masks, tf.float32)[..., None] / 255.0
    return tf.clip_by_value(background * (1.0 - alpha) + foreground * alpha, 0.0, 255.0)


def build_classifier(backbone, alpha, image_size, num_classes):
    """``(classifier, app)``: the backbone application (random weights) + GAP + softmax."""
    import keras  # noqa: PLC0415

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    app = getattr(keras.applications, BACKBONES[backbone])(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3), alpha=alpha)
    for layer in app.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # keras.applications' MobileNetV2 uses 0.999: after a few hundred steps its moving
            # statistics still weigh their initial values by more than half, and the network
            # classifies at chance in inference mode (seen: 0.0156 = 1/64 after 490 steps).
            layer.momentum = BATCHNORM_MOMENTUM
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)  # the "tf" preprocessing of MobileNetV2
    x = app(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_fractal_classifier"), app


def pretrain(out, backbone="mobilenet_v2", alpha=0.5, categories=256, instances=64, image_size=96,
             batch_size=128, steps=None, minutes=None, learning_rate=2e-3, weight_decay=1e-4, seed=0,
             progress=True):
    """Pretrains and writes the backbone weights to ``out`` and a report to ``out + '.json'``;
    returns the report."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from tfzoo import optim  # noqa: PLC0415
    from tfzoo.data import fractals  # noqa: PLC0415
    from tfzoo.atomic import atomic_file, write_json_atomic  # noqa: PLC0415

    if (steps is None) == (minutes is None):
        raise ValueError("give exactly one of steps and minutes")
    started = time.monotonic()
    keras.utils.set_random_seed(seed)
    systems = fractals.make_categories(categories, seed)
    masks, labels = render_masks(systems, instances, image_size, seed + 1, progress)
    held_masks, held_labels = render_masks(systems, 8, image_size, seed + 2, progress)
    render_s = time.monotonic() - started

    def batches(m, y, training):
        ds = tf.data.Dataset.from_tensor_slices((m, y))
        if training:
            ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.batch(batch_size, drop_remainder=training)
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip(ds, counter).map(
            lambda xy, i: (colour_batch(xy[0], tf.stack([tf.cast(i, tf.int64), seed + (0 if training else 99)])),
                           xy[1]), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    model, app = build_classifier(backbone, alpha, image_size, categories)
    planned = steps or 1000
    schedule = optim.WarmupDecaySchedule(learning_rate, planned, warmup_steps=min(200, planned // 10),
                                             kind="cosine")
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    # The optimizer's and the metric's variables exist before the first step (the metric an
    # object, not the string "accuracy", which Keras builds inside it): a train step that
    # creates variables is traced twice, about 10 s for this model on 2 cores.
    model.optimizer.build(model.trainable_variables)
    train_set = batches(masks, labels, True).map(lambda x, y: (x, tf.one_hot(y, categories)))
    fit_started = time.monotonic()
    if minutes is not None:
        probe = 20
        model.fit(train_set, epochs=1, steps_per_epoch=probe, verbose=0)  # traces, then times
        t0 = time.monotonic()
        model.fit(train_set, epochs=1, steps_per_epoch=probe, verbose=0)
        per_step = (time.monotonic() - t0) / probe
        left = 60.0 * minutes - (time.monotonic() - fit_started)
        planned = max(2 * probe + 1, 2 * probe + int(left / per_step))
        schedule.set_total_steps(planned)
    class StopAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) >= planned:
                self.model.stop_training = True

    done = int(model.optimizer.iterations.numpy())
    epoch_steps = 100
    remaining = planned - done
    if remaining > 0:
        epochs = -(-remaining // epoch_steps)
        history = model.fit(train_set, epochs=epochs, steps_per_epoch=epoch_steps,
                            verbose=1 if progress else 0, callbacks=[StopAt()])
    fit_s = time.monotonic() - fit_started
    train_top1 = float(history.history["accuracy"][-1]) if remaining > 0 else None
    held = model.evaluate(batches(held_masks, held_labels, False).map(lambda x, y: (x, tf.one_hot(y, categories))),
                          verbose=0, return_dict=True)
    with atomic_file(out, suffix=".weights.h5") as tmp:
        app.save_weights(tmp)
    report = {
        "backbone": backbone, "alpha": alpha, "categories": categories, "instances_per_category": instances,
        "image_size": image_size, "batch_size": batch_size, "steps": int(model.optimizer.iterations.numpy()),
        "learning_rate": learning_rate, "weight_decay": weight_decay, "label_smoothing": 0.1, "seed": seed,
        "train_top1_last_epoch": None if train_top1 is None else round(train_top1, 4),
        "held_out_top1": round(float(held["accuracy"]), 4), "chance_top1": round(1.0 / categories, 4),
        "render_seconds": round(render_s, 1), "fit_seconds": round(fit_s, 1),
        "weights_bytes": os.path.getsize(out),
    }
    write_json_atomic(out + ".json", report)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfzoo.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the weights file to write (.weights.h5)")
    parser.add_argument("--backbone", default="mobilenet_v2", choices=sorted(BACKBONES))
    parser.add_argument("--alpha", type=float, default=0.5, help="width multiplier (default: %(default)s)")
    parser.add_argument("--categories", type=int, default=256, help="fractal categories (default: %(default)s)")
    parser.add_argument("--instances", type=int, default=64, help="rendered instances per category "
                        "(default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=96, help="render and train size (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimizer steps")
    budget.add_argument("--minutes", type=float, help="time budget for training (rendering comes on top)")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.categories < 2 or args.instances < 1 or args.image_size < 32:
        parser.error("--categories must be >= 2, --instances >= 1, --image-size >= 32")
    report = pretrain(args.out, args.backbone, args.alpha, args.categories, args.instances, args.image_size,
                      args.batch_size, args.steps, args.minutes, args.learning_rate, seed=args.seed)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
