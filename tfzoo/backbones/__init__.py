"""Backbones cut at their stride-8/16/32 feature maps: ``keras.applications`` models and
small basic-block ResNets for training from scratch on a CPU.

``build_backbone(name, image_size, weights)`` returns a functional ``keras.Model`` named
``backbone`` mapping a *preprocessed* image ``[B, H, W, 3]`` to ``[C3, C4, C5]`` (strides
8, 16, 32). ``PREPROCESSING[name]`` names the pixel normalization the weights expect; a
detector applies it with :class:`tfzoo.layers.ImageNormalization` so that its own inputs
stay RGB pixels in [0, 255].

``weights="imagenet"`` downloads the ImageNet classifier weights through Keras (users with
internet); ``weights=None`` starts from random initialization (tests, offline machines);
a path loads a weights file.

``resnet10`` and ``resnet18`` are tfzoo's own (no ImageNet weights): the basic-block ResNets
of He et al. 2016 (table 1's 18-layer design; 10 layers = one block per stage) with a stem
of two 3x3 stride-2 convolutions in place of the 7x7 convolution and max-pool, widths 64,
128, 256, 512 times ``alpha``. Dense 3x3 convolutions use a CPU far better than
MobileNetV2's depthwise ones: at 320, batch 16, on 2 cores, ``resnet10`` at ``alpha=0.5``
(1.2 M parameters) runs its forward + backward pass in 150 ms where MobileNetV2 at 0.5
(0.7 M) takes 353 ms (``benchmarks/bench_train_step.py --image-size 320 --backbone
mobilenet_v2 --also-backbone resnet10``).
"""
from __future__ import annotations

import contextlib
import sys
import warnings

import keras

from tfzoo.layers import Conv2D, FusedBatchNormalization

#: name -> (application constructor, [C3, C4, C5] layer names, preprocessing mode)
_BACKBONES = {
    "resnet50": (
        "ResNet50",
        ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        "caffe",
    ),
    "resnet101": (
        "ResNet101",
        ("conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
        "caffe",
    ),
    "mobilenet_v2": (
        "MobileNetV2",
        ("block_6_expand_relu", "block_13_expand_relu", "out_relu"),
        "tf",
    ),
}

#: tfzoo's basic-block ResNets: name -> blocks per stage (strides 4, 8, 16, 32).
BASIC_RESNETS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2)}
#: Widths of the basic-block ResNets' stages at ``alpha=1``.
BASIC_RESNET_WIDTHS = (64, 128, 256, 512)

#: Backbone names accepted by :func:`build_backbone`.
BACKBONES = tuple(sorted((*_BACKBONES, *BASIC_RESNETS)))
#: Pixel normalization each backbone's ImageNet weights expect (see ImageNormalization).
PREPROCESSING = {**{name: spec[2] for name, spec in _BACKBONES.items()}, **{name: "tf" for name in BASIC_RESNETS}}


def build_backbone(name, image_size, weights=None, alpha=1.0, batchnorm_momentum=None):
    """The ``[C3, C4, C5]`` feature extractor ``name`` for ``image_size`` (int or (h, w)).

    Args:
      name: one of :data:`BACKBONES`.
      image_size: model input size in pixels; both sides must be multiples of 32.
      weights: ``"imagenet"``, ``None`` or a weights file path.
      alpha: width multiplier (MobileNetV2 and the basic-block ResNets).
      batchnorm_momentum: if set, the momentum of every batch-norm layer's moving
        statistics (keras.applications: 0.99 for ResNets, 0.999 for MobileNetV2).

    The batch-norm layers are :class:`tfzoo.layers.FusedBatchNormalization` (the same
    normalization, TensorFlow's fused kernel: MobileNetV2's training pass is 1.6x faster),
    and convolutions that feed a batch norm have no bias (``drop_conv_bias``: the
    ResNets' biases move into the moving means; same features, one pass less per layer).

    Returns:
      ``keras.Model`` named ``"backbone"``: ``[B, H, W, 3] -> [C3, C4, C5]``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height % 32 or width % 32:
        raise ValueError(f"image_size must be a multiple of 32 on both sides, got {height}x{width}")
    if name in BASIC_RESNETS:
        return basic_resnet(BASIC_RESNETS[name], (height, width), weights, alpha, batchnorm_momentum)
    constructor, feature_names, _ = _BACKBONES[name]
    kwargs = {"alpha": alpha} if name == "mobilenet_v2" else {}
    if name != "mobilenet_v2" and alpha != 1.0:
        raise ValueError(f"alpha applies to mobilenet_v2, {', '.join(BASIC_RESNETS)} only, not {name}")
    app = _application(constructor, weights, (height, width, 3), **kwargs)
    app = with_batchnorm(app, FusedBatchNormalization, batchnorm_momentum, drop_conv_bias=True, conv_class=Conv2D)
    outputs = [app.get_layer(layer_name).output for layer_name in feature_names]
    return keras.Model(app.input, outputs, name="backbone")


class WeightsUnavailableError(OSError):
    """The ImageNet weights could not be downloaded (no network, a proxy, a full disk)."""


def _application(constructor, weights, input_shape, **kwargs):
    """``keras.applications.<constructor>`` without its classifier, quietly: the download
    note goes to stderr (stdout is for results), the warning that ImageNet weights for a
    224 input are used at another size is dropped (the convolutions do not depend on the
    size), and a failed download is one :class:`WeightsUnavailableError` that says how to
    build without the weights."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.filterwarnings("ignore", message=r"`input_shape` is undefined or non-square")
            return getattr(keras.applications, constructor)(
                include_top=False, weights=weights, input_shape=input_shape, **kwargs
            )
    except Exception as error:
        if weights != "imagenet" or not ("URL fetch failure" in str(error) or isinstance(error, OSError)):
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsUnavailableError(
            f"could not download the ImageNet weights of {constructor} ({reason}). Build without them: "
            f"backbone_weights=None (tfzoo train: --set backbone_weights=null), or copy the weights file "
            f"into ~/.keras/models/ on this machine"
        ) from error


def basic_resnet(blocks, image_size, weights=None, alpha=1.0, batchnorm_momentum=None):
    """A basic-block ResNet (see the module doc) with ``blocks[i]`` blocks in stage ``i``.

    Stem: 3x3 stride-2 convolutions to ``32 * alpha`` then ``64 * alpha`` channels (stride
    4); each stage then halves the resolution in its first block (the first stage keeps
    it) with a projection shortcut (1x1 convolution + batch norm) where the shape changes.
    Every convolution is followed by batch norm (no bias) and ReLU, after the residual sum
    in each block. ``weights``: ``None`` (He-normal initialization, for training from
    scratch) or a weights file; there are no ImageNet weights to download.

    Returns:
      ``keras.Model`` named ``"backbone"``: ``[B, H, W, 3] -> [C3, C4, C5]``.
    """
    if weights == "imagenet":
        raise ValueError("the basic-block ResNets (resnet10, resnet18) have no ImageNet weights: use "
                         "weights=None (random initialization) or a weights file")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
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
    features = []
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
        features.append(x)
    model = keras.Model(inputs, features[1:], name="backbone")
    if weights is not None:
        model.load_weights(weights)
    return model


def with_batchnorm(model, layer_class=None, momentum=None, drop_conv_bias=False, conv_class=None):
    """A copy of functional ``model`` (weights included), made in one clone pass, whose
    batch-norm layers are ``layer_class`` (a ``keras.layers.BatchNormalization`` subclass,
    or that class itself; None keeps each layer's class), with ``momentum`` if given.

    ``drop_conv_bias``: also remove the bias of every channels-last ``Conv2D`` whose output
    only feeds a batch norm over channels, moving it into that norm's moving mean. Batch
    norm cancels a per-channel constant: in training the batch mean absorbs it (the bias
    gets no gradient), in inference the moving mean now does. So the copy computes the same
    features without a bias-add pass over each activation map, and TensorFlow's graph
    optimizer can fuse the convolution with the inference batch norm (ResNet-50 at 512:
    inference 1.16x, training 1.08x faster).

    ``conv_class``: rebuild each stock ``keras.layers.Conv2D`` as this subclass (same config
    and weights), e.g. :class:`tfzoo.layers.Conv2D` for its faster CPU inference.
    """
    folded = _conv_bias_folds(model) if drop_conv_bias else {}  # conv name -> norm name

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            if momentum is not None:
                config["momentum"] = float(momentum)
            return (layer_class or layer.__class__).from_config(config)
        if layer.name in folded:
            config["use_bias"] = False
        if conv_class is not None and type(layer) is keras.layers.Conv2D:
            return conv_class.from_config(config)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    if not folded:
        copy.set_weights(model.get_weights())
        return copy
    norms = {norm: conv for conv, norm in folded.items()}
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name in folded:
            weights = weights[:1]  # the kernel
        elif layer.name in norms:
            bias = model.get_layer(norms[layer.name]).get_weights()[1]
            weights[-2] = weights[-2] - bias  # [gamma], [beta], moving_mean, moving_variance
        copy.get_layer(layer.name).set_weights(weights)
    return copy


def _feeds_only_batchnorm(layer):
    """The batch-norm layer that is the only consumer of ``layer``'s one output, else None."""
    if len(layer._inbound_nodes) != 1 or len(layer._outbound_nodes) != 1:
        return None
    consumer = layer._outbound_nodes[0].operation
    if isinstance(consumer, keras.layers.BatchNormalization) and consumer.axis in (-1, 3):
        return consumer
    return None


def _conv_bias_folds(model):
    """``{conv name: batch-norm name}`` for the convolutions :func:`with_batchnorm` can
    drop the bias of."""
    folded = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias and layer.data_format == "channels_last":
            norm = _feeds_only_batchnorm(layer)
            if norm is not None:
                folded[layer.name] = norm.name
    return folded

