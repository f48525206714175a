"""The training directory: its files, atomic checkpoints, and the folder a worker
other than the chief writes to."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings

#: Files of the training directory.
CONFIG_FILE, MODEL_FILE, STATE_FILE, METRICS_FILE, LOGS_DIR, PLOT_FILE = (
    "config.json", "model.keras", "state.json", "metrics.json", "logs", "training.png")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


class _RunDir:
    """The training directory; workers other than the chief write to a temp folder."""

    def __init__(self, out, chief):
        self.out = os.path.abspath(out)
        self.chief = chief
        self.root = self.out if chief else tempfile.mkdtemp(prefix="tfzoo-worker-")

    def path(self, name):
        return os.path.join(self.root, name)

    def cleanup(self):
        if not self.chief:
            shutil.rmtree(self.root, ignore_errors=True)

#: Where runs go when no ``out`` is given: ``runs/<model>``, then ``runs/<model>-2`` ...
RUNS_DIR = "runs"


class RunDirError(FileExistsError):
    """``out`` holds something a new run must not write over (a run, or a user's files)."""


def is_run(path):
    """Whether ``path`` holds a tfzoo training run (its ``state.json``)."""
    return os.path.isfile(os.path.join(path, STATE_FILE))


def _numbered(model, runs):
    """``[(n, path)]`` of ``runs/<model>`` (n = 1) and ``runs/<model>-<n>``, sorted by n."""
    found = []
    if os.path.isdir(runs):
        for name in os.listdir(runs):
            if name == model:
                found.append((1, os.path.join(runs, name)))
            elif name.startswith(f"{model}-") and name[len(model) + 1:].isdigit():
                found.append((int(name[len(model) + 1:]), os.path.join(runs, name)))
    return sorted(found)


def new_run_dir(model, runs=RUNS_DIR):
    """A folder for a new run of ``model``: ``runs/<model>``, else ``runs/<model>-2``,
    ``-3`` ... after the highest one taken (as Ultralytics names its runs); an earlier run
    is never reused."""
    taken = _numbered(model, runs)
    if not taken:
        return os.path.abspath(os.path.join(runs, model))
    n = taken[-1][0] + 1
    return os.path.abspath(os.path.join(runs, f"{model}-{n}"))


def latest_run_dir(model, runs=RUNS_DIR):
    """The run of ``model`` under ``runs`` with the highest number (what ``--resume``
    without ``--out`` continues); ``RunDirError`` when there is none."""
    runs_found = [path for _, path in _numbered(model, runs) if is_run(path)]
    if not runs_found:
        raise RunDirError(f"no run of {model} under {os.path.abspath(runs)} to resume; give the run's folder "
                          f"with --out")
    return os.path.abspath(runs_found[-1])


def describe_run(path):
    """``"a finished run of retinanet_mobile (12 epochs)"`` or ``"... stopped at epoch 3 of 12"``."""
    try:
        state = _read_json(os.path.join(path, STATE_FILE))
    except (OSError, ValueError):
        return "a run whose state.json cannot be read"
    model, epoch, planned = state.get("model", "?"), state.get("epoch", 0), state.get("planned_epochs", "?")
    if state.get("finished"):
        return f"a finished run of {model} ({epoch} epochs)"
    return f"a run of {model} stopped at epoch {epoch} of {planned}"


def check_new_run(out, overwrite):
    """Refuses to start a new run in ``out`` when it holds a run or other files, unless
    ``overwrite``; nothing is deleted here (see :func:`_start_over`)."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise RunDirError(f"{out}: exists and is not a folder; choose another --out")
    held = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if overwrite or not held:
        return
    if is_run(out):
        raise RunDirError(f"{out} holds {describe_run(out)}: --resume continues it, --overwrite starts a new run "
                          f"over it, or choose another --out")
    raise RunDirError(f"{out} is not empty and holds no tfzoo run ({', '.join(held[:3])}"
                      f"{' ...' if len(held) > 3 else ''}): choose another --out, or --overwrite to write "
                      f"the run's files into it")


def _start_over(out):
    """Prepares ``out`` for a new run (``check_new_run`` allowed it): a previous run there
    is replaced, its model.keras only when the first epoch's checkpoint is written, its
    metrics.json at once."""
    os.makedirs(out, exist_ok=True)
    if is_run(out) or os.path.exists(os.path.join(out, MODEL_FILE)):
        held = describe_run(out) if is_run(out) else f"a {MODEL_FILE}"
        warnings.warn(f"{out} holds {held}: starting a new run over it (--overwrite)")
    if os.path.exists(os.path.join(out, METRICS_FILE)):
        os.remove(os.path.join(out, METRICS_FILE))
