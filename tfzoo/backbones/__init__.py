"""Backbones: functional ``keras.Model`` feature extractors with named feature maps.

``build_backbone(name, image_size, weights, features=("C3", "C4", "C5"))`` returns a model
named ``backbone`` mapping a *preprocessed* image ``[B, H, W, 3]`` to a dict of feature
maps: ``"Ck"`` is the last map at stride ``2**k`` (``C2`` stride 4 ... ``C5`` stride 32;
:data:`FEATURES` lists each backbone's). ``PREPROCESSING[name]`` names the pixel
normalization its weights expect; a detector applies it with
:class:`tfzoo.layers.ImageNormalization`, so that its own inputs stay RGB pixels in
[0, 255]. Any input size of at least 32 pixels a side works; a map's side is the input's
divided by its stride, rounded (up for tfzoo's own, down where keras.applications pool
"valid"); a detector whose anchors need exact strides requires its own multiple
(``DetectorConfig.size_divisor``).

===============  =======================================  ===============  ==========
name             module                                   features         ImageNet
===============  =======================================  ===============  ==========
``resnet50``     :mod:`.applications` (keras.applications) C2-C5            yes
``resnet101``    :mod:`.applications`                      C2-C5            yes
``mobilenet_v2`` :mod:`.applications`                      C2-C5            yes
``vgg16``        :mod:`.applications`                      C1-C5            yes
``resnet10/18``  :mod:`.resnet` (tfzoo's basic-block)      C2-C5            no
``resnet50_tv``  :mod:`.resnet` (torchvision's layout)     C2-C5            converted
``darknet19``    :mod:`.darknet` (YOLOv2)                  C3-C5            no
``darknet53``    :mod:`.darknet` (YOLOv3)                  C3-C5            no
``darknet_tiny`` :mod:`.darknet` (tiny YOLOv2/v3)           C4-C5            no
``yolov1``       :mod:`.darknet` (YOLOv1's 24 convolutions)  C6               no
``fast_yolo``    :mod:`.darknet` (Fast YOLO's 9)             C6               no
===============  =======================================  ===============  ==========

A Darknet trunk also takes one of Darknet's ``.weights`` files as ``weights`` (the
ImageNet-pretrained ``darknet53.conv.74`` or ``darknet19_448.conv.23``: their first
convolutions, in order; :func:`tfzoo.backbones.darknet.load_darknet_weights`).

``weights="imagenet"`` downloads the ImageNet classifier weights through Keras (users with
internet; :class:`WeightsUnavailableError` when that fails); ``weights=None`` starts from
random initialization (tests, offline machines); a path loads a weights file.

``resnet10`` and ``resnet18`` are the basic-block ResNets of He et al. 2016 (table 1's
18-layer design; 10 layers = one block per stage) with a stem of two 3x3 stride-2
convolutions in place of the 7x7 convolution and max-pool, widths 64, 128, 256, 512 times
``alpha``. Dense 3x3 convolutions use a CPU far better than MobileNetV2's depthwise ones:
at 320, batch 16, on 2 cores, ``resnet10`` at ``alpha=0.5`` (1.2 M parameters) runs its
forward + backward pass in 150 ms where MobileNetV2 at 0.5 (0.7 M) takes 353 ms
(``benchmarks/bench_train_step.py --image-size 320 --backbone mobilenet_v2
--also-backbone resnet10``).
"""
from __future__ import annotations

import functools

import keras

from tfzoo.backbones.applications import APPLICATIONS, WITH_ALPHA, WeightsUnavailableError, application_backbone
from tfzoo.backbones.darknet import (darknet19, darknet53, darknet_tiny, fast_yolo_trunk, load_darknet_weights,
                                     yolov1_trunk)
from tfzoo.backbones.resnet import (BASIC_RESNET_WIDTHS, BASIC_RESNETS, TORCHVISION_RESNETS, basic_resnet,
                                    torchvision_resnet)
from tfzoo.backbones.surgery import with_batchnorm

#: The Darknet trunks, which also load Darknet's own ``.weights`` files.
DARKNETS = ("darknet19", "darknet53", "darknet_tiny", "yolov1", "fast_yolo")


def _is_keras_weights(path):
    """Whether ``path`` is a Keras weights file (HDF5, or a ``.keras`` zip) rather than
    Darknet's format."""
    with open(path, "rb") as f:
        head = f.read(8)
    return head == b"\x89HDF\r\n\x1a\n" or head.startswith(b"PK\x03\x04")


#: tfzoo's own backbones (no ImageNet weights): name -> builder ``(image_size (h, w),
#: alpha, batchnorm_momentum) -> (model, {feature: tensor})``.
_OWN = {
    **{name: functools.partial(basic_resnet, blocks) for name, blocks in BASIC_RESNETS.items()},
    **{name: functools.partial(torchvision_resnet, blocks) for name, blocks in TORCHVISION_RESNETS.items()},
    "darknet19": darknet19,
    "darknet53": darknet53,
    "darknet_tiny": darknet_tiny,
    "yolov1": yolov1_trunk,
    "fast_yolo": fast_yolo_trunk,
}
#: Backbones with a width multiplier.
_WITH_ALPHA = (*WITH_ALPHA, *BASIC_RESNETS, "darknet19", "darknet53", "darknet_tiny", "yolov1", "fast_yolo")
#: Backbone names accepted by :func:`build_backbone`.
BACKBONES = tuple(sorted((*APPLICATIONS, *_OWN)))
#: Feature maps each backbone offers (``"Ck"``: stride ``2**k``).
FEATURES = {
    **{name: tuple(spec[1]) for name, spec in APPLICATIONS.items()},
    **{name: ("C2", "C3", "C4", "C5") for name in (*BASIC_RESNETS, *TORCHVISION_RESNETS)},
    "darknet19": ("C3", "C4", "C5"),
    "darknet53": ("C3", "C4", "C5"),
    "darknet_tiny": ("C4", "C5"),
    "yolov1": ("C6",),
    "fast_yolo": ("C6",),
}
#: Pixel normalization each backbone's weights expect (see ImageNormalization).
PREPROCESSING = {
    **{name: spec[2] for name, spec in APPLICATIONS.items()},
    **{name: "tf" for name in BASIC_RESNETS},
    **{name: "torch" for name in TORCHVISION_RESNETS},
    "darknet19": "unit",
    "darknet53": "unit",
    "darknet_tiny": "unit",
    "yolov1": "unit",
    "fast_yolo": "unit",
}
#: The smallest input side :func:`build_backbone` takes.
MIN_INPUT_SIDE = 32


def build_backbone(name, image_size, weights=None, alpha=1.0, batchnorm_momentum=None,
                   features=("C3", "C4", "C5")):
    """The feature extractor ``name`` for ``image_size`` (int or (h, w)).

    Args:
      name: one of :data:`BACKBONES`.
      image_size: model input size in pixels, at least :data:`MIN_INPUT_SIDE` a side.
      weights: ``"imagenet"`` (keras.applications backbones), ``None`` or a weights file
        path (a file this function's model saved, or for an application the file Keras
        loads into the classifier, e.g. ``python -m tfzoo.pretrain`` output).
      alpha: width multiplier (MobileNetV2 and the basic-block ResNets).
      batchnorm_momentum: if set, the momentum of every batch-norm layer's moving
        statistics (keras.applications: 0.99 for ResNets, 0.999 for MobileNetV2).
      features: the maps to output, from :data:`FEATURES` ``[name]``.

    The batch-norm layers are :class:`tfzoo.layers.FusedBatchNormalization` (the same
    normalization, TensorFlow's fused kernel: MobileNetV2's training pass is 1.6x faster),
    and convolutions that feed a batch norm have no bias (the applications' biases move
    into the moving means; same features, one pass less per layer).

    Returns:
      ``keras.Model`` named ``"backbone"``: ``[B, H, W, 3] -> {feature: [B, h, w, C]}``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(height, width) < MIN_INPUT_SIDE:
        raise ValueError(f"image_size must be at least {MIN_INPUT_SIDE} on both sides, got {height}x{width}")
    unknown = [f for f in features if f not in FEATURES[name]]
    if unknown or not features:
        raise ValueError(f"{name} has no feature map(s) {', '.join(unknown) or '(none asked for)'}; it has "
                         f"{', '.join(FEATURES[name])}")
    if name not in _WITH_ALPHA and alpha != 1.0:
        raise ValueError(f"alpha applies to {', '.join(_WITH_ALPHA)} only, not {name}")
    if name in APPLICATIONS:
        model, maps = application_backbone(name, (height, width, 3), weights, alpha, batchnorm_momentum)
    else:
        if weights == "imagenet":
            raise ValueError(f"{name} is tfzoo's own and has no ImageNet weights: use weights=None (random "
                             "initialization) or a weights file")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        model, maps = _OWN[name]((height, width), alpha, batchnorm_momentum)
    backbone = keras.Model(model.input, {f: maps[f] for f in features}, name="backbone")
    if name not in APPLICATIONS and weights is not None:
        if name in DARKNETS and not _is_keras_weights(weights):
            load_darknet_weights(model, weights)  # a Darknet .weights file (darknet53.conv.74 ...)
        else:
            backbone.load_weights(weights)
    return backbone


__all__ = [
    "BACKBONES", "BASIC_RESNETS", "BASIC_RESNET_WIDTHS", "FEATURES", "MIN_INPUT_SIDE", "PREPROCESSING",
    "WeightsUnavailableError", "basic_resnet", "build_backbone", "darknet19", "darknet53", "darknet_tiny", "with_batchnorm",
]
