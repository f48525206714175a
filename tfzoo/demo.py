"""``tfzoo demo``: the main job, end to end on the builtin ``shapes`` data.

1. trains ``retinanet_mobile`` on ``shapes`` (train split, from random initialization:
   no download needed) with :func:`tfzoo.train.train`, within a time limit
   (:data:`DEMO_TIME_LIMIT` for the default run: on a slow machine training stops a few
   percent before the end of its schedule rather than the demo overrunning);
2. takes a float32 copy of it at the serving size (:data:`DEMO_SERVE_SIZE`, the preset's 320:
   the model trains at 256 for speed and serves larger, where it finds small objects
   better), saves it as ``model.keras`` and exports it as a SavedModel and as a float32
   TFLite file (builtin ops only);
3. evaluates the Keras model and both exports on the val split (one evaluator, the same
   images), writes the Keras model's metrics to ``metrics.json``;
4. times single-image detection in each format;
5. draws the detections of a few val images to PNG files;
6. writes ``summary.json`` and prints a short summary.

Everything lands in ``saved_models/retinanet_shapes/`` (the training directory, whose
``model.keras`` is the 256 px model with its optimizer state, in its ``train/``
subfolder). The recipe is the preset's with the overrides of :data:`DEMO_SETTINGS` (256
px, batch 8, peak learning rate 3e-3, flips), for :data:`DEMO_EPOCHS` epochs, the training
images cached in memory after the first. On a CPU with AMX (and no GPU) the FPN and heads
train in bfloat16 (``precision="auto"``); the backbone, the losses and every exported or
evaluated model stay float32.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time

import numpy as np

#: What the demo trains, on what.
DEMO_MODEL = "retinanet_mobile"
DEMO_DATA = "shapes"
#: Config overrides of the demo run (``--set`` syntax): 256 px, near the shapes images' own
#: 192-320 px, trains 1.5x faster than the preset's 320; batch 8 instead of 16 (twice the
#: updates for 5% more time per image) at a peak learning rate of 3e-3; flips without the
#: preset's scale jitter (BENCHMARKS.md, training on shapes: val AP50 after 5 epochs 0.636
#: with the preset's recipe at 256, 0.734 with 4e-3, 0.815 with flips only, 0.858 at batch
#: 8; after 6 epochs at batch 8: 0.889 with 2e-3, 0.897 with 3e-3, 0.887 with 4e-3; with
#: bfloat16 FPN and heads 0.899 after 6 epochs, 0.920 after 7).
DEMO_SETTINGS = ("image_size=256", "batch_size=8", "learning_rate=0.003", "augment=flip")
#: Training epochs of the demo (2,000 images each, cached in memory after the first):
#: chosen to fit about 10 minutes on 2 CPU cores with the MobileNetV2 backbone the preset
#: had until issue 17; with its ResNet-10 they take 4.5 minutes (135 ms per step, bfloat16
#: FPN and heads on an AMX CPU), the whole demo 4.9 (shapes val AP50 0.932, as before). The
#: model is still learning then; ``tfzoo demo --epochs N`` trains longer.
DEMO_EPOCHS = 7
#: The input size the demo's model serves at: it trains at 256 (``DEMO_SETTINGS``) and is
#: evaluated and exported at the preset's 320 (:meth:`Detector.with_image_size`, the same
#: weights). The same trained model scored shapes val AP50 0.890 at 256 and 0.932 at 320
#: (0.907 at 288, 0.912 at 352): served larger, the objects under 16 px it missed at 256
#: are found (BENCHMARKS.md, "tfzoo demo"). Serving at 320 costs about 1.5x the
#: latency of 256. ``None`` serves at the training size.
DEMO_SERVE_SIZE = 320
#: The whole demo's default time limit in minutes (``tfzoo demo`` with neither ``--epochs``
#: nor ``--minutes``; the target is 10 minutes on 2 CPU cores). Training stops at the step
#: where ``time_limit`` minus :data:`POST_TRAINING_SECONDS` have passed, and only then: on
#: this machine the 7 epochs took 9.0 minutes in a slow hour with the MobileNetV2 backbone
#: (295 ms per step), 4.5 with the ResNet-10 (135 ms), so the limit now guards machines
#: about twice as slow. Cut in its last 6%, the cosine schedule is below 1% of its peak
#: learning rate, so the model is all but the finished one (BENCHMARKS.md, "tfzoo demo");
#: the summary says where it stopped.
DEMO_TIME_LIMIT = 9.5
#: Seconds kept for the steps after training when a time limit is set: export, evaluation
#: of three formats, timing and drawing took 46-49 s at 320 px on the 2-core machine.
POST_TRAINING_SECONDS = 60.0
#: ``precision`` values of :func:`run`: ``"mixed"`` trains the FPN and the heads under the
#: mixed (bfloat16 on CPU) policy with the backbone in float32 (``backbone_dtype=float32``);
#: ``"auto"`` picks it on CPUs with AMX and no GPU, ``"float32"`` elsewhere.
PRECISIONS = ("auto", "float32", "mixed")
#: Where the demo writes its artifacts by default.
DEFAULT_OUT = os.path.join("saved_models", "retinanet_shapes")


@dataclasses.dataclass(frozen=True)
class DemoRecipe:
    """How the demo trains one CPU preset on ``shapes``: config overrides (``--set``
    syntax), epochs, the serving size (``None``: the training size) and the output folder
    (``None``: ``saved_models/<preset>_shapes``)."""

    settings: tuple = ()
    epochs: int = DEMO_EPOCHS
    serve_size: int | None = None
    out: str | None = None


#: The demo's settings per CPU preset (one table: a new CPU preset adds its row; one
#: without a row runs with its own recipe for :data:`DEMO_EPOCHS` epochs, within the time
#: limit).
DEMOS = {
    "retinanet_mobile": DemoRecipe(DEMO_SETTINGS, DEMO_EPOCHS, DEMO_SERVE_SIZE, DEFAULT_OUT),
    # ssd_mobile at its own 320 and recipe: 7 epochs took 3.5 minutes of training (AP50 0.831),
    # so 14 fit the 10 minutes (BENCHMARKS.md, "SSD: the first demo runs").
    "ssd_mobile": DemoRecipe(epochs=14),
    # faster_rcnn_mobile: 7 epochs trained in 3.9 minutes to AP50 0.894 (4.4 min in all),
    # still learning; 14 fit the 10 minutes (BENCHMARKS.md, "Faster R-CNN: the first demo runs").
    "faster_rcnn_mobile": DemoRecipe(epochs=14),
    # faster_rcnn_fpn_mobile: 7 epochs trained to AP50 0.965 in 7.5 minutes in all (9.2 before
    # the one-canvas RoI crops); its steps cost twice faster_rcnn_mobile's, so more would not
    # fit the 10 minutes on a slower machine (same BENCHMARKS section).
    "faster_rcnn_fpn_mobile": DemoRecipe(epochs=7),
    # fast_rcnn_mobile: selective search on the 2,200 train and val images takes 3.5 minutes
    # on 2 cores (cached for later runs); 5 epochs then train in 2.3 minutes to val AP50
    # 0.910, 6.6 minutes in all (BENCHMARKS.md, "Region proposals and Fast R-CNN").
    "fast_rcnn_mobile": DemoRecipe(epochs=5),
    # yolov3_tiny at its own 320 and recipe: 12 epochs trained in 7.4 minutes (62 images/s)
    # to val AP50 0.953, 7.7 minutes in all (BENCHMARKS.md, "YOLO: the first demo runs").
    "yolov3_tiny": DemoRecipe(epochs=12),
}


def demo_recipe(model):
    """The :class:`DemoRecipe` of CPU preset ``model`` (``ValueError`` for another)."""
    from tfzoo.models import MODELS

    cpu = sorted(name for name, preset in MODELS.items() if preset.cpu)
    if model not in MODELS or not MODELS[model].cpu:
        raise ValueError(f"the demo trains a CPU preset from random initialization; {model!r} is not one "
                         f"(CPU presets: {', '.join(cpu)})")
    recipe = DEMOS.get(model, DemoRecipe())
    return recipe if recipe.out else dataclasses.replace(recipe, out=os.path.join("saved_models", f"{model}_shapes"))


def _median_ms(fn, repeats):
    fn()  # warm-up (tracing, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2), "repeats": repeats}


def _size_bytes(path):
    from tfzoo.compare import size_bytes

    return size_bytes(path)


def _mib(num_bytes):
    return f"{num_bytes / 2**20:.1f} MiB"


def _gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def resolve_precision(precision):
    """``"float32"`` or ``"mixed"`` for a ``precision`` of :data:`PRECISIONS`."""
    from tfzoo import train as train_lib

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        fast = train_lib.cpu_has_amx() and not _gpus()
        return "mixed" if fast else "float32"
    return precision


def check_time_limit(time_limit, name="time_limit"):
    """``ValueError`` (naming the option ``name``) for a ``time_limit`` (minutes, or
    ``None``) that leaves no time to train."""
    if time_limit is not None and not 60.0 * time_limit > POST_TRAINING_SECONDS:
        raise ValueError(f"{name} must leave more than the {POST_TRAINING_SECONDS:g} s the steps after training "
                         f"take, got {time_limit:g} minutes")


#: ``serve_size`` default of :func:`run`: the demo recipe's.
FROM_RECIPE = "recipe"


def run(out=None, epochs=None, minutes=None, seed=0, num_images=4, latency_repeats=20, verbose=1,
        data=DEMO_DATA, settings=None, precision="auto", serve_size=FROM_RECIPE, time_limit=None, model=DEMO_MODEL):
    """Runs the demo (see the module doc) on CPU preset ``model`` and returns the summary dict.

    ``out``, ``epochs``, ``settings`` and ``serve_size`` default to the preset's row of
    :data:`DEMOS` (:func:`demo_recipe`).

    ``time_limit`` (minutes, for the whole run; ``None``: none) stops training early, at
    the step where ``time_limit`` minus :data:`POST_TRAINING_SECONDS` have passed since the
    start, and the demo goes on with the model as it is then. ``data`` and ``settings``
    (config overrides) exist for tests, which run the same steps on a tiny model and
    ``shapes:N``.
    """
    import tensorflow as tf

    import tfzoo.data
    from tfzoo import train as train_lib
    from tfzoo.draw import draw_detections, image_detections, save_png_atomic
    from tfzoo.export import export_saved_model, export_tflite, load_model, parity_report
    from tfzoo.atomic import save_keras_atomic, write_json_atomic

    recipe = demo_recipe(model)
    out = recipe.out if out is None else out
    epochs = recipe.epochs if epochs is None else epochs
    settings = recipe.settings if settings is None else settings
    serve_size = recipe.serve_size if serve_size == FROM_RECIPE else serve_size
    precision = resolve_precision(precision)
    check_time_limit(time_limit)
    settings = tuple(settings) + (("backbone_dtype=float32",) if precision == "mixed" else ())
    started = time.monotonic()
    os.makedirs(out, exist_ok=True)
    say_text = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    stages = {}  # stage -> seconds, in the summary (where the demo's minutes go)
    clock = {"stage": None, "since": started}

    def say(stage, text):
        """Starts ``stage`` (ending the one before) and prints ``text``."""
        now = time.monotonic()
        if clock["stage"]:
            stages[clock["stage"]] = round(now - clock["since"], 1)
        clock["stage"], clock["since"] = stage, now
        say_text(text)

    # --- 1. train ---
    limit = ""
    callbacks = []
    if time_limit is not None:
        train_minutes = time_limit - POST_TRAINING_SECONDS / 60.0
        limit = f", stops at {train_minutes:g} min at most: the {time_limit:g}-minute limit"
        callbacks.append(train_lib.TimeBudget(started + 60.0 * train_minutes, train_minutes))
    say("train", f"[1/5] training {model} on {data} "
        f"({'%g minutes' % minutes if minutes else '%d epochs' % epochs}, {precision}{limit}) ...")
    result = train_lib.train(
        model, data, out=os.path.join(out, "train"), epochs=None if minutes else epochs,
        minutes=minutes, settings=settings, seed=seed, verbose=verbose, val_split=None,
        backbone_weights=None, cache=True,  # 2,000 generated images, ~375 MiB: generate them once
        mixed_precision=precision == "mixed", callbacks=callbacks,
        diagnostics=False,  # the demo scores val itself, after training, within its time limit
        overwrite=True,  # the demo's own folder: a new demo replaces the last one
    )
    if result.stopped and not result.steps:
        raise RuntimeError(f"training stopped before its first checkpoint: {result.stopped}")
    train_seconds = time.monotonic() - started
    train_size = result.detector.image_size[0]
    # What is shipped and measured: a float32 copy at the serving size.
    detector = result.detector.with_image_size(serve_size or train_size)

    # --- 2. export ---
    say("export", f"[2/5] exporting the model at {detector.image_size[0]} px: Keras, SavedModel and TFLite ...")
    keras_path = os.path.join(out, "model.keras")
    save_keras_atomic(detector, keras_path)
    saved_model = export_saved_model(detector, os.path.join(out, "saved_model"))
    tflite = export_tflite(detector, os.path.join(out, "model.tflite"))

    # --- 3. evaluate all formats on val ---
    say("evaluate", "[3/5] evaluating the Keras model and both exports on shapes/val ...")
    from tfzoo import proposals as proposal_source  # noqa: PLC0415

    # Read six times below: generate the images (and a proposal-based model's proposals) once.
    val = proposal_source.for_config(tfzoo.data.load(data, "val"), detector.config, progress=bool(verbose),
                                     desc="proposals shapes [val]")[0].cache()
    # Raw head outputs on the first 2 batches (16 images); detections and AP on all of them.
    report = parity_report(detector, [saved_model, tflite], val, class_names=tfzoo.data.class_names(data),
                           category_ids=tfzoo.data.category_ids(data), progress=bool(verbose), raw_batches=2)
    metrics = report["keras"]["metrics"]
    write_json_atomic(os.path.join(out, "metrics.json"), metrics)

    # --- 4. latency per format (one image, NMS included) ---
    say("latency", "[4/5] timing single-image detection per format ...")
    first = next(iter(val.take(1)))
    resized = tf.image.resize(first["image"][None].numpy().astype(np.float32), detector.image_size).numpy()
    if "proposals" in detector.input_names:  # the stretched image keeps its normalized proposals
        from tfzoo.data.pipeline import pad_rows  # noqa: PLC0415

        resized = {"images": resized,
                   "proposals": pad_rows(first["proposals"], detector.config.max_proposals, 0.0)[None].numpy()}
    keras_detect = tf.function(detector.detect)
    models = {"saved_model": load_model(saved_model, trust_model=True), "tflite": load_model(tflite)}
    latency = {"keras": _median_ms(lambda: keras_detect(resized), latency_repeats)}
    for name, loaded in models.items():
        latency[name] = _median_ms(lambda loaded=loaded: loaded.detect(resized), latency_repeats)

    # --- 5. pictures ---
    say("draw", f"[5/5] drawing detections on {num_images} val images ...")
    pictures = []
    picture_dir = os.path.join(out, "predictions")
    os.makedirs(picture_dir, exist_ok=True)
    for example in val.take(num_images).as_numpy_iterator():
        image_id = example["image_id"].decode()
        rows = image_detections(models["saved_model"], example["image"], 0.3)
        drawn = draw_detections(example["image"], np.array([r["box_yxyx_px"] for r in rows], np.float32).reshape(-1, 4),
                                [r["class_id"] for r in rows], [r["score"] for r in rows],
                                models["saved_model"].class_names)
        path = os.path.join(picture_dir, f"{image_id}.png")
        save_png_atomic(drawn, path)
        pictures.append(path)

    exports = {entry["format"]: entry for entry in report["exports"]}
    summary = {
        "model": model,
        "data": data,
        "settings": list(settings),
        "precision": (f"{train_lib.mixed_policy_name()} after the backbone, float32 backbone" if precision == "mixed"
                      else "float32"),
        "train_image_size": train_size,
        "image_size": detector.image_size[0],
        "epochs": result.epochs,
        "steps": result.steps,
        "planned_steps": result.planned_epochs * result.steps_per_epoch,
        "stopped": result.stopped,  # why training ended before its schedule did, else None
        "time_limit_minutes": time_limit,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "formats": {
            "keras": {"path": keras_path, "AP50": metrics["AP50"], "size_bytes": _size_bytes(keras_path),
                      "latency": latency["keras"]},
            "saved_model": {"path": saved_model, "AP50": exports["saved_model"]["AP50"],
                            "delta_AP_points": exports["saved_model"]["delta_AP_points"],
                            "raw_max_abs_diff": exports["saved_model"]["raw_max_abs_diff"],
                            "raw_images": exports["saved_model"]["raw_images"],
                            "size_bytes": _size_bytes(saved_model), "latency": latency["saved_model"]},
            "tflite": {"path": tflite, "AP50": exports["tflite"]["AP50"],
                       "delta_AP_points": exports["tflite"]["delta_AP_points"],
                       "raw_max_abs_diff": exports["tflite"]["raw_max_abs_diff"],
                       "raw_images": exports["tflite"]["raw_images"],
                       "size_bytes": _size_bytes(tflite), "latency": latency["tflite"]},
        },
        "predictions": pictures,
    }
    stages[clock["stage"]] = round(time.monotonic() - clock["since"], 1)
    summary["stage_seconds"] = stages
    write_json_atomic(os.path.join(out, "summary.json"), summary)
    summary["total_seconds"] = round(time.monotonic() - started, 1)
    return summary


def format_summary(summary):
    """The demo's printed summary (a few lines)."""
    if summary.get("stopped"):
        trained = (f"{summary['steps']} of {summary['planned_steps']} planned steps ({summary['epochs']} "
                   "full epochs)")
    else:
        trained = f"{summary['epochs']} epochs ({summary['steps']} steps)"
    lines = [
        f"tfzoo demo: {summary['model']} on {summary['data']}, {trained}, trained in {summary['train_seconds'] / 60:.1f} min, "
        f"{summary['total_seconds'] / 60:.1f} min in all (training: {summary['precision']})",
        f"  trained at {summary['train_image_size']} px, serves at {summary['image_size']} px; "
        f"val: AP {summary['AP']:.3f}  AP50 {summary['AP50']:.3f}",
        f"  {'format':<12}{'AP50':>7}{'latency (median)':>19}{'size':>11}  path",
    ]
    if summary.get("stopped"):
        lines.insert(1, f"  training stopped early: {summary['stopped']}")
    for name, entry in summary["formats"].items():
        lines.append(f"  {name:<12}{entry['AP50']:>7.3f}{entry['latency']['median_ms']:>16.1f} ms"
                     f"{_mib(entry['size_bytes']):>11}  {entry['path']}")
    lines.append(f"  predictions drawn: {os.path.dirname(summary['predictions'][0]) if summary['predictions'] else '-'}")
    return "\n".join(lines)
