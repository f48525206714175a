"""What every export shares: its metadata, the output check, and atomic writing.

Metadata (:func:`export_metadata`) travels with every artifact (``export.json`` in a
SavedModel directory, a ``tfzoo`` metadata entry inside a ``.tflite`` file)::

    {"format_version": 1, "tfzoo_version": "0.1.0", "model": "RetinaNet",
     "image_size": [h, w], "keep_aspect_ratio": true, "class_names": [...],
     "config": {...the detector's config dataclass...}, "signatures": {...}}

Exports are written atomically (:mod:`tfzoo.atomic`): built under a temporary name next to
their target, checked (loaded back and run), and only then renamed into place, so a
failure leaves no partial artifact and an earlier artifact intact.
"""
from __future__ import annotations

import numpy as np

#: Keys (and order) of the detections every artifact returns.
DETECTION_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
#: Version of the metadata layout.
FORMAT_VERSION = 1
#: The config file written beside (or inside) an artifact: the detector config dataclass.
CONFIG_FILE = "config.json"
#: The SavedModel's metadata file.
METADATA_FILE = "export.json"


class ExportError(RuntimeError):
    """An export that failed its check; nothing was written at the target."""


def class_names_of(config):
    """The config's class names, or ``class_0 .. class_{K-1}`` when it has none."""
    names = tuple(getattr(config, "class_names", ()) or ())
    return names or tuple(f"class_{i}" for i in range(int(config.num_classes)))


def export_metadata(detector, signatures):
    """The JSON-ready metadata dict of an export of ``detector`` (see the module doc)."""
    import tfzoo

    return {
        "format_version": FORMAT_VERSION,
        "tfzoo_version": tfzoo.__version__,
        "model": type(detector).__name__,
        "image_size": list(detector.image_size),
        "keep_aspect_ratio": bool(detector.encoder.keep_aspect_ratio),
        "class_names": list(class_names_of(detector.config)),
        "config": detector.config.to_dict(),
        "signatures": signatures,
    }


def check_detections(outputs, batch, max_detections, where):
    """Raises :class:`ExportError` unless ``outputs`` are ``batch`` images' detections.

    Checks the four keys, their shapes ``[B, M, 4]``, ``[B, M]``, ``[B, M]``, ``[B]``,
    their dtypes (float32, float32, int32, int32) and that every value is finite.
    """
    missing = [k for k in DETECTION_KEYS if k not in outputs]
    if missing:
        raise ExportError(f"{where}: outputs lack {', '.join(missing)} (got {', '.join(sorted(outputs))})")
    expected = {
        "detection_boxes": ([batch, max_detections, 4], np.float32),
        "detection_scores": ([batch, max_detections], np.float32),
        "detection_classes": ([batch, max_detections], np.int32),
        "num_detections": ([batch], np.int32),
    }
    for key, (shape, dtype) in expected.items():
        value = np.asarray(outputs[key])
        if list(value.shape) != shape or value.dtype != dtype:
            raise ExportError(f"{where}: {key} is {value.dtype.name} {list(value.shape)}, "
                              f"expected {np.dtype(dtype).name} {shape}")
        if not np.all(np.isfinite(value)):
            raise ExportError(f"{where}: {key} holds NaN or Inf")
