"""tfzoo compare: one run over a trained model and a broken one, resumed; the Pareto front."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tfzoo import compare
from tfzoo.models import yolo


def brute_force_front(points):
    front = []
    for i, (lat, ap) in enumerate(points):
        beaten = any(l2 <= lat and a2 >= ap and (l2 < lat or a2 > ap) for j, (l2, a2) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return front


def test_pareto_front_is_the_points_nothing_beats():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 12):
        for _ in range(20):
            points = [(float(a), float(b)) for a, b in rng.integers(0, 6, (n, 2))]  # ties on purpose
            got = compare.pareto_front(points)
            # duplicates of a front point: the function keeps one of them
            want = brute_force_front(points)
            assert {points[i] for i in got} == {points[i] for i in want}
            assert [points[i][0] for i in got] == sorted(points[i][0] for i in got)
    assert compare.pareto_front([(10.0, 0.5), (5.0, 0.4), (20.0, 0.6), (7.0, 0.3)]) == [1, 0, 2]


def _tiny_settings():
    return [f"{k}={json.dumps(v)}" for k, v in yolo.YOLOv3.tiny.items() if k != "num_classes"] + ["batch_size=4"]


def _voc_folder(root):
    """``shapes:8`` train and ``shapes:4`` val written as a VOC folder: compare on a user's layout."""
    import tfzoo.data
    from tfzoo.data import voc

    names = tfzoo.data.class_names("shapes")
    voc.write(tfzoo.data.load("shapes:8", "train").as_numpy_iterator(), root, "train", names)
    voc.write(tfzoo.data.load("shapes:4", "val").as_numpy_iterator(), root, "val", names)
    return f"voc:{root}"


@pytest.mark.slow
def test_compare_trains_measures_every_format_reports_a_broken_model_and_resumes(tmp_path, capsys):
    out = str(tmp_path / "cmp")
    data = _voc_folder(tmp_path / "voc")
    broken = tmp_path / "broken_run"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a keras archive")
    (broken / "config.json").write_text(json.dumps({"name": "ssd_mobile"}))
    # a run killed before its first checkpoint: a state file and no model; compare starts it again
    os.makedirs(os.path.join(out, "runs", "yolov3_tiny"))
    with open(os.path.join(out, "runs", "yolov3_tiny", "state.json"), "w", encoding="utf-8") as f:
        json.dump({"epoch": 0, "finished": False}, f)
    kwargs = dict(data=data, out=out, epochs=1, formats=("keras", "tflite", "int8"), settings=_tiny_settings(),
                  latency_images=2, latency_repeats=2, calibration_count=4, verbose=0)
    results = compare.run(["yolov3_tiny"], trained=[str(broken)], **kwargs)

    good = results["models"]["yolov3_tiny"]
    assert good["status"] == "done" and good["train"]["epochs"] == 1 and good["train"]["minutes"] > 0
    for fmt in ("keras", "tflite", "int8"):
        measured = good["formats"][fmt]
        assert measured["status"] == "done", measured
        assert 0.0 <= measured["AP"] <= measured["AP50"] <= 1.0
        assert measured["latency_ms"]["samples"] == 4
        assert 0 < measured["latency_ms"]["min"] <= measured["latency_ms"]["median"] <= measured["latency_ms"]["max"]
        assert measured["size_bytes"] == compare.size_bytes(measured["path"]) > 0
        assert measured["peak_memory_mib"] > 50  # TensorFlow alone takes more
    assert good["formats"]["int8"]["size_bytes"] < good["formats"]["tflite"]["size_bytes"]
    bad = results["models"]["ssd_mobile"]  # the preset names the row
    assert bad["status"] == "failed" and "no format could be measured" in bad["error"]

    table = open(os.path.join(out, compare.TABLE_FILE), encoding="utf-8").read()
    for title in ("Keras", "TFLite fp32", "TFLite int8"):
        assert f"| yolov3_tiny | {title} |" in table
    assert "Not measured:" in table and "ssd_mobile" in table
    with open(os.path.join(out, compare.PLOT_FILE), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.load(open(os.path.join(out, compare.RESULTS_FILE), encoding="utf-8"))
    assert saved["models"]["yolov3_tiny"]["formats"]["keras"] == good["formats"]["keras"]

    # Resumed: the finished model is neither trained nor measured again; the broken one is retried.
    state = os.path.join(out, "runs", "yolov3_tiny", "state.json")
    stamp = os.path.getmtime(state)
    again = compare.run(["yolov3_tiny"], trained=[str(broken)], **kwargs)
    assert os.path.getmtime(state) == stamp
    assert again["models"]["yolov3_tiny"]["formats"] == good["formats"]
    assert sum(r["status"] == "failed" for r in again["models"].values()) == 1
    sessions = again["sessions"]  # each invocation's time, summed
    assert len(sessions) == 2 and again["seconds"] == pytest.approx(sum(s["seconds"] for s in sessions), abs=0.2)
    assert sessions[0]["seconds"] == results["seconds"] > 0

    # Other weights in the run folder (retrained, say): measured anew; here Keras alone.
    model_file = os.path.join(out, "runs", "yolov3_tiny", "model.keras")
    os.utime(model_file, (stamp + 100, os.path.getmtime(model_file) + 100))
    third = compare.run(["yolov3_tiny"], **{**kwargs, "formats": ("keras",)})["models"]["yolov3_tiny"]
    assert set(third["formats"]) == {"keras"} and third["formats"]["keras"]["status"] == "done"
    assert third["model"]["mtime"] == os.path.getmtime(model_file)
    assert not os.path.exists(good["formats"]["int8"]["path"])  # the old exports are gone

    # Another dataset or budget in the same folder is refused, naming the difference.
    with pytest.raises(compare.CompareError, match="other settings.*data"):
        compare.run(["yolov3_tiny"], **{**kwargs, "data": "shapes:8"})
    with pytest.raises(compare.CompareError, match="epochs 1 there, 2 now"):
        compare.run(["yolov3_tiny"], **{**kwargs, "epochs": 2})


def test_compare_refuses_bad_arguments(tmp_path):
    with pytest.raises(compare.CompareError, match="unknown model"):
        compare.run(["no_such_model"], out=str(tmp_path / "a"), epochs=1, verbose=0)
    with pytest.raises(compare.CompareError, match="unknown format"):
        compare.run(["yolov3_tiny"], out=str(tmp_path / "b"), epochs=1, formats=("onnx",), verbose=0)
    with pytest.raises(compare.CompareError, match="--minutes"):
        compare.run(["yolov3_tiny"], out=str(tmp_path / "c"), verbose=0)
    with pytest.raises(compare.CompareError, match="not a training directory"):
        compare.run(trained=[str(tmp_path)], out=str(tmp_path / "d"), verbose=0)
    with pytest.raises(compare.CompareError, match="at least one model"):
        compare.run(out=str(tmp_path / "e"), verbose=0)


def test_rows_are_named_by_preset_and_numbered_when_a_preset_repeats(tmp_path):
    runs = []
    for name in ("a", "b", "c"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "model.keras").write_bytes(b"x")
        (run_dir / "config.json").write_text(json.dumps({"name": "ssd_mobile" if name != "c" else "yolov3_tiny"}))
        runs.append(str(run_dir))
    entries = compare.entries(["yolov3_tiny"], runs, str(tmp_path / "out"))
    assert [e.key for e in entries] == ["yolov3_tiny", "ssd_mobile", "ssd_mobile-2", "yolov3_tiny-2"]
    assert [e.train for e in entries] == [True, False, False, False]
    with pytest.raises(compare.CompareError, match="given twice"):
        compare.entries([], [runs[0], runs[0]], str(tmp_path / "out"))
    with pytest.raises(compare.CompareError, match="given twice"):
        compare.entries(["ssd_mobile", "ssd_mobile"], [], str(tmp_path / "out"))


def test_compare_command_line_usage_errors(tmp_path, capsys):
    from tfzoo import cli

    for argv, message in ((["compare", "--data", "shapes:4", "--out", str(tmp_path / "a")], "at least one model"),
                          (["compare", "yolov3_tiny", "--data", "shapes:4", "--out", str(tmp_path / "b"),
                            "--minutes", "1", "--epochs", "1"], "not both"),
                          (["compare", "yolov3_tiny", "--data", "shapes:4", "--out", str(tmp_path / "c"),
                            "--epochs", "1", "--formats", "keras,onnx"], "unknown format")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_a_proposal_based_models_latency_includes_searching_each_image_anew(tmp_path, monkeypatch):
    """The evaluation caches the val images' proposals; the timed calls must not read that
    cache (a served image is new), so every timed call searches its image again."""
    import tfzoo
    from tfzoo import proposals
    from tfzoo.models import fast_rcnn

    detector = tfzoo.build_model("fast_rcnn_mobile", **{**fast_rcnn.FastRCNN.tiny, "num_classes": 5})
    path = str(tmp_path / "model.keras")
    detector.save(path)
    searched = []
    search = proposals.selective_search
    monkeypatch.setattr(proposals, "selective_search", lambda *a, **k: searched.append(1) or search(*a, **k))
    result = compare.measure(path, "shapes:2", "val", latency_images=2, latency_repeats=2, warmup=1)
    timed = 1 + 2 * 2  # the warm-up call and two passes over two images
    assert len(searched) >= timed and result["latency_ms"]["samples"] == 4
    assert 0 < result["latency_ms"]["proposals_median"] <= result["latency_ms"]["median"]
