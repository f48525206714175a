"""A detector that takes proposals beside the images (``input_names = ("images",
"proposals")``, as R-CNN, SPP-Net and Fast R-CNN will): the pipeline, the evaluator, the
SavedModel and TFLite exports and the loaders carry what it declares.

The detector here is a test double, the smallest Fast R-CNN shape: a tiny backbone, RoI
crops (``tfzoo.ops.roi.aligned_crops``, builtins only), a softmax over K + 1 classes per
proposal, detections = the proposals themselves with their best class through the shared
NMS; padding proposals (zero boxes) score nothing.
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo.data
from tfzoo import backbones
from tfzoo.data import schema
from tfzoo.data.pipeline import Encoder, pad_rows
from tfzoo.export import export_saved_model, export_tflite, load_model
from tfzoo.export.saved_model import sample_proposals
from tfzoo.models.base import Detector, DetectorConfig
from tfzoo.ops import boxes as box_ops
from tfzoo.ops import matcher as matcher_ops
from tfzoo.ops import nms as nms_ops
from tfzoo.ops import roi as roi_ops

PROPOSALS = 6
SIZE = 64


@dataclasses.dataclass(frozen=True)
class ProposalConfig(DetectorConfig):
    name: str = "proposal_test"
    num_classes: int = 5
    image_size: int = SIZE
    backbone: str = "resnet10"
    backbone_weights: str | None = None
    backbone_alpha: float = 0.25
    max_proposals: int = PROPOSALS
    score_threshold: float = 0.0
    max_detections: int = 4


@keras.saving.register_keras_serializable(package="tests")
class RoICrops(keras.layers.Layer):
    """``[B, h, w, C]`` features, ``[B, R, 4]`` proposals -> ``[B, R, C]`` pooled RoI crops."""

    def call(self, features, proposals):
        crops = roi_ops.aligned_crops(features, proposals, 2, builtin=True)  # [B, R, 2, 2, C]
        return tf.reduce_max(crops, axis=[2, 3])  # [B, R, C]


class ProposalEncoder(Encoder):
    keep_aspect_ratio = True
    augment = "flip"

    def __init__(self, config):
        self.image_size = (config.image_size, config.image_size)
        self.max_proposals = config.max_proposals
        self.num_classes = config.num_classes

    def targets(self, example):
        proposals = pad_rows(example[schema.PROPOSALS], self.max_proposals, 0.0)  # [R, 4]
        valid = box_ops.valid_mask(proposals)
        classes = example[schema.CLASSES]
        matches = matcher_ops.FAST_RCNN(box_ops.iou(proposals, example[schema.BOXES]),
                                        gt_valid=classes >= 0, anchor_valid=valid)  # [R]
        target = matcher_ops.gather_matched(classes, matches, fill_value=matcher_ops.BACKGROUND)
        target = tf.where(matches == matcher_ops.BACKGROUND, self.num_classes, target)  # background last
        return {"classes": tf.where(matches == matcher_ops.IGNORE, -1, tf.cast(target, tf.int32))}


@keras.saving.register_keras_serializable(package="tests")
class ProposalDetector(Detector):
    config_class = ProposalConfig
    family = "ProposalTest"
    kind = "proposals"
    input_names = ("images", "proposals")
    loss_names = ("cls_loss",)

    @classmethod
    def create(cls, config):
        size = config.image_size
        backbone = backbones.build_backbone(config.backbone, size, None, config.backbone_alpha, features=("C4",))
        images = keras.Input((size, size, 3), name="images")
        proposals = keras.Input((config.max_proposals, 4), name="proposals")
        features = backbone(keras.layers.Rescaling(1 / 127.5, -1.0)(images))["C4"]
        pooled = RoICrops(name="roi_crops")(features, proposals)
        logits = keras.layers.Dense(config.num_classes + 1, name="class_logits")(pooled)  # [B, R, K + 1]
        return cls(inputs={"images": images, "proposals": proposals}, outputs={"class_logits": logits},
                   config=config)

    def make_encoder(self):
        return ProposalEncoder(self.config)

    def compute_losses(self, targets, outputs):
        labels = targets["classes"]
        logits = tf.cast(outputs["class_logits"], tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0), logits)
        weight = tf.cast(labels >= 0, tf.float32)
        return {"cls_loss": tf.reduce_sum(ce * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)}

    def decode(self, outputs):
        raise NotImplementedError  # needs the proposals: see detect

    def detect(self, inputs):
        outputs = self(inputs, training=False)
        proposals = tf.cast(inputs["proposals"], tf.float32)
        with tf.name_scope("tfzoo_decoder"):
            scores = tf.nn.softmax(tf.cast(outputs["class_logits"], tf.float32))[..., :-1]  # [B, R, K]
            valid = tf.cast(box_ops.valid_mask(proposals), tf.float32)[..., None]  # padding scores 0
            scores = scores * valid
            best = tf.reduce_max(scores, axis=-1)
            classes = tf.argmax(scores, axis=-1, output_type=tf.int32)
            return nms_ops.nms_candidates(proposals, best, classes, self.config.num_classes,
                                          max_detections=self.config.max_detections, iou_threshold=0.5,
                                          score_threshold=self.config.score_threshold)


def _with_proposals(example):
    """Proposals: the ground truth boxes, then shifted copies (as selective search would
    propose near misses)."""
    boxes = example[schema.BOXES]
    shifted = box_ops.clip(boxes + tf.constant([0.05, 0.05, 0.05, 0.05]))
    return {**example, schema.PROPOSALS: tf.concat([boxes, shifted], 0)}


@pytest.fixture(scope="module")
def detector():
    keras.utils.set_random_seed(0)
    model = ProposalDetector.create(ProposalConfig())
    train = tfzoo.data.pipeline(tfzoo.data.load("shapes:8", "train").map(_with_proposals), model, 4, training=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(train, epochs=1, steps_per_epoch=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and "cls_loss" in history
    return model


def _inputs(batch=2):
    images = tfzoo.data.pipeline(tfzoo.data.load(f"shapes:{batch}", "val"), tfzoo.data.PaddedBoxesEncoder(SIZE),
                                 batch, training=False)
    images = next(iter(images))[0].numpy()
    return {"images": images, "proposals": sample_proposals_for(batch)}


def sample_proposals_for(batch):
    class _Spec:  # sample_proposals reads the proposals input's row count
        inputs = [None, keras.KerasTensor((None, PROPOSALS, 4))]

    return sample_proposals(_Spec, batch)


def test_padding_proposals_never_become_detections(detector):
    inputs = _inputs()
    out = detector.detect(inputs)
    boxes = out["detection_boxes"].numpy()
    for b in range(2):
        kept = boxes[b, : int(out["num_detections"][b])]
        assert len(kept) and np.all(kept[:, 2:] > kept[:, :2])  # real proposals only, no zero box


def test_evaluation_feeds_the_examples_proposals(detector):
    from tfzoo.eval import evaluate_detector

    val = tfzoo.data.load("shapes:4", "val").map(_with_proposals)
    seen = []

    def detect(inputs):
        seen.append(sorted(inputs))
        return detector.detect(inputs)

    metrics = evaluate_detector(detect, val, SIZE, tfzoo.data.class_names("shapes"), progress=False,
                                input_names=ProposalDetector.input_names, max_proposals=PROPOSALS)
    assert seen and all(keys == ["images", "proposals"] for keys in seen)
    assert 0.0 <= metrics["AP50"] <= 1.0


def test_exports_and_loaders_take_the_proposals(detector, tmp_path):
    """SavedModel (every signature) and builtin-only TFLite take proposals beside the
    images and give the Keras detections; serving_default takes proposals normalized to the
    original image and moves them with its letterbox resize."""
    inputs = _inputs(1)
    want = {k: np.asarray(v) for k, v in detector.detect(inputs).items()}
    saved = load_model(export_saved_model(detector, str(tmp_path / "saved_model")), trust_model=True)
    tflite = load_model(export_tflite(detector, str(tmp_path / "model.tflite"), raw_outputs=True))
    keras_model = load_model(_save(detector, tmp_path))
    for model in (keras_model, saved, tflite):
        got = model.detect(inputs)
        n = int(want["num_detections"][0])
        assert int(got["num_detections"][0]) == n, model.format
        np.testing.assert_allclose(got["detection_boxes"][0, :n], want["detection_boxes"][0, :n], atol=1e-5)
        np.testing.assert_allclose(got["detection_scores"][0, :n], want["detection_scores"][0, :n], atol=1e-4)
        raw = model.raw_outputs(inputs)
        np.testing.assert_allclose(raw["class_logits"], detector(inputs)["class_logits"].numpy(), atol=1e-4)
    # An original image of another size and its proposals normalized to it: the same
    # detections from the SavedModel's own graph, the Keras model and the TFLite file.
    image = (np.random.default_rng(1).uniform(0, 255, [48, 80, 3])).astype(np.uint8)
    proposals = sample_proposals_for(1)[0]
    results = [m.detect_original(image, proposals) for m in (keras_model, saved, tflite)]
    for other in results[1:]:
        assert other["num_detections"] == results[0]["num_detections"] > 0
        n = results[0]["num_detections"]
        np.testing.assert_allclose(other["detection_boxes"][:n], results[0]["detection_boxes"][:n], atol=1e-4)
    # Detections are proposals mapped back: each one is one of the given proposals.
    first = results[0]["detection_boxes"][: results[0]["num_detections"]]
    clipped = proposals[box_ops.valid_mask(proposals).numpy()]
    assert all(np.min(np.abs(clipped - box).max(axis=1)) < 1e-3 for box in first)


def _save(detector, tmp_path):
    path = str(tmp_path / "model.keras")
    detector.save(path)
    return path
