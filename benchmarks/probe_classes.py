"""Where a detector loses shape-only classes: two probes (issue 17).

``crops``: can the backbone learn the classes at all in a few minutes? Trains the
``retinanet_mobile`` backbone (``--backbone``, by default the preset's: ResNet-10 at half
width, until issue 17 MobileNetV2 at half width; random initialization, the preset's
width and batch-norm momentum) with global average pooling and a softmax layer on the
objects of a dataset cut out of its images (each box with a 15 % margin, resized to
``--size``), and prints train / val top-1 after every epoch::

    python benchmarks/probe_classes.py crops --data voc:ROOT --minutes 3 [--backbone NAME] [--save-backbone W]

``--save-backbone`` writes the backbone's weights where ``--set backbone_weights=W`` loads
them into a detector (a pretrained-backbone experiment).

``agnostic``: are the objects found but their classes not? Scores a trained run on val
twice: as usual, and class-agnostic (every class one class, detections of all classes
through one more NMS at IoU 0.5, so that one object's detections under several class
labels count once)::

    python benchmarks/probe_classes.py agnostic RUN_DIR --data voc:ROOT

A large gap between the two AP50s says that localization works and classification is
what fails.
"""
from __future__ import annotations

import argparse
import sys
import time

#: Margin around each box, as a fraction of its side, when cutting objects out.
CROP_MARGIN = 0.15


def crop_dataset(spec, split, size):
    """``(crops uint8 [N, size, size, 3], labels int32 [N])`` of every box of ``split``."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import tfzoo.data  # noqa: PLC0415
    from tfzoo.data import schema  # noqa: PLC0415

    crops, labels = [], []
    for example in tfzoo.data.load(spec, split):
        boxes = example[schema.BOXES]
        if boxes.shape[0] == 0:
            continue
        hw = boxes[:, 2:] - boxes[:, :2]
        margin = tf.tile(hw * CROP_MARGIN, [1, 2]) * [-1.0, -1.0, 1.0, 1.0]
        image = tf.cast(example[schema.IMAGE], tf.float32)[None]
        cut = tf.image.crop_and_resize(image, boxes + margin, tf.zeros(tf.shape(boxes)[0], tf.int32), (size, size))
        crops.append(tf.cast(tf.round(cut), tf.uint8).numpy())
        labels.append(example[schema.CLASSES].numpy())
    return np.concatenate(crops), np.concatenate(labels).astype(np.int32)


def probe_crops(spec, minutes, size=64, batch_size=64, seed=0, save_backbone=None, backbone_name=None):
    """Trains the crop classifier for ``minutes``; returns the per-epoch history."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from tfzoo import backbones, layers  # noqa: PLC0415
    from tfzoo.models.retinanet import PRESETS  # noqa: PLC0415

    preset = PRESETS["retinanet_mobile"]
    preset = preset.replace(backbone=backbone_name or preset.backbone)
    train_x, train_y = crop_dataset(spec, "train", size)
    val_x, val_y = crop_dataset(spec, "val", size)
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    print(f"{len(train_x)} training and {len(val_x)} val objects, {num_classes} classes, {size} px", flush=True)
    keras.utils.set_random_seed(seed)
    backbone = backbones.build_backbone(preset.backbone, size, None, preset.backbone_alpha,
                                        batchnorm_momentum=preset.batchnorm_momentum)
    inputs = keras.Input((size, size, 3))
    x = layers.ImageNormalization(backbones.PREPROCESSING[preset.backbone])(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x)["C5"])
    model = keras.Model(inputs, keras.layers.Dense(num_classes)(x))
    model.compile(keras.optimizers.AdamW(preset.learning_rate, weight_decay=preset.weight_decay),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    shift = keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1, seed=seed),
                              keras.layers.RandomZoom(0.15, seed=seed)])
    batches = (tf.data.Dataset.from_tensor_slices((train_x, train_y)).shuffle(len(train_x), seed=seed)
               .batch(batch_size).map(lambda x, y: (shift(tf.cast(x, tf.float32), training=True), y))
               .prefetch(2))
    history, started = [], time.monotonic()
    while time.monotonic() - started < minutes * 60:
        loss = model.fit(batches, epochs=1, verbose=0).history["loss"][-1]
        train_acc = model.evaluate(train_x[:len(val_x)], train_y[:len(val_x)], verbose=0)[1]
        val_acc = model.evaluate(val_x, val_y, verbose=0)[1]
        history.append({"seconds": round(time.monotonic() - started), "loss": loss,
                        "train_top1": train_acc, "val_top1": val_acc})
        print(f"{history[-1]['seconds']:5d} s  epoch {len(history):3d}  loss {loss:.3f}  "
              f"train top-1 {train_acc:.3f}  val top-1 {val_acc:.3f}", flush=True)
    if save_backbone:
        backbone.save_weights(save_backbone)
        print(f"backbone weights -> {save_backbone}")
    return history


def probe_agnostic(run_dir, spec, split="val"):
    """``{"AP50": class-aware, "agnostic_AP50": class-agnostic}`` of the run's model."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import tfzoo.data  # noqa: PLC0415
    import tfzoo.models  # noqa: F401, PLC0415  (registers the detector classes)
    import tfzoo.optim  # noqa: F401, PLC0415  (registers the optimizer and schedule)
    from tfzoo.data import schema  # noqa: PLC0415
    from tfzoo.eval.detector_eval import evaluate_detector  # noqa: PLC0415
    from tfzoo.ops import nms  # noqa: PLC0415

    detector = keras.models.load_model(f"{run_dir}/model.keras")
    config = detector.config
    dataset = tfzoo.data.load(spec, split)

    @tf.function
    def detect(images):
        return detector.decode(detector(images, training=False))

    @tf.function
    def detect_agnostic(images):
        out = detect(images)
        valid = tf.range(tf.shape(out["detection_scores"])[1])[None, :] < out["num_detections"][:, None]
        scores = tf.where(valid, out["detection_scores"], 0.0)[..., None]  # [B, M, 1]: one class
        return nms.multiclass_nms(out["detection_boxes"], scores, max_detections=config.max_detections,
                                  iou_threshold=config.nms_iou_threshold, score_threshold=0.0)

    one_class = dataset.map(lambda ex: {**ex, schema.CLASSES: tf.zeros_like(ex[schema.CLASSES])})
    aware = evaluate_detector(detect, dataset, config.image_size, list(config.class_names), progress=False)
    agnostic = evaluate_detector(detect_agnostic, one_class, config.image_size, ["object"], progress=False)
    return {"AP50": aware["AP50"], "AR100": aware["AR100"],
            "agnostic_AP50": agnostic["AP50"], "agnostic_AR100": agnostic["AR100"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="probe", required=True)
    crops = sub.add_parser("crops", help="train a classifier on the objects cut out of their images")
    crops.add_argument("--data", required=True, help="dataset spec, e.g. voc:ROOT")
    crops.add_argument("--minutes", type=float, default=3.0)
    crops.add_argument("--size", type=int, default=64, help="crop side in pixels, a multiple of 32")
    crops.add_argument("--backbone", help="a tfzoo.backbones name (default: retinanet_mobile's)")
    crops.add_argument("--save-backbone", metavar="W.weights.h5")
    agnostic = sub.add_parser("agnostic", help="class-aware against class-agnostic AP50 of a trained run")
    agnostic.add_argument("run_dir")
    agnostic.add_argument("--data", required=True)
    agnostic.add_argument("--split", default="val")
    args = parser.parse_args(argv)
    if args.probe == "crops":
        probe_crops(args.data, args.minutes, args.size, save_backbone=args.save_backbone, backbone_name=args.backbone)
    else:
        result = probe_agnostic(args.run_dir, args.data, args.split)
        print(" ".join(f"{k} {v:.3f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
