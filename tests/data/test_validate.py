"""Problem / Report / DataError, path containment and the shared box checks."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tfzoo.data import validate
from tfzoo.data.validate import DataError, Problem, Report


def test_problem_keeps_its_four_field_api_and_prints_detail():
    p = Problem("a.xml", "object 2", "zero-area box", "dropped box")
    assert p.detail == "" and str(p) == "a.xml [object 2]: zero-area box (dropped box)"
    q = Problem("a.xml", "", "x", "y", "why")
    assert str(q) == "a.xml: x: why (y)"


def test_lenient_report_collects_and_summarizes():
    report = Report()
    report.add("a.xml", "object 0", validate.ZERO_AREA, validate.DROPPED_BOX, "w=0")
    report.add("b.xml", "object 1", validate.ZERO_AREA, validate.DROPPED_BOX, "h=0")
    report.add("c.jpg", "", validate.MISSING_IMAGE, validate.SKIPPED_IMAGE)
    assert len(report) == 3
    assert report.summary() == ["1 x missing image file (skipped image)", "2 x zero-area box (dropped box)"]
    assert [p.file for p in report.select(problem=validate.MISSING_IMAGE)] == ["c.jpg"]
    assert report.to_json()[0] == {
        "file": "a.xml",
        "record": "object 0",
        "problem": "zero-area box",
        "action": "dropped box",
        "detail": "w=0",
    }


def test_problems_warning_counts_by_kind_and_shows_the_first_in_full():
    report = Report()
    assert validate.problems_warning(report, "voc:x", "train") is None
    for i in range(4):
        report.add(f"{i}.xml", "object 0", validate.ZERO_AREA, validate.DROPPED_BOX, "w=0")
    text = validate.problems_warning(report, "voc:x", "train", "went on", shown=2)
    assert text == ("voc:x [train]: 4 data problems were repaired or skipped (went on): 4 x zero-area box (dropped box)"
                    ". 0.xml [object 0]: zero-area box: w=0 (dropped box); 1.xml [object 0]: zero-area box: w=0 "
                    "(dropped box); and 2 more. 'tfzoo inspect --data voc:x --split train' lists them all; --strict stops at "
                    "the first")


def test_strict_report_raises_naming_file_record_and_problem():
    report = Report(strict=True)
    with pytest.raises(DataError, match=r"a\.xml \[object 3\]: inverted box \(xmax < xmin\)") as info:
        report.add("a.xml", "object 3", validate.INVERTED, validate.DROPPED_BOX, "xmax < xmin")
    assert info.value.problem.record == "object 3"


def test_fatal_raises_in_lenient_mode_and_notes_never_raise():
    report = Report(strict=True)
    report.note("converted P to RGB")
    report.note("converted P to RGB", 2)
    assert report.notes["converted P to RGB"] == 3 and len(report) == 0
    assert report.notes_summary() == ["3 x converted P to RGB"]
    lenient = Report()
    with pytest.raises(DataError, match="duplicate image id"):
        lenient.fatal("x.json", "image 7", "duplicate image id")
    assert lenient.problems[-1].action == validate.FATAL


def test_ensure_report():
    assert isinstance(validate.ensure_report(None, True), Report) and validate.ensure_report(None, True).strict
    given = Report()
    assert validate.ensure_report(given, False) is given and not given.strict
    assert validate.ensure_report(given, True).strict


def test_to_float():
    assert validate.to_float(3) == 3.0 and validate.to_float(" 2.5 ") == 2.5
    assert np.isnan(validate.to_float("nan")) and validate.to_float(float("inf")) == float("inf")
    for bad in (True, None, "abc", [1], {}):
        assert validate.to_float(bad) is None


def test_resolve_inside(tmp_path):
    root = tmp_path / "data"
    images = root / "images"
    images.mkdir(parents=True)
    (images / "ok.jpg").write_bytes(b"x")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    os.symlink(outside, images / "link_out.jpg")
    os.symlink(images / "ok.jpg", images / "link_in.jpg")
    allowed = (images, root)

    assert validate.resolve_inside("ok.jpg", images, allowed) == (images / "ok.jpg", "")
    assert validate.resolve_inside("sub/../ok.jpg", images, allowed)[0] is not None
    assert validate.resolve_inside("link_in.jpg", images, allowed)[0] is not None
    assert validate.resolve_inside("missing.jpg", images, allowed)[0] == images / "missing.jpg"
    for name in ("../../secret.jpg", "..\\..\\secret.jpg", "../ok.jpg", str(outside), "C:\\x.jpg", "link_out.jpg", ""):
        path, why = validate.resolve_inside(name, images, allowed)
        assert path is None and why, name


def test_folder_level_symlink_is_allowed(tmp_path):
    real = tmp_path / "mnt" / "train2017"
    real.mkdir(parents=True)
    (real / "a.jpg").write_bytes(b"x")
    root = tmp_path / "coco"
    root.mkdir()
    os.symlink(real, root / "train2017")
    path, why = validate.resolve_inside("a.jpg", root / "train2017", (root / "train2017", root))
    assert path == root / "train2017" / "a.jpg" and why == ""


def _entry(boxes_px, classes=None, crowd=None, height=40, width=50, file="a.xml"):
    boxes_px = np.array(boxes_px, np.float64).reshape(-1, 4)
    n = len(boxes_px)
    return {
        "file": file,
        "records": [f"object {i}" for i in range(n)],
        "boxes_px": boxes_px,
        "classes": np.zeros(n, int) if classes is None else np.array(classes),
        "is_crowd": np.zeros(n, bool) if crowd is None else np.array(crowd),
        "height": height,
        "width": width,
    }


def test_clean_boxes_drops_clips_and_names_every_bad_box():
    nan = float("nan")
    entry = _entry(
        [
            [4, 5, 20, 25],  # 0 good
            [nan, 5, 20, 25],  # 1 non-finite
            [4, 5, 20, float("inf")],  # 2 non-finite
            [4, 5, 4, 25],  # 3 zero-area
            [20, 5, 4, 25],  # 4 inverted
            [-30, -30, -10, -10],  # 5 wholly outside
            [40, 5, 60, 25],  # 6 only touches the bottom edge: outside
            [-10, 5, 20, 70],  # 7 partly outside: clipped with a problem
            [-0.5, 0, 40, 50.5],  # 8 sub-pixel overhang: clipped silently
            [4, 5, 20, 25],  # 9 duplicate of 0
            [4, 5, 20, 25],  # 10 same coordinates, other class: kept
        ],
        classes=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    )
    report = Report()
    ((keep, boxes),) = validate.clean_boxes([entry], report)
    assert keep.tolist() == [True, False, False, False, False, False, False, True, True, False, True]
    np.testing.assert_allclose(boxes[0], [4 / 40, 5 / 50, 20 / 40, 25 / 50], rtol=1e-6)
    np.testing.assert_allclose(boxes[7], [0, 5 / 50, 20 / 40, 1])
    np.testing.assert_allclose(boxes[8], [0, 0, 1, 1])
    assert boxes.dtype == np.float32 and np.all((boxes[keep] >= 0) & (boxes[keep] <= 1))
    found = [(p.record, p.problem, p.action) for p in report]
    assert found == [
        ("object 1", validate.NON_FINITE, validate.DROPPED_BOX),
        ("object 2", validate.NON_FINITE, validate.DROPPED_BOX),
        ("object 3", validate.ZERO_AREA, validate.DROPPED_BOX),
        ("object 4", validate.INVERTED, validate.DROPPED_BOX),
        ("object 5", validate.OUTSIDE, validate.DROPPED_BOX),
        ("object 6", validate.OUTSIDE, validate.DROPPED_BOX),
        ("object 7", validate.PARTLY_OUTSIDE, validate.CLIPPED_BOX),
        ("object 9", validate.DUPLICATE, validate.DROPPED_BOX),
    ]
    assert report.notes[validate.NOTE_SUBPIXEL_CLIP] == 1


def test_clean_boxes_keeps_crowd_twin_and_separates_images():
    a = _entry([[1, 1, 9, 9], [1, 1, 9, 9]], crowd=[False, True], file="a")
    b = _entry([[1, 1, 9, 9]], height=10, width=10, file="b")  # same pixels, another image
    empty = _entry(np.zeros([0, 4]), file="c")
    report = Report()
    (ka, ba), (kb, bb), (kc, bc) = validate.clean_boxes([a, b, empty], report)
    assert ka.tolist() == [True, True] and kb.tolist() == [True] and kc.shape == (0,) and bc.shape == (0, 4)
    np.testing.assert_allclose(bb[0], [0.1, 0.1, 0.9, 0.9], rtol=1e-6)
    assert len(report) == 0


def test_clean_boxes_strict_raises_on_first_bad_box():
    with pytest.raises(DataError, match=r"a\.xml \[object 1\]: zero-area box"):
        validate.clean_boxes([_entry([[1, 1, 9, 9], [1, 1, 1, 9]])], Report(strict=True))


def test_clean_boxes_with_no_boxes_at_all():
    assert validate.clean_boxes([], Report()) == []
    ((keep, boxes),) = validate.clean_boxes([_entry(np.zeros([0, 4]))], Report())
    assert keep.shape == (0,) and boxes.shape == (0, 4)
