"""Keras building blocks shared by the detectors: input normalization, fused batch norm, FPN,
dense heads.

Everything here is either a registered serializable layer or a function that wires stock
Keras layers into a functional graph, so models load with ``safe_mode=True``.

Shape legend: B batch, H/W feature height/width, A anchors, K classes, L levels.
"""
from __future__ import annotations

import contextlib
import os
import platform

import keras
import tensorflow as tf

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
#: Modes of :class:`ImageNormalization` (the ``keras.applications`` preprocessing modes).
NORMALIZATION_MODES = ("caffe", "tf", "torch", "none")


#: Keras dtype policies a part of a model may be pinned to (see :func:`dtype_policy`).
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def dtype_policy(policy):
    """Layers created inside the block get the Keras dtype policy ``policy`` (a name of
    :data:`DTYPE_POLICIES`; ``None`` leaves the global policy alone); the previous global
    policy is restored afterwards, also on error."""
    if policy is None:
        yield keras.mixed_precision.global_policy().name
        return
    if policy not in DTYPE_POLICIES:
        raise ValueError(f"dtype policy must be one of {DTYPE_POLICIES}, got {policy!r}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


@keras.saving.register_keras_serializable(package="tfzoo")
class ImageNormalization(keras.layers.Layer):
    """RGB pixels in [0, 255] (any numeric dtype) -> what a backbone's weights expect.

    Modes, as ``keras.applications.imagenet_utils.preprocess_input``: ``"caffe"`` (RGB to
    BGR, minus the ImageNet BGR mean; ResNet), ``"tf"`` (to [-1, 1]; MobileNetV2),
    ``"torch"`` (to [0, 1], minus mean, over std), ``"none"`` (cast only).
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


#: :class:`Conv2D` takes its grouped inference path on a static map with
#: ``H * W * (filters // 256) ** 2`` at least this: 32x32 at 256 or 384 channels, 16x16 at 512.
GROUPED_MIN_PIXELS = 32 * 32


@contextlib.contextmanager
def portable_convolutions(model):
    """The :class:`Conv2D` layers of ``model`` build the plain convolution, never the
    CPU-only grouped form, when traced inside the block (restored afterwards, also on
    error). The exporters trace under it: a SavedModel may be served on a GPU, and a TFLite
    file should hold ordinary ``CONV_2D`` ops."""
    convs = [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, Conv2D)]
    previous = [layer.grouped_inference for layer in convs]
    for layer in convs:
        layer.grouped_inference = False
    try:
        yield model
    finally:
        for layer, value in zip(convs, previous):
            layer.grouped_inference = value


def _grouped_inference_host():
    """Whether this process runs TF's oneDNN CPU kernels on x86 with no GPU visible."""
    return (platform.machine().lower() in ("x86_64", "amd64")
            and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
            and not tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable(package="tfzoo")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose single-image float32 inference on an x86 CPU runs a
    square 3x3 convolution of 256, 384, 512... channels as a two-group convolution of the
    input concatenated with itself, with the same kernel.

    Group ``g`` sees its own copy of the input and computes output channels
    ``g * F/2 .. (g + 1) * F/2`` with those kernel columns, so the result is exactly the
    plain convolution's (bit for bit in TF 2.21). Why: at batch 1, TF 2.21's oneDNN
    convolution with a variable kernel in its stored HWIO layout is slow for channel
    counts that are multiples of 128 from 256 up, while a grouped convolution gets its
    kernel reordered to oneDNN's blocked layout. One-off probes on this project's 2-core
    AVX-512 machine (3x3, bias and ReLU, batch 1, ``C -> C``): 64x64 maps, grouped / plain
    time 0.82 at 256 channels, 0.78 at 384, 0.63 at 512; 32x32: 0.81, 0.75, 0.54. Other
    channel counts (64 to 224, 320) and 256 -> 720 are 5-30% slower grouped, and so is
    batch 2, where the plain convolution already runs at about 360 GFLOP/s.

    The grouped path is taken only when all hold at trace time: not training (the grouped
    backward pass is several times slower), a static batch of 1, float32 compute, a 3x3
    kernel, stride and dilation 1, as many filters as input channels, a multiple of 128
    and at least 256, a static map of at least :data:`GROUPED_MIN_PIXELS`, an x86 host
    with oneDNN on and no GPU, and ``grouped_inference`` true (:func:`portable_convolutions`
    turns it off while the exporters trace). Otherwise it is the stock layer.
    """

    #: Whether inference may take the grouped path (an attribute, not part of the config).
    grouped_inference = True

    def call(self, inputs, training=None):
        if not self._grouped_inference(inputs, training):
            return super().call(inputs)
        doubled = tf.concat([inputs, inputs], axis=-1)
        outputs = tf.nn.conv2d(doubled, self.kernel, strides=1, padding=self.padding.upper())
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def _grouped_inference(self, inputs, training):
        batch, height, width = inputs.shape[0], inputs.shape[1], inputs.shape[2]
        return (not training and batch == 1
                and self.grouped_inference
                and self.compute_dtype == "float32" and inputs.dtype == tf.float32
                and self.kernel_size == (3, 3) and self.strides == (1, 1) and self.dilation_rate == (1, 1)
                and self.groups == 1 and self.data_format == "channels_last"
                and inputs.shape[-1] == self.filters and self.filters % 128 == 0 and self.filters >= 256
                and height is not None and width is not None
                and height * width * (self.filters // 256) ** 2 >= GROUPED_MIN_PIXELS
                and _grouped_inference_host())


def fpn(features, channels, min_level=3, max_level=7, name="fpn"):
    """Feature pyramid (Lin et al. 2017) over backbone maps ``[C3, C4, C5]``.

    P3-P5: 1x1 lateral convs, top-down nearest 2x upsampling and sum, 3x3 output convs.
    Levels above 5 as in RetinaNet: P6 = 3x3 stride-2 conv on C5, P7 = 3x3 stride-2 conv on
    ReLU(P6). ``min_level`` may be 3..5 (finer levels are dropped after the top-down pass).

    Returns:
      list of ``[B, H_l, W_l, channels]`` tensors for levels ``min_level..max_level``.
    """
    if not 3 <= min_level <= 5 or max_level < 5:
        raise ValueError(f"need 3 <= min_level <= 5 <= max_level, got {min_level}..{max_level}")
    c3, c4, c5 = features
    conv = Conv2D
    laterals = {
        level: conv(channels, 1, name=f"{name}_lateral_p{level}")(c)
        for level, c in zip((3, 4, 5), (c3, c4, c5))
    }
    merged = {5: laterals[5]}
    for level in (4, 3):
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up_p{level + 1}")(merged[level + 1])
        merged[level] = keras.layers.Add(name=f"{name}_merge_p{level}")([laterals[level], up])
    outputs = {
        level: conv(channels, 3, padding="same", name=f"{name}_output_p{level}")(merged[level])
        for level in (3, 4, 5)
    }
    # P6, P7 stay float32 under a mixed policy: they cost little, and oneDNN's bfloat16
    # stride-2 convolution returns garbage (often Inf/NaN) on a 1x1 input (TF 2.21, AMX CPU),
    # which a 64-px image's C5 or P6 is.
    previous = c5
    for level in range(6, max_level + 1):
        if level > 6:
            previous = keras.layers.ReLU(name=f"{name}_relu_p{level - 1}", dtype="float32")(previous)
        previous = conv(channels, 3, strides=2, padding="same", name=f"{name}_p{level}", dtype="float32")(previous)
        outputs[level] = previous
    return [outputs[level] for level in range(min_level, max_level + 1)]


def output_kernel(layer):
    """The kernel that scales a head conv's output linearly: ``kernel`` of a convolution,
    ``pointwise_kernel`` of a separable one (see :func:`dense_head`)."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        return layer.pointwise_kernel
    return layer.kernel


#: ``norm`` values of :func:`dense_head`.
HEAD_NORMS = ("none", "group")


def dense_head(levels, outputs_per_anchor, num_anchors, channels, num_convs, bias_init="zeros", norm="none",
               separable=False, name="head"):
    """A RetinaNet-style head shared across levels: ``num_convs`` x (3x3 conv + ReLU), then
    a 3x3 conv with ``num_anchors * outputs_per_anchor`` channels.

    The same layer objects run on every level (one set of weights). The output conv and
    the reshape run in float32 (mixed-precision safe). ``norm="group"`` puts a GroupNorm
    (groups of 8 channels at most 32 groups, shared across levels, as detectron2's GN
    heads) between each conv and its ReLU: heads trained from scratch converge much faster.
    ``separable=True`` makes every 3x3 conv, the output conv included, a depthwise 3x3 conv
    followed by a 1x1 conv (SSDLite's and EfficientDet's heads): with 80 classes, a 96-channel
    output conv at 320 px costs 2.7 GFLOP as a plain 3x3 conv and 0.3 GFLOP separable.

    Returns:
      ``[B, sum_l H_l * W_l * num_anchors, outputs_per_anchor]`` float32, levels in order,
      anchor-major within each location (matching :func:`tfzoo.ops.anchors.multilevel_anchors`).
    """
    if norm not in HEAD_NORMS:
        raise ValueError(f"norm must be one of {HEAD_NORMS}, got {norm!r}")

    def conv3x3(filters, layer_name, **kwargs):
        if not separable:
            return Conv2D(filters, 3, padding="same", kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                          name=layer_name, **kwargs)
        # The depthwise kernel keeps Keras' default (Glorot) initialization: with both
        # factors at stddev 0.01 the gradients of each would be scaled by the other's 1e-2.
        return keras.layers.SeparableConv2D(
            filters, 3, padding="same", pointwise_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name=layer_name, **kwargs)

    convs = []
    for i in range(num_convs):
        convs.append(conv3x3(channels, f"{name}_conv{i}", activation="relu" if norm == "none" else None))
        if norm == "group":
            groups = max(1, min(32, channels // 8))
            convs.append(keras.layers.GroupNormalization(groups, name=f"{name}_gn{i}"))
            convs.append(keras.layers.ReLU(name=f"{name}_relu{i}"))
    predict = conv3x3(num_anchors * outputs_per_anchor, f"{name}_predict", dtype="float32",
                      bias_initializer=bias_init)
    per_level = []
    for level_index, x in enumerate(levels):
        for layer in convs:
            x = layer(x)
        x = predict(x)  # [B, H, W, A * D]
        per_level.append(keras.layers.Reshape((-1, outputs_per_anchor), name=f"{name}_reshape{level_index}", dtype="float32")(x))  # [B, H*W*A, D]
    if len(per_level) == 1:
        return per_level[0]
    return keras.layers.Concatenate(axis=1, name=f"{name}_concat", dtype="float32")(per_level)
