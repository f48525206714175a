"""Smoke tests of the benchmark scripts: they start, parse their options, and the model
benchmark runs end to end at tiny sizes (peer contenders only where the peer imports)."""
import importlib.util
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
#: Each script and an option its --help must list.
SCRIPTS = {"bench_model.py": "--mobile-model", "bench_pipeline.py": "--repeats", "bench_nms.py": "--repeats",
           "bench_train_step.py": "--repeats", "bench_unseen_voc.py": "--minutes",
           "bench_pipeline_modes.py": "--no-autotune", "bench_train_kernels.py": "--repeats",
           "analyze_detections.py": "--image-size", "standins.py": "--train-images",
           "bench_standins.py": "--label", "probe_classes.py": "agnostic",
           "bench_roi_crops.py": "--rois", "bench_proposals.py": "--size", "bench_svd.py": "--trained-ranks",
           "bench_generations.py": "--rpn-proposals", "bench_rcnn_memory.py": "--formats",
           "bench_multiscale.py": "--rounds", "bench_tflite_runtime.py": "--matmul"}
HAS_KERAS_HUB = importlib.util.find_spec("keras_hub") is not None
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _load(name):
    """Imports ``benchmarks/<name>.py`` without leaving its folder on ``sys.path`` or its
    ``common`` import in ``sys.modules``."""
    saved_path, had_common = list(sys.path), "common" in sys.modules
    try:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name.replace('/', '_')}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
        if not had_common:
            sys.modules.pop("common", None)
    return module


#: Runs each script as ``__main__`` in this one process (one TensorFlow start for all of
#: them, not one per script). Arguments: a JSON list of ``[script, *args]`` and the
#: benchmarks folder; prints a JSON list of ``{"code", "stdout", "stderr"}``.
_AS_MAIN = textwrap.dedent("""
    import contextlib, io, json, os, runpy, sys
    sys.path.insert(0, sys.argv[2])
    import peers  # torch (where installed) before TensorFlow, as the scripts that use it import it
    results = []
    for script, *args in json.loads(sys.argv[1]):
        out, err, code, path = io.StringIO(), io.StringIO(), 0, list(sys.path)
        sys.argv = [script, *args]
        sys.path.insert(0, os.path.dirname(script))  # as Python runs a script
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        finally:
            sys.path[:] = path
        results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    print(json.dumps(results))
""")

#: What ``bench_model.py`` must refuse, each with its message (exit status 2).
BAD_MODEL_OPTIONS = [(("--parts", "latency,speed"), "unknown part(s) speed"),
                     (("--repeats", "0"), "--repeats and --latency-repeats must be >= 1"),
                     (("--model", "yolo9", "--tiny"), "unknown model 'yolo9'"),
                     (("--parts", "latency,frozen"), "--parts frozen runs alone")]


@pytest.fixture(scope="module")
def as_main():
    """Every script's ``--help`` and ``bench_model.py``'s bad options, run in one process."""
    calls = [(str(BENCHMARKS / script), "--help") for script in sorted(SCRIPTS)]
    calls += [(str(BENCHMARKS / "bench_model.py"), *args) for args, _ in BAD_MODEL_OPTIONS]
    proc = subprocess.run([sys.executable, "-c", _AS_MAIN, json.dumps(calls), str(BENCHMARKS)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(zip(calls, json.loads(proc.stdout.strip().splitlines()[-1])))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_help(script, as_main):
    result = as_main[(str(BENCHMARKS / script), "--help")]
    assert result["code"] == 0, result["stderr"]
    assert "usage:" in result["stdout"] and SCRIPTS[script] in result["stdout"]


def test_model_benchmark_rejects_bad_options(as_main):
    for args, message in BAD_MODEL_OPTIONS:
        result = as_main[(str(BENCHMARKS / "bench_model.py"), *args)]
        assert result["code"] == 2, (args, result["stderr"][-2000:])
        assert message in result["stderr"], args


def test_spread_and_interleaving():
    common = _load("common")
    stats = common.spread([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (stats["median"], stats["min"], stats["max"], stats["n"]) == (3.0, 1.0, 100.0, 5)
    assert stats["q1"] == 2.0 and stats["q3"] == 4.0
    assert common.fmt(stats, 1000, 0) == "3000 (1000-100000)"
    calls = []
    runs = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3)
    assert {k: len(v) for k, v in runs.items()} == {"a": 3, "b": 3}
    # warm-up a, b; then rounds in rotated order: ab, ba, ab
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    with pytest.raises(ValueError):
        common.spread([])
    ratios = common.paired_ratios([2.0, 4.0, 9.0], [1.0, 4.0, 3.0])
    assert (ratios["median"], ratios["min"], ratios["max"]) == (2.0, 1.0, 3.0)
    with pytest.raises(ValueError):
        common.paired_ratios([1.0], [1.0, 2.0])


def test_calibrated_class_head_gives_the_asked_number_of_candidates():
    retinanet = _load("peers/retinanet")
    import keras
    import numpy as np

    layer = keras.layers.Dense(6, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3))
    x = np.random.default_rng(0).normal(size=(50, 3)).astype("float32")
    layer(x)
    assert retinanet.candidate_counts(layer(x).numpy()) == (300, 50)  # every score 0.5
    retinanet.calibrate_class_head(layer, lambda: layer(x), candidates=37)
    logits = layer(x).numpy()
    assert abs(logits.std() - retinanet.LOGIT_SPREAD) < 1e-3
    pairs, anchors = retinanet.candidate_counts(logits)
    assert pairs == 37 and 0 < anchors <= 37


def test_softmax_heads_calibrated_to_the_asked_number_of_candidates():
    """SSD's adapter: random softmax heads give every class 1 / (K + 1), above 0.01 for 80
    classes; after calibration exactly the asked (box, class) pairs are above it."""
    ssd = _load("peers/ssd")
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=1e-3, size=(500, 81))  # background at column 80
    assert ssd.softmax_candidates(logits, 80) == (500 * 80, 500)
    state = {"logits": logits.copy()}

    def scale(factor):
        state["logits"] = state["logits"] * factor

    def shift(amount):
        state["logits"][:, 80] += amount

    result = ssd.calibrate_softmax_head(scale, shift, lambda: state["logits"], 80, candidates=123)
    assert abs(state["logits"][:, :80].std() - ssd.LOGIT_SPREAD) < 0.05 and result["background_shift"] > 0
    pairs, boxes = ssd.softmax_candidates(state["logits"], 80)
    assert pairs == 123 and 0 < boxes <= 123
    # the background column is where the caller says: column 0 as in torchvision
    flipped = state["logits"][:, ::-1]
    assert ssd.softmax_candidates(flipped, 0) == (pairs, boxes)


def test_tfzoo_ssd_calibrated_on_an_image():
    import tfzoo
    from tfzoo.models import ssd as ssd_model

    ssd = _load("peers/ssd")
    detector = tfzoo.build_model("ssd300", **ssd_model.SSD.tiny)
    image = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    prepared = ssd.prepare_tfzoo(detector, image, candidates=40)
    assert prepared["candidates"]["pairs"] == 40
    assert int(detector.detect(image)["num_detections"][0]) > 0


def test_tfzoo_faster_rcnn_calibrated_on_its_proposals():
    """Faster R-CNN's adapter counts (proposal, class) pairs over real proposals only, and
    the asked number of them score above 0.05 after calibration."""
    import tfzoo
    from tfzoo.models import faster_rcnn as faster_rcnn_model

    import types

    # The adapter imports peers.ssd: a bare `peers` package (its __init__ imports torch, which
    # must not load after TensorFlow) lets it, and is removed afterwards.
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name == "peers" or name.startswith("peers.")}
    package = types.ModuleType("peers")
    package.__path__ = [str(BENCHMARKS / "peers")]
    sys.modules["peers"] = package
    try:
        adapter = importlib.import_module("peers.faster_rcnn")
    finally:
        for name in [name for name in sys.modules if name == "peers" or name.startswith("peers.")]:
            del sys.modules[name]
        sys.modules.update(saved)
    logits = np.zeros((1, 3, 4))
    proposals = np.array([[[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0], [0.2, 0.3, 0.4, 0.9]]])
    assert adapter.valid_rows(logits, proposals).shape == (2, 4)
    detector = tfzoo.build_model("faster_rcnn_fpn", **{**faster_rcnn_model.FasterRCNN.tiny, **adapter.TFZOO_SETTINGS})
    image = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    prepared = adapter.prepare_tfzoo(detector, image, candidates=9)
    assert prepared["candidates"]["pairs"] == 9 and 0 < prepared["proposals"] <= 16
    assert 0 < int(detector.detect(image)["num_detections"][0]) <= 9


# One family's adapter end to end (about 17 s each); the others' calibration is tested
# in-process below, YOLOv3's runs in test_model_benchmark_tiny_frozen_run (yolov3_tiny).
@pytest.mark.parametrize("model", ["retinanet"])
def test_model_benchmark_tiny_latency_run(tmp_path, model):
    out = tmp_path / "results.json"
    proc = _run(str(BENCHMARKS / "bench_model.py"), "--model", model, "--tiny", "--repeats", "1",
                "--parts", "latency", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    latency = results["parts"]["latency"]
    assert results["env"]["cpus"] >= 1 and results["env"]["tensorflow"]
    assert latency["tfzoo"]["forward_flops"] > 0
    assert latency["tfzoo"]["candidates"]["pairs"] > 0  # NMS saw candidates after calibration
    assert 0 < latency["tfzoo"]["num_detections"] <= 100
    assert latency["stats_s"]["tfzoo detect (tf.function)"]["median"] > 0
    assert "| tfzoo detect (tf.function) |" in proc.stdout
    assert latency["tfzoo"]["model"] == model
    peer = {"retinanet": ("KerasHub", HAS_KERAS_HUB), "ssd300": ("torchvision", HAS_TORCHVISION),
            "faster_rcnn_fpn": ("torchvision", HAS_TORCHVISION)}[model]
    if peer[1]:
        assert latency["peer"]["name"] == peer[0] and latency["peer"]["num_detections"] > 0
        assert latency["peer"]["forward_flops"] > 0
        assert latency["ratio_detect_vs_peer"] > 0 and f"vs {peer[0]}" in proc.stdout
    else:
        assert "peer" not in latency


def test_model_benchmark_tiny_frozen_run(tmp_path):
    """The frozen part: frozen detect and forward here, the variable-weight detect in a child
    process; the same detections both ways (``yolov3_tiny``: the same code as ``yolov3``'s
    figures, a smaller graph to trace twice)."""
    out = tmp_path / "results.json"
    proc = _run(str(BENCHMARKS / "bench_model.py"), "--model", "yolov3_tiny", "--tiny", "--repeats", "1",
                "--parts", "frozen", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    frozen = json.loads(out.read_text())["parts"]["frozen"]
    assert set(frozen["stats_s"]) == {"tfzoo detect, frozen", "tfzoo forward only, frozen", "fp32 matmul 256^2",
                                      "tfzoo detect (tf.function) [child]", "fp32 matmul 256^2 [child]"}
    assert 0 < frozen["num_detections"] == frozen["variable_num_detections"] <= 100
    assert frozen["forward_flops"] > 0 and frozen["freeze_s"] > 0 and frozen["speedup_frozen_detect"] > 0
    assert all(v > 0 for v in frozen["fractions_of_matmul"].values())
    assert "frozen detect is" in proc.stdout and "| tfzoo detect (tf.function) [child] |" in proc.stdout


def test_multiscale_benchmark_tiny_run(tmp_path):
    out = tmp_path / "multiscale.json"
    proc = _run(str(BENCHMARKS / "bench_multiscale.py"), "--tiny", "--images", "32", "--rounds", "1",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sizes"] == [64, 96, 128] and result["single_size"] == 96
    assert result["ratio_multi_to_single"]["median"] > 0 and "cost" in proc.stdout


def test_train_step_tiny_run_prints_every_contender():
    # One backbone (--also-backbone repeats the same contenders on a second one), the preset's
    # ResNet-10: MobileNetV2's deeper graph took twice as long to trace here.
    result = _run("benchmarks/bench_train_step.py", "--image-size", "64", "--batch-size", "2", "--repeats", "1",
                  "--warmup", "1", "--backbone", "resnet10")
    assert result.returncode == 0, result.stderr[-2000:]
    for line in ("model forward+backward", "backbone keras-BN fwd+bwd", "model fwd+bwd, bf16 FPN+heads",
                 "model fwd+bwd, all mixed bf16", "speed-up of the model's forward+backward, bf16 FPN+heads",
                 "resnet10 backbone at 64:"):
        assert line in result.stdout, line


def test_unseen_voc_stand_in_is_a_plain_voc_folder(tmp_path):
    """The section-7 stand-in: resized images in [240, 420] px, VOC XML without tfzoo's
    labels.txt, readable by the VOC reader with the classes found in the annotations."""
    import tfzoo.data

    bench = _load("bench_unseen_voc")
    root = tmp_path / "voc"
    stats = bench.write_dataset(str(root), 4, 2)
    assert (stats["train_images"], stats["val_images"], stats["classes"]) == (4, 2, 5)
    assert not (root / "labels.txt").exists()
    examples = list(tfzoo.data.load(f"voc:{root}", "train").as_numpy_iterator())
    assert len(examples) == 4
    for example in examples:
        assert all(bench.MIN_SIDE <= side <= bench.MAX_SIDE for side in example["image"].shape[:2])
    assert sorted(tfzoo.data.class_names(f"voc:{root}")) == sorted(tfzoo.data.class_names("shapes"))


@pytest.mark.parametrize("name", ["glyphs", "symbols"])
def test_standins_are_reproducible_and_within_their_stated_ranges(name):
    standins = _load("standins")
    photos = standins.Photos(standins.find_photos())
    fonts = standins.Fonts() if name == "glyphs" else None
    sides, counts, classes = [], [], set()
    for i in range(12):
        example = standins.make_example(name, "train", i, 0, photos, fonts)
        again = standins.make_example(name, "train", i, 0, photos, fonts)
        np.testing.assert_array_equal(example["image"], again["image"])  # the same arguments, the same image
        height, width = example["image"].shape[:2]
        assert standins.MIN_SIDE <= height <= standins.MAX_SIDE and standins.MIN_SIDE <= width <= standins.MAX_SIDE
        boxes = example["boxes"]
        assert boxes.dtype == np.float32 and ((boxes >= 0) & (boxes <= 1)).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        longer = np.maximum((boxes[:, 2] - boxes[:, 0]) * height, (boxes[:, 3] - boxes[:, 1]) * width)
        sides.extend(longer / min(height, width))
        counts.append(len(boxes))
        classes.update(example["classes"].tolist())
    assert max(sides) <= standins.MAX_OBJECT + 0.01 and min(sides) >= 0.02
    assert max(counts) <= standins.MAX_OBJECTS and classes <= set(range(10)) and len(classes) >= 6
    other = standins.make_example(name, "val", 0, 0, photos, fonts)
    assert not np.array_equal(other["image"], standins.make_example(name, "train", 0, 0, photos, fonts)["image"])


def test_standin_is_a_voc_folder_without_labels(tmp_path):
    import tfzoo.data

    standins = _load("standins")
    stats = standins.write("symbols", str(tmp_path / "symbols"), train_images=3, val_images=2, progress=False)
    assert not (tmp_path / "symbols" / "labels.txt").exists()  # like a user's folder
    assert stats["train_images"] == 3 and stats["classes"] == list(standins.SYMBOLS)
    names = tfzoo.data.class_names(f"voc:{tmp_path / 'symbols'}")
    assert set(names) <= set(standins.SYMBOLS) and list(names) == sorted(names)
    assert len(list(tfzoo.data.load(f"voc:{tmp_path / 'symbols'}", "val").as_numpy_iterator())) == 2


def test_bench_standins_table():
    bench = _load("bench_standins")
    row = {"label": "no-flip", "standin": "glyphs", "val_AP50": 0.5, "train_AP50": 0.55, "val_AP": 0.3,
           "verdict": "underfitting", "steps": 1100, "images_per_s": 15.2, "confused_pairs": ["b/d 12", "2/7 3", "x"]}
    lines = bench.table([row]).splitlines()
    assert lines[0].startswith("| lever | stand-in | val AP50")
    assert lines[2] == "| no-flip | glyphs | 0.500 | 0.550 | 0.300 | underfitting | 1100 | 15.2 | b/d 12, 2/7 3 |"


def test_probe_cuts_every_object_out_of_its_image(tmp_path):
    import tfzoo.data
    from tfzoo.data import schema

    standins, probe = _load("standins"), _load("probe_classes")
    standins.write("symbols", str(tmp_path / "symbols"), train_images=3, val_images=1, progress=False)
    spec = f"voc:{tmp_path / 'symbols'}"
    crops, labels = probe.crop_dataset(spec, "train", 32)
    examples = list(tfzoo.data.load(spec, "train").as_numpy_iterator())
    np.testing.assert_array_equal(labels, np.concatenate([ex[schema.CLASSES] for ex in examples]))
    assert crops.shape == (len(labels), 32, 32, 3) and crops.dtype == np.uint8
    # The first object's crop is its box (plus the margin) of the first image, resized.
    first = next(ex for ex in examples if len(ex[schema.BOXES]))
    y1, x1, y2, x2 = first[schema.BOXES][0]
    h, w = first[schema.IMAGE].shape[:2]
    cy, cx = int((y1 + y2) / 2 * h), int((x1 + x2) / 2 * w)
    centre = crops[0][16, 16].astype(int)
    assert np.abs(centre - first[schema.IMAGE][cy, cx].astype(int)).max() <= 40


def test_proposal_benchmark_tiny_run(tmp_path):
    out = tmp_path / "proposals.json"
    proc = _run(str(BENCHMARKS / "bench_proposals.py"), "--data", "shapes:2", "--images", "2", "--size", "200x150",
                "--methods", "fast", "--json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["images"] == 2 and result["size"] == [200, 150]
    row = result["methods"]["fast"]
    assert row["seconds_median"] > 0 and row["proposals_mean"] > 0 and set(row["recall"]) == {
        f"{t}@{i}" for t in (100, 300, 1000, 2000) for i in (0.5, 0.7)}
    assert "recall at IoU 0.5" in proc.stdout


def test_svd_benchmark_tiny_run():
    proc = _run(str(BENCHMARKS / "bench_svd.py"), "--model", "fast_rcnn_mobile", "--num-classes", "3",
                "--proposals", "16", "--ranks", "8,8", "--repeats", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "fc        whole" in proc.stdout and "fc          8,8" in proc.stdout


def test_generations_benchmark_tiny_run(tmp_path):
    out = tmp_path / "generations.json"
    proc = _run(str(BENCHMARKS / "bench_generations.py"), "--tiny", "--repeats", "1", "--proposals", "24",
                "--num-classes", "3", "--models", "rcnn,spp_net,fast_rcnn,faster_rcnn,yolov1,yolo9", "--json", str(out),
                timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"rcnn", "spp_net", "fast_rcnn", "faster_rcnn", "yolov1"} and result["search_ms"] > 0
    assert result["yolov1_speedup_over_faster_rcnn"] > 0 and "yolov1 is" in proc.stdout
    assert result["peak_rss_gib"] > 0 and "peak resident memory" in proc.stdout
    fast = result["models"]["fast_rcnn"]
    assert fast["with_proposals_ms"] > fast["median_ms"]  # the search time is added
    faster = result["models"]["faster_rcnn"]
    assert faster["with_proposals_ms"] == faster["median_ms"]  # its proposals are inside
    assert "not registered yet: yolo9" in proc.stdout


def test_rcnn_memory_benchmark_tiny_run(tmp_path):
    out = tmp_path / "memory.json"
    proc = _run(str(BENCHMARKS / "bench_rcnn_memory.py"), "--tiny", "--num-classes", "3", "--formats",
                "keras,tflite", "--json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result) == {"keras", "tflite"}
    assert all(row["peak_gib"] >= row["before_gib"] > 0 and row["seconds"] > 0 for row in result.values())
    assert all(row["loading_peak_gib"] >= row["before_gib"] for row in result.values())


def test_tflite_runtime_benchmark_tiny_run(tmp_path):
    out = tmp_path / "runtime.json"
    proc = _run(str(BENCHMARKS / "bench_tflite_runtime.py"), "--image-size", "64", "--num-classes", "2",
                "--candidates", "20", "--repeats", "2", "--calls", "1", "--matmul", "64", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    stats = {name: s["median"] for name, s in result["stats_s"].items()}
    threads = f"TFLite, {result['threads']} threads"
    assert {"SavedModel detect", "SavedModel raw_outputs", threads, "TFLite raw_outputs", "fp32 matmul"} <= set(stats)
    assert all(value > 0 for value in stats.values())
    assert result["network_flops"] > 0 and result["matmul_gflops"] > 0
    assert result["ratio"] == pytest.approx(stats[threads] / stats["SavedModel detect"])
    assert result["ratio_bound"] == pytest.approx(result["network_flops"] / (result["matmul_gflops"] * 1e9)
                                                  / stats["SavedModel detect"])
    # Keras' 2x upsampling repeats rows, then columns (RESHAPE + TILE each); XNNPACK takes no
    # TILE, so the network alone is split around it; the NMS stays in the builtin kernels.
    raw, detect = result["delegate_split"]["raw_outputs"], result["delegate_split"]["detect"]
    assert raw["builtin_ops"] == {"TILE": 2} and raw["partitions"] >= 2
    assert detect["builtin_ops"]["NON_MAX_SUPPRESSION_V5"] == 1 and "CONV_2D" not in detect["builtin_ops"]
    assert "bound: the network at the matmul's rate" in proc.stdout
