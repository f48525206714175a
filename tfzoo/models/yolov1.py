"""YOLOv1: "You Only Look Once: Unified, Real-Time Object Detection" (Redmon et al. 2016).

One network reads the whole image and regresses, on an ``S x S`` grid (S = 7), ``B = 2``
boxes per cell, each ``(y, x, sqrt h, sqrt w, confidence)``, and ``C`` class probabilities
per cell: an ``S x S x (B * 5 + C)`` output (7 x 7 x 30 on VOC). ``(y, x)`` is the box
centre inside its cell, ``(h, w)`` the size as a fraction of the image (sec. 2; the seed's
``normal_to_yolo_format``, :func:`tfzoo.ops.box_coder.cell_encode`); the network predicts
the square roots of the sizes (sec. 2.2, "we predict the square root of the bounding box
width and height"; Darknet's ``sqrt=1``), the box's size is their square. The confidence
is trained to the IoU of the predicted box with the object.

Network (sec. 2.1, figure 3): 24 convolutional layers (:data:`tfzoo.backbones.darknet.YOLOV1`,
leaky ReLU 0.1), then two fully connected layers (4,096 with leaky ReLU and dropout 0.5;
then the linear output). The paper trains without batch normalization; tfzoo's trunks
have it (Darknet's later ``yolov1.cfg`` and the seed too): without it the network does not
train from random weights in a few epochs. The fully connected layers fix the input at
448 x 448 (``fixed_size``: ``--image-size`` and ``with_image_size`` refuse another).

Targets (tf.data, :class:`YOLOv1Encoder`, :func:`tfzoo.ops.matcher.cell_targets`): each
object in the cell that holds its centre. **One object per cell** (the seed's "problem
with encodings", sec. 2.4 "Limitations"): where two centres fall in one cell, the larger
object keeps it and the smaller is dropped from the targets. ``tfzoo inspect --data SPEC
--model yolov1`` counts what a dataset loses that way.

Loss (sec. 2.2), per image, averaged over the batch::

    lambda_coord sum_ij 1obj_ij [(y - y')^2 + (x - x')^2 + (sqrt h - sqrt h')^2 + (sqrt w - sqrt w')^2]
    + sum_ij 1obj_ij (C - C')^2 + lambda_noobj sum_ij 1noobj_ij (C - C')^2
    + sum_i 1obj_i sum_c (p(c) - p'(c))^2

``lambda_coord = 5``, ``lambda_noobj = 0.5``; predictor ``j`` of cell ``i`` is "responsible"
(``1obj_ij``) for the cell's object when its box has the highest IoU with it among the
``B`` (Darknet's rule where all are 0: the smallest squared error); every other predictor
is ``1noobj``. Every output is linear, as in the paper (:func:`tfzoo.ops.losses.yolo_box_loss`).

Inference: class-specific confidence ``p(c) * C`` (sec. 2 eq. 1, each factor clipped at 0), boxes
decoded and clipped, per-class NMS at 0.45 (:func:`tfzoo.ops.nms.multiclass_nms`,
builtin TFLite ops only).

Presets (one-stage):

- ``yolov1``: the paper's network at 448, VOC's 20 classes, the paper's recipe (SGD,
  momentum 0.9, weight decay 5e-4, batch 64, warm-up from 1e-3 to 1e-2, then 1e-2, 1e-3,
  1e-4 for 75, 30 and 30 epochs; random scaling and translation up to 20 %, exposure and
  saturation up to 1.5 in HSV: augmentation ``yolo``).
- ``yolov1_tiny``: Fast YOLO's 9 convolutions at quarter width (8 to 256 channels), ended
  as Darknet's later tiny cfg ends it: a 3x3 convolution narrowing the map to 256 channels
  (64 at quarter width), read directly by the linear output layer (no hidden layer, no
  dropout). A CPU preset trained from random weights with the CPU recipe at twice its
  peak rate (AdamW 4e-3, cosine; 2e-3 left the class loss at chance for a fifth of a
  20-minute run), which the paper's parametrization of that layer does not survive
  (below). Its class outputs are logits trained with softmax cross-entropy
  (``class_loss="softmax"``): the paper's squared error on them learns the classes far
  more slowly from random weights (on the ``symbols`` stand-in in 20 minutes at half
  width, val AP50 0.203 against 0.372).
  Quarter width because at 448 x 448 the network is bound by its training step's compute:
  half width trained 31 images/s on 2 CPU cores, quarter width 53, and in the runs
  compared the losses fell as fast per epoch at either width, so a time budget buys the
  narrower network 1.7x the epochs (``symbols``, 20 minutes: val AP50 0.533 against 0.372;
  BENCHMARKS.md). ``--set backbone_alpha=0.5`` trains the wider one.

The output layer from random weights (``yolov1_tiny``; options of every YOLOv1 config). The
paper's trunk is ImageNet-pretrained for a week before detection; from random weights, a
fully connected output mixes every position's features into every cell at random, each
cell's outputs learn only from the objects in that cell, and the network predicts the
data's mean box in every cell (issue 22's runs, BENCHMARKS.md). Two options keep the
layer and change how it trains:

- ``shared_cell_output``: the output layer written as the sum of a 1x1 convolution that
  every cell shares and a free fully connected layer. The sum is one linear map of the
  flattened map, the paper's layer (the shared kernel is a block on its diagonal; a test
  folds the two into one kernel), but the shared part learns from every cell's objects at
  once and the free part adds what is particular to a cell or needs the whole image.
- ``equalized_fc``: the fully connected layers' inputs scaled by ``1 / sqrt(fan-in)``
  with unit-variance kernels (Karras et al. 2018's "equalized learning rate"): hidden
  layers start at the scale of LeCun's initialization, but an Adam step then moves an
  output by about ``sqrt(fan-in)`` times the learning rate rather than ``fan-in`` times
  (3,136 inputs in ``yolov1_tiny``): the linear outputs no longer run away at the CPU
  recipe's rate. It is meant for Adam-family optimizers: under SGD, whose steps follow the
  gradient's size, it divides the layers' effective learning rate by their fan-in.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from tfzoo import backbones, layers
from tfzoo.backbones.darknet import conv_bn_leaky, scaled_width
from tfzoo.data import schema
from tfzoo.data.pipeline import Encoder
from tfzoo.models.base import SCRATCH_RECIPE, Detector, DetectorConfig, replica_sum
from tfzoo.ops import box_coder
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import losses as loss_ops
from tfzoo.ops import matcher as matcher_ops
from tfzoo.ops import nms as nms_ops

#: Key of the raw output ``[B, S, S, B * 5 + K]`` and the targets' keys.
CELLS = "cells"
CELL_CLASSES = "cell_classes"
CELL_BOXES = "cell_boxes"
#: Per predictor: (y, x, sqrt h, sqrt w, confidence).
BOX_CHANNELS = 5


@dataclasses.dataclass(frozen=True)
class YOLOv1Config(DetectorConfig):
    """YOLOv1 settings; defaults are the paper's on VOC (20 classes)."""

    name: str = "yolov1"
    num_classes: int = 20
    image_size: int = 448
    backbone: str = "yolov1"  # "yolov1" (24 convolutions) or "fast_yolo" (9)
    backbone_weights: str | None = None
    grid_size: int = 7  # S
    boxes_per_cell: int = 2  # B
    head_channels: int | None = None  # a 3x3 convolution narrowing the trunk's map before the fully connected layers
    fc_units: tuple[int, ...] = (4096,)  # hidden fully connected layers (leaky ReLU)
    dropout: float = 0.5  # after the last hidden fully connected layer
    equalized_fc: bool = False  # the fully connected layers' inputs scaled by 1 / sqrt(fan-in) (see create)
    shared_cell_output: bool = False  # no hidden layer: the output layer as a shared 1x1 map plus a free one (see create)
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    # The class term: "squared" (the paper: the cell's K linear outputs regressed to its
    # one-hot class, read as probabilities clipped at 0) or "softmax" (cross-entropy on
    # the K outputs as logits, probabilities by softmax).
    class_loss: str = "squared"
    # --- inference ---
    score_threshold: float = 0.005
    pre_nms_top_k: int = 1000
    nms_iou_threshold: float = 0.45
    max_detections: int = 100
    # --- the paper's recipe (sec. 2.2): 135 epochs of VOC 07+12 at batch 64; the rate rises
    # from 1e-3 to 1e-2 over the first epoch (259 batches), 1e-2 until epoch 75, 1e-3 for
    # 30, 1e-4 for 30 ---
    augment: str = "yolo"
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 259
    warmup_factor: float = 0.1
    lr_schedule: str = "step"
    epochs: int = 135
    lr_decay_at: tuple[float, ...] = (75.0 / 135.0, 105.0 / 135.0)

    #: The fully connected layers fix the input size (the trunk's stride is 64).
    fixed_size = True
    size_divisor = 64

    def __post_init__(self):
        super().__post_init__()
        if self.grid_size < 1 or self.boxes_per_cell < 1:
            raise ValueError(f"grid_size and boxes_per_cell must be >= 1, got {self.grid_size}, {self.boxes_per_cell}")
        if self.head_channels is not None and self.head_channels < 1:
            raise ValueError(f"head_channels must be >= 1 or None, got {self.head_channels}")
        if self.shared_cell_output and self.fc_units:
            raise ValueError("shared_cell_output needs the output layer on the trunk's map (fc_units=[])")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.class_loss not in ("squared", "softmax"):
            raise ValueError(f"class_loss must be 'squared' or 'softmax', got {self.class_loss!r}")


PRESETS = {
    "yolov1": YOLOv1Config(),
    # Fast YOLO as Darknet's later tiny cfg ends it: a 3x3 convolution narrowing the map (256,
    # here 64 at quarter width) read directly by the output layer, no hidden layer, no dropout.
    # From random weights on a CPU the output layer is the shared-plus-free reparametrization
    # and its inputs are equalized (see YOLOv1.create); the CPU recipe as for the other CPU
    # presets, at twice its peak rate: 4e-3 (AdamW, cosine). Quarter width: 1.7x the
    # half-width network's training images/s (module doc). At 2e-3 the class loss sat at
    # chance for the first 24 of 111 epochs of a 20-minute run on the symbols stand-in and
    # val AP50 was 0.491 (0.533 and 0.526 on another machine); at 4e-3, the same seed,
    # it left chance by epoch 16 and reached 0.595 (BENCHMARKS.md, "Data it has not seen").
    "yolov1_tiny": YOLOv1Config(name="yolov1_tiny", backbone="fast_yolo", backbone_alpha=0.25, head_channels=256,
                                fc_units=(), dropout=0.0, equalized_fc=True, shared_cell_output=True,
                                class_loss="softmax", **{**SCRATCH_RECIPE, "augment": "yolo", "learning_rate": 4e-3}),
}


def _dense_init(kernel_std):
    return {} if kernel_std is None else {"kernel_initializer": keras.initializers.RandomNormal(stddev=kernel_std)}


def _equalize(x, config, name):
    """``x / sqrt(fan-in)`` where the config's fully connected layers are equalized."""
    if not config.equalized_fc:
        return x
    return keras.layers.Rescaling(float(x.shape[-1]) ** -0.5, name=f"{name}_scale")(x)


class YOLOv1Encoder(Encoder):
    """YOLOv1 targets in tf.data: ``cell_classes [S, S]`` (the cell's object's class or -1)
    and ``cell_boxes [S, S, 4]`` ``(o_y, o_x, h, w)`` (0 where no object). Crowd and
    difficult objects are never targets."""

    keep_aspect_ratio = False  # YOLO warps the image to its square input

    def __init__(self, config):
        self.config = config
        self.image_size = (config.image_size, config.image_size)
        self.augment = config.augment
        self.flip = config.flip

    def box_targets(self, ground_truth):
        special = ground_truth[schema.IS_CROWD] | ground_truth[schema.DIFFICULT]
        size = self.config.grid_size
        classes, boxes, _ = matcher_ops.cell_targets(ground_truth[schema.BOXES], ground_truth[schema.CLASSES],
                                                     ~special, (size, size))
        return {CELL_CLASSES: classes, CELL_BOXES: boxes}


@keras.saving.register_keras_serializable(package="tfzoo")
class YOLOv1(Detector):
    """YOLOv1 as a functional Keras model (see the module doc and :mod:`tfzoo.models.base`)."""

    config_class = YOLOv1Config
    family = "YOLOv1"
    kind = "one-stage"
    presets = PRESETS
    cpu_presets = ("yolov1_tiny",)
    loss_names = ("box_loss", "obj_loss", "cls_loss")
    box_loss_names = ("box_loss", "cls_loss")
    tiny = {"image_size": 256, "num_classes": 3, "backbone_alpha": 0.125, "head_channels": 16, "fc_units": (),
            "grid_size": 4}

    @classmethod
    def create(cls, config):
        size = config.image_size
        s, b, k = config.grid_size, config.boxes_per_cell, config.num_classes
        # --- layers ---
        with layers.dtype_policy(config.backbone_dtype):
            trunk = backbones.build_backbone(config.backbone, size, config.backbone_weights, config.backbone_alpha,
                                             batchnorm_momentum=config.batchnorm_momentum, features=("C6",))
            normalize = layers.ImageNormalization(backbones.PREPROCESSING[config.backbone], name="normalize")
        # Equalized fully connected layers (Karras et al. 2018, "equalized learning rate"):
        # unit-variance kernels on inputs scaled by 1 / sqrt(fan-in), LeCun's scale at the
        # start; but Adam moves every weight by about the learning rate at a step,
        # so an output moves by the rate times the sum of its |inputs|: thousands of times
        # the rate on a 25,088-wide input, and the linear outputs run away. Scaled, it is
        # sqrt(fan-in) times the rate.
        kernel_std = 1.0 if config.equalized_fc else None
        hidden = [keras.layers.Dense(units, name=f"fc{i}", **_dense_init(kernel_std))
                  for i, units in enumerate(config.fc_units, start=1)]
        # A small initial fully connected output layer (N(0, 1e-3) kernel, on the scaled inputs
        # where equalized): its first predictions are near 0 rather than of unit size, which
        # its fan-in (25,088 for Fast YOLO's 512-channel map) would give, and which the first steps
        # would then spend pulling back.
        outputs_per_cell = b * BOX_CHANNELS + k
        output = keras.layers.Dense(s * s * outputs_per_cell, dtype="float32", name="fc_out",
                                    kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3 * (kernel_std or 1.0)))
        # The output layer reparametrized (``shared_cell_output``): one linear map of the
        # flattened S x S map as the paper's, written as the sum of a 1x1 convolution that
        # every cell shares (the same [C, O] block on the diagonal of the kernel) and a free
        # fully connected layer. Fully connected alone and from random weights, each cell's
        # outputs learn only from the objects in that cell (1/49 of them) and read every
        # position at random: the trunk's gradient is noise and the network predicts the
        # data's mean box (issue 22's runs; the paper pre-trains the trunk on ImageNet for a
        # week). The shared part learns from every cell at once; the free part adds what is
        # particular to a cell or needs the whole image, weight decay holding it near 0. The
        # shared part starts at Keras' default scale: the trunk's gradient from the first step.
        shared = (layers.Conv2D(outputs_per_cell, 1, dtype="float32", name="cell_out")
                  if config.shared_cell_output else None)
        # --- graph ---
        images = keras.Input((size, size, 3), name="images")
        x = trunk(normalize(images))["C6"]
        if config.head_channels:
            x = conv_bn_leaky(x, scaled_width(config.head_channels, config.backbone_alpha), 3, 1, "head",
                              config.batchnorm_momentum)
        if shared is not None and tuple(x.shape[1:3]) != (s, s):
            raise ValueError(f"shared_cell_output needs the trunk's map to be the {s} x {s} grid; at {size} x {size} "
                             f"it is {x.shape[1]} x {x.shape[2]} (image_size = grid_size * 64)")
        local = shared(x) if shared is not None else None
        x = keras.layers.Flatten(name="flatten")(x)
        for i, dense in enumerate(hidden, start=1):
            x = keras.layers.LeakyReLU(negative_slope=0.1, name=f"fc{i}_leaky")(dense(_equalize(x, config, f"fc{i}")))
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, name="dropout")(x)
        cells = keras.layers.Reshape((s, s, outputs_per_cell), dtype="float32",
                                     name="fc_cells" if shared is not None else CELLS)(output(_equalize(x, config, "fc_out")))
        if shared is not None:
            cells = keras.layers.Add(dtype="float32", name=CELLS)([local, cells])
        return cls(images, {CELLS: cells}, config, name=config.name)

    def make_encoder(self):
        return YOLOv1Encoder(self.config)

    def _split(self, output):
        """``(predictors [B, S, S, B, 5], class probabilities [B, S, S, K])``."""
        config = self.config
        output = tf.cast(output, tf.float32)
        b = config.boxes_per_cell
        s = config.grid_size
        predictors = tf.reshape(output[..., :b * BOX_CHANNELS], [-1, s, s, b, BOX_CHANNELS])
        return predictors, output[..., b * BOX_CHANNELS:]

    def compute_losses(self, targets, outputs):
        config = self.config
        s = config.grid_size
        predictors, probabilities = self._split(outputs[CELLS])
        target_classes = targets[CELL_CLASSES]  # [B, S, S]
        target = tf.cast(targets[CELL_BOXES], tf.float32)  # [B, S, S, 4] (o_y, o_x, h, w)
        has_object = target_classes >= 0
        cells = box_coder.cell_grid(s, s)[:, :, None, :]  # [S, S, 1, 2]
        pred_boxes = box_coder.cell_decode(predictors[..., 0:2], tf.square(predictors[..., 2:4]), cells, (s, s))
        true_boxes = box_coder.cell_decode(target[..., 0:2], target[..., 2:4], cells[..., 0, :], (s, s))
        iou = box_ops.aligned_iou(pred_boxes, true_boxes[:, :, :, None, :])  # [B, S, S, B]
        error = loss_ops.yolo_box_loss(target[:, :, :, None, :], predictors[..., 0:4])  # [B, S, S, B]
        # Responsible: the highest IoU; where every IoU is 0, the smallest error (Darknet).
        key = tf.where(tf.reduce_max(iou, axis=-1, keepdims=True) > 0.0, iou, -error)
        responsible = tf.one_hot(tf.argmax(key, axis=-1), config.boxes_per_cell) * tf.cast(has_object, tf.float32)[..., None]
        confidence = predictors[..., 4]
        box_loss = config.lambda_coord * tf.reduce_sum(responsible * error)
        obj_loss = (tf.reduce_sum(responsible * tf.square(confidence - tf.stop_gradient(iou)))
                    + config.lambda_noobj * tf.reduce_sum((1.0 - responsible) * tf.square(confidence)))
        onehot = tf.one_hot(tf.maximum(target_classes, 0), config.num_classes)
        if config.class_loss == "softmax":  # the outputs are logits
            per_cell = tf.nn.softmax_cross_entropy_with_logits(onehot, probabilities)
        else:
            per_cell = loss_ops.squared_error(onehot, probabilities)
        cls_loss = tf.reduce_sum(tf.where(has_object, per_cell, 0.0))
        normalizer = replica_sum(tf.cast(tf.shape(target)[0], tf.float32))  # the global batch
        return {"box_loss": box_loss / normalizer, "obj_loss": obj_loss / normalizer, "cls_loss": cls_loss / normalizer}

    def decode(self, outputs):
        config = self.config
        s, b = config.grid_size, config.boxes_per_cell
        predictors, probabilities = self._split(outputs[CELLS])
        boxes = box_ops.clip(box_coder.cell_decode(predictors[..., 0:2], tf.square(predictors[..., 2:4]),
                                                   box_coder.cell_grid(s, s)[:, :, None, :], (s, s)))  # [B, S, S, B, 4]
        if config.class_loss == "softmax":
            probabilities = tf.nn.softmax(probabilities, axis=-1)
        # Each factor clipped at 0: linear outputs, and two negatives must not make a score.
        scores = tf.maximum(predictors[..., 4:5], 0.0) * tf.maximum(probabilities, 0.0)[:, :, :, None, :]  # [B, S, S, B, K]
        return nms_ops.multiclass_nms(tf.reshape(boxes, [-1, s * s * b, 4]),
                                      tf.reshape(scores, [-1, s * s * b, config.num_classes]),
                                      max_detections=config.max_detections, iou_threshold=config.nms_iou_threshold,
                                      score_threshold=config.score_threshold, pre_nms_top_k=config.pre_nms_top_k)
