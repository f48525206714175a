"""The config a run trains with: a preset, ``--set`` settings, the data's classes and the
learning rate scaled to the actual batch size."""
from __future__ import annotations

#: ``backbone_weights`` default of :func:`train`: the config's value.
FROM_CONFIG = "from-config"


def preset_config(model):
    """The config of preset ``model`` (:data:`tfzoo.models.MODELS`)."""
    from tfzoo import models

    if model not in models.MODELS:
        known = ", ".join(sorted(models.MODELS)) or "none registered yet"
        raise ValueError(f"unknown model {model!r}; known models: {known}")
    return models.MODELS[model].config


def fixed_size_message(model, config):
    """Why ``model`` refuses another input size."""
    return (f"{model} has fixed-size layers (fully connected on its last feature map) and takes "
            f"{config.image_size} x {config.image_size} inputs only; --image-size does not apply")


def _setting_keys(settings):
    """Config fields named in ``["key=value", ...]`` (``with_settings`` parses the values)."""
    return {item.partition("=")[0].strip() for item in settings or ()}


def resolve_config(model, class_names, *, image_size=None, batch_size=None, epochs=None, settings=(),
                   backbone_weights=FROM_CONFIG):
    """The config a run trains with: the preset, ``settings``, the data's classes, the
    overrides, and the learning rate scaled to the actual batch size.

    The preset's ``learning_rate`` is meant for its ``batch_size``; another batch size
    (``batch_size`` or ``--set batch_size=N``) scales it linearly, unless ``learning_rate``
    is set in ``settings`` (then it is taken as the rate for the actual batch).
    """
    preset = preset_config(model)
    config = preset.with_settings(settings)
    explicit = _setting_keys(settings)
    overrides = {"num_classes": len(class_names), "class_names": tuple(class_names)}
    if image_size is not None:
        if type(preset).fixed_size and int(image_size) != preset.image_size:
            raise ValueError(fixed_size_message(model, preset))
        overrides["image_size"] = int(image_size)
    if epochs is not None:
        overrides["epochs"] = int(epochs)
    if backbone_weights != FROM_CONFIG:
        overrides["backbone_weights"] = backbone_weights
    actual = int(batch_size) if batch_size is not None else config.batch_size
    if actual < 1:
        raise ValueError(f"batch_size must be >= 1, got {actual}")
    overrides["batch_size"] = actual
    if "learning_rate" not in explicit:
        overrides["learning_rate"] = preset.learning_rate * actual / preset.batch_size
    config = config.replace(**overrides)
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    return config


def _requested_fields(settings, image_size, batch_size, epochs):
    """Config fields a call sets explicitly (what a resume must agree with)."""
    fields = _setting_keys(settings) | {"num_classes", "class_names"}
    if image_size is not None:
        fields.add("image_size")
    if batch_size is not None or "batch_size" in fields:
        fields |= {"batch_size", "learning_rate"}
    if epochs is not None:
        fields.add("epochs")
    return fields - {"backbone_weights"}  # only the initialization; a resume loads weights
