"""SPP-Net for detection (He et al. 2014, sec. 4): the convolutional layers run once on the
whole image; each region proposal's window on the last feature map is pooled by a spatial
pyramid into a fixed-length vector for the fully connected layers.

The graph is Fast R-CNN's (:mod:`tfzoo.models.fast_rcnn`: the image and its proposals in,
per-proposal K + 1 scores and class-specific box deltas out, per-class NMS) with the 7 x 7
RoI pooling replaced by the paper's 4-level pyramid {6 x 6, 3 x 3, 2 x 2, 1 x 1} (50 bins;
:class:`tfzoo.models.faster_rcnn.SPPPool`: each window cropped to a 13 x 13 grid, the seed's
conv5 size at 224 px, then pooled with the seed's window and stride rule) and, as the paper
fine-tunes, the convolutional layers frozen (``freeze_backbone``): only fc6, fc7 and the
predictors learn, on 2 images x 128 RoIs at 25 % foreground (the paper's 256-RoI
mini-batches).

After ``fit``, the R-CNN stages (:mod:`tfzoo.models.stages`, as the paper's sec. 4): per-class
linear SVMs on the fine-tuned fc7 features with hard-negative mining, then ridge box
regression on the pooled features; until they have run, the fine-tuned softmax scores and
the smooth L1 deltas learned beside it (Fast R-CNN's multi-task loss) serve.

The paper's multi-scale test is an option (``test_scales``, e.g. ``--set
test_scales=[480,576,688,864,1200]``): the image is resized to each side, the
convolutions run once per scale, and each window is pooled from the scale where it covers
the number of pixels closest to 224 x 224 (:func:`tfzoo.models.faster_rcnn.closest_scale`);
single scale (``image_size``) by default, as the paper's training.

Presets:

- ``spp_net``: VGG-16 (ImageNet weights for users; the paper's ZF-5 is not in tfzoo),
  672 x 672 (the paper's single scale 688, on a multiple of 32), 2,000 selective search
  proposals, frozen convolutions, fc 4,096 x 2, SGD 1e-4 then 1e-5 (the paper's 250k + 50k
  mini-batches).
- ``spp_net_mobile``: a CPU preset: tfzoo's ResNet-10 at half width from random weights at
  320, 1,000 proposals, a 256-wide head, the CPU recipe; its convolutions train too (random
  ones cannot stay frozen).
"""
from __future__ import annotations

import dataclasses

import keras

from tfzoo.models import faster_rcnn as frcnn
from tfzoo.models import stages
from tfzoo.models.fast_rcnn import FastRCNN


@dataclasses.dataclass(frozen=True)
class SPPNetConfig(stages.StagedConfig):
    """SPP-Net settings; defaults are the paper's single-scale detection on VOC07 (20
    classes) with VGG-16 for its ZF-5."""

    name: str = "spp_net"
    image_size: int = 672
    spp_levels: tuple[int, ...] = (6, 3, 2, 1)  # the paper's 50 bins for detection
    spp_grid: int = 13  # each window cropped to grid x grid before the pyramid
    # The paper's multi-scale test (sec. 4): () single scale (image_size); else the image
    # resized to each side here (e.g. the paper's (480, 576, 688, 864, 1200)), the
    # convolutions run on each, and each window pooled from the scale where it is closest
    # to 224 x 224 pixels. Training stays at image_size. The scales resize the model's
    # input (image_size a side): sides above it upsample rather than add detail.
    test_scales: tuple[int, ...] = ()
    freeze_backbone: bool = True  # the paper fine-tunes the fully connected layers only
    roi_samples: int = 128  # 2 images x 128 = the paper's 256 RoIs per mini-batch, 25 % foreground
    # --- the paper's fine-tuning: 1e-4 for 250k mini-batches, then 1e-5 for 50k (2 images
    # each over VOC07's 5,011: 120 epochs, x0.1 after 5/6) ---
    learning_rate: float = 1e-4
    epochs: int = 120
    lr_decay_at: tuple[float, ...] = (250.0 / 300.0,)

    def __post_init__(self):
        super().__post_init__()
        if not self.spp_levels or min(self.spp_levels) < 1:
            raise ValueError(f"spp_levels must be positive pyramid sizes, got {self.spp_levels}")
        if self.test_scales and (min(self.test_scales) < 32 or len(set(self.test_scales)) != len(self.test_scales)):
            raise ValueError(f"test_scales must be distinct image sides of at least 32 pixels, got {self.test_scales}")
        if self.spp_grid < max(self.spp_levels):
            raise ValueError(f"spp_grid {self.spp_grid} is smaller than the finest level {max(self.spp_levels)}")


PRESETS = {
    "spp_net": SPPNetConfig(),
    "spp_net_mobile": SPPNetConfig(name="spp_net_mobile", max_proposals=1000, freeze_backbone=False,
                                   roi_samples=64, **{k: v for k, v in frcnn.MOBILE.items() if k != "roi_samples"}),
}


@keras.saving.register_keras_serializable(package="tfzoo")
class SPPNet(stages.StagesMixin, FastRCNN):
    """SPP-Net as a functional Keras model: Fast R-CNN's graph with the pyramid pooling
    (see the module doc)."""

    config_class = SPPNetConfig
    family = "SPP-Net"
    presets = PRESETS
    cpu_presets = ("spp_net_mobile",)
    tiny = {**FastRCNN.tiny, "spp_levels": (2, 1), "spp_grid": 4}
