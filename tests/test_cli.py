"""The `tfzoo` command as a user runs it: help, list, inspect, evaluate, and its errors."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tfzoo import cli


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "inspect", "evaluate"):
        assert command in out


def test_console_script_entry_point_runs():
    # The installed entry point, in a fresh interpreter: quick, TensorFlow is not imported for --help.
    result = subprocess.run([sys.executable, "-m", "tfzoo.cli", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "inspect" in result.stdout


def test_list_names_datasets(capsys):
    code, out, _ = run(["list"], capsys)
    assert code == 0
    assert "shapes" in out and "voc:PATH" in out and "coco:PATH" in out and "tfds:NAME" in out


def test_inspect_json_is_one_document_on_stdout(capsys):
    code, out, err = run(["inspect", "--data", "shapes:6", "--split", "val", "--json", "--anchors", "fpn",
                          "--image-size", "320"], capsys)
    assert code == 0, err
    result = json.loads(out)  # nothing else on stdout
    assert result["images"] == 6
    assert result["objects"] == sum(result["per_class"].values())
    assert set(result["per_class"]) == set(cli_class_names())
    assert result["problems"] == []
    histogram = result["box_side_px"]["histogram"]
    assert sum(b["boxes"] for b in histogram) == result["objects"]
    anchors = result["anchors"]
    assert anchors["count"] == 9 * (40 * 40 + 20 * 20 + 10 * 10 + 5 * 5 + 3 * 3)
    assert anchors["boxes_with_best_iou_ge_0.5"] <= result["objects"]


def cli_class_names():
    import tfzoo.data

    return tfzoo.data.class_names("shapes")


def test_inspect_text_report(capsys):
    code, out, _ = run(["inspect", "--data", "shapes:3", "--split", "val"], capsys)
    assert code == 0
    assert "3 images" in out and "objects per class" in out and "problems: 0" in out


def test_unknown_spec_is_one_line_error(capsys):
    code, out, err = run(["inspect", "--data", "nonsense:x"], capsys)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("tfzoo: error:") and "nonsense:x" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError):
        cli.main(["--debug", "inspect", "--data", "nonsense:x"])


def _voc_copy_of_shapes(root, count=4):
    """A VOCdevkit-layout copy of the first `count` shapes val images."""
    import tfzoo.data
    from tfzoo.data import voc

    examples = list(tfzoo.data.load(f"shapes:{count}", "val").as_numpy_iterator())
    voc.write(examples, root, "val", tfzoo.data.class_names("shapes"))
    return examples


def _annotation_files(root):
    return sorted(pathlib.Path(root).rglob("Annotations/*.xml"))


def test_inspect_reports_problems_leniently_and_strict_fails_first(tmp_path, capsys):
    root = tmp_path / "voc"
    _voc_copy_of_shapes(root)
    broken = _annotation_files(root)[0]
    text = broken.read_text()
    # Push one box's xmax far outside the image: lenient mode clips it and says so.
    start = text.index("<xmax>") + len("<xmax>")
    end = text.index("</xmax>")
    broken.write_text(text[:start] + "100000" + text[end:])
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    code, out, err = run(["inspect", "--data", f"voc:{root}", "--split", "val", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 4
    assert any(broken.name in p["file"] for p in result["problems"])
    assert sum(int(line.split(" x ")[0]) for line in result["problem_summary"]) == len(result["problems"])

    code, out, err = run(["inspect", "--data", f"voc:{root}", "--split", "val", "--strict"], capsys)
    assert code == 1 and out == ""
    assert broken.name in err and err.count("\n") == 1
    # Source files are never modified.
    assert before == {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _results_from_ground_truth(examples):
    """COCO-format results (VOC stems as image ids, 1-based category ids) equal to the ground truth."""
    results = []
    for example in examples:
        height, width = example["image"].shape[:2]
        for box, cls in zip(example["boxes"], example["classes"]):
            y1, x1, y2, x2 = (box * np.array([height, width, height, width])).tolist()
            results.append({"image_id": example["image_id"].decode(), "category_id": int(cls) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9})
    return results


def test_evaluate_ground_truth_as_detections_scores_one(tmp_path, capsys):
    root = tmp_path / "voc"
    examples = _voc_copy_of_shapes(root)
    detections = tmp_path / "results.json"
    detections.write_text(json.dumps(_results_from_ground_truth(examples)))
    out_json = tmp_path / "out" / "metrics.json"

    code, out, err = run(["evaluate", "--detections", str(detections), "--data", f"voc:{root}", "--split", "val",
                          "--json", str(out_json)], capsys)
    assert code == 0, err
    metrics = json.loads(out_json.read_text())
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "voc07_mAP", "voc12_mAP",
                "per_class"):
        assert key in metrics
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["voc07_mAP"] == pytest.approx(1.0) and metrics["voc12_mAP"] == pytest.approx(1.0)
    assert "AP50" in out
    assert not list(out_json.parent.glob("*.tmp-*"))  # written atomically, nothing left behind


def test_evaluate_missing_file_is_named(tmp_path, capsys):
    code, _, err = run(["evaluate", "--detections", str(tmp_path / "nope.json"), "--data", "shapes:2",
                        "--split", "val"], capsys)
    assert code == 1 and "nope.json" in err


def test_error_raised_inside_tf_data_is_one_clean_line(capsys, monkeypatch):
    """A strict reader failing inside Dataset.map (TFDS) reaches the user without TF's wrapping."""
    import tensorflow as tf

    import tfzoo.data
    from tfzoo.data.validate import DataError

    def fail(index):
        raise DataError("bad.xml [3]: box outside the image")

    def load(spec, split, *, strict=False, report=None):
        return tf.data.Dataset.range(2).map(lambda i: tf.py_function(fail, [i], tf.int64), num_parallel_calls=2)

    monkeypatch.setattr(tfzoo.data, "load", load)
    monkeypatch.setattr(tfzoo.data, "class_names", lambda spec: ["a"])
    code, out, err = run(["inspect", "--data", "shapes", "--strict"], capsys)
    assert code == 1 and out == ""
    assert err == "tfzoo: error: DataError: bad.xml [3]: box outside the image\n"


def test_evaluate_warns_about_repaired_ground_truth(tmp_path, capsys):
    root = tmp_path / "voc"
    examples = _voc_copy_of_shapes(root, count=2)
    broken = _annotation_files(root)[0]
    text = broken.read_text()
    broken.write_text(text[:text.index("<xmax>") + len("<xmax>")] + "100000" + text[text.index("</xmax>"):])
    detections = tmp_path / "results.json"
    detections.write_text(json.dumps(_results_from_ground_truth(examples)))
    code, out, err = run(["evaluate", "--detections", str(detections), "--data", f"voc:{root}", "--split", "val"],
                         capsys)
    assert code == 0, err
    assert "warning: 1 ground-truth problems" in err and "AP50" in out


def test_inspect_text_names_each_problem_with_its_detail(tmp_path, capsys):
    root = tmp_path / "voc"
    _voc_copy_of_shapes(root, count=3)
    bad = _annotation_files(root)[1]
    bad.write_text(bad.read_text().replace("<name>", "<name>unicorn_", 1))
    code, out, _ = run(["inspect", "--data", f"voc:{root}", "--split", "val"], capsys)
    assert code == 0
    assert f"{bad.name} [object 0]: unknown class: name 'unicorn_" in out
    assert "(dropped box)" in out and "problems: 1" in out


def test_evaluate_without_detections_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", "--data", "shapes:2"])
    assert exit_info.value.code == 2
    assert "--detections" in capsys.readouterr().err


def test_evaluate_on_a_coco_folder_with_its_own_category_ids(tmp_path, capsys):
    """A user's COCO folder: non-contiguous category ids, integer image ids, results in those ids."""
    import tfzoo.data
    from tfzoo.data import coco

    examples = list(tfzoo.data.load("shapes:4", "val").as_numpy_iterator())
    category_ids = [1, 3, 17, 44, 90]
    image_ids = coco.write(examples, tmp_path / "coco", "val2017", tfzoo.data.class_names("shapes"),
                           category_ids=category_ids)
    results = _results_from_ground_truth(examples)
    stem_to_id = {ex["image_id"].decode(): int(i) for ex, i in zip(examples, image_ids)}
    for entry in results:
        entry["image_id"] = stem_to_id[entry["image_id"]]
        entry["category_id"] = category_ids[entry["category_id"] - 1]
    detections = tmp_path / "results.json"
    detections.write_text(json.dumps(results))
    out_json = tmp_path / "metrics.json"
    code, _, err = run(["evaluate", "--detections", str(detections), "--data", f"coco:{tmp_path / 'coco'}",
                        "--split", "val", "--json", str(out_json)], capsys)
    assert code == 0, err
    metrics = json.loads(out_json.read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["voc12_mAP"] == pytest.approx(1.0)


def test_evaluate_empty_results_scores_zero_with_a_warning(tmp_path, capsys):
    root = tmp_path / "voc"
    _voc_copy_of_shapes(root, count=2)
    detections = tmp_path / "results.json"
    detections.write_text("[]")
    out_json = tmp_path / "metrics.json"
    code, _, err = run(["evaluate", "--detections", str(detections), "--data", f"voc:{root}", "--split", "val",
                        "--json", str(out_json)], capsys)
    assert code == 0, err
    assert "tfzoo: warning: no detections to evaluate" in err and "UserWarning" not in err
    metrics = json.loads(out_json.read_text())
    assert metrics["AP50"] == 0.0 and metrics["voc07_mAP"] == 0.0


def test_inspect_counts_normal_conversions(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "voc"
    _voc_copy_of_shapes(root, count=2)
    jpeg = sorted(root.rglob("JPEGImages/*.jpg"))[0]
    Image.open(jpeg).convert("L").save(jpeg, quality=95)  # a grayscale JPEG becomes RGB when read
    code, out, _ = run(["inspect", "--data", f"voc:{root}", "--split", "val", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["problems"] == [] and result["images"] == 2
    assert any("L to RGB" in line for line in result["conversions"]), result["conversions"]
