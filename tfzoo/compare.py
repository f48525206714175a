"""``tfzoo compare``: which detector to use on *your* data, at what speed on *this* machine.

::

    tfzoo compare yolov3_tiny ssd_mobile retinanet_mobile --data voc:PATH --minutes 20 --out cmp/
    tfzoo compare --trained runs/ssd_mobile runs/yolov3_tiny --data voc:PATH --out cmp/

For each model, one after the other:

1. **train** the preset with its default recipe on ``--split`` for ``--minutes`` (or
   ``--epochs``) into ``DIR/runs/MODEL`` (a run killed earlier resumes from its last
   checkpoint; a finished one is reused), or take a finished training directory
   (``--trained``);
2. **export** it in each of ``--formats``: ``keras`` (a float32 ``.keras`` file without
   the optimizer state the run's own file keeps), ``saved_model``, ``tflite`` (float32)
   and ``int8`` (full integer TFLite, calibrated on ``calibration_count`` images of the
   training split), under ``DIR/exports/MODEL/``;
3. **measure** each format in a fresh Python process (:func:`measure`): COCO AP, AP50 and
   APs on ``--val-split`` with the one evaluator every format shares
   (:func:`tfzoo.eval.evaluate_loaded`), latency at batch 1 end to end (the original
   image in, resize, network, decoder and NMS, detections on the original image out:
   ``detect_original``) on the same ``latency_images`` val images for every format, median
   with the 10th-90th percentile spread (a proposal-based model's includes searching the
   image's proposals by its own source, never from the cache, as serving a new image does;
   the search's own median is recorded beside it), with the threads TensorFlow and the TFLite
   interpreter use by default (every core of this machine); the file size; and the peak
   memory (the resident set's high-water mark, ``VmHWM``) of that process: the model
   loaded, evaluated and timed, TensorFlow included.

Results: ``DIR/compare.json`` (everything, rewritten atomically after every step: a killed
compare picks up where it stopped, skipping the steps already done: a run killed after a
checkpoint resumes with the minutes it has left, one killed before starts again; a failed
model or format is tried again; weights other than those measured before, a ``--trained``
folder retrained say, are measured anew; the same folder with other settings is
refused), ``DIR/compare.md`` (one row per model and format) and
``DIR/compare.png`` (AP against latency, one point per model and format, the Pareto front
marked). One model or format failing is reported in the table and the others go on.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from tfzoo.atomic import write_json_atomic

FORMATS = ("keras", "saved_model", "tflite", "int8")
FORMAT_TITLES = {"keras": "Keras", "saved_model": "SavedModel", "tflite": "TFLite fp32", "int8": "TFLite int8"}
RESULTS_FILE = "compare.json"
TABLE_FILE = "compare.md"
PLOT_FILE = "compare.png"
RESULTS_VERSION = 1
#: What makes two compare runs comparable: a results file with other values is refused.
SAME_RUN_KEYS = ("data", "split", "val_split", "latency_images", "latency_repeats", "minutes", "epochs", "settings",
                 "seed", "calibration_count")
#: How long one measuring process may run (a hung one is killed and reported).
MEASURE_TIMEOUT_S = 3 * 3600


class CompareError(ValueError):
    """A compare that cannot start (its arguments, or an output folder of another run)."""


@dataclasses.dataclass
class Entry:
    """One model of a compare: its key in the results, its preset, its training directory
    and whether compare trains it."""

    key: str
    preset: str
    run_dir: str
    train: bool


def size_bytes(path):
    """Bytes of a file, or of every file under a folder."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)


def machine():
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def pareto_front(points):
    """Indices of the ``(latency, ap)`` points no other point beats: none at most as slow
    and at least as accurate, better in one of the two. Sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def calibration_images(detector, spec, split, count):
    """``count`` images of ``spec``/``split`` resized to the model input by the eval
    pipeline (a proposal-based model's with their proposals): int8 calibration data."""
    import tfzoo.data
    from tfzoo import proposals as proposal_source

    examples = tfzoo.data.load(spec, split).take(count)
    examples, _ = proposal_source.for_config(examples, detector.config, desc=f"proposals {spec} [{split}]",
                                             subset=True)
    return tfzoo.data.pipeline(examples, detector, 1, training=False)


# --- one format, measured in its own process -------------------------------------------------


def measure(path, data, split, latency_images=10, latency_repeats=3, warmup=2):
    """AP, AP50, APs of the model at ``path`` on ``data``/``split`` and its batch-1 latency
    on the split's first ``latency_images`` images (``latency_repeats`` timed passes over
    them after ``warmup`` untimed calls): ``{AP, AP50, APs, latency_ms: {median, p10, p90,
    min, max, samples}}``. Runs in the calling process; :func:`run` calls it in a child."""
    import tfzoo.data
    from tfzoo.eval.loaded import evaluate_loaded
    from tfzoo.export import load_model

    model = load_model(path, trust_model=True)  # compare's own exports
    metrics = evaluate_loaded(model, data, split, progress=False)
    images = [example["image"] for example in tfzoo.data.load(data, split).take(latency_images).as_numpy_iterator()]
    if not images:
        raise ValueError(f"{data} [{split}] has no images to time")
    from tfzoo import proposals as proposal_source

    search_times = []

    def detect(image):
        if not model.max_proposals:
            return model.detect_original(image)
        # A proposal-based model searches every image anew, as it would one it never saw
        # (the evaluation above cached these images' proposals); the search is timed too.
        start = time.perf_counter()
        boxes = proposal_source.for_image(image, model.proposal_source, model.max_proposals, cache=False)
        search_times.append((time.perf_counter() - start) * 1000.0)
        return model.detect_original(image, proposals=boxes)

    for _ in range(warmup):
        detect(images[0])
    del search_times[:]
    times = []
    for _ in range(latency_repeats):
        for image in images:
            start = time.perf_counter()
            detect(image)
            times.append((time.perf_counter() - start) * 1000.0)
    latency = {"median": statistics.median(times), "p10": float(np.percentile(times, 10)),
               "p90": float(np.percentile(times, 90)), "min": min(times), "max": max(times), "samples": len(times)}
    if search_times:
        latency["proposals_median"] = statistics.median(search_times)
    return {"AP": float(metrics["AP"]), "AP50": float(metrics["AP50"]), "APs": float(metrics["APs"]),
            "latency_ms": {k: round(v, 3) if isinstance(v, float) else v for k, v in latency.items()}}


def _measure_in_child(path, data, split, latency_images, latency_repeats, verbose):
    """:func:`measure` in a fresh Python process: ``(result, peak resident MiB)`` (the
    child's own, :func:`own_peak_mib`); a crash of the child (a LiteRT abort, out of
    memory) is an error here, not the end of compare."""
    with tempfile.TemporaryDirectory(prefix="tfzoo_compare_") as tmp:
        result_path = os.path.join(tmp, "result.json")
        request = {"path": path, "data": data, "split": split, "latency_images": latency_images,
                   "latency_repeats": latency_repeats, "out": result_path}
        stream = None if verbose else subprocess.DEVNULL
        process = subprocess.Popen([sys.executable, "-m", "tfzoo.compare", json.dumps(request)],
                                   stdout=stream, stderr=stream)
        try:
            status = _wait(process, MEASURE_TIMEOUT_S)
        except BaseException:  # interrupted, or too slow: never leave the child running
            process.kill()
            process.wait()
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as f:
                result = json.load(f)
            if "error" in result:
                raise RuntimeError(result["error"])
            return result, result.pop("peak_memory_mib")
        raise RuntimeError(f"the measuring process ended with exit status {process.returncode} and no result")


def _wait(process, timeout_s):
    """The wait status of ``process`` once it ends; ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status = os.waitpid(process.pid, os.WNOHANG)
        if pid:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"the measuring process ran over {timeout_s / 3600:g} hours")
        time.sleep(0.2)


def own_peak_mib():
    """This process's peak resident memory in MiB: ``VmHWM`` of ``/proc/self/status`` (the
    high-water mark of this program's own memory since it started), else
    ``ru_maxrss``, which on Linux also counts the memory of the process it was forked
    from: a compare that trained a model first would show its size in every child."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _child_main(argv):
    request = json.loads(argv[0])
    try:
        result = measure(request["path"], request["data"], request["split"], request["latency_images"],
                         request["latency_repeats"])
        result["peak_memory_mib"] = own_peak_mib()
    except Exception as error:  # reported by the parent, named with the model and format
        result = {"error": f"{type(error).__name__}: {error}"}
    write_json_atomic(request["out"], result)
    return 0


# --- the whole run ---------------------------------------------------------------------------


def entries(models, trained, out):
    """:class:`Entry` per model name (trained into ``out/runs/NAME``) and per ``trained``
    training directory (its preset read from its ``config.json``)."""
    from tfzoo.models import MODELS

    result, keys = [], set()
    for name in models:
        if name not in MODELS:
            raise CompareError(f"unknown model {name!r} ('tfzoo list' shows the presets)")
        if name in keys:
            raise CompareError(f"each model once: {name} given twice")
        keys.add(name)
        result.append(Entry(name, name, os.path.join(out, "runs", name), True))
    for run_dir in trained:
        config_path = os.path.join(run_dir, "config.json")
        if not os.path.isfile(os.path.join(run_dir, "model.keras")) or not os.path.isfile(config_path):
            raise CompareError(f"--trained {run_dir}: not a training directory (model.keras and config.json "
                               "expected, as 'tfzoo train' writes)")
        with open(config_path, encoding="utf-8") as f:
            preset = json.load(f).get("name") or os.path.basename(os.path.normpath(run_dir))
        if any(os.path.abspath(e.run_dir) == os.path.abspath(run_dir) for e in result):
            raise CompareError(f"each model once: --trained {run_dir} given twice")
        # The preset names the row; a second run of one preset: "PRESET-2", "PRESET-3" ...
        key, number = preset, 1
        while key in keys:
            number += 1
            key = f"{preset}-{number}"
        keys.add(key)
        result.append(Entry(key, preset, run_dir, False))
    if not result:
        raise CompareError("name at least one model to train, or --trained training directories")
    return result


def _load_results(path, settings):
    if not os.path.exists(path):
        return {"version": RESULTS_VERSION, **settings, "models": {}}
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError) as error:
        raise CompareError(f"{path}: unreadable results of an earlier compare ({error}); use another --out") from None
    other = {k: (results.get(k), settings[k]) for k in SAME_RUN_KEYS if _jsonable(results.get(k)) != _jsonable(settings[k])}
    if other:
        what = "; ".join(f"{k} {a!r} there, {b!r} now" for k, (a, b) in other.items())
        raise CompareError(f"{path} holds a compare of other settings ({what}): resume it with the same "
                           "settings, or use another --out")
    results.setdefault("models", {})
    return results


def _jsonable(value):
    return json.loads(json.dumps(value))


def _model_stamp(run_dir):
    """What identifies the trained weights compare measured: the path, size and mtime of
    the run's ``model.keras``."""
    path = os.path.abspath(os.path.join(run_dir, "model.keras"))
    if not os.path.isfile(path):
        return None
    stat = os.stat(path)
    return {"path": path, "bytes": stat.st_size, "mtime": stat.st_mtime}


def run(models=(), data="shapes", *, out, trained=(), split="train", val_split="val", minutes=None, epochs=None,
        formats=FORMATS, settings=(), latency_images=10, latency_repeats=3, calibration_count=100, seed=0,
        verbose=1, command=None):
    """Runs a compare into ``out`` (see the module doc) and returns the results dict.

    ``models``: presets to train (``minutes`` or ``epochs`` each, default recipe plus
    ``settings``); ``trained``: finished training directories to take as they are.
    """
    from tfzoo import train as train_lib

    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise CompareError(f"unknown format(s) {', '.join(unknown) or '(none)'}; use some of {', '.join(FORMATS)}")
    if models and minutes is None and epochs is None:
        raise CompareError("training needs --minutes M (a time budget per model) or --epochs N")
    os.makedirs(out, exist_ok=True)
    todo = entries(models, trained, out)
    if calibration_count < 1:
        raise CompareError(f"calibration_count (--calibration-images) must be >= 1, got {calibration_count}")
    run_settings = {"data": data, "split": split, "val_split": val_split, "latency_images": latency_images,
                    "latency_repeats": latency_repeats, "minutes": minutes, "epochs": epochs,
                    "settings": list(settings), "seed": seed, "calibration_count": calibration_count}
    results_path = os.path.join(out, RESULTS_FILE)
    results = _load_results(results_path, run_settings)
    results.update({"formats": list(formats), "machine": machine(), "command": command or results.get("command")})
    say = (lambda text: print(f"tfzoo compare: {text}", file=sys.stderr, flush=True)) if verbose else (lambda _: None)
    started = time.monotonic()
    # every invocation's time: a resumed compare's total is the sum
    session = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "seconds": 0.0}
    if "sessions" not in results and results.get("seconds"):  # a folder from before sessions were kept
        results["sessions"] = [{"started": None, "seconds": float(results["seconds"])}]
    results.setdefault("sessions", []).append(session)

    def save():
        session["seconds"] = round(time.monotonic() - started, 1)
        results["seconds"] = round(sum(s["seconds"] for s in results["sessions"]), 1)
        results["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_json_atomic(results_path, results)
        write_table(results, os.path.join(out, TABLE_FILE))

    for number, entry in enumerate(todo, start=1):
        where = f"[{number}/{len(todo)}] {entry.key}"
        record = results["models"].setdefault(entry.key, {})
        record.update({"preset": entry.preset, "run_dir": entry.run_dir})
        if (record.get("status") == "done" and record.get("model") == _model_stamp(entry.run_dir)
                and all(record.get("formats", {}).get(f, {}).get("status") == "done" for f in formats)):
            say(f"{where}: done in an earlier run, skipped")
            continue
        record["status"] = "running"
        record.pop("error", None)
        save()
        try:
            if entry.train:
                _train(entry, record, data, split, minutes, epochs, settings, seed, verbose, say, where, train_lib)
            else:
                record["train"] = _read_training(entry.run_dir)
            stamp = _model_stamp(entry.run_dir)
            if record.get("model") != stamp:  # other weights than those measured before: measure anew
                if record.get("formats"):
                    say(f"{where}: {stamp['path']} is not the model measured before; measuring it anew")
                record["formats"] = {}
                shutil.rmtree(os.path.join(out, "exports", entry.key), ignore_errors=True)
                record["model"] = stamp
            save()
            _formats(entry, record, formats, out, data, split, val_split, latency_images, latency_repeats,
                     calibration_count, verbose, say, where, save)
            record["status"] = "done"
        except Exception as error:  # one model failing does not stop the others
            record["status"] = "failed"
            record["error"] = f"{type(error).__name__}: {error}"
            say(f"{where}: failed: {record['error']}")
        save()
    save()
    done = [k for k, r in results["models"].items() if r.get("status") == "done"]
    if done:
        write_plot(results, os.path.join(out, PLOT_FILE))
    say(f"{len(done)} of {len(results['models'])} models measured; {os.path.join(out, TABLE_FILE)}, "
        f"{os.path.join(out, PLOT_FILE)}")
    return results


def _read_training(run_dir):
    path = os.path.join(run_dir, "state.json")
    state = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    return {"dir": run_dir, "epochs": state.get("epoch"), "finished": state.get("finished"),
            "minutes": round(float(state["seconds"]) / 60.0, 2) if state.get("seconds") is not None else None}


def _train(entry, record, data, split, minutes, epochs, settings, seed, verbose, say, where, train_lib):
    """Trains ``entry`` into its run folder: a run that ended (its schedule done, or its time
    budget spent) is reused; one killed after a checkpoint resumes with the minutes it has
    left; one killed before its first checkpoint starts again."""
    state_path = os.path.join(entry.run_dir, "state.json")
    checkpoint = os.path.isfile(os.path.join(entry.run_dir, "model.keras"))
    state = {}
    if os.path.exists(state_path) and checkpoint:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("finished") or str(state.get("stopped") or "").startswith("time budget"):
            record["train"] = _read_training(entry.run_dir)
            say(f"{where}: trained in an earlier run ({entry.run_dir}), reused")
            return
    resume = bool(state)
    left = minutes
    if resume and minutes is not None:
        left = minutes - float(state.get("seconds") or 0.0) / 60.0
        if left <= 0.05:  # killed at the very end of its budget: take it as it is
            record["train"] = _read_training(entry.run_dir)
            return
    budget = f"{left:g} minutes" if minutes is not None else f"{epochs} epochs"
    say(f"{where}: {'resuming' if resume else 'training'} {entry.preset} on {data} [{split}] ({budget}) "
        f"into {entry.run_dir} ...")
    train_lib.train(entry.preset, data, split=split, val_split=None, minutes=left,
                    epochs=None if minutes is not None else epochs, out=entry.run_dir, resume=resume,
                    overwrite=not resume, settings=settings, seed=seed, verbose=verbose, diagnostics=False)
    record["train"] = _read_training(entry.run_dir)


def _formats(entry, record, formats, out, data, split, val_split, latency_images, latency_repeats,
             calibration_count, verbose, say, where, save):
    import keras

    from tfzoo.atomic import save_keras_atomic
    from tfzoo.export import export_saved_model, export_tflite

    export_dir = os.path.join(out, "exports", entry.key)
    paths = {"keras": os.path.join(export_dir, "model.keras"),
             "saved_model": os.path.join(export_dir, "saved_model"),
             "tflite": os.path.join(export_dir, "model.tflite"),
             "int8": os.path.join(export_dir, "model_int8.tflite")}
    per_format = record.setdefault("formats", {})
    detector = None
    for fmt in formats:
        result = per_format.setdefault(fmt, {})
        if result.get("status") == "done":
            continue
        path = paths[fmt]
        result.clear()
        result.update({"status": "failed", "path": path})
        try:
            if not os.path.exists(path):
                if detector is None:  # float32, without the optimizer state the run's file keeps
                    detector = keras.saving.load_model(os.path.join(entry.run_dir, "model.keras"),
                                                       safe_mode=True, compile=False).as_float32()
                say(f"{where}: exporting {FORMAT_TITLES[fmt]} ...")
                if fmt == "keras":
                    save_keras_atomic(detector, path)
                elif fmt == "saved_model":
                    export_saved_model(detector, path)
                elif fmt == "tflite":
                    export_tflite(detector, path)
                else:
                    export_tflite(detector, path, quantize="int8",
                                  calibration_images=calibration_images(detector, data, split, calibration_count))
            say(f"{where}: measuring {FORMAT_TITLES[fmt]} (AP on {data} [{val_split}], latency, memory) ...")
            measured, peak = _measure_in_child(path, data, val_split, latency_images, latency_repeats, verbose)
            result.update(measured)
            result.update({"status": "done", "size_bytes": size_bytes(path), "peak_memory_mib": peak})
            say(f"{where}: {FORMAT_TITLES[fmt]}: AP {result['AP']:.3f}, AP50 {result['AP50']:.3f}, "
                f"{result['latency_ms']['median']:.1f} ms, {result['size_bytes'] / 2**20:.1f} MiB")
        except Exception as error:  # this format failed; the others go on
            result["error"] = f"{type(error).__name__}: {error}"
            say(f"{where}: {FORMAT_TITLES[fmt]} failed: {result['error']}")
        save()
    failed = [f for f in formats if per_format[f].get("status") != "done"]
    if len(failed) == len(formats):
        raise RuntimeError(f"no format could be measured ({per_format[failed[0]].get('error')})")


# --- the table and the picture -------------------------------------------------------------


def rows(results):
    """One dict per (model, format) measured, in the results' order, with ``pareto`` set."""
    out = []
    for key, record in results.get("models", {}).items():
        for fmt, result in record.get("formats", {}).items():
            if result.get("status") == "done":
                out.append({"model": key, "format": fmt, **result,
                            "train_minutes": (record.get("train") or {}).get("minutes")})
    front = set(pareto_front([(r["latency_ms"]["median"], r["AP"]) for r in out]))
    for i, row in enumerate(out):
        row["pareto"] = i in front
    return out


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def write_table(results, path):
    """``compare.md``: the command, the machine, one row per model and format."""
    lines = ["# tfzoo compare", ""]
    if results.get("command"):
        lines += ["```", results["command"], "```", ""]
    m = results.get("machine") or {}
    budget = (f"{results['minutes']:g} minutes" if results.get("minutes") is not None
              else f"{results['epochs']} epochs" if results.get("epochs") is not None else "trained before")
    lines += [f"Data {results['data']} (train [{results['split']}], scored on [{results['val_split']}]); "
              f"training budget {budget} per model; {m.get('cpu', '?')}, {m.get('cores', '?')} cores; "
              f"latency: batch 1, original image to detections, median (10th-90th percentile) of "
              f"{results['latency_images'] * results['latency_repeats']} calls (a proposal-based model's include "
              f"searching each image's proposals anew: their median is given as 'proposals'); "
              f"peak memory: the measuring process, TensorFlow included; "
              f"{_fmt((results.get('seconds') or 0) / 60.0, '.0f')} minutes of compare over "
              f"{len(results.get('sessions') or [])} invocation(s); updated {results.get('updated', '')}.", "",
              "| model | format | AP | AP50 | APs | latency ms | size MiB | peak memory MiB | training min | Pareto |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for row in rows(results):
        lat = row["latency_ms"]
        search = f", proposals {lat['proposals_median']:.0f}" if "proposals_median" in lat else ""
        lines.append(f"| {row['model']} | {FORMAT_TITLES[row['format']]} | {row['AP']:.3f} | {row['AP50']:.3f} "
                     f"| {row['APs']:.3f} | {lat['median']:.1f} ({lat['p10']:.1f}-{lat['p90']:.1f}{search}) "
                     f"| {row['size_bytes'] / 2**20:.1f} | {_fmt(row.get('peak_memory_mib'), '.0f')} "
                     f"| {_fmt(row['train_minutes'], '.1f')} | {'yes' if row['pareto'] else ''} |")
    problems = []
    for key, record in results.get("models", {}).items():
        if record.get("status") == "failed":
            problems.append(f"- {key}: failed: {record.get('error')}")
        for fmt, result in record.get("formats", {}).items():
            if result.get("status") != "done" and result.get("error"):
                problems.append(f"- {key} {FORMAT_TITLES[fmt]}: {result['error']}")
        if record.get("status") == "running":
            problems.append(f"- {key}: not finished (run the same compare again to go on)")
    if problems:
        lines += ["", "Not measured:", "", *problems]
    from tfzoo.atomic import atomic_file

    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return path


def write_plot(results, path):
    """``compare.png``: AP against latency (log scale), one point per model and format,
    the Pareto front joined and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfzoo.atomic import atomic_file

    table = rows(results)
    markers = {"keras": "o", "saved_model": "s", "tflite": "^", "int8": "v"}
    models = list(dict.fromkeys(r["model"] for r in table))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for row in table:
        ax.scatter(row["latency_ms"]["median"], row["AP"], marker=markers[row["format"]], s=60,
                   color=colors[row["model"]], zorder=3)
    front = sorted((r for r in table if r["pareto"]), key=lambda r: r["latency_ms"]["median"])
    if front:
        ax.step([r["latency_ms"]["median"] for r in front], [r["AP"] for r in front], where="post", color="0.3",
                linestyle="--", linewidth=1, zorder=2, label="Pareto front")
        ax.scatter([r["latency_ms"]["median"] for r in front], [r["AP"] for r in front], s=220, facecolors="none",
                   edgecolors="0.2", linewidths=1.2, zorder=4)
        for r in front:
            ax.annotate(f"{r['model']} ({FORMAT_TITLES[r['format']]})", (r["latency_ms"]["median"], r["AP"]),
                        textcoords="offset points", xytext=(7, 6), fontsize=8)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[m], label=m) for m in models]
    handles += [plt.Line2D([], [], marker=markers[f], linestyle="", color="0.4", label=FORMAT_TITLES[f])
                for f in FORMATS if any(r["format"] == f for r in table)]
    if front:
        handles.append(plt.Line2D([], [], color="0.3", linestyle="--", label="Pareto front"))
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("latency per image, batch 1, ms (log scale; lower is better)")
    ax.set_ylabel(f"COCO AP on {results['data']} [{results['val_split']}]")
    m = results.get("machine") or {}
    ax.set_title(f"tfzoo compare: {m.get('cpu', '')}, {m.get('cores', '?')} cores", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def command_line(argv):
    """The command as a user would type it again."""
    return "tfzoo " + " ".join(shlex.quote(a) for a in argv)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
