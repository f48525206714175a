"""R-CNN (VGG-16) on Pascal VOC 2007, evaluated on VOC 2007 test: the paper's recipe
(Girshick et al. 2014, sec. 2.3 and appendices A-C; Table 1 reports 58.5 mAP with AlexNet
and box regression, 66.0 with VGG-16 in the journal version).

    python train_scripts/rcnn_voc.py --out runs/rcnn_voc --strategy mirrored

The ``rcnn`` preset: VGG-16 with ImageNet weights (fc6/fc7 from its classifier), each of
2,000 selective search proposals (fast mode, cached: ``tfzoo proposals --data
tfds:voc/2007 --split train+validation`` fills the cache ahead) dilated to 16 pixels of
context and warped to 224 x 224. Three stages in one command: fine-tuning (2 images x 64
windows per step, a quarter at IoU >= 0.5, SGD 1e-3, 16 epochs, x0.1 after half), then the
per-class linear SVMs on fc7 (ground truth positive, IoU < 0.3 negative, hard-negative
mining), then ridge box regression on pool5 (IoU > 0.6, lambda 1,000). Each image's
windows go through the CNN 32 at a time: expect minutes per image on a CPU, seconds on a GPU.
Data from TensorFlow Datasets (``tfds:voc/2007``, prepared on first use into
``TFDS_DATA_DIR``).
"""
from __future__ import annotations

import sys

import tfzoo.recipes

MODEL = "rcnn"
PROTOCOL = tfzoo.recipes.VOC07
SETTINGS = ()


def main(argv=None):
    return tfzoo.recipes.main(argv, doc=__doc__, model=MODEL, protocol=PROTOCOL, settings=SETTINGS,
                              out="runs/rcnn_voc", image_size=512, epochs=16)


if __name__ == "__main__":
    sys.exit(main())
