"""Evaluator: ground truth from canonical examples, detections from models or results files."""
import json
import math

import sys

import numpy as np
import pytest
import tensorflow as tf

from tfzoo.data import schema
from tfzoo.eval import RESULT_KEYS, Evaluator, coco_results, evaluate_results_file

CLASS_NAMES = ["cat", "dog", "bird"]
COCO_IDS = [1, 3, 90]  # non-contiguous, like COCO's


def _examples(seed=0, num_images=6, image_ids=None):
    """Canonical examples (numpy dicts) with random boxes, some crowd and difficult flags."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(num_images):
        height, width = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        g = int(rng.integers(1, 6))
        yx = rng.uniform(0, 0.6, (g, 2))
        boxes = np.concatenate([yx, yx + rng.uniform(0.1, 0.4, (g, 2))], 1).astype(np.float32)
        examples.append(
            {
                schema.IMAGE: np.zeros([height, width, 3], np.uint8),
                schema.BOXES: boxes,
                schema.CLASSES: rng.integers(0, len(CLASS_NAMES), g).astype(np.int32),
                schema.IS_CROWD: rng.uniform(size=g) < 0.15,
                schema.DIFFICULT: rng.uniform(size=g) < 0.15,
                schema.IMAGE_ID: (image_ids[i] if image_ids else f"{i:06d}").encode(),
            }
        )
    return examples


def _perfect_evaluator(examples, category_ids=None):
    evaluator = Evaluator(CLASS_NAMES, category_ids)
    evaluator.add_ground_truth_examples(examples, progress=False)
    for ex in examples:
        evaluator.add_detections(ex[schema.IMAGE_ID], ex[schema.BOXES], np.full(len(ex[schema.CLASSES]), 0.9),
                                 ex[schema.CLASSES])
    return evaluator


def _assert_perfect(metrics):
    assert tuple(metrics) == RESULT_KEYS
    for key in ("AP", "AP50", "AP75", "voc07_mAP", "voc12_mAP"):
        assert metrics[key] == pytest.approx(1.0), key
    for name, per_class in metrics["per_class"].items():
        for key in ("AP", "AP50", "voc07_AP", "voc12_AP"):
            assert per_class[key] == pytest.approx(1.0), (name, key)


def test_ground_truth_fed_back_scores_one_per_class_too():
    examples = _examples()
    metrics = _perfect_evaluator(examples).result()
    _assert_perfect(metrics)
    num_gt = sum(int(np.sum((ex[schema.CLASSES] == 0) & ~ex[schema.IS_CROWD] & ~ex[schema.DIFFICULT]))
                 for ex in examples)
    assert metrics["per_class"]["cat"]["num_gt"] == num_gt
    json.dumps(metrics)  # plain floats and ints, no NaN


def test_no_detections_warns_and_scores_zero():
    evaluator = Evaluator(CLASS_NAMES)
    evaluator.add_ground_truth_examples(_examples(), progress=False)
    with pytest.warns(UserWarning, match="no detections"):
        metrics = evaluator.result()
    for key in ("AP", "AP50", "AP75", "AR100", "voc07_mAP", "voc12_mAP"):
        assert metrics[key] == 0.0, key
    assert all(c["voc12_AP"] == 0.0 for c in metrics["per_class"].values())


def test_hand_computed_voc07_and_voc12_through_the_evaluator():
    """One 100x100 image, three cats; detections TP (0.9), FP (0.8), TP (0.7), third cat missed.

    recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3 (see test_voc_metrics for the sums):
    VOC12 = 1/3 + 1/3 * 2/3 = 5/9, VOC07 = (4 * 1 + 3 * 2/3) / 11 = 6/11.
    """
    evaluator = Evaluator(CLASS_NAMES)
    gt = np.array([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], [0.0, 0.6, 0.2, 0.8]])
    evaluator.add_ground_truth("img", gt, [0, 0, 0], height=100, width=100)
    dets = np.array([gt[0], [0.3, 0.0, 0.45, 0.2], gt[1]])
    evaluator.add_detections("img", dets, [0.9, 0.8, 0.7], [0, 0, 0])
    metrics = evaluator.result()
    assert metrics["voc12_mAP"] == pytest.approx(5 / 9)
    assert metrics["voc07_mAP"] == pytest.approx(6 / 11)
    assert metrics["per_class"]["cat"]["voc12_AP"] == pytest.approx(5 / 9)
    # classes without ground truth are -1 and left out of the mean
    assert metrics["per_class"]["dog"] == {"AP": -1.0, "AP50": -1.0, "voc07_AP": -1.0, "voc12_AP": -1.0,
                                           "num_gt": 0}


@pytest.mark.parametrize("flag", ["difficult", "is_crowd"])
def test_difficult_and_crowd_boxes_count_neither_way(flag):
    """A missed difficult/crowd box costs no recall, a detection on it is no false positive;
    the same box without the flag costs both."""
    gt = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]])

    def run(flagged, detect_flagged_box):
        evaluator = Evaluator(CLASS_NAMES)
        evaluator.add_ground_truth("a", gt, [1, 1], 80, 60, **{flag: [False, flagged]})
        evaluator.add_detections("a", gt[:1], [0.5], [1])
        if detect_flagged_box:  # slightly shifted, ranked first
            evaluator.add_detections("a", gt[1:] + 0.01, [0.9], [1])
        return evaluator.result()

    for detect in (False, True):
        metrics = run(flagged=True, detect_flagged_box=detect)
        assert metrics["voc07_mAP"] == pytest.approx(1.0) and metrics["voc12_mAP"] == pytest.approx(1.0)
        assert metrics["AP50"] == pytest.approx(1.0)
        assert metrics["per_class"]["dog"]["num_gt"] == 1
    # control: unflagged and missed -> recall 1/2
    assert run(flagged=False, detect_flagged_box=False)["voc12_mAP"] == pytest.approx(0.5)


def test_padded_inference_outputs_and_dataset_input(capsys, monkeypatch):
    # The bar shows on a terminal only (tqdm's disable=None): make captured stderr look like one.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    examples = _examples(seed=1, num_images=4)
    dataset = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=schema.output_signature())
    evaluator = Evaluator(CLASS_NAMES)
    assert evaluator.add_ground_truth_examples(dataset, progress=True) == 4
    m = 8
    outputs = {
        "detection_boxes": np.zeros([4, m, 4], np.float32),
        "detection_scores": np.zeros([4, m], np.float32),
        "detection_classes": np.zeros([4, m], np.int32),
        "num_detections": np.zeros([4], np.int32),
    }
    for b, ex in enumerate(examples):
        g = len(ex[schema.CLASSES])
        outputs["detection_boxes"][b, :g] = ex[schema.BOXES]
        outputs["detection_scores"][b, :g] = 0.8
        outputs["detection_classes"][b, :g] = ex[schema.CLASSES]
        outputs["detection_classes"][b, g:] = 7  # garbage padding beyond num_detections
        outputs["num_detections"][b] = g
    evaluator.add_inference_outputs([ex[schema.IMAGE_ID] for ex in examples], outputs)
    _assert_perfect(evaluator.result())
    captured = capsys.readouterr()
    assert captured.out == ""  # progress bar and pycocotools chatter stay off stdout
    assert "ground truth" in captured.err


def test_ground_truth_validation():
    evaluator = Evaluator(CLASS_NAMES)
    evaluator.add_ground_truth("a", np.zeros([0, 4]), [], 10, 10)
    with pytest.raises(ValueError, match="already added"):
        evaluator.add_ground_truth("a", np.zeros([0, 4]), [], 10, 10)
    with pytest.raises(ValueError, match="normalized"):
        evaluator.add_ground_truth("b", [[10, 10, 50, 50]], [0], 100, 100)
    with pytest.raises(ValueError, match="class ids"):
        evaluator.add_ground_truth("c", [[0, 0, 0.5, 0.5]], [3], 100, 100)
    # padding rows (class -1) are dropped
    evaluator.add_ground_truth("d", [[0, 0, 0.5, 0.5], [0, 0, 0, 0]], [0, schema.PAD_CLASS], 100, 100)
    with pytest.raises(ValueError, match="not finite"):
        evaluator.add_detections("d", [[0, 0, 0.5, 0.5]], [math.nan], [0])
    with pytest.raises(ValueError, match="without ground truth"):
        evaluator.add_detections("zzz", [[0, 0, 0.5, 0.5]], [0.5], [0])
        evaluator.result()
    with pytest.raises(ValueError, match="unique"):
        Evaluator(["a", "a"])
    with pytest.raises(ValueError, match="category_ids"):
        Evaluator(["a", "b"], [1])


# --- COCO results files ---------------------------------------------------------------


def _write_results(tmp_path, examples, category_ids):
    entries = []
    for ex in examples:
        height, width = ex[schema.IMAGE].shape[:2]
        scores = np.linspace(0.9, 0.5, len(ex[schema.CLASSES]))
        entries += coco_results(ex[schema.IMAGE_ID], ex[schema.BOXES], scores, ex[schema.CLASSES], height, width,
                                category_ids)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(entries))
    return path, entries


def test_results_file_round_trip_with_voc_stems(tmp_path):
    examples = _examples(image_ids=["000005", "2008_000123", "000007", "x", "000009", "000010"])
    path, entries = _write_results(tmp_path, examples, None)
    assert entries[0]["image_id"] == "000005" and {e["category_id"] for e in entries} <= {1, 2, 3}
    _assert_perfect(evaluate_results_file(str(path), examples, CLASS_NAMES, progress=False))


def test_results_file_round_trip_with_coco_ids(tmp_path):
    examples = _examples(image_ids=["139", "285", "632", "724", "776", "785"])
    path, entries = _write_results(tmp_path, examples, COCO_IDS)
    assert entries[0]["image_id"] == 139  # ints in the file, as COCO tools write them
    assert {e["category_id"] for e in entries} <= set(COCO_IDS)
    _assert_perfect(evaluate_results_file(path, examples, CLASS_NAMES, COCO_IDS, progress=False))
    # category names work in place of ids
    for e in entries:
        e["category_id"] = CLASS_NAMES[COCO_IDS.index(e["category_id"])]
    _assert_perfect(evaluate_results_file(entries, examples, CLASS_NAMES, COCO_IDS, progress=False))


_GOOD = {"image_id": 139, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 12.0], "score": 0.5}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({k: v for k, v in _GOOD.items() if k != "score"}, "missing key.*score"),
        (dict(_GOOD, score=math.nan), "score must be a finite number"),
        (dict(_GOOD, score="high"), "score must be a finite number"),
        (dict(_GOOD, bbox=[1.0, math.inf, 10.0, 12.0]), "bbox is not finite"),
        (dict(_GOOD, bbox=[1.0, 2.0, 10.0]), "bbox must be 4 numbers"),
        (dict(_GOOD, bbox=[1.0, 2.0, -10.0, 12.0]), "bbox width and height"),
        (dict(_GOOD, image_id=999), "image_id 999 is not among"),
        (dict(_GOOD, image_id=139.0), "image_id must be"),
        (dict(_GOOD, category_id=2), "unknown category_id 2"),
        (dict(_GOOD, category_id="horse"), "unknown category name 'horse'"),
        (dict(_GOOD, category_id=True), "category_id must be"),
        ([1, 2], "entry must be an object"),
    ],
)
def test_malformed_results_entries_are_named(bad, message):
    evaluator = Evaluator(CLASS_NAMES, COCO_IDS)
    evaluator.add_ground_truth("139", [[0.1, 0.1, 0.5, 0.5]], [1], 100, 100)
    with pytest.raises(ValueError, match=rf"results\[2\]: {message}"):
        evaluator.add_results([_GOOD, _GOOD, bad, _GOOD])


def test_results_file_that_is_not_a_list(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"image_id": 1}')
    with pytest.raises(ValueError, match="JSON list"):
        Evaluator(CLASS_NAMES).add_results(path)
    path.write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Evaluator(CLASS_NAMES).add_results(path)


def test_unknown_images_can_be_skipped_with_a_warning():
    evaluator = Evaluator(CLASS_NAMES, COCO_IDS)
    evaluator.add_ground_truth("139", [[0.02, 0.01, 0.14, 0.11]], [1], 100, 100)
    with pytest.warns(UserWarning, match="skipped 1 entries"):
        assert evaluator.add_results([_GOOD, dict(_GOOD, image_id=5)], unknown_images="skip") == 1
    assert evaluator.result()["AP50"] == pytest.approx(1.0)


def test_dataset_spec_to_metrics_end_to_end(tmp_path):
    """The CLI's path: spec -> examples, class names, category ids -> results file -> metrics."""
    from tfzoo import data

    spec = "shapes:3"
    names, ids = data.class_names(spec), data.category_ids(spec)
    examples = list(data.load(spec, "val").as_numpy_iterator())
    path, _ = _write_results(tmp_path, examples, ids)
    _assert_perfect_if_defined(evaluate_results_file(path, data.load(spec, "val"), names, ids, progress=False))


def _assert_perfect_if_defined(metrics):
    """Like _assert_perfect, for datasets where some classes may have no ground truth (-1)."""
    for key in ("AP", "AP50", "voc07_mAP", "voc12_mAP"):
        assert metrics[key] == pytest.approx(1.0), key
    for per_class in metrics["per_class"].values():
        assert per_class["voc12_AP"] == pytest.approx(1.0 if per_class["num_gt"] else -1.0)


def test_coco_area_ranges_use_the_annotation_area_like_pycocotools(tmp_path):
    """APs/APm/APl bucket objects by the annotation's ``area`` (the segment's), not the box
    area: on a COCO file whose areas differ from the boxes', tfzoo equals pycocotools run
    on the file itself; an annotation without ``area`` falls back to its box area."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from tfzoo import data
    from tfzoo.data import coco

    rng = np.random.default_rng(3)
    examples = []
    for i in range(12):
        g = 6
        size = rng.uniform(0.08, 0.7, (g, 2))  # 16..140 px on a 200 px image: every bucket
        yx = rng.uniform(0, 1, (g, 2)) * (1 - size)
        examples.append({
            schema.IMAGE: np.zeros([200, 200, 3], np.uint8),
            schema.BOXES: np.concatenate([yx, yx + size], 1).astype(np.float32),
            schema.CLASSES: rng.integers(0, len(CLASS_NAMES), g).astype(np.int32),
            schema.IMAGE_ID: str(i + 1).encode(),
        })
    root = tmp_path / "coco"
    coco.write(examples, root, "val", CLASS_NAMES, category_ids=COCO_IDS)
    path = root / "annotations" / "instances_val.json"
    document = json.loads(path.read_text())
    for k, ann in enumerate(document["annotations"]):
        if k % 5 == 4:
            del ann["area"]  # falls back to the box area, as pycocotools' loadRes would not
        else:
            ann["area"] = round(ann["area"] * rng.uniform(0.3, 1.0), 2)  # segments fill part of the box
    path.write_text(json.dumps(document))

    # Detections: jittered boxes with random scores, so that the buckets' APs are not all 1.
    results = []
    for ann in document["annotations"]:
        if rng.uniform() < 0.8:
            x, y, w, h = ann["bbox"]
            results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                            "bbox": [x + rng.normal(0, 0.08 * w), y + rng.normal(0, 0.08 * h), w, h],
                            "score": float(rng.uniform())})
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(results))

    loaded = list(data.load(f"coco:{root}", "val").as_numpy_iterator())
    areas = np.concatenate([ex[schema.AREA] for ex in loaded])
    assert (areas == schema.NO_AREA).sum() == sum("area" not in a for a in document["annotations"]) > 0
    metrics = evaluate_results_file(str(results_path), loaded, CLASS_NAMES, COCO_IDS, progress=False)

    for ann in document["annotations"]:  # pycocotools on the file: what it takes for a missing area
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    ground_truth = COCO()
    ground_truth.dataset = document
    ground_truth.createIndex()
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    reference = dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), evaluation.stats[:6]))
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    # The areas matter here: with box areas the buckets score differently.
    box_area = Evaluator(CLASS_NAMES, COCO_IDS)
    box_area.add_ground_truth_examples([{k: v for k, v in ex.items() if k != schema.AREA} for ex in loaded],
                                       progress=False)
    box_area.add_results(results)
    assert any(box_area.result()[k] != pytest.approx(metrics[k]) for k in ("APs", "APm", "APl"))
