"""YOLOv2 on Pascal VOC 07+12, evaluated on VOC 2007 test: the paper's recipe (Redmon &
Farhadi 2017; Table 3 reports 76.8 mAP at 416 x 416).

    python train_scripts/yolov2_voc.py --out runs/yolov2_voc --strategy mirrored

The ``yolov2`` preset (Darknet-19, the passthrough layer, a 13 x 13 grid with the 5 VOC
priors: 845 predictions at 416) and ``tfzoo.recipes.YOLOV2_VOC_SETTINGS``: 160 epochs, SGD
1e-3 with a 1,000-batch burn-in, divided by 10 at epochs 60 and 90, weight decay 5e-4,
momentum 0.9, batch 64, multi-scale training (a new size from {320, ..., 608} every 10
batches), jitter and HSV augmentation. ``tfzoo anchors --data SPEC --model yolov2`` fits
priors to other data (``--set priors=auto``). Data from TensorFlow Datasets.
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "yolov2"
PROTOCOL = tfzoo.recipes.VOC0712
SETTINGS = tfzoo.recipes.YOLOV2_VOC_SETTINGS


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/yolov2_voc", image_size=416, epochs=160)


if __name__ == "__main__":
    sys.exit(main())
