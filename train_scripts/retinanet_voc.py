"""RetinaNet R-50-FPN on Pascal VOC 07+12, evaluated on VOC 2007 test.

    python train_scripts/retinanet_voc.py --out runs/retinanet_voc --strategy mirrored

The paper reports COCO only; this is the common VOC protocol ("07+12": train on the
trainval sets of VOC 2007 and 2012, 16,551 images; test on VOC 2007 test, 4,952 images,
VOC07 11-point mAP at IoU 0.5, reported as ``voc07_mAP``) with the paper's optimizer:

- ResNet-50 with ImageNet weights, the paper's head, anchors and focal loss;
- input 512 x 512, letterboxed, horizontal flip: VOC images are at most 500 px on a side,
  so 512 keeps them at their own resolution (no upsampling) and costs 64% of 640;
- batch 16, SGD momentum 0.9, weight decay 1e-4, learning rate 0.01 (scaled linearly for
  another ``--batch-size``), linear warm-up over 500 iterations;
- 18 epochs (1,034 steps each at batch 16, 18,612 iterations), decayed x0.1 after epochs
  12 and 16 (2/3 and 8/9 of training): Detectron2's VOC schedule (18k iterations at
  batch 16, steps at 12k and 16k), rounded to whole epochs.

Data comes from TensorFlow Datasets (``tfds:voc/2007`` and ``tfds:voc/2012``, about
4 GB together, prepared on first use into ``TFDS_DATA_DIR``, default
``~/tensorflow_datasets``); TFDS calls the val split ``validation``.
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "retinanet"
PROTOCOL = tfzoo.recipes.VOC0712
#: The recipe above, pinned against changes of the preset. The learning rate (0.01) and
#: its batch size (16) are the preset's, so that ``--batch-size`` scales the rate.
SETTINGS = (
    "backbone=resnet50",
    "backbone_weights=imagenet",
    "optimizer=sgd",
    "momentum=0.9",
    "weight_decay=0.0001",
    "warmup_steps=500",
    "lr_schedule=step",
    "epochs=18",
    "augment=flip",
)


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/retinanet_voc", image_size=512, epochs=18)


if __name__ == "__main__":
    sys.exit(main())
