"""Fast R-CNN (VGG-16) on Pascal VOC 2007, evaluated on VOC 2007 test: the paper's recipe
(Girshick 2015, sec. 2.3 and 4; Table 1 reports 66.9 mAP trained on VOC07 trainval).

    python train_scripts/fast_rcnn_voc.py --out runs/fast_rcnn_voc --strategy mirrored

The ``fast_rcnn`` preset: VGG-16 with ImageNet weights (its fc6/fc7 initialize the RoI
head), input 608 x 608 (the paper's 600-pixel scale), selective search proposals in fast
mode (2,000 per image, computed once and cached: about a second per image per core, so
several CPU-hours for the 9,963 VOC07 images; ``tfzoo proposals --data tfds:voc/2007
--split train+validation`` fills the cache ahead, in parallel), 2 images x 64 RoIs per
step at 25% foreground (IoU >= 0.5, background [0.1, 0.5)), SGD momentum 0.9, weight decay
5e-4, learning rate 1e-3 (scaled linearly for another ``--batch-size``) for 30k
iterations then 1e-4 for 10k (80k images, 16 epochs), horizontal flips. Data from
TensorFlow Datasets (``tfds:voc/2007``, prepared on first use into ``TFDS_DATA_DIR``).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "fast_rcnn"
PROTOCOL = tfzoo.recipes.VOC07
SETTINGS = ()


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/fast_rcnn_voc", image_size=608, epochs=16)


if __name__ == "__main__":
    sys.exit(main())
