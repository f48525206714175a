"""Per detector family, what ``bench_model.py`` needs beyond the generic parts: how a
random tfzoo model is made comparable (its class head calibrated to a trained head's
score statistics) and the best peer that runs here. One module per family."""
from __future__ import annotations

from peers import retinanet, ssd

#: family (``tfzoo.models.MODELS[name].family``) -> adapter module.
ADAPTERS = {retinanet.FAMILY: retinanet, ssd.FAMILY: ssd}


def adapter(family):
    """The adapter module of ``family``; ``ValueError`` naming the families benchmarked."""
    if family not in ADAPTERS:
        raise ValueError(f"no benchmark adapter for {family} yet; families: {', '.join(ADAPTERS)}")
    return ADAPTERS[family]
