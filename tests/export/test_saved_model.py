"""SavedModel export: any-size uint8 serving, encoded bytes, raw parity, atomic writes."""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.export import helpers
from tfzoo.data import augment as aug
from tfzoo.export import artifacts, compare_detections, export_saved_model
from tfzoo.export import saved_model as sm
from tfzoo.ops import boxes as box_ops


@pytest.fixture(scope="module")
def loaded(saved_model_path):
    return tf.saved_model.load(saved_model_path)


def _shapes_image(index=0):
    import tfzoo.data

    examples = list(tfzoo.data.load(f"shapes:{index + 1}", "val").as_numpy_iterator())
    return examples[index]["image"]


def _keras_on_original(detector, image):
    """What the evaluation pipeline does: letterbox one example, detect, map boxes back."""
    example = aug.resize_and_pad({"image": tf.constant(image), "boxes": tf.zeros([0, 4])}, helpers.IMAGE_SIZE)
    out = detector.predict_on_batch(example["image"][None])
    boxes_px = aug.boxes_to_original(out["detection_boxes"], example["image_info"][None])
    height, width = image.shape[:2]
    out["detection_boxes"] = np.asarray(box_ops.normalize(boxes_px, height, width))
    return out


def test_serving_default_takes_uint8_of_another_size_and_boxes_the_original(detector, loaded):
    image = _shapes_image()
    assert image.shape[:2] != (helpers.IMAGE_SIZE, helpers.IMAGE_SIZE) and image.shape[0] != image.shape[1]
    served = loaded.signatures["serving_default"](images=tf.constant(image[None]))
    served = {k: v.numpy() for k, v in served.items()}
    assert served["detection_boxes"].dtype == np.float32 and served["detection_classes"].dtype == np.int32
    assert served["num_detections"].dtype == np.int32
    expected = _keras_on_original(detector, image)
    assert expected["num_detections"][0] > 3  # something to compare
    np.testing.assert_array_equal(served["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(served["detection_classes"], expected["detection_classes"])
    np.testing.assert_allclose(served["detection_scores"], expected["detection_scores"], atol=1e-5)
    np.testing.assert_allclose(served["detection_boxes"], expected["detection_boxes"], atol=1e-5)
    assert compare_detections(served, expected, iou=0.99)["agree"]


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_serving_bytes_decodes_a_batch_of_differently_sized_pngs(loaded):
    images = [_shapes_image(0), _shapes_image(1)]
    assert images[0].shape != images[1].shape
    served = loaded.signatures["serving_bytes"](encoded_images=tf.constant([_png(im) for im in images]))
    for i, image in enumerate(images):
        single = loaded.signatures["serving_default"](images=tf.constant(image[None]))
        for key in artifacts.DETECTION_KEYS:
            np.testing.assert_allclose(served[key].numpy()[i], single[key].numpy()[0], atol=1e-6)


def test_raw_outputs_match_keras_within_1e_5(detector, loaded):
    """Against Keras in graph mode, as predict() runs it (eager Keras rounds fused ops differently)."""
    images = helpers.sample_images(2)
    raw = loaded.signatures["raw_outputs"](images=tf.constant(images))
    expected = helpers.keras_raw_outputs(detector, images)
    assert set(raw) == set(expected)
    for key in expected:
        np.testing.assert_allclose(raw[key].numpy(), np.asarray(expected[key]), atol=1e-5)


def test_detect_signature_equals_keras_detect(detector, loaded):
    images = helpers.sample_images(2)
    served = {k: v.numpy() for k, v in loaded.signatures["detect"](images=tf.constant(images)).items()}
    report = compare_detections(detector.predict_on_batch(images), served, iou=0.99)
    assert report["agree"] and report["matched"] > 0 and report["max_score_diff"] < 1e-5


def test_export_holds_config_and_metadata(detector, saved_model_path):
    with open(os.path.join(saved_model_path, "config.json")) as f:
        config = json.load(f)
    assert config == json.loads(detector.config.to_json())
    assert tuple(config["class_names"]) == helpers.CLASS_NAMES
    with open(os.path.join(saved_model_path, "export.json")) as f:
        metadata = json.load(f)
    assert metadata["image_size"] == [helpers.IMAGE_SIZE] * 2 and metadata["keep_aspect_ratio"] is True
    assert metadata["class_names"] == list(helpers.CLASS_NAMES) and metadata["model"] == "RetinaNet"
    assert set(metadata["signatures"]) == {"serving_default", "serving_bytes", "detect", "raw_outputs"}
    assert not [n for n in os.listdir(os.path.dirname(saved_model_path)) if ".tmp-" in n or ".old-" in n]


@pytest.mark.parametrize("size", [(48, 64), (100, 37), (64, 64), (7, 300)])
@pytest.mark.parametrize("keep_aspect_ratio", [True, False])
def test_batched_resize_is_the_eval_pipeline_resize(size, keep_aspect_ratio):
    """The serving graph resizes pixel for pixel as resize_and_pad / resize do per example."""
    image = np.random.default_rng(0).integers(0, 256, size + (3,), dtype=np.uint8)
    example = {"image": tf.constant(image), "boxes": tf.zeros([0, 4])}
    expected = aug.resize_and_pad(example, 64) if keep_aspect_ratio else aug.resize(example, 64)
    images, info = aug.resize_images(np.stack([image, image]), 64, keep_aspect_ratio=keep_aspect_ratio)
    for i in range(2):
        np.testing.assert_array_equal(images[i].numpy(), expected["image"].numpy())
        np.testing.assert_array_equal(info[i].numpy(), expected["image_info"].numpy())


# --- atomic writing -------------------------------------------------------------------


def _tree(path):
    return {os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(path) for f in files}


def _earlier_export(path):
    os.makedirs(path)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"earlier export")
    return _tree(path)


def test_a_failing_export_leaves_the_earlier_one_intact_and_no_leftovers(detector, tmp_path, monkeypatch):
    target = tmp_path / "saved_model"
    before = _earlier_export(target)

    def fail_midway(model, directory, *args, **kwargs):
        with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sm, "save_module", fail_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(detector, str(target))
    assert _tree(target) == before
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_an_export_failing_its_check_is_not_moved_into_place(detector, tmp_path, monkeypatch):
    target = tmp_path / "saved_model"
    before = _earlier_export(target)
    monkeypatch.setattr(sm, "save_module", lambda model, directory, *a, **k: open(
        os.path.join(directory, "saved_model.pb"), "wb").close())

    def verify(directory, model, module):
        raise artifacts.ExportError("serving_default: detection_scores holds NaN or Inf")

    monkeypatch.setattr(sm, "_verify", verify)
    with pytest.raises(artifacts.ExportError, match="NaN"):
        export_saved_model(detector, str(target))
    assert _tree(target) == before
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_a_passing_export_replaces_the_earlier_one(detector, tmp_path, monkeypatch):
    target = tmp_path / "saved_model"
    _earlier_export(target)
    monkeypatch.setattr(sm, "save_module", lambda model, directory, *a, **k: open(
        os.path.join(directory, "saved_model.pb"), "wb").close())
    monkeypatch.setattr(sm, "_verify", lambda directory, model, module: None)
    export_saved_model(detector, str(target))
    tree = _tree(target)
    assert tree["saved_model.pb"] == b"" and "config.json" in tree and "export.json" in tree
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_an_unrelated_folder_is_never_replaced(detector, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        export_saved_model(detector, str(folder))
    assert (folder / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["photos"]
