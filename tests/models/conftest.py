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


def tiny_settings(name, **overrides):
    """``["key=value", ...]`` (``tfzoo train --set`` / ``settings=``) of preset ``name``'s tiny
    config (its detector's ``tiny``) with ``overrides``; the image size and the classes are
    left to the run (its ``image_size`` argument, its data)."""
    import json  # noqa: PLC0415

    from tfzoo.models import MODELS  # noqa: PLC0415

    tiny = {**MODELS[name].detector.tiny, **overrides}
    return [f"{k}={json.dumps(v)}" for k, v in tiny.items() if k not in ("image_size", "num_classes")]


@pytest.fixture(scope="module")
def tiny_mobile():
    return build_tiny("retinanet_mobile")
