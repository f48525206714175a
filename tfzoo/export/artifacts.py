"""What every export shares: its metadata, the output check, and atomic writing.

Metadata (:func:`export_metadata`) travels with every artifact (``export.json`` in a
SavedModel directory, a ``tfzoo`` metadata entry inside a ``.tflite`` file)::

    {"format_version": 1, "tfzoo_version": "0.1.0", "model": "RetinaNet",
     "image_size": [h, w], "keep_aspect_ratio": true, "class_names": [...],
     "config": {...the detector's config dataclass...}, "signatures": {...}}

Atomic writing: an artifact is built under a temporary name next to its target, checked
(loaded back and run), and only then renamed into place, so a failure leaves no partial
artifact and an earlier artifact intact.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

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


def _temp_name(path, kind):
    directory, name = os.path.split(os.path.abspath(path))
    return directory, f".{name}.{kind}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_file(path, suffix=""):
    """Yields a temporary file path next to ``path`` (ending in ``suffix``, for writers that
    insist on one, like Keras' ``.weights.h5``); on a clean exit it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, expected a file path")
    directory, prefix = _temp_name(path, "tmp")
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        if os.path.isfile(tmp):
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path, payload, sort_keys=True):
    """Writes ``payload`` as indented JSON (not atomic: for files inside a temp directory)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=sort_keys)
        f.write("\n")


def write_json_atomic(path, payload, sort_keys=True):
    """Writes ``payload`` as JSON to ``path`` atomically (:func:`atomic_file`): a failure
    leaves any earlier file intact and no temporary file behind."""
    with atomic_file(path) as tmp:
        write_json(tmp, payload, sort_keys=sort_keys)


@contextlib.contextmanager
def atomic_directory(path, is_replaceable):
    """Yields a temporary directory next to ``path``; on a clean exit it becomes ``path``.

    An existing ``path`` is replaced only if ``is_replaceable(path)`` (an earlier artifact
    of the same kind, or an empty directory); anything else is refused before any work,
    so a mistyped ``--out`` never deletes a user's folder. POSIX cannot swap two
    directories atomically: the old one is moved aside, the new one moved in, and the
    old one deleted (restored if the move fails).
    """
    path = os.path.abspath(path)
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise FileExistsError(f"{path}: exists and is not a directory")
        if os.listdir(path) and not is_replaceable(path):
            raise FileExistsError(f"{path}: exists and is not an earlier export of this kind; "
                                  "choose a new path or remove it")
    directory, prefix = _temp_name(path, "tmp")
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=directory)
    try:
        yield tmp
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=_temp_name(path, "old")[1], dir=directory)
            os.rmdir(old)
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
