"""RetinaNet R-50-FPN on COCO 2017, the paper's 1x recipe (Lin et al. 2017, Table 1/Sec. 4.1).

    python train_scripts/retinanet_coco.py --out runs/retinanet_coco --strategy mirrored

Recipe (the ``retinanet`` preset, pinned here):

- ResNet-50 with ImageNet weights, FPN P3-P7, 9 anchors, focal loss (alpha 0.25, gamma 2);
- input 640 x 640, letterboxed, horizontal flip (the paper resizes the shorter side to
  800 px, the longer up to 1333; 640 square is TF Model Garden's RetinaNet setting and
  has 2.6x fewer pixels than 800 x 1333; ``--image-size 800`` gets closer to the paper);
- batch 16, SGD momentum 0.9, weight decay 1e-4 (L2 in the gradient), learning rate 0.01
  (scaled linearly for another ``--batch-size``), linear warm-up over 500 iterations;
- 12 epochs of train2017 ("1x"): with TFDS' 118,287 images that is 7,392 steps per epoch,
  88,704 iterations, decayed x0.1 at 59,136 and 78,848 (2/3 and 8/9 of training; the
  paper: 90k iterations, decay at 60k and 80k);
- evaluation on val2017 (COCO AP through pycocotools) after training.

Data comes from TensorFlow Datasets (``tfds:coco/2017``, about 25 GB, downloaded and
prepared on first use into ``TFDS_DATA_DIR``, default ``~/tensorflow_datasets``).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "retinanet"
PROTOCOL = tfzoo.recipes.COCO
#: The paper's recipe, pinned against changes of the preset. The learning rate (0.01) and
#: its batch size (16) are the preset's, so that ``--batch-size`` scales the rate.
SETTINGS = (
    "backbone=resnet50",
    "backbone_weights=imagenet",
    "optimizer=sgd",
    "momentum=0.9",
    "weight_decay=0.0001",
    "warmup_steps=500",
    "lr_schedule=step",
    "epochs=12",
    "augment=flip",
)


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/retinanet_coco", image_size=640, epochs=12)


if __name__ == "__main__":
    sys.exit(main())
