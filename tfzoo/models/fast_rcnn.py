"""Fast R-CNN (Girshick 2015): the image once through the CNN, each region proposal pooled
from the shared map, one network trained end to end with a multi-task loss.

The graph (``detector({"images", "proposals"})``, what inference and the exports run): the
backbone's stride-16 map (VGG-16's conv5_3), RoI max pooling of every proposal to 7 x 7
(:class:`tfzoo.models.faster_rcnn.RoIPool`: ``crop_and_resize``, builtin ops in a TFLite
file), fc6/fc7 (4,096 each), the sibling softmax over K + 1 classes (background last) and
class-specific box deltas (weights 10, 10, 5, 5, the paper's target normalization 0.1/0.2).
The proposals come from outside the model (:mod:`tfzoo.proposals`: selective search by
default, the ``proposals`` setting), normalized to the input and padded with zero boxes to
``max_proposals``. Raw outputs: ``features`` (the shared map), ``proposals`` (the input,
for the decoder), ``class_logits [B, R, K + 1]`` and ``box_deltas [B, R, 4 K]``; detections
are Faster R-CNN's (:func:`tfzoo.models.faster_rcnn.decode_roi_detections`: per-class NMS
at 0.3, 100 per image).

Training (the paper's sec. 2.3): ``fit`` on batches of images with their proposals;
``detector(inputs, training=True)`` stops at the shared map, and
:meth:`FastRCNN.compute_losses` samples 64 RoIs per image among the proposals and the ground
truth (25 % foreground at IoU >= 0.5, background in [0.1, 0.5): the seed's "Fast R-CNN —
Training, Encoder"), runs the RoI head on them and returns ``roi_cls_loss`` (log loss) and
``roi_box_loss`` (smooth L1, beta 1), the shared two-stage parts of
:mod:`tfzoo.models.faster_rcnn`.

Presets:

- ``fast_rcnn``: VGG-16 (ImageNet weights for users; fc6/fc7 from VGG-16's classifier, as
  the paper), 608 x 608 (the paper's 600-pixel scale on tfzoo's square inputs), 2,000
  proposals, 2 images x 64 RoIs per step, SGD 1e-3 then 1e-4 (the paper's 30k + 10k
  iterations on VOC07).
- ``fast_rcnn_mobile``: a CPU preset: tfzoo's ResNet-10 at half width from random weights,
  320 x 320, a 256-wide head, 1,000 proposals, the CPU recipe.
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfzoo import backbones, layers
from tfzoo.data import schema
from tfzoo.data.pipeline import Encoder, pad_ground_truth
from tfzoo.models import faster_rcnn as frcnn
from tfzoo.models.base import Detector
from tfzoo.ops import boxes as box_ops

FEATURES = "features"


@dataclasses.dataclass(frozen=True)
class FastRCNNConfig(frcnn.RoIHeadConfig):
    """Fast R-CNN settings; defaults are the paper's VGG-16 model on VOC (20 classes); the
    RoI head's fields are :class:`tfzoo.models.faster_rcnn.RoIHeadConfig`'s."""

    name: str = "fast_rcnn"
    image_size: int = 608
    # --- proposals (tfzoo.proposals): where they come from and how many the model takes ---
    proposals: str = "ss:fast"  # "ss:fast", "ss:quality" or "json:PATH"
    max_proposals: int = 2000
    # Truncated SVD of the fully connected layers (the paper's sec. 3.1): rank per layer of
    # head_fc, 0 or missing for a full layer; set by truncated_svd (tfzoo export --svd).
    head_svd: tuple[int, ...] = ()
    roi_samples: int = 64  # per image: 2 images x 64 = the paper's 128 RoIs per mini-batch
    # --- the paper's recipe (VOC07 trainval: 30k iterations at 1e-3, then 10k at 1e-4, 2
    # images each, random flips): 80k images, 16 epochs of 5,011 ---
    learning_rate: float = 1e-3
    epochs: int = 16

    def __post_init__(self):
        super().__post_init__()
        from tfzoo import proposals as proposal_source

        proposal_source.parse_source(self.proposals)
        if self.max_proposals < 1:
            raise ValueError(f"max_proposals must be >= 1, got {self.max_proposals}")
        if len(self.head_svd) > len(self.head_fc) or any(r < 0 for r in self.head_svd):
            raise ValueError(f"head_svd needs one rank >= 0 per layer of head_fc {self.head_fc}, got {self.head_svd}")


PRESETS = {
    "fast_rcnn": FastRCNNConfig(),
    "fast_rcnn_mobile": FastRCNNConfig(name="fast_rcnn_mobile", max_proposals=1000, **frcnn.MOBILE),
}


class FastRCNNEncoder(Encoder):
    """tf.data targets: the padded ground truth the RoI sampler reads (``boxes [G, 4]``,
    ``classes [G]``, ``gt_ignore [G]``); the proposals go to the model input."""

    keep_aspect_ratio = True

    def __init__(self, config):
        self.config = config
        self.image_size = (config.image_size, config.image_size)
        self.augment = config.augment
        self.flip = config.flip
        self.max_proposals = config.max_proposals

    def targets(self, example):
        truth = pad_ground_truth(example, self.config.max_boxes)
        return {schema.BOXES: truth[schema.BOXES], schema.CLASSES: truth[schema.CLASSES],
                frcnn.GT_IGNORE: tf.cast(truth[schema.IS_CROWD] | truth[schema.DIFFICULT], tf.int32)}


@keras.saving.register_keras_serializable(package="tfzoo")
class FastRCNN(Detector):
    """Fast R-CNN as a functional Keras model (see the module doc and :mod:`tfzoo.models.base`)."""

    config_class = FastRCNNConfig
    family = "Fast R-CNN"
    kind = "proposals"
    input_names = ("images", "proposals")
    presets = PRESETS
    cpu_presets = ("fast_rcnn_mobile",)
    loss_names = ("roi_cls_loss", "roi_box_loss")
    box_loss_names = ("roi_box_loss",)
    # The head's outputs per proposal involve no NMS: every raw output is compared.
    tiny = {"image_size": 64, "num_classes": 3, "backbone": "resnet10", "backbone_weights": None,
            "backbone_alpha": 0.25, "head_fc": (32,), "roi_samples": 16, "roi_size": 3, "max_boxes": 8,
            "max_proposals": 24}

    @classmethod
    def create(cls, config):
        size = config.image_size
        with layers.dtype_policy(config.backbone_dtype):
            trunk = backbones.build_backbone(config.backbone, size, config.backbone_weights, config.backbone_alpha,
                                             batchnorm_momentum=config.batchnorm_momentum,
                                             features=(config.feature,))
            normalize = layers.ImageNormalization(backbones.PREPROCESSING[config.backbone], name="normalize")
        if getattr(config, "freeze_backbone", False):  # SPP-Net fine-tunes the fully connected layers only
            trunk.trainable = False
        images = keras.Input((size, size, 3), name="images")
        proposal_input = keras.Input((config.max_proposals, 4), name="proposals")
        normalized = normalize(images)
        features = trunk(normalized)[config.feature]
        proposals = keras.layers.Identity(name="proposal_boxes", dtype="float32")(proposal_input)
        maps = [features]
        scales = tuple(getattr(config, "test_scales", ()))
        if scales:  # SPP-Net's multi-scale test: the convolutions once per scale, each window from one
            trunk.input_spec = None  # the same layers on the other sizes
            maps = [features if scale == size else trunk(keras.layers.Resizing(
                scale, scale, name=f"scale_{scale}")(normalized))[config.feature] for scale in scales]
        class_logits, box_deltas, pooled, fc7 = frcnn._roi_head(maps, proposals, config, return_features=True)
        inputs = {"images": images, "proposals": proposal_input}
        outputs = {FEATURES: features, frcnn.PROPOSALS: proposals, frcnn.CLASS_LOGITS: class_logits,
                   frcnn.BOX_DELTAS: box_deltas}
        staged = len(cls.stages) > 1  # SPP-Net: SVMs and ridge box regression after fit
        if staged:
            from tfzoo.models import stages  # noqa: PLC0415

            outputs[stages.CLASS_SCORES], outputs[frcnn.BOX_DELTAS] = stages.stage_outputs(
                class_logits, fc7, pooled, box_deltas, config)
        model = cls(inputs=inputs, outputs=outputs, config=config, name=config.name)
        if staged:
            model.__dict__["_features"] = keras.Model(inputs, {stages.POOL5: pooled, stages.FC7: fc7})
        # The training forward pass (up to the shared map) and the RoI head on sampled RoIs
        # share these layers; kept out of Keras' attribute tracking.
        model.__dict__["_trunk"] = keras.Model(inputs, {FEATURES: features, frcnn.PROPOSALS: proposals})
        model.__dict__["_head"] = None
        if config.backbone == "vgg16" and config.backbone_weights == "imagenet" and frcnn._vgg16_head_fits(config):
            from tfzoo.backbones.applications import _application  # noqa: PLC0415

            frcnn.load_vgg16_head(model, _application("VGG16", "imagenet", None, include_top=True))
        return model

    def _roi_head_model(self):
        """The RoI head on ``(features, rois [B, roi_samples, 4])``: the graph's layers."""
        if self.__dict__.get("_head") is None:
            trunk = self.__dict__["_trunk"]
            features = keras.Input(trunk.output[FEATURES].shape[1:], name=FEATURES)
            rois = keras.Input((self.config.roi_samples, 4), name="rois")
            self.__dict__["_head"] = keras.Model([features, rois],
                                                 frcnn._roi_head([features], rois, self.config, model=self))
        return self.__dict__["_head"]

    def make_encoder(self):
        return FastRCNNEncoder(self.config)

    def call(self, inputs, training=None, mask=None):
        if training:  # fit: the RoI head runs in compute_losses, on RoIs sampled with the ground truth
            return self.__dict__["_trunk"](inputs, training=True)
        return super().call(inputs, training=training, mask=mask)

    def compute_losses(self, targets, outputs):
        proposals = tf.cast(outputs[frcnn.PROPOSALS], tf.float32)  # [B, P, 4], zero boxes padding the end
        num_proposals = tf.reduce_sum(tf.cast(box_ops.valid_mask(proposals), tf.int32), axis=-1)  # [B]
        return frcnn.roi_head_losses(self._roi_head_model(), [outputs[FEATURES]], proposals, num_proposals,
                                     targets, self.config)

    def decode(self, outputs):
        return frcnn.decode_roi_detections(outputs, self.config)


def truncated_svd(detector, ranks):
    """The paper's truncated SVD (sec. 3.1): a copy of a Fast R-CNN ``detector`` whose fully
    connected layer ``i`` (weights ``W [u, v]``) becomes two, ``U_t S_t [u, t]`` without
    bias, then ``V_t [t, v]`` with the layer's bias, from the top ``t = ranks[i]``
    singular values (0: the layer stays whole). ``u t + t v`` weights instead of ``u v``;
    the paper keeps 1,024 of fc6's and 256 of fc7's (``ranks=(1024, 256)``) and measures a
    0.3-point mAP loss for 30 % less detection time. Returns a float32 detector."""
    config = detector.config
    if not isinstance(config, FastRCNNConfig):
        raise ValueError(f"truncated SVD applies to Fast R-CNN's fully connected layers, not to {config.name}")
    if config.head_svd:
        raise ValueError(f"{config.name} is already factorized (head_svd {config.head_svd})")
    ranks = tuple(int(r) for r in ranks)
    if not ranks or len(ranks) > len(config.head_fc):
        raise ValueError(f"give one rank per fully connected layer ({len(config.head_fc)}: {config.head_fc}), "
                         f"got {ranks}")
    source = detector.as_float32()
    for i, rank in enumerate(ranks):
        kernel = source.get_layer(f"roi_fc{i}").get_weights()[0]
        if not 0 <= rank <= min(kernel.shape):
            raise ValueError(f"rank {rank} for roi_fc{i} ({kernel.shape[0]} x {kernel.shape[1]}): between 0 and "
                             f"{min(kernel.shape)}")
    values = config.replace(head_svd=ranks).to_dict()
    values["backbone_weights"] = None
    values["backbone_dtype"] = None
    with layers.dtype_policy("float32"):
        copy = type(detector).create(type(config).from_dict(values))
    factorized = {f"roi_fc{i}" for i, rank in enumerate(ranks) if rank}
    for target in copy.layers:
        if target.name in factorized or target.name.endswith("_svd") or not target.weights:
            continue
        target.set_weights(source.get_layer(target.name).get_weights())
    for name in sorted(factorized):
        rank = ranks[int(name[len("roi_fc"):])]
        kernel, bias = source.get_layer(name).get_weights()
        u, s, vt = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
        copy.get_layer(f"{name}_svd").set_weights([(u[:, :rank] * s[:rank]).astype(np.float32)])
        copy.get_layer(name).set_weights([vt[:rank].astype(np.float32), bias])
    return copy
