"""Timing helpers shared by the scripts in ``benchmarks/``.

The scripts run as ``python benchmarks/<script>.py``, so this module is imported as
``common`` (the script's own folder is first on ``sys.path``).

- :func:`time_calls`: warm-up calls, then timed calls of one function (seconds each);
- :func:`interleaved`: the same for several functions, taken in turns (round-robin, order
  rotated every round), so that load from other processes on a shared machine falls on
  every contender alike;
- :func:`spread`: median, min, max and quartiles of a list of measurements;
  :func:`paired_ratios`: the same of the per-round ratios of two interleaved contenders;
- :func:`epoch`: iterates a dataset once, returning seconds and images;
- :func:`environment`: the machine and library versions, to print beside every figure.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import time


def _materialize(result):
    """Forces lazily computed results (tensors) to the host, so their time is counted."""
    import tensorflow as tf

    for leaf in tf.nest.flatten(result):
        if hasattr(leaf, "numpy"):
            leaf.numpy()
    return result


def time_call(fn):
    """Seconds of one ``fn()`` call, outputs brought to the host."""
    start = time.perf_counter()
    _materialize(fn())
    return time.perf_counter() - start


def time_calls(fn, warmup, repeats):
    """``repeats`` timed calls of ``fn()`` after ``warmup`` untimed ones; seconds each."""
    for _ in range(warmup):
        _materialize(fn())
    return [time_call(fn) for _ in range(repeats)]


def interleaved(fns, warmup, repeats):
    """``{name: [seconds, ...]}`` of each ``fns[name]()``, taken in turns.

    Each function first runs ``warmup`` times (tracing, caches); then ``repeats`` rounds
    call every function once, starting each round one place further down the list.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            _materialize(fns[name]())
    runs = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(time_call(fns[name]))
    return runs


def spread(values):
    """``{"median", "min", "max", "q1", "q3", "n"}`` of a list of numbers."""
    values = sorted(float(v) for v in values)
    if not values:
        raise ValueError("spread() needs at least one value")
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"median": statistics.median(values), "min": values[0], "max": values[-1], "q1": q1, "q3": q3,
            "n": len(values)}


def paired_ratios(numerators, denominators):
    """:func:`spread` of ``numerators[i] / denominators[i]``: the ratio within each round
    of an :func:`interleaved` measurement, which slow drifts of the machine's load (taken
    alike by both sides of a round) do not move."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired_ratios needs as many numerators ({len(numerators)}) as denominators "
                         f"({len(denominators)})")
    return spread([a / b for a, b in zip(numerators, denominators)])


def fmt(stats, scale=1.0, digits=1):
    """``"median (min-max)"`` of a :func:`spread` dict, each value times ``scale``."""
    m, lo, hi = (stats[k] * scale for k in ("median", "min", "max"))
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def epoch(dataset):
    """Iterates ``dataset`` once; returns ``(seconds, images)`` (images: the first
    component's leading dimension summed over the batches)."""
    import tensorflow as tf

    start = time.perf_counter()
    n = 0
    for batch in dataset:
        n += int(tf.shape(tf.nest.flatten(batch)[0])[0])
    return time.perf_counter() - start, n


def cpu_model():
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment():
    """Machine and versions: CPU model and count, GPUs, TensorFlow, Keras, Python, date."""
    import keras
    import tensorflow as tf

    env = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    # The peers' versions, where installed, read without importing them (torch imported after
    # TensorFlow can crash: see benchmarks/peers/__init__.py).
    for module, distribution in (("keras_hub", "keras-hub"), ("torch", "torch"), ("torchvision", "torchvision")):
        try:
            env[module] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        env["load_average"] = os.getloadavg()
    except OSError:
        pass
    return env
