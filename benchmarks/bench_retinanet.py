"""RetinaNet side by side: tfzoo against KerasHub's RetinaNetObjectDetector, exports, input pipeline.

Parts (``--parts``, comma-separated; all by default), each measured in one run with the
contenders interleaved (round-robin, order rotated every round) so that load from other
processes falls on every side alike:

``latency``
    End-to-end predict latency at batch 1, ``--image-size`` (512), 80 classes, ResNet-50
    v1 + FPN P3-P7 + 4-conv heads, random weights, box decoding and NMS included:
    tfzoo ``tf.function(detector.detect)`` and ``detector.predict_on_batch`` against
    KerasHub ``RetinaNetObjectDetector`` built from architecture arguments (no weights can
    be downloaded): ``ResNetBackbone`` with the ResNet-50 v1 block config,
    ``RetinaNetBackbone(use_p5=True)`` (P6 from C5, as the paper and tfzoo), its
    preprocessor (``RetinaNetImageConverter`` resize + ImageNet normalization) and its
    ``NonMaxSuppression`` decoder. Both decoders use score threshold 0.05, IoU 0.5, 100
    detections. Also each side's forward pass alone, the forward FLOPs counted on the TF
    graph (``tf.compat.v1.profiler`` float_operation on the frozen concrete function;
    multiply-adds count 2) and the machine's fp32 matmul FLOP/s (``--matmul-size``^2
    ``tf.linalg.matmul`` in ``tf.function``), interleaved with the rest.

    Decoders differ by design: tfzoo keeps the top 1,000 (anchor, class) pairs per level,
    then runs per-class NMS (class offsets, one NonMaxSuppressionV5, TFLite builtins);
    KerasHub runs one class-agnostic padded NMS over every anchor's best class.

    Random weights give random scores: tfzoo's class head starts at the focal-loss prior
    (every score ~0.01: nothing passes 0.05, NMS gets no candidates), and KerasHub 0.32
    builds the prior bias into its *box* head (``use_prior_probability=True`` on
    ``box_head``: every random box shrinks to 1% of its anchor) and leaves its class head at
    0 (every score 0.5, all ~49k anchors pass; the first focal losses are ~1e4 and SGD
    diverges to NaN). Both sides therefore get the same treatment: KerasHub's prior bias
    is moved to its class head (the paper's and tfzoo's place); then each class head's
    output kernel is scaled so its logits on the benchmark image (a ``shapes`` image) have
    standard deviation 1, and its bias shifted so that exactly ``--candidates``
    (anchor, class) pairs score above 0.05, as a trained detector's would. None of this
    changes the compute.

``train``
    Training images/s at batch 2, same size, ResNet-50, 80 classes, SGD momentum 0.9:
    tfzoo ``fit`` on ``tfzoo.data.pipeline`` batches (targets encoded in tf.data, then
    held in memory and repeated, so the input pipeline does not limit) against KerasHub's
    ``fit`` on its own input format (images + ``{"boxes": yxyx pixels, "labels"}`` padded
    with -1, held in memory and repeated; its preprocessor maps over them and its label
    encoder runs in the train step) with its default losses (Huber + binary focal, sum). Per-step wall time from
    a callback, after a 2-step warm-up call per model (tracing, optimizer slots). tfzoo
    trains with its own SGD (``tfzoo.optim.L2SGD``, ``l2=0``: Keras' SGD update in one
    fused kernel per weight), KerasHub with ``keras.optimizers.SGD``; a third contender,
    tfzoo with ``keras.optimizers.SGD``, shows what the fused update is worth.

``export``
    Batch-1 exports with NMS inside (``tfzoo.export``): full-int8 TFLite of ``retinanet``
    (ResNet-50) against its SavedModel, dynamic-range int8 TFLite against the same, fp32
    TFLite of ``retinanet_mobile`` (320) against its SavedModel. The class heads are
    calibrated as above on the benchmark image (the first of the int8 calibration set). TFLite runs in
    ``ai_edge_litert.interpreter.Interpreter(num_threads=--threads)``; SavedModels through
    ``tfzoo.export.load_model``. AP of int8 against fp32 only with ``--trained PATH`` (an
    untrained network has no meaningful AP).

``pipeline``
    ``shapes`` through ``tfzoo.data.pipeline`` (uncached, ``scale_jitter``, the
    ``retinanet_mobile`` encoder at 320, batch 16) against the ``retinanet_mobile`` training
    step (``fit``, batch 16, the preset's optimizer from ``tfzoo.optim.make_optimizer``,
    pre-encoded batches held in memory), epochs and fit calls alternating.

Usage::

    python benchmarks/bench_retinanet.py --repeats 5 --json /tmp/bench_retinanet.json
    python benchmarks/bench_retinanet.py --parts export --trained saved_models/retinanet_shapes
    python benchmarks/bench_retinanet.py --parts latency,train --policy mixed_bfloat16  # both sides bfloat16
    python benchmarks/bench_retinanet.py --tiny --repeats 1       # smoke test, seconds
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

PARTS = ("latency", "train", "export", "pipeline")
#: Decoder settings both sides use.
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.5
MAX_DETECTIONS = 100
#: ImageNet mean/std of KerasHub's image converter (torch convention, pixels / 255).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: Standard deviation given to the random class logits (see calibrate_class_head).
LOGIT_SPREAD = 1.0
#: RetinaNet's class prior (the initial score of every class logit).
_PRIOR_PROBABILITY = 0.01
#: Ground-truth rows per image in KerasHub's training batches.
_MAX_BOXES = 8
#: ``--tiny``: small widths for a seconds-long smoke run (tfzoo MobileNetV2 0.35 with
#: 16-channel FPN and heads; KerasHub a one-block-per-stage ResNet with 1-conv heads).
TINY_TFZOO = dict(backbone="mobilenet_v2", backbone_alpha=0.35, fpn_channels=16, head_channels=16, head_convs=1)
TINY_IMAGE_SIZE = 64


def _print(*args):
    print(*args, flush=True)


def _keras_hub():
    try:
        import keras_hub
    except ImportError:
        return None
    return keras_hub


# --- models -----------------------------------------------------------------------------


def build_tfzoo(args, name="retinanet", **overrides):
    """A tfzoo RetinaNet preset with random weights (``--tiny``: the tiny widths)."""
    import tfzoo

    settings = dict(num_classes=args.num_classes, image_size=args.image_size, backbone_weights=None)
    if args.tiny:
        settings.update(TINY_TFZOO)
    settings.update(overrides)
    return tfzoo.build_model(name, **settings)


def build_keras_hub(args):
    """KerasHub ``RetinaNetObjectDetector``, ResNet-50 v1 (``--tiny``: ResNet-10-like),
    with its preprocessor and a NonMaxSuppression decoder at the shared settings."""
    import keras_hub

    size = args.image_size
    if args.tiny:
        resnet = dict(stackwise_num_filters=[64, 32, 32, 32], stackwise_num_blocks=[1, 1, 1, 1],
                      block_type="basic_block")
        head_convs = 1
    else:  # ResNet-50 v1 (He et al. 2016): bottleneck blocks 3-4-6-3
        resnet = dict(stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
                      block_type="bottleneck_block")
        head_convs = 4
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_strides=[1, 2, 2, 2],
        use_pre_activation=False, image_shape=(size, size, 3), **resnet,
    )
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=7, use_p5=True, image_shape=(size, size, 3),
    )
    converter = keras_hub.layers.RetinaNetImageConverter(
        image_size=(size, size),
        scale=[1.0 / (255.0 * s) for s in _IMAGENET_STD],
        offset=[-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)],
        crop_to_aspect_ratio=False, pad_to_aspect_ratio=True,
    )
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format="yxyx", from_logits=True, iou_threshold=NMS_IOU,
        confidence_threshold=SCORE_THRESHOLD, max_detections=MAX_DETECTIONS,
    )
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=args.num_classes, bounding_box_format="yxyx",
        pre_logits_num_conv_layers=head_convs,
        preprocessor=keras_hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=converter),
        prediction_decoder=decoder,
    )
    # KerasHub 0.32 builds its *box* head with the focal-loss prior bias (-4.6 on every
    # delta: random boxes shrink to 1% of their anchor) and its class head with bias 0 (every
    # score 0.5: the first focal losses are ~1e4 and SGD diverges to NaN within a few steps).
    # Put the prior where the paper (and tfzoo) has it: on the class logits.
    prior = prior_bias(_PRIOR_PROBABILITY)
    for head, value in ((model.box_head, 0.0), (model.classification_head, prior)):
        bias = head.prediction_layer.bias
        bias.assign(np.full(bias.shape, value, "float32"))
    return model


def benchmark_image(args, size=None):
    """One ``shapes`` val image resized (warped, no padding) to the model input: float32 ``[1, S, S, 3]``."""
    import tfzoo.data as data
    from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline

    size = size or args.image_size
    ds = pipeline(data.load("shapes:1", "val"), PaddedBoxesEncoder(size, keep_aspect_ratio=False), 1, training=False)
    images, _ = next(iter(ds))
    return images.numpy()


def prior_bias(probability):
    """``log(p / (1 - p))``: the logit whose sigmoid is ``probability`` (tfzoo's own)."""
    from tfzoo.ops.losses import prior_bias as tfzoo_prior_bias

    return tfzoo_prior_bias(probability)


def calibrate_class_head(layer, class_logits, candidates, threshold=SCORE_THRESHOLD, spread=LOGIT_SPREAD):
    """Gives a random class head the score statistics of a trained one, on the benchmark image.

    ``layer``: the head's output conv; ``class_logits()``: the class logits it produces for
    the benchmark image (any shape). The (pointwise) kernel is scaled so that the logits' standard
    deviation is ``spread`` (a random head's logits differ by ~1e-2, which int8
    quantization flattens), then the bias is shifted so that exactly ``candidates`` logits
    lie above ``logit(threshold)``. Returns ``{"kernel_scale", "bias_shift"}``.
    """
    from tfzoo.layers import output_kernel

    logits = np.asarray(class_logits(), "float64")
    scale = spread / max(float(logits.std()), 1e-12)
    kernel = output_kernel(layer)
    kernel.assign(kernel.numpy() * np.float32(scale))
    flat = np.sort(np.asarray(class_logits(), "float64").ravel())[::-1]
    candidates = int(min(max(candidates, 1), flat.size - 1))
    cut = 0.5 * (flat[candidates - 1] + flat[candidates])
    shift = prior_bias(threshold) - cut  # the logit whose sigmoid is ``threshold``
    layer.bias.assign(layer.bias.numpy() + np.float32(shift))
    return {"kernel_scale": scale, "bias_shift": shift}


def candidate_counts(logits, threshold=SCORE_THRESHOLD):
    """``(pairs, anchors)``: (anchor, class) pairs and anchors with a score above ``threshold``."""
    scores = 1.0 / (1.0 + np.exp(-np.asarray(logits, "float64")))
    above = scores > threshold
    return int(above.sum()), int(above.any(axis=-1).sum())


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


def part_latency(args):
    import tensorflow as tf

    keras_hub = _keras_hub()
    size = args.image_size
    image = benchmark_image(args)
    spec = tf.TensorSpec([1, size, size, 3], tf.float32)
    result = {"image_size": size, "num_classes": args.num_classes, "candidates_target": args.candidates}

    ours = build_tfzoo(args)
    calibration = calibrate_class_head(ours.get_layer("class_head_predict"), lambda: ours(image)["class_logits"],
                                       args.candidates)
    ours_logits = ours(image)["class_logits"].numpy()
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
    result["tfzoo"] = {
        "params": int(ours.count_params()), "calibration": calibration,
        "candidates": dict(zip(("pairs", "anchors"), candidate_counts(ours_logits))),
        "num_detections": int(detect(image)["num_detections"][0]),
    }

    if keras_hub is not None:
        theirs = build_keras_hub(args)
        preprocessed = tf.cast(theirs.preprocessor(image), tf.float32)  # bfloat16 under --policy mixed_bfloat16
        head = theirs.classification_head.prediction_layer
        calibration = calibrate_class_head(head, lambda: theirs(preprocessed)["cls_logits"], args.candidates)
        theirs_logits = theirs(preprocessed)["cls_logits"].numpy()
        theirs_forward = tf.function(lambda x: theirs(x, training=False), input_signature=[spec], autograph=False)
        pob_error = None
        if args.policy != "float32":
            # keras-hub 0.32's decoder multiplies the bfloat16 head outputs by float32
            # anchors and fails; the peer is its forward pass and decoder in one compiled
            # function, the outputs cast to float32 between them (preprocessor outside).
            def forward_decode(x):
                raw = tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), theirs(x, training=False))
                return theirs.decode_predictions(raw, x)

            predict_function = tf.function(forward_decode, input_signature=[spec])
            peer = "KerasHub forward + decode (float32 outputs; tf.function)"
            fns[peer] = lambda: predict_function(tf.cast(theirs.preprocessor(image), tf.float32))
            theirs_out = predict_function(preprocessed)
        else:
            theirs.make_predict_function()
            predict_function = theirs.predict_function
            try:
                theirs.predict_on_batch(image)
                fns["KerasHub predict_on_batch"] = lambda: theirs.predict_on_batch(image)
                peer = "KerasHub predict_on_batch"
            except ValueError as error:
                # keras-hub 0.32: RetinaNetObjectDetector.predict_step gets ``(x,)`` from
                # predict_on_batch and decode_predictions unpacks it as ``(images, _)``.
                pob_error = f"{type(error).__name__}: {error}"
                peer = "KerasHub preprocessor + predict_function"
                fns[peer] = lambda: predict_function([theirs.preprocessor(image)])
            fns["KerasHub predict()"] = lambda: theirs.predict(image, verbose=0)
            theirs_out = predict_function([preprocessed])
        fns["KerasHub forward only (tf.function)"] = lambda: theirs_forward(preprocessed)
        theirs_raw = tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), theirs_forward(preprocessed))
        theirs_decode = tf.function(theirs.decode_predictions)
        fns["KerasHub decode + NMS only (tf.function)"] = lambda: theirs_decode(theirs_raw, preprocessed)
        result["keras_hub"] = {
            "version": keras_hub.__version__, "params": int(theirs.count_params()), "calibration": calibration,
            "candidates": dict(zip(("pairs", "anchors"), candidate_counts(theirs_logits))),
            "num_detections": int(np.asarray(theirs_out["num_detections"])[0]),
            "predict_on_batch_error": pob_error, "peer": peer,
        }
    matmul, matmul_flops = matmul_fn(args.matmul_size)
    fns[f"fp32 matmul {args.matmul_size}^2"] = matmul

    _print(f"latency: timing {len(fns)} functions, {args.latency_repeats} interleaved rounds ...")
    runs = common.interleaved(fns, args.warmup, args.latency_repeats)
    result["runs_s"] = runs
    result["stats_s"] = {name: common.spread(values) for name, values in runs.items()}

    _print("latency: counting graph FLOPs ...")
    result["tfzoo"]["forward_flops"] = graph_flops(lambda x: ours(x, training=False), spec.shape)
    if keras_hub is not None:
        result["keras_hub"]["forward_flops"] = graph_flops(lambda x: theirs(x, training=False), spec.shape)
    matmul_rates = [matmul_flops / s for s in runs[f"fp32 matmul {args.matmul_size}^2"]]
    result["matmul_flops_per_s"] = common.spread(matmul_rates)
    forward_s = result["stats_s"]["tfzoo forward only (tf.function)"]
    achieved = result["tfzoo"]["forward_flops"] / forward_s["median"]
    result["tfzoo"]["forward_flops_per_s"] = achieved
    result["tfzoo"]["fraction_of_matmul"] = achieved / result["matmul_flops_per_s"]["median"]
    result["tfzoo"]["fraction_of_matmul_best"] = (
        result["tfzoo"]["forward_flops"] / forward_s["min"] / result["matmul_flops_per_s"]["max"])
    if keras_hub is not None:
        peer = result["keras_hub"]["peer"]
        peer_s = result["stats_s"][peer]["median"]
        result["ratio_detect_vs_keras_hub"] = result["stats_s"]["tfzoo detect (tf.function)"]["median"] / peer_s
        result["ratio_predict_on_batch_vs_keras_hub"] = (
            result["stats_s"]["tfzoo predict_on_batch"]["median"] / peer_s)
        result["paired_ratios"] = {
            name: common.paired_ratios(runs[name], runs[peer])
            for name in ("tfzoo detect (tf.function)", "tfzoo predict_on_batch")}
        result["paired_ratios"]["tfzoo forward / KerasHub forward"] = common.paired_ratios(
            runs["tfzoo forward only (tf.function)"], runs["KerasHub forward only (tf.function)"])
        result["best_ratio_detect_vs_keras_hub"] = (result["stats_s"]["tfzoo detect (tf.function)"]["min"]
                                                    / result["stats_s"][peer]["min"])
        result["keras_hub"]["decode_nms_s"] = result["stats_s"]["KerasHub decode + NMS only (tf.function)"]["median"]
    result["tfzoo"]["decode_nms_s"] = result["stats_s"]["tfzoo decode + NMS only (tf.function)"]["median"]
    return result


def report_latency(r):
    lines = ["| contender | latency ms median (min-max) | IQR ms | vs KerasHub |", "|---|---:|---:|---:|"]
    peer = r.get("keras_hub", {}).get("peer")
    peer_median = r["stats_s"][peer]["median"] if peer else None
    for name, stats in r["stats_s"].items():
        if name.startswith("fp32 matmul"):
            continue
        ratio = f"{stats['median'] / peer_median:.2f}x" if peer_median and " only " not in name else ""
        lines.append(f"| {name} | {common.fmt(stats, 1000)} | {1000 * stats['q1']:.0f}-{1000 * stats['q3']:.0f} "
                     f"| {ratio} |")
    t = r["tfzoo"]
    lines.append("")
    lines.append(f"tfzoo: {t['params']:,} params, forward {t['forward_flops'] / 1e9:.2f} GFLOP (graph count), "
                 f"candidates above {SCORE_THRESHOLD}: {t['candidates']['pairs']} pairs / "
                 f"{t['candidates']['anchors']} anchors, {t['num_detections']} detections, "
                 f"decode+NMS {1000 * t['decode_nms_s']:.0f} ms")
    if "keras_hub" in r:
        k = r["keras_hub"]
        lines.append(f"KerasHub {k['version']}: {k['params']:,} params, forward {k['forward_flops'] / 1e9:.2f} GFLOP, "
                     f"candidates: {k['candidates']['pairs']} pairs / {k['candidates']['anchors']} anchors, "
                     f"{k['num_detections']} detections, decode+NMS {1000 * k['decode_nms_s']:.0f} ms")
        if k["predict_on_batch_error"]:
            lines.append(f"KerasHub predict_on_batch failed ({k['predict_on_batch_error']}); "
                         f"timed its preprocessor + compiled predict_function instead")
        lines.append(f"tfzoo detect / KerasHub: {r['ratio_detect_vs_keras_hub']:.2f}x, "
                     f"predict_on_batch / KerasHub: {r['ratio_predict_on_batch_vs_keras_hub']:.2f}x (target <= 0.90x)")
        lines.append("per-round ratios, median (min-max): " + "; ".join(
            f"{name} {common.fmt(stats, 1, 2)}" for name, stats in r["paired_ratios"].items())
            + f"; fastest tfzoo detect / fastest KerasHub: {r['best_ratio_detect_vs_keras_hub']:.2f}x")
    m = r["matmul_flops_per_s"]
    lines.append(f"fp32 matmul: {common.fmt(m, 1e-9)} GFLOP/s; tfzoo forward achieves "
                 f"{t['forward_flops_per_s'] / 1e9:.1f} GFLOP/s = {t['fraction_of_matmul']:.2f} of the matmul "
                 f"median (best vs best {t['fraction_of_matmul_best']:.2f}; target >= 0.75)")
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


def keras_hub_train_batches(size, images, batch_size):
    """The same images for KerasHub: ``(images, {"boxes": [B, G, 4] yxyx pixels, "labels":
    [B, G]})``, absent rows -1 (its bounding-box convention), held in memory, repeated."""
    import tensorflow as tf

    import tfzoo.data as data
    from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline
    from tfzoo.ops import boxes as box_ops

    encoder = PaddedBoxesEncoder(size, max_boxes=_MAX_BOXES, augment="none")
    ds = pipeline(data.load(f"shapes:{images}", "train"), encoder, batch_size, training=True, seed=0,
                  shuffle_buffer=0)

    @tf.autograph.experimental.do_not_convert
    def to_keras_hub(image, truth):
        valid = truth["classes"] >= 0  # [B, G]
        boxes_px = box_ops.denormalize(truth["boxes"], size, size)  # [B, G, 4]
        return image, {
            "boxes": tf.where(valid[..., None], boxes_px, -1.0),
            "labels": tf.where(valid, tf.cast(truth["classes"], tf.float32), -1.0),
        }

    return in_memory(ds.map(to_keras_hub), images // batch_size)


def fit_steps(model, batches, steps, timer):
    """One ``fit`` call of ``steps`` steps; returns the wall time of each step."""
    start = len(timer.steps)
    model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    return timer.steps[start:]


def interleaved_fits(contenders, steps, warmup_steps, repeats):
    """``{name: [step seconds]}``: ``contenders[name] = (model, batches)`` trained in
    turns, one ``fit`` call of ``steps`` steps per round, after a ``warmup_steps`` call
    each (tracing, optimizer slots). The batches are in memory, so a call's first step
    waits for no input."""
    timers = {name: step_timer() for name in contenders}
    for name, (model, batches) in contenders.items():
        fit_steps(model, batches, warmup_steps, timers[name])
    runs = {name: [] for name in contenders}
    names = list(contenders)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            model, batches = contenders[name]
            runs[name].extend(fit_steps(model, batches, steps, timers[name]))
    losses = {name: {k: float(v) for k, v in timers[name].last_logs.items()} for name in names}
    return runs, losses


def part_train(args):
    import keras

    keras_hub = _keras_hub()
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
    if keras_hub is not None:
        theirs = build_keras_hub(args)
        theirs.compile(optimizer=keras.optimizers.SGD(args.learning_rate, momentum=0.9))
        contenders["KerasHub fit"] = (theirs, keras_hub_train_batches(size, images, batch))
    _print(f"train: {len(contenders)} models, batch {batch}, {args.repeats} interleaved rounds of "
           f"{args.train_steps} steps ...")
    runs, losses = interleaved_fits(contenders, args.train_steps, 2, args.repeats)
    result = {"batch_size": batch, "image_size": size, "num_classes": args.num_classes,
              "optimizer": f"SGD(lr={args.learning_rate}, momentum=0.9): tfzoo.optim.L2SGD(l2=0) for tfzoo fit, "
                           "keras.optimizers.SGD for the others",
              "step_s": runs, "last_logs": losses}
    result["images_per_s"] = {name: common.spread([batch / s for s in steps]) for name, steps in runs.items()}
    if "KerasHub fit" in runs:
        result["ratio_vs_keras_hub"] = (result["images_per_s"]["tfzoo fit"]["median"]
                                        / result["images_per_s"]["KerasHub fit"]["median"])
        # speed ratio per step pair: KerasHub step time / tfzoo step time
        result["paired_ratio"] = common.paired_ratios(runs["KerasHub fit"], runs["tfzoo fit"])
        result["best_ratio"] = min(runs["KerasHub fit"]) / min(runs["tfzoo fit"])
    return result


def report_train(r):
    lines = ["| contender | images/s median (min-max) | step s median | vs KerasHub |", "|---|---:|---:|---:|"]
    peer = r["images_per_s"].get("KerasHub fit")
    for name, stats in r["images_per_s"].items():
        ratio = f"{stats['median'] / peer['median']:.2f}x" if peer else ""
        lines.append(f"| {name} | {common.fmt(stats, 1, 2)} | {r['batch_size'] / stats['median']:.2f} | {ratio} |")
    lines.append("")
    lines.append(f"batch {r['batch_size']}, {r['image_size']}x{r['image_size']}, {r['num_classes']} classes, "
                 f"{r['optimizer']}; last logs: {json.dumps(r['last_logs'])}")
    diverged = [name for name, logs in r["last_logs"].items() if not all(math.isfinite(v) for v in logs.values())]
    if diverged:
        lines.append(f"WARNING: non-finite loss in {', '.join(diverged)} (lower --learning-rate)")
    if "ratio_vs_keras_hub" in r:
        lines.append(f"tfzoo / KerasHub: {r['ratio_vs_keras_hub']:.2f}x (target >= 1.25x); per step pair "
                     f"{common.fmt(r['paired_ratio'], 1, 2)}; fastest step vs fastest step {r['best_ratio']:.2f}x")
    return "\n".join(lines)


# --- part 3: exports --------------------------------------------------------------------


class TFLiteRunner:
    """A ``.tflite`` detector in the ``ai-edge-litert`` interpreter: ``detect(images)`` runs
    ``signature`` -> its outputs dict (quantized inputs/outputs converted)."""

    def __init__(self, path, num_threads, signature="serving_default"):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
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


def calibration_images(size, count):
    """``count`` ``shapes`` train images letterboxed to ``size``: float32 ``[count, S, S, 3]``."""
    import tfzoo.data as data
    from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline

    if count < 1:
        return np.zeros([0, size, size, 3], np.float32)
    ds = pipeline(data.load(f"shapes:{count}", "train"), PaddedBoxesEncoder(size), count, training=False)
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


#: Export rows whose ratio the report gives: name -> (numerator row, denominator row, target).
EXPORT_RATIOS = {
    "retinanet TFLite int8 / SavedModel": ("retinanet TFLite int8", "retinanet SavedModel fp32", "<= 0.35x"),
    "retinanet TFLite dynamic / SavedModel": ("retinanet TFLite dynamic", "retinanet SavedModel fp32", "peer"),
    "retinanet_mobile TFLite fp32 / SavedModel": ("retinanet_mobile TFLite fp32", "retinanet_mobile SavedModel fp32",
                                                  "<= 0.5x"),
    "retinanet_mobile network only, TFLite / SavedModel": (
        "retinanet_mobile TFLite fp32 (network only)", "retinanet_mobile SavedModel fp32 (network only)", "context"),
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
        specs = [("retinanet", args.image_size, ("int8", "dynamic"), ()),
                 ("retinanet_mobile", args.mobile_image_size, (None,), (None,))]
        for name, size, quantizations, network_only in specs:
            detector = build_tfzoo(args, name, image_size=size)
            image = benchmark_image(args, size)
            # The int8 calibration set starts with the benchmark image. The class head is
            # calibrated on the benchmark image alone (exactly --candidates pairs above the
            # threshold there, as in the latency part): calibrating on the whole set left a
            # random retinanet_mobile with no candidate at all on the benchmark image.
            calibration = np.concatenate([image, calibration_images(size, args.calibration_images - 1)])
            calibrate_class_head(detector.get_layer("class_head_predict"),
                                 lambda: detector(image)["class_logits"], args.candidates)
            info = {"image_size": size, "params": int(detector.count_params()), "config": detector.config.to_dict(),
                    "candidates": candidate_counts(detector(image, training=False)["class_logits"].numpy()),
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
        for name, (a, b, target) in EXPORT_RATIOS.items()}
    result["ap"] = measure_ap_drop(args, export) if args.trained else {
        "measured": False,
        "why": "no --trained model given: a randomly initialized ResNet-50 detects nothing meaningful, "
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
    with tempfile.TemporaryDirectory() as tmp:
        calibration = calibration_images(size, args.calibration_images)
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
            metrics = evaluate_detector(detect, dataset, size, names, batch_size=8, progress=False)
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
    from tfzoo.train import make_optimizer

    size, batch = args.mobile_image_size, args.pipeline_batch_size
    images = args.pipeline_images
    detector = build_tfzoo(args, "retinanet_mobile", image_size=size, num_classes=len(data.class_names("shapes")))
    config = detector.config
    detector.compile(optimizer=make_optimizer(config, config.learning_rate))  # the preset's recipe
    train_batches = tfzoo_train_batches(detector, max(2 * batch, 8), batch)
    stream = pipeline(data.load(f"shapes:{images}", "train"), detector, batch, training=True, seed=0,
                      augment="scale_jitter", cache=False, shuffle_buffer=images)
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
    result = {"image_size": size, "batch_size": batch, "images_per_epoch": images, "augment": "scale_jitter",
              "config": config.to_dict(), "params": int(detector.count_params()),
              "pipeline_images_per_s": common.spread(pipeline_rates),
              "train_images_per_s": common.spread([batch / s for s in step_s]),
              "pipeline_runs": pipeline_rates, "train_step_s": step_s}
    result["ratio"] = result["pipeline_images_per_s"]["median"] / result["train_images_per_s"]["median"]
    return result


def report_pipeline(r):
    return "\n".join([
        "| stage | images/s median (min-max) |", "|---|---:|",
        f"| shapes pipeline (uncached, {r['augment']}, retinanet_mobile encoder, {r['image_size']}) "
        f"| {common.fmt(r['pipeline_images_per_s'])} |",
        f"| retinanet_mobile training step (batch {r['batch_size']}) | {common.fmt(r['train_images_per_s'], 1, 2)} |",
        "",
        f"pipeline / training step: {r['ratio']:.1f}x (target >= 5x)",
    ])


# --- main -------------------------------------------------------------------------------

RUNNERS = {
    "latency": (part_latency, report_latency),
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
    parser.add_argument("--parts", type=parse_parts, default=list(PARTS),
                        help=f"comma-separated parts to run (default: {','.join(PARTS)})")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds of the train, export and pipeline parts (default 5)")
    parser.add_argument("--latency-repeats", type=int, default=None,
                        help="timed rounds of the latency part (default: 2 x --repeats)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per function before timing")
    parser.add_argument("--image-size", type=int, default=512, help="ResNet-50 input size (latency, train, export)")
    parser.add_argument("--mobile-image-size", type=int, default=320, help="retinanet_mobile input size")
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
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
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

    import keras

    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(args.policy)
    env = common.environment()
    command = "python benchmarks/bench_retinanet.py " + " ".join(sys.argv[1:] if argv is None else argv)
    _print(f"{command}\n{json.dumps(env)}")
    if _keras_hub() is None:
        _print("keras_hub is not importable: KerasHub contenders are skipped (pip install -e .[bench])")
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
