"""Faster R-CNN with FPN (ResNet-50) on COCO 2017: the "1x" schedule of Lin et al. 2017
(sec. 5, FPN on Faster R-CNN) as Detectron runs it.

    python train_scripts/faster_rcnn_fpn_coco.py --out runs/faster_rcnn_fpn_coco --strategy mirrored

Recipe (the ``faster_rcnn_fpn`` preset, pinned here):

- ResNet-50 with ImageNet weights, FPN P2-P6 with 256 channels, one anchor size per level
  (32 ... 512 px) x 3 ratios, a shared RPN head (256 anchors per image at 1:1), 2,000
  proposals per level merged to 2,000 in training (1,000 at test), RoIs pooled 7 x 7
  (RoIAlign-style sampling) from the level of their size, a 2 x 1,024 head, 512 RoIs per
  image at 25% foreground;
- input 800 x 800, letterboxed, horizontal flip (the paper resizes the shorter side to
  800 px; ``--image-size`` changes it);
- batch 16, SGD momentum 0.9, weight decay 1e-4 (L2 in the gradient), learning rate 0.02
  (scaled linearly for another ``--batch-size``), linear warm-up over 500 iterations;
- 12 epochs of train2017 (7,392 steps per epoch with TFDS' 118,287 images): 88,704
  iterations decayed x0.1 at 59,136 and 78,848, Detectron's 1x (90k, 60k, 80k). The paper's
  Fast R-CNN schedule is 80k iterations, decayed after 60k: ``--epochs 11`` comes close;
- evaluation on val2017 (COCO AP through pycocotools) after training.

Data comes from TensorFlow Datasets (``tfds:coco/2017``, about 25 GB, downloaded and
prepared on first use into ``TFDS_DATA_DIR``, default ``~/tensorflow_datasets``).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "faster_rcnn_fpn"
PROTOCOL = tfzoo.recipes.COCO
#: The paper's recipe, pinned against changes of the preset. The learning rate (0.02) and
#: its batch size (16) are the preset's, so that ``--batch-size`` scales the rate.
SETTINGS = (
    "backbone=resnet50",
    "backbone_weights=imagenet",
    "fpn=true",
    "optimizer=sgd",
    "momentum=0.9",
    "weight_decay=0.0001",
    "warmup_steps=500",
    "lr_schedule=step",
    "lr_decay_at=[0.6666666666666666, 0.8888888888888888]",
    "epochs=12",
    "rpn_samples=256",
    "rpn_post_nms_train=2000",
    "rpn_post_nms_test=1000",
    "roi_samples=512",
    "roi_positive_fraction=0.25",
    "augment=flip",
)


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/faster_rcnn_fpn_coco", image_size=800, epochs=12)


if __name__ == "__main__":
    sys.exit(main())
