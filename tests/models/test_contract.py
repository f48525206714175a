"""The contract every preset of ``tfzoo.models.MODELS`` keeps, checked on its tiny config.

One test per distinct tiny model (presets whose tiny configs coincide but for the training
recipe, e.g. a paper preset and its deeper-backbone variant, or ``faster_rcnn`` and
``faster_rcnn_mobile``, share one): declared inputs, raw outputs and detections
with their shapes and dtypes, one ``fit`` step with a finite loss whose terms the detector
names, zero box loss on an image without objects, a ``.keras`` round trip under
``safe_mode=True``, a SavedModel and a builtin-only TFLite file whose raw outputs (the
tensors before any NMS) equal the Keras model's within the exports' tolerance.
"""
from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo.data
from tfzoo.data import schema
from tfzoo.export import export_saved_model, export_tflite, load_model
from tfzoo.export.loading import KerasModel
from tfzoo.export.saved_model import RAW_TOLERANCE
from tfzoo.export.tflite import non_builtin_ops, op_names
from tfzoo.models import MODELS
from tfzoo.models.base import TrainingRecipe
from tfzoo import proposals as proposal_source

DETECTION_DTYPES = {"detection_boxes": tf.float32, "detection_scores": tf.float32,
                    "detection_classes": tf.int32, "num_detections": tf.int32}


#: Config fields the contract does not exercise: the training recipe (``tfzoo train``
#: reads it; the contract compiles its own SGD step), the batch norms' momentum (how fast
#: the moving statistics follow, not what the layers compute), ``fit_priors`` (priors
#: refitted by ``tfzoo train``) and ``freeze_backbone`` (which weights the step moves;
#: ``tests/models/test_spp_net.py`` checks it). Presets that differ only in these share one case.
NOT_EXERCISED = ({f.name for f in dataclasses.fields(TrainingRecipe)}
                 | {"batchnorm_momentum", "fit_priors", "freeze_backbone"})


def _cases():
    """One pytest param per distinct tiny model, named after every preset it stands for."""
    groups = {}
    for name, preset in sorted(MODELS.items()):
        config = preset.config.replace(**preset.detector.tiny).to_dict()
        assert {f.name for f in dataclasses.fields(TrainingRecipe)} <= set(config), name
        architecture = {k: v for k, v in config.items() if k not in NOT_EXERCISED and k != "name"}
        key = (preset.detector.__name__, json.dumps(architecture, sort_keys=True))
        groups.setdefault(key, []).append(name)
    return [pytest.param(names[0], id="+".join(names)) for names in groups.values()]


def _build(name):
    """The tiny model, with the classes of the ``shapes`` data it is fed here."""
    keras.utils.set_random_seed(0)
    preset = MODELS[name]
    return preset(**{**preset.detector.tiny, "num_classes": len(tfzoo.data.class_names("shapes"))})


def _examples(detector, spec, split):
    """Canonical examples, with proposals by the preset's own source (selective search)
    for a proposal-based detector."""
    return proposal_source.for_config(tfzoo.data.load(spec, split), detector.config, progress=False)[0]


def _numpy(inputs):
    if isinstance(inputs, dict):
        return {k: np.asarray(v, np.float32) for k, v in inputs.items()}
    return np.asarray(inputs, np.float32)


def _row(inputs, i):
    if isinstance(inputs, dict):
        return {k: v[i:i + 1] for k, v in inputs.items()}
    return inputs[i:i + 1]


def _close(got, want, where):
    for key, value in want.items():
        value = np.asarray(value, np.float64)
        diff = float(np.max(np.abs(np.asarray(got[key], np.float64) - value))) if value.size else 0.0
        assert diff <= RAW_TOLERANCE * (1.0 + float(np.max(np.abs(value), initial=0.0))), (where, key, diff)


def test_every_preset_declares_what_the_zoo_reads():
    assert MODELS, "no presets registered"
    for name, preset in MODELS.items():
        detector = preset.detector
        assert preset.config.name == name and isinstance(preset.family, str) and preset.family
        assert detector.kind in ("one-stage", "two-stage", "proposals")
        assert detector.input_names[0] == "images" and set(detector.input_names) <= {"images", "proposals"}
        assert detector.loss_names and set(detector.box_loss_names) <= set(detector.loss_names)
        assert detector.tiny, f"{detector.__name__} has no tiny config"
        assert preset.config.image_size % preset.config.size_divisor == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", _cases())
def test_preset_contract(name, tmp_path):
    detector = _build(name)
    size = detector.config.image_size
    # --- inputs and outputs ---
    assert [tuple(i.shape) for i in detector.inputs][0] == (None, size, size, 3)
    assert len(detector.inputs) == len(type(detector).input_names)
    images = _numpy(tfzoo.data.pipeline(_examples(detector, "shapes:2", "val"), detector, 2, training=False)
                    .map(lambda x, y: x).get_single_element())
    raw = detector(images, training=False)
    assert isinstance(raw, dict) and raw
    for key, value in raw.items():
        assert value.dtype == tf.float32 and value.shape[0] == 2, key
    detections = detector.detect(images)
    assert {k: v.dtype for k, v in detections.items()} == DETECTION_DTYPES
    boxes = detections["detection_boxes"]
    assert boxes.shape[0] == 2 and boxes.shape[2] == 4
    assert detections["detection_scores"].shape == detections["detection_classes"].shape == boxes.shape[:2]
    assert detections["num_detections"].shape == (2,)

    # --- one fit step; an image without objects has no box loss ---
    train = tfzoo.data.pipeline(_examples(detector, "shapes:4", "train"), detector, 2, training=True)
    detector.compile(optimizer=keras.optimizers.SGD(1e-3))
    history = detector.fit(train, epochs=1, steps_per_epoch=1, verbose=0).history
    assert set(type(detector).loss_names) <= set(history) and np.isfinite(history["loss"]).all()
    empty = dict(_examples(detector, "shapes:1", "val").get_single_element())
    empty.update({schema.BOXES: tf.zeros([0, 4]), schema.CLASSES: tf.zeros([0], tf.int32),
                  schema.IS_CROWD: tf.zeros([0], tf.bool), schema.DIFFICULT: tf.zeros([0], tf.bool)})
    x, y = tfzoo.data.pipeline(tf.data.Dataset.from_tensors(empty), detector, 1, training=True, augment="none",
                               shuffle_buffer=0).get_single_element()
    losses = detector.compute_losses(y, detector(x, training=True))
    assert set(losses) == set(type(detector).loss_names)
    assert all(np.isfinite(float(v)) for v in losses.values())
    for key in type(detector).box_loss_names:
        assert float(losses[key]) == 0.0, key

    # --- exports (of the weights after the step) ---
    raw = detector(images, training=False)
    keras_path = tmp_path / "model.keras"
    detector.save(keras_path)
    loaded = keras.saving.load_model(keras_path, safe_mode=True)
    assert type(loaded) is type(detector) and loaded.config == detector.config
    _close({k: v.numpy() for k, v in loaded(images, training=False).items()},
           {k: v.numpy() for k, v in raw.items()}, ".keras")
    want = KerasModel(str(keras_path), loaded).raw_outputs(images)  # graph mode, as the exports run
    saved = export_saved_model(detector, str(tmp_path / "saved_model"))
    _close(load_model(saved, trust_model=True).raw_outputs(images), want, "SavedModel")
    tflite_path = export_tflite(detector, str(tmp_path / "model.tflite"), raw_outputs=True)
    assert not non_builtin_ops(op_names((tmp_path / "model.tflite").read_bytes()))
    tflite = load_model(tflite_path)
    for i in range(2):  # the TFLite file takes batch 1
        _close(tflite.raw_outputs(_row(images, i)), {k: v[i:i + 1] for k, v in want.items()}, "TFLite")
