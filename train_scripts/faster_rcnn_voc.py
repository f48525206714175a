"""Faster R-CNN (VGG-16) on Pascal VOC 07+12, evaluated on VOC 2007 test: the paper's recipe
(Ren et al. 2015, sec. 4.1; Table 3 reports 73.2 mAP).

    python train_scripts/faster_rcnn_voc.py --out runs/faster_rcnn_voc --strategy mirrored

The ``faster_rcnn`` preset: VGG-16 with ImageNet weights (its fc6/fc7 initialize the RoI
head), input 800 x 800, 9 anchors per location (22,500), RPN and RoI head trained jointly
(approximate joint training), 2,000 training proposals, 128 RoIs per image at 25%
foreground, SGD momentum 0.9, weight decay 5e-4, learning rate 1e-3 per image (2e-3 at the
preset's 2 images, scaled linearly for another ``--batch-size``), 80k images (5 epochs)
decayed x0.1 after 60k, horizontal flips. Data from TensorFlow Datasets (``tfds:voc/2007``
and ``tfds:voc/2012``, about 4 GB, prepared on first use into ``TFDS_DATA_DIR``).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "faster_rcnn"
PROTOCOL = tfzoo.recipes.VOC0712
SETTINGS = ()


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/faster_rcnn_voc", image_size=800, epochs=5)


if __name__ == "__main__":
    sys.exit(main())
