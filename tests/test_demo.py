"""The demo's steps end to end on a tiny model (the real run is the README's first command)."""
import json
import os

import pytest

import tfzoo.demo
from tfzoo.models import MODELS
from tfzoo import cli

TINY = ("image_size=64", "backbone_alpha=0.35", "fpn_channels=16", "head_channels=16", "head_convs=1",
        "batch_size=4", "score_threshold=0.0")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo"))
    # "mixed" (bfloat16 FPN and heads), what "auto" picks on an AMX CPU: its exports must be float32.
    summary = tfzoo.demo.run(out=out, epochs=1, data="shapes:8", settings=TINY, num_images=2,
                             latency_repeats=2, verbose=0, precision="mixed", serve_size=96)
    return out, summary


def test_demo_writes_every_artifact(demo_run):
    out, summary = demo_run
    for name in ("metrics.json", "summary.json", "model.keras", "model.tflite", "saved_model/saved_model.pb",
                 "train/model.keras", "train/config.json"):
        assert os.path.exists(os.path.join(out, name)), name
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert {"AP", "AP50", "per_class"} <= set(metrics)
    assert len(summary["predictions"]) == 2 and all(p.endswith(".png") and os.path.exists(p)
                                                   for p in summary["predictions"])


def test_demo_trains_mixed_and_ships_float32(demo_run):
    out, summary = demo_run
    assert summary["precision"].endswith("after the backbone, float32 backbone")
    assert "backbone_dtype=float32" in summary["settings"]
    state = json.load(open(os.path.join(out, "train", "state.json")))
    assert state["precision"] in ("mixed_bfloat16", "mixed_float16")
    # Exported from the float32 copy that was also evaluated: the same AP.
    assert abs(summary["formats"]["saved_model"]["delta_AP_points"]) < 0.01
    text = tfzoo.demo.format_summary(summary)
    assert "after the backbone" in text


def test_demo_serves_at_its_serve_size(demo_run):
    """Trained at 64 (the tiny settings), evaluated and shipped at serve_size 96 in every format."""
    import keras

    from tfzoo.export import load_model

    out, summary = demo_run
    assert (summary["train_image_size"], summary["image_size"]) == (64, 96)
    assert json.load(open(os.path.join(out, "train", "config.json")))["image_size"] == 64
    served = keras.saving.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    assert served.image_size == (96, 96)
    for path in (os.path.join(out, "model.tflite"), os.path.join(out, "saved_model")):
        assert load_model(path, trust_model=True).image_size == (96, 96)
    assert summary["formats"]["keras"]["path"] == os.path.join(out, "model.keras")
    assert "trained at 64 px, serves at 96 px" in tfzoo.demo.format_summary(summary)
    stages = summary["stage_seconds"]
    assert list(stages) == ["train", "export", "evaluate", "latency", "draw"] and min(stages.values()) >= 0
    assert sum(stages.values()) <= summary["total_seconds"] + 0.5
    # Raw outputs compared on the first 2 batches (all 8 val images here); the demo's TFLite
    # file has no raw_outputs signature, so its raw check is left to its detections.
    entry = summary["formats"]["saved_model"]
    assert entry["raw_images"] == 8 and entry["raw_max_abs_diff"] < 1e-3
    assert summary["formats"]["tflite"]["raw_images"] == 0


def test_demo_precision_choice(monkeypatch):
    from tfzoo import train as train_lib

    assert tfzoo.demo.resolve_precision("float32") == "float32"
    assert tfzoo.demo.resolve_precision("mixed") == "mixed"
    with pytest.raises(ValueError, match="precision must be one of"):
        tfzoo.demo.resolve_precision("bfloat16")
    monkeypatch.setattr(train_lib, "cpu_has_amx", lambda: False)
    assert tfzoo.demo.resolve_precision("auto") == "float32"
    monkeypatch.setattr(train_lib, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(tfzoo.demo, "_gpus", lambda: [])
    assert tfzoo.demo.resolve_precision("auto") == "mixed"
    monkeypatch.setattr(tfzoo.demo, "_gpus", lambda: ["GPU:0"])
    assert tfzoo.demo.resolve_precision("auto") == "float32"


def test_demo_summary_reports_each_format(demo_run):
    _, summary = demo_run
    assert set(summary["formats"]) == {"keras", "saved_model", "tflite"}
    for entry in summary["formats"].values():
        assert entry["size_bytes"] > 0 and entry["latency"]["median_ms"] > 0
        assert 0.0 <= entry["AP50"] <= 1.0
    text = tfzoo.demo.format_summary(summary)
    assert "AP50" in text and "tflite" in text and "saved_model" in text


def test_demo_command_line_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "saved_models/retinanet_shapes" in capsys.readouterr().out


def test_demo_time_limit_stops_training_and_goes_on(tmp_path, monkeypatch):
    """A limit already spent when training starts: it stops after its first step, and the
    demo still evaluates, exports and reports where training stopped."""
    monkeypatch.setattr(tfzoo.demo, "POST_TRAINING_SECONDS", 0.0)
    out = str(tmp_path / "demo")
    summary = tfzoo.demo.run(out=out, epochs=2, data="shapes:8", settings=TINY, num_images=1, latency_repeats=1,
                             verbose=0, precision="float32", serve_size=None, time_limit=1e-4)
    assert summary["steps"] == 1 and summary["epochs"] == 0
    assert summary["planned_steps"] == 4  # 8 images / batch 4 x 2 epochs
    assert "time budget" in summary["stopped"] and "step 1" in summary["stopped"]
    assert summary["time_limit_minutes"] == 1e-4
    state = json.load(open(os.path.join(out, "train", "state.json")))
    assert state["step"] == 1 and not state["finished"]
    for name in ("model.keras", "model.tflite", "saved_model/saved_model.pb", "metrics.json", "summary.json"):
        assert os.path.exists(os.path.join(out, name)), name
    text = tfzoo.demo.format_summary(summary)
    assert "1 of 4 planned steps (0 full epochs)" in text and "training stopped early: time budget" in text


def test_demo_without_time_limit_reports_no_stop(demo_run):
    _, summary = demo_run
    assert summary["stopped"] is None and summary["time_limit_minutes"] is None
    assert summary["steps"] == summary["planned_steps"] == 2
    assert "stopped early" not in tfzoo.demo.format_summary(summary)


def test_demo_time_limit_must_leave_time_after_training(tmp_path):
    with pytest.raises(ValueError, match="time_limit must leave more than"):
        tfzoo.demo.run(out=str(tmp_path), time_limit=0.5, verbose=0)
    assert not os.listdir(tmp_path)  # refused before any work


@pytest.mark.parametrize("argv, expected", [
    ([], tfzoo.demo.DEMO_TIME_LIMIT),           # the default run is limited
    (["--epochs", "3"], None),                   # an explicit schedule is not, unless asked
    (["--minutes", "4"], None),
    (["--epochs", "3", "--time-limit", "20"], 20.0),
    (["--time-limit", "0"], None),               # 0: no limit
])
def test_demo_command_line_time_limit(monkeypatch, argv, expected):
    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(tfzoo.demo, "run", fake_run)
    with pytest.raises(SystemExit):
        cli.main(["demo", *argv])
    assert seen["time_limit"] == expected


@pytest.mark.parametrize("value", ["-1", "0.5"])
def test_demo_command_line_refuses_a_bad_time_limit(monkeypatch, capsys, value):
    monkeypatch.setattr(tfzoo.demo, "run", lambda **kwargs: pytest.fail("ran despite a bad --time-limit"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--time-limit", value])
    assert exit_info.value.code == 2
    assert "--time-limit must" in capsys.readouterr().err


def test_demo_takes_any_cpu_preset_from_one_table(monkeypatch, capsys):
    """--model: a CPU preset, with its row of DEMOS or the defaults (its own recipe, output
    folder from its name); another preset is a usage error naming the CPU presets."""
    recipe = tfzoo.demo.demo_recipe("retinanet_mobile")
    assert recipe.out == "saved_models/retinanet_shapes" and recipe.serve_size == 320 and recipe.epochs == 7
    monkeypatch.setattr(tfzoo.demo, "DEMOS", {})
    bare = tfzoo.demo.demo_recipe("retinanet_mobile")
    assert bare.out == "saved_models/retinanet_mobile_shapes" and bare.settings == () and bare.serve_size is None
    assert tfzoo.demo.demo_recipe("ssd_mobile").out == "saved_models/ssd_mobile_shapes"
    cpu = ", ".join(sorted(name for name, preset in MODELS.items() if preset.cpu))
    assert cpu == ("fast_rcnn_mobile, faster_rcnn_fpn_mobile, faster_rcnn_mobile, rcnn_mobile, retinanet_mobile, "
                   "spp_net_mobile, ssd_mobile, yolov1_tiny, yolov2_tiny, yolov3_tiny")
    with pytest.raises(ValueError, match=rf"'retinanet' is not one \(CPU presets: {cpu}\)"):
        tfzoo.demo.demo_recipe("retinanet")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--model", "retinanet_r101"])
    assert exit_info.value.code == 2 and f"CPU presets: {cpu}" in capsys.readouterr().err
