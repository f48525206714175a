"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection").

Backbone C3-C5 -> FPN P3-P7 (P6, P7 by stride-2 convs, ReLU before P7) -> two heads shared
across levels (4 x (3x3 conv + ReLU) + output conv): ``A * K`` sigmoid logits with the
prior bias ``-log((1 - 0.01) / 0.01)`` and ``A * 4`` box deltas. Anchors: 9 per location,
sizes ``anchor_scale * stride * 2**(k/3)``, ratios 0.5/1/2 (76,725 at 640x640).

Training targets are encoded in tf.data (:class:`RetinaNetEncoder`) with the shared IoU
matcher (>= 0.5 positive, < 0.4 background, ignored between); the loss is the focal loss
(alpha 0.25, gamma 2) plus smooth L1, both divided by the number of positive anchors of
the batch (at least 1). Inference keeps scores above 0.05, the top 1,000 per level, then
per-class NMS at IoU 0.5 and 100 detections, all TFLite builtins.

Presets: ``retinanet`` (ResNet-50, 640, the paper), ``retinanet_r101`` and
``retinanet_mobile`` (a basic-block ResNet-10 at half width, narrow GroupNorm heads,
320: a CPU preset that trains from random weights. The ResNet-10 (0.87 GFLOP, 1.2 M
parameters at 320) has twice MobileNetV2-0.5's arithmetic (0.39 GFLOP, 0.7 M), but its
dense convolutions use a CPU so much better than depthwise ones that the model's training
pass runs 1.8x faster, and ``--minutes`` holds 1.6x the epochs. Anchors are half the
paper's size relative to the stride (16 px at
P3, so objects down to ~12 px of a 320 input are matched), low-quality matches, a softmax
cross-entropy over the classes of each positive anchor beside the focal loss
(``class_ce_weight``), and the shared from-scratch recipe
(:data:`tfzoo.models.base.SCRATCH_RECIPE`: scale jitter, AdamW with a cosine schedule);
GroupNorm in the heads makes training from random initialization converge in a few
epochs). Its head convs are separable (depthwise 3x3 + 1x1, as SSDLite's): with 80
classes its plain 3x3 class output conv cost 2.7 GFLOP at
320 px, 3 times the backbone's 0.87; separable it costs 0.3 GFLOP (BENCHMARKS.md has
what that did to each format's latency).

Shape legend: B batch, A anchors, G ground truth, K classes, L levels, M detections.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from tfzoo import backbones, layers
from tfzoo.data import schema
from tfzoo.data.pipeline import Encoder
from tfzoo.models.base import SCRATCH_RECIPE, Detector, DetectorConfig, replica_sum
from tfzoo.ops import anchors as anchor_ops
from tfzoo.ops import box_coder
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import losses as loss_ops
from tfzoo.ops import matcher as matcher_ops
from tfzoo.ops import nms as nms_ops

#: Keys of the raw head outputs and of the encoded targets.
BOX_DELTAS = "box_deltas"
CLASS_LOGITS = "class_logits"
CLASSES = "classes"


@dataclasses.dataclass(frozen=True)
class RetinaNetConfig(DetectorConfig):
    """RetinaNet settings; defaults are the paper's (ResNet-50-FPN, 640, COCO). The shared
    fields (name, classes, image size, backbone, the training recipe) are
    :class:`~tfzoo.models.base.DetectorConfig`'s."""

    name: str = "retinanet"
    min_level: int = 3
    max_level: int = 7
    fpn_channels: int = 256
    head_channels: int = 256
    head_convs: int = 4
    head_norm: str = "none"  # "group": GroupNorm in the head convs (for training from scratch)
    head_separable: bool = False  # depthwise 3x3 + 1x1 instead of each 3x3 head conv (SSDLite-style)
    prior_probability: float = 0.01
    # Where P6 comes from: "c5" (the paper) or "p5" (torchvision's retinanet_resnet50_fpn).
    p6_input: str = "c5"
    # P6 and P7's stride-2 convolutions pad one pixel on every side (PyTorch's padding=1)
    # rather than Keras' "same" (bottom and right of an even side): for converted weights.
    symmetric_padding: bool = False
    # --- anchors and matching ---
    # "exact": sizes anchor_scale * 2**l * 2**(k/3), scale-major, centred on the cells;
    # "torchvision": its AnchorGenerator's (integer sizes, ratio-major, half extents rounded,
    # centred on the cells' corners), for its weights (tfzoo.ops.anchors).
    anchor_style: str = "exact"
    anchor_scale: float = 4.0
    scales_per_octave: int = 3
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    box_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    negative_iou: float = 0.4
    positive_iou: float = 0.5
    allow_low_quality_matches: bool = False
    # --- loss ---
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 0.1
    box_loss_weight: float = 1.0
    # Weight of an auxiliary softmax cross-entropy over the K class logits of each positive
    # anchor (0: the paper's focal loss alone). The focal loss weighs a wrong class's score
    # at an object by (1 - alpha) p**gamma: at 0.2 that is 0.03 of a full gradient, so the
    # classes are told apart slowly while objects are already found. Trained from random
    # initialization on glyphs that differ by shape alone, weight 1 raised train-sample
    # AP50 from 0.34 to 0.59 and val AP50 from 0.18 to 0.26 at the same 888 steps
    # (BENCHMARKS.md, "Classes that differ by shape alone"). Scores stay sigmoids.
    class_ce_weight: float = 0.0
    # --- inference ---
    score_threshold: float = 0.05
    pre_nms_top_k: int = 1000
    nms_iou_threshold: float = 0.5
    max_detections: int = 100
    def __post_init__(self):
        super().__post_init__()
        if not self.min_level <= self.max_level:
            raise ValueError("min_level must not exceed max_level")
        if self.p6_input not in ("c5", "p5"):
            raise ValueError(f"p6_input must be 'c5' or 'p5', got {self.p6_input!r}")
        if self.anchor_style not in anchor_ops.ANCHOR_STYLES:
            raise ValueError(f"anchor_style must be one of {anchor_ops.ANCHOR_STYLES}, got {self.anchor_style!r}")

    @property
    def num_anchors(self):
        """Anchors per location (scales x ratios)."""
        return self.scales_per_octave * len(self.aspect_ratios)


def anchors_for(config):
    """``[A, 4]`` normalized anchors of ``config`` (finest level first)."""
    if config.anchor_style == "torchvision":
        sizes = anchor_ops.torchvision_sizes(config.min_level, config.max_level, config.anchor_scale,
                                             config.scales_per_octave)
        return anchor_ops.torchvision_multilevel_anchors(config.image_size, sizes, config.aspect_ratios,
                                                         config.min_level)
    return anchor_ops.multilevel_anchors(
        config.image_size, config.min_level, config.max_level, config.anchor_scale,
        config.scales_per_octave, config.aspect_ratios,
    )


def anchors_per_level(config):
    """Anchor counts of each level, in order."""
    sizes = anchor_ops.feature_map_sizes(config.image_size, config.min_level, config.max_level)
    return [h * w * config.num_anchors for h, w in sizes]


class RetinaNetEncoder(Encoder):
    """Per-example targets: ``{"box_deltas": [A, 4], "classes": [A] int32}``.

    ``classes`` holds the matched class for positive anchors, ``BACKGROUND`` (-1) and
    ``IGNORE`` (-2) otherwise. Crowd and difficult boxes never make positives; anchors that
    overlap them by at least ``negative_iou`` are ignored rather than called background.
    """

    keep_aspect_ratio = True
    xla_targets = True  # ~40 elementwise passes over the [A, G] IoU matrix (see Encoder)

    def __init__(self, config, anchors):
        self.config = config
        self.image_size = (config.image_size, config.image_size)
        self.augment = config.augment
        self.flip = config.flip
        self.anchors = tf.convert_to_tensor(anchors, tf.float32)  # [A, 4]
        self.matcher = matcher_ops.Matcher(
            (config.negative_iou, config.positive_iou),
            (matcher_ops.BACKGROUND, matcher_ops.IGNORE, matcher_ops.POSITIVE),
            config.allow_low_quality_matches,
        )

    def box_targets(self, ground_truth):
        classes, deltas = matcher_ops.anchor_targets(
            self.matcher, self.anchors, ground_truth[schema.BOXES], ground_truth[schema.CLASSES],
            ground_truth[schema.IS_CROWD] | ground_truth[schema.DIFFICULT], self.config.box_weights,
            special_iou=self.config.negative_iou)
        return {BOX_DELTAS: deltas, CLASSES: classes}


PRESETS = {
    "retinanet": RetinaNetConfig(),
    "retinanet_r101": RetinaNetConfig(name="retinanet_r101", backbone="resnet101"),
    "retinanet_mobile": RetinaNetConfig(
        name="retinanet_mobile",
        image_size=320,
        backbone="resnet10",  # tfzoo's own: no ImageNet weights, trained from random ones
        backbone_weights=None,
        backbone_alpha=0.5,
        fpn_channels=96,
        head_channels=96,
        head_convs=2,
        head_norm="group",
        head_separable=True,
        anchor_scale=2.0,
        allow_low_quality_matches=True,
        class_ce_weight=1.0,
        **SCRATCH_RECIPE,
    ),
}


@keras.saving.register_keras_serializable(package="tfzoo")
class RetinaNet(Detector):
    """RetinaNet as a functional Keras model (see the module doc and :mod:`tfzoo.models.base`)."""

    config_class = RetinaNetConfig
    family = "RetinaNet"
    kind = "one-stage"
    presets = PRESETS
    cpu_presets = ("retinanet_mobile",)
    loss_names = ("cls_loss", "box_loss")
    box_loss_names = ("box_loss",)
    tiny = {"image_size": 64, "num_classes": 3, "backbone": "resnet10", "backbone_weights": None,
            "backbone_alpha": 0.25, "fpn_channels": 16, "head_channels": 16, "head_convs": 1}

    def __init__(self, inputs, outputs, config, **kwargs):
        super().__init__(inputs, outputs, config, **kwargs)
        self.anchors = anchors_for(config)

    @classmethod
    def create(cls, config):
        size = config.image_size
        # --- layers ---
        with layers.dtype_policy(config.backbone_dtype):
            backbone = backbones.build_backbone(config.backbone, size, config.backbone_weights,
                                                config.backbone_alpha, batchnorm_momentum=config.batchnorm_momentum)
            normalize = layers.ImageNormalization(backbones.PREPROCESSING[config.backbone], name="normalize")
        # --- graph ---
        images = keras.Input((size, size, 3), name="images")
        maps = backbone(normalize(images))  # {"C3": [B, H/8, W/8, C], "C4": ..., "C5": ...}
        pyramid = layers.fpn([maps["C3"], maps["C4"], maps["C5"]], config.fpn_channels, config.min_level,
                             config.max_level, extra_input=config.p6_input,
                             symmetric_padding=config.symmetric_padding)
        box_deltas = layers.dense_head(
            pyramid, 4, config.num_anchors, config.head_channels, config.head_convs, norm=config.head_norm,
            separable=config.head_separable, name="box_head",
        )  # [B, A, 4]
        class_logits = layers.dense_head(
            pyramid, config.num_classes, config.num_anchors, config.head_channels, config.head_convs,
            bias_init=keras.initializers.Constant(loss_ops.prior_bias(config.prior_probability)),
            norm=config.head_norm, separable=config.head_separable, name="class_head",
        )  # [B, A, K]
        outputs = {BOX_DELTAS: box_deltas, CLASS_LOGITS: class_logits}
        return cls(images, outputs, config, name=config.name)

    def make_encoder(self):
        return RetinaNetEncoder(self.config, self.anchors)

    def compute_losses(self, targets, outputs):
        config = self.config
        target_classes = targets[CLASSES]  # [B, A]
        positive = target_classes >= 0
        num_positives = replica_sum(tf.reduce_sum(tf.cast(positive, tf.float32)))
        normalizer = tf.maximum(num_positives, 1.0)
        cls_loss = loss_ops.sigmoid_focal_loss_sum(target_classes, outputs[CLASS_LOGITS], config.focal_alpha,
                                                   config.focal_gamma)
        box_loss = loss_ops.smooth_l1(
            targets[BOX_DELTAS], outputs[BOX_DELTAS], config.smooth_l1_beta, weights=tf.cast(positive, tf.float32)
        )  # [B, A]
        if config.class_ce_weight:
            class_ce = loss_ops.softmax_cross_entropy_with_ignore(
                target_classes, outputs[CLASS_LOGITS], background_logit=False)  # [B, A], 0 off positives
            cls_loss = cls_loss + config.class_ce_weight * tf.reduce_sum(class_ce)
        return {
            "cls_loss": cls_loss / normalizer,
            "box_loss": config.box_loss_weight * tf.reduce_sum(box_loss) / normalizer,
        }

    def decode(self, outputs):
        # Sigmoid first: a float op right after the int8 heads keeps their int8 calibration
        # (a split there narrowed the class head's range in an int8 export). Then the top k
        # pairs per level (nms.top_k_per_level), and only their boxes are decoded.
        config = self.config
        scores = tf.sigmoid(tf.cast(outputs[CLASS_LOGITS], tf.float32))  # [B, A, K]
        top_scores, anchor_idx, class_idx = nms_ops.top_k_per_level(
            tf.split(scores, anchors_per_level(config), axis=1), config.pre_nms_top_k)  # [B, P]
        deltas = tf.gather(tf.cast(outputs[BOX_DELTAS], tf.float32), anchor_idx, batch_dims=1)  # [B, P, 4]
        anchors = tf.gather(tf.cast(self.anchors, tf.float32), anchor_idx)  # [B, P, 4]
        boxes = box_ops.clip(box_coder.decode(deltas, anchors, config.box_weights))
        return nms_ops.nms_candidates(
            boxes, top_scores, class_idx, config.num_classes, max_detections=config.max_detections,
            iou_threshold=config.nms_iou_threshold, score_threshold=config.score_threshold,
        )
