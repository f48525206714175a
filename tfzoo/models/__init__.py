"""Detector presets. ``MODELS`` maps a preset name to a builder ``(**overrides) -> keras.Model``.

The table is the zoo's only registry; each detector module adds its presets here.
"""
from tfzoo.models import retinanet

MODELS = {name: retinanet.builder(name) for name in retinanet.PRESETS}
