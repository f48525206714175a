"""tfzoo: classic object detectors (R-CNN to SSD) in plain TensorFlow 2 and Keras 3.

``list_models()`` names the registered detectors; ``build_model(name, **overrides)``
builds one. Detectors register themselves in :data:`tfzoo.models.MODELS`.
"""
__version__ = "0.1.0"


def list_models():
    """Names of the registered detector presets, sorted."""
    from tfzoo.models import MODELS

    return sorted(MODELS)


def build_model(name, **overrides):
    """Builds the detector preset ``name`` with config ``overrides`` (keyword arguments)."""
    from tfzoo.models import MODELS

    if name not in MODELS:
        known = ", ".join(sorted(MODELS)) or "none registered yet"
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return MODELS[name](**overrides)
