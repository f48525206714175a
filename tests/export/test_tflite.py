"""TFLite export: builtin ops only, NMS inside, parity with Keras, metadata, atomic writes."""
import json
import os

import numpy as np
import pytest

from tests.export import helpers
from tests.models.test_layers import _grouped_convolutions
from tfzoo.export import artifacts, compare_detections, export_tflite
from tfzoo.export import tflite as tl


@pytest.fixture(scope="module")
def model_bytes(tflite_path):
    with open(tflite_path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def runtime(tflite_path):
    return tl.interpreter(model_path=tflite_path)


def test_builtin_ops_only_with_nms_and_frozen_weights(model_bytes):
    ops = tl.op_names(model_bytes)
    assert tl.non_builtin_ops(ops) == []
    assert not [op for op in ops if op.startswith("CUSTOM") or "FLEX" in op.upper()], ops
    assert "NON_MAX_SUPPRESSION_V5" in ops and "TOPK_V2" in ops
    assert "WHILE" not in ops  # static batch 1
    assert not set(tl.VARIABLE_OPS) & ops  # weights are constants, not variables


def test_signatures_keep_the_output_names(runtime):
    signatures = runtime.get_signature_list()
    assert signatures["serving_default"]["inputs"] == ["images"]
    assert sorted(signatures["serving_default"]["outputs"]) == sorted(artifacts.DETECTION_KEYS)
    assert sorted(signatures["raw_outputs"]["outputs"]) == ["box_deltas", "class_logits"]
    (details,) = runtime.get_signature_runner("serving_default").get_input_details().values()
    assert list(details["shape"]) == [1, helpers.IMAGE_SIZE, helpers.IMAGE_SIZE, 3]
    assert details["dtype"] == np.float32


def test_raw_outputs_match_keras_within_1e_4_of_their_scale(detector, runtime):
    images = helpers.sample_images(2)
    expected = helpers.keras_raw_outputs(detector, images)
    for i in range(2):
        got = tl.run_signature(runtime, images[i:i + 1], "raw_outputs")
        for key in expected:
            helpers.assert_close_to_scale(got[key], expected[key][i:i + 1], 1e-4)


def test_detections_match_keras_by_class_and_iou(detector, runtime):
    images = helpers.sample_images(4)
    expected = detector.predict_on_batch(images)
    got = [tl.run_signature(runtime, images[i:i + 1]) for i in range(len(images))]
    got = {k: np.concatenate([g[k] for g in got]) for k in got[0]}
    for key in artifacts.DETECTION_KEYS:
        assert got[key].shape == expected[key].shape and got[key].dtype == expected[key].dtype
    assert expected["num_detections"].sum() > 10
    report = compare_detections(expected, got, iou=0.99, min_score=helpers.SCORE_THRESHOLD + 0.01)
    assert report["agree"], report
    assert report["max_score_diff"] < 1e-4


def test_metadata_inside_the_file(detector, model_bytes):
    metadata = tl.read_metadata(model_bytes)
    assert metadata["config"] == json.loads(detector.config.to_json())
    assert metadata["class_names"] == list(helpers.CLASS_NAMES)
    assert metadata["image_size"] == [helpers.IMAGE_SIZE] * 2 and metadata["quantize"] is None
    assert tl.read_metadata(model_bytes, "no such entry") is None


def test_bad_arguments_fail_before_any_work(detector, tmp_path):
    with pytest.raises(ValueError, match="unknown quantize mode 'int4'"):
        export_tflite(detector, str(tmp_path / "m.tflite"), quantize="int4")
    with pytest.raises(ValueError, match="needs calibration_images"):
        export_tflite(detector, str(tmp_path / "m.tflite"), quantize="int8")
    with pytest.raises(ValueError, match="int8 quantization only"):
        export_tflite(detector, str(tmp_path / "m.tflite"), calibration_images=[np.zeros([64, 64, 3])])
    assert os.listdir(tmp_path) == []


def test_calibration_images_take_images_batches_and_pipeline_pairs():
    image = np.full([64, 64, 3], 7.0, np.float32)
    batches = list(tl._calibration_batches([image, image[None].repeat(2, 0), (image[None], {"boxes": 0})], (64, 64)))
    assert len(batches) == 4 and all(b["images"].shape == (1, 64, 64, 3) for b in batches)
    assert len(list(tl._calibration_batches([image] * 5, (64, 64), limit=3))) == 3
    with pytest.raises(ValueError, match=r"float32 \[64, 64, 3\].*\[32, 32, 3\]"):
        list(tl._calibration_batches([np.zeros([32, 32, 3])], (64, 64)))


def test_a_file_failing_its_check_leaves_the_earlier_file(detector, tmp_path, monkeypatch, model_bytes):
    target = tmp_path / "model.tflite"
    target.write_bytes(model_bytes)  # an earlier export
    monkeypatch.setattr(tl, "_convert", lambda *args: model_bytes + b"")

    def verify(path, *args):
        assert os.path.getsize(path) > 1000  # the new model was written, under another name
        raise artifacts.ExportError("the TFLite model uses non-builtin ops CUSTOM:FlexErf")

    monkeypatch.setattr(tl, "_verify", verify)
    with pytest.raises(artifacts.ExportError, match="FlexErf"):
        export_tflite(detector, str(target))
    assert target.read_bytes() == model_bytes
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_a_file_that_is_not_an_earlier_export_is_refused_before_any_work(detector, tmp_path, monkeypatch):
    """Like a foreign SavedModel folder: a user's .tflite (no tfzoo metadata) or any other
    file at the target is never replaced."""
    monkeypatch.setattr(tl, "_convert", lambda *args: pytest.fail("converted before refusing"))
    for name, data in (("theirs.tflite", b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40), ("notes.tflite", b"my notes")):
        target = tmp_path / name
        target.write_bytes(data)
        with pytest.raises(FileExistsError, match="exists and is not a tfzoo TFLite export"):
            export_tflite(detector, str(target))
        assert target.read_bytes() == data


def test_the_check_refuses_a_model_without_nms(detector, tmp_path, monkeypatch):
    """A converted graph that lost its NMS (or its weights) never reaches the target."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def plain(x):
        return {"y": x * 2.0}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([plain.get_concrete_function()])
    monkeypatch.setattr(tl, "_convert", lambda *args: converter.convert())
    target = tmp_path / "model.tflite"
    with pytest.raises(artifacts.ExportError, match="no NON_MAX_SUPPRESSION_V5"):
        export_tflite(detector, str(target))
    assert os.listdir(tmp_path) == []


def test_int8_quantizes_the_network_and_keeps_the_decoder_float(tflite_int8_path):
    with open(tflite_int8_path, "rb") as f:
        model_bytes = f.read()
    assert tl.non_builtin_ops(tl.op_names(model_bytes)) == []
    types = tl.op_input_types(model_bytes)
    assert types["CONV_2D"] == {"INT8"} and types["DEPTHWISE_CONV_2D"] == {"INT8"}
    for op in ("LOGISTIC", "TOPK_V2", "GATHER", "NON_MAX_SUPPRESSION_V5", "EXP"):
        assert "FLOAT32" in types[op] and "INT8" not in types[op], (op, types[op])
    # No float -> int8 -> float round trip on a decoder tensor either: the quantizer puts
    # one on the sigmoid's scores of this decoder, and the export removes it.
    assert tl.decoder_requantizations(model_bytes) == []
    assert tl.read_metadata(model_bytes)["quantize"] == "int8"


def test_int8_detections_are_the_float_decoder_of_its_int8_network(detector, tflite_int8_path):
    """The int8 trap: a decoder quantized with the network returned 0 detections. Here the
    file's detections equal the Keras decoder run on the file's own (int8 network) head
    outputs, so the decoder stayed float32; and those outputs follow Keras'."""
    images = helpers.sample_images(4)
    runtime = tl.interpreter(model_path=tflite_int8_path)
    keras_raw = helpers.keras_raw_outputs(detector, images)
    for i in range(len(images)):
        got = tl.run_signature(runtime, images[i:i + 1])
        raw = tl.run_signature(runtime, images[i:i + 1], "raw_outputs")
        want = {k: np.asarray(v) for k, v in detector.decode(raw).items()}
        assert got["num_detections"][0] > 0 and abs(int(got["num_detections"][0]) - int(want["num_detections"][0])) <= 1
        # Scores equal to float precision: the same int8 logits through a float32 decoder
        # (a quantized decoder gives scores in steps of 1/256). Boxes within IoU 0.95, and
        # NMS may keep one box more or less: the two signatures' box-delta outputs come out
        # of the quantizer with slightly different scales (boxes a few 1e-3 apart).
        report = compare_detections(want, got, iou=0.95, min_score=0.0)
        assert report["match_rate"] >= 0.9 and report["max_score_diff"] < 1e-4, report
        for key in raw:  # a tiny random network loses more to int8 than a trained one
            assert np.corrcoef(raw[key].ravel(), keras_raw[key][i].ravel())[0, 1] > 0.7, key


def test_an_export_that_detects_nothing_is_refused(detector, tmp_path, monkeypatch, model_bytes):
    """The check compares detection counts with Keras on its check image."""
    images = helpers.sample_images(1)
    monkeypatch.setattr(tl, "_convert", lambda *args: model_bytes)
    monkeypatch.setattr(tl.sm, "sample_image", lambda h, w: images[0])

    def empty(runner, image, signature="serving_default"):
        out = {k: np.asarray(v) for k, v in detector.detect(image).items()}
        return {**out, "num_detections": np.zeros([1], np.int32),
                "detection_scores": np.zeros_like(out["detection_scores"])}

    monkeypatch.setattr(tl, "run_signature", empty)
    target = tmp_path / "model.tflite"
    with pytest.raises(artifacts.ExportError, match="detects nothing on the check image"):
        export_tflite(detector, str(target), raw_outputs=True)
    assert os.listdir(tmp_path) == []


def _grouped_conv_2d(model_bytes):
    """CONV_2D ops of a .tflite model whose input has more channels than the filter."""
    found = []
    for graph, op, op_type in tl._operators(model_bytes):
        if op_type == "CONV_2D":
            data = graph.Tensors(op.Inputs(0)).ShapeAsNumpy()
            kernel = graph.Tensors(op.Inputs(1)).ShapeAsNumpy()  # [O, H, W, I]
            if data[-1] != kernel[-1]:
                found.append((int(data[-1]), int(kernel[-1])))
    return found


def test_exports_hold_plain_convolutions_where_keras_groups_them(tmp_path):
    """At 256 px with 256-channel heads the P3 map is 32x32, where tfzoo.layers.Conv2D runs
    grouped in single-image Keras inference on an x86 CPU; the TFLite file must still hold ordinary CONV_2D ops, and the
    detector's own layers keep their setting afterwards."""
    import tensorflow as tf

    import tfzoo
    from tfzoo import layers

    detector = tfzoo.build_model("retinanet_mobile", num_classes=2, backbone_weights=None, image_size=256,
                                 backbone_alpha=0.35, fpn_channels=256, head_channels=256, head_convs=1)
    grouped = _grouped_convolutions(detector.detect, tf.zeros([1, 256, 256, 3]))
    assert bool(grouped) == layers._grouped_inference_host()
    path = export_tflite(detector, str(tmp_path / "m.tflite"))
    with open(path, "rb") as f:
        assert _grouped_conv_2d(f.read()) == []
    assert all(layer.grouped_inference for layer in detector._flatten_layers() if isinstance(layer, layers.Conv2D))


def test_int8_keeps_a_float_section_in_the_middle_of_the_graph_in_float32(tmp_path):
    """A two-stage graph has float-only work between int8 parts (proposal scores, top-k,
    box decoding): ops under FLOAT_SCOPE stay float32 like the decoder at the end, while
    the convolutions before and after them are int8."""
    import types

    import tensorflow as tf

    from tfzoo.models.base import DECODER_SCOPE, float_section

    rng = np.random.default_rng(0)
    k1 = tf.constant(rng.normal(0, 0.3, [3, 3, 3, 8]), tf.float32)
    k2 = tf.constant(rng.normal(0, 0.3, [3, 3, 8, 8]), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="images")])
    def two_stage(images):
        x = tf.nn.relu(tf.nn.conv2d(images / 255.0, k1, 1, "SAME"))
        with float_section():  # "proposal scoring" between the two int8 parts
            scores = tf.sigmoid(tf.reduce_mean(x, axis=-1))  # [1, 16, 16]
            top, index = tf.math.top_k(tf.reshape(scores, [1, 256]), k=16)
            gate = tf.reshape(tf.reduce_sum(tf.one_hot(index, 256) * top[..., None], axis=1), [1, 16, 16, 1])
        y = tf.nn.relu(tf.nn.conv2d(x * gate, k2, 1, "SAME"))
        with tf.name_scope(DECODER_SCOPE):
            return {"out": tf.reduce_max(y, axis=[1, 2])}

    module = tf.Module()
    module.two_stage = two_stage
    directory = str(tmp_path / "saved_model")
    tf.saved_model.save(module, directory, signatures={"serving_default": two_stage.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # as _convert sets it for every quantized mode
    images = [rng.uniform(0, 255, [16, 16, 3]).astype(np.float32) for _ in range(8)]
    detector = types.SimpleNamespace(image_size=(16, 16), int8_float_layers=lambda: ())
    model_bytes = tl._convert_int8(converter, detector, ["serving_default"], images, None)
    kept, _ = tl.decoder_ops(model_bytes)
    assert any("tfzoo_float" in name for name in kept)
    dtypes = tl.op_input_types(model_bytes)
    assert dtypes["CONV_2D"] == {"INT8"}  # both convolutions, before and after the float part
    assert dtypes["LOGISTIC"] == {"FLOAT32"} and dtypes["TOPK_V2"] == {"FLOAT32"}


def test_float_layers_are_matched_by_their_keras_name():
    assert tl._in_layers("yolov3_tiny_1/p5_box_1/BiasAdd", ["p5_box"])
    assert tl._in_layers("p5_box/convolution", ["p5_box"]) and tl._in_layers("m/p5_box/Conv2D", ["p5_box"])
    assert not tl._in_layers("yolov3_tiny_1/p5_boxes_1/BiasAdd", ["p5_box"])
    assert not tl._in_layers("yolov3_tiny_1/head_p5_box_1/BiasAdd", ["p5_box"])
    assert not tl._in_layers("yolov3_tiny_1/p5_box_1/BiasAdd", [])
