"""compare_detections and parity_report."""
import numpy as np
import pytest

import tfzoo.data
from tests.export import helpers
from tfzoo.export import compare_detections, parity_report


def _dets(boxes, scores, classes, m=5):
    """One image's detections padded to ``m`` rows, as a batch of 1."""
    n = len(scores)
    out = {
        "detection_boxes": np.zeros([1, m, 4], np.float32),
        "detection_scores": np.zeros([1, m], np.float32),
        "detection_classes": np.full([1, m], -1, np.int32),
        "num_detections": np.array([n], np.int32),
    }
    out["detection_boxes"][0, :n] = boxes
    out["detection_scores"][0, :n] = scores
    out["detection_classes"][0, :n] = classes
    return out


BOXES = [[0.1, 0.1, 0.5, 0.5], [0.2, 0.6, 0.9, 0.9]]


def test_identical_detections_agree():
    a = _dets(BOXES, [0.9, 0.6], [0, 3])
    report = compare_detections(a, a)
    assert report == {"matched": 2, "only_a": 0, "only_b": 0, "count_a": 2, "count_b": 2,
                      "max_score_diff": 0.0, "match_rate": 1.0, "agree": True}


def test_order_does_not_matter_but_class_and_iou_do():
    a = _dets(BOXES, [0.9, 0.6], [0, 3])
    swapped = _dets(BOXES[::-1], [0.6, 0.9], [3, 0])
    assert compare_detections(a, swapped)["agree"]
    other_class = _dets(BOXES, [0.9, 0.6], [0, 2])
    report = compare_detections(a, other_class)
    assert (report["matched"], report["only_a"], report["only_b"], report["agree"]) == (1, 1, 1, False)
    moved = _dets([[0.1, 0.1, 0.5, 0.5], [0.2, 0.61, 0.9, 0.9]], [0.9, 0.6], [0, 3])  # IoU 0.967
    assert compare_detections(a, moved, iou=0.99)["only_a"] == 1
    assert compare_detections(a, moved, iou=0.9)["agree"]


def test_min_score_ignores_the_tail_but_lets_it_partner():
    a = _dets(BOXES, [0.9, 0.31], [0, 3])
    b = _dets(BOXES[:1] + [[0.2, 0.6, 0.9, 0.9]], [0.9, 0.29], [0, 3])  # the second fell below 0.3
    report = compare_detections(a, b, min_score=0.3)
    assert report["agree"] and report["matched"] == 2 and report["count_b"] == 1
    missing = _dets(BOXES[:1], [0.9], [0])
    assert compare_detections(a, missing, min_score=0.3)["only_a"] == 1
    assert compare_detections(a, missing, min_score=0.5)["agree"]


def test_batches_must_match():
    with pytest.raises(ValueError, match="1 images"):
        compare_detections(_dets(BOXES, [0.9, 0.6], [0, 3]),
                           {k: np.concatenate([v, v]) for k, v in _dets(BOXES, [0.9, 0.6], [0, 3]).items()})


def test_parity_report_of_the_exports(detector, saved_model_path, tflite_path):
    dataset = tfzoo.data.load("shapes:3", "val")
    report = parity_report(detector, [saved_model_path, tflite_path], dataset, batch_size=3,
                           min_score=helpers.SCORE_THRESHOLD + 0.01)
    assert 0.0 <= report["keras"]["AP"] <= 1.0 and report["tolerance_points"] == 0.5
    assert [e["format"] for e in report["exports"]] == ["saved_model", "tflite"]
    for entry in report["exports"]:
        assert abs(entry["delta_AP_points"]) <= 0.5 and entry["within_tolerance"]
        assert entry["detections"]["agree"] and entry["detections"]["matched"] > 10, entry
        assert entry["raw_max_abs_diff"] <= 1e-4 * entry["raw_scale"] and entry["raw_scale"] >= 1.0
        assert entry["raw_images"] == 3


def test_parity_report_raw_outputs_of_the_first_batches_only(detector, saved_model_path, tflite_path, monkeypatch):
    from tfzoo.export.loading import KerasModel

    calls = []
    original = KerasModel.raw_outputs
    monkeypatch.setattr(KerasModel, "raw_outputs", lambda self, images: calls.append(len(images)) or original(
        self, images))
    dataset = tfzoo.data.load("shapes:5", "val")
    report = parity_report(detector, [saved_model_path, tflite_path], dataset, batch_size=2, raw_batches=1)
    assert calls == [2]  # the Keras raw outputs of batch 0, computed once for both exports
    for entry in report["exports"]:
        assert entry["raw_images"] == 2 and entry["raw_max_abs_diff"] <= 1e-4 * entry["raw_scale"]
        assert entry["detections"]["count_a"] == entry["detections"]["count_b"]  # all 5 images compared
    report = parity_report(detector, [saved_model_path], dataset, batch_size=2, raw_batches=0)
    assert report["exports"][0]["raw_images"] == 0 and report["exports"][0]["raw_max_abs_diff"] is None
