"""YOLOv2 (Redmon & Farhadi 2017, "YOLO9000: Better, Faster, Stronger") and YOLOv3 (Redmon &
Farhadi 2018, "YOLOv3: An Incremental Improvement"): one-stage grid detectors with priors.

Both predict, on each cell of each output grid and for each of its priors, the row-first
``(t_y, t_x, t_h, t_w, t_o)`` and the class scores, ``P`` priors per cell: Darknet's one 1x1
convolution of ``P * (5 + K)`` channels, here three (the box terms, the objectness, the
classes: ``p5_box``, ``p5_obj``, ``p5_cls``) so that each has its own int8 scale;
:meth:`YOLOv3.predictions` puts them back in Darknet's layout. A box is (YOLOv2 sec. 2, "Direct location prediction")::

    b_y = (c_y + sigmoid(t_y)) / H      b_h = p_h * exp(t_h)
    b_x = (c_x + sigmoid(t_x)) / W      b_w = p_w * exp(t_w)

with ``(c_y, c_x)`` the cell, ``(H, W)`` the grid and ``(p_h, p_w)`` the prior, a fraction
of the input side (:func:`tfzoo.ops.box_coder.cell_decode`, :func:`~tfzoo.ops.box_coder.prior_decode`).
Darknet gives priors in pixels of the network input (YOLOv3) or in 32-pixel cells
(YOLOv2); here they are fractions of the input, so a model served at another size
(``--image-size``) keeps them relative to the image, as its objects are.

Targets (in tf.data, :class:`YOLOEncoder`, through :func:`tfzoo.ops.matcher.prior_targets`):
each object goes to the prior with the best shape IoU over all priors (YOLOv2's
``bias_match``, YOLOv3 sec. 2.1: "one bounding box prior for each ground truth object"),
at the cell holding its centre on the grid that predicts with that prior. Where two
objects want one (cell, prior), the larger keeps it. The other predictions are negatives,
except those whose decoded box overlaps some object by more than ``ignore_iou`` (YOLOv3: 0.5,
"we ignore the prediction"; YOLOv2: Darknet's ``thresh`` 0.6).

Losses, per image summed over the predictions, averaged over the batch (Darknet's
``delta``s, whose gradient each term reproduces):

- box (positives), weighted by ``coord_scale * (2 - b_h b_w)`` (small objects count more):
  the centre offsets against ``sigmoid(t_y), sigmoid(t_x)`` (YOLOv3: binary cross-entropy
  on the logits; YOLOv2: half the squared error on the sigmoids) plus half the squared
  error on ``t_h, t_w``;
- objectness: YOLOv3: binary cross-entropy, target 1 on positives, 0 on negatives;
  YOLOv2: half the squared error on ``sigmoid(t_o)``, target the IoU of the predicted box
  with its object on positives (``rescore``, "objectness trained to the IoU"), weighted by
  ``object_scale`` (5), and 0 on negatives, weighted by ``noobject_scale`` (1);
- classes (positives): YOLOv3: independent sigmoids with binary cross-entropy (sec.
  2.2); YOLOv2: softmax cross-entropy.

Darknet's YOLOv2 also pulls every prediction towards its prior for the first 12,800
images; that warm-up is left out.

Inference: ``sigmoid(t_o)`` times the class probabilities, boxes decoded, per-class NMS at
IoU 0.45 through :func:`tfzoo.ops.nms.multiclass_nms` (builtin TFLite ops only).

Multi-scale training (YOLOv2 sec. 2, "Multi-Scale Training"): every ``size_period`` (10)
batches a new input size, a multiple of 32 between ``multi_scale`` times ``image_size``:
(0.75, 1.5) at 416 gives {320, 352, ..., 608}, the paper's. The data pipeline builds the
batches of one size together (:func:`tfzoo.data.pipeline`); the network is fully
convolutional and takes any multiple of 32; the targets follow each size's grids.

Presets (one-stage; weights from random initialization, or a Darknet trunk's weights file
as ``backbone_weights``):

- ``yolov2``: Darknet-19 at 416, then two 3x3 1024 convolutions, the passthrough layer
  (26 x 26 x 512 -> 1x1 64 -> space-to-depth 13 x 13 x 256, concatenated: ``yolov2-voc.cfg``'s
  layout; the paper's text stacks the 512 channels directly), a 3x3 1024 convolution and the
  output: a 13 x 13 grid with YOLOv2's 5 VOC priors, 845 predictions.
- ``yolov2_tiny``: ``yolov2-tiny-voc.cfg``: the tiny trunk (:func:`tfzoo.backbones.darknet.darknet_tiny`),
  two 3x3 1024 convolutions and the output, with tiny-yolo-voc's 5 priors. A CPU preset
  (half width, trained from scratch with the CPU recipe, its priors fitted to the
  training data by ``tfzoo train``: ``fit_priors``), at 384 (a 12 x 12 grid), trained at
  288 ... 384.
- ``yolov3``: Darknet-53 at 416 and outputs at strides 32, 16 and 8 (13, 26 and 52 at 416):
  five alternating 1x1 / 3x3 convolutions per scale, the coarser map's branch upsampled x2
  and concatenated with C4, then C3; the paper's 9 COCO priors, 3 per scale: 10,647
  predictions at 416.
- ``yolov3_tiny``: ``yolov3-tiny.cfg``'s layout: the tiny trunk, strides 32 and 16, its 6
  priors. A CPU preset (as ``yolov2_tiny``: half width, the CPU recipe, fitted priors).

Every preset ignores predictions over the paper's 0.5 (YOLOv3) or Darknet's 0.6 (YOLOv2);
YOLOv3's cfg files use 0.7 (``--set ignore_iou=0.7``).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import keras
import numpy as np
import tensorflow as tf

from tfzoo import backbones, layers
from tfzoo.backbones.darknet import conv_bn_leaky, scaled_width
from tfzoo.data import schema
from tfzoo.data.pipeline import Encoder, pad_rows
from tfzoo.models.base import SCRATCH_RECIPE, Detector, DetectorConfig, replica_sum
from tfzoo.ops import anchors as anchor_ops
from tfzoo.ops import box_coder
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import losses as loss_ops
from tfzoo.ops import matcher as matcher_ops
from tfzoo.ops import nms as nms_ops

#: Target key of the (padded) ground truth the ignore rule compares predictions with.
GT_BOXES = "gt_boxes"
#: Output names by stride (coarsest first, the order of the priors' masks).
STRIDE_NAMES = {32: "p5", 16: "p4", 8: "p3"}
#: Per prior: (t_y, t_x, t_h, t_w, t_o), then the class scores.
BOX_CHANNELS = 5


def _priors(sizes_wh, unit):
    """Darknet's (w, h) priors in ``unit`` (pixels at 416, or cells of 32 px) -> (h, w)
    fractions of the input side, rounded to 6 places (readable in config.json)."""
    return tuple((round(h / unit, 6), round(w / unit, 6)) for w, h in sizes_wh)


#: YOLOv3's COCO priors (the paper's, (w, h) pixels at 416).
YOLOV3_PRIORS = _priors([(w, h) for h, w in anchor_ops.YOLOV3_COCO_PRIORS_HW_PX], 416.0)
#: yolov3-tiny.cfg's priors (pixels at 416) and which each output uses (stride 32 first).
YOLOV3_TINY_PRIORS = _priors([(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)], 416.0)
YOLOV3_TINY_MASKS = ((3, 4, 5), (0, 1, 2))
#: YOLOv2's VOC priors (yolo-voc.cfg, in 13 x 13 grid cells) and tiny-yolo-voc.cfg's.
YOLOV2_PRIORS = _priors([(w, h) for h, w in anchor_ops.YOLOV2_VOC_PRIORS_HW], 13.0)
YOLOV2_TINY_PRIORS = _priors([(1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52)], 13.0)


@dataclasses.dataclass(frozen=True)
class YOLOConfig(DetectorConfig):
    """YOLOv2 / YOLOv3 settings; defaults are YOLOv3's on COCO (80 classes) at 416."""

    name: str = "yolov3"
    num_classes: int = 80
    image_size: int = 416
    backbone: str = "darknet53"  # darknet53 / darknet19 (3 / 1 outputs), darknet_tiny (2 / 1)
    backbone_weights: str | None = None  # Darknet has no Keras ImageNet weights: random or a file
    # Prior (h, w) sizes in fractions of the input side, and per output (stride 32 first)
    # the indices of the priors it predicts with.
    priors: tuple[tuple[float, ...], ...] = YOLOV3_PRIORS
    masks: tuple[tuple[int, ...], ...] = anchor_ops.YOLOV3_MASKS
    # tfzoo train fits the priors to the training boxes before it trains (YOLOv2's dimension
    # clusters, tfzoo.train.priors), as --set priors=auto does; the paper presets keep the
    # papers' priors (False), the CPU presets, meant for a user's own data, fit them.
    fit_priors: bool = False
    # Multi-scale training: a size drawn every size_period batches among the multiples of
    # 32 between these fractions of image_size; () trains at image_size only.
    multi_scale: tuple[float, ...] = (0.75, 1.5)
    size_period: int = 10
    head_width: float = 1.0  # width multiplier of the head's convolutions (not the trunk's)
    ignore_iou: float = 0.5  # a negative whose box overlaps an object by more adds no objectness loss
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    max_boxes: int = 100  # objects per image the ignore rule compares with (more are cut)
    # --- inference ---
    score_threshold: float = 0.005
    pre_nms_top_k: int = 1000
    nms_iou_threshold: float = 0.45
    max_detections: int = 100
    # --- the recipe (yolov3.cfg: SGD 1e-3, burn-in 1,000 batches, decay x0.1 at 80 % and
    # 90 %, momentum 0.9, weight decay 5e-4, batch 64; 500,200 batches of COCO = 273 epochs) ---
    augment: str = "yolo"
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 1000
    lr_schedule: str = "step"
    epochs: int = 273
    lr_decay_at: tuple[float, ...] = (0.8, 0.9)

    def __post_init__(self):
        super().__post_init__()
        if not self.priors or any(len(p) != 2 or min(p) <= 0 for p in self.priors):
            raise ValueError(f"priors must be (h, w) pairs of positive fractions of the input, got {self.priors}")
        used = sorted(i for mask in self.masks for i in mask)
        if not self.masks or used != list(range(len(self.priors))):
            raise ValueError(f"masks must use each of the {len(self.priors)} priors once, got {self.masks}")
        if self.multi_scale and (len(self.multi_scale) != 2 or not 0 < self.multi_scale[0] <= self.multi_scale[1]):
            raise ValueError(f"multi_scale is () or (low, high) fractions of image_size, got {self.multi_scale}")
        if self.size_period < 1:
            raise ValueError(f"size_period must be >= 1, got {self.size_period}")
        if not 0.0 < self.ignore_iou <= 1.0:
            raise ValueError(f"ignore_iou must be in (0, 1], got {self.ignore_iou}")
        if self.max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1, got {self.max_boxes}")

    @property
    def train_sizes(self):
        """The multi-scale training sizes (``()``: ``image_size`` only)."""
        if not self.multi_scale:
            return ()
        low, high = self.multi_scale
        step = self.size_divisor
        first = math.ceil(low * self.image_size / step - 1e-9)
        last = math.floor(high * self.image_size / step + 1e-9)
        return tuple(k * step for k in range(max(first, 1), last + 1))


#: The CPU presets: the published tiny layouts at half width (trunk and head: a quarter of
#: the arithmetic; on 2 CPU cores yolov3_tiny trains at 52 images/s at 320 against 21 at
#: full width), the shared from-scratch recipe with YOLO's own augmentation (HSV jitter,
#: translation and scale by up to 20 %, flips), training sizes around the preset's 320
#: (256 ... 384), and priors fitted to the training data (on the symbols stand-in the
#: tiny VOC priors reached mean IoU 0.570 with the boxes, fitted ones 0.700). A Darknet
#: weights file needs the full width: backbone_alpha=1, head_width=1.
_CPU = {**SCRATCH_RECIPE, "augment": "yolo", "image_size": 320, "multi_scale": (0.8, 1.2), "backbone_alpha": 0.5,
        "head_width": 0.5, "fit_priors": True}

PRESETS_V3 = {
    "yolov3": YOLOConfig(),
    "yolov3_tiny": YOLOConfig(name="yolov3_tiny", backbone="darknet_tiny", priors=YOLOV3_TINY_PRIORS,
                              masks=YOLOV3_TINY_MASKS, **_CPU),
}
# YOLOv2 (the paper, sec. 3 "Training for detection"): 160 epochs at 1e-3, divided by 10
# at 60 and 90, weight decay 5e-4, momentum 0.9; VOC, 20 classes; Darknet's region-layer
# scales (object 5, noobject 1, coord 1, class 1) and thresh 0.6.
_V2 = {"num_classes": 20, "masks": ((0, 1, 2, 3, 4),), "ignore_iou": 0.6, "object_scale": 5.0, "epochs": 160,
       "lr_decay_at": (60.0 / 160.0, 90.0 / 160.0)}
#: yolov2_tiny has one grid, at stride 32, which sees objects of 24-48 px poorly at 320
#: (10 x 10 cells); it trains at 288 ... 384 (1.1x the arithmetic of 320) and infers at the
#: top of that range, 384 (12 x 12), as the paper's multi-scale model is tested at sizes up
#: to 544. On the symbols stand-in in 20 minutes (2-core AMD EPYC): val AP50 0.747 at 320
#: (256 ... 384); 0.839 with the same seed at 384, 0.756 and 0.776 with two others
#: (BENCHMARKS.md, "Data it has not seen"); the model trained at 320 scored 0.765 served at 384.
_V2_TINY = {"image_size": 384, "multi_scale": (0.75, 1.0)}
PRESETS_V2 = {
    "yolov2": YOLOConfig(name="yolov2", backbone="darknet19", priors=YOLOV2_PRIORS, **_V2),
    "yolov2_tiny": YOLOConfig(name="yolov2_tiny", backbone="darknet_tiny", priors=YOLOV2_TINY_PRIORS,
                              **{**_V2, **_CPU, **_V2_TINY}),
}


def map_sizes(image_hw, strides):
    """``[(h, w)]`` of the output grids of an input ``image_hw`` (multiples of the strides)."""
    return [(int(image_hw[0]) // s, int(image_hw[1]) // s) for s in strides]


class YOLOEncoder(Encoder):
    """YOLOv2/v3 targets in tf.data: per output ``<name>_classes [h, w, P]`` (class or -1)
    and ``<name>_deltas [h, w, P, 4]`` ``(o_y, o_x, t_h, t_w)``, and ``gt_boxes
    [max_boxes, 4]`` (every object, crowd and difficult ones included, zero rows after:
    what the ignore rule compares predictions with). Crowd and difficult objects are
    never positives. With multi-scale training the grids follow each example's size."""

    keep_aspect_ratio = False  # YOLO warps the image to its square input

    def __init__(self, config, strides, output_names):
        self.config = config
        self.image_size = (config.image_size, config.image_size)
        self.augment = config.augment
        self.flip = config.flip
        self.strides = tuple(strides)
        self.output_names = tuple(output_names)
        self.train_sizes = config.train_sizes or None
        self.size_period = config.size_period

    def targets(self, example):
        image = example[schema.IMAGE]
        if not image.shape[:2].is_fully_defined():
            raise ValueError("YOLOEncoder needs examples of a static size (the pipeline resizes them)")
        boxes = example[schema.BOXES]
        special = example[schema.IS_CROWD] | example[schema.DIFFICULT]
        per_map, _ = matcher_ops.prior_targets(boxes, example[schema.CLASSES], ~special,
                                               map_sizes(image.shape[:2], self.strides), self.config.priors,
                                               self.config.masks)
        out = {GT_BOXES: pad_rows(tf.cast(boxes, tf.float32), self.config.max_boxes, 0.0)}
        for name, (classes, deltas) in zip(self.output_names, per_map):
            out[f"{name}_classes"] = classes
            out[f"{name}_deltas"] = deltas
        return out


def _head_conv(x, filters, kernel, name, config):
    return conv_bn_leaky(x, scaled_width(filters, config.head_width), kernel, 1, name, config.batchnorm_momentum)


#: The three output convolutions of a scale, by suffix, and the channels of one prior each
#: holds: the box terms (t_y, t_x, t_h, t_w), the objectness t_o, the class scores.
OUTPUT_PARTS = (("box", 4), ("obj", 1), ("cls", None))


def output_key(name, part):
    """The output (and layer) name of one part of a scale: ``"p5_box"``, ``"p5_obj"``, ``"p5_cls"``."""
    return f"{name}_{part}"


def split_darknet_layout(raw, name, priors, num_classes):
    """A scale's three outputs (``{p5_box, p5_obj, p5_cls}``, tensors) from Darknet's
    layout ``[B, h, w, P * (5 + K)]`` (the inverse of :meth:`YOLOv3.predictions`)."""
    raw = tf.convert_to_tensor(raw)
    shape = tf.shape(raw)
    t = tf.reshape(raw, [shape[0], shape[1], shape[2], priors, BOX_CHANNELS + num_classes])
    out, start = {}, 0
    for part, channels in OUTPUT_PARTS:
        channels = num_classes if channels is None else channels
        out[output_key(name, part)] = tf.reshape(t[..., start:start + channels],
                                                 [shape[0], shape[1], shape[2], priors * channels])
        start += channels
    return out


def _output_convs(x, config, priors, name):
    """The 1x1 output convolutions of a scale: ``{p5_box: [B, h, w, P * 4], p5_obj: [B, h, w, P],
    p5_cls: [B, h, w, P * K]}``, float32. Darknet has one convolution of ``P * (5 + K)``
    channels; three give each part its own int8 scale in a quantized export (box offsets
    of a few units, objectness logits down to -15, class logits: one shared scale gave the
    box terms a grid too coarse for tight boxes). The objectness biases start at the prior
    probability 0.01 (RetinaNet's, so that the loss of the many negatives does not swamp
    the first steps; Darknet starts them at 0)."""
    out = {}
    for part, channels in OUTPUT_PARTS:
        channels = config.num_classes if channels is None else channels
        bias = -math.log((1.0 - 0.01) / 0.01) if part == "obj" else 0.0
        conv = layers.Conv2D(priors * channels, 1, dtype="float32", name=output_key(name, part),
                             bias_initializer=keras.initializers.Constant(bias))
        out[output_key(name, part)] = conv(x)
    return out


@keras.saving.register_keras_serializable(package="tfzoo")
class YOLOv3(Detector):
    """YOLOv3 as a functional Keras model (see the module doc and :mod:`tfzoo.models.base`)."""

    config_class = YOLOConfig
    family = "YOLOv3"
    kind = "one-stage"
    presets = PRESETS_V3
    cpu_presets = ("yolov3_tiny",)
    loss_names = ("box_loss", "obj_loss", "cls_loss")
    box_loss_names = ("box_loss", "cls_loss")
    tiny = {"image_size": 64, "num_classes": 3, "backbone_alpha": 0.125, "head_width": 0.0625, "multi_scale": ()}
    #: The family's class probabilities: independent sigmoids (YOLOv3) or a softmax (YOLOv2).
    softmax_classes = False

    @classmethod
    def create(cls, config):
        size = config.image_size
        # --- layers ---
        features = ("C4", "C5") if config.backbone == "darknet_tiny" else ("C3", "C4", "C5")
        with layers.dtype_policy(config.backbone_dtype):
            trunk = backbones.build_backbone(config.backbone, size, config.backbone_weights, config.backbone_alpha,
                                             batchnorm_momentum=config.batchnorm_momentum, features=features)
            normalize = layers.ImageNormalization(backbones.PREPROCESSING[config.backbone], name="normalize")
        # --- graph ---
        images = keras.Input((size, size, 3), name="images")
        maps = trunk(normalize(images))
        heads = cls._heads(maps, config)  # {name: the scale's last feature map}, stride 32 first
        outputs = {}
        for (name, x), mask in zip(heads.items(), config.masks):
            outputs.update(_output_convs(x, config, len(mask), name))
        model = cls(images, outputs, config, name=config.name)
        # Fully convolutional: any multiple of 32 passes (multi-scale training), not only
        # the size the graph was built at.
        model.input_spec = None
        trunk.input_spec = None
        model.strides = tuple(size // int(outputs[output_key(name, "box")].shape[1]) for name in heads)
        model.output_names_by_stride = tuple(heads)
        model.map_sizes = tuple(map_sizes((size, size), model.strides))
        model.anchors = anchor_ops.yolo_prior_boxes(model.map_sizes, config.priors, config.masks)
        return model

    @classmethod
    def _heads(cls, maps, config):
        """YOLOv3's three scales (``yolov3.cfg``) or the tiny model's two (``yolov3-tiny.cfg``)."""
        if len(config.masks) != (2 if config.backbone == "darknet_tiny" else 3):
            raise ValueError(f"{config.backbone} gives {2 if config.backbone == 'darknet_tiny' else 3} outputs; "
                             f"masks has {len(config.masks)}")
        conv = functools.partial(_head_conv, config=config)
        if config.backbone == "darknet_tiny":
            x = conv(maps["C5"], 1024, 3, "head5_1")
            branch = conv(x, 256, 1, "head5_2")
            p5 = conv(branch, 512, 3, "head5_3")
            up = keras.layers.UpSampling2D(2, name="up4")(conv(branch, 128, 1, "up4_conv"))
            x = keras.layers.Concatenate(name="route4")([up, maps["C4"]])
            return {"p5": p5, "p4": conv(x, 256, 3, "head4_1")}
        outputs, x, stride = {}, maps["C5"], 32
        for level, (width, lateral) in enumerate(((512, None), (256, "C4"), (128, "C3"))):
            if lateral is not None:
                up = keras.layers.UpSampling2D(2, name=f"up{5 - level}")(conv(x, width, 1, f"up{5 - level}_conv"))
                x = keras.layers.Concatenate(name=f"route{5 - level}")([up, maps[lateral]])
            for k in range(5):  # 1x1, 3x3, 1x1, 3x3, 1x1: the branch point
                x = conv(x, width if k % 2 == 0 else 2 * width, 1 if k % 2 == 0 else 3, f"head{5 - level}_{k + 1}")
            outputs[STRIDE_NAMES[stride]] = conv(x, 2 * width, 3, f"head{5 - level}_6")
            stride //= 2
        return outputs

    def make_encoder(self):
        return YOLOEncoder(self.config, self.strides, self.output_names_by_stride)

    # --- training -----------------------------------------------------------------------

    def int8_float_layers(self):
        """Every scale's three 1x1 output convolutions: kept in float32 in an int8 export.
        Quantized, their outputs cost ``yolov3_tiny`` 3.5 AP points on ``shapes`` (the box
        offsets go through exp and the cell grid, the objectness and class logits through
        sigmoids at their steep middle); in float32 the loss is 0.2 points, for 1x1
        convolutions on the two coarsest maps (BENCHMARKS.md, "YOLO int8")."""
        return tuple(output_key(name, part) for name in self.output_names_by_stride for part, _ in OUTPUT_PARTS)

    def predictions(self, outputs, name):
        """``t [B, h, w, P, 5 + K]`` of one scale: Darknet's layout of a prediction
        (``t_y, t_x, t_h, t_w, t_o``, the class scores) from the scale's three outputs,
        float32, its size read from the tensors (static or not)."""
        parts = []
        for part, _ in OUTPUT_PARTS:
            output = tf.cast(outputs[output_key(name, part)], tf.float32)
            shape = tf.shape(output)
            priors = len(self.config.masks[self.output_names_by_stride.index(name)])
            parts.append(tf.reshape(output, [shape[0], shape[1], shape[2], priors, -1]))
        return tf.concat(parts, axis=-1)

    def _grid_predictions(self, outputs, name, mask):
        """``(t [B, h, w, P, 5 + K], cells [h, w, 1, 2], grid [2], priors [P, 2])`` of one
        scale, its size read from the tensors (static or not)."""
        t = self.predictions(outputs, name)
        shape = tf.shape(t)
        cells = box_coder.cell_grid(shape[1], shape[2])[:, :, None, :]  # [h, w, 1, 2]
        grid = tf.stack([shape[1], shape[2]])
        prior_hw = tf.constant([self.config.priors[i] for i in mask], tf.float32)  # [P, 2]
        return t, cells, grid, prior_hw

    def _offset_loss(self, target_offsets, logits):
        """The centre term of the box loss, ``[...]`` from ``[..., 2]``."""
        return tf.reduce_sum(loss_ops.sigmoid_cross_entropy(target_offsets, logits), axis=-1)

    def _objectness_loss(self, logits, positive, negative, iou_with_target):
        del iou_with_target
        config = self.config
        bce = loss_ops.sigmoid_cross_entropy(tf.cast(positive, tf.float32), logits)
        return (config.object_scale * tf.where(positive, bce, 0.0) + config.noobject_scale * tf.where(negative, bce, 0.0))

    def _class_loss(self, target_classes, logits, positive):
        onehot = tf.one_hot(tf.maximum(target_classes, 0), self.config.num_classes)
        bce = tf.reduce_sum(loss_ops.sigmoid_cross_entropy(onehot, logits), axis=-1)
        return tf.where(positive, bce, 0.0)

    def compute_losses(self, targets, outputs):
        config = self.config
        gt_boxes = tf.cast(targets[GT_BOXES], tf.float32)  # [B, max_boxes, 4]
        # Only as many rows as the batch's most crowded image has objects (the ignore rule's
        # [B, h * w * P, G] IoU matrix: max_boxes rows would be mostly zero padding).
        rows = tf.reduce_sum(tf.cast(box_ops.area(gt_boxes) > 0.0, tf.int32), axis=1)
        gt_boxes = gt_boxes[:, :tf.maximum(tf.reduce_max(rows), 1)]  # [B, G, 4]
        normalizer = replica_sum(tf.cast(tf.shape(gt_boxes)[0], tf.float32))  # the global batch: per-image sums
        totals = {"box_loss": 0.0, "obj_loss": 0.0, "cls_loss": 0.0}
        for name, mask in zip(self.output_names_by_stride, config.masks):
            t, cells, grid, prior_hw = self._grid_predictions(outputs, name, mask)
            target_classes = targets[f"{name}_classes"]  # [B, h, w, P]
            target_deltas = tf.cast(targets[f"{name}_deltas"], tf.float32)  # [B, h, w, P, 4]
            positive = target_classes >= 0
            pred_boxes = box_coder.cell_decode(tf.sigmoid(t[..., 0:2]), box_coder.prior_decode(t[..., 2:4], prior_hw),
                                               cells, grid)  # [B, h, w, P, 4]
            shape = tf.shape(pred_boxes)
            flat = tf.reshape(pred_boxes, [shape[0], -1, 4])  # [B, hwP, 4]
            best = tf.reduce_max(tf.concat([box_ops.iou(flat, gt_boxes), tf.zeros_like(flat[..., :1])], axis=-1),
                                 axis=-1)  # [B, hwP]
            negative = ~positive & (tf.reshape(best, shape[:-1]) <= config.ignore_iou)
            target_hw = box_coder.prior_decode(target_deltas[..., 2:4], prior_hw, clamp=None)  # [B, h, w, P, 2]
            target_boxes = box_coder.cell_decode(target_deltas[..., 0:2], target_hw, cells, grid)
            iou_with_target = tf.stop_gradient(box_ops.aligned_iou(pred_boxes, target_boxes))
            scale = config.coord_scale * (2.0 - target_hw[..., 0] * target_hw[..., 1])
            size_term = 0.5 * tf.reduce_sum(tf.square(t[..., 2:4] - target_deltas[..., 2:4]), axis=-1)
            box = tf.where(positive, scale * (self._offset_loss(target_deltas[..., 0:2], t[..., 0:2]) + size_term), 0.0)
            totals["box_loss"] += tf.reduce_sum(box)
            totals["obj_loss"] += tf.reduce_sum(self._objectness_loss(t[..., 4], positive, negative, iou_with_target))
            totals["cls_loss"] += config.class_scale * tf.reduce_sum(
                self._class_loss(target_classes, t[..., BOX_CHANNELS:], positive))
        return {k: v / normalizer for k, v in totals.items()}

    # --- inference ----------------------------------------------------------------------

    def _class_probabilities(self, logits):
        return tf.sigmoid(logits)

    def decode(self, outputs):
        config = self.config
        boxes, scores = [], []
        for name, mask in zip(self.output_names_by_stride, config.masks):
            # The grid from the output's static shape: the size the graph is traced at.
            rows, cols = outputs[output_key(name, "box")].shape[1:3]
            if rows is None or cols is None:
                raise ValueError(f"{config.name} decodes outputs of a static size; got "
                                 f"{outputs[output_key(name, 'box')].shape}")
            priors = len(mask)
            t = tf.reshape(self.predictions(outputs, name), [-1, rows * cols * priors, BOX_CHANNELS + config.num_classes])
            cells = tf.reshape(tf.tile(box_coder.cell_grid(rows, cols)[:, :, None, :], [1, 1, priors, 1]), [-1, 2])
            prior_hw = np.tile(np.asarray([config.priors[i] for i in mask], np.float32), (rows * cols, 1))
            boxes.append(box_coder.cell_decode(tf.sigmoid(t[..., 0:2]), box_coder.prior_decode(t[..., 2:4], prior_hw),
                                               cells, (rows, cols)))  # [B, hwP, 4]
            scores.append(tf.sigmoid(t[..., 4:5]) * self._class_probabilities(t[..., BOX_CHANNELS:]))  # [B, hwP, K]
        boxes = box_ops.clip(tf.concat(boxes, axis=1) if len(boxes) > 1 else boxes[0])
        scores = tf.concat(scores, axis=1) if len(scores) > 1 else scores[0]
        return nms_ops.multiclass_nms(boxes, scores, max_detections=config.max_detections,
                                      iou_threshold=config.nms_iou_threshold, score_threshold=config.score_threshold,
                                      pre_nms_top_k=config.pre_nms_top_k)


@keras.saving.register_keras_serializable(package="tfzoo")
class YOLOv2(YOLOv3):
    """YOLOv2: one 13 x 13 grid, softmax classes, objectness trained to the IoU (see the
    module doc); YOLOv3's graph and loss otherwise."""

    family = "YOLOv2"
    presets = PRESETS_V2
    cpu_presets = ("yolov2_tiny",)
    softmax_classes = True

    @classmethod
    def _heads(cls, maps, config):
        """``yolov2-voc.cfg`` after Darknet-19, or ``yolov2-tiny-voc.cfg`` after the tiny trunk."""
        if len(config.masks) != 1:
            raise ValueError(f"YOLOv2 has one output grid; masks has {len(config.masks)}")
        conv = functools.partial(_head_conv, config=config)
        x = conv(maps["C5"], 1024, 3, "head5_1")
        x = conv(x, 1024, 3, "head5_2")
        if config.backbone != "darknet_tiny":
            passthrough = layers.SpaceToDepth(2, name="passthrough")(conv(maps["C4"], 64, 1, "passthrough_conv"))
            x = keras.layers.Concatenate(name="route5")([passthrough, x])
            x = conv(x, 1024, 3, "head5_3")
        return {"p5": x}

    def _offset_loss(self, target_offsets, logits):
        return 0.5 * tf.reduce_sum(tf.square(tf.sigmoid(logits) - target_offsets), axis=-1)

    def _objectness_loss(self, logits, positive, negative, iou_with_target):
        config = self.config
        confidence = tf.sigmoid(logits)
        return (config.object_scale * tf.where(positive, 0.5 * tf.square(confidence - iou_with_target), 0.0)
                + config.noobject_scale * tf.where(negative, 0.5 * tf.square(confidence), 0.0))

    def _class_loss(self, target_classes, logits, positive):
        return loss_ops.softmax_cross_entropy_with_ignore(target_classes, logits, tf.cast(positive, tf.float32),
                                                          background_logit=False)

    def _class_probabilities(self, logits):
        return tf.nn.softmax(logits, axis=-1)
