"""R-CNN (Girshick et al. 2014): every region proposal warped to a fixed size and run through
its own CNN forward pass; per-class linear SVMs score the features, class-specific ridge
regression moves the boxes.

The graph (``detector({"images", "proposals"})``, what inference and the exports run; a
proposal-based detector of :mod:`tfzoo.models.base`):

- :class:`WarpedCNN` (sec. 2.1 and appendix A): each proposal dilated so that ``warp_context``
  pixels of context surround it at the warped size (16 of 224), warped anisotropically to
  ``warp_size x warp_size`` (bilinear, :func:`tfzoo.ops.roi.aligned_crops` on the normalized
  image: context past the input's edge reads 0, the ImageNet mean for VGG-16's caffe
  normalization; past a letterboxed image's edge it reads the padding), then the backbone
  up to its last map (VGG-16's pool5, 7 x 7 x 512), flattened. At inference the windows go
  through the CNN ``warp_chunk`` at a time inside a ``tf.while_loop``, so that the CNN's
  activations are one chunk's whatever ``max_proposals`` is; so does a fp32 or float16
  TFLite file (a ``WHILE`` builtin). An int8 TFLite file lays the chunks out one after
  another instead (its calibration cannot run a ``WHILE`` holding the CNN), and TFLite's
  memory planner does not bound them: fine for ``rcnn_mobile``'s two chunks, not for
  ``rcnn``'s 63 (BENCHMARKS.md).
- fc6 / fc7 (``head_fc``; VGG-16's own with ImageNet weights) and the K + 1 softmax
  (background last) fine-tuned with ``model.fit``.
- :class:`StageScores` and :class:`StageBoxes`: the SVMs on fc7 and the ridge regressors on
  pool5, trained after ``fit`` (:mod:`tfzoo.train.stages`). Until a stage has run, the
  scores are the softmax's and the boxes the proposals themselves.

Raw outputs: ``proposals [B, R, 4]``, ``class_logits [B, R, K + 1]``, ``class_scores
[B, R, K]`` (SVM or softmax) and ``box_deltas [B, R, 4 K]``; detections: per-class boxes
and the shared per-class NMS at 0.3 (:func:`tfzoo.models.faster_rcnn.decode_roi_detections`).

Training (sec. 2.3), one command (``tfzoo train rcnn``) in three stages:

1. ``fit``: batches of images with their proposals; ``compute_losses`` samples
   ``roi_samples`` windows per image at a quarter foreground (IoU >= 0.5 with a ground truth
   box; background: the rest, :data:`tfzoo.ops.matcher.RCNN`) among the proposals and the
   ground truth, the paper's 32 positive and 96 background windows per 128, warps them and
   trains the softmax (``roi_cls_loss``).
2. ``svm``: per-class linear SVMs on fc7 (ground-truth boxes positive, proposals under 0.3
   IoU with every box of the class negative), squared hinge, hard-negative mining rounds.
3. ``bbox``: per-class ridge regression (lambda 1,000) from pool5 to the box deltas of the
   proposals with IoU > 0.6 (appendix C).

Presets:

- ``rcnn``: VGG-16 (ImageNet weights for users), 224 x 224 warps with 16 px of context,
  2,000 proposals, fc 4,096 x 2, SGD 1e-3 (the paper's fine-tuning rate).
- ``rcnn_mobile``: a CPU preset: tfzoo's ResNet-10 at half width from random weights on
  64 x 64 warps (5 px of context), 500 proposals, a 256-wide head, the CPU recipe.
"""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from tfzoo import backbones, layers
from tfzoo.models import faster_rcnn as frcnn
from tfzoo.models import stages
from tfzoo.models.base import SCRATCH_RECIPE, Detector, float_barrier, float_exit, float_section
from tfzoo.models.fast_rcnn import FastRCNNEncoder
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import matcher as matcher_ops
from tfzoo.ops import roi as roi_ops

#: Raw outputs beside Faster R-CNN's: the final per-class scores (SVM or softmax).
CLASS_SCORES = stages.CLASS_SCORES


@dataclasses.dataclass(frozen=True)
class RCNNConfig(stages.StagedConfig):
    """R-CNN settings; defaults are the paper's VGG-16 model on VOC (20 classes). The
    stage settings (``svm_*``, ``ridge_*``, ``stage_*``) are
    :class:`tfzoo.models.stages.StagedConfig`'s."""

    name: str = "rcnn"
    image_size: int = 512  # the image the windows are cut from (no CNN runs on it)
    feature: str = "C5"  # pool5
    # --- warping (sec. 2.1, appendix A) ---
    warp_size: int = 224
    warp_context: int = 16  # pixels of context around the box at the warped size
    warp_chunk: int = 32  # windows per CNN pass at inference (peak memory)
    # --- fine-tuning (sec. 2.3): 128 windows per mini-batch, 32 positive, 96 background ---
    roi_samples: int = 64  # per image, 2 images per step
    box_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # appendix C's unweighted targets
    learning_rate: float = 1e-3
    epochs: int = 16
    lr_decay_at: tuple[float, ...] = (0.5,)

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= 2 * self.warp_context < self.warp_size:
            raise ValueError(f"warp_context {self.warp_context} leaves no box inside a {self.warp_size} px warp")
        if self.warp_chunk < 1:
            raise ValueError(f"warp_chunk must be >= 1, got {self.warp_chunk}")
        if self.head_svd:
            raise ValueError("head_svd (truncated SVD, tfzoo export --svd) is Fast R-CNN's and SPP-Net's: R-CNN's "
                             "time goes to its per-window CNN, not to fc6/fc7")


PRESETS = {
    "rcnn": RCNNConfig(),
    "rcnn_mobile": RCNNConfig(name="rcnn_mobile", image_size=320, warp_size=64, warp_context=5, warp_chunk=250,
                              max_proposals=500, backbone="resnet10", backbone_weights=None, backbone_alpha=0.5,
                              head_fc=(256, 256), **SCRATCH_RECIPE),
}


def dilate_for_context(rois, warp_size, context):
    """Each box ``[..., 4]`` grown about its centre so that, warped to ``warp_size``, the
    original box spans ``warp_size - 2 context`` pixels (appendix A: ``p = 16``)."""
    scale = warp_size / (warp_size - 2.0 * context)
    center = 0.5 * (rois[..., :2] + rois[..., 2:])
    half = 0.5 * scale * (rois[..., 2:] - rois[..., :2])
    return tf.concat([center - half, center + half], axis=-1)


@keras.saving.register_keras_serializable(package="tfzoo")
class WarpedCNN(keras.layers.Layer):
    """R-CNN's per-window CNN: ``(images [B, S, S, 3] RGB in [0, 255], rois [B, R, 4])`` ->
    ``[B, R, D]``, the ``feature`` map of each dilated, warped window flattened (see the
    module doc). ``training`` calls and R <= ``chunk`` run every window at once; otherwise
    ``chunk`` windows per pass of a ``tf.while_loop``."""

    def __init__(self, backbone, warp_size, context, chunk, feature="C5", alpha=1.0, weights=None,
                 batchnorm_momentum=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.warp_size, self.context = backbone, int(warp_size), int(context)
        self.chunk, self.feature, self.alpha = int(chunk), feature, float(alpha)
        self.batchnorm_momentum = batchnorm_momentum
        self.trunk = backbones.build_backbone(backbone, self.warp_size, weights, self.alpha,
                                              batchnorm_momentum=batchnorm_momentum, features=(feature,))
        self.normalize = layers.ImageNormalization(backbones.PREPROCESSING[backbone], name="normalize")
        self.dim = int(np.prod(self.trunk.output[feature].shape[1:]))

    def build(self, images_shape, rois_shape):
        self.built = True

    def _windows(self, images, rois, training=None):
        """``[B, n, D]`` for ``rois [B, n, 4]`` in one pass."""
        with float_section():
            boxes = dilate_for_context(float_barrier(rois), self.warp_size, self.context)
            crops = roi_ops.aligned_crops(images, boxes, self.warp_size, builtin=roi_ops.use_builtin_crops())
            crops = float_exit(crops)
        batch, count = tf.shape(rois)[0], tf.shape(rois)[1]
        crops = tf.reshape(tf.cast(crops, self.compute_dtype), [-1, self.warp_size, self.warp_size, 3])
        maps = self.trunk(crops, training=training)[self.feature]
        return tf.reshape(maps, [batch, count, self.dim])

    def call(self, images, rois, training=None):
        images = self.normalize(images)  # the mean where a dilated window leaves the image
        num_rois = rois.shape[1]
        if training or num_rois is None or num_rois <= self.chunk:
            return self._windows(images, rois, training)
        chunks = math.ceil(num_rois / self.chunk)
        padded = tf.pad(rois, [[0, 0], [0, chunks * self.chunk - num_rois], [0, 0]])
        batch = tf.shape(rois)[0]
        if roi_ops.use_unrolled_chunks():  # an int8 TFLite file: its calibration cannot run the WHILE
            windows = [self._windows(images, padded[:, i * self.chunk:(i + 1) * self.chunk], training)
                       for i in range(chunks)]
            return tf.concat(windows, axis=1)[:, :num_rois]
        if roi_ops.use_builtin_crops():  # a TFLite file: a WHILE without tensor lists (not builtins)
            def accumulate(i, out):
                window = self._windows(images, padded[:, i * self.chunk:(i + 1) * self.chunk], training)
                hot = tf.cast(tf.reshape(tf.one_hot(i, chunks), [1, chunks, 1, 1]), window.dtype)
                return i + 1, out + hot * window[:, None]  # [B, chunks, chunk, D]: chunk i written

            out = tf.zeros([batch, chunks, self.chunk, self.dim], self.compute_dtype)
            _, out = tf.while_loop(lambda i, _: i < chunks, accumulate, (tf.constant(0), out),
                                   parallel_iterations=1)
            return tf.reshape(out, [batch, chunks * self.chunk, self.dim])[:, :num_rois]

        def body(i, out):
            window = self._windows(images, padded[:, i * self.chunk:(i + 1) * self.chunk], training)
            return i + 1, out.write(i, window)  # [B, chunk, D]

        out = tf.TensorArray(self.compute_dtype, size=chunks, element_shape=[None, self.chunk, self.dim])
        _, out = tf.while_loop(lambda i, _: i < chunks, body, (tf.constant(0), out), parallel_iterations=1)
        out = tf.transpose(out.stack(), [1, 0, 2, 3])  # [chunks, B, chunk, D] -> [B, chunks, chunk, D]
        return tf.reshape(out, [batch, chunks * self.chunk, self.dim])[:, :num_rois]

    def compute_output_shape(self, images_shape, rois_shape):
        return (rois_shape[0], rois_shape[1], self.dim)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone, "warp_size": self.warp_size,
                "context": self.context, "chunk": self.chunk, "feature": self.feature, "alpha": self.alpha,
                "batchnorm_momentum": self.batchnorm_momentum}


@keras.saving.register_keras_serializable(package="tfzoo")
class RCNN(stages.StagesMixin, Detector):
    """R-CNN as a functional Keras model (see the module doc)."""

    config_class = RCNNConfig
    family = "R-CNN"
    kind = "proposals"
    input_names = ("images", "proposals")
    presets = PRESETS
    cpu_presets = ("rcnn_mobile",)
    loss_names = ("roi_cls_loss",)
    box_loss_names = ()
    tiny = {"image_size": 64, "num_classes": 3, "backbone": "resnet10", "backbone_weights": None,
            "backbone_alpha": 0.25, "head_fc": (32,), "roi_samples": 8, "max_boxes": 8, "max_proposals": 24,
            "warp_size": 32, "warp_context": 2, "warp_chunk": 10}

    @classmethod
    def create(cls, config):
        size = config.image_size
        with layers.dtype_policy(config.backbone_dtype):
            cnn = WarpedCNN(config.backbone, config.warp_size, config.warp_context, config.warp_chunk,
                            config.feature, config.backbone_alpha, config.backbone_weights,
                            config.batchnorm_momentum, name="warped_cnn")
        images = keras.Input((size, size, 3), name="images")
        proposal_input = keras.Input((config.max_proposals, 4), name="proposals")
        proposals = keras.layers.Identity(name="proposal_boxes", dtype="float32")(proposal_input)
        pool5 = cnn(images, proposals)
        class_logits, fc7 = _head(pool5, config)
        scores, deltas = stages.stage_outputs(class_logits, fc7, pool5, None, config)
        inputs = {"images": images, "proposals": proposal_input}
        outputs = {frcnn.PROPOSALS: proposals, frcnn.CLASS_LOGITS: class_logits, CLASS_SCORES: scores,
                   frcnn.BOX_DELTAS: deltas}
        model = cls(inputs=inputs, outputs=outputs, config=config, name=config.name)
        model.__dict__["_trunk"] = keras.Model(inputs, {"images": images, frcnn.PROPOSALS: proposals})
        model.__dict__["_features"] = keras.Model(inputs, {stages.POOL5: pool5, stages.FC7: fc7})
        model.__dict__["_head"] = None
        if (config.backbone == "vgg16" and config.backbone_weights == "imagenet" and frcnn._vgg16_head_fits(config)
                and cnn.dim == 7 * 7 * 512):  # pool5 of a 224 px warp: VGG-16's fc6 input
            from tfzoo.backbones.applications import _application  # noqa: PLC0415

            frcnn.load_vgg16_head(model, _application("VGG16", "imagenet", None, include_top=True))
        return model

    def _roi_head_model(self):
        """The sampled windows' softmax: ``(images, rois [B, roi_samples, 4]) -> (class_logits,)``."""
        if self.__dict__.get("_head") is None:
            size = self.config.image_size
            images = keras.Input((size, size, 3), name="images")
            rois = keras.Input((self.config.roi_samples, 4), name="rois")
            logits, _ = _head(self.get_layer("warped_cnn")(images, rois), self.config, model=self)
            self.__dict__["_head"] = keras.Model([images, rois], logits)
        return self.__dict__["_head"]

    def make_encoder(self):
        return FastRCNNEncoder(self.config)  # the padded ground truth the window sampler reads

    def call(self, inputs, training=None, mask=None):
        if training:  # fit: windows are sampled with the ground truth in compute_losses
            return self.__dict__["_trunk"](inputs, training=True)
        return super().call(inputs, training=training, mask=mask)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Keras' test step (``evaluate``, ``test_on_batch``) passes the inference graph's
        # outputs, which hold no images to warp windows from: the loss reads the training
        # forward pass's, in inference mode.
        if y_pred is not None and "images" not in y_pred:
            y_pred = self.__dict__["_trunk"](x, training=False)
        return super().compute_loss(x, y, y_pred, sample_weight=sample_weight, training=training)

    def compute_losses(self, targets, outputs):
        """``roi_cls_loss`` of the windows sampled among ``outputs``' proposals (the training
        forward pass's outputs: ``{"images", "proposals"}``, not the inference graph's)."""
        proposals = tf.cast(outputs[frcnn.PROPOSALS], tf.float32)
        num_proposals = tf.reduce_sum(tf.cast(box_ops.valid_mask(proposals), tf.int32), axis=-1)  # [B]
        head = self._roi_head_model()
        return frcnn.roi_head_losses(head, [outputs["images"]], proposals, num_proposals, targets, self.config,
                                     matcher=matcher_ops.RCNN)

    def decode(self, outputs):
        return frcnn.decode_roi_detections(outputs, self.config)


def _head(pool5, config, model=None):
    """fc6 / fc7 and the K + 1 softmax on ``pool5 [B, R, D]``: ``(class_logits, fc7)``; new
    layers (``model=None``) or ``model``'s."""
    def layer(name, make):
        return model.get_layer(name) if model is not None else make()

    x = pool5
    for i, units in enumerate(config.head_fc):
        x = layer(f"roi_fc{i}", lambda units=units, i=i: keras.layers.Dense(units, activation="relu",
                                                                              name=f"roi_fc{i}"))(x)
    logits = layer("roi_class", lambda: keras.layers.Dense(
        config.num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), dtype="float32",
        name="roi_class"))(x)
    return logits, x
