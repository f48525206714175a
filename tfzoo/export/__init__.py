"""tfzoo.export: SavedModel and TFLite exports with NMS inside, loading any model format,
and parity checks.

- :func:`export_saved_model`: a SavedModel whose ``serving_default`` takes uint8 images of
  any size and returns detections normalized to the original images
  (:mod:`tfzoo.export.saved_model`);
- :func:`export_tflite`: a ``.tflite`` file (float32, float16, dynamic-range or int8) with
  TFLite builtin ops only (:mod:`tfzoo.export.tflite`);
- :func:`load_model`: a training directory, ``.keras``, ``.tflite``, SavedModel or ``.h5``
  behind one interface (:mod:`tfzoo.export.loading`);
- :func:`compare_detections`, :func:`parity_report`: exports against the Keras model
  (:mod:`tfzoo.export.parity`);
- :func:`freeze_detect`: a detector's ``detect`` with its weights read once into
  constants, faster on an x86 CPU for wide models (:mod:`tfzoo.export.frozen`;
  ``LoadedModel.frozen()``, ``tfzoo predict/evaluate --frozen``).

Every export is written under a temporary name, loaded back and run, and only then
renamed into place (:mod:`tfzoo.export.artifacts`).
"""
from tfzoo.export.artifacts import DETECTION_KEYS, ExportError
from tfzoo.export.frozen import FrozenFunction, freeze_detect
from tfzoo.export.loading import LoadedModel, ModelLoadError, load_model
from tfzoo.export.parity import compare_detections, parity_report
from tfzoo.export.saved_model import export_saved_model
from tfzoo.export.tflite import QUANTIZE_MODES, export_tflite, op_names, read_metadata

__all__ = [
    "DETECTION_KEYS",
    "QUANTIZE_MODES",
    "ExportError",
    "FrozenFunction",
    "LoadedModel",
    "ModelLoadError",
    "compare_detections",
    "export_saved_model",
    "export_tflite",
    "freeze_detect",
    "load_model",
    "op_names",
    "parity_report",
    "read_metadata",
]
