"""torchvision checkpoints into tfzoo: the safetensors reader, the key spellings, the anchors
against torchvision's published layout, a RetinaNet state dict built with NumPy alone
(no torch: where each entry lands, the errors), and, where torch and torchvision are
installed, the whole conversion against torchvision's own model with random weights."""
import importlib.util
import json

import keras
import numpy as np
import pytest

import tfzoo.convert
from tfzoo import cli
from tfzoo.convert import torchvision as tv
from tfzoo.ops import anchors as anchor_ops

SIZE = 128  # a multiple of P7's stride 128: torchvision's strides are then 2**l too


class _Writer:
    """Random entries of a torchvision state dict, by key and shape."""

    def __init__(self, seed, tracked):
        self.rng, self.tracked, self.state = np.random.default_rng(seed), tracked, {}

    def conv(self, key, out, inp, k, bias=False, std=None):
        std = (2.0 / (inp * k * k)) ** 0.5 if std is None else std
        self.state[f"{key}.weight"] = self.rng.normal(0, std, (out, inp, k, k)).astype(np.float32)
        if bias:
            self.state[f"{key}.bias"] = self.rng.normal(0, 0.1, out).astype(np.float32)

    def linear(self, key, out, inp, std=None):
        std = inp ** -0.5 if std is None else std
        self.state[f"{key}.weight"] = self.rng.normal(0, std, (out, inp)).astype(np.float32)
        self.state[f"{key}.bias"] = self.rng.normal(0, 0.1, out).astype(np.float32)

    def norm(self, key, n):
        for name, (low, high) in (("weight", (0.5, 1.5)), ("bias", (-0.2, 0.2)), ("running_mean", (-0.2, 0.2)),
                                  ("running_var", (0.5, 2.0))):
            self.state[f"{key}.{name}"] = self.rng.uniform(low, high, n).astype(np.float32)
        if self.tracked:
            self.state[f"{key}.num_batches_tracked"] = np.array(0, np.int64)

    def resnet50(self, body="backbone.body."):
        """torchvision's ``resnet50`` trunk (``models/resnet.py``), without its classifier."""
        self.conv(f"{body}conv1", 64, 3, 7)
        self.norm(f"{body}bn1", 64)
        channels = 64
        for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
            for b in range(blocks):
                key = f"{body}layer{stage}.{b}"
                for k, (out, inp, size) in enumerate(((width, channels, 1), (width, width, 3), (4 * width, width, 1)),
                                                     start=1):
                    self.conv(f"{key}.conv{k}", out, inp, size)
                    self.norm(f"{key}.bn{k}", out)
                if b == 0:
                    self.conv(f"{key}.downsample.0", 4 * width, channels, 1)
                    self.norm(f"{key}.downsample.1", 4 * width)
                channels = 4 * width

    def fpn(self, inputs):
        for i, inp in enumerate(inputs):
            self.conv(f"backbone.fpn.inner_blocks.{i}.0", 256, inp, 1, bias=True)
            self.conv(f"backbone.fpn.layer_blocks.{i}.0", 256, 256, 3, bias=True)


def retinanet_state(seed=0, classes=91, tracked=True):
    """A random state dict with the entries and shapes of torchvision's
    ``retinanet_resnet50_fpn`` (``torchvision/models/detection/retinanet.py``), written
    from its layout without torch."""
    w = _Writer(seed, tracked)
    w.resnet50()
    w.fpn((512, 1024, 2048))
    w.conv("backbone.fpn.extra_blocks.p6", 256, 256, 3, bias=True)
    w.conv("backbone.fpn.extra_blocks.p7", 256, 256, 3, bias=True)
    for head in ("classification_head", "regression_head"):
        for i in range(4):
            w.conv(f"head.{head}.conv.{i}.0", 256, 256, 3, bias=True)
    w.conv("head.classification_head.cls_logits", 9 * classes, 256, 3, bias=True)
    w.conv("head.regression_head.bbox_reg", 36, 256, 3, bias=True)
    return w.state


def faster_rcnn_state(seed=0, classes=91, tracked=True):
    """The same for ``fasterrcnn_resnet50_fpn`` (``faster_rcnn.py``, ``rpn.py``): FPN on
    C2-C5, the RPN head, the two fully connected layers and the predictors."""
    w = _Writer(seed, tracked)
    w.resnet50()
    w.fpn((256, 512, 1024, 2048))
    w.conv("rpn.head.conv.0.0", 256, 256, 3, bias=True, std=0.01)  # torchvision's initialization of the heads
    w.conv("rpn.head.cls_logits", 3, 256, 1, bias=True, std=1e-4)  # logits of a few units, not saturated
    w.conv("rpn.head.bbox_pred", 12, 256, 1, bias=True, std=0.0005)  # deltas of about 1 on these maps
    w.linear("roi_heads.box_head.fc6", 1024, 256 * 7 * 7)
    w.linear("roi_heads.box_head.fc7", 1024, 1024)
    w.linear("roi_heads.box_predictor.cls_score", classes, 1024, std=0.01)
    w.linear("roi_heads.box_predictor.bbox_pred", 4 * classes, 1024, std=0.001)
    return w.state


def ssd_state(seed=0, classes=91):
    """The same for ``ssd300_vgg16`` (``ssd.py``, VGG-16 cfg "D"): conv1_1 ... conv4_3 at
    ``features`` 0 ... 21, conv5 and fc6/fc7 in ``extra.0``, the four extra blocks, the heads."""
    w = _Writer(seed, tracked=False)
    channels = 3
    for index, out in zip((0, 2, 5, 7, 10, 12, 14, 17, 19, 21), (64, 64, 128, 128, 256, 256, 256, 512, 512, 512)):
        w.conv(f"backbone.features.{index}", out, channels, 3, bias=True)
        channels = out
    for index in (1, 3, 5):
        w.conv(f"backbone.extra.0.{index}", 512, 512, 3, bias=True)
    w.conv("backbone.extra.0.7.1", 1024, 512, 3, bias=True)
    w.conv("backbone.extra.0.7.3", 1024, 1024, 1, bias=True)
    w.state["backbone.scale_weight"] = np.full(512, 20.0, np.float32)
    for k, (mid, out, inp) in enumerate(((256, 512, 1024), (128, 256, 512), (128, 256, 256), (128, 256, 256)),
                                        start=1):
        w.conv(f"backbone.extra.{k}.0", mid, inp, 1, bias=True)
        w.conv(f"backbone.extra.{k}.2", out, mid, 3, bias=True)
    for k, (anchors, inp) in enumerate(zip((4, 6, 6, 6, 4, 4), (512, 1024, 512, 256, 256, 256))):
        w.conv(f"head.classification_head.module_list.{k}", anchors * classes, inp, 3, bias=True, std=2e-4)
        w.conv(f"head.regression_head.module_list.{k}", anchors * 4, inp, 3, bias=True, std=0.01)
    return w.state


@pytest.fixture(scope="module")
def state():
    return retinanet_state()


@pytest.fixture(scope="module")
def converted(state):
    detector = tfzoo.build_model("retinanet", **tv.retinanet_config(state, SIZE))
    return tv.load_retinanet(detector, state, "numpy")


def test_safetensors_round_trip_and_damage(tmp_path):
    state = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.num_batches_tracked": np.array(7, np.int64)}
    path = tmp_path / "m.safetensors"
    tv.write_safetensors(path, state)
    back = tv.read_state_dict(path)
    assert set(back) == set(state)
    np.testing.assert_array_equal(back["a.weight"], state["a.weight"])
    assert back["a.num_batches_tracked"] == 7
    # bfloat16 entries (the top half of a float32) are read as float32
    blob = path.read_bytes()
    header = json.dumps({"b": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    raw = (np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    (tmp_path / "bf.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + raw)
    np.testing.assert_array_equal(tv.read_state_dict(tmp_path / "bf.safetensors")["b"], [1.5, -2.0])
    (tmp_path / "cut.safetensors").write_bytes(blob[:-4])
    with pytest.raises(tv.CheckpointError, match=r"cut\.safetensors: entry 'a\.weight'"):
        tv.read_state_dict(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(tv.CheckpointError, match="junk.safetensors: not a safetensors file"):
        tv.read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(tv.CheckpointError, match="not a checkpoint tfzoo reads"):
        tv.read_state_dict(path.rename(tmp_path / "m.bin"))


def test_old_key_spellings_read_as_current():
    old = {"module.backbone.fpn.inner_blocks.2.weight": 1, "backbone.fpn.layer_blocks.0.bias": 2,
           "head.classification_head.conv.6.weight": 3, "head.regression_head.conv.0.bias": 4,
           "rpn.head.conv.weight": 5, "head.classification_head.cls_logits.weight": 6}
    assert tv.canonical_keys(old) == {
        "backbone.fpn.inner_blocks.2.0.weight": 1, "backbone.fpn.layer_blocks.0.0.bias": 2,
        "head.classification_head.conv.3.0.weight": 3, "head.regression_head.conv.0.0.bias": 4,
        "rpn.head.conv.0.0.weight": 5, "head.classification_head.cls_logits.weight": 6}


def test_torchvision_anchors_golden():
    # torchvision's AnchorGenerator for retinanet_resnet50_fpn (sizes (32, 40, 50) ...,
    # ratios 0.5, 1, 2): its cell_anchors[0], x1 y1 x2 y2, turned to y1 x1 y2 x2.
    sizes = anchor_ops.torchvision_sizes(3, 7, 4.0, 3)
    assert sizes == [(32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406), (512, 645, 812)]
    anchors = np.asarray(anchor_ops.torchvision_multilevel_anchors(SIZE, sizes)) * SIZE
    cell = [[-23, -11, 23, 11], [-28, -14, 28, 14], [-35, -18, 35, 18], [-16, -16, 16, 16], [-20, -20, 20, 20],
            [-25, -25, 25, 25], [-11, -23, 11, 23], [-14, -28, 14, 28], [-18, -35, 18, 35]]
    np.testing.assert_allclose(anchors[:9], np.asarray(cell, np.float32)[:, [1, 0, 3, 2]], atol=1e-4)
    # cell (0, 1) of P3 is 8 px to the right; P7's first anchor is 256 x 256 at the origin
    np.testing.assert_allclose(anchors[9:18], anchors[:9] + [0, 8, 0, 8], atol=1e-4)
    p7 = sum(16 * 16 // 4**i for i in range(4)) * 9
    np.testing.assert_allclose(anchors[p7 + 3], [-256, -256, 256, 256], atol=1e-3)
    assert len(anchors) == 9 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)


def test_each_entry_lands_where_torchvision_reads_it(state, converted):
    config = converted.config
    assert (config.backbone, config.p6_input, config.symmetric_padding, config.anchor_style) == (
        "resnet50_tv", "p5", True, "torchvision")
    assert config.num_classes == 80 and config.class_names[0] == "person" and config.max_detections == 300
    # the class columns: tfzoo's (anchor a, class k) <- torchvision's a * 91 + COCO id of k
    kernel, bias = converted.get_layer("class_head_predict").get_weights()
    theirs_w = state["head.classification_head.cls_logits.weight"]
    theirs_b = state["head.classification_head.cls_logits.bias"]
    for a, k in ((0, 0), (4, 11), (8, 79)):
        row = a * 91 + tv.COCO_CATEGORY_IDS[k]
        np.testing.assert_array_equal(kernel[..., a * 80 + k], theirs_w[row].transpose(1, 2, 0))
        assert bias[a * 80 + k] == theirs_b[row]
    # the deltas: tfzoo's (dy, dx, dh, dw) <- torchvision's (dx, dy, dw, dh)
    kernel, _ = converted.get_layer("box_head_predict").get_weights()
    for ours, theirs in ((0, 1), (1, 0), (2, 3), (3, 2), (5 * 4 + 3, 5 * 4 + 2)):
        np.testing.assert_array_equal(kernel[..., ours],
                                      state["head.regression_head.bbox_reg.weight"][theirs].transpose(1, 2, 0))
    # a folded batch norm: Keras' layer computes torchvision's affine map (epsilon 1e-5)
    bn = converted.get_layer("backbone").get_layer("conv4_block6_2_bn")
    key = "backbone.body.layer3.5.bn2"
    x = np.random.default_rng(1).normal(size=(1, 2, 2, 256)).astype(np.float32)
    scale = state[f"{key}.weight"] / np.sqrt(state[f"{key}.running_var"] + 1e-5)
    theirs = (x - state[f"{key}.running_mean"]) * scale + state[f"{key}.bias"]
    np.testing.assert_allclose(np.asarray(bn(x, training=False)), theirs, rtol=1e-5, atol=1e-5)


def test_faster_rcnn_entries_land_where_torchvision_reads_them():
    state = faster_rcnn_state()
    detector = tfzoo.convert.load_state(state, image_size=SIZE)
    config = detector.config
    assert (config.roi_pool_mode, config.roi_aligned, config.extra_logits, config.nms_iou_threshold) == (
        "avg", False, 10, 0.5)
    # fc6: tfzoo's pooled (h, w, c) row <- torchvision's flattened (c, h, w) column
    kernel, _ = detector.get_layer("roi_fc0").get_weights()
    fc6 = state["roi_heads.box_head.fc6.weight"]
    for h, w, c in ((0, 0, 0), (3, 5, 17), (6, 6, 255)):
        np.testing.assert_array_equal(kernel[(h * 7 + w) * 256 + c], fc6[:, c * 49 + h * 7 + w])
    # the softmax's logits: [80 classes, the 10 unused ids, background]
    kernel, bias = detector.get_layer("roi_class").get_weights()
    rows = [*tv.COCO_CATEGORY_IDS, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 0]
    np.testing.assert_array_equal(kernel, state["roi_heads.box_predictor.cls_score.weight"][rows].T)
    np.testing.assert_array_equal(bias, state["roi_heads.box_predictor.cls_score.bias"][rows])
    kernel, _ = detector.get_layer("roi_box").get_weights()
    k = 79  # toothbrush, COCO id 90: tfzoo's (dy, dx, dh, dw) <- torchvision's (dx, dy, dw, dh)
    np.testing.assert_array_equal(kernel[:, k * 4:k * 4 + 4],
                                  state["roi_heads.box_predictor.bbox_pred.weight"][[361, 360, 363, 362]].T)
    kernel, _ = detector.get_layer("rpn_deltas").get_weights()
    np.testing.assert_array_equal(kernel[0, 0, :, 4:8].T,
                                  state["rpn.head.bbox_pred.weight"][[5, 4, 7, 6], :, 0, 0])


def test_ssd_entries_land_where_torchvision_reads_them():
    state = ssd_state()
    detector = tfzoo.convert.load_state(state)
    config = detector.config
    assert (config.image_size, config.vgg_normalization, config.extra_logits, config.pre_nms_per_class) == (
        300, "torchvision_ssd", 10, True)
    assert len(detector.anchors) == 8732
    # map 1 (6 boxes a cell): tfzoo's boxes 2..5 (tall, wide, tall, wide) are torchvision's
    # 3, 2, 5, 4 (wide first); the class columns as Faster R-CNN's, deltas swapped
    kernel, bias = detector.get_layer("class_head_1").get_weights()
    theirs_w = state["head.classification_head.module_list.1.weight"]
    for a, theirs in ((0, 0), (1, 1), (2, 3), (3, 2), (5, 4)):
        np.testing.assert_array_equal(kernel[..., a * 91 + 5], theirs_w[theirs * 91 + 6].transpose(1, 2, 0))  # bus
        np.testing.assert_array_equal(kernel[..., a * 91 + 90], theirs_w[theirs * 91].transpose(1, 2, 0))  # background
    kernel, _ = detector.get_layer("box_head_1").get_weights()
    theirs = state["head.regression_head.module_list.1.weight"][3 * 4 + 1]  # box 2's dy <- box 3's dy (entry 1)
    np.testing.assert_array_equal(kernel[..., 2 * 4 + 0], theirs.transpose(1, 2, 0))
    # the default boxes: torchvision's steps and clipped sizes; box 2 of cell (0, 0) of the
    # 38 x 38 map is tall: centre 4 / 300, h = 0.07 sqrt 2
    box = np.asarray(detector.anchors[2])
    np.testing.assert_allclose((box[0] + box[2]) / 2, 4 / 300, atol=1e-6)
    np.testing.assert_allclose(box[2] - box[0], 0.07 * 2**0.5, atol=1e-6)
    last = np.asarray(detector.anchors[-2:])  # the 1 x 1 map's ratio-2 pair, 1.23 clipped to 1
    np.testing.assert_allclose(np.maximum(last[:, 2] - last[:, 0], last[:, 3] - last[:, 1]), 1.0, atol=1e-6)
    pixels = np.full((1, 300, 300, 3), [123.0, 117.0, 104.0], np.float32)
    assert np.abs(np.asarray(detector.get_layer("normalize")(pixels))).max() < 1e-2  # RGB minus its mean


def test_bad_checkpoints_are_named(state):
    detector = tfzoo.build_model("retinanet", **tv.retinanet_config(state, SIZE))  # each load fails part-way
    build = lambda: detector  # noqa: E731
    missing = {k: v for k, v in state.items() if k != "backbone.body.layer2.1.bn3.running_var"}
    with pytest.raises(tv.CheckpointError, match=r"no entry 'backbone\.body\.layer2\.1\.bn3\.running_var'"):
        tv.load_retinanet(build(), missing, "m.pth")
    no_block = {k: v for k, v in state.items() if not k.startswith("backbone.body.layer4.2.")}  # a whole block
    with pytest.raises(tv.CheckpointError, match=r"no entry 'backbone\.body\.layer4\.2\.conv1\.weight'"):
        tv.load_retinanet(build(), no_block, "m.pth")
    extra = {**state, "roi_heads.box_head.fc6.weight": np.zeros((2, 2), np.float32)}
    with pytest.raises(tv.CheckpointError, match=r"m\.pth: entries the model has no place for: roi_heads"):
        tv.load_retinanet(build(), extra, "m.pth")
    wrong = {**state, "backbone.fpn.layer_blocks.1.0.weight": np.zeros((256, 256, 1, 1), np.float32)}
    with pytest.raises(tv.CheckpointError, match=r"layer_blocks\.1\.0 gives fpn_output_p4 weights of shapes"):
        tv.load_retinanet(build(), wrong, "m.pth")
    v2 = {**state, "backbone.fpn.extra_blocks.p6.weight": np.zeros((256, 2048, 3, 3), np.float32)}
    with pytest.raises(tv.CheckpointError, match="retinanet_resnet50_fpn_v2"):
        tv.retinanet_config(v2)
    # a fine-tuned head (torchvision's convention: column 0 the background, 3 classes)
    assert tv.retinanet_config(retinanet_state(classes=4))["num_classes"] == 3


def test_convert_command_reads_a_safetensors_file(tmp_path, state, capsys):
    path = tmp_path / "retinanet.safetensors"
    tv.write_safetensors(path, {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
    out = tmp_path / "converted"
    assert cli.main(["convert", str(path), "--image-size", str(SIZE), "--out", str(out)]) == 0
    assert "retinanet at 128 px, 80 classes" in capsys.readouterr().out
    source = json.loads((out / "converted.json").read_text())
    assert source["architecture"] == "retinanet_resnet50_fpn" and source["bn_eps"] == 0.0  # frozen, as published
    restored = keras.saving.load_model(str(out / "model.keras"), safe_mode=True, compile=False)
    assert restored.config.anchor_style == "torchvision"
    assert cli.main(["convert", str(path), "--model", "yolov3", "--out", str(tmp_path / "x")]) == 1
    assert "converts into retinanet, not yolov3" in capsys.readouterr().err



# torchvision is looked for, not imported: imported after TensorFlow it crashes the
# process (check_retinanet runs it in a process of its own).
HAS_TORCHVISION = all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision"))


@pytest.mark.skipif(not HAS_TORCHVISION, reason="needs torch and torchvision (pip install 'tfzoo[convert]')")
@pytest.mark.parametrize("tracked", [True, False], ids=["batchnorm", "frozen_eps0"])
def test_retinanet_against_torchvision(tmp_path, tracked):
    """torchvision's model with random weights (random batch-norm statistics too, and a
    class bias that lets detections through) against its conversion: the issue's 1e-4 on
    features and raw outputs, every non-empty detection matched by class and IoU >= 0.99."""
    import torch as torch_module  # noqa: PLC0415
    state = retinanet_state(seed=3, tracked=tracked)
    state["head.classification_head.cls_logits.bias"] = np.random.default_rng(4).uniform(
        -5.5, -2.9, 9 * 91).astype(np.float32)
    path = tmp_path / "retinanet.pth"
    torch_module.save({k: torch_module.from_numpy(v) for k, v in state.items()}, path)
    detector = tfzoo.convert.load(str(path), image_size=SIZE)
    images = np.random.default_rng(5).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    report = tv.check_retinanet(detector, tv.read_state_dict(path), images, score_threshold=0.1)
    assert report["settings"]["bn_eps"] == (1e-5 if tracked else 0.0)
    assert max(report["features"].values()) < 1e-4 and max(report["heads"].values()) < 1e-4, report
    found = report["detections"]
    assert found["theirs"] > 20 and found["matched"] == found["theirs"] == found["ours"], found
    assert found["only_theirs"] == found["only_ours"] == 0 and found["max_score_diff"] < 1e-5


@pytest.mark.skipif(not HAS_TORCHVISION, reason="needs torch and torchvision (pip install 'tfzoo[convert]')")
def test_faster_rcnn_against_torchvision(tmp_path, capsys):
    """The same for fasterrcnn_resnet50_fpn (frozen batch norm, as published): maps, the
    RPN's and the RoI head's raw outputs within 1e-4; every proposal and detection whose
    sides are a pixel or more matched. Converted by ``tfzoo convert --check``."""
    path = tmp_path / "faster_rcnn.safetensors"
    tv.write_safetensors(path, faster_rcnn_state(seed=6, tracked=False))
    assert cli.main(["convert", str(path), "--image-size", str(SIZE), "--out", str(tmp_path / "c"), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "against torchvision on 2 random images" in printed and "proposals: torchvision" in printed, printed
    detector = keras.saving.load_model(str(tmp_path / "c" / "model.keras"), safe_mode=True, compile=False)
    images = np.random.default_rng(7).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    report = tv.check_faster_rcnn(detector, tv.read_state_dict(path), images)
    assert max(report["features"].values()) < 1e-4 and max(report["heads"].values()) < 1e-4, report
    for key in ("proposals", "detections"):
        found = report[key]
        assert found["theirs"] > 20 and found["matched"] == found["theirs"] == found["ours"], (key, found)
    # (the random head's logits run to the hundreds: 2e-6 of that moves a softmax by 2e-4)
    assert report["detections"]["max_score_diff"] < 1e-3


@pytest.mark.skipif(not HAS_TORCHVISION, reason="needs torch and torchvision (pip install 'tfzoo[convert]')")
def test_ssd_against_torchvision(tmp_path):
    """The same for ssd300_vgg16, detections above 0.3 (the class head drawn small enough
    that no softmax saturates: among boxes of one class all scoring 1.0 to float precision,
    either NMS may keep any)."""
    path = tmp_path / "ssd.safetensors"
    state = ssd_state(seed=8)
    tv.write_safetensors(path, state)
    detector = tfzoo.convert.load(str(path))
    images = np.random.default_rng(9).uniform(0, 255, (1, 300, 300, 3)).astype(np.float32)
    report = tv.check_ssd(detector, tv.read_state_dict(path), images, score_threshold=0.3)
    assert max(report["features"].values()) < 1e-4 and max(report["heads"].values()) < 1e-4, report
    found = report["detections"]
    assert found["theirs"] > 20 and found["matched"] == found["theirs"] == found["ours"], found


def test_a_run_started_from_a_converted_model_takes_its_architecture(tmp_path, converted):
    """``--set init=DIR`` of a converted RetinaNet: the run's ``retinanet`` takes the
    converted backbone, P6, padding and anchors (else torchvision's ResNet weights would land
    in keras.applications' layers of the same names and shapes), unless they are set."""
    from tfzoo.models import MODELS
    from tfzoo.train.loop import _init_config

    (tmp_path / "config.json").write_text(converted.config.to_json())
    config = MODELS["retinanet"].config.replace(init=str(tmp_path), num_classes=3, backbone_weights="imagenet")
    taken = _init_config(config, set(), verbose=False)
    assert (taken.backbone, taken.backbone_weights, taken.p6_input, taken.symmetric_padding, taken.anchor_style) == (
        "resnet50_tv", None, "p5", True, "torchvision")
    assert taken.num_classes == 3  # the data's, not the source's
    assert _init_config(config, {"anchor_style"}, verbose=False).anchor_style == "exact"
