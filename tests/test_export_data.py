"""`tfzoo export-data`: any readable dataset written as VOC, COCO or YOLO, read back the same."""
from __future__ import annotations

import os

import numpy as np
import pytest

import tfzoo.data
from tfzoo import cli
from tfzoo.data import coco, yolo_txt

#: Largest box error in pixels each format's own rounding allows: VOC writes integer pixels,
#: COCO two decimals, YOLO six decimals of the side.
TOLERANCE_PX = {"voc": 0.51, "coco": 0.006, "yolo": 0.001}


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _read(spec, split):
    return list(tfzoo.data.load(spec, split).as_numpy_iterator())


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_shapes_written_in_each_format_read_back_with_the_same_boxes_and_classes(fmt, tmp_path, capsys):
    out = tmp_path / fmt
    code, stdout, err = run(["export-data", "shapes:3", "--split", "train", "--split", "val", "--format", fmt,
                             "--out", str(out)], capsys)
    assert code == 0, err
    for split in ("train", "val"):
        want = _read("shapes:3", split)
        got = _read(f"{fmt}:{out}", split)
        assert f"{split}: 3 images, {sum(len(e['classes']) for e in want)} objects" in stdout
        assert len(got) == len(want) == 3
        assert tfzoo.data.class_names(f"{fmt}:{out}", split) == tfzoo.data.class_names("shapes")
        for w, g in zip(want, got):
            h, wd = w["image"].shape[:2]
            assert g["image"].shape == w["image"].shape
            assert g["classes"].tolist() == w["classes"].tolist()
            scale = np.array([h, wd, h, wd])
            np.testing.assert_allclose(g["boxes"] * scale, w["boxes"] * scale, atol=TOLERANCE_PX[fmt])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary folder left


def test_yolo_to_voc_to_yolo_keeps_the_labels(tmp_path, capsys):
    # Boxes on whole pixels (VOC stores integers), one image without objects, names with a space.
    names = ["traffic light", "dog"]
    rng = np.random.default_rng(1)
    examples = []
    for i, (h, w) in enumerate([(40, 60), (32, 32), (50, 20)]):
        n = i  # 0, 1, 2 objects
        y1, x1 = rng.integers(0, h // 2, n), rng.integers(0, w // 2, n)
        boxes_px = np.stack([y1, x1, y1 + rng.integers(2, h // 2, n), x1 + rng.integers(2, w // 2, n)], 1)
        examples.append({"image": rng.integers(0, 255, [h, w, 3]).astype(np.uint8),
                         "boxes": (boxes_px / [h, w, h, w]).astype(np.float32).reshape(-1, 4),
                         "classes": rng.integers(0, 2, n).astype(np.int32), "image_id": f"img{i}"})
    source = tmp_path / "source"
    yolo_txt.write(examples, source, "val", names)

    assert run(["export-data", f"yolo:{source}", "--split", "val", "--format", "voc", "--out",
                str(tmp_path / "voc")], capsys)[0] == 0
    assert run(["export-data", f"voc:{tmp_path / 'voc'}", "--split", "val", "--format", "yolo", "--out",
                str(tmp_path / "back")], capsys)[0] == 0

    def rows(root, stem):
        text = (root / "labels" / "val" / f"{stem}.txt").read_text()
        return np.array([[float(v) for v in line.split()] for line in text.splitlines()]).reshape(-1, 5)

    assert yolo_txt.class_names(tmp_path / "back") == names
    for example in examples:
        stem = example["image_id"]
        first, again = rows(source, stem), rows(tmp_path / "back", stem)
        assert again.shape == first.shape == (len(example["classes"]), 5)
        np.testing.assert_allclose(again, first, atol=1e-6)


def test_out_must_be_empty_unless_overwrite_and_never_the_source(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["export-data", "shapes:2", "--split", "val", "--format", "yolo", "--out", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code == 1 and stdout == "" and "not empty; pass --overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"

    code, _, err = run(argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["data.yaml", "images", "labels"]  # replaced, not merged

    code, _, err = run(["export-data", f"yolo:{out}", "--split", "val", "--format", "voc", "--out",
                        str(tmp_path), "--overwrite"], capsys)
    assert code == 1 and "holds the dataset being read" in err and (out / "data.yaml").is_file()

    (tmp_path / "file").write_text("x")
    code, _, err = run(["export-data", "shapes:1", "--split", "val", "--format", "coco", "--out",
                        str(tmp_path / "file")], capsys)
    assert code == 1 and "not a folder" in err


def test_a_failure_leaves_no_output_and_no_temporary_folder(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["export-data", "shapes:2", "--split", "val", "--split", "nosuch", "--format", "coco",
                        "--out", str(out)], capsys)
    assert code == 1 and "nosuch" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []  # the val split written first went with the temporary folder


def test_objects_a_format_cannot_hold_are_counted_and_problems_reported(tmp_path, capsys):
    # A COCO source with a crowd box and a box far outside its image (clipped when read).
    image = np.zeros([20, 30, 3], np.uint8)
    source = tmp_path / "coco"
    coco.write([{"image": image, "boxes": np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9]], np.float32),
                 "classes": np.array([0, 1], np.int32), "is_crowd": np.array([False, True]), "image_id": "7"}],
               source, "val", ["a", "b"])
    annotations = source / "annotations" / "instances_val.json"
    annotations.write_text(annotations.read_text().replace('"bbox": [3.0, 2.0, 12.0, 8.0]',
                                                           '"bbox": [3.0, 2.0, 120.0, 8.0]'))
    code, stdout, err = run(["export-data", f"coco:{source}", "--split", "val", "--format", "yolo", "--out",
                             str(tmp_path / "yolo")], capsys)
    assert code == 0, err
    assert "val: 1 images, 1 objects; 1 crowd/difficult objects left out (yolo has no such flag)" in stdout
    assert "1 problems were repaired or skipped" in err
    (record,) = yolo_txt.scan(tmp_path / "yolo", "val")
    np.testing.assert_allclose(record["boxes"], [[0.1, 0.1, 0.5, 1.0]], atol=1e-3)  # clipped at the border

    code, stdout, err = run(["export-data", f"coco:{source}", "--split", "val", "--format", "yolo", "--out",
                             str(tmp_path / "strict"), "--strict"], capsys)
    assert code == 1 and "box partly outside image" in err and not (tmp_path / "strict").exists()


def test_voc_gives_each_image_of_several_splits_its_own_file(tmp_path, capsys):
    # Two YOLO splits with the same file names: one VOC JPEGImages folder holds both.
    names = ["a"]
    one = {"image": np.zeros([16, 16, 3], np.uint8), "boxes": np.array([[0.25, 0.25, 0.75, 0.75]], np.float32),
           "classes": np.array([0], np.int32), "image_id": "same"}
    yolo_txt.write([one], tmp_path / "src", "train", names)
    yolo_txt.write([dict(one, boxes=np.array([[0.0, 0.0, 0.5, 0.5]], np.float32))], tmp_path / "src", "val", names)
    code, stdout, err = run(["export-data", f"yolo:{tmp_path / 'src'}", "--split", "train", "--split", "val",
                             "--format", "voc", "--out", str(tmp_path / "voc")], capsys)
    assert code == 0, err
    assert "1 images renamed" in stdout
    train, val = _read(f"voc:{tmp_path / 'voc'}", "train"), _read(f"voc:{tmp_path / 'voc'}", "val")
    assert [e["image_id"].decode() for e in train + val] == ["same", "val_000000"]
    np.testing.assert_allclose(val[0]["boxes"], [[0.0, 0.0, 0.5, 0.5]])


def test_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export-data", "--help"])
    assert exit_info.value.code == 0
    assert "--overwrite" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export-data", "nonsense:x", "--format", "voc", "--out", "x"])
    assert exit_info.value.code == 2 and "unknown dataset spec 'nonsense:x'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export-data", "shapes", "--format", "kitti", "--out", "x"])
    assert exit_info.value.code == 2
