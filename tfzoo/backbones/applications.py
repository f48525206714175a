"""``keras.applications`` classifiers as backbones (ImageNet weights for users with
internet): ResNet-50/101, MobileNetV2, VGG-16."""
from __future__ import annotations

import contextlib
import sys
import warnings

import keras

from tfzoo.backbones.surgery import with_batchnorm
from tfzoo.layers import Conv2D, FusedBatchNormalization

#: name -> (application constructor, {feature: layer name}, preprocessing mode). Feature
#: ``Ck`` is the last map at stride ``2**k`` (VGG-16's conv4_3 is C3, conv5_3 C4, as
#: SSD and Faster R-CNN use them).
APPLICATIONS = {
    "resnet50": (
        "ResNet50",
        {"C2": "conv2_block3_out", "C3": "conv3_block4_out", "C4": "conv4_block6_out", "C5": "conv5_block3_out"},
        "caffe",
    ),
    "resnet101": (
        "ResNet101",
        {"C2": "conv2_block3_out", "C3": "conv3_block4_out", "C4": "conv4_block23_out", "C5": "conv5_block3_out"},
        "caffe",
    ),
    "mobilenet_v2": (
        "MobileNetV2",
        {"C2": "block_3_expand_relu", "C3": "block_6_expand_relu", "C4": "block_13_expand_relu", "C5": "out_relu"},
        "tf",
    ),
    "vgg16": (
        "VGG16",
        {"C1": "block2_conv2", "C2": "block3_conv3", "C3": "block4_conv3", "C4": "block5_conv3", "C5": "block5_pool"},
        "caffe",
    ),
}
#: Applications that take a width multiplier.
WITH_ALPHA = ("mobilenet_v2",)


class WeightsUnavailableError(OSError):
    """The ImageNet weights could not be downloaded (no network, a proxy, a full disk)."""


def _application(constructor, weights, input_shape, include_top=False, **kwargs):
    """``keras.applications.<constructor>`` without its classifier, quietly: the download
    note goes to stderr (stdout is for results), the warning that ImageNet weights for a
    224 input are used at another size is dropped (the convolutions do not depend on the
    size), and a failed download is one :class:`WeightsUnavailableError` that says how to
    build without the weights."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.filterwarnings("ignore", message=r"`input_shape` is undefined or non-square")
            return getattr(keras.applications, constructor)(
                include_top=include_top, weights=weights, input_shape=input_shape, **kwargs
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


def application_backbone(name, input_shape, weights=None, alpha=1.0, batchnorm_momentum=None):
    """``(model, {feature: tensor})`` of application ``name`` without its classifier,
    batch norms fused (:class:`FusedBatchNormalization`), biases before them folded and
    its convolutions tfzoo's :class:`~tfzoo.layers.Conv2D` (:func:`with_batchnorm`)."""
    constructor, feature_layers, _ = APPLICATIONS[name]
    if name not in WITH_ALPHA and alpha != 1.0:
        raise ValueError(f"alpha does not apply to {name}")
    kwargs = {"alpha": alpha} if name in WITH_ALPHA else {}
    app = _application(constructor, weights, input_shape, **kwargs)
    app = with_batchnorm(app, FusedBatchNormalization, batchnorm_momentum, drop_conv_bias=True, conv_class=Conv2D)
    return app, {feature: app.get_layer(layer).output for feature, layer in feature_layers.items()}
