"""The Darknets of YOLOv2 and YOLOv3 (Redmon & Farhadi 2017, 2018), built in Keras.

Every convolution is Darknet's "convolutional" layer with ``batch_normalize=1``: no
bias, batch norm (:data:`BATCHNORM_EPSILON`), leaky ReLU 0.1.
Stride-2 convolutions pad like Darknet (one pixel on every side, so output ``i`` sees input
rows ``2i - 1 .. 2i + 1``): a zero row and column on the top and left, then a "valid"
convolution. Keras' "same" would pad bottom and right instead and shift every strided map
by one pixel against weights converted from Darknet's ``.weights`` files.

- ``darknet19`` (YOLOv2 table 6, without its classifier): 18 convolutions and 5 max-pools;
  C3 is the last 256-channel map (stride 8), C4 the last 512-channel map (stride 16, the
  26 x 26 x 512 map of YOLOv2's passthrough at 416), C5 the last 1024-channel map
  (stride 32).
- ``darknet53`` (YOLOv3 table 1, without its classifier): 52 convolutions, five stride-2
  convolutions each followed by 1, 2, 8, 8, 4 residual blocks (1x1 halving, 3x3 restoring
  the channels); C3, C4, C5 are the outputs of the 8, 8 and 4 block stages (256, 512, 1024
  channels; YOLOv3's three scales).

Neither has ImageNet weights in Keras: they train from random initialization or load a
weights file. Inputs are expected in [0, 1] (Darknet divides pixels by 255: preprocessing
mode ``"unit"``).
"""
from __future__ import annotations

import keras

from tfzoo.layers import Conv2D, FusedBatchNormalization

#: Darknet's leaky ReLU slope.
LEAKY_SLOPE = 0.1
#: Batch-norm epsilon. Darknet divides by ``sqrt(variance) + 1e-6`` where Keras divides by
#: ``sqrt(variance + epsilon)``; 1e-6 keeps the two within 1e-6 / sqrt(variance) relative
#: (Keras' default 1e-3 would move converted Darknet weights' outputs visibly).
BATCHNORM_EPSILON = 1e-6
#: Darknet-19 (YOLOv2 table 6, classifier left out): ``(filters, kernel)`` of each
#: convolution, ``"M"`` for a 2x2 stride-2 max-pool.
DARKNET19 = (
    (32, 3), "M", (64, 3), "M",
    (128, 3), (64, 1), (128, 3), "M",
    (256, 3), (128, 1), (256, 3), "M",
    (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), "M",
    (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
)
#: Darknet-53 (YOLOv3 table 1): residual blocks after each stride-2 convolution.
DARKNET53_BLOCKS = (1, 2, 8, 8, 4)


def _conv(x, filters, kernel, stride, name, momentum):
    if stride == 2:
        x = keras.layers.ZeroPadding2D(((1, 0), (1, 0)), name=f"{name}_pad")(x)
    x = Conv2D(filters, kernel, stride, padding="valid" if stride == 2 else "same", use_bias=False,
               name=f"{name}_conv")(x)
    x = FusedBatchNormalization(momentum=momentum, epsilon=BATCHNORM_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_leaky")(x)


def darknet19(image_size, batchnorm_momentum=None):
    """``(model, {"C3", "C4", "C5"})`` of Darknet-19 (see the module doc)."""
    momentum = 0.99 if batchnorm_momentum is None else float(batchnorm_momentum)
    inputs = keras.Input((*image_size, 3), name="image")
    x, features, stride, conv = inputs, {}, 1, 0
    for item in DARKNET19:
        if item == "M":
            features[f"C{stride.bit_length() - 1}"] = x  # the last map at this stride
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"pool{stride.bit_length()}")(x)
            stride *= 2
            continue
        conv += 1
        x = _conv(x, item[0], item[1], 1, f"conv{conv}", momentum)
    features["C5"] = x
    features = {k: features[k] for k in ("C3", "C4", "C5")}
    return keras.Model(inputs, features, name="darknet19"), features


def darknet53(image_size, batchnorm_momentum=None):
    """``(model, {"C3", "C4", "C5"})`` of Darknet-53 (see the module doc)."""
    momentum = 0.99 if batchnorm_momentum is None else float(batchnorm_momentum)
    inputs = keras.Input((*image_size, 3), name="image")
    x = _conv(inputs, 32, 3, 1, "stem", momentum)
    features = {}
    for stage, blocks in enumerate(DARKNET53_BLOCKS, start=1):
        filters = 64 * 2 ** (stage - 1)
        x = _conv(x, filters, 3, 2, f"down{stage}", momentum)
        for block in range(1, blocks + 1):
            name = f"stage{stage}_block{block}"
            y = _conv(x, filters // 2, 1, 1, f"{name}_1", momentum)
            y = _conv(y, filters, 3, 1, f"{name}_2", momentum)
            x = keras.layers.Add(name=f"{name}_add")([x, y])
        if stage >= 3:
            features[f"C{stage}"] = x
    return keras.Model(inputs, features, name="darknet53"), features
