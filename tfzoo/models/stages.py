"""The stages R-CNN and SPP-Net train after ``fit`` (Girshick et al. 2014, sec. 2.3 and
appendix B/C; He et al. 2014, sec. 4), as parts of the graph:

- :class:`StageScores` (layer ``svm``): per-class linear SVMs on fc7, ``class_scores =
  sigmoid(fc7 W + b)`` (the sigmoid keeps each SVM's order, which is all per-class AP and
  NMS read, and puts the scores in [0, 1]; a window on the SVM's margin, score -1, gets
  0.27, so most windows pass the 0.05 score threshold and the top ``max_detections``
  after NMS decide); before the ``svm`` stage has run, the fine-tuned softmax's.
- :class:`StageBoxes` (layer ``bbox_ridge``): per-class ridge regression from pool5 to the
  box deltas ``[B, R, 4 K]``; before the ``bbox`` stage has run, the deltas the network
  learned in ``fit`` (SPP-Net's smooth L1) or none (R-CNN: the proposals as they are).

Each layer holds a non-trainable ``ready`` mask, one flag per output, that its stage sets
with the weights (a class without training windows keeps the softmax's scores and fit's
boxes), so a checkpoint, a SavedModel and a TFLite file say by themselves which scores
they serve; ``fit`` training further resets both (:meth:`StagesMixin.reset_stages`). The
stages themselves (feature caching, hard-negative mining, ridge) are
:mod:`tfzoo.train.stages`; :class:`StagesMixin` wires them as ``train_stage_svm`` and
``train_stage_bbox`` (:attr:`tfzoo.models.base.Detector.stages`).
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfzoo.models.base import float_barrier, float_section
from tfzoo.models.fast_rcnn import FastRCNNConfig

#: Per-class scores (SVM or softmax) ``[B, R, K]``.
CLASS_SCORES = "class_scores"
#: The features the stages learn from: pool5 (ridge) and fc7 (SVMs).
POOL5 = "pool5"
FC7 = "fc7"


@dataclasses.dataclass(frozen=True)
class StagedConfig(FastRCNNConfig):
    """Fast R-CNN's settings plus the post-fit stages' (R-CNN's values, sec. 2.3 and
    appendix C)."""

    # --- SVMs on fc7 ---
    svm_negative_iou: float = 0.3  # proposals under this IoU with every box of a class: its negatives
    svm_positive_weight: float = 2.0  # the positives' loss weight (R-CNN's liblinear -w1 2)
    svm_l2: float = 1e-3  # weight decay of the squared-hinge objective, on features of mean norm 20
    svm_rounds: int = 3  # hard-negative mining rounds after the first training
    svm_hard_score: float = -1.0  # a negative scoring above this joins the training set
    svm_initial_negatives: int = 4096  # random negatives of the first round
    svm_steps: int = 500  # optimizer steps (256 windows each, Adam 0.01) per round, at least one epoch
    stage_cache_gib: float = 2.0  # memory for the cached fc7 rows (negatives subsampled beyond it)
    # --- ridge box regression on pool5 (appendix C) ---
    ridge_iou: float = 0.6  # proposals with IoU above this with a box learn its deltas
    ridge_lambda: float = 1000.0
    ridge_max_windows: int = 4096  # per class (a random subset beyond), which bounds the solve

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.svm_negative_iou <= 0.5 or not 0.5 <= self.ridge_iou < 1.0:
            raise ValueError(f"svm_negative_iou in (0, 0.5] and ridge_iou in [0.5, 1) (got {self.svm_negative_iou}, "
                             f"{self.ridge_iou})")
        if self.svm_rounds < 0 or self.svm_steps < 1 or self.svm_initial_negatives < 1:
            raise ValueError("svm_rounds >= 0, svm_steps >= 1 and svm_initial_negatives >= 1 are needed")
        if self.ridge_lambda < 0 or self.svm_l2 < 0 or self.stage_cache_gib <= 0 or self.ridge_max_windows < 1:
            raise ValueError("ridge_lambda and svm_l2 must be >= 0, stage_cache_gib > 0, ridge_max_windows >= 1")


class _StageLayer(keras.layers.Layer):
    """A linear map set by a stage (non-trainable ``kernel [D, units]``, ``bias [units]``,
    ``ready [units]``: 1 where the stage's output serves, 0 where the fallback does)."""

    def __init__(self, units, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.units = int(units)

    def _add_weights(self, dim):
        self.kernel = self.add_weight(shape=(int(dim), self.units), initializer="zeros", trainable=False,
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", trainable=False, name="bias")
        self.ready = self.add_weight(shape=(self.units,), initializer="zeros", trainable=False, name="ready")

    def _linear(self, features):
        return tf.matmul(tf.cast(features, tf.float32), self.kernel) + self.bias

    def set_stage(self, kernel, bias, ready=None):
        """Sets the stage's weights; ``ready [units]`` (default: all) where they serve."""
        ready = np.ones(self.units, np.float32) if ready is None else np.asarray(ready, np.float32)
        self.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32), ready])

    def reset(self):
        """Back to the fallback everywhere (zero weights, nothing ready)."""
        self.set_weights([np.zeros(w.shape, np.float32) for w in self.weights])

    @property
    def is_ready(self):
        """Whether the stage serves any output."""
        return bool(np.any(keras.ops.convert_to_numpy(self.ready) > 0.5))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="tfzoo")
class StageScores(_StageLayer):
    """``(class_logits [B, R, K + extra + 1], fc7 [B, R, D]) -> [B, R, K]``: the SVMs'
    sigmoid scores once ready, else the softmax's first K (background dropped)."""

    def build(self, logits_shape, features_shape):
        self._add_weights(features_shape[-1])

    def call(self, logits, features):
        with float_section():  # scores stay float32 in an int8 export, as every decoder input
            softmax = tf.nn.softmax(float_barrier(tf.cast(logits, tf.float32)), axis=-1)[..., :self.units]
            svm = tf.sigmoid(self._linear(float_barrier(tf.cast(features, tf.float32))))
            return self.ready * svm + (1.0 - self.ready) * softmax

    def compute_output_shape(self, logits_shape, features_shape):
        return (*logits_shape[:-1], self.units)


@keras.saving.register_keras_serializable(package="tfzoo")
class StageBoxes(_StageLayer):
    """``(pool5 [B, R, D], learned deltas [B, R, 4 K] or None) -> [B, R, 4 K]``: the ridge
    regressors' deltas once ready, else the learned ones (zeros without)."""

    def build(self, features_shape, deltas_shape=None):
        self._add_weights(features_shape[-1])

    def call(self, features, deltas=None):
        with float_section():
            ridge = self._linear(float_barrier(tf.cast(features, tf.float32)))
            fallback = tf.zeros_like(ridge) if deltas is None else float_barrier(tf.cast(deltas, tf.float32))
            return self.ready * ridge + (1.0 - self.ready) * fallback

    def compute_output_shape(self, features_shape, deltas_shape=None):
        return (*features_shape[:-1], self.units)


def stage_outputs(class_logits, fc7, pool5, box_deltas, config):
    """``(class_scores, box_deltas)`` of the graph: the ``svm`` and ``bbox_ridge`` layers on
    the head's tensors (``box_deltas``: what ``fit`` learned, or ``None``)."""
    scores = StageScores(config.num_classes, name="svm")(class_logits, fc7)
    boxes = StageBoxes(4 * config.num_classes, name="bbox_ridge")
    deltas = boxes(pool5) if box_deltas is None else boxes(pool5, box_deltas)
    return scores, deltas


class StagesMixin:
    """``train_stage_svm`` and ``train_stage_bbox`` for a detector whose graph has the
    ``svm`` and ``bbox_ridge`` layers and a ``_features`` model (inputs -> ``{pool5, fc7}``)."""

    stages = ("fit", "svm", "bbox")
    #: The share of ``tfzoo train --minutes`` kept for the stages after ``fit``.
    stage_share = 0.2

    def reset_stages(self):
        """Both stages back to the fallback (``fit`` is about to change the features)."""
        for name in ("svm", "bbox_ridge"):
            self.get_layer(name).reset()

    def stage_features(self, inputs):
        """``{"pool5" [B, R, D5], "fc7" [B, R, D7]}`` of model ``inputs`` (inference mode)."""
        return self.__dict__["_features"](inputs, training=False)

    def train_stage_svm(self, examples, config, deadline=None, progress=False):
        from tfzoo.train import stages as stage_ops  # noqa: PLC0415

        cache = stage_ops.feature_cache(self, examples, deadline=deadline, progress=progress)
        kernel, bias, ready, figures = stage_ops.train_svms(cache, self.config, deadline=deadline,
                                                           progress=progress)
        self.get_layer("svm").set_stage(kernel, bias, ready)
        return figures

    def train_stage_bbox(self, examples, config, deadline=None, progress=False):
        from tfzoo.train import stages as stage_ops  # noqa: PLC0415

        cache = stage_ops.feature_cache(self, examples, deadline=deadline, progress=progress)
        kernel, bias, ready, figures = stage_ops.fit_ridge(cache, self.config)
        self.get_layer("bbox_ridge").set_stage(kernel, bias, ready)
        stage_ops.drop_feature_cache(self)
        return figures
