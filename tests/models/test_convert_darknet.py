"""Darknet's whole-detector .weights files: the layer order against the published cfgs, a
bit-exact round trip of a random yolov3, the output channels against Darknet's entries
(a file built here with NumPy alone), the cfg reader and ``tfzoo convert``."""
import json

import numpy as np
import pytest

import tfzoo
import tfzoo.convert
from tfzoo import cli
from tfzoo.backbones.darknet import DarknetWeightsError
from tfzoo.convert import darknet

#: ``(filters/size/stride/batch_normalize/input channels)`` of every ``[convolutional]``
#: section of the published ``yolov3.cfg`` and ``yolov3-tiny.cfg`` (pjreddie/darknet, cfg/),
#: in order, the input channels followed through its routes.
YOLOV3_CFG = (
    '32/3/1/1/3 64/3/2/1/32 32/1/1/1/64 64/3/1/1/32 128/3/2/1/64 64/1/1/1/128 128/3/1/1/64 64/1/1/1/128 '
    '128/3/1/1/64 256/3/2/1/128 128/1/1/1/256 256/3/1/1/128 128/1/1/1/256 256/3/1/1/128 128/1/1/1/256 256/3/1/1/128 '
    '128/1/1/1/256 256/3/1/1/128 128/1/1/1/256 256/3/1/1/128 128/1/1/1/256 256/3/1/1/128 128/1/1/1/256 '
    '256/3/1/1/128 128/1/1/1/256 256/3/1/1/128 512/3/2/1/256 256/1/1/1/512 512/3/1/1/256 256/1/1/1/512 '
    '512/3/1/1/256 256/1/1/1/512 512/3/1/1/256 256/1/1/1/512 512/3/1/1/256 256/1/1/1/512 512/3/1/1/256 '
    '256/1/1/1/512 512/3/1/1/256 256/1/1/1/512 512/3/1/1/256 256/1/1/1/512 512/3/1/1/256 1024/3/2/1/512 '
    '512/1/1/1/1024 1024/3/1/1/512 512/1/1/1/1024 1024/3/1/1/512 512/1/1/1/1024 1024/3/1/1/512 512/1/1/1/1024 '
    '1024/3/1/1/512 512/1/1/1/1024 1024/3/1/1/512 512/1/1/1/1024 1024/3/1/1/512 512/1/1/1/1024 1024/3/1/1/512 '
    '255/1/1/0/1024 256/1/1/1/512 256/1/1/1/768 512/3/1/1/256 256/1/1/1/512 512/3/1/1/256 256/1/1/1/512 '
    '512/3/1/1/256 255/1/1/0/512 128/1/1/1/256 128/1/1/1/384 256/3/1/1/128 128/1/1/1/256 256/3/1/1/128 '
    '128/1/1/1/256 256/3/1/1/128 255/1/1/0/256 '
)
YOLOV3_TINY_CFG = (
    '16/3/1/1/3 32/3/1/1/16 64/3/1/1/32 128/3/1/1/64 256/3/1/1/128 512/3/1/1/256 1024/3/1/1/512 256/1/1/1/1024 '
    '512/3/1/1/256 255/1/1/0/512 128/1/1/1/256 256/3/1/1/384 255/1/1/0/256 '
)

def _conv(filters, size, normalize=True):
    norm = "batch_normalize=1\n" if normalize else ""
    return f"[convolutional]\n{norm}filters={filters}\nsize={size}\nstride=1\n"


def _yolo(mask):
    return (_conv("{out}", 1, normalize=False) + f"activation=linear\n[yolo]\nmask = {mask}\n"
            "anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319\nclasses={classes}\n")


#: yolov3-tiny.cfg's sections, written here ({out}, {classes} filled by _tiny_cfg).
TINY_CFG_TEXT = (
    "[net]\n# a comment\nwidth=416\nheight=416\n" + _conv(16, 3)
    + "".join(f"[maxpool]\nsize=2\nstride=2\n{_conv(f, 3)}" for f in (32, 64, 128, 256, 512))
    + "[maxpool]\nsize=2\nstride=1\n" + _conv(1024, 3) + _conv(256, 1) + _conv(512, 3) + _yolo("3,4,5")
    + "[route]\nlayers = -4\n" + _conv(128, 1) + "[upsample]\nstride=2\n[route]\nlayers = -1, 8\n"
    + _conv(256, 3) + _yolo("0,1,2")
)


def _layout(text):
    return [tuple(int(v) for v in item.split("/")) for item in text.split()]


def _random(detector, seed=0):
    rng = np.random.default_rng(seed)
    detector.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) if w.ndim > 1
                          else rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in detector.get_weights()])
    return detector


def _tiny_cfg(classes=3):
    return TINY_CFG_TEXT.replace("{out}", str(3 * (5 + classes))).replace("{classes}", str(classes))


@pytest.mark.parametrize("model, published", [("yolov3", YOLOV3_CFG), ("yolov3_tiny", YOLOV3_TINY_CFG)])
def test_the_layer_order_is_the_published_cfgs(model, published):
    detector = tfzoo.build_model(model, **darknet.FULL_WIDTH, image_size=64, num_classes=80)
    assert darknet.cfg_layout(detector) == _layout(published)


@pytest.mark.slow
def test_a_random_yolov3_round_trips_bit_for_bit_in_the_published_files_size(tmp_path):
    detector = _random(tfzoo.build_model("yolov3", **darknet.FULL_WIDTH, image_size=64, num_classes=80))
    path = tmp_path / "yolov3.weights"
    darknet.save_yolo_weights(detector, str(path), seen=32013312)
    assert path.stat().st_size == 248_007_048  # the published yolov3.weights
    fresh = tfzoo.build_model("yolov3", **darknet.FULL_WIDTH, image_size=64, num_classes=80)
    header = darknet.load_yolo_weights(fresh, str(path))
    assert header == {"major": 0, "minor": 2, "revision": 0, "seen": 32013312}
    assert all(np.array_equal(a, b) for a, b in zip(detector.get_weights(), fresh.get_weights()))


def test_output_channels_follow_darknets_entries(tmp_path):
    """A file written with NumPy alone, Darknet's layout: each [yolo] layer's convolution
    has a zero kernel and the bias ``1000 * prior + entry`` (entries x, y, w, h, objectness,
    classes). The model's predictions in every cell are then tfzoo's (t_y, t_x, t_h, t_w,
    t_o, classes) of those entries."""
    classes = 3
    cfg = _tiny_cfg(classes).replace("width=416", "width=64").replace("height=416", "height=64")
    detector = darknet.build_for_cfg(cfg)
    rng = np.random.default_rng(0)
    arrays = []
    # the sizes come from the cfg's sections (input channels followed through its routes)
    for filters, size, _, normalized, inputs in darknet.config_from_cfg(cfg)["layout"]:
        if normalized:
            arrays += [rng.normal(0, 0.1, filters), rng.uniform(0.5, 1.5, filters), rng.normal(0, 0.1, filters),
                       rng.uniform(0.5, 1.5, filters), rng.normal(0, 0.1, filters * inputs * size * size)]
        else:
            entries = 5 + classes
            arrays += [np.array([1000.0 * (c // entries) + c % entries for c in range(filters)]),
                       np.zeros(filters * inputs)]
    path = tmp_path / "pattern.weights"
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<i8").tobytes()
    path.write_bytes(header + b"".join(np.asarray(a, "<f4").tobytes() for a in arrays))
    darknet.load_yolo_weights(detector, str(path))
    outputs = detector(np.zeros([1, 64, 64, 3], np.float32))
    for name in ("p5", "p4"):
        t = detector.predictions(outputs, name).numpy()  # [1, h, w, 3, 5 + K]
        for prior in range(3):
            darknet_entries = [1, 0, 3, 2, 4] + [5 + k for k in range(classes)]
            np.testing.assert_allclose(t[0, :, :, prior], np.broadcast_to(
                1000.0 * prior + np.array(darknet_entries, np.float32), t.shape[1:3] + (5 + classes,)))


def test_the_cfg_sets_the_config_and_bad_files_are_named(tmp_path):
    settings = darknet.config_from_cfg(_tiny_cfg(3))
    assert settings["backbone"] == "darknet_tiny" and settings["image_size"] == 416 and settings["num_classes"] == 3
    assert settings["masks"] == ((3, 4, 5), (0, 1, 2))
    assert settings["priors"][0] == (round(14 / 416, 6), round(10 / 416, 6))  # (h, w) fractions of the input
    detector = _random(darknet.build_for_cfg(_tiny_cfg(3)))
    assert detector.config.name == "yolov3_tiny" and detector.config.priors == settings["priors"]
    assert not detector.config.fit_priors  # trained on, it keeps the file's priors
    path = str(tmp_path / "tiny.weights")
    darknet.save_yolo_weights(detector, path)
    with pytest.raises(DarknetWeightsError, match=r"tiny.weights: \d+ values left .* pass its --cfg"):
        darknet.load_yolo_weights(darknet.build_for_cfg(_tiny_cfg(2)), path)  # 2 classes: fewer values
    data = open(path, "rb").read()
    (tmp_path / "cut.weights").write_bytes(data[:len(data) - 4000])
    with pytest.raises(DarknetWeightsError, match=r"cut.weights: ends inside layer p4 output"):
        darknet.load_yolo_weights(darknet.build_for_cfg(_tiny_cfg(3)), str(tmp_path / "cut.weights"))
    with pytest.raises(ValueError, match="convolutional section 10"):  # the cfg's output says 4 classes' filters
        darknet.build_for_cfg(_tiny_cfg(3).replace("filters=24", "filters=27", 1))
    with pytest.raises(ValueError, match="a yolov3_tiny cfg, not yolov3's"):
        darknet.build_for_cfg(_tiny_cfg(3), "yolov3")
    with pytest.raises(ValueError, match=r"masks \[\[3, 4, 5\], \[1, 2, 3\]\] do not use each"):
        darknet.config_from_cfg(_tiny_cfg(3).replace("mask = 0,1,2", "mask = 1,2,3"))
    with pytest.raises(ValueError, match="square"):
        darknet.config_from_cfg(_tiny_cfg(3).replace("height=416", "height=320"))
    with pytest.raises(ValueError, match="line 3: expected key=value"):
        darknet.parse_cfg("[net]\nwidth=416\nnonsense\n")


@pytest.mark.slow
def test_tfzoo_convert_writes_a_folder_that_predict_and_export_take(tmp_path, capsys):
    from PIL import Image

    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(_tiny_cfg(3).replace("width=416", "width=128").replace("height=416", "height=128"))
    detector = _random(darknet.build_for_cfg(cfg.read_text()), seed=3)
    weights = str(tmp_path / "tiny.weights")
    darknet.save_yolo_weights(detector, weights)
    out = tmp_path / "converted"
    assert cli.main(["convert", weights, "--cfg", str(cfg), "--out", str(out)]) == 0
    assert "yolov3_tiny at 128 px, 3 classes" in capsys.readouterr().out
    assert json.loads((out / "converted.json").read_text())["format"] == "darknet"
    assert json.loads((out / "config.json").read_text())["image_size"] == 128
    assert cli.main(["convert", weights, "--cfg", str(cfg), "--out", str(out)]) == 1  # a model is there
    assert "--overwrite" in capsys.readouterr().err
    image = np.random.default_rng(0).integers(0, 255, [96, 128, 3]).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    assert cli.main(["predict", str(out), str(tmp_path / "photo.png"), "--out", str(tmp_path / "preds"),
                     "--score-threshold", "0"]) == 0
    assert json.loads((tmp_path / "preds" / "detections.json").read_text())["images"][0]["detections"]
    assert cli.main(["export", str(out), "--format", "tflite", "--out", str(tmp_path / "tiny.tflite")]) == 0
    capsys.readouterr()
    assert cli.main(["convert", str(tmp_path / "missing.weights"), "--out", str(tmp_path / "x")]) == 1
    assert "missing.weights: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_a_converted_model_starts_a_run_on_other_classes(tmp_path, capsys):
    """``--set init=DIR``: a converted YOLOv3-tiny (3 classes) starts a run on ``shapes`` (5
    classes) at the same widths: every layer copied but the class convolutions."""
    from tfzoo import train as T

    cfg = _tiny_cfg(3).replace("width=416", "width=64").replace("height=416", "height=64")
    source = _random(darknet.build_for_cfg(cfg), seed=5)
    weights = str(tmp_path / "tiny.weights")
    darknet.save_yolo_weights(source, weights)
    converted = str(tmp_path / "converted")
    (tmp_path / "tiny.cfg").write_text(cfg)
    tfzoo.convert.convert(weights, "yolov3_tiny", converted, cfg=str(tmp_path / "tiny.cfg"))
    fresh = tfzoo.build_model("yolov3_tiny", **darknet.FULL_WIDTH, image_size=64, num_classes=5)
    copied, skipped = T.init_weights(fresh, converted)
    assert sorted(skipped) == ["p4_cls", "p5_cls"] and "backbone/conv1_conv" in copied
    for name in ("backbone/conv3_conv", "head5_2_bn", "p4_box"):
        mine = T.loop._weight_layers(fresh)[name].get_weights()
        theirs = T.loop._weight_layers(source)[name].get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(mine, theirs))
    result = T.train("yolov3_tiny", "shapes:8", epochs=1, batch_size=4, out=str(tmp_path / "run"), val_split=None,
                     diagnostics=False, verbose=1, settings=["backbone_alpha=1", "head_width=1", "image_size=64",
                                                             "multi_scale=[]", f"init={converted}"])
    assert result.finished and np.isfinite(result.history["loss"]).all()
    err = capsys.readouterr().err
    assert "init from " in err and "priors kept, not fitted" in err
    # the run keeps the priors the copied box outputs were trained against, not fitted ones
    assert result.detector.config.priors == source.config.priors and not result.detector.config.fit_priors
    with pytest.raises(ValueError, match="no layer of retinanet_mobile matches"):
        T.init_weights(tfzoo.build_model("retinanet_mobile", backbone_weights=None, image_size=64), converted)
