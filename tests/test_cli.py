"""The `tfzoo` command as a user runs it: help, list, inspect, evaluate, predict, export, train, and its errors."""
import json
import re
import os
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
    assert "horizontal flips: no class looks like another one mirrored" in out


@pytest.mark.parametrize("argv, message", [
    (["inspect", "--data", "nonsense:x"], "--data: unknown dataset spec 'nonsense:x'"),
    (["evaluate", "--detections", "r.json", "--data", "voc"], "--data: unknown dataset spec 'voc'"),
    (["train", "nosuch", "--data", "shapes"],
     "unknown model 'nosuch'; known models: fast_rcnn, fast_rcnn_mobile, faster_rcnn"),
    (["train", "retinanet_mobile", "--data", "shapes", "--set", "nosuch=1"], "--set: unknown config field(s) nosuch"),
    (["train", "retinanet_mobile", "--data", "shapes", "--set", "flip=maybe"], "'flip' takes true/false"),
    (["train", "retinanet_mobile", "--data", "shapes", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["inspect", "--data", "shapes", "--limit", "0"], "--limit must be >= 1"),
    (["list", "nosuch"], "unknown model 'nosuch'"),
])
def test_usage_errors_exit_2_before_any_work(argv, message, capsys):
    """A malformed argument is a usage error (exit 2) whatever the flag, like argparse's own;
    failures found while working exit 1."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and message in err and "Traceback" not in err


def test_failures_while_working_are_one_line_errors(tmp_path, capsys):
    code, out, err = run(["inspect", "--data", f"voc:{tmp_path / 'missing'}"], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("tfzoo: error:") and "missing" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    from tfzoo.data.validate import DataError

    with pytest.raises(DataError):
        cli.main(["--debug", "inspect", "--data", f"voc:{tmp_path / 'missing'}"])


def test_list_shows_the_zoo_table_and_a_presets_settings(capsys):
    code, out, _ = run(["list"], capsys)
    assert code == 0
    assert re.search(r"retinanet_mobile\s+RetinaNet\s+one-stage\s+320\s+resnet10\s+yes", out)
    assert re.search(r"retinanet\s+RetinaNet\s+one-stage\s+640\s+resnet50\s*$", out, re.M)
    code, out, _ = run(["list", "retinanet_mobile"], capsys)
    assert code == 0 and out.startswith("retinanet_mobile: RetinaNet (one-stage), input 320 px")
    assert re.search(r"^  learning_rate\s+0.002  \(float\)$", out, re.M)
    assert re.search(r"^  backbone_weights\s+null  \(str \| None\)$", out, re.M)
    assert re.search(r"^  aspect_ratios\s+\[0.5, 1.0, 2.0\]", out, re.M)
    from tfzoo.models import MODELS

    import dataclasses
    assert len([l for l in out.splitlines() if l.startswith("  ")]) == len(
        dataclasses.fields(MODELS["retinanet_mobile"].config))  # every --set key


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
    num_gt = sum(v["num_gt"] for v in metrics["per_class"].values())
    assert out.splitlines()[0] == f"detections {detections} on voc:{root} [val]: {num_gt} objects"  # the header
    assert re.search(r"num_gt \d+(\s|$)", out) and "num_gt 1.0000" not in out  # counts as integers
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
    monkeypatch.setattr(tfzoo.data, "class_names", lambda spec, split=None: ["a"])
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
    assert f"voc:{root} [val]: 1 data problems were repaired or skipped (scored without them)" in err
    assert f"{broken} [object 0]: box partly outside image" in err and "AP50" in out


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


# --- model commands: train (parsing), evaluate MODEL_PATH, predict, export ---------------


@pytest.fixture(scope="module")
def model_artifacts(tmp_path_factory):
    """``artifact(kind)`` -> path of the tiny detector's artifacts (shared with tests/export)."""
    from tests.export import helpers

    base = tmp_path_factory.mktemp("cli_artifacts")
    return lambda kind: helpers.artifact(kind, base)


def test_help_lists_the_model_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("predict", "export", "train"):
        assert command in out


def _fake_train(monkeypatch, result=None, error=None):
    import types

    import tfzoo.train

    calls = []

    def train(model, data, **kwargs):
        calls.append((model, data, kwargs))
        if error:
            raise error
        return result or types.SimpleNamespace(out_dir="runs/x", metrics={"AP": 0.5, "AP50": 0.75}, stopped=None)

    monkeypatch.setattr(tfzoo.train, "train", train)
    return calls


def test_train_passes_every_option_to_tfzoo_train(monkeypatch, capsys):
    calls = _fake_train(monkeypatch)
    code, out, err = run(["train", "retinanet_mobile", "--data", "shapes:16", "--split", "train", "--val-split", "test",
                          "--image-size", "64", "--batch-size", "4", "--minutes", "2.5", "--out", "runs/x", "--resume",
                          "--overwrite", "--set", "head_convs=1", "--set", "learning_rate=0.01", "--strategy", "mirrored",
                          "--mixed-precision", "--eval-every-epoch", "--cache", "--seed", "7",
                          "--checkpoint-minutes", "2", "--strict"], capsys)
    assert code == 0, err
    assert calls == [("retinanet_mobile", "shapes:16", dict(
        split="train", val_split="test", image_size=64, batch_size=4, epochs=None, minutes=2.5, out="runs/x",
        resume=True, overwrite=True, settings=["head_convs=1", "learning_rate=0.01"], strategy="mirrored",
        mixed_precision=True, eval_every_epoch=True, seed=7, cache=True, checkpoint_minutes=2.0, strict=True))]
    assert "runs/x" in out and "AP 0.5000" in out and "AP50 0.7500" in out


def test_train_defaults_leave_the_recipe_to_the_config(monkeypatch, capsys):
    import types

    calls = _fake_train(monkeypatch, types.SimpleNamespace(out_dir="runs/y", metrics=None, stopped="time budget"))
    code, out, err = run(["train", "retinanet_mobile", "--data", "shapes"], capsys)
    assert code == 0
    (_, _, kwargs), = calls
    assert kwargs == dict(split="train", val_split="val", image_size=None, batch_size=None, epochs=None, minutes=None,
                          out=None, resume=False, overwrite=False, settings=[], strategy="default",
                          mixed_precision=False, eval_every_epoch=False, seed=0, cache=False,
                          checkpoint_minutes=10.0, strict=False)
    assert "runs/y" in out and "warning: training stopped early: time budget" in err


def test_train_epochs_and_minutes_exclude_each_other(monkeypatch, capsys):
    calls = _fake_train(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "retinanet_mobile", "--data", "shapes", "--epochs", "2", "--minutes", "5"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "retinanet_mobile", "--data", "shapes", "--strategy", "tpu"])
    assert exit_info.value.code == 2 and calls == []


def test_train_errors_are_one_line(monkeypatch, capsys):
    _fake_train(monkeypatch, error=ValueError("shapes:16 [train] has 3 examples, fewer than batch_size 16"))
    code, out, err = run(["train", "retinanet_mobile", "--data", "shapes"], capsys)
    assert code == 1 and err == "tfzoo: error: shapes:16 [train] has 3 examples, fewer than batch_size 16\n"


def test_autograph_errors_show_the_original_exception(monkeypatch, capsys):
    """An exception raised while a tf.function traces reaches the user as AutoGraph's
    "in user code:" message; the CLI prints the original exception's line instead."""
    import tensorflow as tf

    @tf.function
    def step(x):
        if x.shape[-1] != 4:
            raise ValueError(f"boxes must have 4 coordinates, got {x.shape[-1]}")
        return x

    try:
        step(tf.zeros([2, 3]))
    except ValueError as traced:
        error = traced
    assert str(error).startswith("in user code:")  # what AutoGraph makes of it
    _fake_train(monkeypatch, error=error)
    code, out, err = run(["train", "retinanet_mobile", "--data", "shapes"], capsys)
    assert code == 1 and err == "tfzoo: error: ValueError: boxes must have 4 coordinates, got 3\n"


def test_evaluate_a_model_file(model_artifacts, tmp_path, capsys, monkeypatch):
    from tfzoo.eval import RESULT_KEYS

    out_json = tmp_path / "metrics.json"
    code, out, err = run(["evaluate", model_artifacts("keras"), "--data", "shapes:3", "--split", "val",
                          "--batch-size", "2", "--json", str(out_json)], capsys)
    assert code == 0, err
    metrics = json.loads(out_json.read_text())
    assert set(RESULT_KEYS) <= set(metrics) and 0.0 <= metrics["AP"] <= 1.0
    assert "AP50" in out and "voc07_mAP" in out
    # --frozen: the weights read once into constants (the frozen function runs), the same scores
    from tfzoo.export import frozen as frozen_module

    frozen_json, calls = tmp_path / "frozen.json", []
    real = frozen_module.freeze_detect

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(frozen_module, "freeze_detect", counted)
    code, _, err = run(["evaluate", model_artifacts("keras"), "--data", "shapes:3", "--split", "val",
                        "--batch-size", "2", "--frozen", "--json", str(frozen_json)], capsys)
    assert code == 0, err
    assert calls == [1]  # frozen once, at the first batch
    frozen = json.loads(frozen_json.read_text())
    scalars = [k for k in RESULT_KEYS if k != "per_class"]
    assert {k: frozen[k] for k in scalars} == pytest.approx({k: metrics[k] for k in scalars}, abs=1e-4)


def test_evaluate_refuses_an_untrusted_saved_model_and_both_sources(model_artifacts, capsys):
    path = model_artifacts("saved_model")
    code, out, err = run(["evaluate", path, "--data", "shapes:2"], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert path in err and "--trust-model" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", path, "--detections", "r.json", "--data", "shapes:2"])
    assert exit_info.value.code == 2 and "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", "--detections", "r.json", "--data", "shapes:2", "--frozen"])
    assert exit_info.value.code == 2 and "--frozen applies to a MODEL_PATH" in capsys.readouterr().err


def test_evaluate_refuses_a_model_with_other_classes(model_artifacts, monkeypatch, capsys):
    import tfzoo.data

    monkeypatch.setattr(tfzoo.data, "class_names", lambda spec, split=None: ["cat", "dog", "bird", "fish", "frog"])
    code, _, err = run(["evaluate", model_artifacts("keras"), "--data", "shapes:2"], capsys)
    assert code == 1 and "differ from the classes of shapes:2" in err and "circle" in err


def _expected_pixel_detections(detector, image, min_score):
    """Keras detections of ``image`` by the evaluation pipeline's letterbox, in original pixels."""
    import tensorflow as tf

    from tfzoo.data import augment as aug

    example = aug.resize_and_pad({"image": tf.constant(image), "boxes": tf.zeros([0, 4])}, detector.image_size)
    out = detector.predict_on_batch(example["image"][None])
    info = example["image_info"].numpy()
    count = int(out["num_detections"][0])
    scale = np.tile(info[2], 2)  # input pixels per original pixel, [y, x, y, x]
    boxes_px = out["detection_boxes"][0, :count] * np.tile(info[1], 2) / scale
    boxes_px = np.minimum(boxes_px, np.tile(info[0], 2))
    keep = (out["detection_scores"][0, :count] >= min_score) & (boxes_px[:, 2] > boxes_px[:, 0]) & (
        boxes_px[:, 3] > boxes_px[:, 1])  # boxes wholly in the letterbox padding have no extent
    return boxes_px[keep], out["detection_classes"][0, :count][keep], out["detection_scores"][0, :count][keep]


def test_predict_draws_and_writes_detections_in_original_pixels(model_artifacts, tmp_path, capsys):
    from PIL import Image

    from tests.export import helpers
    from tfzoo.export import compare_detections

    images = helpers.sample_images(2).astype(np.uint8)
    first = np.asarray(Image.fromarray(images[0]).resize((150, 90)))  # 90 x 150: letterboxed, padded
    Image.fromarray(first).save(tmp_path / "first.png")
    Image.fromarray(images[1]).save(tmp_path / "second.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out_dir = tmp_path / "out"
    threshold = helpers.SCORE_THRESHOLD + 0.01
    code, out, err = run(["predict", model_artifacts("keras"), str(tmp_path / "first.png"), str(tmp_path / "broken.jpg"),
                          str(tmp_path / "second.png"), "--out", str(out_dir), "--score-threshold", str(threshold)],
                         capsys)
    assert code == 1  # one image failed; the others were still done
    assert "broken.jpg" in err and err.strip().splitlines()[-1].startswith("tfzoo: error: 1 of 3 images")
    assert sorted(os.listdir(out_dir)) == ["detections.json", "first.png", "second.png"]
    with Image.open(out_dir / "first.png") as drawn:
        assert drawn.size == (150, 90)
        assert not np.array_equal(np.asarray(drawn.convert("RGB")), first)  # boxes were drawn
    result = json.loads((out_dir / "detections.json").read_text())
    assert [e["file"] for e in result["failed"]] == [str(tmp_path / "broken.jpg")]
    entry = result["images"][0]
    assert (entry["file"], entry["height"], entry["width"]) == (str(tmp_path / "first.png"), 90, 150)
    rows = entry["detections"]
    assert rows and all(r["score"] >= threshold and r["class"] == helpers.CLASS_NAMES[r["class_id"]] for r in rows)
    for r in rows:
        y1, x1, y2, x2 = r["box_yxyx_px"]
        assert r["bbox_xywh_px"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.02)
        assert 0 <= x1 <= x2 <= 150 and 0 <= y1 <= y2 <= 90
    boxes_px, classes, scores = _expected_pixel_detections(helpers.detector(), first, threshold)
    size = np.array([90, 150, 90, 150], np.float32)

    def as_detections(boxes, cls, sc):
        n = len(sc)
        return {"detection_boxes": (np.asarray(boxes, np.float32).reshape(-1, 4) / size)[None],
                "detection_scores": np.asarray(sc, np.float32)[None], "detection_classes": np.asarray(cls)[None],
                "num_detections": np.array([n])}

    got = as_detections([r["box_yxyx_px"] for r in rows], [r["class_id"] for r in rows], [r["score"] for r in rows])
    report = compare_detections(as_detections(boxes_px, classes, scores), got, iou=0.99)
    assert report["agree"] and report["matched"] == len(rows), report


def test_predict_on_a_folder_runs_on_its_images(model_artifacts, tmp_path, capsys, monkeypatch):
    """A folder stands for its images (sorted, not subfolders, other files left out), also
    with ``--frozen``; one without images is a one-line error naming it, before the model loads."""
    from PIL import Image

    from tests.export import helpers

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    images = helpers.sample_images(2).astype(np.uint8)
    Image.fromarray(images[0]).save(folder / "b.JPG")
    Image.fromarray(images[1]).save(folder / "a.png")
    Image.fromarray(images[1]).save(folder / "sub" / "c.png")
    (folder / "notes.txt").write_text("not an image")
    out_dir = tmp_path / "out"
    code, out, err = run(["predict", model_artifacts("keras"), str(folder), "--out", str(out_dir)], capsys)
    assert code == 0, err
    result = json.loads((out_dir / "detections.json").read_text())
    assert [e["file"] for e in result["images"]] == [str(folder / "a.png"), str(folder / "b.JPG")]
    assert sorted(os.listdir(out_dir)) == ["a.png", "b.png", "detections.json"]
    # --frozen: one frozen function for both images, the same detections
    from tfzoo.export import frozen as frozen_module

    calls, real = [], frozen_module.freeze_detect

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(frozen_module, "freeze_detect", counted)
    code, out, err = run(["predict", model_artifacts("keras"), str(folder), "--frozen", "--out",
                          str(tmp_path / "frozen")], capsys)
    assert code == 0, err
    assert calls == [1]
    frozen = json.loads((tmp_path / "frozen" / "detections.json").read_text())
    assert sum(len(entry["detections"]) for entry in result["images"]) > 0
    for plain_entry, frozen_entry in zip(result["images"], frozen["images"], strict=True):
        assert plain_entry["file"] == frozen_entry["file"]
        plain_rows, frozen_rows = plain_entry["detections"], frozen_entry["detections"]
        assert [r["class_id"] for r in frozen_rows] == [r["class_id"] for r in plain_rows]
        assert [r["score"] for r in frozen_rows] == pytest.approx([r["score"] for r in plain_rows], abs=1e-4)
        np.testing.assert_allclose([r["box_yxyx_px"] for r in frozen_rows], [r["box_yxyx_px"] for r in plain_rows],
                                   atol=0.05)
    (tmp_path / "empty").mkdir()
    code, out, err = run(["predict", model_artifacts("keras"), str(folder), str(tmp_path / "empty"),
                          "--out", str(tmp_path / "out2")], capsys)
    assert code == 1 and "a folder without images" in err and str(tmp_path / "empty") in err and out == ""
    assert not (tmp_path / "out2").exists()


def test_export_int8_tflite_calibrated_on_the_training_split(model_artifacts, tmp_path, capsys):
    from tfzoo.export import load_model, op_names

    target = tmp_path / "model_int8.tflite"
    code, out, err = run(["export", model_artifacts("keras"), "--format", "tflite", "--quantize", "int8",
                          "--data", "shapes:4", "--calibration-images", "4", "--out", str(target)], capsys)
    assert code == 0, err
    assert out.startswith(f"wrote {target} (") and out.strip().endswith("MB)")
    ops = op_names(target.read_bytes())
    assert "NON_MAX_SUPPRESSION_V5" in ops and not [op for op in ops if op.startswith("CUSTOM")]
    assert "QUANTIZE" in ops  # the network runs in int8
    model = load_model(str(target))
    assert model.quantize == "int8"
    from tests.export import helpers

    outputs = model.detect(helpers.sample_images(1))
    assert sorted(outputs) == ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]
    assert all(np.all(np.isfinite(v)) for v in outputs.values())
    assert outputs["detection_boxes"].shape == (1, 100, 4) and outputs["detection_classes"].dtype == np.int32
    assert sorted(os.listdir(tmp_path)) == ["model_int8.tflite"]


@pytest.mark.parametrize("argv,message", [
    (["--format", "tflite", "--quantize", "int8", "--out", "m.tflite"], "int8 needs --data"),
    (["--format", "saved_model", "--quantize", "float16", "--out", "sm"], "--format tflite only"),
    (["--format", "tflite", "--out", "model.bin"], "must end with .tflite"),
    (["--format", "onnx", "--out", "m.onnx"], "invalid choice"),
])
def test_export_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "some.keras"] + argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_export_needs_a_keras_model(model_artifacts, tmp_path, capsys):
    path = model_artifacts("tflite")
    code, out, err = run(["export", path, "--format", "tflite", "--out", str(tmp_path / "again.tflite")], capsys)
    assert code == 1 and "needs a Keras model" in err and path in err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # traces a train step (tens of seconds on 2 CPU cores); still part of the default run
def test_train_then_predict_evaluate_and_export_from_the_run_directory(tmp_path, capsys):
    from PIL import Image

    import tfzoo.data

    run_dir = tmp_path / "run"
    tiny = ["backbone_alpha=0.35", "fpn_channels=16", "head_channels=16", "head_convs=1", "backbone_weights=null"]
    code, out, err = run(["train", "retinanet_mobile", "--data", "shapes:8", "--image-size", "64", "--batch-size", "4",
                          "--epochs", "1", "--out", str(run_dir), "--no-flip"] + [a for s in tiny for a in ("--set", s)],
                         capsys)
    assert code == 0, err
    assert f"training directory: {run_dir}" in out and "AP50" in out
    assert {"config.json", "model.keras", "state.json", "metrics.json", "training.png"} <= set(os.listdir(run_dir))
    assert json.loads((run_dir / "config.json").read_text())["flip"] is False  # --no-flip
    assert "augment scale_jitter without horizontal flips" in err
    # The diagnostics: the verdict on train-sample vs val AP50, a per-class table, the confused pairs.
    assert "train-sample AP50" in err and "val AP50  train AP50" in err
    assert "confused" in err

    metrics_json = tmp_path / "metrics.json"
    code, _, err = run(["evaluate", str(run_dir), "--data", "shapes:8", "--split", "val", "--json", str(metrics_json)],
                       capsys)
    assert code == 0, err
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads(metrics_json.read_text())["AP"] == pytest.approx(trained["AP"], abs=1e-6)

    image = next(tfzoo.data.load("shapes:1", "val").as_numpy_iterator())["image"]
    Image.fromarray(image).save(tmp_path / "shape.png")
    code, _, err = run(["predict", str(run_dir), str(tmp_path / "shape.png"), "--out", str(tmp_path / "pred")], capsys)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "pred")) == ["detections.json", "shape.png"]

    tflite = tmp_path / "model.tflite"
    code, out, err = run(["export", str(run_dir), "--format", "tflite", "--out", str(tflite)], capsys)
    assert code == 0 and tflite.exists(), err
    code, _, err = run(["evaluate", str(tflite), "--data", "shapes:8", "--split", "val", "--json", str(metrics_json)],
                       capsys)
    assert code == 0, err
    assert abs(json.loads(metrics_json.read_text())["AP"] - trained["AP"]) <= 0.005


def test_evaluate_and_export_at_another_image_size(model_artifacts, tmp_path, capsys):
    from tfzoo.export import load_model

    code, out, err = run(["evaluate", model_artifacts("keras"), "--data", "shapes:3", "--split", "val",
                          "--image-size", "96", "--json", str(tmp_path / "m.json")], capsys)
    assert code == 0, err
    assert 0.0 <= json.loads((tmp_path / "m.json").read_text())["AP"] <= 1.0
    target = tmp_path / "served96.tflite"
    code, out, err = run(["export", model_artifacts("keras"), "--format", "tflite", "--image-size", "96",
                          "--out", str(target)], capsys)
    assert code == 0, err
    model = load_model(str(target))
    assert model.image_size == (96, 96) and model.config["image_size"] == 96
    # An export's input size is fixed: --image-size is refused with the file named.
    code, out, err = run(["evaluate", str(target), "--data", "shapes:2", "--image-size", "128"], capsys)
    assert code == 1 and str(target) in err and "fixed input size 96x96" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", model_artifacts("keras"), "--data", "shapes:2", "--image-size", "16"])
    assert exit_info.value.code == 2 and "--image-size must be >= 32" in capsys.readouterr().err


@pytest.mark.parametrize("model, positive", [("retinanet_mobile", 0.5), ("faster_rcnn_mobile", 0.7),
                                             ("fast_rcnn_mobile", 0.5)])
def test_inspect_model_coverage_against_the_presets_matcher(model, positive, capsys):
    """``inspect --model``: each box's best IoU with the preset's anchors (the RPN's for
    Faster R-CNN) or its own proposals, against a slow reference, counted against the
    matcher's positive threshold and binned."""
    import tfzoo
    import tfzoo.data
    from tfzoo import proposals
    from tfzoo.models import MODELS
    from tests.reference import pairwise_iou

    code, out, err = run(["inspect", "--data", "shapes:4", "--split", "val", "--model", model, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)["model"]
    coverage = result["coverage" if model == "fast_rcnn_mobile" else "anchors"]
    examples = list(tfzoo.data.load("shapes:4", "val").as_numpy_iterator())
    if model == "fast_rcnn_mobile":
        config = MODELS[model].config
        attached, _ = proposals.for_config(tfzoo.data.load("shapes:4", "val"), config, progress=False)
        candidates = [e["proposals"][:config.max_proposals] for e in attached.as_numpy_iterator()]
        boxes = [e["boxes"] for e in examples]
    else:  # letterboxed onto the square input, as the encoders place them
        anchors = np.asarray(tfzoo.build_model(model, backbone_weights=None).anchors)
        candidates = [anchors] * len(examples)
        boxes = []
        for e in examples:
            height, width = e["image"].shape[:2]
            boxes.append(e["boxes"] * np.array([height, width, height, width]) / max(height, width))
    best = np.concatenate([pairwise_iou(b, c).max(axis=1) for b, c in zip(boxes, candidates)])
    assert coverage["positive_iou"] == positive and coverage["boxes"] == len(best) > 0
    assert coverage["boxes_below_positive"] == int((best < positive - 1e-6).sum())
    assert coverage["best_iou_median"] == pytest.approx(np.median(best), abs=1e-3)
    assert [row["boxes"] for row in coverage["best_iou_histogram"]] == list(
        np.histogram(best, bins=np.linspace(0, 1, 11))[0])
    code, out, _ = run(["inspect", "--data", "shapes:4", "--split", "val", "--model", model], capsys)
    assert code == 0 and f"of {len(best)} boxes" in out and f"positive IoU (positive at IoU >= {positive}" in out
