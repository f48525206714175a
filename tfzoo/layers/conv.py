"""tfzoo's ``Conv2D`` (a faster batch-1 CPU inference path, exactly the stock result; dilated
convolutions as one TF op) and the switch exporters trace under."""
from __future__ import annotations

import contextlib
import os
import platform

import keras
import tensorflow as tf

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
        if self._direct_dilation():
            # keras.ops.conv runs a dilated convolution through tf.nn.convolution, which
            # wraps it in SpaceToBatchND / BatchToSpaceND; TF's Conv2D takes the dilation
            # itself. SSD's fc6 (3x3, dilation 6, 512 -> 1024 on 19x19), one-off probes on
            # the 2-core AVX-512 machine: batch-1 inference 9.7 ms against 23.4, forward +
            # backward at batch 8 139 ms against 550; equal within float32 rounding.
            kernel = tf.cast(self.kernel, inputs.dtype)
            outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding=self.padding.upper(),
                                   dilations=list(self.dilation_rate))
        elif self._grouped_inference(inputs, training):
            doubled = tf.concat([inputs, inputs], axis=-1)
            outputs = tf.nn.conv2d(doubled, self.kernel, strides=1, padding=self.padding.upper())
        else:
            return super().call(inputs)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        return self.activation(outputs) if self.activation is not None else outputs

    def _direct_dilation(self):
        return (max(self.dilation_rate) > 1 and self.strides == (1, 1) and self.groups == 1
                and self.data_format == "channels_last" and self.padding in ("same", "valid"))

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


def output_kernel(layer):
    """The kernel that scales a head conv's output linearly: ``kernel`` of a convolution,
    ``pointwise_kernel`` of a separable one (see :func:`dense_head`)."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        return layer.pointwise_kernel
    return layer.kernel


@keras.saving.register_keras_serializable(package="tfzoo")
class SpaceToDepth(keras.layers.Layer):
    """``tf.nn.space_to_depth``: each ``block x block`` patch of a ``[B, H, W, C]`` map
    stacked into the channels, ``[B, H / block, W / block, C * block**2]`` (YOLOv2's
    passthrough layer; the TFLite builtin ``SPACE_TO_DEPTH``). Darknet's ``reorg`` layer
    orders the channels otherwise; the two differ only in which kernel rows the next
    convolution reads."""

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, inputs):
        return tf.nn.space_to_depth(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        k = self.block_size
        return (b, None if h is None else h // k, None if w is None else w // k, None if c is None else c * k * k)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}
