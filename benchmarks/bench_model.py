"""A zoo model side by side with the best peer that runs here: latency, training, exports,
input pipeline.

``--model`` picks the preset (default ``retinanet``), ``--mobile-model`` the CPU preset of
the export and pipeline parts (default ``retinanet_mobile``); what is specific to a family
(how its random class head is calibrated, and its peer: KerasHub's RetinaNet for RetinaNet,
torchvision's ``ssd300_vgg16`` for SSD, its ``fasterrcnn_resnet50_fpn`` for Faster R-CNN)
lives in ``benchmarks/peers/<family>.py``. Parts (``--parts``, comma-separated; all but
``frozen`` by default), each measured in one run with the contenders interleaved (round-robin, order
rotated every round) so that load from other processes falls on every side alike:

``latency``
    End-to-end predict latency at batch 1, ``--image-size`` (512), 80 classes, random
    weights, box decoding and NMS included: tfzoo ``tf.function(detector.detect)`` and
    ``detector.predict_on_batch`` against the peer's predict path, at the same decoder
    settings (the family's: RetinaNet score threshold 0.05, IoU 0.5, 100 detections; SSD
    0.01, 0.45, 200). Also each side's forward pass
    alone and its decoder alone, the forward FLOPs counted on the TF graph
    (``tf.compat.v1.profiler`` float_operation on the frozen concrete function; a
    multiply-add counts 2) and the machine's fp32 matmul FLOP/s (``--matmul-size``^2
    ``tf.linalg.matmul`` in ``tf.function``). Random weights give random scores: each side's
    class head is calibrated on the benchmark image (a ``shapes`` image) so that exactly
    ``--candidates`` (anchor, class) pairs score above the threshold, as a trained
    detector's would (the family's adapter; it changes no compute).

``frozen``
    The latency part's tfzoo side with the weights frozen into constants
    (:mod:`tfzoo.export.frozen`, what ``tfzoo predict/evaluate --frozen`` run): frozen
    ``detect`` end to end and the frozen forward pass alone, against the variable-weight
    ``tf.function(detector.detect)`` and the fp32 matmul, with the FLOP fractions. Runs
    alone (``--parts frozen``): oneDNN shares its convolution primitives between all the
    functions of a process, so whichever path runs first sets the other's speed. The
    variable path is therefore timed in a child process of its own (same model, same
    seed), interleaved with its own matmul.

``train``
    Training images/s at ``--train-batch-size`` (2), same size, 80 classes, SGD momentum
    0.9: tfzoo ``fit`` on ``tfzoo.data.pipeline`` batches (targets encoded in tf.data, then
    held in memory and repeated, so the input pipeline does not limit) against the peer's
    training step on its own input format (KerasHub's ``fit``; torchvision's forward with
    targets, backward and ``torch.optim.SGD`` step). Per-step wall time, after a 2-step
    warm-up call per model.
    tfzoo trains with its own SGD (``tfzoo.optim.L2SGD``, ``l2=0``: Keras' SGD update in one
    fused kernel per weight), the peer with ``keras.optimizers.SGD``; a third contender,
    tfzoo with ``keras.optimizers.SGD``, shows what the fused update is worth.

``export``
    Batch-1 exports with NMS inside (``tfzoo.export``): full-int8 and dynamic-range TFLite
    of ``--model`` against its SavedModel, fp32 TFLite of ``--mobile-model`` against its
    SavedModel (each also without its decoder). TFLite runs in
    ``ai_edge_litert.interpreter.Interpreter(num_threads=--threads)``; SavedModels through
    ``tfzoo.export.load_model``. AP of int8 against fp32 only with ``--trained PATH``.

``pipeline``
    ``shapes`` through ``tfzoo.data.pipeline`` (uncached unless ``--pipeline-cache``, the
    preset's augmentation, the ``--mobile-model`` encoder at 320, batch 16) against its
    training step (``fit``, batch 16, the preset's optimizer from
    ``tfzoo.optim.make_optimizer``, pre-encoded batches held in memory), epochs and fit
    calls alternating.

Usage::

    python benchmarks/bench_model.py --model retinanet --repeats 5 --json /tmp/bench.json
    python benchmarks/bench_model.py --parts export --trained saved_models/retinanet_shapes/train
    python benchmarks/bench_model.py --parts latency,train --policy mixed_bfloat16  # both sides bfloat16
    python benchmarks/bench_model.py --model ssd300 --mobile-model ssd_mobile --image-size 300 \
        --train-batch-size 8                                  # against torchvision's ssd300_vgg16
    python benchmarks/bench_model.py --model faster_rcnn_fpn --mobile-model faster_rcnn_fpn_mobile \
        --image-size 640 --num-classes 90          # against torchvision's fasterrcnn_resnet50_fpn
    python benchmarks/bench_model.py --model yolov3 --image-size 416 --parts frozen   # frozen weights
    python benchmarks/bench_model.py --tiny --repeats 1       # smoke test, seconds
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import peers  # noqa: E402

PARTS = ("latency", "frozen", "train", "export", "pipeline")
#: What runs without ``--parts``: every part but ``frozen``, which runs alone.
DEFAULT_PARTS = tuple(p for p in PARTS if p != "frozen")
TINY_IMAGE_SIZE = 64


def _print(*args):
    print(*args, flush=True)


# --- models -----------------------------------------------------------------------------


def adapter_of(name):
    """The peers adapter of preset ``name``'s family."""
    from tfzoo.models import MODELS

    return peers.adapter(MODELS[name].family)


def build_tfzoo(args, name=None, **overrides):
    """Preset ``name`` (default ``--model``) with random weights (``--tiny``: its family's
    tiny widths: the adapter's ``TINY_TFZOO``, else the model class's ``tiny`` settings)."""
    import tfzoo
    from tfzoo.models import MODELS

    name = name or args.model
    settings = dict(num_classes=args.num_classes, image_size=args.image_size, backbone_weights=None)
    settings.update(getattr(adapter_of(name), "TFZOO_SETTINGS", {}))  # decoder settings matched to the peer's
    if name == args.mobile_model and args.mobile_set:  # --mobile-set KEY=VALUE, parsed as `tfzoo train --set`
        changed = MODELS[name].config.with_settings(args.mobile_set).to_dict()
        settings.update({key: changed[key] for key in (item.partition("=")[0].strip() for item in args.mobile_set)})
    if args.tiny:
        tiny = getattr(adapter_of(name), "TINY_TFZOO", None)
        if tiny is None:
            tiny = {k: v for k, v in MODELS[name].detector.tiny.items() if k not in ("image_size", "num_classes")}
        settings.update(tiny)
    settings.update(overrides)
    return tfzoo.build_model(name, **settings)


def benchmark_image(args, size=None):
    """One ``shapes`` val image resized (warped, no padding) to the model input: float32 ``[1, S, S, 3]``."""
    import tfzoo.data as data
    from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline

    size = size or args.image_size
    ds = pipeline(data.load("shapes:1", "val"), PaddedBoxesEncoder(size, keep_aspect_ratio=False), 1, training=False)
    images, _ = next(iter(ds))
    return images.numpy()


def graph_flops(fn, input_shape):
    """Float operations of one ``fn(images)`` call, counted by ``tf.compat.v1.profiler`` on
    the frozen graph of its concrete function (TF's registered op statistics: Conv2D,
    MatMul, BiasAdd, elementwise ops; a multiply-add counts 2)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(fn, autograph=False).get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops)


def matmul_fn(size):
    """``(fn, flops)``: a compiled fp32 ``size x size`` matmul and its float operations."""
    import tensorflow as tf

    a = tf.random.stateless_normal([size, size], seed=[1, 2])
    b = tf.random.stateless_normal([size, size], seed=[3, 4])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)), autograph=False)
    return (lambda: matmul(a, b)), 2 * size ** 3


# --- part 1: latency --------------------------------------------------------------------

#: The forward pass's FLOP rate target, a fraction of the fp32 matmul rate, unless the
#: family's adapter has its own ``FLOP_TARGET``.
FLOP_TARGET = 0.75


def part_latency(args):
    import tensorflow as tf

    adapter = adapter_of(args.model)
    peer = adapter.peer(args)
    size = args.image_size
    image = benchmark_image(args)
    spec = tf.TensorSpec([1, size, size, 3], tf.float32)
    result = {"image_size": size, "num_classes": args.num_classes, "candidates_target": args.candidates,
              "flop_target": getattr(adapter, "FLOP_TARGET", FLOP_TARGET)}

    ours = build_tfzoo(args)
    prepared = adapter.prepare_tfzoo(ours, image, args.candidates)
    detect = tf.function(ours.detect, input_signature=[spec])
    forward = tf.function(lambda x: ours(x, training=False), input_signature=[spec], autograph=False)
    decode = tf.function(ours.decode)
    raw = forward(image)
    fns = {
        "tfzoo detect (tf.function)": lambda: detect(image),
        "tfzoo predict_on_batch": lambda: ours.predict_on_batch(image),
        "tfzoo forward only (tf.function)": lambda: forward(image),
        "tfzoo decode + NMS only (tf.function)": lambda: decode(raw),
    }
    result["tfzoo"] = {"model": args.model, "params": int(ours.count_params()), **prepared,
                       "num_detections": int(detect(image)["num_detections"][0])}
    if peer is not None:
        peer_fns, result["peer"] = peer.latency(image, spec)
        result["peer"]["name"] = peer.name
        fns.update(peer_fns)

    matmul, matmul_flops = matmul_fn(args.matmul_size)
    fns[f"fp32 matmul {args.matmul_size}^2"] = matmul

    _print(f"latency: timing {len(fns)} functions, {args.latency_repeats} interleaved rounds ...")
    runs = common.interleaved(fns, args.warmup, args.latency_repeats)
    result["runs_s"] = runs
    result["stats_s"] = {name: common.spread(values) for name, values in runs.items()}

    _print("latency: counting graph FLOPs ...")
    result["tfzoo"]["forward_flops"] = graph_flops(lambda x: ours(x, training=False), spec.shape)
    if peer is not None:
        if hasattr(peer, "forward_flops"):  # a peer outside TensorFlow counts its own
            result["peer"]["forward_flops"] = peer.forward_flops(spec.shape)
        else:
            result["peer"]["forward_flops"] = graph_flops(peer.forward_fn(), spec.shape)
    matmul_rates = [matmul_flops / s for s in runs[f"fp32 matmul {args.matmul_size}^2"]]
    result["matmul_flops_per_s"] = common.spread(matmul_rates)
    forward_s = result["stats_s"]["tfzoo forward only (tf.function)"]
    achieved = result["tfzoo"]["forward_flops"] / forward_s["median"]
    result["tfzoo"]["forward_flops_per_s"] = achieved
    result["tfzoo"]["fraction_of_matmul"] = achieved / result["matmul_flops_per_s"]["median"]
    result["tfzoo"]["fraction_of_matmul_best"] = (
        result["tfzoo"]["forward_flops"] / forward_s["min"] / result["matmul_flops_per_s"]["max"])
    detect_s = result["stats_s"]["tfzoo detect (tf.function)"]["median"]  # end to end, decoder and NMS included
    result["tfzoo"]["detect_fraction_of_matmul"] = (
        result["tfzoo"]["forward_flops"] / detect_s / result["matmul_flops_per_s"]["median"])
    if peer is not None:
        info = result["peer"]
        peer_fn = info["peer"]
        peer_s = result["stats_s"][peer_fn]["median"]
        result["ratio_detect_vs_peer"] = result["stats_s"]["tfzoo detect (tf.function)"]["median"] / peer_s
        result["ratio_predict_on_batch_vs_peer"] = result["stats_s"]["tfzoo predict_on_batch"]["median"] / peer_s
        result["paired_ratios"] = {
            name: common.paired_ratios(runs[name], runs[peer_fn])
            for name in ("tfzoo detect (tf.function)", "tfzoo predict_on_batch")}
        result["paired_ratios"][f"tfzoo forward / {peer.name} forward"] = common.paired_ratios(
            runs["tfzoo forward only (tf.function)"], runs[info["forward"]])
        result["best_ratio_detect_vs_peer"] = (result["stats_s"]["tfzoo detect (tf.function)"]["min"]
                                               / result["stats_s"][peer_fn]["min"])
        info["decode_nms_s"] = result["stats_s"][info["decode"]]["median"]
    result["tfzoo"]["decode_nms_s"] = result["stats_s"]["tfzoo decode + NMS only (tf.function)"]["median"]
    return result


def report_latency(r):
    name_of_peer = r.get("peer", {}).get("name", "peer")
    lines = [f"| contender | latency ms median (min-max) | IQR ms | vs {name_of_peer} |", "|---|---:|---:|---:|"]
    peer = r.get("peer", {}).get("peer")
    peer_median = r["stats_s"][peer]["median"] if peer else None
    for name, stats in r["stats_s"].items():
        if name.startswith("fp32 matmul"):
            continue
        ratio = f"{stats['median'] / peer_median:.2f}x" if peer_median and " only " not in name else ""
        lines.append(f"| {name} | {common.fmt(stats, 1000)} | {1000 * stats['q1']:.0f}-{1000 * stats['q3']:.0f} "
                     f"| {ratio} |")
    t = r["tfzoo"]
    lines.append("")
    lines.append(f"tfzoo {t['model']}: {t['params']:,} params, forward {t['forward_flops'] / 1e9:.2f} GFLOP (graph count), "
                 f"candidates above the threshold: {t['candidates']['pairs']} pairs / "
                 f"{t['candidates']['anchors']} anchors, {t['num_detections']} detections, "
                 f"decode+NMS {1000 * t['decode_nms_s']:.0f} ms")
    if "peer" in r:
        k = r["peer"]
        lines.append(f"{k['name']} {k['version']}: {k['params']:,} params, forward {k['forward_flops'] / 1e9:.2f} GFLOP, "
                     f"candidates: {k['candidates']['pairs']} pairs / {k['candidates']['anchors']} anchors, "
                     f"{k['num_detections']} detections, decode+NMS {1000 * k['decode_nms_s']:.0f} ms")
        if k.get("predict_on_batch_error"):
            lines.append(f"{k['name']} predict_on_batch failed ({k['predict_on_batch_error']}); "
                         f"timed its preprocessor + compiled predict_function instead")
        lines.append(f"tfzoo detect / {k['name']}: {r['ratio_detect_vs_peer']:.2f}x, "
                     f"predict_on_batch / {k['name']}: {r['ratio_predict_on_batch_vs_peer']:.2f}x (target <= 0.90x)")
        lines.append("per-round ratios, median (min-max): " + "; ".join(
            f"{name} {common.fmt(stats, 1, 2)}" for name, stats in r["paired_ratios"].items())
            + f"; fastest tfzoo detect / fastest {k['name']}: {r['best_ratio_detect_vs_peer']:.2f}x")
    m = r["matmul_flops_per_s"]
    lines.append(f"fp32 matmul: {common.fmt(m, 1e-9)} GFLOP/s; tfzoo forward achieves "
                 f"{t['forward_flops_per_s'] / 1e9:.1f} GFLOP/s = {t['fraction_of_matmul']:.2f} of the matmul "
                 f"median (best vs best {t['fraction_of_matmul_best']:.2f}; target >= {r['flop_target']:.2f}); "
                 f"end to end (detect, decoder and NMS included): {t['detect_fraction_of_matmul']:.2f}")
    return "\n".join(lines)


# --- the latency part with frozen weights ----------------------------------------------


def _frozen_timings(args, frozen):
    """``(result, runs)``: tfzoo's detect (``frozen``: its frozen detect and frozen forward)
    and the fp32 matmul, interleaved; in this process."""
    import tensorflow as tf

    from tfzoo.export import frozen as frozen_export

    size = args.image_size
    image = benchmark_image(args)
    ours = build_tfzoo(args)
    prepared = adapter_of(args.model).prepare_tfzoo(ours, image, args.candidates)
    spec = tf.TensorSpec([1, size, size, 3], tf.float32)
    result = {"image_size": size, **prepared}
    if frozen:
        started = time.perf_counter()
        detect = frozen_export.freeze_detect(ours, batch_size=1)
        result["freeze_s"] = time.perf_counter() - started
        started = time.perf_counter()
        detect(image)
        result["first_call_s"] = time.perf_counter() - started
        forward = frozen_export.FrozenFunction(lambda x: ours(x, training=False), spec)
        fns = {"tfzoo detect, frozen": lambda: detect(image), "tfzoo forward only, frozen": lambda: forward(image)}
    else:
        detect = tf.function(ours.detect, input_signature=[spec])
        fns = {"tfzoo detect (tf.function)": lambda: detect(image)}
    result["num_detections"] = int(detect(image)["num_detections"][0])
    matmul, matmul_flops = matmul_fn(args.matmul_size)
    fns[f"fp32 matmul {args.matmul_size}^2"] = matmul
    runs = common.interleaved(fns, args.warmup, args.latency_repeats)
    result["matmul_flops"] = matmul_flops
    if frozen:
        result["forward_flops"] = graph_flops(lambda x: ours(x, training=False), spec.shape)
    return result, runs


#: The child process of the frozen part: the variable-weight path in a process of its own.
_VARIABLE_CHILD = "--variable-path-child"
CHILD_TIMEOUT_S = 1800


def part_frozen(args):
    import subprocess

    _print("frozen: timing the variable-weight detect in a child process ...")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "variable.json")
        # (the child returns before any part runs or --json is written)
        child = subprocess.run([sys.executable, os.path.abspath(__file__), *args.argv, _VARIABLE_CHILD, out],
                               capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        if child.returncode != 0:
            raise RuntimeError(f"the variable-path child failed:\n{child.stderr[-3000:]}")
        with open(out, encoding="utf-8") as f:
            variable = json.load(f)
    _print("frozen: freezing and timing the frozen functions ...")
    result, runs = _frozen_timings(args, frozen=True)
    result["runs_s"] = {**runs, **{f"{k} [child]": v for k, v in variable["runs_s"].items()}}
    result["stats_s"] = {name: common.spread(values) for name, values in result["runs_s"].items()}
    result["variable_num_detections"] = variable["num_detections"]
    result["flop_target"] = getattr(adapter_of(args.model), "FLOP_TARGET", FLOP_TARGET)
    flops, stats = result["forward_flops"], result["stats_s"]
    matmul = f"fp32 matmul {args.matmul_size}^2"
    for where, key in (("", matmul), (" [child]", f"{matmul} [child]")):
        result[f"matmul_flops_per_s{where}"] = common.spread([result["matmul_flops"] / s for s in result["runs_s"][key]])
    rate = result["matmul_flops_per_s"]["median"]
    result["fractions_of_matmul"] = {
        "frozen forward": flops / stats["tfzoo forward only, frozen"]["median"] / rate,
        "frozen detect (end to end)": flops / stats["tfzoo detect, frozen"]["median"] / rate,
        "variable detect (end to end, child process)": (
            flops / stats["tfzoo detect (tf.function) [child]"]["median"]
            / result["matmul_flops_per_s [child]"]["median"]),
    }
    result["speedup_frozen_detect"] = (stats["tfzoo detect (tf.function) [child]"]["median"]
                                       / stats["tfzoo detect, frozen"]["median"])
    # The two processes' machine speed may differ: the same ratio with each side's time in
    # units of its own process's matmul.
    result["speedup_frozen_detect_matmul_normalized"] = (
        result["speedup_frozen_detect"] * result["matmul_flops_per_s [child]"]["median"] / rate)
    return result


def report_frozen(r):
    lines = ["| contender | latency ms median (min-max) |", "|---|---:|"]
    for name, stats in r["stats_s"].items():
        lines.append(f"| {name} | {common.fmt(stats, 1000)} |")
    lines.append("")
    lines.append(f"forward {r['forward_flops'] / 1e9:.2f} GFLOP (graph count); freezing detect took "
                 f"{r['freeze_s']:.1f} s, its first call {r['first_call_s']:.1f} s; detections {r['num_detections']} "
                 f"frozen, {r['variable_num_detections']} with variables")
    lines.append(f"fp32 matmul: {common.fmt(r['matmul_flops_per_s'], 1e-9)} GFLOP/s (child process: "
                 f"{common.fmt(r['matmul_flops_per_s [child]'], 1e-9)})")
    lines.append("fractions of the matmul median: " + "; ".join(
        f"{k} {v:.2f}" for k, v in r["fractions_of_matmul"].items()) + f" (target >= {r['flop_target']:.2f})")
    lines.append(f"frozen detect is {r['speedup_frozen_detect']:.2f}x as fast as the variable-weight detect "
                 f"({r['speedup_frozen_detect_matmul_normalized']:.2f}x with each time in units of its process's "
                 "matmul)")
    return "\n".join(lines)


# --- part 2: training -------------------------------------------------------------------


def step_timer():
    """A Keras callback recording the wall time of every training step (``.steps``) and
    the last logs (``.last_logs``)."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = []
            self.last_logs = {}
            self._start = None

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps.append(time.perf_counter() - self._start)
            self.last_logs = logs or {}

    return StepTimer()


def tfzoo_train_batches(detector, images, batch_size, augment="none"):
    """Encoded ``(images, targets)`` batches of ``shapes``, held in memory after encoding, repeated."""
    import tfzoo.data as data
    from tfzoo.data.pipeline import pipeline

    ds = pipeline(data.load(f"shapes:{images}", "train"), detector, batch_size, training=True, seed=0,
                  augment=augment, shuffle_buffer=0)
    return in_memory(ds, images // batch_size)


def in_memory(batches, count):
    """The first ``count`` batches of ``batches`` computed once, held in memory, repeated
    (a ``cache()`` that a shorter ``fit`` call would discard half-filled is not used)."""
    import tensorflow as tf

    held = list(batches.take(count))
    stacked = tf.nest.map_structure(lambda *parts: tf.stack(parts), *held)
    return tf.data.Dataset.from_tensor_slices(stacked).repeat().prefetch(2)


def fit_steps(model, batches, steps, timer):
    """One ``fit`` call of ``steps`` steps; returns the wall time of each step."""
    start = len(timer.steps)
    model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    return timer.steps[start:]


def interleaved_fits(contenders, steps, warmup_steps, repeats):
    """``{name: [step seconds]}``: ``contenders[name] = (model, batches)`` trained in
    turns, one ``fit`` call of ``steps`` steps per round, after a ``warmup_steps`` call
    each (tracing, optimizer slots). The batches are in memory, so a call's first step
    waits for no input. A contender outside Keras is a callable ``run(steps) -> [step
    seconds]`` with a ``last_logs`` dict."""
    timers = {name: step_timer() for name in contenders}

    def run(name, count):
        contender = contenders[name]
        if callable(contender):
            return contender(count)
        model, batches = contender
        return fit_steps(model, batches, count, timers[name])

    for name in contenders:
        run(name, warmup_steps)
    runs = {name: [] for name in contenders}
    names = list(contenders)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].extend(run(name, steps))
    losses = {name: {k: float(v) for k, v in (contenders[name].last_logs if callable(contenders[name])
                                              else timers[name].last_logs).items()} for name in names}
    return runs, losses


def part_train(args):
    import keras

    peer = adapter_of(args.model).peer(args)
    batch, size = args.train_batch_size, args.image_size
    images = max(4 * batch, 8)
    contenders = {}
    from tfzoo.optim import L2SGD

    ours = build_tfzoo(args)
    # tfzoo's SGD (what `tfzoo train` uses), without weight decay as on KerasHub's side: the
    # update of keras.optimizers.SGD to the bit, in one fused kernel per weight.
    ours.compile(optimizer=L2SGD(args.learning_rate, momentum=0.9, l2=0.0))
    ours_batches = tfzoo_train_batches(ours, images, batch)
    contenders["tfzoo fit"] = (ours, ours_batches)
    # The same model and weights with Keras' SGD: what the fused update is worth.
    with_keras_sgd = build_tfzoo(args)
    with_keras_sgd.set_weights(ours.get_weights())
    with_keras_sgd.compile(optimizer=keras.optimizers.SGD(args.learning_rate, momentum=0.9))
    contenders["tfzoo fit, keras SGD"] = (with_keras_sgd, ours_batches)
    if peer is not None:
        contenders[f"{peer.name} fit"] = peer.train_contender(images, batch, args.learning_rate, in_memory)
    _print(f"train: {len(contenders)} models, batch {batch}, {args.repeats} interleaved rounds of "
           f"{args.train_steps} steps ...")
    runs, losses = interleaved_fits(contenders, args.train_steps, 2, args.repeats)
    result = {"batch_size": batch, "image_size": size, "num_classes": args.num_classes,
              "optimizer": f"SGD(lr={args.learning_rate}, momentum=0.9): tfzoo.optim.L2SGD(l2=0) for tfzoo fit, "
                           "keras.optimizers.SGD for the others",
              "step_s": runs, "last_logs": losses}
    result["images_per_s"] = {name: common.spread([batch / s for s in steps]) for name, steps in runs.items()}
    if peer is not None:
        theirs = f"{peer.name} fit"
        result["peer"] = peer.name
        result["ratio_vs_peer"] = (result["images_per_s"]["tfzoo fit"]["median"]
                                   / result["images_per_s"][theirs]["median"])
        # speed ratio per step pair: the peer's step time / tfzoo's
        result["paired_ratio"] = common.paired_ratios(runs[theirs], runs["tfzoo fit"])
        result["best_ratio"] = min(runs[theirs]) / min(runs["tfzoo fit"])
        result["target"] = adapter_of(args.model).TRAIN_TARGET
    return result


def report_train(r):
    name = r.get("peer", "peer")
    lines = [f"| contender | images/s median (min-max) | step s median | vs {name} |", "|---|---:|---:|---:|"]
    peer = r["images_per_s"].get(f"{name} fit")
    for contender, stats in r["images_per_s"].items():
        ratio = f"{stats['median'] / peer['median']:.2f}x" if peer else ""
        lines.append(f"| {contender} | {common.fmt(stats, 1, 2)} | {r['batch_size'] / stats['median']:.2f} | {ratio} |")
    lines.append("")
    lines.append(f"batch {r['batch_size']}, {r['image_size']}x{r['image_size']}, {r['num_classes']} classes, "
                 f"{r['optimizer']}; last logs: {json.dumps(r['last_logs'])}")
    diverged = [name for name, logs in r["last_logs"].items() if not all(math.isfinite(v) for v in logs.values())]
    if diverged:
        lines.append(f"WARNING: non-finite loss in {', '.join(diverged)} (lower --learning-rate)")
    if "ratio_vs_peer" in r:
        lines.append(f"tfzoo / {name}: {r['ratio_vs_peer']:.2f}x (target >= {r['target']:.2f}x); per step pair "
                     f"{common.fmt(r['paired_ratio'], 1, 2)}; fastest step vs fastest step {r['best_ratio']:.2f}x")
    return "\n".join(lines)


# --- part 3: exports --------------------------------------------------------------------


class TFLiteRunner:
    """A ``.tflite`` detector in the ``ai-edge-litert`` interpreter: ``detect(images)`` runs
    ``signature`` -> its outputs dict (quantized inputs/outputs converted). ``options`` go to
    the ``Interpreter`` (its delegate and op-resolver settings)."""

    def __init__(self, path, num_threads, signature="serving_default", **options):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads, **options)
        self.interpreter.allocate_tensors()
        signatures = self.interpreter.get_signature_list()
        self.runner = None
        if signatures:
            if signature not in signatures:
                raise ValueError(f"{path} has no signature {signature!r} (it has {', '.join(signatures)})")
            self.runner = self.interpreter.get_signature_runner(signature)
            self.input_name, self.input = next(iter(self.runner.get_input_details().items()))
            self.outputs = self.runner.get_output_details()
        else:
            self.input = self.interpreter.get_input_details()[0]
            self.outputs = {d["name"]: d for d in self.interpreter.get_output_details()}

    @staticmethod
    def _quantize(x, detail):
        dtype = detail["dtype"]
        scale, zero_point = detail.get("quantization", (0.0, 0))
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
        return x.astype(dtype)

    @staticmethod
    def _dequantize(y, detail):
        scale, zero_point = detail.get("quantization", (0.0, 0))
        if np.issubdtype(y.dtype, np.integer) and scale and "class" not in detail.get("name", "") \
                and "num_detections" not in detail.get("name", ""):
            return (y.astype(np.float32) - zero_point) * scale
        return y

    def detect(self, images):
        x = self._quantize(np.asarray(images, np.float32), self.input)
        if self.runner is not None:
            out = self.runner(**{self.input_name: x})
            return {k: self._dequantize(v, {**self.outputs[k], "name": k}) for k, v in out.items()}
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return {name: self._dequantize(self.interpreter.get_tensor(d["index"]), d) for name, d in self.outputs.items()}

    def input_dtype(self):
        return np.dtype(self.input["dtype"]).name


def _size_mb(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2 ** 20
    return os.path.getsize(path) / 2 ** 20


def calibration_images(size, count, keep_aspect_ratio=True):
    """``count`` ``shapes`` train images letterboxed (or warped: ``keep_aspect_ratio=False``,
    as SSD and YOLO take them) to ``size``: float32 ``[count, S, S, 3]``."""
    import tfzoo.data as data
    from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline

    if count < 1:
        return np.zeros([0, size, size, 3], np.float32)
    ds = pipeline(data.load(f"shapes:{count}", "train"), PaddedBoxesEncoder(size, keep_aspect_ratio=keep_aspect_ratio),
                  count, training=False)
    images, _ = next(iter(ds))
    return images.numpy()


def _export_api():
    try:
        from tfzoo import export
    except ImportError:
        return None
    if not all(hasattr(export, name) for name in ("export_saved_model", "export_tflite", "load_model")):
        return None
    return export


#: Export latency targets unless the family's adapter has its own ``EXPORT_TARGETS``.
EXPORT_TARGETS = {"int8": "<= 0.35x", "mobile fp32": "<= 0.5x"}


def export_ratios(model, mobile):
    """Export rows whose ratio the report gives: name -> (numerator row, denominator row, target)."""
    targets = getattr(adapter_of(model), "EXPORT_TARGETS", EXPORT_TARGETS)
    return {
        f"{model} TFLite int8 / SavedModel": (f"{model} TFLite int8", f"{model} SavedModel fp32", targets["int8"]),
        f"{model} TFLite dynamic / SavedModel": (f"{model} TFLite dynamic", f"{model} SavedModel fp32", "peer"),
        f"{mobile} TFLite fp32 / SavedModel": (f"{mobile} TFLite fp32", f"{mobile} SavedModel fp32",
                                               targets["mobile fp32"]),
        f"{mobile} network only, TFLite / SavedModel": (
            f"{mobile} TFLite fp32 (network only)", f"{mobile} SavedModel fp32 (network only)", "context"),
    }


def part_export(args):
    export = _export_api()
    if export is None:
        raise RuntimeError("tfzoo.export has no export_saved_model/export_tflite/load_model yet; "
                           "the export part needs them")
    result = {"threads": args.threads, "models": {}, "rows": {}}
    fns = {}

    def add_row(name, fn, **info):
        fns[name] = fn
        result["rows"][name] = info

    with tempfile.TemporaryDirectory() as tmp:
        # (preset, input size, TFLite modes, modes also timed without the decoder)
        specs = [(args.model, args.image_size, ("int8", "dynamic"), ()),
                 (args.mobile_model, args.mobile_image_size, (None,), (None,))]
        for name, size, quantizations, network_only in specs:
            detector = build_tfzoo(args, name, image_size=size)
            image = benchmark_image(args, size)
            # The int8 calibration set starts with the benchmark image. The class head is
            # calibrated on the benchmark image alone (exactly --candidates pairs above the
            # threshold there, as in the latency part): calibrating on the whole set left a
            # random retinanet_mobile with no candidate at all on the benchmark image.
            calibration = np.concatenate([image, calibration_images(size, args.calibration_images - 1)])
            prepared = adapter_of(name).prepare_tfzoo(detector, image, args.candidates)
            info = {"image_size": size, "params": int(detector.count_params()), "config": detector.config.to_dict(),
                    "candidates": prepared["candidates"],
                    "keras_detections": int(np.asarray(detector.detect(image)["num_detections"])[0])}
            _print(f"export: {name}: (pairs, anchors) above the threshold {info['candidates']}, "
                   f"Keras detections {info['keras_detections']}")
            sm_path = os.path.join(tmp, f"{name}_saved_model")
            start = time.perf_counter()
            export.export_saved_model(detector, sm_path)
            info["saved_model_export_s"] = time.perf_counter() - start
            saved = export.load_model(sm_path, trust_model=True)
            add_row(f"{name} SavedModel fp32", (lambda m, x: lambda: m.detect(x))(saved, image), model=name,
                    image_size=size, format="SavedModel fp32", mb=_size_mb(sm_path),
                    detections=int(np.asarray(saved.detect(image)["num_detections"])[0]))
            if network_only:
                add_row(f"{name} SavedModel fp32 (network only)",
                        (lambda m, x: lambda: m.raw_outputs(x))(saved, image), model=name, image_size=size,
                        format="SavedModel fp32, raw_outputs (no decoder)", mb=None, detections=None)
            for quantize in quantizations:
                label = f"TFLite {quantize or 'fp32'}"
                path = os.path.join(tmp, f"{name}_{quantize or 'fp32'}.tflite")
                _print(f"export: {name} -> {label} ...")
                start = time.perf_counter()
                export.export_tflite(detector, path, quantize=quantize,
                                     calibration_images=calibration if quantize == "int8" else None)
                info[f"{label} export_s"] = time.perf_counter() - start
                runner = TFLiteRunner(path, args.threads)
                add_row(f"{name} {label}", (lambda m, x: lambda: m.detect(x))(runner, image), model=name,
                        image_size=size, format=label, mb=_size_mb(path),
                        detections=int(np.asarray(runner.detect(image)["num_detections"]).ravel()[0]))
                if quantize in network_only:
                    # A second file with the raw_outputs signature, to time the network alone.
                    raw_path = os.path.join(tmp, f"{name}_{quantize or 'fp32'}_raw.tflite")
                    export.export_tflite(detector, raw_path, quantize=quantize, raw_outputs=True)
                    raw_runner = TFLiteRunner(raw_path, args.threads, signature="raw_outputs")
                    add_row(f"{name} {label} (network only)", (lambda m, x: lambda: m.detect(x))(raw_runner, image),
                            model=name, image_size=size, format=f"{label}, raw_outputs (no decoder)", mb=None,
                            detections=None)
            result["models"][name] = info
            del detector
            gc.collect()
        _print(f"export: timing {len(fns)} models, {args.repeats} interleaved rounds ...")
        runs = common.interleaved(fns, args.warmup, args.repeats)
    result["runs_s"] = runs
    result["stats_s"] = {name: common.spread(values) for name, values in runs.items()}
    result["ratios"] = {
        name: {"median_ratio": result["stats_s"][a]["median"] / result["stats_s"][b]["median"],
               "per_round": common.paired_ratios(runs[a], runs[b]), "target": target}
        for name, (a, b, target) in export_ratios(args.model, args.mobile_model).items()}
    result["ap"] = measure_ap_drop(args, export) if args.trained else {
        "measured": False,
        "why": "no --trained model given: a randomly initialized model detects nothing meaningful, "
               "so its AP (about 0 in fp32 and int8) says nothing about quantization loss",
    }
    return result


def measure_ap_drop(args, export):
    """COCO AP of a trained model: Keras fp32, TFLite fp32 and TFLite int8 on ``--trained-data``."""
    import keras

    import tfzoo.data as data
    from tfzoo.eval import evaluate_detector

    path = args.trained
    keras_path = os.path.join(path, "model.keras") if os.path.isdir(path) else path
    if not os.path.isfile(keras_path):
        raise FileNotFoundError(f"--trained {path}: no model.keras there (expected a training directory "
                                "or a .keras file)")
    detector = keras.saving.load_model(keras_path, safe_mode=True)
    size = detector.image_size[0]
    spec = args.trained_data
    dataset = data.load(spec, "val")
    names = detector.config.class_names or tuple(data.class_names(spec))
    result = {"measured": True, "model": keras_path, "data": f"{spec} val", "image_size": size}
    # The model's own resize (SSD and YOLO warp, the others letterbox), for the calibration
    # images and the evaluation alike.
    keep_aspect = bool(getattr(detector.encoder, "keep_aspect_ratio", True))
    result["resize"] = "letterbox" if keep_aspect else "warp"
    with tempfile.TemporaryDirectory() as tmp:
        calibration = calibration_images(size, args.calibration_images, keep_aspect)
        runners = {}
        for quantize in (None, "int8"):
            tflite_path = os.path.join(tmp, f"trained_{quantize or 'fp32'}.tflite")
            export.export_tflite(detector, tflite_path, quantize=quantize,
                                 calibration_images=calibration if quantize else None)
            runners[f"TFLite {quantize or 'fp32'}"] = TFLiteRunner(tflite_path, args.threads)

        def batched(runner):
            def detect(images):
                outs = [runner.detect(images[i:i + 1]) for i in range(int(images.shape[0]))]
                return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
            return detect

        contenders = {"Keras fp32": lambda images: detector.predict_on_batch(images)}
        contenders.update({name: batched(runner) for name, runner in runners.items()})
        for name, detect in contenders.items():
            _print(f"export: AP of {name} on {spec} val ...")
            metrics = evaluate_detector(detect, dataset, size, names, batch_size=8, progress=False,
                                        keep_aspect_ratio=keep_aspect)
            result[name] = {k: float(metrics[k]) for k in ("AP", "AP50")}
    result["AP drop int8 vs fp32 TFLite"] = result["TFLite fp32"]["AP"] - result["TFLite int8"]["AP"]
    return result


def report_export(r):
    lines = ["| model | format | latency ms median (min-max) | size MB | detections |", "|---|---|---:|---:|---:|"]
    for name, stats in r["stats_s"].items():
        row = r["rows"][name]
        mb = "" if row["mb"] is None else f"{row['mb']:.1f}"
        found = "" if row["detections"] is None else row["detections"]
        lines.append(f"| {row['model']} ({row['image_size']}) | {row['format']} | {common.fmt(stats, 1000)} "
                     f"| {mb} | {found} |")
    lines.append("")
    for name, ratio in r["ratios"].items():
        lines.append(f"{name}: {ratio['median_ratio']:.2f}x ({ratio['target']}); per round "
                     f"{common.fmt(ratio['per_round'], 1, 2)}")
    ap = r["ap"]
    if ap["measured"]:
        lines.append(f"AP on {ap['data']}: " + ", ".join(
            f"{k} {v['AP']:.3f} (AP50 {v['AP50']:.3f})" for k, v in ap.items() if isinstance(v, dict))
            + f"; int8 drop {ap['AP drop int8 vs fp32 TFLite']:.3f}")
    else:
        lines.append(f"AP drop: not measured ({ap['why']})")
    return "\n".join(lines)


# --- part 4: input pipeline vs training step ---------------------------------------------


def part_pipeline(args):
    import tfzoo.data as data
    from tfzoo.data.pipeline import pipeline
    from tfzoo.optim import make_optimizer

    size, batch = args.mobile_image_size, args.pipeline_batch_size
    images = args.pipeline_images
    detector = build_tfzoo(args, args.mobile_model, image_size=size, num_classes=len(data.class_names("shapes")))
    config = detector.config
    detector.compile(optimizer=make_optimizer(config, config.learning_rate))  # the preset's recipe
    train_batches = tfzoo_train_batches(detector, max(2 * batch, 8), batch)
    stream = pipeline(data.load(f"shapes:{images}", "train"), detector, batch, training=True, seed=0,
                      augment=config.augment, cache=args.pipeline_cache, shuffle_buffer=images)
    timer = step_timer()
    fit_steps(detector, train_batches, 2, timer)  # warm-up: traces, builds the optimizer
    common.epoch(stream)  # warm-up: traces the map functions
    pipeline_rates, step_s = [], []
    _print(f"pipeline: {args.repeats} rounds of one {images}-image epoch and {args.train_steps} training steps ...")
    for round_index in range(args.repeats):
        order = ("pipeline", "train") if round_index % 2 == 0 else ("train", "pipeline")
        for what in order:
            if what == "pipeline":
                seconds, n = common.epoch(stream)
                pipeline_rates.append(n / seconds)
            else:
                step_s.extend(fit_steps(detector, train_batches, args.train_steps, timer))
    result = {"model": args.mobile_model, "image_size": size, "batch_size": batch, "images_per_epoch": images,
              "augment": config.augment, "cached": args.pipeline_cache,
              "config": config.to_dict(), "params": int(detector.count_params()),
              "pipeline_images_per_s": common.spread(pipeline_rates),
              "train_images_per_s": common.spread([batch / s for s in step_s]),
              "pipeline_runs": pipeline_rates, "train_step_s": step_s}
    result["ratio"] = result["pipeline_images_per_s"]["median"] / result["train_images_per_s"]["median"]
    return result


def report_pipeline(r):
    return "\n".join([
        "| stage | images/s median (min-max) |", "|---|---:|",
        f"| shapes pipeline ({'cached' if r.get('cached') else 'uncached'}, {r['augment']}, {r['model']} encoder, "
        f"{r['image_size']}) "
        f"| {common.fmt(r['pipeline_images_per_s'])} |",
        f"| {r['model']} training step (batch {r['batch_size']}) | {common.fmt(r['train_images_per_s'], 1, 2)} |",
        "",
        f"pipeline / training step: {r['ratio']:.1f}x (target >= 5x)",
    ])


# --- main -------------------------------------------------------------------------------

RUNNERS = {
    "latency": (part_latency, report_latency),
    "frozen": (part_frozen, report_frozen),
    "train": (part_train, report_train),
    "export": (part_export, report_export),
    "pipeline": (part_pipeline, report_pipeline),
}


def parse_parts(text):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown) or '(none)'}; choose from "
                                         f"{','.join(PARTS)}")
    return parts


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="retinanet", help="the preset to benchmark (default: retinanet)")
    parser.add_argument("--mobile-model", default="retinanet_mobile",
                        help="the CPU preset of the export and pipeline parts (default: retinanet_mobile)")
    parser.add_argument("--parts", type=parse_parts, default=list(DEFAULT_PARTS),
                        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: {','.join(DEFAULT_PARTS)}; "
                             "frozen runs alone)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds of the train, export and pipeline parts (default 5)")
    parser.add_argument("--latency-repeats", type=int, default=None,
                        help="timed rounds of the latency part (default: 2 x --repeats)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per function before timing")
    parser.add_argument("--image-size", type=int, default=512, help="--model's input size (latency, train, export)")
    parser.add_argument("--mobile-image-size", type=int, default=320, help="--mobile-model's input size")
    parser.add_argument("--mobile-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override of --mobile-model, as `tfzoo train --set` (repeatable), e.g. "
                             "backbone=mobilenet_v2")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--candidates", type=int, default=2000,
                        help="(anchor, class) pairs of the benchmark image set to score above 0.05")
    parser.add_argument("--matmul-size", type=int, default=4096, help="side of the fp32 matmul peer")
    parser.add_argument("--train-batch-size", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps per contender and round")
    parser.add_argument("--learning-rate", type=float, default=1e-5,
                        help="SGD learning rate of the train part, both sides (at 1e-3 KerasHub's random heads "
                             "diverge to NaN within 4 steps; the step time does not depend on it)")
    parser.add_argument("--pipeline-images", type=int, default=256, help="images per pipeline epoch")
    parser.add_argument("--pipeline-batch-size", type=int, default=16)
    parser.add_argument("--pipeline-cache", action="store_true",
                        help="pipeline part: keep the generated examples in memory after the first epoch "
                             "(`tfzoo train --cache`): times augmentation and encoding without the generator")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    parser.add_argument("--calibration-images", type=int, default=8, help="int8 calibration images")
    parser.add_argument("--trained", default=None, help="trained model (training dir or .keras) for the int8 AP drop")
    parser.add_argument("--trained-data", default="shapes", help="dataset spec whose val split scores --trained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", default="float32", choices=("float32", "mixed_bfloat16"),
                        help="Keras dtype policy both sides are built under (latency, train); the matmul peer "
                             "stays float32 (default: float32)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"tiny models at {TINY_IMAGE_SIZE} px and small counts (smoke test)")
    parser.add_argument("--json", default=None, help="write the raw results to this JSON file")
    parser.add_argument(_VARIABLE_CHILD, dest="variable_path_child", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what the frozen part's child runs with
    if args.tiny:
        args.image_size = args.mobile_image_size = TINY_IMAGE_SIZE
        args.matmul_size = min(args.matmul_size, 256)
        args.candidates = min(args.candidates, 50)
        args.pipeline_images = min(args.pipeline_images, 16)
        args.pipeline_batch_size = min(args.pipeline_batch_size, 4)
        args.train_steps = min(args.train_steps, 1)
        args.calibration_images = min(args.calibration_images, 2)
        args.warmup = min(args.warmup, 1)
    if args.latency_repeats is None:
        args.latency_repeats = 2 * args.repeats
    if args.repeats < 1 or args.latency_repeats < 1:
        parser.error("--repeats and --latency-repeats must be >= 1")
    if "frozen" in args.parts and len(args.parts) > 1:
        parser.error("--parts frozen runs alone: oneDNN shares its convolution primitives between the functions "
                     "of a process, so the frozen and variable-weight paths are timed in processes of their own")

    import keras

    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(args.policy)
    env = common.environment()
    command = "python benchmarks/bench_model.py " + " ".join(sys.argv[1:] if argv is None else argv)
    _print(f"{command}\n{json.dumps(env)}")
    import tfzoo

    for name in (args.model, args.mobile_model):
        if name not in tfzoo.list_models():
            parser.error(f"unknown model {name!r}; known models: {', '.join(tfzoo.list_models())}")
    if args.variable_path_child:  # part_frozen's child: the variable-weight detect alone
        result, runs = _frozen_timings(args, frozen=False)
        with open(args.variable_path_child, "w", encoding="utf-8") as f:
            json.dump({**result, "runs_s": runs}, f, default=float)
        return result
    if adapter_of(args.model).peer(args) is None:
        _print(f"no peer of {args.model} runs here: peer contenders are skipped (pip install -e .[bench])")
    results = {"command": command, "env": env, "args": {k: v for k, v in vars(args).items()}, "parts": {}}
    reports = []
    for part in args.parts:
        run, report = RUNNERS[part]
        start = time.perf_counter()
        results["parts"][part] = run(args)
        results["parts"][part]["wall_s"] = time.perf_counter() - start
        text = f"## {part} ({results['parts'][part]['wall_s']:.0f} s)\n\n{report(results['parts'][part])}"
        reports.append(text)
        _print("\n" + text + "\n")
        gc.collect()
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, default=float)
        os.replace(tmp, args.json)
        _print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
