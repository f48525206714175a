"""Per detector family, what ``bench_model.py`` needs beyond the generic parts: how a
random tfzoo model is made comparable (its class head calibrated to a trained head's
score statistics) and the best peer that runs here. One module per family."""
from __future__ import annotations

try:
    # torch before TensorFlow: with triton installed (torch's default Linux wheels pull it
    # in), importing torchvision's detection models after TensorFlow segfaults in triton's
    # native module (torch 2.14, TensorFlow 2.21); the other order works.
    import torch  # noqa: F401
    import torchvision.models.detection  # noqa: F401
except ImportError:
    pass

from peers import faster_rcnn, retinanet, ssd, yolo  # noqa: E402

#: family (``tfzoo.models.MODELS[name].family``) -> adapter module.
ADAPTERS = {retinanet.FAMILY: retinanet, ssd.FAMILY: ssd, faster_rcnn.FAMILY: faster_rcnn,
            **{family: yolo for family in yolo.FAMILIES}}


def adapter(family):
    """The adapter module of ``family``; ``ValueError`` naming the families benchmarked."""
    if family not in ADAPTERS:
        raise ValueError(f"no benchmark adapter for {family} yet; families: {', '.join(ADAPTERS)}")
    return ADAPTERS[family]
