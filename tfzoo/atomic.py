"""Atomic writing: a file or directory is built under a temporary name next to its
target and renamed into place only when complete, so a failure (an exception, an
interrupt, a full disk) leaves no partial file and an earlier one intact. Training
(checkpoints, state and metrics), evaluation (``--json``, plots) and export use it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile


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


def save_keras_atomic(model, path):
    """``model.save(path)`` through :func:`atomic_file` (a ``.keras`` temp file beside it)."""
    with atomic_file(path, suffix=".keras") as tmp:
        model.save(tmp)
