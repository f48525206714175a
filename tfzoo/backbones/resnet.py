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


#: torchvision's bottleneck ResNets (``torchvision.models.resnet50``): name -> blocks per stage.
TORCHVISION_RESNETS = {"resnet50_tv": (3, 4, 6, 3)}


def torchvision_resnet(blocks, image_size, alpha=1.0, batchnorm_momentum=None):
    """A bottleneck ResNet laid out as torchvision's (ResNet "v1.5"), for its weights.

    It differs from ``keras.applications.ResNet50`` (v1) where weights of the same shapes
    would compute something else: each stage's first block strides in its 3x3 convolution
    (v1 strides in the first 1x1), and every stride-2 convolution and the stem's max-pool pad
    one side as much as the other, as PyTorch's ``padding=`` does (Keras' ``"same"`` pads an
    even side on the bottom and right only). Stem: 7x7/2 convolution (pad 3), batch norm,
    ReLU, 3x3/2 max-pool (pad 1; zeros equal PyTorch's -inf padding after a ReLU). Then
    bottleneck blocks (1x1, 3x3, 1x1 with four times the width; a 1x1 projection with batch
    norm on the first block's shortcut), widths 64, 128, 256, 512. Batch-norm epsilon 1e-5
    as PyTorch's. Layer names follow keras.applications' (``conv3_block1_2_conv``;
    ``_0_`` is the projection), which :mod:`tfzoo.convert.torchvision` maps
    ``layer2.0.conv2`` onto. Its inputs are normalized as torchvision's ("torch").

    Returns:
      ``(model, {"C2": ..., "C5": ...})``, strides 4, 8, 16, 32.
    """
    if alpha != 1.0:
        raise ValueError("torchvision's ResNets have one width (alpha=1.0)")
    height, width = image_size
    momentum = 0.9 if batchnorm_momentum is None else float(batchnorm_momentum)  # PyTorch's 0.1

    def conv_norm(x, filters, kernel, stride, name, relu=True):
        pad = kernel // 2
        if pad and stride > 1:
            x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        x = Conv2D(filters, kernel, stride, padding="valid" if stride > 1 else "same", use_bias=False,
                   kernel_initializer="he_normal", name=f"{name}_conv")(x)
        x = FusedBatchNormalization(momentum=momentum, epsilon=1e-5, name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input((height, width, 3), name="image")
    x = conv_norm(inputs, 64, 7, 2, "conv1")
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, name="pool1_pool")(x)
    features = {}
    for stage, (filters, count) in enumerate(zip((64, 128, 256, 512), blocks), start=2):
        for block in range(1, count + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            name = f"conv{stage}_block{block}"
            shortcut = x
            if block == 1:
                shortcut = conv_norm(x, 4 * filters, 1, stride, f"{name}_0", relu=False)
            y = conv_norm(x, filters, 1, 1, f"{name}_1")
            y = conv_norm(y, filters, 3, stride, f"{name}_2")
            y = conv_norm(y, 4 * filters, 1, 1, f"{name}_3", relu=False)
            x = keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))
        features[f"C{stage}"] = x
    return keras.Model(inputs, features, name="torchvision_resnet"), features
