"""Tiny configurations of every registered detector, for fast contract tests."""
import pytest

import tfzoo

#: Overrides that make each preset small enough for a CPU unit test.
TINY = {
    "retinanet": dict(image_size=64, fpn_channels=16, head_channels=16, head_convs=1),
    "retinanet_r101": dict(image_size=64, fpn_channels=16, head_channels=16, head_convs=1),
    "retinanet_mobile": dict(image_size=64, backbone_alpha=0.35, fpn_channels=16, head_channels=16, head_convs=1),
}


def build_tiny(name, num_classes=3, **overrides):
    """The preset ``name`` with the tiny overrides, random weights, ``num_classes``."""
    settings = {**TINY[name], "backbone_weights": None, "num_classes": num_classes, **overrides}
    return tfzoo.build_model(name, **settings)


@pytest.fixture(scope="module")
def tiny_mobile():
    return build_tiny("retinanet_mobile")
