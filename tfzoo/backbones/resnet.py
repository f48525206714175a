"""tfzoo's basic-block ResNets (ResNet-10/18) for training from scratch on a CPU."""
from __future__ import annotations

import keras

from tfzoo.layers import Conv2D, FusedBatchNormalization

#: tfzoo's basic-block ResNets: name -> blocks per stage (strides 4, 8, 16, 32).
BASIC_RESNETS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2)}

#: Widths of the basic-block ResNets' stages at ``alpha=1``.
BASIC_RESNET_WIDTHS = (64, 128, 256, 512)


def basic_resnet(blocks, image_size, alpha=1.0, batchnorm_momentum=None):
    """A basic-block ResNet (see the module doc) with ``blocks[i]`` blocks in stage ``i``.

    Stem: 3x3 stride-2 convolutions to ``32 * alpha`` then ``64 * alpha`` channels (stride
    4); each stage then halves the resolution in its first block (the first stage keeps
    it) with a projection shortcut (1x1 convolution + batch norm) where the shape changes.
    Every convolution is followed by batch norm (no bias) and ReLU, after the residual sum
    in each block; He-normal initialization, for training from scratch (there are no
    ImageNet weights; :func:`tfzoo.backbones.build_backbone` loads a weights file).

    Returns:
      ``(model, {"C2": ..., "C5": ...})``: the model's outputs are the four stage outputs,
      strides 4, 8, 16, 32.
    """
    height, width = image_size
    momentum = 0.99 if batchnorm_momentum is None else float(batchnorm_momentum)
    widths = [max(8, int(round(w * alpha / 8)) * 8) for w in BASIC_RESNET_WIDTHS]

    def conv_norm(x, filters, kernel, stride, name, relu=True):
        x = Conv2D(filters, kernel, stride, padding="same", use_bias=False, kernel_initializer="he_normal",
                   name=f"{name}_conv")(x)
        x = FusedBatchNormalization(momentum=momentum, epsilon=1e-5, name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input((height, width, 3), name="image")
    x = conv_norm(inputs, max(8, widths[0] // 2), 3, 2, "stem1")
    x = conv_norm(x, widths[0], 3, 2, "stem2")
    features = {}
    for stage, (filters, count) in enumerate(zip(widths, blocks), start=1):
        for block in range(1, count + 1):
            stride = 2 if block == 1 and stage > 1 else 1
            name = f"stage{stage}_block{block}"
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = conv_norm(x, filters, 1, stride, f"{name}_proj", relu=False)
            y = conv_norm(x, filters, 3, stride, f"{name}_1")
            y = conv_norm(y, filters, 3, 1, f"{name}_2", relu=False)
            x = keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))
        features[f"C{stage + 1}"] = x
    return keras.Model(inputs, features, name="basic_resnet"), features
