"""The dataset protocols and the command line shared by the paper-recipe scripts in
``train_scripts/``.

A recipe script pins a model, the paper's settings and a protocol, and calls :func:`main`::

    sys.exit(tfzoo.recipes.main(argv, doc=__doc__, model="retinanet", protocol=tfzoo.recipes.COCO,
                                settings=SETTINGS, out="runs/retinanet_coco", image_size=640, epochs=12))

This module imports no TensorFlow, so ``--help`` works at once and offline.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

#: Strategies of :func:`tfzoo.train.train` (repeated here so that ``--help`` needs no
#: TensorFlow; a test keeps the two equal).
STRATEGIES = ("default", "mirrored", "multiworker")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A benchmark protocol: what a detector trains on and is scored on, and the figure the
    papers report for it."""

    name: str
    data: str | tuple  # dataset spec(s) trained on (several: concatenated)
    split: str
    val_data: str | None  # None: ``data``
    val_split: str
    metric: str  # the key of the metrics that the papers report


#: COCO 2017: train2017 (118,287 images), scored on val2017 with COCO AP (pycocotools).
COCO = Protocol("COCO 2017", "tfds:coco/2017", "train", None, "validation", "AP")
#: Pascal VOC "07+12": the trainval sets of VOC 2007 and 2012 (16,551 images), scored on
#: VOC 2007 test (4,952 images) with the 11-point VOC07 mAP at IoU 0.5.
VOC0712 = Protocol("VOC 07+12", ("tfds:voc/2007", "tfds:voc/2012"), "train+validation", "tfds:voc/2007", "test",
                   "voc07_mAP")
#: VOC 2007 alone (5,011 trainval images), as R-CNN, SPP-Net and YOLOv1's ablations use it.
VOC07 = Protocol("VOC 2007", "tfds:voc/2007", "train+validation", None, "test", "voc07_mAP")
PROTOCOLS = {"coco": COCO, "voc0712": VOC0712, "voc07": VOC07}

#: SSD's VOC07+12 recipe (Liu et al. 2016, section 3), SSD300's and SSD512's alike: the
#: reduced VGG-16 with ImageNet weights, the SSD augmentation, batch 32 (the presets'), SGD
#: 1e-3 momentum 0.9, weight decay 5e-4, 60k iterations (116 epochs of 16,551 images)
#: decayed x0.1 at 40k and 50k. Pinned here against changes of the presets.
SSD_VOC_SETTINGS = (
    "backbone=vgg16",
    "backbone_weights=imagenet",
    "optimizer=sgd",
    "momentum=0.9",
    "weight_decay=0.0005",
    "warmup_steps=500",
    "lr_schedule=step",
    "lr_decay_at=[0.6666666666666666, 0.8333333333333334]",
    "epochs=116",
    "augment=ssd",
)


#: YOLOv1's VOC 07+12 recipe (Redmon et al. 2016, sec. 2.2): batch 64, SGD momentum 0.9,
#: weight decay 5e-4, the rate rising from 1e-3 to 1e-2 over the first epoch (259
#: batches), then 1e-2 until epoch 75, 1e-3 for 30 epochs, 1e-4 for 30; dropout 0.5;
#: random scaling and translation up to 20 %, exposure and saturation up to 1.5 in HSV.
YOLOV1_VOC_SETTINGS = (
    "batch_size=64",
    "optimizer=sgd",
    "learning_rate=0.01",
    "momentum=0.9",
    "weight_decay=0.0005",
    "warmup_steps=259",
    "warmup_factor=0.1",
    "lr_schedule=step",
    "lr_decay_at=[0.5555555555555556, 0.7777777777777778]",
    "epochs=135",
    "dropout=0.5",
    "augment=yolo",
)
_DARKNET_SGD = (  # the YOLOv2 and YOLOv3 cfgs' optimizer: batch 64, SGD 1e-3, 1,000-batch burn-in
    "batch_size=64",
    "optimizer=sgd",
    "learning_rate=0.001",
    "momentum=0.9",
    "weight_decay=0.0005",
    "warmup_steps=1000",
    "lr_schedule=step",
    "multi_scale=[0.75, 1.5]",
    "size_period=10",
    "augment=yolo",
)
#: YOLOv2's VOC recipe (Redmon & Farhadi 2017, sec. 3): 160 epochs at 1e-3, divided by 10
#: at epochs 60 and 90, weight decay 5e-4, momentum 0.9, batch 64 with yolov2-voc.cfg's
#: 1,000-batch burn-in; multi-scale training over {320, ..., 608} every 10 batches; jitter
#: and HSV augmentation.
YOLOV2_VOC_SETTINGS = (
    *_DARKNET_SGD,
    "lr_decay_at=[0.375, 0.5625]",
    "epochs=160",
)
#: YOLOv3's COCO recipe (yolov3.cfg; the paper gives no schedule): batch 64, SGD 1e-3
#: with a 1,000-batch burn-in, x0.1 at 400k and 450k of 500,200 batches (80 % and 90 %;
#: 273 epochs of train2017), momentum 0.9, weight decay 5e-4, multi-scale training.
YOLOV3_COCO_SETTINGS = (
    *_DARKNET_SGD,
    "lr_decay_at=[0.8, 0.9]",
    "epochs=273",
)


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
                        help="square input size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help=f"override the recipe's {epochs} epochs")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="start a new run over the one in --out")
    parser.add_argument("--eval-every-epoch", action="store_true", help="also evaluate after every epoch")
    return parser


def main(argv, *, doc, model, protocol, settings, out, image_size, epochs):
    """Parses ``argv``, trains ``model`` on ``protocol`` with :func:`tfzoo.train.train`,
    prints the protocol's metric; exit status."""
    args = build_parser(doc, out, image_size, epochs).parse_args(argv)
    import tfzoo.train  # after parsing: --help needs neither TensorFlow nor the data

    data = protocol.data
    result = tfzoo.train.train(
        model, list(data) if isinstance(data, tuple) else data, split=protocol.split, val_split=protocol.val_split,
        val_data=protocol.val_data, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
        out=args.out, resume=args.resume, overwrite=args.overwrite, settings=settings, strategy=args.strategy,
        mixed_precision=args.mixed_precision, eval_every_epoch=args.eval_every_epoch,
    )
    if result.stopped:
        print(f"stopped: {result.stopped}", file=sys.stderr)
        return 1
    print(f"{result.out_dir}: {result.epochs} epochs, {result.steps} steps, {protocol.name} {protocol.metric} "
          f"{(result.metrics or {}).get(protocol.metric, float('nan')):.4f}")
    return 0
