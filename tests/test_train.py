"""tfzoo.train: the recipe (schedule, optimizer, scaling), the training directory,
non-finite loss stop, resume, time budget, strategies, mixed precision, data errors and
the paper recipe scripts.

The training runs use a tiny RetinaNet at 64 px on 16 shapes images (4 steps per epoch);
the slow ones (each traces a train step: seconds) are marked ``slow`` but run by default.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap
import types
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
import tfzoo.data
from tfzoo import train as T
from tfzoo.train import callbacks as train_callbacks, loop as train_loop, rundir as train_rundir
from tfzoo.data import shapes, validate
from tfzoo.eval import RESULT_KEYS, diagnostics
from tfzoo.layers import output_kernel

from tests.models.conftest import tiny_settings

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["optimizer=sgd", "backbone_alpha=0.35", "fpn_channels=16", "head_channels=16", "head_convs=1",
        "backbone_weights=null"]
TINY_KW = dict(backbone_weights=None, image_size=64, backbone_alpha=0.35, fpn_channels=16, head_channels=16,
               head_convs=1)
RUN = dict(image_size=64, batch_size=4, settings=TINY, verbose=0)
slow = pytest.mark.slow  # trains (traces a train step); still part of the default run


def _json(path):
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))


def _write_voc(root, splits):
    """A VOC folder of shapes images: ``{split: number of images}``."""
    from tfzoo.data import voc

    for split, n in splits.items():
        examples = [{**ex, "image_id": f"{split}_{i:03d}"} for i, ex in enumerate(shapes.examples(split, n))]
        voc.write(examples, root, split, shapes.class_names())
    return f"voc:{root}"


# --- recipe: schedule, optimizer, config -------------------------------------------------


def _lr(schedule, step):
    return float(schedule(tf.constant(step, tf.int64)))


def test_step_schedule_matches_the_paper_recipe():
    # Paper: lr 0.01, 90k iterations, x0.1 at 60k and 80k; Detectron warm-up: 1/3 -> 1 over 500.
    schedule = T.WarmupDecaySchedule(0.01, 90_000, 500, "step")
    expected = {0: 0.01 / 3, 250: 0.01 * (1 / 3 + 2 / 3 * 0.5), 500: 0.01, 59_999: 0.01, 60_000: 0.001,
                79_999: 0.001, 80_000: 1e-4, 90_000: 1e-4}
    for step, lr in expected.items():
        assert _lr(schedule, step) == pytest.approx(lr, rel=1e-5), step


def test_cosine_schedule_peak_middle_and_end():
    schedule = T.WarmupDecaySchedule(0.002, 1000, 100, "cosine")
    assert _lr(schedule, 0) == pytest.approx(0.002 / 3, rel=1e-5)
    assert _lr(schedule, 100) == pytest.approx(0.002, rel=1e-5)
    assert _lr(schedule, 550) == pytest.approx(0.001, rel=1e-5)  # half-way through the decay
    assert _lr(schedule, 1000) == pytest.approx(0.0, abs=1e-9)
    assert _lr(schedule, 1200) == pytest.approx(0.0, abs=1e-9)


def test_schedule_end_moves_without_retracing_and_round_trips():
    schedule = T.WarmupDecaySchedule(0.01, 900, 0, "step")
    graph_lr = tf.function(lambda step: schedule(step))
    assert float(graph_lr(tf.constant(600, tf.int64))) == pytest.approx(0.001)
    schedule.set_total_steps(90)  # the time budget moves the end of a running schedule
    assert float(graph_lr(tf.constant(59, tf.int64))) == pytest.approx(0.01)
    assert float(graph_lr(tf.constant(60, tf.int64))) == pytest.approx(0.001)
    assert float(graph_lr(tf.constant(80, tf.int64))) == pytest.approx(1e-4)
    assert graph_lr.experimental_get_tracing_count() == 1
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, T.WarmupDecaySchedule) and restored.get_config() == schedule.get_config()
    assert restored.total_steps == 90


def test_warmup_is_capped_for_short_runs():
    config = T.preset_config("retinanet")
    assert T.make_schedule(config, 90_000).warmup_steps == 500
    assert T.make_schedule(config, 100).warmup_steps == int(T.MAX_WARMUP_FRACTION * 100)
    with pytest.raises(ValueError, match="lr_schedule"):
        T.WarmupDecaySchedule(0.01, 100, 0, "linear")


def test_l2_sgd_adds_weight_decay_to_the_gradient_inside_momentum():
    w = keras.Variable([1.0])
    optimizer = T.L2SGD(learning_rate=0.1, momentum=0.9, l2=0.1)
    for _ in range(2):
        optimizer.apply_gradients([(tf.constant([0.5]), w)])
    # step 1: m = -0.1 * (0.5 + 0.1 * 1) = -0.06 -> w = 0.94
    # step 2: m = 0.9 * -0.06 - 0.1 * (0.5 + 0.1 * 0.94) = -0.1134 -> w = 0.8266
    assert float(w.numpy()[0]) == pytest.approx(0.8266, rel=1e-6)
    assert T.L2SGD.from_config(optimizer.get_config()).l2 == pytest.approx(0.1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_l2_sgd_fused_update_equals_keras_sgd_to_the_bit(nesterov, monkeypatch):
    # The fused kernel does Keras' arithmetic: with l2 = 0 the weights match keras SGD's
    # exactly, step after step, for a kernel and a bias, with and without Nesterov.
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 3, 4, 5)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    grads = [[tf.constant(rng.normal(size=w.shape).astype(np.float32)) for w in start] for _ in range(4)]
    weights = {}
    for name, optimizer in (("keras", keras.optimizers.SGD(0.05, momentum=0.9, nesterov=nesterov)),
                            ("tfzoo", T.L2SGD(0.05, momentum=0.9, l2=0.0, nesterov=nesterov))):
        variables = [keras.Variable(w) for w in start]
        optimizer.build(variables)
        apply = tf.function(lambda g: optimizer.apply(g, variables))  # noqa: B023 (called in this loop)
        for step in grads:
            apply(step)
        weights[name] = [v.numpy() for v in variables]
        # tfzoo's run must not fall back to Keras' update
        monkeypatch.setattr(keras.optimizers.SGD, "update_step", lambda *a: pytest.fail("not fused"))
    for ours, theirs, first in zip(weights["tfzoo"], weights["keras"], start):
        assert not np.array_equal(ours, first)
        np.testing.assert_array_equal(ours, theirs)


def test_l2_sgd_without_momentum_takes_keras_path():
    w = keras.Variable([1.0, 2.0])
    T.L2SGD(learning_rate=0.5, momentum=0.0, l2=0.0).apply_gradients([(tf.constant([0.2, -0.4]), w)])
    np.testing.assert_allclose(w.numpy(), [0.9, 2.2])


def numpy_adamw(start, grads, learning_rates, weight_decay, decayed, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """AdamW in float64, step by step: decoupled decay w -= lr * wd * w, then Adam."""
    weights = [w.astype(np.float64) for w in start]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, (step, lr) in enumerate(zip(grads, learning_rates), start=1):
        for i, g in enumerate(step):
            g = np.asarray(g, np.float64)
            if decayed[i]:
                weights[i] = weights[i] - lr * weight_decay * weights[i]
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
            alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            weights[i] = weights[i] - alpha * m[i] / (np.sqrt(v[i]) + epsilon)
    return weights


def _adamw_run(optimizer, start, grads, names):
    variables = [keras.Variable(w, name=n) for w, n in zip(start, names)]
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.build(variables)
    apply = tf.function(lambda g: optimizer.apply(g, variables))
    for step in grads:
        apply([tf.constant(g) for g in step])
    return [v.numpy() for v in variables]


def test_fused_adamw_matches_numpy_adamw(monkeypatch):
    # Decoupled decay on the kernel (the bias excluded by name), a learning rate that changes
    # every step, gradients of mixed scale: Keras' AdamW and FusedAdamW both follow a float64
    # NumPy AdamW to float32 rounding, and FusedAdamW runs its fused kernels only.
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 3, 4, 5)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    grads = [[(rng.normal(size=w.shape) * 10.0 ** rng.integers(-3, 2, size=w.shape)).astype(np.float32) for w in start]
             for _ in range(6)]
    schedule = T.WarmupDecaySchedule(0.05, total_steps=6, warmup_steps=2, kind="cosine")
    rates = [float(schedule(step)) for step in range(6)]
    reference = numpy_adamw(start, grads, rates, weight_decay=0.5, decayed=[True, False])
    keras_weights = _adamw_run(keras.optimizers.AdamW(schedule, weight_decay=0.5), start, grads, ["kernel", "bias"])
    monkeypatch.setattr(keras.optimizers.Adam, "update_step", lambda *a: pytest.fail("not fused"))
    fused_weights = _adamw_run(T.FusedAdamW(schedule, weight_decay=0.5), start, grads, ["kernel", "bias"])
    for fused, theirs, expected, first in zip(fused_weights, keras_weights, reference, start):
        assert np.max(np.abs(fused - first)) > 0.05  # it moved
        np.testing.assert_allclose(theirs, expected, rtol=0, atol=2e-6)
        np.testing.assert_allclose(fused, expected, rtol=0, atol=2e-6)
    # The decay reached the kernel only: without it the kernel ends elsewhere, the bias not.
    undecayed = numpy_adamw(start, grads, rates, weight_decay=0.0, decayed=[False, False])
    assert np.max(np.abs(fused_weights[0] - undecayed[0])) > 1e-3
    np.testing.assert_allclose(fused_weights[1], undecayed[1], rtol=0, atol=2e-6)


def test_fused_adamw_falls_back_to_keras_for_amsgrad():
    # AMSGrad has no fused kernel here: Keras' update with the same decay, to the bit.
    rng = np.random.default_rng(1)
    start = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in start] for _ in range(3)]
    ours = _adamw_run(T.FusedAdamW(0.1, weight_decay=0.2, amsgrad=True), start, grads, ["kernel", "bias"])
    theirs = _adamw_run(keras.optimizers.AdamW(0.1, weight_decay=0.2, amsgrad=True), start, grads, ["kernel", "bias"])
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_fused_adamw_round_trips_its_config():
    optimizer = T.FusedAdamW(T.WarmupDecaySchedule(0.01, 100), weight_decay=3e-4, beta_2=0.99)
    config = keras.optimizers.serialize(optimizer)
    restored = keras.optimizers.deserialize(config)
    assert isinstance(restored, T.FusedAdamW)
    assert restored.weight_decay == pytest.approx(3e-4) and restored.beta_2 == pytest.approx(0.99)


def test_optimizers_follow_the_config():
    schedule = T.WarmupDecaySchedule(0.01, 100)
    sgd = T.make_optimizer(T.preset_config("retinanet"), schedule)
    assert isinstance(sgd, T.L2SGD) and sgd.momentum == 0.9 and sgd.l2 == pytest.approx(1e-4)
    adamw = T.make_optimizer(T.preset_config("retinanet_mobile"), schedule)
    assert isinstance(adamw, T.FusedAdamW) and adamw.weight_decay == pytest.approx(1e-4)
    assert float(adamw.learning_rate) == pytest.approx(0.01)  # the schedule drives it
    with pytest.raises(ValueError, match="optimizer must be"):
        T.make_optimizer(T.preset_config("retinanet").replace(optimizer="rmsprop"), schedule)


def test_config_scales_the_learning_rate_with_the_batch_size():
    names = shapes.class_names()
    preset = T.preset_config("retinanet_mobile")
    config = T.resolve_config("retinanet_mobile", names, batch_size=4, image_size=64)
    assert config.batch_size == 4 and config.image_size == 64
    assert config.learning_rate == pytest.approx(preset.learning_rate * 4 / preset.batch_size)
    assert config.num_classes == 5 and config.class_names == tuple(names)
    assert config.backbone_weights == preset.backbone_weights  # the config's default is kept
    halved = T.resolve_config("retinanet_mobile", names, settings=["batch_size=8"])
    assert halved.learning_rate == pytest.approx(preset.learning_rate / 2)
    explicit = T.resolve_config("retinanet_mobile", names, batch_size=4, settings=["learning_rate=0.01"])
    assert explicit.learning_rate == pytest.approx(0.01)  # an explicit rate is not scaled
    assert T.resolve_config("retinanet_mobile", names, backbone_weights=None).backbone_weights is None
    with pytest.raises(ValueError, match="unknown config field"):
        T.resolve_config("retinanet_mobile", names, settings=["no_such_field=1"])
    with pytest.raises(ValueError, match="unknown model"):
        T.resolve_config("no_such_model", names)


def test_mirror_pairs_turn_flips_off_unless_asked_for(monkeypatch):
    """Mirrored classes that look alike: flips go off with a warning naming the pair and how
    to keep them; an explicit flip=true keeps them (warned); no pair, no flip, or no
    augmentation: the config is returned untouched (and without a check where it is moot)."""
    from tfzoo.data import mirror

    seen = {}

    def fake_check(dataset, names, limit=None):
        seen.update(names=names, limit=limit)
        return {"mirror_pairs": [{"classes": ["b", "d"], "flipped_corr": 0.9, "plain_corr": 0.3}]}

    config = T.preset_config("retinanet_mobile")
    assert config.flip is True
    monkeypatch.setattr(mirror, "check", fake_check)
    with pytest.warns(UserWarning, match=r"voc:x \[train\]: mirrored, these classes look like each other: b/d; "
                                         r".*trains without them \(--set flip=true keeps them\)"):
        decided = train_loop._check_flips(config, None, ["b", "d"], "voc:x [train]", set())
    assert decided.flip is False and decided.replace(flip=True) == config
    assert seen == {"names": ["b", "d"], "limit": T.MIRROR_CHECK_IMAGES}
    with pytest.warns(UserWarning, match=r"b/d; the horizontal flips asked for \(flip=true\).*--no-flip"):
        assert train_loop._check_flips(config, None, ["b", "d"], "voc:x [train]", {"flip"}) is config

    def no_call(*args, **kwargs):
        raise AssertionError("the check ran where flips are off anyway")

    monkeypatch.setattr(mirror, "check", no_call)
    off = config.replace(flip=False)
    assert train_loop._check_flips(off, None, ["b", "d"], "w", set()) is off
    plain = config.replace(augment="none")
    assert train_loop._check_flips(plain, None, ["b", "d"], "w", set()) is plain
    monkeypatch.setattr(mirror, "check", lambda *a, **k: {"mirror_pairs": []})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_loop._check_flips(config, None, ["b", "d"], "w", set()) is config


@slow
def test_train_decides_flips_before_training_and_saves_the_decision(tmp_path, monkeypatch):
    """The wiring: train() runs the check on the training data and config.json holds what it
    decided; a resumed run keeps it without checking again."""
    from tfzoo.data import mirror

    calls = []

    def pair(dataset, names, limit=None):
        calls.append(limit)
        return {"mirror_pairs": [{"classes": list(names[:2]), "flipped_corr": 0.9, "plain_corr": 0.3}]}

    monkeypatch.setattr(mirror, "check", pair)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="so this run trains without them"):
        T.train("retinanet_mobile", "shapes:8", out=str(out), epochs=1, val_split=None, diagnostics=False, **RUN)
    assert calls == [T.MIRROR_CHECK_IMAGES]
    assert _json(out / "config.json")["flip"] is False
    with pytest.warns(UserWarning, match="already finished"):
        T.train("retinanet_mobile", "shapes:8", out=str(out), val_split=None, diagnostics=False, resume=True, **RUN)
    assert calls == [T.MIRROR_CHECK_IMAGES] and _json(out / "config.json")["flip"] is False


def test_augment_text_says_whether_flips_are_on():
    config = T.preset_config("retinanet_mobile")
    assert train_loop._augment_text(config) == "scale_jitter with horizontal flips (--no-flip turns them off)"
    assert train_loop._augment_text(config.replace(flip=False)) == "scale_jitter without horizontal flips"
    assert config.with_settings(["flip=false"]).flip is False


def test_replan_follows_the_measured_epoch_length(monkeypatch):
    """A first plan made from a stalled first epoch (4 epochs) grows to what the budget holds
    once whole epochs are timed, and shrinks again when epochs slow down."""
    clock = {"now": 0.0}
    monkeypatch.setattr(train_callbacks.time, "monotonic", lambda: clock["now"])
    written = []
    run = types.SimpleNamespace(state={"epoch": 0})
    run.write_state = lambda **changes: (run.state.update(changes), written.append(dict(changes)))
    schedule = T.WarmupDecaySchedule(1e-3, 40, warmup_steps=5, kind="cosine")
    replan = train_callbacks._Replan(run, schedule, steps_per_epoch=10, deadline=100.0, max_epochs=None, verbose=0)
    model = types.SimpleNamespace(stop_training=False)
    replan.set_model(model)

    def epoch_ends(epoch, at):
        clock["now"] = at
        run.state["epoch"] = epoch + 1  # the checkpoint callback runs first
        replan.on_epoch_end(epoch)

    epoch_ends(0, 10.0)
    replan.planned = 4  # the first plan (made by _fit from the first epoch)
    epoch_ends(1, 20.0)  # 10 s per epoch: 2 + 80 // 10
    assert replan.planned == 10 and schedule.total_steps == 100 and written[-1]["planned_epochs"] == 10
    epoch_ends(2, 30.0)
    assert replan.planned == 10 and not model.stop_training
    epoch_ends(3, 60.0)
    epoch_ends(4, 90.0)  # epochs of 30 s now: 5 + 10 // 30 = 5: stop here
    assert replan.planned == 5 and schedule.total_steps == 50 and model.stop_training
    capped = train_callbacks._Replan(run, schedule, steps_per_epoch=10, deadline=1000.0, max_epochs=7, verbose=0)
    capped.set_model(model)
    capped.ends, capped.planned = [0.0], 3
    clock["now"], run.state["epoch"] = 10.0, 2
    capped.on_epoch_end(1)
    assert capped.planned == 7  # never past epochs=


def test_plan_epochs_fits_the_budget():
    # 60 s budget, first epoch 20 s (tracing), then 8 s each: 1 + floor(40 / 8) = 6 epochs.
    assert T.plan_epochs(60.0, 20.0, 8.0) == 6
    assert T.plan_epochs(60.0, 20.0, 8.0, max_epochs=4) == 4
    assert T.plan_epochs(10.0, 20.0, 8.0) == 1  # the first epoch alone overran the budget
    # Steady state leaves the first (tracing) batch out: 10 batches from t=5 to t=14 -> 1 s/step.
    assert train_callbacks._epoch_seconds((5.0, 14.0, 10), 10, 2.0) == pytest.approx(12.0)


# --- data and argument errors (before any training) ---------------------------------------


def test_bad_data_spec_is_a_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown dataset spec 'nonsense'"):
        T.train("retinanet_mobile", "nonsense", out=str(out), **RUN)
    assert not out.exists()
    with pytest.raises(ValueError, match="unknown model"):
        T.train("no_such_model", "shapes", out=str(out), **RUN)
    with pytest.raises(ValueError, match="unknown strategy"):
        T.train("retinanet_mobile", "shapes", out=str(out), strategy="tpu", **RUN)
    assert not out.exists()


def test_empty_or_too_small_dataset_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(validate.DataError, match=r"shapes:0 \[train\] has no examples"):
        T.train("retinanet_mobile", "shapes:0", out=str(out), **RUN)
    with pytest.raises(validate.DataError, match="3 examples, fewer than batch_size 4"):
        T.train("retinanet_mobile", "shapes:3", out=str(out), **RUN)
    assert not out.exists()


def test_split_exists_follows_each_reader(tmp_path):
    from tfzoo.data import coco

    assert T.split_exists("shapes", "val") and not T.split_exists("shapes:8", "validation")
    voc_spec = _write_voc(tmp_path / "voc", {"train": 2})
    assert T.split_exists(voc_spec, "train") and not T.split_exists(voc_spec, "val")
    coco.write(list(shapes.examples("train", 2)), tmp_path / "coco", "train2017", shapes.class_names())
    assert T.split_exists(f"coco:{tmp_path / 'coco'}", "train")  # "train" finds train2017
    assert not T.split_exists(f"coco:{tmp_path / 'coco'}", "val")


def test_voc_folder_is_counted_from_its_index(tmp_path):
    spec = _write_voc(tmp_path / "voc", {"train": 5})
    dataset = tfzoo.data.load(spec, "train")
    assert int(dataset.cardinality()) < 0  # filtered: unknown to tf.data
    assert T.count_examples([spec], "train", dataset) == 5
    assert T.count_examples(["shapes:7", spec], "train", tfzoo.data.load("shapes:7", "train")) == 7


def _offline(monkeypatch):
    """Keras' download fails as it does without network (a bare Exception from get_file)."""
    from keras.src.utils import file_utils

    def get_file(fname=None, origin=None, **_):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", get_file)


def test_imagenet_weights_that_cannot_download_are_one_clear_error(monkeypatch, capsys):
    """build_model: one error that names the weights and how to build without them (not
    Keras' raw traceback); the download note would go to stderr, never stdout."""
    from tfzoo.backbones import WeightsUnavailableError

    _offline(monkeypatch)
    with pytest.raises(WeightsUnavailableError, match=r"could not download the ImageNet weights of MobileNetV2 "
                                                      r"\(URL fetch failure.*backbone_weights=None") as info:
        tfzoo.build_model("retinanet_mobile", num_classes=2, image_size=64, backbone="mobilenet_v2",
                          backbone_weights="imagenet", backbone_alpha=0.5)
    assert "--set backbone_weights=null" in str(info.value) and isinstance(info.value, OSError)
    assert capsys.readouterr().out == ""


def test_imagenet_weights_that_cannot_download_fall_back_to_random_in_training(monkeypatch):
    _offline(monkeypatch)
    config = T.resolve_config("retinanet_mobile", ["a", "b"], settings=TINY[1:-1] + [
        "backbone=mobilenet_v2", "backbone_weights=imagenet"], image_size=64)
    with pytest.warns(UserWarning, match="could not download the backbone's ImageNet weights .*URL fetch failure"):
        detector = train_loop._build("retinanet_mobile", config)
    assert detector.config.backbone_weights is None  # config.json will say so
    with pytest.raises(ValueError, match="alpha applies to mobilenet_v2, resnet10, resnet18, darknet19, darknet53, darknet_tiny, yolov1, fast_yolo only"):  # configuration errors surface
        train_loop._build("retinanet_mobile", config.replace(backbone="resnet50", backbone_alpha=0.5))


# --- mixed precision ---------------------------------------------------------------------


def test_mixed_precision_policy_dtypes_and_restore():
    before = keras.mixed_precision.global_policy().name
    with T.precision(True) as policy:
        assert policy == ("mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
        detector = tfzoo.build_model("retinanet_mobile", num_classes=3, **TINY_KW)
        compute = policy.split("_")[1]
        assert detector.get_layer("backbone").compute_dtype == compute
        assert detector.get_layer("backbone").variable_dtype == "float32"
        outputs = detector(tf.zeros([1, 64, 64, 3]))
        assert {k: v.dtype for k, v in outputs.items()} == {"box_deltas": tf.float32, "class_logits": tf.float32}
        assert detector.get_layer("class_head_predict").compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == before
    with pytest.raises(RuntimeError, match="boom"):
        with T.precision("mixed_bfloat16"):
            raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == before


def test_mixed_precision_head_outputs_keep_float32_precision():
    with T.precision("mixed_bfloat16"):
        detector = tfzoo.build_model("retinanet_mobile", num_classes=3, **TINY_KW)
        probe = keras.Model(detector.input, [detector.get_layer("box_head_reshape0").output])
        assert probe(tf.zeros([1, 64, 64, 3]))[0].dtype == tf.float32


def test_backbone_dtype_pins_the_backbone_under_a_mixed_policy():
    with T.precision("mixed_bfloat16"):
        detector = tfzoo.build_model("retinanet_mobile", num_classes=3, backbone_dtype="float32", **TINY_KW)
    dtypes = {name: detector.get_layer(name).compute_dtype
              for name in ("normalize", "backbone", "fpn_output_p3", "class_head_conv0", "class_head_predict")}
    assert dtypes == {"normalize": "float32", "backbone": "float32", "fpn_output_p3": "bfloat16",
                      "class_head_conv0": "bfloat16", "class_head_predict": "float32"}
    inner = detector.get_layer("backbone")
    assert {layer.compute_dtype for layer in inner.layers} == {"float32"}
    assert all(v.dtype == "float32" for v in detector.weights)
    with pytest.raises(ValueError, match="backbone_dtype must be None or one of"):
        tfzoo.build_model("retinanet_mobile", num_classes=3, backbone_dtype="float64", **TINY_KW)


def test_mixed_gradients_stay_finite_on_one_pixel_top_levels():
    # At 64 px, C5 is 2x2 and P6 1x1: the stride-2 P6/P7 convolutions must not run in
    # bfloat16 (oneDNN returned Inf/NaN there in about half the runs).
    with T.precision("mixed_bfloat16"):
        detector = tfzoo.build_model("retinanet_mobile", num_classes=3, backbone_dtype="float32", **TINY_KW)
    assert {detector.get_layer(name).compute_dtype for name in ("fpn_p6", "fpn_relu_p6", "fpn_p7")} == {"float32"}
    images = tf.random.stateless_uniform([4, 64, 64, 3], (5, 6), 0, 255)

    @tf.function
    def gradients(images):
        with tf.GradientTape() as tape:
            outputs = detector(images, training=True)
            loss = tf.add_n([tf.reduce_sum(v * v) for v in outputs.values()])
        return tape.gradient(loss, detector.trainable_variables)

    for _ in range(8):
        assert all(np.all(np.isfinite(g.numpy())) for g in gradients(images))


def test_as_float32_copies_a_mixed_detector_with_its_weights():
    plain = tfzoo.build_model("retinanet_mobile", num_classes=3, **TINY_KW)
    assert plain.as_float32() is plain
    with T.precision("mixed_bfloat16"):
        mixed = tfzoo.build_model("retinanet_mobile", num_classes=3, backbone_dtype="float32", **TINY_KW)
    copy = mixed.as_float32()
    assert copy is not mixed and copy.config == mixed.config
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"
    # The copy computes what a float32 model with the same weights computes; the bfloat16
    # original is close to it, not equal.
    rng = np.random.default_rng(0)
    mixed.set_weights([np.abs(w) + 0.5 if "variance" in v.path else rng.normal(0, 0.1, w.shape)
                       for v, w in zip(mixed.weights, mixed.get_weights())])
    copy = mixed.as_float32()
    plain.set_weights(mixed.get_weights())
    images = tf.random.stateless_uniform([2, 64, 64, 3], (1, 2), 0, 255)
    got, want, rough = copy(images), plain(images), mixed(images)
    for key in want:
        scale = np.abs(want[key].numpy()).max()
        assert np.abs(got[key].numpy() - want[key].numpy()).max() <= 1e-6 * scale
        assert 1e-4 * scale < np.abs(rough[key].numpy() - want[key].numpy()).max() < 0.05 * scale


def test_exports_of_a_mixed_detector_are_float32(tmp_path):
    from tfzoo.export import export_saved_model, load_model

    with T.precision("mixed_bfloat16"):
        mixed = tfzoo.build_model("retinanet_mobile", num_classes=3, backbone_dtype="float32", **TINY_KW)
    path = export_saved_model(mixed, str(tmp_path / "saved_model"))
    loaded = load_model(path, trust_model=True)
    images = tf.random.stateless_uniform([1, 64, 64, 3], (3, 4), 0, 255)
    want = mixed.as_float32()(images)
    got = loaded.raw_outputs(images)
    for key in want:
        np.testing.assert_allclose(got[key], want[key].numpy(), atol=1e-5)


def test_cpu_has_amx_reads_the_cpu_flags(tmp_path):
    with_amx, without = tmp_path / "amx", tmp_path / "plain"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\n")
    assert T.cpu_has_amx(str(with_amx)) is True
    assert T.cpu_has_amx(str(without)) is False
    assert T.cpu_has_amx(str(tmp_path / "missing")) is False


def test_train_restores_the_policy_when_it_fails(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = T.resolve_config("retinanet_mobile", shapes.class_names(), image_size=64, batch_size=4, settings=TINY)
    (out / T.CONFIG_FILE).write_text(config.to_json())
    state = {"model": "retinanet_mobile", "epoch": 0, "step": 0, "finished": False, "stopped": None,
             "planned_epochs": 2, "steps_per_epoch": 4, "precision": "mixed_bfloat16"}
    (out / T.STATE_FILE).write_text(json.dumps(state))
    before = keras.mixed_precision.global_policy().name
    with pytest.raises(ValueError, match="no model.keras to resume from"):
        T.train("retinanet_mobile", "shapes:16", out=str(out), resume=True, **RUN)
    assert keras.mixed_precision.global_policy().name == before


# --- training runs -----------------------------------------------------------------------


class _InjectNaN(keras.callbacks.Callback):
    """Copies model.keras when epoch ``epoch`` begins, then makes the class head's kernel
    NaN before batch ``batch`` of that epoch."""

    def __init__(self, out, epoch=1, batch=1):
        super().__init__()
        self.out, self.epoch, self.batch = out, epoch, batch
        self.snapshot = None
        self._current = None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch
        if epoch == self.epoch:
            self.snapshot = (self.out / T.MODEL_FILE).read_bytes()

    def on_train_batch_begin(self, batch, logs=None):
        if self._current == self.epoch and batch == self.batch:
            kernel = output_kernel(self.model.get_layer("class_head_predict"))
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


class _RecordStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.iterations = int(self.model.optimizer.iterations)


@pytest.fixture(scope="module")
def nan_then_resume(tmp_path_factory):
    """A VOC-folder run of 2 epochs whose loss goes NaN at epoch 2, batch 2 (with a val split
    the data lacks), then the same run resumed to the end (evaluated on ``val`` after each
    epoch and at the end, which reuses the last epoch's evaluation)."""
    root = tmp_path_factory.mktemp("train")
    data = _write_voc(root / "voc", {"train": 16, "val": 8})
    out = root / "run"
    inject = _InjectNaN(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stopped = T.train("retinanet_mobile", data, val_split="missing", epochs=2, out=str(out), callbacks=[inject],
                          **RUN)
    stopped_state = _json(out / T.STATE_FILE)
    stopped_model_bytes = (out / T.MODEL_FILE).read_bytes()
    stopped_warnings = [str(w.message) for w in caught]
    record = _RecordStart()
    resumed = T.train("retinanet_mobile", data, out=str(out), resume=True, callbacks=[record], eval_every_epoch=True,
                      **RUN)
    return types.SimpleNamespace(data=data, out=out, inject=inject, stopped=stopped, stopped_state=stopped_state,
                                 stopped_model_bytes=stopped_model_bytes, stopped_warnings=stopped_warnings,
                                 record=record, resumed=resumed)


@slow
def test_non_finite_loss_stops_and_keeps_the_last_good_model(nan_then_resume):
    run = nan_then_resume
    result = run.stopped
    # Epoch 1 = steps 1-4; the NaN kernel enters at the 2nd batch of epoch 2: step 6.
    assert result.stopped == "non-finite loss (nan) at step 6 (optimizer iteration), epoch 2"
    assert result.epochs == 1 and result.steps == 4 and not result.finished and result.metrics is None
    state = run.stopped_state
    assert state["stopped"] == result.stopped and state["epoch"] == 1 and state["step"] == 4
    assert state["finished"] is False
    assert run.inject.snapshot is not None
    assert any("training stopped: non-finite loss" in w and "keeps epoch 1" in w for w in run.stopped_warnings)
    assert any("has no split 'missing': skipping evaluation" in w for w in run.stopped_warnings)
    # The detector handed back is the last good one, finite.
    assert all(np.isfinite(w).all() for w in result.detector.get_weights())


@slow
def test_nan_stop_leaves_model_file_byte_identical(nan_then_resume):
    run = nan_then_resume
    # model.keras as epoch 2 began (the epoch-1 checkpoint) is exactly what the NaN run left.
    assert run.inject.snapshot is not None and run.stopped_model_bytes == run.inject.snapshot
    assert int(run.stopped.detector.optimizer.iterations) == 4  # the handed-back model is that checkpoint


@slow
def test_resume_continues_from_the_saved_epoch_with_the_optimizer_state(nan_then_resume):
    run = nan_then_resume
    result = run.resumed
    assert run.record.iterations == 4  # model.keras brought its optimizer iteration count back
    assert result.epochs == 2 and result.steps == 8 and result.finished and result.stopped is None
    assert len(result.history["loss"]) == 1 and all(math.isfinite(v) for v in result.history["loss"])
    state = _json(run.out / T.STATE_FILE)
    assert state["epoch"] == 2 and state["step"] == 8 and state["finished"] is True and state["stopped"] is None
    assert state["planned_epochs"] == 2 and state["steps_per_epoch"] == 4


@slow
def test_training_directory_layout(nan_then_resume):
    run = nan_then_resume
    out = run.out
    assert (out / T.CONFIG_FILE).is_file() and (out / T.MODEL_FILE).is_file() and (out / T.LOGS_DIR).is_dir()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # atomic writes leave no temp files
    config = _json(out / T.CONFIG_FILE)
    assert config["class_names"] == shapes.class_names() and config["num_classes"] == 5
    assert config["batch_size"] == 4 and config["image_size"] == 64
    metrics = _json(out / T.METRICS_FILE)
    assert set(metrics) == set(RESULT_KEYS) | {"diagnostics"}  # JSON text below: no-GT classes give NaN
    assert json.dumps(metrics, sort_keys=True) == json.dumps(run.resumed.metrics, sort_keys=True)
    # Diagnostics: AP on the first training images beside val, a verdict, the confused pairs.
    report = metrics["diagnostics"]
    assert report == run.resumed.diagnostics
    assert report["train_sample"]["images"] == 16 and report["train_sample"]["split"] == "train"
    assert set(report["train_sample"]["per_class_AP50"]) == set(shapes.class_names())
    assert report["verdict"] in (diagnostics.UNDERFITTING, diagnostics.OVERFITTING, diagnostics.FITS)
    assert report["message"].startswith(("underfitting", "overfitting", "no sign"))
    assert isinstance(report["confused_pairs"], list)
    # Losses per epoch across the stop and the resume, val AP where evaluated; drawn in training.png.
    history = _json(out / T.STATE_FILE)["history"]
    assert [row[0] for row in history["loss"]] == [1, 2] and [row[0] for row in history["val_AP50"]] == [2]
    assert (out / T.PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    detector = keras.saving.load_model(out / T.MODEL_FILE, safe_mode=True)
    assert int(detector.optimizer.iterations) == 8
    assert isinstance(detector.optimizer, T.L2SGD) and detector.optimizer.l2 == pytest.approx(1e-4)
    schedule = detector.optimizer._learning_rate  # the schedule came back from the file, with its length
    assert isinstance(schedule, T.WarmupDecaySchedule) and schedule.total_steps == 8
    # TensorBoard: training scalars, and the per-epoch evaluation (eval_every_epoch) as validation.
    assert any((out / T.LOGS_DIR / "train").glob("events.out.tfevents.*"))
    assert any((out / T.LOGS_DIR / "validation").glob("events.out.tfevents.*"))


def test_a_trained_model_loads_in_a_fresh_process_with_tfzoo_models(nan_then_resume):
    """keras.saving.load_model needs the detector classes registered (``import tfzoo.models``);
    the optimizer's schedule class (tfzoo.train) then comes along by itself."""
    code = ("import keras, tfzoo.models, sys; m = keras.saving.load_model(sys.argv[1], safe_mode=True); "
            "print(type(m).__name__, type(m.optimizer._learning_rate).__name__, int(m.optimizer.iterations))")
    done = subprocess.run([sys.executable, "-c", code, str(nan_then_resume.out / T.MODEL_FILE)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["RetinaNet", "WarmupDecaySchedule", "8"]


@slow
def test_resume_refuses_another_config_and_reports_a_finished_run(nan_then_resume):
    run = nan_then_resume
    with pytest.raises(ValueError, match=r"cannot resume .*image_size=96 \(saved: 64\)"):
        T.train("retinanet_mobile", run.data, out=str(run.out), resume=True, **{**RUN, "image_size": 96})
    with pytest.raises(ValueError, match="--epochs 1: it is planned for 2 epochs; --epochs can only extend a run"):
        T.train("retinanet_mobile", run.data, out=str(run.out), resume=True, epochs=1, **RUN)
    with pytest.warns(UserWarning, match=r"already finished .*--resume --epochs N, N > 2, trains it further"):
        again = T.train("retinanet_mobile", run.data, out=str(run.out), resume=True, **RUN)
    assert again.finished and again.steps == 8
    assert json.dumps(again.metrics, sort_keys=True) == json.dumps(run.resumed.metrics, sort_keys=True)


@slow
def test_resume_with_more_epochs_extends_a_finished_run(nan_then_resume, tmp_path):
    """--resume --epochs N past the plan: trains on from the last step, the schedule's end
    moved to the new last step, config.json and state.json say the new plan."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(nan_then_resume.out, out)
    extended = T.train("retinanet_mobile", nan_then_resume.data, out=str(out), resume=True, epochs=3, **RUN)
    assert extended.finished and extended.epochs == 3 and extended.steps == 12 and extended.planned_epochs == 3
    state, config = _json(out / T.STATE_FILE), _json(out / T.CONFIG_FILE)
    assert state["planned_epochs"] == 3 and state["total_steps"] == 12 and state["finished"] and config["epochs"] == 3
    assert extended.detector.optimizer._learning_rate.total_steps == 12


def test_new_runs_get_new_folders_and_earlier_work_is_refused(tmp_path, monkeypatch):
    """Default out: runs/MODEL, then runs/MODEL-2 ...; a folder with a run or with a user's
    files is refused before any work (hints name CLI flags); --resume finds the latest run."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    assert train_rundir.new_run_dir("retinanet_mobile") == str(runs / "retinanet_mobile")
    (runs / "retinanet_mobile").mkdir(parents=True)
    (runs / "retinanet_mobile" / T.STATE_FILE).write_text(json.dumps(
        {"model": "retinanet_mobile", "epoch": 12, "planned_epochs": 12, "finished": True}))
    assert train_rundir.new_run_dir("retinanet_mobile") == str(runs / "retinanet_mobile-2")
    (runs / "retinanet_mobile-7").mkdir()
    (runs / "retinanet_mobile-7" / T.STATE_FILE).write_text(json.dumps(
        {"model": "retinanet_mobile", "epoch": 3, "planned_epochs": 12, "finished": False}))
    (runs / "retinanet_mobile-x").mkdir()
    assert train_rundir.new_run_dir("retinanet_mobile") == str(runs / "retinanet_mobile-8")
    assert train_rundir.latest_run_dir("retinanet_mobile") == str(runs / "retinanet_mobile-7")
    with pytest.raises(train_rundir.RunDirError, match="no run of retinanet under .* to resume; .*--out"):
        train_rundir.latest_run_dir("retinanet")

    with pytest.raises(train_rundir.RunDirError, match=r"holds a finished run of retinanet_mobile \(12 epochs\): "
                                                       r"--resume continues it, --overwrite .*--out"):
        T.train("retinanet_mobile", "shapes:16", out=str(runs / "retinanet_mobile"), **RUN)
    with pytest.raises(train_rundir.RunDirError, match="stopped at epoch 3 of 12"):
        T.train("retinanet_mobile", "shapes:16", out=str(runs / "retinanet_mobile-7"), **RUN)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own settings"}')
    with pytest.raises(train_rundir.RunDirError, match=r"is not empty and holds no tfzoo run \(config.json\)"):
        T.train("retinanet_mobile", "shapes:16", out=str(mine), **RUN)
    assert (mine / "config.json").read_text() == '{"my": "own settings"}'
    (tmp_path / "file").write_text("x")
    with pytest.raises(train_rundir.RunDirError, match="not a folder"):
        train_rundir.check_new_run(str(tmp_path / "file"), overwrite=True)
    train_rundir.check_new_run(str(mine), overwrite=True)  # allowed when asked for
    train_rundir.check_new_run(str(tmp_path / "new"), overwrite=False)  # a new folder


class _InterruptAt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt (Ctrl-C) after optimizer step ``step``."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if T.optimizer_step(self.model) == self.step:
            raise KeyboardInterrupt


class _StateSteps(keras.callbacks.Callback):
    """state.json's step after every batch (after the checkpoint callback's turn)."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append((T.optimizer_step(self.model), _json(self.out / T.STATE_FILE)["step"]))


@slow
def test_interrupt_checkpoints_inside_the_epoch_and_resume_finishes_it(tmp_path, capsys):
    """Ctrl-C at step 6 (epoch 2, step 2 of 4): model.keras holds step 6 and the resume
    command is printed; --resume finishes epoch 2's two remaining steps, then the plan."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        T.train("retinanet_mobile", "shapes:16", out=str(out), epochs=3, val_split=None, diagnostics=False,
                callbacks=[_InterruptAt(6)], **RUN)
    state = _json(out / T.STATE_FILE)
    assert state["step"] == 6 and state["epoch"] == 1 and state["stopped"] == "interrupted at step 6"
    assert keras.saving.load_model(out / T.MODEL_FILE).optimizer.iterations.numpy() == 6
    # the checkpoint holds the seconds trained so far (compare resumes with the budget left)
    interrupted_seconds = state["seconds"]
    assert interrupted_seconds > 0
    err = capsys.readouterr().err
    assert (f"interrupted: {out}/model.keras holds step 6 (epoch 2, step 2 of 4); resume with: tfzoo train "
            f"retinanet_mobile --data shapes:16 --out {out} --resume") in err
    steps = _StateSteps(out)
    resumed = T.train("retinanet_mobile", "shapes:16", out=str(out), resume=True, val_split=None, diagnostics=False,
                      callbacks=[steps], **{**RUN, "verbose": 1})
    assert resumed.finished and resumed.steps == 12 and resumed.epochs == 3
    assert [s for s, _ in steps.steps] == list(range(7, 13))  # 2 to end epoch 2, then epoch 3
    assert "resuming inside epoch 2: 2 of its 4 steps are done" in capsys.readouterr().err
    assert _json(out / T.STATE_FILE)["history"]["loss"][1][0] == 2  # epoch 2 recorded as a whole epoch
    assert _json(out / T.STATE_FILE)["seconds"] > interrupted_seconds  # both runs' training time


@slow
def test_checkpoints_every_n_minutes_inside_an_epoch(tmp_path):
    out = tmp_path / "run"
    steps = _StateSteps(out)
    T.train("retinanet_mobile", "shapes:16", out=str(out), epochs=1, val_split=None, diagnostics=False,
            checkpoint_minutes=1e-9, callbacks=[steps], **RUN)  # every batch is "N minutes later"
    # Each batch inside the epoch is saved; the epoch's last one by the epoch-end checkpoint.
    assert steps.steps == [(1, 1), (2, 2), (3, 3), (4, 3)] and _json(out / T.STATE_FILE)["step"] == 4
    steps = _StateSteps(out)
    T.train("retinanet_mobile", "shapes:16", out=str(out), epochs=1, val_split=None, diagnostics=False,
            overwrite=True, checkpoint_minutes=None, callbacks=[steps], **RUN)
    assert [saved for _, saved in steps.steps] == [0, 0, 0, 0] and _json(out / T.STATE_FILE)["step"] == 4
    with pytest.raises(ValueError, match="checkpoint_minutes must be > 0"):
        T.train("retinanet_mobile", "shapes:16", out=str(tmp_path / "x"), checkpoint_minutes=0, **RUN)


@slow
def test_time_budget_stops_saves_and_evaluates(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / T.MODEL_FILE).write_bytes(b"a previous run")
    (out / T.METRICS_FILE).write_text('{"stale": true}')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = T.train("retinanet_mobile", "shapes:16", out=str(out), minutes=0.05, epochs=1000, val_split="val",
                         overwrite=True, **RUN)
    assert any("holds a model.keras: starting a new run over it (--overwrite)" in str(w.message) for w in caught)
    state = _json(out / T.STATE_FILE)
    # 3 s cannot hold 1000 epochs: either the deadline cut training or the plan shrank.
    assert (result.stopped or "").startswith("time budget of 0.05 minutes spent at step") or (
        result.finished and state["planned_epochs"] < 1000)
    assert result.steps >= 1 and state["step"] == result.steps and state["stopped"] == result.stopped
    assert (out / T.MODEL_FILE).read_bytes() != b"a previous run"
    assert set(_json(out / T.METRICS_FILE)) == set(RESULT_KEYS) | {"diagnostics"} and result.metrics is not None


@pytest.mark.parametrize("cache", [False, True])
def test_cache_generates_each_training_example_once(tmp_path, monkeypatch, cache):
    from tfzoo.data import shapes as shapes_module

    made = []
    generate = shapes_module.generate

    def counting(split, index, **kw):
        made.append(index)
        return generate(split, index, **kw)

    monkeypatch.setattr(shapes_module, "generate", counting)
    # Only the training pipeline reads the data here: no mirror check before training (flips
    # off) and no training-sample diagnostics after it.
    run = dict(RUN, settings=[*RUN["settings"], "flip=false"])
    result = T.train("retinanet_mobile", "shapes:8", out=str(tmp_path / "run"), epochs=3, val_split=None,
                     cache=cache, diagnostics=False, **run)
    assert result.finished and result.steps == 3 * 2
    assert sorted(set(made)) == list(range(8))
    if cache:
        assert len(made) == 8  # the first epoch fills the cache; the others read it
    else:
        assert len(made) >= 3 * 8  # every epoch generates again (prefetching may start a 4th)


def test_cache_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="cache must be True or False"):
        T.train("retinanet_mobile", "shapes:8", out=str(tmp_path / "run"), epochs=1, cache="/tmp/x", **RUN)


# --- strategies (subprocesses: devices are fixed when TensorFlow starts) ----------------------


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, tfzoo, tfzoo.data
    from tfzoo import train as T
    from tfzoo.models import MODELS
    from tfzoo.train.loop import with_proposals

    model, settings, size, mode = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    if mode == "train":  # tfzoo train under the strategy, then its model
        # (the training-sample diagnostics, about 5 s, once: they run the same on every detector)
        result = T.train(model, "shapes:8", image_size=size or None, batch_size=4, epochs=1, out=sys.argv[1],
                         settings=settings, strategy="mirrored", val_split=None, verbose=0,
                         diagnostics=model == "retinanet_mobile")
        mirrored = result.detector
        report = {"history": result.history, "steps": result.steps}
    else:  # the loss only: the model built and compiled in the strategy's scope
        config = MODELS[model].config.replace(num_classes=len(tfzoo.data.class_names("shapes")),
                                              **({"image_size": size} if size else {})).with_settings(settings)
        with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
            mirrored = MODELS[model](**config.to_dict())
            mirrored.compile(optimizer=keras.optimizers.SGD(1e-3))
        report = {}
    # (a proposal-based detector's examples with their proposals, as training had them)
    examples = with_proposals(tfzoo.data.load("shapes:8", "train"), mirrored.config, "shapes:8", 0)[0]
    x, y = next(iter(tfzoo.data.pipeline(examples, mirrored, 4, training=True, seed=1)))
    # The same weights on one device (no strategy), the loss computed directly.
    single = type(mirrored).create(mirrored.config)
    single.set_weights(mirrored.get_weights())
    outputs = single(x, training=False)
    if "images" not in outputs and model.startswith("rcnn"):  # R-CNN warps its windows from the images
        outputs = single.__dict__["_trunk"](x, training=False)
    one = {k: float(v) for k, v in single.compute_losses(y, outputs).items()}
    one["loss"] = sum(one.values())
    two = mirrored.test_on_batch(x, y, return_dict=True)  # one step split over the two replicas
    print(json.dumps({"replicas": mirrored.distribute_strategy.num_replicas_in_sync, "single": one,
                      "mirrored": two, **report}))
""")

MIRRORED_FUSED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tfzoo import train as T

    kind = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.normal(size=(8, 3)).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    weights, start = {}, None
    for name in ("keras", "tfzoo"):
        with strategy.scope():
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)])
            if start is None:
                start = model.get_weights()
            model.set_weights(start)
            if kind == "sgd":
                optimizer = (keras.optimizers.SGD(0.05, momentum=0.9) if name == "keras"
                             else T.L2SGD(0.05, momentum=0.9, l2=0.0))
            else:
                optimizer = (keras.optimizers.AdamW(0.05, weight_decay=0.1) if name == "keras"
                             else T.FusedAdamW(0.05, weight_decay=0.1))
            model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        weights[name] = model.get_weights()
        def keras_update(*args):  # tfzoo's run must not fall back to it
            raise AssertionError("not fused")
        keras.optimizers.SGD.update_step = keras.optimizers.Adam.update_step = keras_update
    same = all(np.array_equal(a, b) for a, b in zip(weights["keras"], weights["tfzoo"]))
    moved = any(not np.array_equal(a, b) for a, b in zip(weights["tfzoo"], start))
    largest = max(float(np.max(np.abs(a - b))) for a, b in zip(weights["keras"], weights["tfzoo"]))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "same": same, "moved": moved,
                      "largest_difference": largest}))
""")

MULTIWORKER = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    from tfzoo import train as T

    result = T.train("retinanet_mobile", "shapes:8", image_size=64, batch_size=4, epochs=1, out=sys.argv[1],
                     settings=%r, strategy="multiworker", val_split=None, verbose=0)
    strategy = result.detector.distribute_strategy
    print(json.dumps({"multiworker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
                      "workers": strategy.extended._num_workers, "chief": T.is_chief(strategy),
                      "history": result.history, "steps": result.steps}))
""") % (TINY,)


def _run_python(code, *args, env=None, timeout=240):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}, cwd=ROOT)


#: Faster R-CNN's RoI sampler draws 16 of its RoIs at random, which one device and two
#: replicas draw differently: with room for every proposal and ground truth (32 + 8) and no
#: cap on the foreground share, every draw takes all of them and the loss sums agree.
FASTER_RCNN_ALL_ROIS = dict(roi_samples=64, roi_positive_fraction=1.0)


#: One preset per loss and input path (a subprocess each): ``yolov3_tiny`` stands for
#: ``yolov2_tiny`` too (one YOLO class, one loss; the class term's softmax or sigmoids sum
#: per replica alike), ``fast_rcnn_mobile`` for ``spp_net_mobile`` (Fast R-CNN's loss and
#: proposal inputs; SPP-Net changes only the pooling layer). ``tfzoo train`` runs under the
#: strategy for RetinaNet, a YOLO (its priors fitted to the data first) and the
#: proposal-based preset with post-fit stages; the others check the loss alone, on a model
#: built in the strategy's scope (about 10 s less each).
MIRRORED_PRESETS = ["retinanet_mobile", "ssd_mobile", "faster_rcnn_mobile", "yolov3_tiny", "yolov1_tiny",
                    "fast_rcnn_mobile", "rcnn_mobile"]
MIRRORED_TRAINED = ("retinanet_mobile", "yolov3_tiny", "rcnn_mobile")


@slow
@pytest.mark.parametrize("model", MIRRORED_PRESETS)
def test_mirrored_strategy_on_two_cpu_devices_matches_one_device(tmp_path, model):
    settings = {"retinanet_mobile": TINY, "ssd_mobile": tiny_settings("ssd_mobile"),
                "faster_rcnn_mobile": tiny_settings("faster_rcnn_mobile", **FASTER_RCNN_ALL_ROIS),
                "fast_rcnn_mobile": tiny_settings("fast_rcnn_mobile", **FASTER_RCNN_ALL_ROIS),
                # (R-CNN's post-fit stages run too, on the mirrored model's features)
                "rcnn_mobile": tiny_settings("rcnn_mobile", **FASTER_RCNN_ALL_ROIS) + ["svm_steps=5", "svm_rounds=1"],
                "yolov3_tiny": tiny_settings("yolov3_tiny"),
                "yolov1_tiny": tiny_settings("yolov1_tiny") + ["image_size=256"]}[model]
    # YOLOv1's size is its config's (fixed-size layers; its grid is its trunk's 4 x 4 map at 256)
    size = 0 if model == "yolov1_tiny" else 64
    mode = "train" if model in MIRRORED_TRAINED else "loss"
    done = _run_python(MIRRORED, str(tmp_path / "run"), model, json.dumps(settings), str(size), mode)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    if mode == "train":
        assert result["steps"] == 2 and all(math.isfinite(v) for v in result["history"]["loss"])
        assert (tmp_path / "run" / T.MODEL_FILE).is_file()
    # The loss all-reduces its positive count, so a batch split over two replicas gives the
    # one-device loss.
    assert math.isfinite(result["mirrored"]["loss"])
    # (SSD: the compiled mirrored step's float32 sums differ from the eager ones by 2e-4 on
    # this batch, its models' outputs being equal; normalizing per replica instead would be
    # 3% off here.)
    # (YOLOv1: the responsible predictor is an argmax over its B boxes, by the smaller error
    # where neither overlaps the object, as in a random model; a rounding difference between
    # the two paths flips near ties and moves the loss by up to 1 % here. A wrong
    # normalizer would halve or double it.)
    tolerance = {"retinanet_mobile": 1e-4, "yolov1_tiny": 2e-2}.get(model, 1e-3)
    assert result["mirrored"]["loss"] == pytest.approx(result["single"]["loss"], rel=tolerance)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_fused_updates_under_mirrored_strategy_equal_keras(kind):
    # Under MirroredStrategy the fused kernels update each replica's copy of the weight and
    # of its slots, as Keras' optimizers do: L2SGD to the bit, FusedAdamW to float32
    # rounding (see test_fused_adamw_matches_numpy_adamw), which the four steps' gradients
    # feed back (about 1e-6 here; a wrong slot or decay would be off by 1e-2 or more).
    done = _run_python(MIRRORED_FUSED, kind)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["moved"]
    if kind == "sgd":
        assert result["same"]
    else:
        assert result["largest_difference"] < 1e-5


@slow
def test_multiworker_strategy_single_worker_from_tf_config(tmp_path):
    # One worker on loopback: two workers cannot run Keras 3 fit (keras-team/keras#20585).
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    tf_config = {"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}}
    done = _run_python(MULTIWORKER, str(tmp_path / "run"), env={"TF_CONFIG": json.dumps(tf_config)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["multiworker"] and result["workers"] == 1 and result["chief"] is True
    assert result["steps"] == 2 and all(math.isfinite(v) for v in result["history"]["loss"])
    assert (tmp_path / "run" / T.MODEL_FILE).is_file() and (tmp_path / "run" / T.STATE_FILE).is_file()


def test_only_the_chief_writes():
    class Resolver:
        def __init__(self, task_type, task_id, jobs):
            self.task_type, self.task_id, self._jobs = task_type, task_id, jobs

        def cluster_spec(self):
            return tf.train.ClusterSpec(self._jobs)

    def strategy(*args):
        return types.SimpleNamespace(cluster_resolver=Resolver(*args))

    workers = {"worker": ["a:1", "b:1"]}
    assert T.is_chief(strategy("worker", 0, workers)) and not T.is_chief(strategy("worker", 1, workers))
    with_chief = {"chief": ["c:1"], **workers}
    assert T.is_chief(strategy("chief", 0, with_chief)) and not T.is_chief(strategy("worker", 0, with_chief))
    assert T.is_chief(types.SimpleNamespace(cluster_resolver=None))
    run = train_rundir._RunDir("/nonexistent/out", chief=False)
    try:
        assert not run.path(T.MODEL_FILE).startswith("/nonexistent/out") and os.path.isdir(run.root)
    finally:
        run.cleanup()
    assert not os.path.exists(run.root)


# --- the paper recipe scripts -------------------------------------------------------------


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "train_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["retinanet_coco", "retinanet_voc", "ssd300_voc", "ssd512_voc", "faster_rcnn_voc",
                                  "faster_rcnn_fpn_coco", "fast_rcnn_voc", "yolov1_voc", "yolov2_voc", "yolov3_coco"])
def test_recipe_script_help_works_offline(name):
    done = subprocess.run([sys.executable, str(ROOT / "train_scripts" / f"{name}.py"), "--help"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "TFDS_DATA_DIR": "/nonexistent"})
    assert done.returncode == 0, done.stderr
    for option in ("--out", "--strategy", "--mixed-precision", "--batch-size", "--resume", "--overwrite"):
        assert option in done.stdout
    import tfzoo.recipes

    assert tfzoo.recipes.STRATEGIES == T.STRATEGIES
    assert _script(name).MODEL in tfzoo.list_models()


def test_coco_script_holds_the_paper_recipe():
    script = _script("retinanet_coco")
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(80)], image_size=640, settings=script.SETTINGS)
    assert (config.backbone, config.image_size, config.batch_size) == ("resnet50", 640, 16)
    assert (config.optimizer, config.momentum, config.weight_decay) == ("sgd", 0.9, 1e-4)
    assert (config.learning_rate, config.lr_schedule, config.warmup_steps, config.epochs) == (0.01, "step", 500, 12)
    assert T.resolve_config(script.MODEL, ["a"], batch_size=8, settings=script.SETTINGS).learning_rate == 0.005
    _assert_coco_1x(script, config, 0.01)


def _assert_coco_1x(script, config, rate):
    """The "1x" schedule on COCO at batch 16: TFDS coco/2017 train's 118,287 images give
    7,392 steps per epoch, 88,704 in 12 epochs, decayed x0.1 at 59,136 and 78,848."""
    schedule = T.make_schedule(config, 12 * (118_287 // 16))
    assert schedule.total_steps == 88_704
    assert _lr(schedule, 59_135) == pytest.approx(rate) and _lr(schedule, 59_136) == pytest.approx(rate / 10)
    assert _lr(schedule, 78_848) == pytest.approx(rate / 100)
    assert script.PROTOCOL.data == "tfds:coco/2017" and script.PROTOCOL.val_split == "validation"
    assert script.PROTOCOL.metric == "AP"


def test_fpn_coco_script_holds_the_1x_recipe():
    script = _script("faster_rcnn_fpn_coco")
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(80)], image_size=800, settings=script.SETTINGS)
    assert (config.backbone, config.backbone_weights, config.fpn, config.image_size) == ("resnet50", "imagenet", True, 800)
    assert (config.min_level, config.max_level, config.fpn_channels, config.head_fc) == (2, 6, 256, (1024, 1024))
    assert (config.rpn_post_nms_train, config.rpn_post_nms_test, config.roi_samples) == (2000, 1000, 512)
    assert (config.batch_size, config.optimizer, config.momentum, config.weight_decay) == (16, "sgd", 0.9, 1e-4)
    assert (config.learning_rate, config.warmup_steps, config.epochs) == (0.02, 500, 12)
    assert T.resolve_config(script.MODEL, ["a"], batch_size=2, settings=script.SETTINGS).learning_rate == 0.0025
    _assert_coco_1x(script, config, 0.02)


def test_yolo_scripts_hold_the_papers_schedules():
    script = _script("yolov1_voc")
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(20)], image_size=448, settings=script.SETTINGS)
    steps = 16_551 // 64  # VOC 07+12 trainval at batch 64: one epoch of warm-up
    schedule = T.make_schedule(config, 135 * steps)
    assert _lr(schedule, 0) == pytest.approx(1e-3, rel=1e-6) and _lr(schedule, 259) == pytest.approx(1e-2, rel=1e-6)
    assert _lr(schedule, 75 * steps - 1) == pytest.approx(1e-2) and _lr(schedule, 75 * steps + 1) == pytest.approx(1e-3)
    assert _lr(schedule, 105 * steps + 1) == pytest.approx(1e-4)
    assert (config.momentum, config.weight_decay, config.dropout, config.augment) == (0.9, 5e-4, 0.5, "yolo")
    script = _script("yolov2_voc")
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(20)], image_size=416, settings=script.SETTINGS)
    assert config.train_sizes == tuple(range(320, 609, 32)) and config.size_period == 10
    schedule = T.make_schedule(config, 160 * steps)
    assert _lr(schedule, 60 * steps - 1) == pytest.approx(1e-3) and _lr(schedule, 60 * steps + 1) == pytest.approx(1e-4)
    assert _lr(schedule, 90 * steps + 1) == pytest.approx(1e-5)
    script = _script("yolov3_coco")
    assert script.PROTOCOL.data == "tfds:coco/2017"
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(80)], image_size=416, settings=script.SETTINGS)
    assert (config.backbone, config.epochs, config.lr_decay_at, config.batch_size) == ("darknet53", 273, (0.8, 0.9), 64)


@pytest.mark.parametrize("name, size", [("ssd300_voc", 300), ("ssd512_voc", 512)])
def test_ssd_scripts_hold_the_papers_schedule(name, size):
    """60k iterations at batch 32 over VOC 07+12: 40k at 1e-3, 10k at 1e-4, 10k at 1e-5."""
    script = _script(name)
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(20)], image_size=size, settings=script.SETTINGS)
    assert (config.backbone, config.backbone_weights, config.image_size) == ("vgg16", "imagenet", size)
    assert (config.batch_size, config.learning_rate, config.weight_decay, config.augment) == (32, 1e-3, 5e-4, "ssd")
    steps = 16_551 // 32
    schedule = T.make_schedule(config, config.epochs * steps)
    assert schedule.total_steps == 116 * 517 == 59_972  # the paper's 60k
    assert _lr(schedule, 39_980) == pytest.approx(1e-3) and _lr(schedule, 39_981) == pytest.approx(1e-4)
    assert _lr(schedule, 49_977) == pytest.approx(1e-5)
    assert script.PROTOCOL.metric == "voc07_mAP"


def test_fast_rcnn_script_holds_the_papers_voc07_recipe():
    import tfzoo.recipes

    script = _script("fast_rcnn_voc")
    assert script.PROTOCOL is tfzoo.recipes.VOC07
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(20)], image_size=608, settings=script.SETTINGS)
    assert (config.backbone, config.backbone_weights, config.proposals, config.max_proposals) == (
        "vgg16", "imagenet", "ss:fast", 2000)
    assert (config.batch_size, config.roi_samples, config.learning_rate, config.epochs) == (2, 64, 1e-3, 16)
    # 40k iterations of 2 images over VOC07's 5,011 trainval images: 16 epochs, x0.1 after 30k
    assert abs(config.epochs * 5011 / 2 - 40000) < 200 and config.lr_decay_at == (0.75,)


def test_voc_script_trains_on_07_plus_12_and_tests_on_07():
    script = _script("retinanet_voc")
    protocol = script.PROTOCOL
    assert protocol.data == ("tfds:voc/2007", "tfds:voc/2012") and protocol.split == "train+validation"
    assert (protocol.val_data, protocol.val_split, protocol.metric) == ("tfds:voc/2007", "test", "voc07_mAP")
    config = T.resolve_config(script.MODEL, [f"c{i}" for i in range(20)], image_size=512, settings=script.SETTINGS)
    assert (config.image_size, config.batch_size, config.learning_rate, config.epochs) == (512, 16, 0.01, 18)
    steps = 16_551 // 16
    schedule = T.make_schedule(config, 18 * steps)
    assert _lr(schedule, 12 * steps) == pytest.approx(0.001) and _lr(schedule, 16 * steps) == pytest.approx(1e-4)


def test_progress_is_one_plain_line_per_epoch_when_not_a_terminal():
    """Piped or logged training output: no progress bar, no escape codes, one line an epoch."""
    import io

    stream = io.StringIO()
    progress = T.TrainingProgress(batch_size=4, stream=stream)
    assert not progress.interactive  # StringIO is not a terminal
    progress.set_params({"epochs": 3, "steps": 2})
    for epoch in range(2):
        progress.on_epoch_begin(epoch)
        for step in range(2):
            progress.on_train_batch_end(step, {"loss": 1.5})
        progress.on_epoch_end(epoch, {"loss": 1.25, "box_loss": np.float32(0.5), "val_AP50": 0.75})
    progress.on_train_end()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
    assert re.fullmatch(r"tfzoo: epoch 2/3: loss 1\.2500, box_loss 0\.5000, val_AP50 0\.7500 \(\d+\.\d s, \d+\.\d img/s\)",
                        lines[1]), lines[1]


def test_progress_counts_to_the_time_budgets_plan_not_to_the_running_fit_call():
    """Under --minutes the first epoch runs before any plan, and a re-plan can lengthen the
    run past the running ``fit`` call's ``epochs``: the lines follow the plan."""
    import io

    stream = io.StringIO()
    progress = T.TrainingProgress(batch_size=4, stream=stream)
    plan = {"epochs": None}
    progress.planned = lambda: plan["epochs"]
    for epoch, (fit_epochs, planned) in enumerate([(1, None), (62, 62), (62, 103)]):
        progress.set_params({"epochs": fit_epochs, "steps": 1})
        plan["epochs"] = planned
        progress.on_epoch_begin(epoch)
        progress.on_train_batch_end(0, {"loss": 1.0})
        progress.on_epoch_end(epoch, {"loss": 1.0})
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[1] for line in lines] == [" epoch 1/?", " epoch 2/62", " epoch 3/103"]


def test_progress_bar_on_a_terminal_closes_when_training_stops_inside_an_epoch():
    import io

    stream = io.StringIO()
    progress = T.TrainingProgress(batch_size=4, stream=stream, interactive=True)
    progress.set_params({"epochs": 3, "steps": 10})
    progress.on_epoch_begin(0)
    progress.on_train_batch_end(0, {"loss": 2.0})
    progress.on_train_end()
    assert progress._bar is None and "epoch 1/3" in stream.getvalue()


def test_a_fixed_size_detector_refuses_another_image_size(monkeypatch, capsys):
    """YOLOv1's fully connected layers fix its input: --image-size is refused, clearly."""
    from tfzoo import cli
    from tfzoo.models.retinanet import RetinaNetConfig

    monkeypatch.setattr(RetinaNetConfig, "fixed_size", True)
    with pytest.raises(ValueError, match="retinanet_mobile has fixed-size layers .* takes 320 x 320 inputs only"):
        T.resolve_config("retinanet_mobile", ["a"], image_size=256)
    assert T.resolve_config("retinanet_mobile", ["a"], image_size=320).image_size == 320
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "retinanet_mobile", "--data", "shapes", "--image-size", "256"])
    assert info.value.code == 2 and "fixed-size layers" in capsys.readouterr().err
    detector = tfzoo.build_model("retinanet_mobile", **{**TINY_KW, "image_size": 64}, num_classes=2)
    with pytest.raises(ValueError, match="fixed-size layers and serves at 64 x 64 only"):
        detector.with_image_size(96)


@keras.saving.register_keras_serializable(package="tests")
class _Staged(__import__("tfzoo.models.retinanet", fromlist=["RetinaNet"]).RetinaNet):
    """RetinaNet with a stage after fit: the class head's bias set to the training data's
    class log-frequencies (a stand-in for R-CNN's SVMs); fails once when asked to."""

    stages = ("fit", "calibrate")
    fail_next = False

    def train_stage_calibrate(self, examples, config, deadline=None, progress=False):
        if type(self).fail_next:
            type(self).fail_next = False
            raise RuntimeError("the stage broke")
        counts = np.zeros(config.num_classes)
        for example in examples.as_numpy_iterator():
            counts += np.bincount(example["classes"], minlength=config.num_classes)
        layer = self.get_layer("class_head_predict")
        *kernels, bias = layer.get_weights()  # [kernel] or the separable head's [depthwise, pointwise]
        prior = np.log(counts / counts.sum() + 1e-3)
        layer.set_weights([*kernels, np.tile(prior, bias.size // config.num_classes).astype(np.float32)])
        return {"objects": int(counts.sum())}


@slow
def test_stages_after_fit_run_in_order_checkpointed_and_resumable(tmp_path, monkeypatch, capsys):
    from tfzoo.models import MODELS
    from tfzoo.models.base import Preset

    config = MODELS["retinanet_mobile"].config.replace(name="staged")
    monkeypatch.setitem(MODELS, "staged", Preset("staged", _Staged, config, cpu=True))
    out = tmp_path / "run"
    _Staged.fail_next = True
    with pytest.raises(RuntimeError, match="the stage broke"):
        T.train("staged", "shapes:16", out=str(out), epochs=1, val_split=None, diagnostics=False, **RUN)
    state = _json(out / T.STATE_FILE)
    assert state["epoch"] == 1 and not state["finished"] and not state.get("stages")
    resumed = T.train("staged", "shapes:16", out=str(out), resume=True, val_split=None, diagnostics=False,
                      **{**RUN, "verbose": 1})
    state = _json(out / T.STATE_FILE)
    assert resumed.finished and state["finished"] and state["step"] == 4
    assert state["stages"]["calibrate"]["objects"] > 0 and "seconds" in state["stages"]["calibrate"]
    err = capsys.readouterr().err
    assert "stage 1/1 after fit: calibrate" in err and re.search(r"stage 1/1 calibrate: objects \d+ \(", err)
    saved = keras.saving.load_model(out / T.MODEL_FILE).get_layer("class_head_predict").get_weights()[-1]
    assert np.array_equal(saved, resumed.detector.get_layer("class_head_predict").get_weights()[-1])
    assert len(set(np.round(saved, 5))) > 1  # calibrated, not the uniform prior
    again = T.train("staged", "shapes:16", out=str(out), resume=True, val_split=None, diagnostics=False, **RUN)
    assert again.finished and _json(out / T.STATE_FILE)["stages"] == state["stages"]
