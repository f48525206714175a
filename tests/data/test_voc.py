"""Pascal VOC reader: layout, class list, 1-based coordinates, validation, round trip."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tfzoo.data import schema, validate, voc
from tfzoo.data.validate import DataError, Report

H, W = 48, 64


def _examples(ds):
    return {e["image_id"].decode(): e for e in ds.as_numpy_iterator()}


def _load_train(root, report=None, **kw):
    return voc.load(root, "train", report=report, **kw)


def test_load_yields_canonical_examples_with_1_based_conversion(voc_data):
    root = (
        voc_data.add("a", [("dog", 1, 1, W, H), ("cat", 11, 21, 30, 40, 1)])
        .add("b", [("person", 5, 5, 5, 5)])  # xmin == xmax: a one-pixel box, valid
        .split("train")
    )
    report = Report()
    ds = _load_train(root, report)
    assert ds.element_spec == schema.output_signature(area=True)
    examples = _examples(ds)
    assert sorted(examples) == ["a", "b"] and len(report) == 0
    a = examples["a"]
    assert a["image"].shape == (H, W, 3) and a["image"].dtype == np.uint8
    np.testing.assert_allclose(a["boxes"], [[0, 0, 1, 1], [20 / H, 10 / W, 40 / H, 30 / W]], rtol=1e-6)
    names = voc.class_names(root)
    assert a["classes"].tolist() == [names.index("dog"), names.index("cat")]
    assert a["difficult"].tolist() == [False, True] and a["is_crowd"].tolist() == [False, False]
    np.testing.assert_allclose(examples["b"]["boxes"], [[4 / H, 4 / W, 5 / H, 5 / W]], rtol=1e-6)


def test_class_list_is_standard_voc_order_when_all_names_are_voc(voc_data):
    root = voc_data.add("a", [("tvmonitor", 1, 1, 9, 9)]).add("b", [("aeroplane", 1, 1, 9, 9)]).split("train")
    assert voc.class_names(root) == list(voc.VOC_CLASSES)


def test_class_list_of_a_custom_dataset_is_the_sorted_names_of_all_splits(voc_data):
    names = [f"part{i}" for i in range(10)]
    for i, name in enumerate(reversed(names)):
        voc_data.add(f"img{i}", [(name, 1, 1, 9, 9)])
    root = voc_data.split("train", voc_data.stems[:5])
    voc_data.split("val", voc_data.stems[5:])
    assert voc.class_names(root) == names  # from train and val annotations alike
    train = list(_load_train(root).as_numpy_iterator())
    assert [int(e["classes"][0]) for e in train] == [9, 8, 7, 6, 5]


def test_labels_txt_sets_the_order_and_unknown_names_are_problems(voc_data):
    voc_data.labels(["zebra", "dog"])
    root = voc_data.add("a", [("dog", 1, 1, 9, 9), ("unicorn", 1, 1, 9, 9), ("", 2, 2, 9, 9)]).split("train")
    assert voc.class_names(root) == ["zebra", "dog"]
    report = Report()
    (record,) = voc.scan(root, "train", report=report)
    assert record["classes"].tolist() == [1]
    assert [(p.record, p.problem) for p in report] == [
        ("object 1", validate.UNKNOWN_CLASS),
        ("object 2", validate.UNKNOWN_CLASS),
    ]


def test_labels_txt_in_the_folder_given_as_root_is_used(voc_data, tmp_path):
    root = voc_data.add("a", [("b", 1, 1, 9, 9)]).split("train")
    (tmp_path / "labels.txt").write_text("b\na\n")
    assert voc.class_names(tmp_path) == ["b", "a"]
    assert voc.resolve_root(tmp_path) == root


def test_root_may_be_the_voc_folder_vocdevkit_or_its_parent(voc_data, tmp_path):
    root = voc_data.add("a", [("dog", 1, 1, 9, 9)]).split("train")
    for given in (root, tmp_path / "VOCdevkit", tmp_path):
        assert voc.resolve_root(given) == root
        assert len(voc.scan(given, "train")) == 1
    (tmp_path / "VOCdevkit" / "VOC2012" / "Annotations").mkdir(parents=True)
    (tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets").mkdir()
    with pytest.raises(DataError, match="several VOC folders"):
        voc.resolve_root(tmp_path)
    with pytest.raises(DataError, match="no VOC layout"):
        voc.resolve_root(tmp_path / "VOCdevkit" / "VOC2012" / "Annotations")


def test_every_validation_item_is_reported_and_the_good_rest_loads(voc_data, tmp_path, make_image, hash_tree):
    outside = make_image(tmp_path / "outside.jpg", (H, W))
    billion_laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
        '<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
        "<annotation><filename>&lol9;</filename></annotation>"
    )
    (
        voc_data.add("good", [("dog", 10, 10, 30, 30)])
        .add("negative", [])
        .add("all_bad", [("dog", 10, 10, 5, 30)])  # inverted: dropped, image kept as negative
        .add("malformed", xml="<annotation><object></annotation>")
        .add("laughs", xml=billion_laughs)
        .add("no_xml", xml=False)
        .add("no_image", [("dog", 1, 1, 9, 9)], image=False)
        .add("zero_bytes", [("dog", 1, 1, 9, 9)], image=b"")
        .add("not_image", [("dog", 1, 1, 9, 9)], image=b"<html>not an image</html>")
        .add("dotdot", [("dog", 1, 1, 9, 9)], filename="../../outside.jpg", image=False)
        .add("absolute", [("dog", 1, 1, 9, 9)], filename=str(outside), image=False)
        .add("symlink", [("dog", 1, 1, 9, 9)], image=False)
        .add(
            "boxes",
            [
                ("dog", "abc", 1, 9, 9),  # 0 non-numeric
                ("dog", "nan", 1, 9, 9),  # 1 NaN
                ("dog", 5, 5, 4, 9),  # 2 zero-area (xmax == xmin - 1)
                ("dog", 9, 5, 2, 9),  # 3 inverted
                ("dog", 100, 100, 120, 120),  # 4 wholly outside
                ("dog", -20, 5, 20, 20),  # 5 partly outside: clipped
                ("dog", 10, 10, 30, 30),  # 6 good
                ("dog", 10, 10, 30, 30),  # 7 duplicate of 6
                ("cat", 10, 10, 30, 30),  # 8 same box, other class: kept
            ],
        )
    )
    os.symlink(outside, voc_data.root / "JPEGImages" / "symlink.jpg")
    root = voc_data.split("train")
    (voc_data.root / "ImageSets" / "Main" / "train.txt").write_text(
        (voc_data.root / "ImageSets" / "Main" / "train.txt").read_text() + "../../../escape\n"
    )
    before = hash_tree(tmp_path)

    report = Report()
    start = time.perf_counter()
    examples = _examples(_load_train(root, report))
    assert time.perf_counter() - start < 10  # the billion laughs are refused, not expanded
    assert sorted(examples) == ["all_bad", "boxes", "good", "negative"]
    assert examples["negative"]["boxes"].shape == (0, 4) and examples["all_bad"]["boxes"].shape == (0, 4)
    names = voc.class_names(root)
    assert examples["boxes"]["classes"].tolist() == [names.index("dog")] * 2 + [names.index("cat")]
    np.testing.assert_allclose(examples["boxes"]["boxes"][0], [4 / H, 0, 20 / H, 20 / W], rtol=1e-6)
    assert report.notes[validate.NOTE_NEGATIVE] == 2

    def where(p):
        return os.path.basename(p.file), p.record

    found = {(where(p), p.problem, p.action) for p in report}
    expected = {
        (("all_bad.xml", "object 0"), validate.INVERTED, validate.DROPPED_BOX),
        (("malformed.xml", ""), validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE),
        (("laughs.xml", ""), validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE),
        (("no_xml.xml", ""), validate.MISSING_ANNOTATION, validate.SKIPPED_IMAGE),
        (("no_image.jpg", ""), validate.MISSING_IMAGE, validate.SKIPPED_IMAGE),
        (("zero_bytes.jpg", ""), validate.EMPTY_FILE, validate.SKIPPED_IMAGE),
        (("not_image.jpg", ""), validate.NOT_AN_IMAGE, validate.SKIPPED_IMAGE),
        (("dotdot.xml", "filename"), validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (("absolute.xml", "filename"), validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (("symlink.xml", "filename"), validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (("train.txt", "../../../escape"), validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (("boxes.xml", "object 0"), validate.NON_NUMERIC, validate.DROPPED_BOX),
        (("boxes.xml", "object 1"), validate.NON_FINITE, validate.DROPPED_BOX),
        (("boxes.xml", "object 2"), validate.ZERO_AREA, validate.DROPPED_BOX),
        (("boxes.xml", "object 3"), validate.INVERTED, validate.DROPPED_BOX),
        (("boxes.xml", "object 4"), validate.OUTSIDE, validate.DROPPED_BOX),
        (("boxes.xml", "object 5"), validate.PARTLY_OUTSIDE, validate.CLIPPED_BOX),
        (("boxes.xml", "object 7"), validate.DUPLICATE, validate.DROPPED_BOX),
    }
    assert found == expected
    assert len(report) == len(expected)
    assert [os.path.basename(p.file) for p in report.select(problem=validate.MISSING_IMAGE)] == ["no_image.jpg"]
    assert hash_tree(tmp_path) == before  # sources never modified

    # strict: the first problem raises before any Dataset exists, naming file and record
    with pytest.raises(DataError, match=r"malformed\.xml: malformed annotation \(XML parse error"):
        voc.load(root, "train", strict=True)


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE a [<!ENTITY l "lol"><!ENTITY l2 "&l;&l;&l;&l;&l;&l;&l;&l;&l;&l;">'
        '<!ENTITY l3 "&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;"><!ENTITY l4 "&l3;&l3;&l3;&l3;&l3;&l3;&l3;&l3;">'
        '<!ENTITY l5 "&l4;&l4;&l4;&l4;&l4;&l4;&l4;&l4;"><!ENTITY l9 "&l5;&l5;&l5;&l5;&l5;&l5;&l5;&l5;&l5;">]>',
        '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ],
    ids=["billion-laughs", "external-entity"],
)
def test_xml_entities_are_refused_fast(voc_data, doctype):
    entity = "&l9;" if "l9" in doctype else "&x;"
    xml = f'<?xml version="1.0"?>{doctype}<annotation><filename>{entity}</filename></annotation>'
    root = voc_data.add("a", xml=xml).add("b", [("dog", 1, 1, 9, 9)]).split()
    report = Report()
    start = time.perf_counter()
    assert [r["image_id"] for r in voc.scan(root, "train", report=report)] == ["b"]
    assert time.perf_counter() - start < 2.0
    (problem,) = report
    assert problem.problem == validate.MALFORMED_ANNOTATION and "forbidden XML" in problem.detail


def test_strict_raises_in_scan_for_each_kind_of_problem(voc_data):
    root = voc_data.add("good", [("dog", 1, 1, 9, 9)]).add("bad", [("dog", 1, 1, 9, "x")]).split("train")
    with pytest.raises(DataError, match=r"bad\.xml \[object 0\]: non-numeric field"):
        voc.scan(root, "train", strict=True)
    report = Report(strict=True)
    with pytest.raises(DataError):
        voc.load(root, "train", report=report)


def test_missing_split_and_duplicate_stems_are_fatal_even_when_lenient(voc_data):
    root = voc_data.add("a", [("dog", 1, 1, 9, 9)]).split("train", ["a", "a"])
    with pytest.raises(DataError, match="duplicate image id"):
        voc.scan(root, "train")
    with pytest.raises(DataError, match=r"missing split file.*available splits: \['train'\]"):
        voc.scan(root, "val")


def test_exif_rotated_image_boxes_are_normalized_with_the_oriented_size(voc_data):
    # Stored 48 x 64 with orientation 6: the oriented image, which boxes refer to, is 64 x 48.
    root = voc_data.add("r", [("dog", 1, 1, 48, 32)], size=(48, 64), orientation=6, xml_size=(64, 48)).split("train")
    report = Report()
    (e,) = list(_load_train(root, report).as_numpy_iterator())
    assert e["image"].shape == (64, 48, 3)
    np.testing.assert_allclose(e["boxes"], [[0, 0, 0.5, 1]])
    assert len(report) == 0 and report.notes["applied EXIF orientation"] == 1


def test_size_mismatch_is_reported_and_the_image_size_used(voc_data):
    root = voc_data.add("a", [("dog", 1, 1, 32, 24)], xml_size=(100, 100)).split("train")
    report = Report()
    (record,) = voc.scan(root, "train", report=report)
    assert (record["height"], record["width"]) == (H, W)
    np.testing.assert_allclose(record["boxes"], [[0, 0, 24 / H, 32 / W]], rtol=1e-6)
    assert [(p.record, p.problem, p.action) for p in report] == [
        ("size", validate.SIZE_MISMATCH, validate.USED_IMAGE_SIZE)
    ]


def test_conversions_are_counted_not_reported(voc_data):
    root = voc_data.add("gray", [("dog", 1, 1, 9, 9)], mode="L").add("cmyk", [("dog", 1, 1, 9, 9)], mode="CMYK").split()
    report = Report(strict=True)  # conversions never raise
    examples = list(_load_train(root, report).as_numpy_iterator())
    assert [e["image"].shape for e in examples] == [(H, W, 3)] * 2
    assert report.notes["converted L to RGB"] == 1 and report.notes["converted CMYK to RGB"] == 1


def test_truncated_image_dropped_at_decode_or_found_by_a_decode_check(voc_data):
    root = voc_data.add("ok", [("dog", 1, 1, 9, 9)]).add("cut", [("dog", 1, 1, 9, 9)], size=(64, 64)).split()
    path = voc_data.root / "JPEGImages" / "cut.jpg"
    path.write_bytes(path.read_bytes()[:-600])
    report = Report()
    assert len(voc.scan(root, "train", report=report)) == 2 and len(report) == 0  # header is fine
    assert list(_examples(_load_train(root, report))) == ["ok"]
    assert [(os.path.basename(p.file), p.problem) for p in report] == [("cut.jpg", validate.CORRUPT_IMAGE)]
    report = Report()
    assert len(voc.scan(root, "train", report=report, check_images="decode")) == 1
    assert [p.problem for p in report] == [validate.CORRUPT_IMAGE]


def test_check_images_false_trusts_xml_size_and_still_finds_missing_files(voc_data):
    root = voc_data.add("a", [("dog", 1, 1, 32, 24)]).add("gone", [("dog", 1, 1, 9, 9)], image=False).split()
    report = Report()
    records = voc.scan(root, "train", report=report, check_images=False)
    assert [r["image_id"] for r in records] == ["a"] and (records[0]["height"], records[0]["width"]) == (H, W)
    assert [p.problem for p in report] == [validate.MISSING_IMAGE]


def test_write_then_load_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    names = ["ant", "bee", "cow"]
    examples = []
    for i in range(4):
        h, w = 32 + 8 * i, 60 - 4 * i
        n = i + 1
        y1 = rng.uniform(0, 0.5, n)
        x1 = rng.uniform(0, 0.5, n)
        boxes = np.stack([y1, x1, y1 + rng.uniform(0.1, 0.5, n), x1 + rng.uniform(0.1, 0.5, n)], 1)
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([yy * 255 // h, xx * 255 // w, (yy + xx) * 127 // (h + w)], -1).astype(np.uint8)
        examples.append(
            {
                "image": image,
                "boxes": boxes.astype(np.float32),
                "classes": rng.integers(0, 3, n).astype(np.int32),
                "is_crowd": np.zeros(n, bool),
                "difficult": rng.random(n) < 0.5,
                "image_id": f"{i:04d}",
            }
        )
    root = tmp_path / "out"
    assert voc.write(examples, root, "val", names) == ["0000", "0001", "0002", "0003"]
    assert voc.class_names(root) == names
    report = Report()
    loaded = list(voc.load(root, "val", report=report).as_numpy_iterator())
    assert len(report) == 0 and len(loaded) == 4
    for want, got in zip(examples, loaded):
        h, w = want["image"].shape[:2]
        assert got["image_id"].decode() == want["image_id"] and got["image"].shape == (h, w, 3)
        np.testing.assert_allclose(got["boxes"] * [h, w, h, w], want["boxes"] * [h, w, h, w], atol=0.51)
        assert got["classes"].tolist() == want["classes"].tolist()
        assert got["difficult"].tolist() == want["difficult"].tolist()
        assert np.abs(got["image"].astype(int) - want["image"]).mean() < 2  # JPEG quality 95


def test_write_leaves_out_crowd_boxes_and_accepts_tensors(tmp_path):
    import tensorflow as tf

    example = {
        "image": tf.zeros([32, 40, 3], tf.uint8),
        "boxes": tf.constant([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.0, 1.0]]),
        "classes": tf.constant([0, 1], tf.int32),
        "is_crowd": tf.constant([True, False]),
        "difficult": tf.constant([False, False]),
        "image_id": tf.constant(b"../bad id"),  # not a safe file name: an index is used
    }
    assert voc.write([example], tmp_path / "out", "train", ["a", "b"]) == ["000000"]
    (record,) = voc.scan(tmp_path / "out", "train")
    assert record["classes"].tolist() == [1]
    np.testing.assert_allclose(record["boxes"], [[0.25, 0.25, 1.0, 1.0]])


def test_images_above_max_pixels_are_refused_from_the_header(voc_data):
    root = voc_data.add("big", [("dog", 1, 1, 9, 9)], size=(40, 60)).add("small", [], size=(20, 20)).split()
    report = Report()
    records = voc.scan(root, "train", report=report, max_pixels=1000)
    assert [r["image_id"] for r in records] == ["small"]
    assert [(os.path.basename(p.file), p.problem) for p in report] == [("big.jpg", validate.IMAGE_TOO_LARGE)]


def test_write_leaves_out_padding_rows_and_refuses_unknown_class_ids(tmp_path):
    # An unbatched example from a padded batch keeps its padding rows (class -1, zero box).
    example = {
        "image": np.zeros([20, 20, 3], np.uint8),
        "boxes": np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], np.float32),
        "classes": np.array([1, schema.PAD_CLASS], np.int32),
        "image_id": "x",
    }
    voc.write([example], tmp_path / "out", "train", ["a", "b"])
    report = Report()
    (record,) = voc.scan(tmp_path / "out", "train", report=report)
    assert record["classes"].tolist() == [1] and len(report) == 0
    with pytest.raises(ValueError, match="0..1"):
        voc.write([dict(example, classes=np.array([1, 2], np.int32))], tmp_path / "bad", "train", ["a", "b"])


def test_non_finite_xml_size_is_ignored_and_the_header_size_used(voc_data):
    root = voc_data.add("inf", [("dog", 1, 1, 9, 9)], xml_size=("inf", "nan")).split()
    (record,) = voc.scan(root, "train", check_images=False)
    assert (record["height"], record["width"]) == (H, W)
