"""SSD: Single Shot MultiBox Detector (Liu et al. 2016).

A base network, extra layers that halve the resolution, and on each of the resulting maps
a 3x3 convolution predicting, for every default box of every location, K + 1 class logits
(background last) and 4 box deltas. Default boxes (:func:`tfzoo.ops.anchors.ssd_default_boxes`)
have scales from 0.2 to 0.9 over the maps (conv4_3's 0.1), ratios {1, 2, 1/2} or
{1, 2, 1/2, 3, 1/3} and an extra box of scale ``sqrt(s_k s_k+1)``. Matching: each ground
truth to its best default box, then every default box with IoU >= 0.5
(:data:`tfzoo.ops.matcher.SSD`); deltas with the paper's variances (0.1, 0.1, 0.2, 0.2),
that is box weights (10, 10, 5, 5). Loss: softmax cross-entropy over the positives and the
hardest negatives, 3 per positive (:func:`tfzoo.ops.sampling.hard_negative_mining`), plus
smooth L1 on the positives' deltas, both divided by the number of positives. Inference:
softmax, boxes decoded, per-class NMS at 0.45 keeping 200 detections above 0.01.

Presets:

- ``ssd300``: VGG-16 reduced (:mod:`tfzoo.backbones.vgg`: ceil-mode pools, pool5 3x3/1,
  fc6 3x3 dilation 6, fc7 1x1), conv4_3 through an L2 normalization with a learned scale
  initialised at 20, extras conv8_2 ... conv11_2: maps 38, 19, 10, 5, 3, 1; 4, 6, 6, 6, 4, 4
  boxes per location: 8,732 default boxes.
- ``ssd512``: extras conv8_2 ... conv12_2: maps 64, 32, 16, 8, 4, 2, 1; 24,564 default boxes.
- ``ssd_mobile``: a ResNet-10 at half width (C4 and C5; 1.9x MobileNetV2-0.5's training
  speed on a CPU) with SSDLite extras and depthwise-separable heads at 320 (maps 20, 10, 5,
  3, 2, 1), trained from random weights with the CPU recipe.

The paper's recipe (SGD 1e-3, momentum 0.9, weight decay 5e-4, step decay at 2/3 and 8/9
of training, the SSD augmentation: photometric distortions, zoom-out, IoU-constrained
crop, flip) is every paper preset's default.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from tfzoo import backbones, layers
from tfzoo.backbones.vgg import vgg16_ssd
from tfzoo.data import schema
from tfzoo.data.pipeline import Encoder
from tfzoo.models.base import SCRATCH_RECIPE, Detector, DetectorConfig, replica_sum
from tfzoo.ops import anchors as anchor_ops
from tfzoo.ops import box_coder
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import losses as loss_ops
from tfzoo.ops import matcher as matcher_ops
from tfzoo.ops import nms as nms_ops
from tfzoo.ops import sampling

#: Keys of the raw head outputs and of the encoded targets.
BOX_DELTAS = "box_deltas"
CLASS_LOGITS = "class_logits"
CLASSES = "classes"
#: The VGG trunk's name in ``SSDConfig.backbone``.
VGG_SSD = "vgg16"


def _scales(num_maps, first=0.1, s_min=0.2, s_max=0.9):
    """The paper's scales: ``first`` for conv4_3, then s_min..s_max over the other maps, 1.0 last."""
    return (first, *anchor_ops.ssd_scales(num_maps - 1, s_min, s_max))


@dataclasses.dataclass(frozen=True)
class SSDConfig(DetectorConfig):
    """SSD settings; defaults are the paper's SSD300 on VOC (20 classes)."""

    name: str = "ssd300"
    num_classes: int = 20
    image_size: int = 300
    backbone: str = VGG_SSD  # the reduced VGG-16 trunk, or a tfzoo.backbones name (its C4 and C5)
    backbone_weights: str | None = "imagenet"
    # Extra layers after the base maps: (1x1 channels, channels, kernel, stride, padding in
    # pixels on every side, as Caffe pads), conv8_2 ... conv11_2 of SSD300.
    extra_layers: tuple[tuple[int, ...], ...] = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0),
                                                 (128, 256, 3, 1, 0))
    # Extra ratios r per map (each adds r and 1/r to the two ratio-1 boxes).
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
    # One scale per map plus the last map's upper one (``sqrt(s_k s_k+1)`` boxes).
    scales: tuple[float, ...] = _scales(6)
    l2_norm_scale: float = 20.0  # conv4_3's L2 normalization, initial scale (VGG trunk only)
    # The VGG trunk's input normalization: "caffe" (the paper's: BGR minus the ImageNet
    # mean) or "torchvision_ssd" (RGB minus about (123, 117, 104), for torchvision's weights).
    vgg_normalization: str = "caffe"
    # Per map, the cell pitch in pixels of the input (torchvision's SSD300: 8, 16, 32, 64,
    # 100, 300; cells then are not the map's size divided evenly); () = the map's own cells.
    anchor_steps: tuple[float, ...] = ()
    clip_anchor_sizes: bool = False  # default boxes at most the image's size (torchvision's clip)
    head_separable: bool = False  # SSDLite's depthwise 3x3 + 1x1 heads and extras
    box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)  # 1 / the paper's variances
    # Logits the class softmax runs over besides the K classes and the background, never
    # a target nor scored (torchvision's COCO head: 10 unused ids); per default box laid
    # out [K classes, extra, background].
    extra_logits: int = 0
    neg_pos_ratio: float = 3.0
    smooth_l1_beta: float = 1.0
    # --- inference ---
    score_threshold: float = 0.01
    pre_nms_top_k: int = 400
    pre_nms_per_class: bool = False  # pre_nms_top_k boxes of each class (torchvision's) or of all pairs
    nms_iou_threshold: float = 0.45
    max_detections: int = 200
    # --- the paper's recipe ---
    augment: str = "ssd"
    batch_size: int = 32
    optimizer: str = "sgd"
    learning_rate: float = 1e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 500
    lr_schedule: str = "step"
    # The paper's VOC07+12 schedule: 40k iterations at 1e-3, 10k at 1e-4, 10k at 1e-5 at
    # batch 32: 60k iterations = 116 epochs of 16,551 images, decayed at 2/3 and 5/6.
    epochs: int = 116
    lr_decay_at: tuple[float, ...] = (2.0 / 3.0, 5.0 / 6.0)

    #: SSD300 and SSD512 are not multiples of 32: any size of at least 32 a side.
    size_divisor = 1

    def __post_init__(self):
        super().__post_init__()
        if len(self.aspect_ratios) != self.num_maps:
            raise ValueError(f"aspect_ratios has {len(self.aspect_ratios)} entries for {self.num_maps} maps "
                             f"(2 base maps + {len(self.extra_layers)} extra layers)")
        if len(self.scales) != self.num_maps + 1:
            raise ValueError(f"scales needs {self.num_maps + 1} entries (one per map and the last map's upper "
                             f"one), got {len(self.scales)}")
        if self.anchor_steps and len(self.anchor_steps) != self.num_maps:
            raise ValueError(f"anchor_steps needs one step per map ({self.num_maps}), got {len(self.anchor_steps)}")
        if self.vgg_normalization not in ("caffe", "torchvision_ssd"):
            raise ValueError(f"vgg_normalization must be 'caffe' or 'torchvision_ssd', got {self.vgg_normalization!r}")
        if self.extra_logits < 0:
            raise ValueError(f"extra_logits must be >= 0, got {self.extra_logits}")
        for spec in self.extra_layers:
            if len(spec) != 5 or min(spec[:4]) < 1 or spec[4] < 0:
                raise ValueError(f"an extra layer is (1x1 channels, channels, kernel, stride, padding), got {spec}")

    @property
    def num_maps(self):
        return 2 + len(self.extra_layers)

    @property
    def anchors_per_map(self):
        """Default boxes per location of each map: 2 + 2 per extra ratio."""
        return tuple(2 + 2 * len(ratios) for ratios in self.aspect_ratios)


PRESETS = {
    "ssd300": SSDConfig(),
    "ssd512": SSDConfig(
        name="ssd512",
        image_size=512,
        extra_layers=((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1),
                      (128, 256, 4, 1, 1)),
        aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
        scales=_scales(7),
    ),
    "ssd_mobile": SSDConfig(
        name="ssd_mobile",
        image_size=320,
        # tfzoo's ResNet-10 at half width, trained from random weights (SCRATCH_RECIPE), as
        # retinanet_mobile: on 2 CPU cores the demo's 7 epochs ran at 70.5 images/s against
        # MobileNetV2-0.5's 34-37 and scored shapes val AP50 0.831 against 0.793 (BENCHMARKS.md).
        backbone="resnet10",
        backbone_weights=None,
        backbone_alpha=0.5,
        extra_layers=((128, 256, 3, 2, 1), (64, 128, 3, 2, 1), (64, 128, 3, 2, 1), (32, 64, 3, 2, 1)),
        scales=(0.1, *anchor_ops.ssd_scales(5, 0.2, 0.95)),
        head_separable=True,
        **{**SCRATCH_RECIPE, "augment": "ssd"},
    ),
}


def default_boxes(config, map_sizes):
    """``[A, 4]`` normalized default boxes of ``config`` on maps of ``map_sizes`` ``[(h, w)]``."""
    steps = [step / config.image_size for step in config.anchor_steps] if config.anchor_steps else None
    return anchor_ops.ssd_default_boxes(map_sizes, aspect_ratios=config.aspect_ratios, scales=config.scales,
                                        steps=steps, clip_sizes=config.clip_anchor_sizes)


def _extra_layers(x, config):
    """conv8_2 ... : a 1x1 convolution, then a ``kernel`` convolution with Caffe's symmetric
    ``padding`` and ``stride`` (3x3/2 pad 1 halves 19 to 10; 3x3 pad 0 takes 5 to 3), each
    map kept."""
    maps = []
    for k, (mid, out, kernel, stride, padding) in enumerate(config.extra_layers, start=8):
        x = layers.Conv2D(mid, 1, activation="relu", name=f"conv{k}_1")(x)
        if padding:
            x = keras.layers.ZeroPadding2D(padding, name=f"conv{k}_pad")(x)
        if config.head_separable:
            x = keras.layers.SeparableConv2D(out, kernel, stride, activation="relu", name=f"conv{k}_2")(x)
        else:
            x = layers.Conv2D(out, kernel, stride, activation="relu", name=f"conv{k}_2")(x)
        maps.append(x)
    return maps


class SSDEncoder(Encoder):
    """SSD targets in tf.data: ``classes [A]`` (class id, -1 background, -2 ignore for crowd
    and difficult overlaps) and ``box_deltas [A, 4]`` (zeros off the positives)."""

    keep_aspect_ratio = False  # SSD warps the image to its square input
    xla_targets = True  # the [A, G] IoU matrix's elementwise passes, fused (see Encoder)

    def __init__(self, config, anchors):
        self.config = config
        self.image_size = (config.image_size, config.image_size)
        self.augment = config.augment
        self.flip = config.flip
        self.anchors = tf.constant(anchors, tf.float32)
        self.matcher = matcher_ops.SSD

    def box_targets(self, ground_truth):
        # A background box overlapping a crowd or difficult object by 0.5 is no negative either.
        classes, deltas = matcher_ops.anchor_targets(
            self.matcher, self.anchors, ground_truth[schema.BOXES], ground_truth[schema.CLASSES],
            ground_truth[schema.IS_CROWD] | ground_truth[schema.DIFFICULT], self.config.box_weights, special_iou=0.5)
        return {BOX_DELTAS: deltas, CLASSES: classes}


@keras.saving.register_keras_serializable(package="tfzoo")
class SSD(Detector):
    """SSD as a functional Keras model (see the module doc and :mod:`tfzoo.models.base`)."""

    config_class = SSDConfig
    family = "SSD"
    kind = "one-stage"
    presets = PRESETS
    cpu_presets = ("ssd_mobile",)
    loss_names = ("cls_loss", "box_loss")
    box_loss_names = ("box_loss",)
    tiny = {"image_size": 64, "num_classes": 3, "backbone": "resnet10", "backbone_weights": None,
            "backbone_alpha": 0.25, "extra_layers": ((8, 16, 3, 2, 1),),
            "aspect_ratios": ((2.0,), (2.0, 3.0), (2.0,)), "scales": (0.2, 0.5, 0.8, 1.0)}

    @classmethod
    def create(cls, config):
        size = config.image_size
        # --- layers ---
        with layers.dtype_policy(config.backbone_dtype):
            if config.backbone == VGG_SSD:
                if config.backbone_alpha != 1.0:
                    raise ValueError("backbone_alpha does not apply to the VGG-16 trunk")
                trunk, _ = vgg16_ssd((size, size), config.backbone_weights, name="backbone")
                normalize = layers.ImageNormalization(config.vgg_normalization, name="normalize")
            else:
                trunk = backbones.build_backbone(config.backbone, size, config.backbone_weights, config.backbone_alpha,
                                                 batchnorm_momentum=config.batchnorm_momentum, features=("C4", "C5"))
                normalize = layers.ImageNormalization(backbones.PREPROCESSING[config.backbone], name="normalize")
        # --- graph ---
        images = keras.Input((size, size, 3), name="images")
        base = trunk(normalize(images))
        if config.backbone == VGG_SSD:
            first = layers.L2Normalization(config.l2_norm_scale, name="conv4_3_norm")(base["conv4_3"])
            maps = [first, base["fc7"]]
        else:
            maps = [base["C4"], base["C5"]]
        maps += _extra_layers(maps[-1], config)
        box_deltas = layers.per_map_head(maps, 4, config.anchors_per_map, config.head_separable,
                                         name="box_head")  # [B, A, 4]
        class_logits = layers.per_map_head(maps, config.num_classes + config.extra_logits + 1, config.anchors_per_map,
                                           config.head_separable, name="class_head")  # [B, A, K + extra + 1]
        outputs = {BOX_DELTAS: box_deltas, CLASS_LOGITS: class_logits}
        model = cls(images, outputs, config, name=config.name)
        # The default boxes follow the maps the graph has (38 ... 1 at 300 with ceil pools).
        model.map_sizes = tuple((int(m.shape[1]), int(m.shape[2])) for m in maps)
        model.anchors = default_boxes(config, model.map_sizes)
        return model

    def make_encoder(self):
        return SSDEncoder(self.config, self.anchors)

    def compute_losses(self, targets, outputs):
        config = self.config
        target_classes = targets[CLASSES]  # [B, A]
        positive = target_classes >= 0
        background = tf.equal(target_classes, matcher_ops.BACKGROUND)
        ce = loss_ops.softmax_cross_entropy_with_ignore(target_classes, outputs[CLASS_LOGITS])  # [B, A]
        hard = sampling.hard_negative_mining(ce, positive, background, config.neg_pos_ratio)  # [B, A]
        num_positives = replica_sum(tf.reduce_sum(tf.cast(positive, tf.float32)))
        normalizer = tf.maximum(num_positives, 1.0)
        cls_loss = tf.reduce_sum(tf.where(positive | hard, ce, 0.0))
        box_loss = loss_ops.smooth_l1(targets[BOX_DELTAS], outputs[BOX_DELTAS], config.smooth_l1_beta,
                                      weights=tf.cast(positive, tf.float32))  # [B, A]
        return {"cls_loss": cls_loss / normalizer, "box_loss": tf.reduce_sum(box_loss) / normalizer}

    def decode(self, outputs):
        config = self.config
        # Softmax over K + extra + 1, background and extra dropped: exp(l_k - logsumexp(l)) for the K classes.
        # The slice runs on the head's output, not on the probabilities: an int8 export
        # quantizes a slice with its input, and the probabilities must stay float32.
        logits = tf.cast(outputs[CLASS_LOGITS], tf.float32)  # [B, A, K + extra + 1]
        scores = tf.exp(logits[..., :config.num_classes]
                        - tf.reduce_logsumexp(logits, axis=-1, keepdims=True))  # [B, A, K]
        deltas = tf.cast(outputs[BOX_DELTAS], tf.float32)  # [B, A, 4]
        boxes = box_ops.clip(box_coder.decode(deltas, tf.cast(self.anchors, tf.float32), config.box_weights))
        return nms_ops.multiclass_nms(boxes, scores, max_detections=config.max_detections,
                                      iou_threshold=config.nms_iou_threshold, score_threshold=config.score_threshold,
                                      pre_nms_top_k=config.pre_nms_top_k, per_class_top_k=config.pre_nms_per_class)
