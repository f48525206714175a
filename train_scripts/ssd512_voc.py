"""SSD512 on Pascal VOC 07+12, evaluated on VOC 2007 test: the paper's recipe (Liu et al.
2016, sections 3 and 3.1; Table 1 reports 76.9 mAP).

    python train_scripts/ssd512_voc.py --out runs/ssd512_voc --strategy mirrored

- the reduced VGG-16 with ImageNet weights (fc6/fc7 subsampled from the classifier's fully
  connected layers), conv4_3 L2-normalized, maps 64, 32, 16, 8, 4, 2, 1 (24,564 default boxes);
- input 512 x 512, warped; the SSD augmentation: photometric distortions, zoom-out up
  to 4x, the IoU-constrained random crop, horizontal flip;
- batch 32, SGD momentum 0.9, weight decay 5e-4, learning rate 1e-3 (scaled linearly for
  another ``--batch-size``), 500 warm-up iterations;
- 116 epochs of the 16,551 images (60k iterations at batch 32), decayed x0.1 at 2/3 and 5/6
  of training: the paper's 40k iterations at 1e-3, then 10k at 1e-4 and 10k at 1e-5;
- matching: each object to its best default box, then every box with IoU >= 0.5; softmax
  loss with 3:1 hard-negative mining plus smooth L1; inference at confidence 0.01, NMS 0.45,
  200 detections.

Data comes from TensorFlow Datasets (``tfds:voc/2007`` and ``tfds:voc/2012``, about 4 GB,
prepared on first use into ``TFDS_DATA_DIR``).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "ssd512"
PROTOCOL = tfzoo.recipes.VOC0712
#: The paper's recipe, pinned against changes of the preset.
SETTINGS = (
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


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/ssd512_voc", image_size=512, epochs=116)


if __name__ == "__main__":
    sys.exit(main())
