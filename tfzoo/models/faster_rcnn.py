"""Faster R-CNN (Ren et al. 2015): a region proposal network and a RoI head on one feature map.

The graph (``detector(images)``, what inference and the exports run): the backbone's
stride-16 map (VGG-16's conv5_3), the RPN head (:func:`tfzoo.layers.rpn_head`: a 3x3 conv and
sibling 1x1 convs for the 9 anchors per location, ratios 0.5/1/2 x scales 8/16/32 on base 16,
the seed's table: 22,500 anchors at 800 x 800), the proposal layer
(:func:`tfzoo.ops.proposals.generate_proposals`: top 6,000 -> NMS 0.7 -> 300 at test),
RoI max pooling to 7 x 7 (:class:`RoIPool`: `crop_and_resize`, builtin ops in a TFLite file), two
fully connected layers (4,096 each) and the sibling K + 1 softmax and class-specific box
deltas (weights 10, 10, 5, 5). Raw outputs: ``rpn_objectness [B, A]``, ``rpn_deltas
[B, A, 4]``, ``rpn_features`` (the shared map), ``proposals [B, R, 4]`` (zeros past the
proposals found), ``class_logits [B, R, K + 1]`` (background last) and ``box_deltas [B, R,
4 K]``; :meth:`FasterRCNN.decode` turns the last three into per-class boxes and runs the
shared builtin NMS (0.3, the paper's test setting; 100 detections).

Training (approximate joint training, the paper's sec. 3.2): ``fit`` runs the same layers
with the training settings. ``detector(images, training=True)`` stops after the RPN; the
RoI head runs in :meth:`FasterRCNN.compute_losses`, where the ground truth of the batch is:
proposals from the RPN's outputs (top 12,000 -> NMS 0.7 -> 2,000, no gradient through
them), 128 RoIs per image sampled among them and the ground-truth boxes at a quarter
foreground (:func:`tfzoo.ops.proposals.roi_targets`), pooled with ``crop_and_resize`` (the
same numbers as the builtin crop) and classified. The RPN's anchors are matched in tf.data
(:func:`tfzoo.ops.proposals.rpn_matches`) and 256 of them sampled per image in the loss.
Four loss terms: ``rpn_cls_loss``, ``rpn_box_loss``, ``roi_cls_loss``, ``roi_box_loss``.

Presets:

- ``faster_rcnn``: VGG-16 (ImageNet weights for users), 800 x 800, the paper's settings.
- ``faster_rcnn_mobile``: a CPU preset: tfzoo's ResNet-10 at half width (its stride-16 map),
  from random weights, 320 x 320, 1,000 -> 300 proposals in training and 500 -> 100 at test,
  a 256-wide head, 64 RoIs per image, the CPU recipe.
- ``faster_rcnn_fpn`` (Lin et al. 2017): ResNet-50 + FPN P2-P6 (256 channels, P6 pooled from
  P5), one anchor size per level (32 ... 512 px) x 3 ratios, the RPN head shared over the
  levels, proposals per level (2,000 -> 2,000 in training, 1,000 -> 1,000 at test, NMS
  within each level), each RoI pooled from level ``floor(4 + log2(sqrt(wh) / 224))``
  clamped to P2-P5, a 2 x 1,024 head, 512 RoIs per image.
- ``faster_rcnn_fpn_mobile``: the same on the ResNet-10 at half width, a 64-channel pyramid,
  320 x 320, fewer proposals, the CPU recipe.

With ImageNet weights, ``faster_rcnn``'s RoI head starts from VGG-16's fc6/fc7
(:func:`load_vgg16_head`), as the paper's.
"""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from tfzoo import backbones, layers
from tfzoo.data import schema
from tfzoo.data.pipeline import Encoder, pad_ground_truth
from tfzoo.models.base import (SCRATCH_RECIPE, Detector, DetectorConfig, float_barrier, float_exit, float_section,
                               replica_sum)
from tfzoo.ops import anchors as anchor_ops
from tfzoo.ops import box_coder
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import losses as loss_ops
from tfzoo.ops import matcher as matcher_ops
from tfzoo.ops import nms as nms_ops
from tfzoo.ops import proposals as proposal_ops
from tfzoo.ops import roi as roi_ops

#: Raw outputs and targets.
RPN_OBJECTNESS = "rpn_objectness"
RPN_DELTAS = "rpn_deltas"
RPN_FEATURES = "rpn_features"
RPN_MATCHES = "rpn_matches"
#: The training batches' ground-truth flag of boxes no RoI may learn from (crowd or
#: difficult): int32 1 or 0, not two bool columns, because Keras' first step under a
#: distribution strategy averages a batch over the replicas, which bool tensors cannot be.
GT_IGNORE = "gt_ignore"
PROPOSALS = "proposals"
CLASS_LOGITS = "class_logits"
#: Per-class scores of the detectors scored after ``fit`` (R-CNN, SPP-Net: SVMs or the softmax).
CLASS_SCORES = "class_scores"
BOX_DELTAS = "box_deltas"


@dataclasses.dataclass(frozen=True)
class RoIHeadConfig(DetectorConfig):
    """The settings of the detectors built on Fast R-CNN's RoI head (Faster R-CNN, Fast
    R-CNN): the shared map, the head, its training RoIs, inference and the papers' VOC
    optimizer; each subclass sets its paper's values where they differ."""

    num_classes: int = 20
    backbone: str = "vgg16"
    feature: str = "C4"  # the backbone map RoIs are pooled from (stride 16; without FPN)
    # --- RoI head ---
    roi_size: int = 7
    roi_sampling_ratio: int = 2  # bilinear samples per pooled cell side, pooled by roi_pool_mode
    # How a pooled cell is made of its samples: "max" (Fast R-CNN's RoI pooling) or "avg"
    # (RoIAlign's, torchvision's); roi_aligned=False samples as torchvision's
    # MultiScaleRoIAlign(aligned=False) (tfzoo.ops.roi.unaligned_rois), for its weights.
    roi_pool_mode: str = "max"
    roi_aligned: bool = True
    # Logits the class softmax runs over besides the K classes and the background, never a
    # target nor scored (torchvision's COCO head has 10 for unused category ids: dropping
    # them would change every softmax). Laid out [K classes, extra, background].
    extra_logits: int = 0
    head_fc: tuple[int, ...] = (4096, 4096)
    roi_samples: int = 128  # per image
    roi_positive_fraction: float = 0.25  # the seed's 64/64 split: 0.5
    box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1.0  # Fast R-CNN's smooth L1
    max_boxes: int = 100  # ground-truth rows per image in the training batches
    # --- inference ---
    score_threshold: float = 0.05
    nms_iou_threshold: float = 0.3
    max_detections: int = 100
    roi_pre_nms_top_k: int = 1000  # (box, class) pairs kept for the per-class NMS, best first
    # --- the papers' VOC optimizer: 2 images per step, SGD, x0.1 after 3/4 of the images ---
    batch_size: int = 2
    weight_decay: float = 5e-4
    warmup_steps: int = 0
    lr_decay_at: tuple[float, ...] = (0.75,)

    def __post_init__(self):
        super().__post_init__()
        if not self.head_fc:
            raise ValueError("head_fc needs at least one fully connected layer")
        if self.roi_pool_mode not in roi_ops.POOL_MODES:
            raise ValueError(f"roi_pool_mode must be one of {roi_ops.POOL_MODES}, got {self.roi_pool_mode!r}")
        if self.extra_logits < 0:
            raise ValueError(f"extra_logits must be >= 0, got {self.extra_logits}")


@dataclasses.dataclass(frozen=True)
class FasterRCNNConfig(RoIHeadConfig):
    """Faster R-CNN settings; defaults are the paper's VGG-16 model on VOC (20 classes)."""

    name: str = "faster_rcnn"
    image_size: int = 800
    # --- FPN (Lin et al. 2017): P2-P6 from C2-C5, one anchor size per level ---
    fpn: bool = False
    fpn_channels: int = 256
    min_level: int = 2
    max_level: int = 6
    roi_levels: tuple[int, ...] = (2, 5)  # the levels RoIs are pooled from, k0 = 4 at 224 px
    # --- anchors (the seed's table: base 16, ratios x scales) ---
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_scales: tuple[float, ...] = (8.0, 16.0, 32.0)
    # "exact" or "torchvision" (its AnchorGenerator's rounding and cell corners, for its
    # weights; tfzoo.ops.anchors.torchvision_multilevel_anchors)
    anchor_style: str = "exact"
    # --- RPN ---
    rpn_channels: int = 512
    rpn_pre_nms_train: int = 12000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 6000
    rpn_post_nms_test: int = 300
    rpn_nms_iou: float = 0.7
    rpn_min_size: float = 0.0  # normalized side under which a proposal is dropped
    rpn_samples: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_straddle: float | None = None  # None: every anchor trains (the paper: 0, inside only)
    smooth_l1_beta: float = 1.0 / 9.0  # the RPN's and the RoI head's
    # --- the paper's recipe (sec. 4.1, VOC07+12: one image per mini-batch, 60k at 1e-3 then
    # 20k at 1e-4): 80k images = 4.8 epochs of 16,551, here 2 images per step at 2e-3 ---
    learning_rate: float = 2e-3
    epochs: int = 5

    def __post_init__(self):
        super().__post_init__()
        if self.fpn and not (2 <= self.min_level <= self.roi_levels[0] <= self.roi_levels[1] <= 5 < self.max_level
                             <= 6):
            raise ValueError(f"FPN levels need 2 <= min_level <= roi_levels <= 5 < max_level <= 6, got "
                             f"{self.min_level}..{self.max_level}, RoIs from {self.roi_levels}")
        if self.anchor_style not in anchor_ops.ANCHOR_STYLES:
            raise ValueError(f"anchor_style must be one of {anchor_ops.ANCHOR_STYLES}, got {self.anchor_style!r}")
        if not self.fpn and (self.rpn_post_nms_test > self.rpn_pre_nms_test
                             or self.rpn_post_nms_train > self.rpn_pre_nms_train):
            raise ValueError("the RPN keeps at most as many proposals after NMS as before it")

    @property
    def num_anchors(self):
        return len(self.anchor_ratios) * len(self.anchor_scales)

    @property
    def levels(self):
        """The pyramid levels the RPN runs on: ``(4,)`` (stride 16) without FPN."""
        return tuple(range(self.min_level, self.max_level + 1)) if self.fpn else (4,)


#: What the two CPU presets share: tfzoo's ResNet-10 at half width from random weights at
#: 320, a 256 x 256 head, 64 RoIs per image, the CPU recipe.
MOBILE = dict(image_size=320, backbone="resnet10", backbone_weights=None, backbone_alpha=0.5, head_fc=(256, 256),
              roi_samples=64, **SCRATCH_RECIPE)

PRESETS = {
    "faster_rcnn": FasterRCNNConfig(),
    "faster_rcnn_mobile": FasterRCNNConfig(
        name="faster_rcnn_mobile",
        anchor_scales=(2.0, 4.0, 8.0, 16.0),  # 32 to 256 px at 320
        rpn_channels=128,
        rpn_pre_nms_train=1000,
        rpn_post_nms_train=300,
        rpn_pre_nms_test=500,
        rpn_post_nms_test=100,
        **MOBILE,
    ),
    # Lin et al. 2017: ResNet-50 + FPN P2-P6 (256 channels), anchors of 32 ... 512 px (one
    # size per level) x 3 ratios, 2,000 proposals per level -> 2,000 in training and 1,000
    # -> 1,000 at test, RoIs pooled from P2-P5 by size, a 2 x 1,024 head, 512 RoIs per image.
    "faster_rcnn_fpn": FasterRCNNConfig(
        name="faster_rcnn_fpn",
        backbone="resnet50",
        fpn=True,
        anchor_scales=(8.0,),
        rpn_channels=256,
        rpn_pre_nms_train=2000,
        rpn_post_nms_train=2000,
        rpn_pre_nms_test=1000,
        rpn_post_nms_test=1000,
        head_fc=(1024, 1024),
        roi_samples=512,
        weight_decay=1e-4,
        learning_rate=0.02,
        batch_size=16,
        warmup_steps=500,
        epochs=12,
        lr_decay_at=(2.0 / 3.0, 8.0 / 9.0),
    ),
    "faster_rcnn_fpn_mobile": FasterRCNNConfig(
        name="faster_rcnn_fpn_mobile",
        fpn=True,
        fpn_channels=64,
        anchor_scales=(8.0,),  # 32 (P2) ... 512 (P6) px
        rpn_channels=64,
        rpn_pre_nms_train=500,
        rpn_post_nms_train=300,
        rpn_pre_nms_test=250,
        rpn_post_nms_test=100,
        **MOBILE,
    ),
}


@keras.saving.register_keras_serializable(package="tfzoo")
class ProposalLayer(keras.layers.Layer):
    """The RPN's test-time proposals (:func:`tfzoo.ops.proposals.generate_proposals`) of
    ``(objectness [B, A], deltas [B, A, 4])`` over the anchors of maps ``map_sizes`` with
    ``strides`` (one per level, NMS within each): ``[B, post_nms, 4]`` float32, computed in
    float32 under :func:`float_section`."""

    def __init__(self, map_sizes, image_size, strides, ratios, scales, pre_nms, post_nms, nms_iou, min_size,
                 anchor_style="exact", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.map_sizes = tuple(tuple(int(d) for d in size) for size in map_sizes)
        self.image_size = int(image_size)
        self.strides = tuple(int(s) for s in strides)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = tuple(float(s) for s in scales)
        self.pre_nms, self.post_nms = int(pre_nms), int(post_nms)
        self.nms_iou, self.min_size = float(nms_iou), float(min_size)
        self.anchor_style = anchor_style
        per_level = [anchors_of(size, self.image_size, stride, self.ratios, self.scales, anchor_style)
                     for size, stride in zip(self.map_sizes, self.strides)]
        self.level_sizes = tuple(len(a) for a in per_level)
        self.anchors = np.concatenate(per_level)

    def call(self, objectness, deltas):
        with float_section():
            boxes, _, _ = proposal_ops.generate_proposals(
                float_barrier(objectness), float_barrier(deltas), self.anchors, self.level_sizes,
                pre_nms_top_k=self.pre_nms, post_nms_top_n=self.post_nms, iou_threshold=self.nms_iou,
                min_size=self.min_size)
        return boxes

    def compute_output_shape(self, objectness_shape, deltas_shape):
        return (objectness_shape[0], self.post_nms, 4)

    def get_config(self):
        return {**super().get_config(), "map_sizes": self.map_sizes, "image_size": self.image_size,
                "strides": self.strides, "ratios": self.ratios, "scales": self.scales, "pre_nms": self.pre_nms,
                "post_nms": self.post_nms, "nms_iou": self.nms_iou, "min_size": self.min_size,
                "anchor_style": self.anchor_style}


@keras.saving.register_keras_serializable(package="tfzoo")
class RoIPool(keras.layers.Layer):
    """Fast R-CNN's RoI max pooling of ``rois [B, R, 4]`` to ``[B, R, size, size, C]``
    (:mod:`tfzoo.ops.roi`) on one map ``[B, H, W, C]`` or, given a list of pyramid maps
    (levels ``levels[0]`` to ``levels[1]``), each RoI on its own level (FPN's rule,
    :func:`tfzoo.ops.roi.fpn_levels` at ``image_size``, plus ``level_eps`` as torchvision
    and Detectron2 add): ``crop_and_resize``, or the builtin-only crop when traced for a
    TFLite file (:func:`tfzoo.ops.roi.builtin_crops`; the same numbers, slower in
    TensorFlow). ``mode="avg"`` averages each cell's samples (RoIAlign) instead of taking
    their max; ``aligned=False`` samples where RoIAlign's ``aligned=False`` does
    (:func:`tfzoo.ops.roi.unaligned_rois`)."""

    def __init__(self, size=7, sampling_ratio=2, image_size=None, levels=None, mode="max", aligned=True,
                 level_eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.size, self.sampling_ratio = int(size), int(sampling_ratio)
        self.image_size = None if image_size is None else int(image_size)
        self.levels = None if levels is None else tuple(int(level) for level in levels)
        if mode not in roi_ops.POOL_MODES:
            raise ValueError(f"mode must be one of {roi_ops.POOL_MODES}, got {mode!r}")
        self.mode, self.aligned, self.level_eps = mode, bool(aligned), float(level_eps)

    def _where(self, maps, rois):
        """``(rois, levels)``: each RoI's level index (0 with one map) and, for ``aligned=False``,
        the RoIs moved to RoIAlign's unaligned sample points (:func:`tfzoo.ops.roi.unaligned_rois`)."""
        if len(maps) > 1:
            levels = roi_ops.fpn_levels(rois, self.image_size, self.levels[0], self.levels[1],
                                        eps=self.level_eps) - self.levels[0]
        else:
            levels = tf.zeros_like(rois[..., 0], tf.int32)
        if not self.aligned:
            rois = roi_ops.unaligned_rois(rois, roi_ops.static_map_sizes(maps), levels)
        return rois, levels

    def call(self, features, rois, training=None):
        if roi_ops.use_builtin_crops():
            return self._builtin(features, rois)
        size = (self.size, self.size)
        maps = list(features) if isinstance(features, (list, tuple)) else [features]
        # Box coordinates and the sampling positions derived from them stay float32 in an
        # int8 export (on an int8 grid a RoI moves by up to a cell).
        with float_section():
            rois = float_barrier(rois)
            if len(maps) > 1:
                rois, levels = self._where(maps, rois)
                crops = roi_ops.multilevel_roi_pool([float_barrier(f) for f in maps], rois, levels, size,
                                                    self.sampling_ratio, mode=self.mode)
            else:
                if not self.aligned:
                    rois, _ = self._where(maps, rois)
                crops = roi_ops.roi_pool(float_barrier(maps[0]), rois, size, self.sampling_ratio, mode=self.mode)
            crops = float_exit(crops)
        return tf.cast(crops, self.compute_dtype)

    def _builtin(self, features, rois):
        """The TFLite crop: where to read (RoI levels, sample rows, bilinear weights) in
        float32 under :func:`float_section`; the table of feature rows, its gathers and the
        weighted sums and max pooling outside it, so that an int8 export runs them in int8
        (the weights enter the int8 part through :func:`float_exit`)."""
        maps = list(features) if isinstance(features, (list, tuple)) else [features]
        side = self.size * self.sampling_ratio
        with float_section():
            rois, levels = self._where(maps, float_barrier(rois))
            indices, weights = roi_ops.level_crop_plan(roi_ops.static_map_sizes(maps), rois, levels, (side, side))
            weights = [float_exit(w) for w in weights]
        crops = roi_ops.read_crop_plan(roi_ops.level_table(maps), indices, weights)
        batch, num_rois, channels = tf.shape(rois)[0], tf.shape(rois)[1], maps[0].shape[-1]
        crops = tf.reshape(crops, [batch * num_rois, side, side, channels])
        pooled = roi_ops.max_pool_crops(crops, batch, num_rois, self.size, self.size, self.sampling_ratio, self.mode)
        return tf.cast(pooled, self.compute_dtype)

    def compute_output_shape(self, features_shape, rois_shape):
        first = features_shape[0] if self.levels else features_shape  # a list of maps' shapes with FPN
        return (rois_shape[0], rois_shape[1], self.size, self.size, first[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "sampling_ratio": self.sampling_ratio,
                "image_size": self.image_size, "levels": self.levels, "mode": self.mode, "aligned": self.aligned,
                "level_eps": self.level_eps}


@keras.saving.register_keras_serializable(package="tfzoo")
class SPPPool(keras.layers.Layer):
    """SPP-Net's pooling of each RoI's window (He et al. 2014, sec. 4): ``rois [B, R, 4]``
    on ``features [B, H, W, C]`` -> ``[B, R, C * sum(n * n)]``, the window cropped to a
    ``grid x grid`` map and max-pooled into the pyramid ``levels`` with the seed's window and
    stride rule (:func:`tfzoo.ops.roi.roi_spatial_pyramid_pool`); ``crop_and_resize``, or the
    builtin-only crop when traced for a TFLite file. Float32 under :func:`float_section`
    (an int8 export quantizes the pooled vectors only)."""

    def __init__(self, levels=(6, 3, 2, 1), grid=13, scales=(), **kwargs):
        super().__init__(**kwargs)
        self.levels = tuple(int(n) for n in levels)
        self.grid = int(grid)
        self.scales = tuple(int(s) for s in scales)

    def call(self, features, rois):
        """``features``: one map, or with ``scales`` one map per scale (the image resized to
        ``scales[i]`` a side): each RoI is pooled from the scale where its window is closest
        to 224 x 224 pixels (the paper's multi-scale test, :func:`closest_scale`)."""
        maps = list(features) if isinstance(features, (list, tuple)) else [features]
        with float_section():
            rois = float_barrier(rois)
            pooled = [roi_ops.roi_spatial_pyramid_pool(float_barrier(m), rois, self.levels, self.grid,
                                                       builtin=roi_ops.use_builtin_crops()) for m in maps]
            if len(pooled) > 1:
                chosen = closest_scale(rois, self.scales)  # [B, R]
                pooled = tf.gather(tf.stack(pooled, axis=2), chosen, batch_dims=2)  # [B, R, S, D] -> [B, R, D]
            else:
                pooled = pooled[0]
            pooled = float_exit(pooled)
        return tf.cast(pooled, self.compute_dtype)

    def compute_output_shape(self, features_shape, rois_shape):
        first = features_shape[0] if isinstance(features_shape, (list, tuple)) and isinstance(
            features_shape[0], (list, tuple)) else features_shape
        return (rois_shape[0], rois_shape[1], first[-1] * sum(n * n for n in self.levels))

    def get_config(self):
        return {**super().get_config(), "levels": self.levels, "grid": self.grid, "scales": self.scales}


def closest_scale(rois, scales, pixels=224.0 * 224.0):
    """int32 ``[B, R]``: for each normalized RoI ``[B, R, 4]``, the index of the scale (an
    image side in pixels, of ``scales``) at which its window has the number of pixels
    closest to ``pixels`` (SPP-Net's multi-scale test, He et al. 2014, sec. 4: 224 x 224)."""
    area = tf.maximum(rois[..., 2] - rois[..., 0], 0.0) * tf.maximum(rois[..., 3] - rois[..., 1], 0.0)
    sides = tf.constant([float(s) ** 2 for s in scales], tf.float32)
    return tf.cast(tf.argmin(tf.abs(area[..., None] * sides - pixels), axis=-1), tf.int32)


def anchors_of(map_size, image_size, stride, ratios, scales, style="exact"):
    """float32 ``[H * W * A, 4]`` normalized RPN anchors of a ``map_size`` map (the seed's
    table on base ``stride``, tiled by :func:`tfzoo.ops.anchors.grid_anchors`; ``style=
    "torchvision"``: sizes ``stride * scale`` laid out as torchvision's AnchorGenerator,
    :func:`tfzoo.ops.anchors.torchvision_multilevel_anchors`)."""
    if style == "torchvision":
        level = int(round(math.log2(stride)))
        anchors = anchor_ops.torchvision_multilevel_anchors(image_size, [[stride * s for s in scales]], ratios, level)
        if len(anchors) != map_size[0] * map_size[1] * len(ratios) * len(scales):
            raise ValueError(f"torchvision's anchors need the {map_size} map of a {image_size}-px input at stride "
                             f"{stride} to have ceil(size / stride) cells")
        return np.asarray(anchors, np.float32)
    base = anchor_ops.anchor_base(stride, ratios, scales)
    anchors_px = anchor_ops.grid_anchors(map_size[0], map_size[1], stride, base)
    return np.asarray(box_ops.normalize(anchors_px, image_size, image_size), np.float32)


class FasterRCNNEncoder(Encoder):
    """tf.data targets: the RPN's anchor matches (``rpn_matches [A]``: class id, -1
    background, -2 no loss; ``rpn_deltas [A, 4]``) and the padded ground truth the RoI
    sampler reads (``boxes [G, 4]``, ``classes [G]`` and ``gt_ignore [G]``: 1 for a crowd
    or difficult box, else 0)."""

    keep_aspect_ratio = True
    xla_targets = True

    def __init__(self, config, anchors):
        self.config = config
        self.image_size = (config.image_size, config.image_size)
        self.augment = config.augment
        self.flip = config.flip
        self.anchors = tf.constant(anchors, tf.float32)

    def box_targets(self, ground_truth):
        config = self.config
        matched, deltas = proposal_ops.rpn_matches(
            self.anchors, ground_truth[schema.BOXES], ground_truth[schema.CLASSES],
            ground_truth[schema.IS_CROWD] | ground_truth[schema.DIFFICULT], straddle=config.rpn_straddle)
        return {RPN_MATCHES: matched, RPN_DELTAS: deltas}

    def targets(self, example):
        targets = super().targets(example)
        truth = pad_ground_truth(example, self.config.max_boxes)
        targets.update({schema.BOXES: truth[schema.BOXES], schema.CLASSES: truth[schema.CLASSES],
                        GT_IGNORE: tf.cast(truth[schema.IS_CROWD] | truth[schema.DIFFICULT], tf.int32)})
        return targets


@keras.saving.register_keras_serializable(package="tfzoo")
class FasterRCNN(Detector):
    """Faster R-CNN as a functional Keras model (see the module doc and :mod:`tfzoo.models.base`)."""

    config_class = FasterRCNNConfig
    family = "Faster R-CNN"
    kind = "two-stage"
    presets = PRESETS
    cpu_presets = ("faster_rcnn_mobile", "faster_rcnn_fpn_mobile")
    loss_names = ("rpn_cls_loss", "rpn_box_loss", "roi_cls_loss", "roi_box_loss")
    box_loss_names = ("rpn_box_loss", "roi_box_loss")
    pre_nms_outputs = (RPN_OBJECTNESS, RPN_DELTAS)
    tiny = {"image_size": 64, "num_classes": 3, "backbone": "resnet10", "backbone_weights": None,
            "backbone_alpha": 0.25, "anchor_scales": (2.0, 4.0), "rpn_channels": 16, "rpn_pre_nms_train": 64,
            "rpn_post_nms_train": 32, "rpn_pre_nms_test": 32, "rpn_post_nms_test": 16, "head_fc": (32,),
            "roi_samples": 16, "roi_size": 3, "max_boxes": 8}

    @classmethod
    def create(cls, config):
        size = config.image_size
        feature_names = ("C2", "C3", "C4", "C5") if config.fpn else (config.feature,)
        with layers.dtype_policy(config.backbone_dtype):
            trunk = backbones.build_backbone(config.backbone, size, config.backbone_weights, config.backbone_alpha,
                                             batchnorm_momentum=config.batchnorm_momentum, features=feature_names)
            normalize = layers.ImageNormalization(backbones.PREPROCESSING[config.backbone], name="normalize")
        images = keras.Input((size, size, 3), name="images")
        maps = trunk(normalize(images))
        if config.fpn:
            rpn_maps = layers.fpn([maps[name] for name in feature_names], config.fpn_channels, config.min_level,
                                  config.max_level, extra="pool")
            first, last = config.roi_levels
            roi_maps = rpn_maps[first - config.min_level:last - config.min_level + 1]
            feature_keys = tuple(f"{RPN_FEATURES}_p{level}" for level in range(first, last + 1))
        else:
            rpn_maps = roi_maps = [maps[config.feature]]
            feature_keys = (RPN_FEATURES,)
        strides = tuple(2 ** level for level in config.levels)
        map_sizes = tuple((int(m.shape[1]), int(m.shape[2])) for m in rpn_maps)
        objectness, deltas = layers.rpn_head(rpn_maps, config.num_anchors, config.rpn_channels, name="rpn")
        proposal_layer = ProposalLayer(map_sizes, size, strides, config.anchor_ratios, config.anchor_scales,
                                       config.rpn_pre_nms_test, config.rpn_post_nms_test, config.rpn_nms_iou,
                                       config.rpn_min_size, anchor_style=config.anchor_style, name="proposal")
        proposals = proposal_layer(objectness, deltas)
        class_logits, box_deltas = _roi_head(roi_maps, proposals, config)
        features = dict(zip(feature_keys, roi_maps))
        outputs = {RPN_OBJECTNESS: objectness, RPN_DELTAS: deltas, **features, PROPOSALS: proposals,
                   CLASS_LOGITS: class_logits, BOX_DELTAS: box_deltas}
        model = cls(images, outputs, config, name=config.name)
        model.map_sizes = map_sizes
        model.anchors = proposal_layer.anchors
        model.level_sizes = proposal_layer.level_sizes
        model.feature_keys = feature_keys
        # The training forward pass (the graph up to the RPN) and the RoI head on sampled
        # RoIs share these layers; kept out of Keras' attribute tracking (no second copy of
        # the weights in the saved file).
        model.__dict__["_trunk"] = keras.Model(images, {RPN_OBJECTNESS: objectness, RPN_DELTAS: deltas, **features})
        model.__dict__["_head"] = None
        if config.backbone == "vgg16" and config.backbone_weights == "imagenet" and _vgg16_head_fits(config):
            from tfzoo.backbones.applications import _application  # noqa: PLC0415

            load_vgg16_head(model, _application("VGG16", "imagenet", None, include_top=True))
        return model

    def _roi_head_model(self, any_count=False):
        """The RoI head on ``(features..., rois [B, roi_samples, 4])`` (``any_count``: on any
        number of RoIs, e.g. another detector's proposals): the graph's layers."""
        slot = "_head_any" if any_count else "_head"
        if self.__dict__.get(slot) is None:
            trunk = self.__dict__["_trunk"]
            features = [keras.Input(trunk.output[key].shape[1:], name=key) for key in self.feature_keys]
            rois = keras.Input((None if any_count else self.config.roi_samples, 4), name="rois")
            self.__dict__[slot] = keras.Model([*features, rois], _roi_head(features, rois, self.config, model=self))
        return self.__dict__[slot]

    def make_encoder(self):
        return FasterRCNNEncoder(self.config, self.anchors)

    def call(self, inputs, training=None, mask=None):
        if training:  # fit: the RoI head runs in compute_losses, on RoIs sampled with the ground truth
            return self.__dict__["_trunk"](inputs, training=True)
        return super().call(inputs, training=training, mask=mask)

    def compute_losses(self, targets, outputs):
        config = self.config
        # --- RPN: 256 anchors per image, up to half positive ---
        labels = proposal_ops.rpn_sample(targets[RPN_MATCHES], num_samples=config.rpn_samples,
                                         positive_fraction=config.rpn_positive_fraction)  # [B, A]
        sampled = tf.cast(labels != proposal_ops.RPN_UNSAMPLED, tf.float32)
        positive = tf.cast(labels == proposal_ops.RPN_POSITIVE, tf.float32)
        rpn_normalizer = tf.maximum(replica_sum(tf.reduce_sum(sampled)), 1.0)
        rpn_cls = loss_ops.sigmoid_cross_entropy(positive, outputs[RPN_OBJECTNESS], weights=sampled)
        rpn_box = loss_ops.smooth_l1(targets[RPN_DELTAS], outputs[RPN_DELTAS], config.smooth_l1_beta,
                                     weights=positive)
        # --- proposals (training settings, no gradient), then 128 sampled RoIs per image ---
        with float_section():
            proposals, _, num_proposals = proposal_ops.generate_proposals(
                outputs[RPN_OBJECTNESS], outputs[RPN_DELTAS], self.anchors, self.level_sizes,
                pre_nms_top_k=config.rpn_pre_nms_train,
                post_nms_top_n=config.rpn_post_nms_train, iou_threshold=config.rpn_nms_iou,
                min_size=config.rpn_min_size)
        roi_losses = roi_head_losses(self._roi_head_model(), [outputs[key] for key in self.feature_keys], proposals,
                                     num_proposals, targets, config)
        return {"rpn_cls_loss": tf.reduce_sum(rpn_cls) / rpn_normalizer,
                "rpn_box_loss": tf.reduce_sum(rpn_box) / rpn_normalizer, **roi_losses}

    def decode(self, outputs):
        return decode_roi_detections(outputs, self.config)


def roi_head_losses(head, features, proposals, num_proposals, targets, config, matcher=matcher_ops.FAST_RCNN):
    """The second stage's loss terms of one batch: ``config.roi_samples`` RoIs per image
    sampled among the ``proposals [B, N, 4]`` (the first ``num_proposals [B]`` valid) and the
    ground truth of ``targets`` (``boxes``, ``classes``, ``gt_ignore``) at
    ``config.roi_positive_fraction`` foreground by ``matcher``, run through ``head``
    (``[*features, rois] -> (class_logits, box_deltas)``, or ``class_logits`` alone);
    ``roi_cls_loss`` (softmax cross-entropy) and, where the head has box deltas,
    ``roi_box_loss`` (smooth L1, ``config.smooth_l1_beta``, on the true class's deltas),
    each summed over the sampled RoIs of all replicas and divided by their number."""
    rois = proposal_ops.roi_targets(
        proposals, num_proposals, targets[schema.BOXES], targets[schema.CLASSES],
        num_samples=config.roi_samples, positive_fraction=config.roi_positive_fraction,
        box_weights=config.box_weights, matcher=matcher, gt_ignore=targets[GT_IGNORE] > 0)
    predictions = head([*features, rois["rois"]], training=True)
    class_logits, box_deltas = predictions if isinstance(predictions, (tuple, list)) else (predictions, None)
    roi_classes = rois["classes"]  # [B, S]: class, BACKGROUND, IGNORE (padding)
    valid = tf.cast(roi_classes != matcher_ops.IGNORE, tf.float32)
    normalizer = tf.maximum(replica_sum(tf.reduce_sum(valid)), 1.0)
    roi_cls = loss_ops.softmax_cross_entropy_with_ignore(roi_classes, class_logits)
    losses = {"roi_cls_loss": tf.reduce_sum(roi_cls) / normalizer}
    if box_deltas is not None:
        per_class = tf.reshape(tf.cast(box_deltas, tf.float32),
                               [tf.shape(box_deltas)[0], -1, config.num_classes, 4])  # [B, S, K, 4]
        chosen = tf.gather(per_class, tf.maximum(roi_classes, 0), batch_dims=2)  # [B, S, 4]
        roi_box = loss_ops.smooth_l1(rois["box_deltas"], chosen, config.smooth_l1_beta,
                                     weights=tf.cast(roi_classes >= 0, tf.float32))
        losses["roi_box_loss"] = tf.reduce_sum(roi_box) / normalizer
    return losses


def decode_roi_detections(outputs, config):
    """Detections of a RoI head's raw outputs (``proposals [B, R, 4]``, ``class_logits [B, R,
    K + extra + 1]`` with background last (the first K scored), or ``class_scores [B, R, K]`` where the model has them,
    ``box_deltas [B, R, 4 K]``): each proposal's softmax (or given)
    scores and class-specific boxes (coder weights ``config.box_weights``), then the shared
    per-class NMS (``config.nms_iou_threshold``, ``score_threshold``, ``max_detections``).
    Padding proposals (zero boxes) decode to empty boxes, which NMS never keeps."""
    proposals = float_barrier(outputs[PROPOSALS])  # [B, R, 4]
    if CLASS_SCORES in outputs:  # R-CNN, SPP-Net: the SVMs' (or the softmax's) per-class scores
        scores = float_barrier(outputs[CLASS_SCORES])  # [B, R, K]
    else:
        logits = float_barrier(outputs[CLASS_LOGITS])  # [B, R, K + extra + 1], background last
        scores = tf.exp(logits[..., :config.num_classes]
                        - tf.reduce_logsumexp(logits, axis=-1, keepdims=True))  # [B, R, K]
    deltas = tf.reshape(float_barrier(outputs[BOX_DELTAS]),
                        [tf.shape(proposals)[0], -1, config.num_classes, 4])  # [B, R, K, 4]
    boxes = box_ops.clip(box_coder.decode(deltas, proposals[:, :, None, :], config.box_weights))
    boxes = tf.where(box_ops.valid_mask(proposals)[..., None, None], boxes, 0.0)
    return nms_ops.multiclass_nms(boxes, scores, max_detections=config.max_detections,
                                  iou_threshold=config.nms_iou_threshold, score_threshold=config.score_threshold,
                                  pre_nms_top_k=max(getattr(config, "roi_pre_nms_top_k", 1000), config.max_detections))


def _vgg16_head_fits(config):
    """Whether the RoI head has VGG-16's fully connected layers' shapes (7 x 7 x 512 in, 4,096 x 2):
    not with SPP-Net's pyramid (50 bins in) nor a factorized head."""
    return (config.roi_size == 7 and tuple(config.head_fc) == (4096, 4096)
            and not getattr(config, "spp_levels", ()) and not any(getattr(config, "head_svd", ())))


def load_vgg16_head(detector, classifier):
    """Copies a ``keras.applications.VGG16(include_top=True)`` ``classifier``'s fc1 and fc2
    (the paper's fc6 and fc7) into the RoI head's two fully connected layers, as the paper
    initializes them. The RoI pool replaces pool5: both give 7 x 7 x 512, flattened by
    height, width and channel alike."""
    for ours, theirs in (("roi_fc0", "fc1"), ("roi_fc1", "fc2")):
        detector.get_layer(ours).set_weights(classifier.get_layer(theirs).get_weights())


def _roi_head(features, rois, config, model=None, return_features=False):
    """RoI pooling, the fully connected layers and the two predictors, on ``rois`` over the
    ``features`` maps (one, or FPN's levels ``config.roi_levels``): new layers
    (``model=None``) or ``model``'s (the same weights on another graph). ``(class_logits,
    box_deltas)``, with ``return_features`` also the pooled vectors ``[B, R, D]`` (pool5)
    and the last fully connected layer's ``[B, R, F]`` (fc7)."""
    def layer(name, make):
        return model.get_layer(name) if model is not None else make()

    features = list(features)
    fpn = getattr(config, "fpn", False)  # Fast R-CNN's config has no pyramid
    spp_levels = tuple(getattr(config, "spp_levels", ()))  # SPP-Net's pyramid instead of the 7 x 7 grid
    if spp_levels:
        pool = layer("roi_pool", lambda: SPPPool(spp_levels, config.spp_grid, getattr(config, "test_scales", ()),
                                                 name="roi_pool"))
        width = sum(n * n for n in spp_levels) * int(features[0].shape[-1])
    else:
        pool = layer("roi_pool", lambda: RoIPool(config.roi_size, config.roi_sampling_ratio, config.image_size,
                                                 config.roi_levels if fpn else None, mode=config.roi_pool_mode,
                                                 aligned=config.roi_aligned, name="roi_pool"))
        width = config.roi_size * config.roi_size * int(features[0].shape[-1])
    x = pool(features if fpn or len(features) > 1 else features[0], rois)  # FPN's levels, SPP-Net's scales
    x = pooled = layer("roi_flatten", lambda: keras.layers.Reshape((-1, width), name="roi_flatten"))(x)  # [B, R, D]
    ranks = tuple(getattr(config, "head_svd", ()))  # Fast R-CNN's truncated SVD (fast_rcnn.truncated_svd)
    for i, units in enumerate(config.head_fc):
        if i < len(ranks) and ranks[i]:  # W ~ (U_t S_t) V_t: a linear layer of rank t, then V_t with the bias
            x = layer(f"roi_fc{i}_svd", lambda i=i: keras.layers.Dense(ranks[i], use_bias=False,
                                                                       name=f"roi_fc{i}_svd"))(x)
        x = layer(f"roi_fc{i}", lambda units=units, i=i: keras.layers.Dense(units, activation="relu",
                                                                              name=f"roi_fc{i}"))(x)
    # The paper's initialization of the predictors: N(0, 0.01) and N(0, 0.001).
    class_logits = layer("roi_class", lambda: keras.layers.Dense(
        config.num_classes + config.extra_logits + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        dtype="float32", name="roi_class"))(x)
    box_deltas = layer("roi_box", lambda: keras.layers.Dense(
        4 * config.num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), dtype="float32",
        name="roi_box"))(x)
    if return_features:
        return class_logits, box_deltas, pooled, x
    return class_logits, box_deltas
