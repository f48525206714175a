"""SSD512 on Pascal VOC 07+12, evaluated on VOC 2007 test: the paper's recipe (Liu et al.
2016; Table 1 reports 76.9 mAP).

    python train_scripts/ssd512_voc.py --out runs/ssd512_voc --strategy mirrored

The ``ssd512`` preset (maps 64, 32, 16, 8, 4, 2, 1 (24,564 default boxes); conv4_3 L2-normalized; the reduced VGG-16's fc6/fc7
subsampled from the ImageNet classifier), input 512 x 512 warped, and
``tfzoo.recipes.SSD_VOC_SETTINGS``: the SSD augmentation (photometric distortions, zoom-out
up to 4x, the IoU-constrained crop, flip), batch 32, SGD 1e-3 momentum 0.9 (scaled
linearly for another ``--batch-size``), weight decay 5e-4, 116 epochs = the paper's 60k
iterations, decayed x0.1 at 40k and 50k. Data from TensorFlow Datasets (``tfds:voc/2007``
and ``tfds:voc/2012``, about 4 GB, prepared on first use into ``TFDS_DATA_DIR``).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "ssd512"
PROTOCOL = tfzoo.recipes.VOC0712
SETTINGS = tfzoo.recipes.SSD_VOC_SETTINGS


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/ssd512_voc", image_size=512, epochs=116)


if __name__ == "__main__":
    sys.exit(main())
