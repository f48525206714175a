"""COCO reader: split names, category ids, structural errors, validation, round trip."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tfzoo.data import coco, schema, validate
from tfzoo.data.validate import DataError, Report

H, W = 48, 64


def _examples(ds):
    return {e["image_id"].decode(): e for e in ds.as_numpy_iterator()}


def test_load_maps_non_contiguous_category_ids_and_keeps_crowd(coco_data):
    root = (
        coco_data.image(7)
        .ann(7, 90, [8, 4, 16, 20])  # x, y, w, h in pixels
        .ann(7, 1, [0, 0, W, H], iscrowd=1)
        .image(9)
        .ann(9, 3, [10.5, 12.25, 20, 10])
        .write("val2017")
    )
    assert coco.category_ids(root) == [1, 3, 90]
    assert coco.class_names(root) == ["cat", "dog", "toothbrush"]
    report = Report()
    ds = coco.load(root, "val2017", report=report)
    assert ds.element_spec == schema.output_signature(area=True)
    examples = _examples(ds)
    assert sorted(examples) == ["7", "9"] and len(report) == 0
    e7 = examples["7"]
    assert e7["image"].shape == (H, W, 3) and e7["image"].dtype == np.uint8
    np.testing.assert_allclose(e7["boxes"], [[4 / H, 8 / W, 24 / H, 24 / W], [0, 0, 1, 1]], rtol=1e-6)
    assert e7["classes"].tolist() == [2, 0] and e7["is_crowd"].tolist() == [False, True]
    assert e7["difficult"].tolist() == [False, False]
    np.testing.assert_allclose(examples["9"]["boxes"], [[12.25 / H, 10.5 / W, 22.25 / H, 30.5 / W]], rtol=1e-6)
    assert examples["9"]["classes"].tolist() == [1]
    ids = coco.category_ids(root)
    assert [ids[c] for c in e7["classes"]] == [90, 1]  # contiguous -> COCO id, lossless


def test_short_split_name_maps_to_2017_and_images_folder_variant(coco_data):
    coco_data.image(1, split="images/val2017").ann(1, 3, [1, 1, 5, 5])
    root = coco_data.write("val2017")
    records = coco.scan(root, "val")
    assert [r["image_id"] for r in records] == ["1"] and records[0]["path"].endswith("images/val2017/000000000001.jpg")
    assert coco.resolve_split(root, "val")[2] == "val2017"
    with pytest.raises(DataError, match=r"available splits: \['val2017'\]"):
        coco.scan(root, "train")


_IMG = {"id": 1, "file_name": "a.jpg", "height": H, "width": W}
_ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}
_CATS = [{"id": 1, "name": "cat"}]


def _doc(images=(_IMG,), annotations=(), categories=_CATS, without=None):
    doc = {"images": list(images), "annotations": list(annotations), "categories": list(categories)}
    doc.pop(without, None)
    return json.dumps(doc)


STRUCTURAL = [
    ("broken JSON", '{"images": ['),
    ("broken JSON", "[]"),
    ("missing categories", _doc(without="categories")),
    ("missing categories", _doc(categories=[])),
    ("missing images", _doc(without="images")),
    ("duplicate image id", _doc(images=[_IMG, _IMG])),
    ("image without an integer id", _doc(images=[dict(_IMG, id="1")])),
    ("duplicate annotation id", _doc(annotations=[_ANN, _ANN])),
    ("annotation without an integer id", _doc(annotations=[dict(_ANN, id=None)])),
    ("annotation of an unknown image", _doc(annotations=[dict(_ANN, image_id=2)])),
    ("duplicate category id", _doc(categories=_CATS * 2)),
    ("duplicate category name", _doc(categories=_CATS + [{"id": 2, "name": "cat"}])),
]


@pytest.mark.parametrize("problem, text", STRUCTURAL)
def test_structural_errors_are_fatal_even_when_lenient(coco_data, problem, text):
    root = coco_data.write("val2017", text=text)
    with pytest.raises(DataError, match=problem) as info:
        coco.scan(root, "val2017", report=Report())
    assert "instances_val2017.json" in str(info.value)


def test_an_unknown_category_is_a_named_bad_record_not_a_broken_file(coco_data):
    """Lenient: the annotation is named (file, annotation id, category id) and skipped, the
    rest of the image and file loads; strict: the same problem stops the scan."""
    coco_data.image(1).ann(1, 1, [10, 10, 20, 20]).ann(1, 5, [5, 5, 10, 10], ann_id=7).ann(1, 3, [1, 1, 8, 8])
    root = coco_data.write("val2017")
    report = Report()
    examples = _examples(coco.load(root, "val2017", report=report))
    assert examples["1"]["classes"].tolist() == [0, 1]
    problems = [(p.record, p.problem, p.action) for p in report.problems]
    assert problems == [("annotation 7", validate.UNKNOWN_CLASS, validate.DROPPED_BOX)]
    assert "category_id=5 is not in categories" in report.problems[0].detail
    assert report.problems[0].file.endswith("instances_val2017.json")
    with pytest.raises(DataError, match=r"annotation 7.*unknown class"):
        coco.scan(root, "val2017", strict=True)


def test_annotation_area_is_kept_and_a_bad_one_is_named(coco_data):
    """``area`` (the segment's) travels with its box for the evaluator; absent -> NO_AREA
    (box area later); not a number >= 0 -> named problem, box kept with NO_AREA."""
    coco_data.image(1).ann(1, 1, [10, 10, 20, 20]).ann(1, 3, [5, 5, 10, 10]).ann(1, 1, [1, 1, 8, 8])
    coco_data.ann(1, 3, [2, 2, 9, 9]).ann(1, 1, [3, 3, 9, 9])
    for ann, area in zip(coco_data.annotations, (123.5, 0, "12", float("nan"))):
        ann["area"] = area  # the last annotation has none
    root = coco_data.write("val2017")
    report = Report()
    example = _examples(coco.load(root, "val2017", report=report))["1"]
    assert example[schema.AREA].tolist() == [123.5, 0.0, schema.NO_AREA, schema.NO_AREA, schema.NO_AREA]
    problems = [(p.record, p.problem, p.action) for p in report.problems]
    assert problems == [("annotation 3", validate.NON_NUMERIC, validate.USED_BOX_AREA),
                        ("annotation 4", validate.NON_NUMERIC, validate.USED_BOX_AREA)]
    with pytest.raises(DataError, match=r"annotation 3.*non-numeric"):
        coco.scan(root, "val2017", strict=True)


def test_a_split_whose_images_are_all_elsewhere_says_where_it_looked(coco_data):
    """instances_val.json with its images in val2017/: not N missing-image problems and
    then "no ground truth", but one error naming the folder tried and the folder found."""
    coco_data.image(1, split="val2017").ann(1, 1, [10, 10, 20, 20]).image(2, split="val2017")
    root = coco_data.write("val")
    with pytest.raises(DataError, match="none of the images were found") as info:
        coco.scan(root, "val", report=Report())
    message = str(info.value)
    assert "instances_val.json" in message and str(root / "val") in message
    assert "000000000001.jpg is in val2017/" in message
    # One image present: the others are ordinary missing-image problems.
    coco_data.image(3, split="val")
    root = coco_data.write("val")
    report = Report()
    assert [r["image_id"] for r in coco.scan(root, "val", report=report)] == ["3"]
    assert [p.problem for p in report.problems] == [validate.MISSING_IMAGE] * 2


def test_class_names_come_from_the_split_or_the_smallest_file_that_reads(coco_data):
    """A broken train file does not stop reading a good val file's classes."""
    coco_data.image(1).ann(1, 1, [10, 10, 20, 20])
    root = coco_data.write("val2017")
    coco_data.write("train2017", text="{broken")  # the smallest file
    assert coco.class_names(root) == coco.class_names(root, "val") == ["cat", "dog", "toothbrush"]
    assert len(coco.scan(root, "val2017")) == 1
    with pytest.raises(DataError, match="instances_train2017.json"):
        coco.class_names(root, "train")


def test_categories_must_agree_across_splits(coco_data, tmp_path):
    coco_data.image(1).write("val2017")
    coco_data.categories = coco_data.categories[:2]
    root = coco_data.write("train2017")  # smaller: the root's category source
    with pytest.raises(DataError, match="categories differ between splits"):
        coco.scan(root, "val2017")


def test_every_validation_item_is_reported_and_the_good_rest_loads(coco_data, tmp_path, make_image, hash_tree):
    outside = make_image(tmp_path / "outside.jpg", (H, W))
    nan = float("nan")
    (
        coco_data.image(1)
        .ann(1, 1, [10, 10, 20, 20])
        .image(2)  # no annotations: a negative
        .image(3, write=False)  # missing file
        .image(4, data=b"")
        .image(5, data=b"GIF89a broken")
        .image(6, file_name="../../outside.jpg", write=False)
        .image(7, file_name=str(outside), write=False)
        .image(8, file_name="link.jpg", write=False)
        .image(9, json_size=(100, 100))  # size mismatch: image size used
        .ann(9, 1, [0, 0, 32, 24])
        .image(10)
        .ann(10, 1, ["a", 1, 5, 5])  # 2 non-numeric
        .ann(10, 1, [1, 1, 5])  # 3 wrong length
        .ann(10, 1, [nan, 1, 5, 5])  # 4 NaN
        .ann(10, 1, [1, 1, 0, 5])  # 5 zero-area
        .ann(10, 1, [9, 1, -4, 5])  # 6 inverted (negative width)
        .ann(10, 1, [100, 100, 5, 5])  # 7 outside
        .ann(10, 1, [-20, 5, 40, 10])  # 8 partly outside: clipped
        .ann(10, 3, [10, 10, 20, 20])  # 9 good
        .ann(10, 3, [10, 10, 20, 20])  # 10 duplicate of 9
        .ann(10, 3, [10, 10, 20, 20], iscrowd=1)  # 11 crowd twin: kept
        .ann(10, 90, [10, 10, 20, 20])  # 12 other class: kept
    )
    (coco_data.root / "val2017").mkdir(parents=True, exist_ok=True)
    os.symlink(outside, coco_data.root / "val2017" / "link.jpg")
    root = coco_data.write("val2017")
    before = hash_tree(tmp_path)

    report = Report()
    examples = _examples(coco.load(root, "val2017", report=report))
    assert sorted(examples, key=int) == ["1", "2", "9", "10"]
    assert examples["2"]["boxes"].shape == (0, 4) and report.notes[validate.NOTE_NEGATIVE] == 1
    np.testing.assert_allclose(examples["9"]["boxes"], [[0, 0, 24 / H, 32 / W]], rtol=1e-6)
    e10 = examples["10"]
    assert e10["classes"].tolist() == [0, 1, 1, 2] and e10["is_crowd"].tolist() == [False, False, True, False]
    np.testing.assert_allclose(e10["boxes"][0], [5 / H, 0, 15 / H, 20 / W], rtol=1e-6)

    found = {(os.path.basename(p.file), p.record, p.problem, p.action) for p in report}
    ann_file = "instances_val2017.json"
    expected = {
        ("000000000003.jpg", "", validate.MISSING_IMAGE, validate.SKIPPED_IMAGE),
        ("000000000004.jpg", "", validate.EMPTY_FILE, validate.SKIPPED_IMAGE),
        ("000000000005.jpg", "", validate.NOT_AN_IMAGE, validate.SKIPPED_IMAGE),
        (ann_file, "image 6", validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (ann_file, "image 7", validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (ann_file, "image 8", validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (ann_file, "image 9", validate.SIZE_MISMATCH, validate.USED_IMAGE_SIZE),
        (ann_file, "annotation 3", validate.NON_NUMERIC, validate.DROPPED_BOX),
        (ann_file, "annotation 4", validate.NON_NUMERIC, validate.DROPPED_BOX),
        (ann_file, "annotation 5", validate.NON_FINITE, validate.DROPPED_BOX),
        (ann_file, "annotation 6", validate.ZERO_AREA, validate.DROPPED_BOX),
        (ann_file, "annotation 7", validate.INVERTED, validate.DROPPED_BOX),
        (ann_file, "annotation 8", validate.OUTSIDE, validate.DROPPED_BOX),
        (ann_file, "annotation 9", validate.PARTLY_OUTSIDE, validate.CLIPPED_BOX),
        (ann_file, "annotation 11", validate.DUPLICATE, validate.DROPPED_BOX),
    }
    assert found == expected and len(report) == len(expected)
    assert hash_tree(tmp_path) == before  # sources never modified

    with pytest.raises(DataError, match=r"instances_val2017\.json \[annotation 3\]: non-numeric field"):
        coco.load(root, "val2017", strict=True)


def test_strict_stops_at_a_missing_image_before_returning_a_dataset(coco_data):
    root = coco_data.image(1).image(2, write=False).write("val2017")
    with pytest.raises(DataError, match=r"000000000002\.jpg: missing image file"):
        coco.load(root, "val2017", strict=True)


def test_exif_rotated_image_boxes_use_the_oriented_size(coco_data):
    root = coco_data.image(1, size=(48, 64), orientation=8, json_size=(64, 48)).ann(1, 1, [0, 0, 24, 64]).write()
    report = Report()
    (e,) = list(coco.load(root, "val2017", report=report).as_numpy_iterator())
    assert e["image"].shape == (64, 48, 3) and len(report) == 0
    np.testing.assert_allclose(e["boxes"], [[0, 0, 1, 0.5]])


def test_check_images_false_trusts_json_sizes(coco_data):
    root = coco_data.image(1, json_size=(40, 50)).ann(1, 1, [0, 0, 25, 20]).image(2, write=False).write()
    report = Report()
    records = coco.scan(root, "val2017", report=report, check_images=False)
    assert [(r["image_id"], r["height"], r["width"]) for r in records] == [("1", 40, 50)]
    np.testing.assert_allclose(records[0]["boxes"], [[0, 0, 0.5, 0.5]])
    assert [p.problem for p in report] == [validate.MISSING_IMAGE]
    # the decoded image disagrees with the trusted size: dropped at decode time, reported
    assert list(coco.load(root, "val2017", report=report, check_images=False)) == []
    assert report.problems[-1].problem == validate.SIZE_MISMATCH


def test_write_then_load_round_trips_with_category_ids(tmp_path):
    rng = np.random.default_rng(1)
    examples = []
    for i in range(3):
        h, w = 40 + 4 * i, 56 - 4 * i
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([yy * 255 // h, xx * 255 // w, (yy + xx) * 127 // (h + w)], -1).astype(np.uint8)
        n = i + 2
        y1, x1 = rng.uniform(0, 0.5, n), rng.uniform(0, 0.5, n)
        boxes = np.stack([y1, x1, y1 + rng.uniform(0.1, 0.5, n), x1 + rng.uniform(0.1, 0.5, n)], 1)
        examples.append(
            {
                "image": image,
                "boxes": boxes.astype(np.float32),
                "classes": rng.integers(0, 3, n).astype(np.int32),
                "is_crowd": rng.random(n) < 0.5,
                "difficult": np.zeros(n, bool),
                "image_id": str(100 + 7 * i),
            }
        )
    root = tmp_path / "out"
    names = ["person", "car", "toothbrush"]
    assert coco.write(examples, root, "train2017", names, category_ids=[1, 3, 90]) == ["100", "107", "114"]
    document = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    assert "info" not in document and "licenses" not in document
    assert coco.category_ids(root) == [1, 3, 90] and coco.class_names(root) == names
    report = Report()
    loaded = list(coco.load(root, "train", report=report).as_numpy_iterator())
    assert len(report) == 0 and len(loaded) == 3
    for want, got in zip(examples, loaded):
        h, w = want["image"].shape[:2]
        assert got["image_id"].decode() == want["image_id"]
        np.testing.assert_allclose(got["boxes"] * [h, w, h, w], want["boxes"] * [h, w, h, w], atol=0.011)
        assert got["classes"].tolist() == want["classes"].tolist()
        assert got["is_crowd"].tolist() == want["is_crowd"].tolist()
        assert np.abs(got["image"].astype(int) - want["image"]).mean() < 2
    written = {a["category_id"] for a in document["annotations"]}
    assert written <= {1, 3, 90}


def test_voc_dataset_converts_to_coco_through_write(voc_data, tmp_path):
    from tfzoo.data import voc

    root = voc_data.add("x1", [("dog", 5, 7, 30, 40, 1), ("cat", 1, 1, 64, 48)]).add("x2", []).split("val")
    names = voc.class_names(root)
    examples = list(voc.load(root, "val"))
    ids = coco.write(examples, tmp_path / "c", "val2017", names)
    assert ids == ["1", "2"]  # VOC stems are not integers: renumbered
    back = list(coco.load(tmp_path / "c", "val").as_numpy_iterator())
    assert [b["image_id"].decode() for b in back] == ["1", "2"]
    for before, after in zip(examples, back):
        np.testing.assert_allclose(after["boxes"], before["boxes"].numpy(), atol=1e-4)
        assert after["classes"].tolist() == before["classes"].numpy().tolist()
    assert coco.class_names(tmp_path / "c") == names and coco.category_ids(tmp_path / "c") == list(range(1, 21))


def test_write_leaves_out_padding_rows_and_refuses_unknown_class_ids(tmp_path):
    example = {
        "image": np.zeros([20, 20, 3], np.uint8),
        "boxes": np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], np.float32),
        "classes": np.array([1, -1], np.int32),  # the second row is padding
        "image_id": "7",
    }
    coco.write([example], tmp_path / "out", "val2017", ["a", "b"])
    document = json.loads((tmp_path / "out" / "annotations" / "instances_val2017.json").read_text())
    assert [a["category_id"] for a in document["annotations"]] == [2]
    with pytest.raises(ValueError, match="0..1"):
        coco.write([dict(example, classes=np.array([2], np.int32), boxes=example["boxes"][:1])],
                   tmp_path / "bad", "val2017", ["a", "b"])
