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

def _start_over(out):
    """Prepares ``out`` for a new run: a previous run there is replaced (its model.keras
    only when the first epoch's checkpoint is written; its metrics.json at once)."""
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, MODEL_FILE)) or os.path.exists(os.path.join(out, STATE_FILE)):
        warnings.warn(f"{out} holds a previous run: starting a new one over it (resume=True would continue it)")
    if os.path.exists(os.path.join(out, METRICS_FILE)):
        os.remove(os.path.join(out, METRICS_FILE))
