"""tfzoo.eval.diagnostics: recall by size, confusions, the fit verdict, the report and training.png."""
import os
import types

import numpy as np
import pytest

from tfzoo.eval import diagnostics as diag


def test_analyze_counts_recall_by_size_and_confusions():
    gt = types.SimpleNamespace(
        boxes_px=np.array([[0, 0, 10, 10], [50, 50, 70, 70], [100, 100, 200, 200], [0, 100, 30, 130]], np.float32),
        classes=np.array([0, 1, 2, 0]), is_crowd=np.zeros(4, bool), difficult=np.array([False, False, False, True]))
    detections = (
        np.array([[0, 0, 10, 11], [50, 50, 70, 70], [100, 100, 200, 200], [101, 100, 200, 200], [0, 100, 30, 130]],
                 np.float32),
        np.array([0.9, 0.2, 0.8, 0.5, 0.9], np.float32),  # the second scores below the threshold
        np.array([0, 1, 2, 1, 0]),
    )
    result = diag.analyze([("img", gt, detections)], ["a", "b", "c"], score_threshold=0.3)
    rows = result["recall_by_size"]
    assert rows["<12"] == {"objects": 1, "found": 1, "recall": 1.0}  # 10 px, found (IoU 0.91)
    assert rows["16-24"] == {"objects": 1, "found": 0, "recall": 0.0}  # 20 px: its detection scored 0.2
    assert rows[">=96"] == {"objects": 1, "found": 1, "recall": 1.0}
    assert rows["24-48"] == {"objects": 0, "found": 0, "recall": None}  # the 30 px object is difficult
    assert (result["objects"], result["found"], result["confused_objects"]) == (3, 2, 1)
    assert result["confusions"] == {"c->b": 1}


def test_confused_pairs_add_both_directions_and_rank():
    pairs = diag.confused_pairs({"b->d": 5, "d->b": 4, "F->R": 6, "2->7": 1, "7->2": 1}, top=2)
    assert pairs == [
        {"classes": ["b", "d"], "count": 9, "b->d": 5, "d->b": 4},
        {"classes": ["F", "R"], "count": 6, "F->R": 6, "R->F": 0},
    ]
    assert diag.confused_pairs({}) == []


@pytest.mark.parametrize("train, val, verdict", [
    (0.30, 0.28, diag.UNDERFITTING),  # both low: the issue-17 case
    (diag.UNDERFIT_AP50 - 0.01, 0.10, diag.UNDERFITTING),
    (0.95, 0.60, diag.OVERFITTING),
    (0.95, 0.95 - diag.OVERFIT_GAP + 0.01, diag.FITS),
    (0.90, 0.88, diag.FITS),
    (0.90, None, diag.FITS),
])
def test_diagnose_names_under_and_overfitting(train, val, verdict):
    result = diag.diagnose(train, val)
    assert result["verdict"] == verdict
    assert result["message"].startswith({diag.UNDERFITTING: "underfitting", diag.OVERFITTING: "overfitting",
                                         diag.FITS: "no sign"}[verdict])
    assert f"{train:.3f}" in result["message"]


def test_underfitting_with_a_gap_says_both():
    # Train-sample AP50 0.59 against val 0.26 (the class-CE run of issue 17): both low,
    # and val already far behind.
    message = diag.diagnose(0.59, 0.26)["message"]
    assert message.startswith("underfitting") and "trails the training images by 0.33" in message
    assert "trails" not in diag.diagnose(0.30, 0.28)["message"]


def test_diagnose_without_a_training_sample():
    assert diag.diagnose(None, 0.5)["verdict"] is None


def test_report_lines_hold_the_verdict_a_row_per_class_and_the_pairs():
    val = {"per_class": {"b": {"AP50": 0.4, "num_gt": 12}, "d": {"AP50": 0.5, "num_gt": 9}}}
    train = {"per_class": {"b": {"AP50": 0.45}, "d": {"AP50": -1.0}}}
    lines = diag.report_lines(val, train, [{"classes": ["b", "d"], "count": 7}], diag.diagnose(0.45, 0.45),
                              ["b", "d"])
    assert lines[0].startswith("underfitting")
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:4]}
    assert rows == {"b": ["0.400", "0.450", "12"], "d": ["0.500", "-", "9"]}
    assert "b/d 7" in lines[-1]
    assert diag.report_lines(val, None, [], diag.diagnose(0.9, 0.9), ["b", "d"])[-1] == "  no class pair confused on val"


@pytest.mark.parametrize("with_ap", [False, True])
def test_plot_training_writes_a_png_atomically(tmp_path, with_ap):
    history = {"loss": [[1, 1.5], [2, 1.1], [3, 0.9]], "cls_loss": [[1, 1.0], [2, 0.7], [3, 0.6]]}
    if with_ap:
        history["val_AP50"] = [[2, 0.3], [3, 0.5]]
    path = tmp_path / "training.png"
    assert diag.plot_training(history, str(path), {"final val AP50": 0.5, "train-sample AP50": None}) == str(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert os.listdir(tmp_path) == ["training.png"]  # no temporary file left
