"""COCO metrics through pycocotools, in memory: values, empty results, quiet stdout."""
import warnings

import numpy as np
import pytest

from tfzoo.eval import coco_metrics


def _dataset():
    """Two images, categories 1 and 3, no ``info`` or ``licenses`` keys."""
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [10, 10, 50, 40], "area": 2000.0, "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [100, 80, 120, 90], "area": 10800.0, "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 1, "bbox": [5, 5, 40, 40], "area": 1600.0, "iscrowd": 0},
    ]
    return {
        "images": [{"id": 10, "height": 200, "width": 300}, {"id": 11, "height": 100, "width": 100}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
    }


def _perfect_results(dataset):
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
        for a in dataset["annotations"]
    ]


def test_ground_truth_as_results_scores_one_and_stdout_stays_clean(capsys):
    dataset = _dataset()
    results = _perfect_results(dataset)
    summary, per_category = coco_metrics.evaluate_coco(dataset, results)
    assert tuple(summary) == coco_metrics.COCO_KEYS
    for key in ("AP", "AP50", "AP75", "APm", "AR10", "AR100"):
        assert summary[key] == pytest.approx(1.0), key
    assert summary["APs"] == -1.0  # no object under 32^2 px: pycocotools' -1 is kept
    assert per_category == {1: {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)},
                            3: {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}}
    assert capsys.readouterr().out == ""
    assert "segmentation" not in results[0]  # the caller's entries are not modified


def test_matches_pycocotools_driven_directly():
    """The same numbers as the textbook COCOeval script, on imperfect detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = _dataset()
    rng = np.random.default_rng(0)
    results = []
    for a in dataset["annotations"]:
        for _ in range(3):
            box = (np.array(a["bbox"]) + rng.normal(0, 4, 4)).clip(1).tolist()
            results.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": box,
                            "score": float(rng.uniform())})
    summary, _ = coco_metrics.evaluate_coco(dataset, results)

    gt = COCO()
    gt.dataset = dict(_dataset(), info={}, licenses=[])
    gt.createIndex()
    evaluation = COCOeval(gt, gt.loadRes([dict(r) for r in results]), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert [summary[k] for k in coco_metrics.COCO_KEYS] == pytest.approx(list(evaluation.stats[:9]))
    assert 0.0 < summary["AP"] < 1.0


def test_no_results_warns_and_scores_zero():
    with pytest.warns(UserWarning, match="no detections"):
        summary, per_category = coco_metrics.evaluate_coco(_dataset(), [])
    assert summary["AP"] == 0.0 and summary["AP50"] == 0.0 and summary["AR100"] == 0.0
    assert summary["APs"] == -1.0
    assert per_category[1]["AP"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coco_metrics.evaluate_coco(_dataset(), [], warn_empty=False)


def test_crowd_region_absorbs_detections():
    """A detection inside an ``iscrowd`` region is ignored; on plain background it is a FP."""
    dataset = _dataset()
    dataset["annotations"].append(
        {"id": 4, "image_id": 11, "category_id": 3, "bbox": [50, 50, 40, 40], "area": 1600.0, "iscrowd": 1}
    )
    results = _perfect_results(_dataset())
    in_crowd = {"image_id": 11, "category_id": 3, "bbox": [55, 55, 20, 20], "score": 0.99}
    summary, _ = coco_metrics.evaluate_coco(dataset, results + [in_crowd])
    assert summary["AP"] == pytest.approx(1.0)
    summary, _ = coco_metrics.evaluate_coco(_dataset(), results + [in_crowd])
    assert summary["AP"] < 1.0


def test_results_image_id():
    assert coco_metrics.results_image_id("139") == 139
    assert coco_metrics.results_image_id(b"0") == 0
    assert coco_metrics.results_image_id("000005") == "000005"  # VOC stem keeps its zeros
    assert coco_metrics.results_image_id("2008_000123") == "2008_000123"


def test_coco_results_entries():
    entries = coco_metrics.coco_results(
        b"139", [[0.1, 0.2, 0.5, 0.6]], [0.75], [2], height=100, width=200, category_ids=[1, 3, 90]
    )
    assert entries == [{"image_id": 139, "category_id": 90, "bbox": pytest.approx([40, 10, 80, 40]), "score": 0.75}]
    assert coco_metrics.coco_results("a", np.zeros([0, 4]), [], [], 10, 10) == []
    with pytest.raises(ValueError, match="rows differ"):
        coco_metrics.coco_results("a", np.zeros([2, 4]), [0.5], [0, 0], 10, 10)


def test_coco_results_of_padded_outputs_needs_num_detections():
    """Padding rows (class -1) must not become a category: cut them or get an error."""
    boxes, scores, classes = np.full([3, 4], 0.5), [0.9, 0.0, 0.0], [1, -1, -1]
    entries = coco_metrics.coco_results("5", boxes, scores, classes, 10, 10, [1, 3], num_detections=1)
    assert [(e["image_id"], e["category_id"]) for e in entries] == [(5, 3)]
    with pytest.raises(ValueError, match="class ids"):
        coco_metrics.coco_results("5", boxes, scores, classes, 10, 10, [1, 3])
    with pytest.raises(ValueError, match="class ids"):
        coco_metrics.coco_results("5", boxes[:1], [0.9], [2], 10, 10, [1, 3])
