"""load_model: every format behind one interface, trust refusals, clear errors."""
import json
import pathlib
import zipfile

import numpy as np
import pytest

from tests.export import helpers
from tfzoo.export import ModelLoadError, compare_detections, load_model
from tfzoo.ops import boxes as box_ops

FORMATS = {"keras": "keras", "run": "keras", "h5": "keras", "saved_model": "saved_model", "tflite": "tflite"}


@pytest.fixture(scope="module")
def paths(artifacts_dir):
    return {kind: helpers.artifact(kind, artifacts_dir) for kind in FORMATS}


@pytest.fixture(scope="module")
def models(paths):
    """Each format loaded once for the module."""
    return {kind: load_model(path, trust_model=True) for kind, path in paths.items()}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_every_format_loads_with_the_same_interface(kind, models, detector):
    model = models[kind]
    assert model.format == FORMATS[kind]
    assert model.class_names == helpers.CLASS_NAMES and model.has_class_names
    assert model.image_size == (helpers.IMAGE_SIZE, helpers.IMAGE_SIZE) and model.keep_aspect_ratio is True
    if model.format == "keras":
        assert model.config == detector.config
        for got, want in zip(model.detector.get_weights(), detector.get_weights()):
            np.testing.assert_array_equal(got, want)
    else:
        assert model.config == json.loads(detector.config.to_json())


@pytest.mark.parametrize("kind", ["keras", "saved_model", "tflite"])
def test_every_format_detects_as_keras_does(kind, models, detector):
    images = helpers.sample_images(3)
    expected = detector.predict_on_batch(images)
    report = compare_detections(expected, models[kind].detect(images), iou=0.99,
                                min_score=helpers.SCORE_THRESHOLD + 0.01)
    assert report["agree"] and report["matched"] > 5, report


def _drop_empty(detections):
    """One image's detections without zero-area boxes (boxes that fell in the padding)."""
    count = int(detections["num_detections"][0])
    keep = np.asarray(box_ops.area(detections["detection_boxes"][0, :count])) > 0
    return {"detection_boxes": detections["detection_boxes"][:, :count][:, keep],
            "detection_scores": detections["detection_scores"][:, :count][:, keep],
            "detection_classes": detections["detection_classes"][:, :count][:, keep],
            "num_detections": np.array([keep.sum()], np.int32)}


@pytest.mark.parametrize("kind", ["keras", "saved_model", "tflite"])
def test_detect_original_maps_boxes_to_the_original_image(kind, models, detector):
    """A 160 x 120 image is letterboxed by exactly 0.4 to 64 x 48 (+ 16 columns of padding),
    so boxes normalized to the original are the input-normalized ones times [1, 4/3, 1, 4/3]."""
    from PIL import Image

    from tfzoo.data import augment as aug

    image = np.asarray(Image.fromarray(helpers.sample_images(1)[0].astype(np.uint8)).resize((120, 160)))
    out = models[kind].detect_original(image)
    assert out["detection_boxes"].shape == (100, 4) and isinstance(out["num_detections"], int)
    letterboxed, _ = aug.resize_images(image[None], helpers.IMAGE_SIZE)
    direct = detector.predict_on_batch(letterboxed.numpy())
    assert direct["num_detections"][0] > 0
    expected = dict(direct)
    expected["detection_boxes"] = np.clip(direct["detection_boxes"] * np.array([1, 4 / 3, 1, 4 / 3]), 0.0, 1.0)
    got = {k: np.asarray(v)[None] for k, v in out.items()}
    report = compare_detections(_drop_empty(expected), _drop_empty(got), iou=0.99,
                                min_score=helpers.SCORE_THRESHOLD + 0.01)
    assert report["agree"] and report["matched"] > 0, report


def test_detect_original_resizes_images_of_every_size_in_one_traced_graph(models):
    """The Keras and TFLite paths resize and map back through graphs traced once (op by op
    they cost more than a small network), pixel for pixel the eager resize."""
    from tfzoo.data import augment as aug
    from tfzoo.export import loading

    model = models["tflite"]
    resize, to_original = loading._original_size_graphs(model.image_size, model.keep_aspect_ratio)
    model.detect_original(helpers.sample_images(1)[0].astype(np.uint8))
    traced = to_original.experimental_get_tracing_count()
    for h, w in [(160, 120), (97, 203), (64, 64), (300, 41)]:
        image = np.random.default_rng(h).integers(0, 256, [h, w, 3], dtype=np.uint8)
        got, info = resize(image[None])
        want, want_info = aug.resize_images(image[None], model.image_size, keep_aspect_ratio=model.keep_aspect_ratio)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-3)
        np.testing.assert_allclose(info.numpy(), want_info.numpy(), rtol=1e-6)
        out = model.detect_original(image)
        assert out["detection_boxes"].shape == (100, 4)
    assert resize.experimental_get_tracing_count() == 1
    assert to_original.experimental_get_tracing_count() == traced


def test_saved_model_and_h5_need_trust(paths):
    for kind, what in (("saved_model", "SavedModel"), ("h5", "HDF5")):
        with pytest.raises(ModelLoadError, match=f"refusing to load a .*{what}.*trust_model") as info:
            load_model(paths[kind])
        assert str(info.value).startswith(paths[kind]) and "\n" not in str(info.value)


def test_raw_outputs_where_the_format_has_them(models):
    images = helpers.sample_images(1)
    keras_raw = models["keras"].raw_outputs(images)
    for kind in ("saved_model", "tflite"):
        raw = models[kind].raw_outputs(images)
        for key in keras_raw:
            helpers.assert_close_to_scale(raw[key], keras_raw[key], 1e-4)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_unusable_paths_are_one_line_errors_naming_the_path(tmp_path, paths):
    cases = {
        str(tmp_path / "missing.keras"): "no such file or directory",
        _write(tmp_path / "notes.txt", b"hello"): "unknown model file type",
        _write(tmp_path / "broken.keras", b"PK\x03\x04 not really a zip"): "not a complete .keras file",
        _write(tmp_path / "broken.tflite", b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40): "cannot load the TFLite model",
        _write(tmp_path / "text.tflite", b"this is text"): "not a TFLite file",
    }
    # Real exports cut short (an interrupted copy): named as such, not "File not found" or
    # a struct-unpacking message.
    keras_bytes = pathlib.Path(paths["keras"]).read_bytes()
    tflite_bytes = pathlib.Path(paths["tflite"]).read_bytes()
    cases[_write(tmp_path / "cut.keras", keras_bytes[: len(keras_bytes) // 2])] = "truncated or corrupt"
    cases[_write(tmp_path / "cut.tflite", tflite_bytes[: len(tflite_bytes) // 2])] = "a truncated or corrupt TFLite"
    cases[_write(tmp_path / "cut_header.tflite", tflite_bytes[:20])] = "a truncated or corrupt TFLite"
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "hello")
    cases[str(tmp_path / "other.keras")] = "a zip archive without config.json"
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    cases[str(empty)] = "not a model directory"
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text('{"epoch": 0}')
    cases[str(run)] = "training directory without model.keras"
    for path, problem in cases.items():
        with pytest.raises(ModelLoadError) as info:
            load_model(path, trust_model=True)
        message = str(info.value)
        assert message.startswith(path) and problem in message and "\n" not in message, message


def test_a_keras_file_that_is_not_a_detector_is_refused(tmp_path):
    import keras

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = str(tmp_path / "plain.keras")
    plain.save(path)
    with pytest.raises(ModelLoadError, match="not a tfzoo detector"):
        load_model(path)


def test_a_keras_file_is_loaded_in_safe_mode(tmp_path, paths):
    """A .keras whose config asks for a Lambda (arbitrary code) is refused, not run."""
    source = paths["keras"]
    target = tmp_path / "evil.keras"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = {"module": "keras.layers", "class_name": "Lambda",
                          "config": {"name": "evil", "function": {"class_name": "__lambda__",
                                                                   "config": {"code": "print('pwned')"}}}}
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    with pytest.raises(ModelLoadError, match="cannot load the Keras model.*(safe|Lambda|lambda)"):
        load_model(str(target))
