"""VGG-16 reduced for SSD (Liu et al. 2016, section 3): the trunk ``ssd300``/``ssd512`` stand on.

The 13 convolutions of VGG-16 (Simonyan & Zisserman 2015, configuration D; layer names as
``keras.applications.VGG16``'s, so its ImageNet weights load by name), then the SSD changes:

- the 2x2 stride-2 max-pools round up (Caffe's ceil mode, ``padding="same"``): at 300 px
  pool3 turns 75 into 38, so conv4_3 is 38 x 38 as in the paper (keras.applications'
  floor pooling gives 37);
- pool5 is 3x3 with stride 1 (the map stays 19 x 19 at 300);
- fc6 is a 3x3 convolution with dilation 6 and 1,024 channels, fc7 a 1x1 convolution with
  1,024 channels, their weights subsampled from VGG-16's fully connected layers
  (:func:`reduce_fc`), "atrous" as the paper has it.

:func:`vgg16_ssd` returns the model and ``{"conv4_3", "fc7"}``; with ``weights="imagenet"``
it loads the classifier's weights (conv layers by name, fc6/fc7 reduced).
"""
from __future__ import annotations

import keras
import numpy as np

from tfzoo.layers import Conv2D

#: VGG-16's convolution blocks: (filters, convolutions).
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
#: fc6/fc7 of SSD: every ``FC_SUBSAMPLE``-th output channel of VGG-16's 4,096 (1,024), and
#: every ``FC_SPATIAL_STEP``-th row and column of fc6's 7x7 kernel (3x3, dilation 6).
FC_SUBSAMPLE = 4
FC_SPATIAL_STEP = 3


def vgg16_ssd(image_size, weights=None, name="vgg16_ssd"):
    """``(model, {"conv4_3": [B, H/8, W/8, 512], "fc7": [B, H/16, W/16, 1024]})`` (see the module doc).

    ``weights``: ``None`` (random), ``"imagenet"`` (keras.applications' VGG-16 classifier,
    converted), or a weights file this model saved.
    """
    height, width = image_size
    inputs = keras.Input((height, width, 3), name="image")
    x, maps = inputs, {}
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            x = Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}")(x)
        if block == 4:
            maps["conv4_3"] = x
        if block < 5:
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"block{block}_pool")(x)  # ceil mode
    x = keras.layers.MaxPooling2D(3, 1, padding="same", name="pool5")(x)
    x = Conv2D(1024, 3, padding="same", dilation_rate=6, activation="relu", name="fc6")(x)
    maps["fc7"] = Conv2D(1024, 1, activation="relu", name="fc7")(x)
    model = keras.Model(inputs, maps, name=name)
    if weights == "imagenet":
        from tfzoo.backbones.applications import _application  # noqa: PLC0415

        load_vgg16_weights(model, _application("VGG16", "imagenet", None, include_top=True))
    elif weights is not None:
        model.load_weights(weights)
    return model, maps


def reduce_fc(fc1_kernel, fc1_bias, fc2_kernel, fc2_bias):
    """VGG-16's fully connected fc6/fc7 as SSD's convolutions (the paper's subsampling).

    ``fc1_kernel [25088, 4096]`` (a 7 x 7 x 512 input flattened height, width, channel, as
    Keras flattens) becomes a ``[3, 3, 512, 1024]`` kernel: rows and columns 0, 3, 6 and
    every 4th output; ``fc2_kernel [4096, 4096]`` becomes ``[1, 1, 1024, 1024]``: every 4th
    input and output. Returns ``(fc6_kernel, fc6_bias, fc7_kernel, fc7_bias)``.
    """
    fc1 = np.asarray(fc1_kernel).reshape(7, 7, 512, -1)
    fc6_kernel = fc1[::FC_SPATIAL_STEP, ::FC_SPATIAL_STEP, :, ::FC_SUBSAMPLE]
    fc6_bias = np.asarray(fc1_bias)[::FC_SUBSAMPLE]
    fc7_kernel = np.asarray(fc2_kernel)[::FC_SUBSAMPLE, ::FC_SUBSAMPLE][None, None]
    fc7_bias = np.asarray(fc2_bias)[::FC_SUBSAMPLE]
    return fc6_kernel, fc6_bias, fc7_kernel, fc7_bias


def load_vgg16_weights(model, classifier):
    """Copies a ``keras.applications.VGG16(include_top=True)`` ``classifier``'s weights into
    :func:`vgg16_ssd`'s ``model``: the convolutions by name, fc6/fc7 by :func:`reduce_fc`."""
    for block, (_, convs) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            name = f"block{block}_conv{conv}"
            model.get_layer(name).set_weights(classifier.get_layer(name).get_weights())
    fc6_kernel, fc6_bias, fc7_kernel, fc7_bias = reduce_fc(*classifier.get_layer("fc1").get_weights(),
                                                           *classifier.get_layer("fc2").get_weights())
    model.get_layer("fc6").set_weights([fc6_kernel, fc6_bias])
    model.get_layer("fc7").set_weights([fc7_kernel, fc7_bias])
