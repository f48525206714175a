"""YOLO txt reader: data.yaml forms and paths, label lines, validation, the spec, round trip."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

import tfzoo.data
from tfzoo.data import schema, validate, yolo_txt
from tfzoo.data.validate import DataError, Report

H, W = 48, 64
NAMES = ("cat", "dog", "bird")


def _line(cls, y1, x1, y2, x2, h=H, w=W):
    """A label line for a pixel box ``[y1, x1, y2, x2]`` of an ``h x w`` image."""
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


class YoloBuilder:
    """Builds ``root`` in the YOLO layout: ``data.yaml``, ``images/<split>/``, ``labels/<split>/``."""

    def __init__(self, root, make_image, yaml=None):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.make_image = make_image
        if yaml is None:
            yaml = "train: images/train\nval: images/val\nnames:\n" + "".join(
                f"  {i}: {n}\n" for i, n in enumerate(NAMES))
        (self.root / "data.yaml").write_text(yaml)
        self.count = 0

    def add(self, name, lines=None, split="train", size=(H, W), image=True, suffix=".jpg", **kw):
        """``lines``: None (no label file), a string (written verbatim) or a list of lines."""
        self.count += 1
        path = self.root / "images" / split / f"{name}{suffix}"
        if image is True:
            self.make_image(path, size, seed=self.count, **kw)
        elif isinstance(image, bytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image)
        if lines is not None:
            label = self.root / "labels" / split / f"{name}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(lines if isinstance(lines, str) else "".join(f"{line}\n" for line in lines))
        return self


@pytest.fixture
def yolo_data(tmp_path, make_image):
    return YoloBuilder(tmp_path / "yolo", make_image)


def _examples(ds):
    return {e["image_id"].decode(): e for e in ds.as_numpy_iterator()}


def test_load_yields_canonical_examples_from_normalized_centre_lines(yolo_data):
    (yolo_data.add("a", [_line(1, 0, 0, H, W), _line(0, 20, 10, 40, 30)])
     .add("no_label")  # no label file: no objects
     .add("empty", "")  # empty label file: no objects
     .add("sub/b", ["2 0.5 0.5 0.25 0.5"]))  # subfolders are read, the id keeps the folder
    report = Report()
    ds = yolo_txt.load(yolo_data.root, "train", report=report)
    assert ds.element_spec == schema.output_signature(area=True)
    examples = _examples(ds)
    assert sorted(examples) == ["a", "empty", "no_label", "sub/b"] and len(report) == 0
    a = examples["a"]
    assert a["image"].shape == (H, W, 3) and a["image"].dtype == np.uint8
    np.testing.assert_allclose(a["boxes"], [[0, 0, 1, 1], [20 / H, 10 / W, 40 / H, 30 / W]], atol=1e-6)
    assert a["classes"].tolist() == [1, 0] and not a["is_crowd"].any() and not a["difficult"].any()
    np.testing.assert_allclose(examples["sub/b"]["boxes"], [[0.25, 0.375, 0.75, 0.625]], atol=1e-6)
    assert examples["no_label"]["boxes"].shape == (0, 4) and examples["empty"]["boxes"].shape == (0, 4)
    assert report.notes[validate.NOTE_NEGATIVE] == 2 and report.notes[yolo_txt.NOTE_NO_LABEL_FILE] == 1
    assert yolo_txt.class_names(yolo_data.root) == list(NAMES)
    assert yolo_txt.splits(yolo_data.root) == ["train", "val"]


@pytest.mark.parametrize("yaml, names", [
    ("names: [cat, 'dog', \"big bird\"]  # flow list\n", ["cat", "dog", "big bird"]),
    ("names:\n- cat\n- dog\nnc: 2\n", ["cat", "dog"]),
    ("nc: 2\nnames:\n  - cat # comment\n  - 'it''s'\n", ["cat", "it's"]),
    ("names:\n  1: dog\n  0: cat\n", ["cat", "dog"]),  # a mapping: by id, not by order
    ("names: {0: cat, 1: 'a: b',\n  2: c}\n", ["cat", "a: b", "c"]),  # a flow mapping over two lines
    ("nc: 3\n", ["class_0", "class_1", "class_2"]),  # Ultralytics' names without 'names'
    # Roboflow's own block and an Ultralytics download script are ignored: the reader does not use them.
    ("names: ['a']\nroboflow:\n  workspace: w\n  url: https://x.y/z\ndownload: |\n  import os\n  os.remove('x')\n",
     ["a"]),
])
def test_data_yaml_names_forms(tmp_path, yaml, names):
    (tmp_path / "data.yaml").write_text(yaml)
    assert yolo_txt.class_names(tmp_path) == names


@pytest.mark.parametrize("yaml, message", [
    ("names: [a, b]\nnc: 3\n", r"\[nc\]: nc is 3 but names lists 2"),
    ("names:\n  0: a\n  2: b\n", r"ids must be 0..1, got \[0, 2\]"),
    ("names: [a, a]\n", r"class 'a' listed twice"),
    ("names: &n [a, b]\n", r"\[line 1\]: unsupported YAML for 'names'"),
    ("names:\n  - [a, b]\n", r"\[line 2\]: unsupported YAML for 'names'"),
    ("names:\n  0:\n    x: a\n", r"unsupported YAML for 'names'"),
    ("names: [a]\nnames: [b]\n", r"\[line 2\]: key 'names' repeats"),
    ("- a\n- b\n", r"\[line 1\]: expected 'key: value' at the top level"),
    ("train: images/train\n", r"no 'names'"),
    ("names: [a, [b]]\n", r"nested flow collection"),
])
def test_data_yaml_problems_are_fatal_and_name_the_line(tmp_path, yaml, message):
    (tmp_path / "data.yaml").write_text(yaml)
    with pytest.raises(DataError, match=message):
        yolo_txt.class_names(tmp_path)


def test_flat_parser_agrees_with_pyyaml_on_the_subset_it_reads():
    yaml = pytest.importorskip("yaml")
    text = ("# comment\npath: .  # root\ntrain: ../train/images\nval: 'images/val'\ntest:\nnc: 3\n"
            "names: ['a b', \"c, d\", e]\nother:\n  0: x\n  1: \"y # not a comment\"\nlist:\n- 1\n- two\n"
            "flow: {k: v, n: 2}\n")
    ours = yolo_txt.parse_yaml(text)

    def as_text(value):  # the flat parser keeps scalars as text
        if isinstance(value, dict):
            return {str(k): as_text(v) for k, v in value.items()}
        if isinstance(value, list):
            return [as_text(v) for v in value]
        return None if value is None else str(value)

    assert ours == as_text(yaml.safe_load(text))


def test_every_validation_item_is_reported_and_the_good_rest_loads(yolo_data, tmp_path, make_image, hash_tree):
    outside = make_image(tmp_path / "outside.jpg", (H, W))
    outside_label = tmp_path / "outside.txt"
    outside_label.write_text(_line(0, 1, 1, 9, 9) + "\n")
    (
        yolo_data.add("good", [_line(0, 10, 10, 30, 30)])
        .add("zero_bytes", [_line(0, 1, 1, 9, 9)], image=b"")
        .add("not_image", [_line(0, 1, 1, 9, 9)], image=b"<html>not an image</html>")
        .add("latin1", "")  # rewritten below as Latin-1 bytes
        .add("lines", [
            _line(0, 10, 10, 30, 30),          # line 1 good
            "0 0.5 0.5 0.1",                   # line 2 four fields
            "1 0.1 0.1 0.2 0.1 0.3 0.3",       # line 3 a triangle (segmentation polygon)
            "x 0.5 0.5 0.1 0.1",               # line 4 non-numeric class
            "1.5 0.5 0.5 0.1 0.1",             # line 5 class not an integer
            "0 0.5 abc 0.1 0.1",               # line 6 non-numeric field
            "0 nan 0.5 0.1 0.1",               # line 7 NaN
            "3 0.5 0.5 0.1 0.1",               # line 8 class outside names (0..2)
            "-1 0.5 0.5 0.1 0.1",              # line 9 negative class
            "0 0.5 0.5 0 0.1",                 # line 10 zero width
            "0 0.5 0.5 -0.1 0.1",              # line 11 negative width: inverted
            "0 2.0 2.0 0.1 0.1",               # line 12 wholly outside (pixels given as fractions?)
            "",                                # blank lines are skipped
            "2 0.05 0.5 0.3 0.2",              # line 14 overhangs 6.4 px on the left: clipped, reported
            "2 0.5 0.5 1.02 0.2",              # line 15 overhangs 0.64 px each side: clipped silently
            _line(0, 10, 10, 30, 30),          # line 16 duplicate of line 1
            _line(1, 10, 10, 30, 30),          # line 17 same box, other class: kept
        ])
        .add("symlink", [_line(0, 1, 1, 9, 9)], image=False)
        .add("label_link", None)
    )
    os.symlink(outside, yolo_data.root / "images" / "train" / "symlink.jpg")
    os.symlink(outside_label, yolo_data.root / "labels" / "train" / "label_link.txt")
    (yolo_data.root / "labels" / "train" / "orphan.txt").write_text(_line(0, 1, 1, 9, 9))
    (yolo_data.root / "labels" / "train" / "classes.txt").write_text("cat\ndog\nbird\n")  # LabelImg's: not a label
    (yolo_data.root / "labels" / "train" / "latin1.txt").write_bytes(b"0 0.5 0.5 0.2 0.2 caf\xe9\n")
    before = hash_tree(tmp_path)

    report = Report()
    examples = _examples(yolo_txt.load(yolo_data.root, "train", report=report))
    assert sorted(examples) == ["good", "lines"]
    lines = examples["lines"]
    assert lines["classes"].tolist() == [0, 2, 2, 1]
    np.testing.assert_allclose(lines["boxes"][1], [0.4, 0, 0.6, 0.2], atol=1e-6)  # clipped at x = 0
    np.testing.assert_allclose(lines["boxes"][2], [0.4, 0, 0.6, 1], atol=1e-6)

    def where(p):
        return os.path.basename(p.file), p.record

    found = {(where(p), p.problem, p.action) for p in report}
    expected = {
        (("zero_bytes.jpg", ""), validate.EMPTY_FILE, validate.SKIPPED_IMAGE),
        (("not_image.jpg", ""), validate.NOT_AN_IMAGE, validate.SKIPPED_IMAGE),
        (("latin1.txt", ""), validate.MALFORMED_ANNOTATION, validate.SKIPPED_IMAGE),
        (("symlink.jpg", ""), validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (("label_link.txt", ""), validate.PATH_ESCAPES, validate.SKIPPED_IMAGE),
        (("orphan.txt", ""), yolo_txt.ORPHAN_LABEL, yolo_txt.IGNORED),
        (("lines.txt", "line 2"), validate.MALFORMED_ANNOTATION, validate.DROPPED_BOX),
        (("lines.txt", "line 3"), validate.MALFORMED_ANNOTATION, validate.DROPPED_BOX),
        (("lines.txt", "line 4"), validate.NON_NUMERIC, validate.DROPPED_BOX),
        (("lines.txt", "line 5"), validate.NON_NUMERIC, validate.DROPPED_BOX),
        (("lines.txt", "line 6"), validate.NON_NUMERIC, validate.DROPPED_BOX),
        (("lines.txt", "line 7"), validate.NON_FINITE, validate.DROPPED_BOX),
        (("lines.txt", "line 8"), validate.UNKNOWN_CLASS, validate.DROPPED_BOX),
        (("lines.txt", "line 9"), validate.UNKNOWN_CLASS, validate.DROPPED_BOX),
        (("lines.txt", "line 10"), validate.ZERO_AREA, validate.DROPPED_BOX),
        (("lines.txt", "line 11"), validate.INVERTED, validate.DROPPED_BOX),
        (("lines.txt", "line 12"), validate.OUTSIDE, validate.DROPPED_BOX),
        (("lines.txt", "line 14"), validate.PARTLY_OUTSIDE, validate.CLIPPED_BOX),
        (("lines.txt", "line 16"), validate.DUPLICATE, validate.DROPPED_BOX),
    }
    assert found == expected
    assert len(report) == len(expected)
    assert report.notes[validate.NOTE_SUBPIXEL_CLIP] == 1
    polygon = report.select(problem=validate.MALFORMED_ANNOTATION, action=validate.DROPPED_BOX)[1]
    assert "7 fields, expected 5" in polygon.detail and "polygon" in polygon.detail
    assert hash_tree(tmp_path) == before  # sources never modified

    # strict: the first problem raises before any Dataset exists, naming file, line and problem
    (yolo_data.root / "images" / "train" / "zero_bytes.jpg").unlink()
    (yolo_data.root / "labels" / "train" / "zero_bytes.txt").unlink()
    for name in ("not_image", "symlink", "label_link", "latin1"):
        for folder, suffix in (("images", ".jpg"), ("labels", ".txt")):
            path = yolo_data.root / folder / "train" / f"{name}{suffix}"
            if os.path.lexists(path):
                path.unlink()
    (yolo_data.root / "labels" / "train" / "orphan.txt").unlink()
    with pytest.raises(DataError, match=r"lines\.txt \[line 2\]: malformed annotation \(4 fields, expected 5"):
        yolo_txt.load(yolo_data.root, "train", strict=True)


def test_a_split_without_its_labels_folder_is_reported_not_read_silently_as_empty(yolo_data):
    from tfzoo.data.validate import Report

    yolo_data.add("a", [_line(0, 1, 1, 9, 9)]).add("b", split="val")  # val: an image, no labels/val/
    report = Report()
    records = yolo_txt.scan(yolo_data.root, "val", report=report)
    assert [r["image_id"] for r in records] == ["b"] and len(records[0]["classes"]) == 0
    (problem,) = report.problems
    assert problem.problem == yolo_txt.MISSING_FOLDER and problem.file.endswith("labels/val")
    with pytest.raises(DataError, match="no labels folder"):
        yolo_txt.scan(yolo_data.root, "val", strict=True)
    report = Report()
    yolo_txt.scan(yolo_data.root, "train", report=report)
    assert not report.problems  # a labels folder: nothing to say


def test_orphan_label_file_raises_in_strict_mode(yolo_data):
    yolo_data.add("a", [_line(0, 1, 1, 9, 9)]).add("gone", [_line(0, 1, 1, 9, 9)], image=False)
    with pytest.raises(DataError, match=r"gone\.txt: label file without image"):
        yolo_txt.scan(yolo_data.root, "train", strict=True)
    assert [r["image_id"] for r in yolo_txt.scan(yolo_data.root, "train")] == ["a"]


def test_split_folders_follow_path_and_roboflow_and_the_images_fallback(tmp_path, make_image):
    # Roboflow: train/images + train/labels, data.yaml saying ../train/images (Ultralytics strips the ../).
    root = tmp_path / "robo"
    make_image(root / "train" / "images" / "x.jpg", (H, W))
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "x.txt").write_text(_line(1, 0, 0, 24, 32))
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['a', 'b']\n")
    report = Report()
    (record,) = yolo_txt.scan(root, "train", report=report)
    assert record["classes"].tolist() == [1] and len(report) == 0
    assert report.notes[yolo_txt.NOTE_DOTDOT] == 1
    with pytest.raises(DataError, match=r"\[val\]: missing folder"):  # ../valid/images: neither exists
        yolo_txt.scan(root, "val")

    # `path` inside the dataset: split folders are relative to it.
    root = tmp_path / "nested"
    make_image(root / "ds" / "images" / "train" / "y.png", (H, W))
    (root / "data.yaml").write_text("path: ds\ntrain: images/train\nnames: [a]\n")
    assert [r["image_id"] for r in yolo_txt.scan(root, "train")] == ["y"]

    # `path` leaving the dataset (an Ultralytics yaml copied with its data): reported, the yaml folder used.
    root = tmp_path / "copied"
    make_image(root / "images" / "val" / "z.jpg", (H, W))
    (root / "data.yaml").write_text("path: ../datasets/coco8\nval: images/val\nnames: [a]\n")
    report = Report()
    assert [r["image_id"] for r in yolo_txt.scan(root, "val", report=report)] == ["z"]
    assert [(p.record, p.problem, p.action) for p in report] == [
        ("path", validate.PATH_ESCAPES, yolo_txt.USED_YAML_FOLDER),
        ("", yolo_txt.MISSING_FOLDER, yolo_txt.NO_OBJECTS)]  # images/val/ has no labels/val/ beside it
    with pytest.raises(DataError, match=r"data\.yaml \[path\]: path escapes dataset root"):
        yolo_txt.scan(root, "val", strict=True)
    # A split with no key reads images/<split>; an unknown split is fatal and lists the others.
    make_image(root / "images" / "extra" / "w.jpg", (H, W))
    assert [r["image_id"] for r in yolo_txt.scan(root, "extra")] == ["w"]
    assert yolo_txt.splits(root) == ["extra", "val"]
    with pytest.raises(DataError, match=r"missing split.*available splits: \['extra', 'val'\]"):
        yolo_txt.scan(root, "test")


@pytest.mark.parametrize("value, problem", [
    ("../../elsewhere/images", validate.PATH_ESCAPES),
    ("/etc", validate.PATH_ESCAPES),
    ("train.txt", "image-list files are not supported"),
    ("images/nope", yolo_txt.MISSING_FOLDER),
])
def test_a_split_folder_outside_the_dataset_or_missing_is_fatal(tmp_path, make_image, value, problem):
    make_image(tmp_path / "elsewhere" / "images" / "e.jpg", (H, W))
    root = tmp_path / "ds" / "inner"
    root.mkdir(parents=True)
    (root / "data.yaml").write_text(f"train: {value}\nnames: [a]\n")
    with pytest.raises(DataError, match=rf"data\.yaml \[train\]: .*{problem}"):
        yolo_txt.scan(root, "train")  # lenient, still fatal: there is no other folder to read


def test_spec_reaches_the_reader_everywhere_voc_does(yolo_data):
    from tfzoo.train import data as train_data

    yolo_data.add("a", [_line(2, 1, 1, 9, 9)]).add("b", [_line(0, 1, 1, 9, 9)]).add("c", [], split="val")
    spec = f"yolo:{yolo_data.root}"
    assert tfzoo.data.class_names(spec) == list(NAMES)
    assert tfzoo.data.category_ids(spec) == [1, 2, 3]
    assert [e["classes"].tolist() for e in tfzoo.data.load(spec, "train").as_numpy_iterator()] == [[2], [0]]
    assert train_data.split_exists(spec, "val") and not train_data.split_exists(spec, "test")
    dataset = tfzoo.data.load(spec, "train")
    assert train_data.count_examples([spec], "train", dataset) == 2
    # The yaml file itself is a valid PATH too (Ultralytics' coco8.yaml style).
    assert tfzoo.data.class_names(f"yolo:{yolo_data.root / 'data.yaml'}") == list(NAMES)
    with pytest.raises(ValueError, match="yolo:PATH"):
        tfzoo.data.load("yolo:", "train")


def test_the_command_lists_and_inspects_yolo_data(yolo_data, capsys):
    import json

    from tfzoo import cli

    yolo_data.add("a", [_line(2, 1, 1, 9, 9), "0 0.5 0.5 0.1"]).add("b", [])
    assert cli.main(["list"]) == 0
    assert "yolo:PATH" in capsys.readouterr().out
    assert cli.main(["inspect", "--data", f"yolo:{yolo_data.root}", "--split", "train", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2 and result["per_class"] == {"cat": 0, "dog": 0, "bird": 1}
    assert [(os.path.basename(p["file"]), p["record"], p["problem"]) for p in result["problems"]] == [
        ("a.txt", "line 2", validate.MALFORMED_ANNOTATION)]


def test_exif_rotated_image_boxes_use_the_oriented_size(yolo_data):
    # Stored 48 x 64 with orientation 6: the oriented image is 64 x 48 and the fractions refer to it.
    yolo_data.add("r", [_line(0, 0, 0, 32, 48, h=64, w=48)], orientation=6)
    report = Report()
    (e,) = list(yolo_txt.load(yolo_data.root, "train", report=report).as_numpy_iterator())
    assert e["image"].shape == (64, 48, 3)
    np.testing.assert_allclose(e["boxes"], [[0, 0, 0.5, 1]], atol=1e-6)
    assert len(report) == 0 and report.notes["applied EXIF orientation"] == 1


def test_truncated_image_found_by_the_decode_check(yolo_data):
    yolo_data.add("ok", [_line(0, 1, 1, 9, 9)]).add("cut", [_line(0, 1, 1, 9, 9)], size=(64, 64))
    path = yolo_data.root / "images" / "train" / "cut.jpg"
    path.write_bytes(path.read_bytes()[:-600])
    assert len(yolo_txt.scan(yolo_data.root, "train")) == 2  # the header is fine
    report = Report()
    assert [r["image_id"] for r in yolo_txt.scan(yolo_data.root, "train", report=report, check_images="decode")] \
        == ["ok"]
    assert [(os.path.basename(p.file), p.problem) for p in report] == [("cut.jpg", validate.CORRUPT_IMAGE)]


def test_two_images_with_one_id_keep_the_first(yolo_data):
    yolo_data.add("a", [_line(0, 1, 1, 9, 9)]).add("a", None, suffix=".png")
    report = Report()
    records = yolo_txt.scan(yolo_data.root, "train", report=report)
    assert [os.path.basename(r["path"]) for r in records] == ["a.jpg"]
    assert [(os.path.basename(p.file), p.problem) for p in report] == [("a.png", yolo_txt.DUPLICATE_IMAGE)]


def _example(image_id, boxes, classes, h=32, w=40, **flags):
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([yy * 255 // h, xx * 255 // w, (yy + xx) * 127 // (h + w)], -1).astype(np.uint8)
    n = len(classes)
    return {"image": image, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "classes": np.asarray(classes, np.int32), "is_crowd": np.asarray(flags.get("crowd", [False] * n)),
            "difficult": np.asarray(flags.get("difficult", [False] * n)), "image_id": image_id}


def test_write_then_load_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    examples = []
    for i in range(3):
        n = i + 1
        y1, x1 = rng.uniform(0, 0.5, n), rng.uniform(0, 0.5, n)
        boxes = np.stack([y1, x1, y1 + rng.uniform(0.1, 0.5, n), x1 + rng.uniform(0.1, 0.5, n)], 1)
        examples.append(_example(f"{i:04d}", boxes, rng.integers(0, 3, n), h=30 + 6 * i, w=50 - 4 * i))
    examples.append(_example("negative", [], []))
    root = tmp_path / "out"
    assert yolo_txt.write(examples, root, "val", NAMES) == ["0000", "0001", "0002", "negative"]
    assert (root / "labels" / "val" / "negative.txt").read_text() == ""
    assert yolo_txt.class_names(root) == list(NAMES) and yolo_txt.splits(root) == ["val"]
    report = Report()
    loaded = list(yolo_txt.load(root, "val", report=report).as_numpy_iterator())
    assert len(report) == 0 and len(loaded) == 4
    for want, got in zip(examples, loaded):
        assert got["image_id"].decode() == want["image_id"] and got["image"].shape == want["image"].shape
        np.testing.assert_allclose(got["boxes"], want["boxes"], atol=2e-6)
        assert got["classes"].tolist() == want["classes"].tolist()
        assert np.abs(got["image"].astype(int) - want["image"]).mean() < 2  # JPEG quality 95
    # A second split joins data.yaml; other class names are refused.
    yolo_txt.write(examples[:1], root, "train", NAMES)
    assert yolo_txt.splits(root) == ["train", "val"]
    assert "train: images/train\nval: images/val\n" in (root / "data.yaml").read_text()
    with pytest.raises(ValueError, match="other class names"):
        yolo_txt.write(examples[:1], root, "test", ["x", "y", "z"])


def test_write_leaves_out_crowd_difficult_and_padding_and_refuses_unknown_ids(tmp_path):
    example = _example("a", [[0, 0, 0.5, 0.5], [0.1, 0.1, 0.6, 0.6], [0.2, 0.2, 0.9, 0.9], [0, 0, 0, 0]],
                       [0, 1, 2, schema.PAD_CLASS], crowd=[True, False, False, False],
                       difficult=[False, True, False, False])
    yolo_txt.write([example], tmp_path / "out", "train", NAMES)
    (record,) = yolo_txt.scan(tmp_path / "out", "train")
    assert record["classes"].tolist() == [2]
    np.testing.assert_allclose(record["boxes"], [[0.2, 0.2, 0.9, 0.9]], atol=2e-6)
    with pytest.raises(ValueError, match="0..2"):
        yolo_txt.write([_example("b", [[0, 0, 1, 1]], [3])], tmp_path / "bad", "train", NAMES)
