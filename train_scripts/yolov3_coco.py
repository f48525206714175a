"""YOLOv3 on COCO 2017, evaluated on val2017: yolov3.cfg's recipe (Redmon & Farhadi 2018;
Table 3 reports 31.0 AP / 55.3 AP50 at 416, 33.0 / 57.9 at 608).

    python train_scripts/yolov3_coco.py --out runs/yolov3_coco --strategy mirrored --mixed-precision

The ``yolov3`` preset (Darknet-53, three scales, the paper's 9 COCO priors: 10,647
predictions at 416) and ``tfzoo.recipes.YOLOV3_COCO_SETTINGS``: batch 64, SGD 1e-3 with a
1,000-batch burn-in, x0.1 at 80 % and 90 % of 273 epochs (the cfg's 500,200 batches),
momentum 0.9, weight decay 5e-4, multi-scale training over {320, ..., 608}, jitter and
HSV augmentation. Serve at 608 for the paper's larger figure: ``tfzoo evaluate`` / ``tfzoo
export ... --image-size 608``. Data from TensorFlow Datasets (``tfds:coco/2017``, about 25 GB).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "yolov3"
PROTOCOL = tfzoo.recipes.COCO
SETTINGS = tfzoo.recipes.YOLOV3_COCO_SETTINGS


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/yolov3_coco", image_size=416, epochs=273)


if __name__ == "__main__":
    sys.exit(main())
