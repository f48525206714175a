"""Input normalization and batch normalization layers."""
from __future__ import annotations

import keras
import tensorflow as tf

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
#: torchvision's ssd300_vgg16: RGB in [0, 1] minus this mean, over a std of 1 / 255.
_TORCHVISION_SSD_MEAN = (0.48235, 0.45882, 0.40784)

#: Modes of :class:`ImageNormalization` (the ``keras.applications`` preprocessing modes,
#: and torchvision SSD300's).
NORMALIZATION_MODES = ("caffe", "tf", "torch", "unit", "torchvision_ssd", "none")


@keras.saving.register_keras_serializable(package="tfzoo")
class ImageNormalization(keras.layers.Layer):
    """RGB pixels in [0, 255] (any numeric dtype) -> what a backbone's weights expect.

    Modes, as ``keras.applications.imagenet_utils.preprocess_input``: ``"caffe"`` (RGB to
    BGR, minus the ImageNet BGR mean; ResNet), ``"tf"`` (to [-1, 1]; MobileNetV2),
    ``"torch"`` (to [0, 1], minus mean, over std); ``"unit"`` (to [0, 1], Darknet's);
    ``"torchvision_ssd"`` (RGB minus about (123, 117, 104): torchvision's SSD300 computes
    ``(x / 255 - mean) * 255``, and so does this);
    ``"none"`` (cast only).
    """

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"mode must be one of {NORMALIZATION_MODES}, got {mode!r}")
        self.mode = mode

    def call(self, images):
        x = tf.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return x[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR, x.dtype)
        if self.mode == "torch":
            return (x / 255.0 - tf.constant(_TORCH_MEAN, x.dtype)) / tf.constant(_TORCH_STD, x.dtype)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torchvision_ssd":
            return (x / 255.0 - tf.constant(_TORCHVISION_SSD_MEAN, x.dtype)) * 255.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="tfzoo")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

    Keras 3 normalizes with separate moment, subtract, scale and shift ops; on CPU the
    fused op (one pass forward, one backward) makes a MobileNetV2 backbone's forward +
    backward pass 1.6x faster (``benchmarks/bench_train_step.py``); inference is about as
    fast as before. Same variables, same config, same results (the moving variance is the
    biased batch variance, as Keras keeps it). Falls back to the Keras implementation
    where the fused op does not apply: another backend, inputs that are not 4-D with
    channels last, a mask, renormalization or synchronized statistics.
    """

    def _fused(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and mask is None and not getattr(self, "renorm", False) and not getattr(self, "synchronized", False))

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # statistics in float32, as Keras does under mixed precision
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)[:3]
            # The fused op returns the unbiased batch variance; Keras keeps the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
            variance = variance * tf.maximum(count - 1.0, 0.0) / count
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum + tf.cast(batch, moving.dtype) * (1.0 - self.momentum))
        else:
            y = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)[0]
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="tfzoo")
class L2Normalization(keras.layers.Layer):
    """SSD's conv4_3 normalization (Liu et al. 2016, section 3.1, from ParseNet): each
    position's channel vector scaled to unit L2 norm, then by a learned per-channel scale
    initialised at ``scale`` (20): conv4_3's activations are on another scale than the
    later maps'. Computed in float32."""

    def __init__(self, scale=20.0, epsilon=1e-10, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.scale), trainable=True)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True) + self.epsilon)
        return tf.cast(x / norm * tf.cast(self.gamma, tf.float32), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "epsilon": self.epsilon}
