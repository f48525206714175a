"""Precision-recall curves and the confusion matrix: hand-made cases, slow references, pictures, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.reference import box_iou
from tfzoo import cli
from tfzoo.eval import Evaluator, plots

NAMES = ["a", "b", "c"]
SIZE = 100  # images are 100 x 100: normalized boxes * 100 are the pixels the records hold


def _evaluator(images, names=NAMES):
    """An Evaluator from ``[(gt_boxes_px, gt_classes, difficult, det_boxes_px, det_scores, det_classes)]``."""
    evaluator = Evaluator(names)
    for i, (gt_boxes, gt_classes, difficult, det_boxes, det_scores, det_classes) in enumerate(images):
        evaluator.add_ground_truth(f"im{i}", np.asarray(gt_boxes, np.float64).reshape(-1, 4) / SIZE, gt_classes,
                                   SIZE, SIZE, difficult=difficult)
        if len(det_scores):
            evaluator.add_detections(f"im{i}", np.asarray(det_boxes, np.float64).reshape(-1, 4) / SIZE, det_scores,
                                     det_classes)
    return evaluator


# --- hand-made cases ----------------------------------------------------------------


def test_pr_curve_of_a_hand_made_case():
    """Class a: objects A, B and a difficult C. Ranked detections: A (TP), A again (duplicate:
    FP), C (ignored), B (TP), nowhere (FP). recall 1/2, 1/2, 1, 1; precision 1, 1/2, 2/3, 1/2;
    the envelope is 1 up to recall 1/2 and 2/3 after: AP = 1/2 + 1/2 * 2/3 = 5/6.
    Class b has no objects and one detection: AP undefined, its detection a FP."""
    a, b, c = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]
    evaluator = _evaluator([([a, b, c], [0, 0, 0], [False, False, True],
                             [a, a, c, b, [70, 70, 80, 80], b], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0, 0, 0, 0, 0, 1])])
    curve_a, curve_b, curve_c = plots.pr_curves(evaluator.image_records(), 3)
    np.testing.assert_allclose(curve_a["recall"], [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(curve_a["precision"], [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(curve_a["scores"], [0.9, 0.8, 0.6, 0.5])
    assert curve_a["num_gt"] == 2 and curve_a["ap"] == pytest.approx(5 / 6)
    np.testing.assert_allclose(plots.precision_envelope(curve_a["precision"]), [1, 2 / 3, 2 / 3, 0.5])
    assert curve_b["num_gt"] == 0 and curve_b["ap"] == -1 and curve_b["precision"].tolist() == [0.0]
    assert len(curve_c["recall"]) == 0 and curve_c["ap"] == -1
    assert evaluator.result()["per_class"]["a"]["voc12_AP"] == pytest.approx(5 / 6)


def test_confusion_matrix_of_a_hand_made_case():
    g_a, g_b, g_c, g_diff, g_b2 = [0, 0, 20, 20], [30, 30, 50, 50], [60, 60, 80, 80], [0, 60, 20, 80], [0, 30, 20, 50]
    detections = [
        (g_a, 0.9, 0),                # a found: [a, a]
        (g_b, 0.8, 2),                # b taken for c: [b, c]
        ([0, 0, 19, 20], 0.7, 0),     # a second detection of a: spurious [bg, a]
        ([85, 85, 99, 99], 0.6, 1),   # on nothing: spurious [bg, b]
        (g_diff, 0.9, 0),             # on a difficult object: ignored
        (g_c, 0.2, 2),                # below the score threshold: left out, so c is missed [c, bg]
        (g_b2, 0.95, 0),              # the best IoU with b2, but of another class: spurious [bg, a] ...
        ([0, 31, 20, 50], 0.5, 1),    # ... because b2's own class pairs first: [b, b]
    ]
    evaluator = _evaluator([([g_a, g_b, g_c, g_diff, g_b2], [0, 1, 2, 0, 1], [False, False, False, True, False],
                             [d[0] for d in detections], [d[1] for d in detections], [d[2] for d in detections])])
    matrix = plots.confusion_matrix(evaluator.image_records(), 3, score_threshold=0.3)
    np.testing.assert_array_equal(matrix, [
        # a  b  c  background (missed)
        [1, 0, 0, 0],   # a
        [0, 1, 1, 0],   # b
        [0, 0, 0, 1],   # c
        [2, 1, 0, 0],   # background (spurious)
    ])
    # At a threshold of 0.1 the weak detection of c counts.
    assert plots.confusion_matrix(evaluator.image_records(), 3, score_threshold=0.1)[2].tolist() == [0, 0, 1, 0]


def test_ground_truth_as_detections_is_all_diagonal_and_no_detections_all_missed():
    boxes, classes = [[0, 0, 20, 20], [30, 30, 60, 50], [50, 10, 90, 40]], [0, 2, 2]
    perfect = _evaluator([(boxes, classes, [False] * 3, boxes, [0.9] * 3, classes)])
    np.testing.assert_array_equal(plots.confusion_matrix(perfect.image_records(), 3), np.diag([1, 0, 2, 0]))
    assert [c["ap"] for c in plots.pr_curves(perfect.image_records(), 3)] == [1.0, -1, 1.0]
    empty = _evaluator([(boxes, classes, [False] * 3, [], [], [])])
    matrix = plots.confusion_matrix(empty.image_records(), 3)
    assert matrix[:, 3].tolist() == [1, 0, 2, 0] and matrix.sum() == 3
    assert [c["ap"] for c in plots.pr_curves(empty.image_records(), 3)] == [0.0, -1, 0.0]


# --- slow references on random cases ------------------------------------------------


def _random_images(seed, num_images=6, k=3):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        g = int(rng.integers(0, 6))
        yx = rng.uniform(0, 60, (g, 2))
        gt = np.concatenate([yx, yx + rng.uniform(8, 40, (g, 2))], 1)
        gt_classes = rng.integers(0, k, g)
        difficult = rng.uniform(size=g) < 0.2
        # Detections: jittered copies of the objects (some of another class), then random boxes.
        near = gt + rng.normal(0, 4, gt.shape)
        near_classes = np.where(rng.uniform(size=g) < 0.7, gt_classes, rng.integers(0, k, g))
        extra = int(rng.integers(0, 4))
        yx = rng.uniform(0, 60, (extra, 2))
        far = np.concatenate([yx, yx + rng.uniform(8, 40, (extra, 2))], 1)
        det = np.concatenate([near, far, near[:1]]).clip(0, SIZE)  # and one duplicate
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        det_classes = np.concatenate([near_classes, rng.integers(0, k, extra), near_classes[:1]]).astype(int)
        images.append((gt, gt_classes, difficult, det, rng.uniform(0.01, 1, len(det)), det_classes))
    return images


def _reference_curves(records, k, threshold=0.5):
    """The devkit, one detection at a time: per class, detections by descending score; each
    takes its best-IoU object of the class in its image; above the threshold a difficult one
    ignores it, an unmatched one makes it a TP, a matched one a FP; else a FP."""
    records = list(records)
    curves = []
    for c in range(k):
        ranked = [(float(scores[d]), i, d) for i, (_, _, (_, scores, classes)) in enumerate(records)
                  for d in range(len(scores)) if classes[d] == c]
        ranked.sort(key=lambda t: -t[0])  # stable: image order, then detection order
        npos = sum(int(cls == c and not diff) for _, gt, _ in records
                   for cls, diff in zip(gt.classes, gt.difficult | gt.is_crowd))
        matched, tp, fp, recall, precision = set(), 0, 0, [], []
        for _, i, d in ranked:
            gt, (boxes, _, _) = records[i][1], records[i][2]
            best, jmax = -1.0, None
            for j in range(len(gt.classes)):
                if gt.classes[j] == c:
                    overlap = box_iou(list(boxes[d]), list(gt.boxes_px[j]))
                    if overlap > best:
                        best, jmax = overlap, j
            if best > threshold:
                if gt.difficult[jmax] or gt.is_crowd[jmax]:
                    continue
                if (i, jmax) in matched:
                    fp += 1
                else:
                    matched.add((i, jmax))
                    tp += 1
            else:
                fp += 1
            recall.append(tp / npos if npos else 0.0)
            precision.append(tp / (tp + fp))
        curves.append((recall, precision, npos))
    return curves


def _reference_matrix(records, k, iou_threshold=0.5, score_threshold=0.3):
    """The documented rule, one pair at a time with the plain-Python IoU."""
    matrix = [[0] * (k + 1) for _ in range(k + 1)]
    for _, gt, (boxes, scores, classes) in records:
        ignored = [bool(d or cr) for d, cr in zip(gt.difficult, gt.is_crowd)]
        dets = [d for d in range(len(scores)) if scores[d] >= score_threshold]
        taken_g = {g for g in range(len(gt.classes)) if ignored[g]}
        taken_d = set()
        for same in (True, False):
            pairs = []
            for g in range(len(gt.classes)):
                for d in dets:
                    overlap = box_iou(list(gt.boxes_px[g]), list(boxes[d]))
                    if (gt.classes[g] == classes[d]) == same and overlap > iou_threshold:
                        pairs.append((-overlap, -scores[d], g, d))
            for _, _, g, d in sorted(pairs):
                if g not in taken_g and d not in taken_d:
                    taken_g.add(g)
                    taken_d.add(d)
                    matrix[gt.classes[g]][classes[d]] += 1
        for g in range(len(gt.classes)):
            if g not in taken_g:
                matrix[gt.classes[g]][k] += 1
        for d in dets:
            on_ignored = any(ignored[g] and box_iou(list(gt.boxes_px[g]), list(boxes[d])) > iou_threshold
                             for g in range(len(gt.classes)))
            if d not in taken_d and not on_ignored:
                matrix[k][classes[d]] += 1
    return np.array(matrix)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curves_equal_the_slow_devkit_reference_and_the_metrics(seed):
    evaluator = _evaluator(_random_images(seed))
    curves = plots.pr_curves(evaluator.image_records(), 3)
    metrics = evaluator.result()
    for name, curve, (recall, precision, npos) in zip(NAMES, curves, _reference_curves(evaluator.image_records(), 3)):
        np.testing.assert_allclose(curve["recall"], recall)
        np.testing.assert_allclose(curve["precision"], precision)
        assert curve["num_gt"] == npos == metrics["per_class"][name]["num_gt"]
        assert curve["ap"] == pytest.approx(metrics["per_class"][name]["voc12_AP"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("score_threshold", [0.0, 0.5])
def test_confusion_matrix_equals_the_slow_reference(seed, score_threshold):
    evaluator = _evaluator(_random_images(seed, num_images=8))
    matrix = plots.confusion_matrix(evaluator.image_records(), 3, score_threshold=score_threshold)
    np.testing.assert_array_equal(matrix, _reference_matrix(evaluator.image_records(), 3,
                                                             score_threshold=score_threshold))
    gt_objects = sum(int((~(gt.difficult | gt.is_crowd)).sum()) for _, gt, _ in evaluator.image_records())
    assert matrix[:3].sum() == gt_objects and matrix[3, 3] == 0  # every object counted once


# --- pictures and the command -------------------------------------------------------


def _check_png(path, min_side=200):
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5  # something is drawn


def test_write_plots_writes_the_pictures_and_their_data(tmp_path):
    evaluator = _evaluator(_random_images(5))
    summary = plots.write_plots(evaluator.image_records(), NAMES, tmp_path / "plots")
    for name in (plots.PR_CURVES, plots.PR_GRID, plots.CONFUSION):
        _check_png(tmp_path / "plots" / name)
    saved = json.loads((tmp_path / "plots" / plots.PLOTS_JSON).read_text())
    assert saved["confusion_matrix"]["counts"] == plots.confusion_matrix(evaluator.image_records(), 3).tolist()
    assert saved["confusion_matrix"]["labels"] == NAMES + ["background"]
    metrics = evaluator.result()
    for name in NAMES:
        assert saved["per_class"][name]["AP50"] == pytest.approx(metrics["per_class"][name]["voc12_AP"])
    assert len(summary["files"]) == 4 and not list((tmp_path / "plots").glob(".*"))  # atomic, nothing left
    # No detections at all still draws (empty curves, every object missed).
    empty = _evaluator([([[0, 0, 50, 50]], [1], [False], [], [], [])])
    plots.write_plots(empty.image_records(), NAMES, tmp_path / "empty")
    _check_png(tmp_path / "empty" / plots.CONFUSION)


def test_evaluate_plots_beside_the_metrics(tmp_path, capsys):
    import tfzoo.data

    examples = list(tfzoo.data.load("shapes:3", "val").as_numpy_iterator())
    results = []
    for example in examples:  # the ground truth as detections
        height, width = example["image"].shape[:2]
        for box, cls in zip(example["boxes"], example["classes"]):
            y1, x1, y2, x2 = (box * [height, width, height, width]).tolist()
            results.append({"image_id": example["image_id"].decode(), "category_id": int(cls) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9})
    detections = tmp_path / "results.json"
    detections.write_text(json.dumps(results))
    out = tmp_path / "plots"
    code = cli.main(["evaluate", "--detections", str(detections), "--data", "shapes:3", "--split", "val",
                     "--plots", str(out), "--json", str(tmp_path / "metrics.json")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"plots written to {out}" in err
    assert sorted(p.name for p in out.iterdir()) == sorted([plots.PR_CURVES, plots.PR_GRID, plots.CONFUSION,
                                                            plots.PLOTS_JSON, "metrics.json"])
    assert json.loads((out / "metrics.json").read_text()) == json.loads((tmp_path / "metrics.json").read_text())
    matrix = np.array(json.loads((out / plots.PLOTS_JSON).read_text())["confusion_matrix"]["counts"])
    counts = np.bincount(np.concatenate([e["classes"] for e in examples]), minlength=5)
    np.testing.assert_array_equal(matrix, np.diag(np.append(counts, 0)))
    for name in (plots.PR_CURVES, plots.PR_GRID, plots.CONFUSION):
        _check_png(out / name)

    (tmp_path / "file").write_text("x")
    code = cli.main(["evaluate", "--detections", str(detections), "--data", "shapes:3", "--split", "val",
                     "--plots", str(tmp_path / "file")])
    assert code == 1 and "exists and is not a folder" in capsys.readouterr().err


def test_the_command_default_score_threshold_is_the_documented_one():
    parser = cli.build_parser()
    args = parser.parse_args(["evaluate", "--detections", "r.json", "--data", "shapes"])
    assert args.plot_score_threshold == plots.SCORE_THRESHOLD
    assert f"default: {plots.SCORE_THRESHOLD}" in parser._subparsers._group_actions[0].choices["evaluate"].format_help()
