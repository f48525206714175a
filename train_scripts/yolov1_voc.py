"""YOLOv1 on Pascal VOC 07+12, evaluated on VOC 2007 test: the paper's recipe (Redmon et al.
2016; Table 1 reports 63.4 mAP at 45 fps, trained on 07+12 and tested on 2007).

    python train_scripts/yolov1_voc.py --out runs/yolov1_voc --strategy mirrored

The ``yolov1`` preset (24 convolutional layers, then 4,096 fully connected with dropout 0.5
and the 7 x 7 x 30 output; 448 x 448 warped, fixed by the fully connected layers) and
``tfzoo.recipes.YOLOV1_VOC_SETTINGS``: batch 64, SGD momentum 0.9, weight decay 5e-4, the
rate warming from 1e-3 to 1e-2 over the first epoch, then 1e-2, 1e-3 and 1e-4 for 75, 30
and 30 epochs (135 in all), random scaling and translation up to 20 % and exposure and
saturation up to 1.5 in HSV. The paper first pre-trains the convolutions on ImageNet; no
Keras weights exist for them: ``--set backbone_weights=FILE`` loads a trunk's weights file
(``tfzoo.backbones.darknet.load_darknet_weights`` reads Darknet's format), else the
network trains from random weights (batch normalization, unlike the paper, keeps that
stable). Data from TensorFlow Datasets (``tfds:voc/2007`` and ``tfds:voc/2012``).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "yolov1"
PROTOCOL = tfzoo.recipes.VOC0712
SETTINGS = tfzoo.recipes.YOLOV1_VOC_SETTINGS


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/yolov1_voc", image_size=448, epochs=135)


if __name__ == "__main__":
    sys.exit(main())
