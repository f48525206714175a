"""YOLOv1, YOLOv2, YOLOv3: the papers' layouts and prediction counts, the targets read back
by the decoders, YOLOv1's loss against a slow reference, the ignore and rescore rules,
multi-scale training and the fixed size of YOLOv1."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
import tfzoo.data
from tfzoo.data import schema
from tfzoo.models import yolo, yolov1


def _convs(model):
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, keras.layers.Conv2D)]


def _tiny(name, **overrides):
    preset = tfzoo.models.MODELS[name]
    return preset(**{**preset.detector.tiny, **overrides})


@pytest.mark.parametrize("name, grids, predictions, params", [
    ("yolov3", [13, 26, 52], 10647, 62.0e6),  # the paper's 61.9 M (Darknet counts no BN moving stats)
    ("yolov2", [13], 845, 50.7e6),
])
def test_full_presets_have_the_papers_grids_and_prediction_counts(name, grids, predictions, params):
    detector = tfzoo.build_model(name)
    assert detector.anchors.shape == (predictions, 4)
    assert sorted(h for h, _ in detector.map_sizes) == grids and detector.image_size == (416, 416)
    assert abs(detector.count_params() - params) < 0.05e6
    out = detector(np.zeros([1, 416, 416, 3], np.float32))
    per_prior = 5 + detector.config.num_classes
    assert sum(int(np.prod(v.shape[1:])) for v in out.values()) == predictions * per_prior


def test_the_trunks_have_the_papers_convolution_counts():
    from tfzoo import backbones

    assert len(_convs(backbones.build_backbone("darknet53", 64))) == 52
    assert len(_convs(backbones.build_backbone("darknet19", 64))) == 18
    assert len(_convs(backbones.build_backbone("yolov1", 448, features=("C6",)))) == 24
    assert len(_convs(backbones.build_backbone("fast_yolo", 448, features=("C6",)))) == 9
    trunk = backbones.build_backbone("yolov1", 448, features=("C6",))
    assert tuple(trunk.outputs[0].shape) == (None, 7, 7, 1024)
    tiny = backbones.build_backbone("darknet_tiny", 416, features=("C4", "C5"))
    assert {k: tuple(v.shape[1:]) for k, v in tiny.output.items()} == {"C4": (26, 26, 256), "C5": (13, 13, 512)}


def test_yolov1_is_the_papers_network():
    config = yolov1.PRESETS["yolov1"]
    assert (config.grid_size, config.boxes_per_cell, config.num_classes, config.image_size) == (7, 2, 20, 448)
    assert (config.lambda_coord, config.lambda_noobj, config.dropout, config.fc_units) == (5.0, 0.5, 0.5, (4096,))
    # the paper's schedule: 1e-3 warming to 1e-2, then 1e-2 / 1e-3 / 1e-4 for 75 / 30 / 30 epochs
    assert (config.learning_rate, config.warmup_factor, config.epochs) == (1e-2, 0.1, 135)
    np.testing.assert_allclose(np.array(config.lr_decay_at) * 135, [75, 105])
    assert (config.momentum, config.weight_decay, config.augment) == (0.9, 5e-4, "yolo")
    detector = tfzoo.build_model("yolov1_tiny", num_classes=20)
    assert tuple(detector.outputs[0].shape) == (None, 7, 7, 30)  # S x S x (B * 5 + C)


def test_yolov1_shared_cell_output_is_one_linear_map_of_the_flattened_map():
    # shared 1x1 map + free fully connected layer (equalized): the paper's single linear
    # layer, reparametrized; fold it into one kernel and compare with the network
    keras.utils.set_random_seed(3)
    detector = _tiny("yolov1", fc_units=(), dropout=0.0, head_channels=16, equalized_fc=True, shared_cell_output=True)
    config = detector.config
    s, per_cell = config.grid_size, config.boxes_per_cell * 5 + config.num_classes
    for layer in (detector.get_layer("fc_out"), detector.get_layer("cell_out")):  # away from the small init
        layer.set_weights([np.random.default_rng(1).normal(0, 0.5, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    features = keras.Model(detector.inputs, detector.get_layer("head_leaky").output)
    images = np.random.default_rng(2).uniform(0, 255, (2, config.image_size, config.image_size, 3)).astype(np.float32)
    x = features(images).numpy()
    channels = x.shape[-1]
    shared_kernel, shared_bias = detector.get_layer("cell_out").get_weights()
    fc_kernel, fc_bias = detector.get_layer("fc_out").get_weights()
    kernel = fc_kernel / np.sqrt(s * s * channels)  # the equalized input scale
    for cell in range(s * s):  # the shared block on the diagonal
        kernel[cell * channels:(cell + 1) * channels, cell * per_cell:(cell + 1) * per_cell] += shared_kernel[0, 0]
    bias = fc_bias + np.tile(shared_bias, s * s)
    want = (x.reshape(2, -1).astype(np.float64) @ kernel + bias).reshape(2, s, s, per_cell)
    got = detector(images, training=False)[yolov1.CELLS].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="shared_cell_output"):
        yolov1.YOLOv1Config(shared_cell_output=True)  # with the paper's hidden 4,096 layer


def test_yolov1_refuses_another_input_size():
    detector = _tiny("yolov1")
    with pytest.raises(ValueError, match="fixed-size layers"):
        detector.with_image_size(320)
    from tfzoo.train.config import resolve_config

    with pytest.raises(ValueError, match="fully connected"):
        resolve_config("yolov1", ["a", "b"], image_size=512)


# --- YOLOv1's loss against the paper's formula, one cell at a time ---------------------------


def np_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def np_yolov1_loss(pred, cell_classes, cell_boxes, num_boxes, num_classes, coord=5.0, noobj=0.5, class_loss="squared"):
    batch, s = pred.shape[0], pred.shape[1]
    box = obj = cls = 0.0
    for n in range(batch):
        for i in range(s):
            for j in range(s):
                p = pred[n, i, j]
                boxes = [p[b * 5:(b + 1) * 5] for b in range(num_boxes)]
                if cell_classes[n, i, j] < 0:
                    obj += noobj * sum(b[4] ** 2 for b in boxes)
                    continue
                oy, ox, h, w = cell_boxes[n, i, j]
                truth = [(i + oy) / s - h / 2, (j + ox) / s - w / 2, (i + oy) / s + h / 2, (j + ox) / s + w / 2]
                ious, errors = [], []
                for y, x, rh, rw, _ in boxes:
                    ph, pw = rh ** 2, rw ** 2
                    cy, cx = (i + y) / s, (j + x) / s
                    ious.append(np_iou([cy - ph / 2, cx - pw / 2, cy + ph / 2, cx + pw / 2], truth))
                    errors.append((y - oy) ** 2 + (x - ox) ** 2 + (rh - h ** 0.5) ** 2 + (rw - w ** 0.5) ** 2)
                r = int(np.argmax(ious)) if max(ious) > 0 else int(np.argmin(errors))
                box += coord * errors[r]
                obj += (boxes[r][4] - ious[r]) ** 2 + noobj * sum(b[4] ** 2 for k, b in enumerate(boxes) if k != r)
                onehot = np.eye(num_classes)[cell_classes[n, i, j]]
                if class_loss == "softmax":
                    logits = p[num_boxes * 5:].astype(np.float64)
                    cls += float(np.log(np.sum(np.exp(logits))) - logits[cell_classes[n, i, j]])
                else:
                    cls += float(np.sum((p[num_boxes * 5:] - onehot) ** 2))
    return {"box_loss": box / batch, "obj_loss": obj / batch, "cls_loss": cls / batch}


@pytest.mark.parametrize("class_loss", ["squared", "softmax"])
def test_yolov1_loss_is_the_papers_formula(class_loss):
    """The paper's sum-squared loss; ``class_loss="softmax"`` swaps the class term for the
    cross-entropy of the cell's class logits (the CPU preset's)."""
    detector = _tiny("yolov1", num_classes=3, class_loss=class_loss)
    config = detector.config
    s, b, k = config.grid_size, config.boxes_per_cell, config.num_classes
    rng = np.random.default_rng(0)
    pred = rng.normal(0.4, 0.3, (2, s, s, b * 5 + k)).astype(np.float32)
    classes = np.full((2, s, s), -1, np.int32)
    boxes = np.zeros((2, s, s, 4), np.float32)
    for n, i, j in [(0, 1, 2), (0, 3, 3), (1, 0, 0), (1, 2, 1)]:
        classes[n, i, j] = rng.integers(0, k)
        boxes[n, i, j] = [*rng.uniform(0.05, 0.95, 2), *rng.uniform(0.05, 0.6, 2)]
    pred[1, 2, 1, :4] = [0.5, 0.5, 0.01, 0.01]  # neither predictor overlaps: the smaller error decides
    pred[1, 2, 1, 5:9] = [0.5, 0.5, 0.02, 0.02]
    got = detector.compute_losses({yolov1.CELL_CLASSES: classes, yolov1.CELL_BOXES: boxes}, {yolov1.CELLS: pred})
    want = np_yolov1_loss(pred, classes, boxes, b, k, class_loss=class_loss)
    for key in want:
        np.testing.assert_allclose(float(got[key]), want[key], rtol=1e-4, err_msg=key)
    # decoding: probabilities by softmax of the logits, or the outputs clipped at 0
    one = pred[:1, 1:2, 2:3]  # a cell with an object
    logits = one[0, 0, 0, b * 5:]
    probabilities = np.exp(logits) / np.exp(logits).sum() if class_loss == "softmax" else np.maximum(logits, 0)
    full = np.zeros((1, s, s, b * 5 + k), np.float32)
    full[0, 1, 2] = one[0, 0, 0]
    full[0, 1, 2, 4] = 0.9  # the first predictor's confidence
    full[0, 1, 2, 9] = 0.0
    detections = detector.decode({yolov1.CELLS: full})
    top = float(detections["detection_scores"][0, 0])
    assert top == pytest.approx(0.9 * probabilities.max(), rel=1e-5)


# --- the encoders' targets, read back by the decoders -----------------------------------


def _perfect_outputs(detector, targets):
    """Raw outputs that predict exactly the encoded targets (confident, right class)."""
    config = detector.config
    k = config.num_classes
    if isinstance(detector, yolov1.YOLOv1):
        classes, boxes = targets[yolov1.CELL_CLASSES], targets[yolov1.CELL_BOXES]
        b = config.boxes_per_cell
        out = np.zeros(classes.shape + (b * 5 + k,), np.float32)
        has = classes >= 0
        out[..., 0:2] = boxes[..., 0:2]
        out[..., 2:4] = np.sqrt(boxes[..., 2:4])
        out[..., 4] = has
        out[..., b * 5:] = np.eye(k)[np.maximum(classes, 0)] * has[..., None]
        return {yolov1.CELLS: out}
    outputs = {}
    for name in detector.output_names_by_stride:
        classes, deltas = targets[f"{name}_classes"], targets[f"{name}_deltas"]
        has = classes >= 0
        out = np.zeros(classes.shape + (5 + k,), np.float32)
        offsets = np.clip(deltas[..., 0:2], 1e-4, 1 - 1e-4)
        out[..., 0:2] = np.log(offsets / (1 - offsets))
        out[..., 2:4] = deltas[..., 2:4]
        out[..., 4] = np.where(has, 12.0, -12.0)
        out[..., 5:] = np.where(np.eye(k)[np.maximum(classes, 0)] > 0, 12.0, -12.0)
        outputs.update({key: value.numpy() for key, value in yolo.split_darknet_layout(
            out.reshape(classes.shape[:3] + (-1,)), name, classes.shape[3], k).items()})
    return outputs


@pytest.mark.parametrize("name", ["yolov1", "yolov2", "yolov3_tiny", "yolov3"])
def test_decoding_perfect_outputs_gives_back_the_objects(name):
    detector = _tiny(name, num_classes=5)
    examples = tfzoo.data.load("shapes:3", "val")
    train = tfzoo.data.pipeline(examples, detector, 3, training=True, augment="none", shuffle_buffer=0)
    _, targets = train.get_single_element()
    truth = tfzoo.data.pipeline(examples, detector, 3, training=False)
    _, ground_truth = truth.get_single_element()
    outputs = _perfect_outputs(detector, {k: v.numpy() for k, v in targets.items()})
    detections = detector.decode(outputs)
    for n in range(3):
        gt = ground_truth[schema.BOXES][n].numpy()
        gt_classes = ground_truth[schema.CLASSES][n].numpy()
        real = gt_classes >= 0
        count = int(detections["num_detections"][n])
        found = detections["detection_boxes"][n, :count].numpy()
        found_classes = detections["detection_classes"][n, :count].numpy()
        strong = detections["detection_scores"][n, :count].numpy() > 0.5
        # every object kept by the one-per-slot rule comes back, exactly, with its class
        matched = 0
        for box, c in zip(gt[real], gt_classes[real]):
            close = np.all(np.abs(found - box) < 2e-3, axis=1) & (found_classes == c) & strong
            matched += int(close.any())
        assert matched >= real.sum() - 1 and strong.sum() <= real.sum()


# --- the YOLOv2/v3 objectness rules -------------------------------------------------------


def _one_object(detector):
    example = {schema.IMAGE: tf.zeros([*detector.image_size, 3]), schema.BOXES: tf.constant([[0.2, 0.2, 0.7, 0.6]]),
               schema.CLASSES: tf.constant([1]), schema.IS_CROWD: tf.constant([False]),
               schema.DIFFICULT: tf.constant([False]), schema.IMAGE_ID: tf.constant("x")}
    targets = detector.encoder.targets(example)
    return {k: v.numpy()[None] for k, v in targets.items()}


def test_yolov3_ignores_the_objectness_of_negatives_that_overlap_an_object():
    detector = _tiny("yolov3_tiny", num_classes=2, image_size=128)
    targets = _one_object(detector)
    outputs = _perfect_outputs(detector, targets)
    name = detector.output_names_by_stride[0]
    classes = targets[f"{name}_classes"][0]
    positive = np.argwhere(classes >= 0)
    # a negative prior of another cell, its box moved onto the object: ignored (IoU > 0.5);
    # the same prior elsewhere, far from the object: a negative
    rows, cols, priors = classes.shape
    per = 5 + detector.config.num_classes
    raw = detector.predictions(outputs, name).numpy()
    assert raw.shape == (1, rows, cols, priors, per)
    all_positive = [tuple(p) for p in positive]
    candidates = [(r, c, j) for r in range(rows) for c in range(cols) for j in range(priors)
                  if (r, c, j) not in all_positive]
    box = [0.2, 0.2, 0.7, 0.6]
    cy, cx, h, w = 0.45, 0.4, 0.5, 0.4
    ignored = negative = None
    for r, c, j in candidates:
        prior = detector.config.priors[detector.config.masks[0][j]]
        oy, ox = cy * rows - r, cx * cols - c
        if 0.0 < oy < 1.0 and 0.0 < ox < 1.0 and ignored is None:
            ignored = (r, c, j)
            raw[0, r, c, j, :4] = [np.log(oy / (1 - oy)), np.log(ox / (1 - ox)), np.log(h / prior[0]),
                                   np.log(w / prior[1])]
        elif negative is None and r == rows - 1:
            negative = (r, c, j)
    assert ignored is not None and negative is not None, box
    raw[0, ignored[0], ignored[1], ignored[2], 4] = 3.0
    raw[0, negative[0], negative[1], negative[2], 4] = 3.0
    outputs = {k: tf.Variable(v) for k, v in outputs.items()}
    outputs.update({k: tf.Variable(v) for k, v in yolo.split_darknet_layout(
        raw.reshape(1, rows, cols, -1), name, priors, detector.config.num_classes).items()})
    with tf.GradientTape() as tape:
        loss = detector.compute_losses(targets, outputs)["obj_loss"]
    grad = tape.gradient(loss, outputs[yolo.output_key(name, "obj")]).numpy()  # [1, h, w, P]
    assert grad[(0, *ignored)] == 0.0  # no objectness loss: it overlaps the object
    np.testing.assert_allclose(grad[(0, *negative)], 1 / (1 + np.exp(-3.0)), rtol=1e-5)  # BCE towards 0


def test_yolov2_trains_objectness_to_the_iou_of_the_predicted_box():
    detector = _tiny("yolov2", num_classes=2)
    config = detector.config
    targets = _one_object(detector)
    outputs = _perfect_outputs(detector, targets)
    name = "p5"
    classes = targets[f"{name}_classes"][0]
    (r, c, j), = np.argwhere(classes >= 0)
    rows, cols, priors = classes.shape
    raw = detector.predictions(outputs, name).numpy()
    raw[0, r, c, j, 2] += np.log(0.5)  # the predicted box is half as tall: IoU 0.5
    raw[0, r, c, j, 4] = 0.0  # confidence 0.5

    def split(raw):
        return yolo.split_darknet_layout(raw.reshape(1, rows, cols, -1), name, priors, config.num_classes)

    loss = detector.compute_losses(targets, split(raw))
    negatives = 0.5 * config.noobject_scale * (1 / (1 + np.exp(12.0))) ** 2 * (rows * cols * priors - 1)
    np.testing.assert_allclose(float(loss["obj_loss"]), config.object_scale * 0.5 * (0.5 - 0.5) ** 2 + negatives,
                               atol=1e-6)
    raw[0, r, c, j, 4] = 2.0
    loss = detector.compute_losses(targets, split(raw))
    sigma = 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(float(loss["obj_loss"]), config.object_scale * 0.5 * (sigma - 0.5) ** 2 + negatives,
                               rtol=1e-4)


# --- multi-scale training -------------------------------------------------------------------


def test_multi_scale_training_changes_the_input_size_and_the_grids_with_it():
    keras.utils.set_random_seed(0)
    detector = _tiny("yolov3_tiny", num_classes=5, image_size=96, multi_scale=(0.5, 1.0), size_period=1)
    assert detector.config.train_sizes == (64, 96)
    train = tfzoo.data.pipeline(tfzoo.data.load("shapes:16", "train"), detector, 2, training=True, seed=1)
    sizes = set()
    for images, targets in train.take(8):
        size = int(images.shape[1])
        sizes.add(size)
        assert images.shape[2] == size
        assert targets["p5_classes"].shape[1:3] == (size // 32, size // 32)
        assert targets["p4_deltas"].shape[1:3] == (size // 16, size // 16)
    assert sizes == {64, 96}
    detector.compile(optimizer=keras.optimizers.SGD(1e-3))
    history = detector.fit(train, epochs=1, steps_per_epoch=6, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    out = detector(np.zeros([1, 64, 64, 3], np.float32))  # the model takes any multiple of 32
    assert out["p5_box"].shape[1:3] == out["p5_obj"].shape[1:3] == out["p5_cls"].shape[1:3] == (2, 2)


def test_yolo_configs_check_their_fields():
    with pytest.raises(ValueError, match="masks must use each"):
        tfzoo.build_model("yolov3", masks=((0, 1, 2), (3, 4, 5)))
    with pytest.raises(ValueError, match="priors must be"):
        tfzoo.build_model("yolov2_tiny", priors=((0.1,),))
    with pytest.raises(ValueError, match="multi_scale"):
        yolo.YOLOConfig(multi_scale=(1.5, 0.5))
    assert yolo.PRESETS_V3["yolov3"].train_sizes == tuple(range(320, 609, 32))  # the paper's {320, ..., 608}
    assert yolo.YOLOConfig(multi_scale=()).train_sizes == ()


# --- tfzoo train, anchors, inspect ----------------------------------------------------------


@pytest.mark.slow
def test_tfzoo_train_runs_a_yolo_with_fitted_priors_mixed_precision_and_resume(tmp_path):
    """``tfzoo train``'s path for a YOLO preset on its tiny widths: ``priors=auto`` fits the
    priors to the training boxes (written to config.json), multi-scale batches, mixed
    precision, a checkpoint, evaluation, then a resume to one more epoch."""
    import json

    from tfzoo import train as T

    tiny = {**yolo.YOLOv3.tiny, "multi_scale": (0.5, 1.0), "size_period": 1}
    settings = [f"{k}={json.dumps(v)}" for k, v in tiny.items() if k not in ("image_size", "num_classes")]
    run = dict(out=str(tmp_path / "run"), image_size=64, batch_size=4, val_data="shapes:4", diagnostics=False,
               verbose=0)
    result = T.train("yolov3_tiny", "shapes:8", epochs=1, mixed_precision=True, settings=settings + ["priors=auto"],
                     **run)
    assert result.finished and result.steps == 2 and np.isfinite(result.history["loss"]).all()
    saved = json.loads((tmp_path / "run" / T.CONFIG_FILE).read_text())
    assert saved["priors"] != [list(p) for p in yolo.YOLOV3_TINY_PRIORS] and len(saved["priors"]) == 6
    areas = [h * w for h, w in saved["priors"]]
    assert areas == sorted(areas) and set(result.metrics) >= {"AP", "AP50"}
    resumed = T.train("yolov3_tiny", "shapes:8", epochs=2, resume=True, mixed_precision=True,
                      settings=settings + ["priors=auto"], **run)
    assert resumed.finished and resumed.steps == 4
    assert json.loads((tmp_path / "run" / T.CONFIG_FILE).read_text())["priors"] == saved["priors"]
    with pytest.raises(ValueError, match="priors=auto applies to the YOLOv2 and YOLOv3"):
        T.train("yolov1_tiny", "shapes:8", epochs=1, settings=["priors=auto"], out=str(tmp_path / "v1"), verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov1_tiny", "yolov2_tiny"])
def test_yolov1_and_yolov2_train_in_mixed_precision_with_float32_outputs(tmp_path, name):
    from tfzoo import train as T

    preset = tfzoo.models.MODELS[name]
    settings = [f"{k}={json.dumps(v)}" for k, v in preset.detector.tiny.items() if k != "num_classes"]
    result = T.train(name, "shapes:8", epochs=1, batch_size=4, mixed_precision=True, settings=settings,
                     out=str(tmp_path / "run"), val_data="shapes:4", diagnostics=False, verbose=0)
    assert result.finished and np.isfinite(result.history["loss"]).all() and set(result.metrics) >= {"AP", "AP50"}
    assert any(layer.dtype_policy.name == T.mixed_policy_name() for layer in result.detector.layers)
    outputs = result.detector(np.zeros([1, *result.detector.image_size, 3], np.float32))
    assert all(v.dtype == tf.float32 for v in outputs.values())


def test_tfzoo_anchors_fits_priors_and_compares_them_with_the_presets(capsys):
    from tfzoo import cli

    assert cli.main(["anchors", "--data", "shapes:40", "--model", "yolov2_tiny", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["k"] == 5 and len(result["priors"]) == 5 and result["boxes"] > 40
    assert 0 < result["default_priors_mean_iou"] < result["mean_iou"] <= 1  # fitted beat the VOC priors here
    assert result["settings"] == [f"priors={json.dumps(result['priors']).replace(' ', '')}"]
    assert cli.main(["anchors", "--data", "shapes:40", "--model", "yolov3", "-k", "6"]) == 0
    text = capsys.readouterr().out
    assert "6 priors by k-means" in text and "masks=[[4,5],[2,3],[0,1]]" in text
    assert cli.main(["anchors", "--data", "shapes:4", "--model", "ssd_mobile"]) != 0
    assert "has no priors" in capsys.readouterr().err


def test_tfzoo_inspect_counts_what_one_object_per_cell_drops(capsys):
    from tfzoo import cli

    assert cli.main(["inspect", "--data", "shapes:60", "--model", "yolov1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["model"]
    from tfzoo.ops import matcher

    examples = list(tfzoo.data.load("shapes:60", "train").as_numpy_iterator())
    want = sum(int(matcher.cell_targets(e["boxes"], e["classes"], ~e["difficult"], (7, 7))[2]) for e in examples)
    assert result["rule"] == "one object per cell" and result["objects_dropped"] == want > 0
    assert result["objects"] == sum(len(e["boxes"]) for e in examples)
    assert cli.main(["inspect", "--data", "shapes:20", "--model", "yolov2"]) == 0
    text = capsys.readouterr().out
    assert "one object per cell and prior" in text and "median best shape IoU" in text
    with pytest.raises(SystemExit):  # a usage error before any data is read
        cli.main(["inspect", "--data", "shapes:2", "--model", "yolo9"])
    assert "unknown model 'yolo9'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["inspect", "--data", "shapes:2", "--model", "yolov1", "--image-size", "640"])
    assert "fixed-size layers" in capsys.readouterr().err


def test_tfzoo_train_takes_priors_auto_on_the_command_line(tmp_path, capsys):
    from tfzoo import cli

    argv = ["train", "yolov3_tiny", "--data", "shapes:8", "--image-size", "64", "--batch-size", "4", "--epochs", "1",
            "--out", str(tmp_path / "run"), "--set", "priors=auto", "--no-flip"]
    for key, value in yolo.YOLOv3.tiny.items():
        if key not in ("image_size", "num_classes"):
            argv += ["--set", f"{key}={json.dumps(value)}"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "priors fitted to" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["priors"] != [list(p) for p in
                                                                                   yolo.YOLOV3_TINY_PRIORS]


# --- Darknet's .weights files ---------------------------------------------------------------


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        low = 0.5 if "variance" in w.name else -1.0
        w.assign(rng.uniform(low, 1.0, w.shape).astype(np.float32))


def test_darknet_weights_round_trip_bit_for_bit_and_have_the_published_sizes(tmp_path):
    from tfzoo import backbones
    from tfzoo.backbones import darknet

    trunk = backbones.build_backbone("darknet19", 64)
    _randomize(trunk)
    path = str(tmp_path / "darknet19.conv.23")
    darknet.save_darknet_weights(trunk, path)
    # Darknet-19's 18 convolutions: 4 batch-norm vectors and a kernel each, after a 20-byte header
    convs = darknet.darknet_convolutions(trunk)
    assert len(convs) == 18
    floats = sum(4 * c.kernel.shape[-1] + int(np.prod(c.kernel.shape)) for c, _ in convs)
    assert (tmp_path / "darknet19.conv.23").stat().st_size == 20 + 4 * floats
    loaded = backbones.build_backbone("darknet19", 64, weights=path)  # the Darknet file, not Keras'
    for a, b in zip(trunk.get_weights(), loaded.get_weights()):
        assert np.array_equal(a, b)
    # The published files' sizes follow from the same layout: yolov3.weights is 248,007,048
    # bytes, darknet53.conv.74 (the trunk's 52 convolutions) 162,482,580.
    assert 20 + 4 * tfzoo.build_model("yolov3").count_params() == 248_007_048
    d53 = darknet.darknet_convolutions(backbones.build_backbone("darknet53", 64))
    assert len(d53) == 52
    assert 20 + 4 * sum(4 * c.kernel.shape[-1] + int(np.prod(c.kernel.shape)) for c, _ in d53) == 162_482_580


def test_a_trunk_file_loads_into_a_whole_detector_and_bad_files_are_named(tmp_path):
    from tfzoo.backbones import darknet

    detector = _tiny("yolov2")
    trunk = detector.get_layer("backbone")
    _randomize(trunk, seed=1)
    path = str(tmp_path / "trunk.weights")
    darknet.save_darknet_weights(trunk, path)
    fresh = _tiny("yolov2")
    assert darknet.load_darknet_weights(fresh, path) == 18  # the trunk's 18 of the detector's 23
    for a, b in zip(trunk.get_weights(), fresh.get_layer("backbone").get_weights()):
        assert np.array_equal(a, b)
    with open(path, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.weights"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(darknet.DarknetWeightsError, match=r"cut.weights: ends inside layer \w+"):
        darknet.load_darknet_weights(_tiny("yolov2"), str(cut), convolutions=18)
    other = _tiny("yolov3_tiny")
    with pytest.raises(darknet.DarknetWeightsError, match="trunk.weights"):
        darknet.load_darknet_weights(other, path)
    # the pairs follow the trunk, each convolution with its own batch norm
    pairs = darknet.darknet_convolutions(_tiny("yolov3"))
    assert len(pairs) == 52 and all(n is not None and n.name == c.name[:-5] + "_bn" for c, n in pairs)


# --- int8 exports ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov1", "yolov3_tiny"])
def test_int8_export_keeps_the_decoder_float(tmp_path, name):
    """The int8 TFLite file quantizes the network and keeps the decoder float32 (sigmoids,
    box decoding, NMS): no score or box passes through an int8 grid."""
    from tfzoo.export import export_tflite, load_model
    from tfzoo.export.tflite import decoder_requantizations, non_builtin_ops, op_input_types, op_names

    detector = _tiny(name, num_classes=5)
    images = tfzoo.data.pipeline(tfzoo.data.load("shapes:4", "train"), detector, 1, training=False)
    path = export_tflite(detector, str(tmp_path / "int8.tflite"), quantize="int8", calibration_images=images)
    model_bytes = (tmp_path / "int8.tflite").read_bytes()
    assert not decoder_requantizations(model_bytes) and not non_builtin_ops(op_names(model_bytes))
    types = op_input_types(model_bytes)
    assert "INT8" in types["CONV_2D"] and types["NON_MAX_SUPPRESSION_V5"] == {"FLOAT32"}
    # YOLOv3's 1x1 output convolutions stay float32 (int8, they cost 3.5 AP points), the rest is int8
    from tensorflow.lite.python import schema_py_generated as schema

    from tfzoo.export.tflite import _operators

    convs = {}
    for graph, op, op_type in _operators(model_bytes):
        if op_type == "CONV_2D":
            output = graph.Tensors(op.Outputs(0)).Name().decode()
            convs[output] = graph.Tensors(op.Inputs(0)).Type() == schema.TensorType.FLOAT32
    float_layers = detector.int8_float_layers()
    assert len(float_layers) == (6 if name == "yolov3_tiny" else 0)
    for output, is_float in convs.items():
        assert is_float == any(f"/{layer}_" in output or f"/{layer}/" in output for layer in float_layers), output
    image = next(iter(images))[0].numpy()
    out = load_model(path).detect(image)
    assert out["detection_boxes"].shape[-1] == 4 and np.all(np.isfinite(out["detection_scores"]))


@pytest.mark.slow
def test_yolov1_from_the_command_line_train_evaluate_export_predict_and_a_clear_size_error(tmp_path, capsys):
    from PIL import Image

    from tfzoo import cli

    run_dir = tmp_path / "run"
    settings = dict(yolov1.YOLOv1.tiny)
    argv = ["train", "yolov1_tiny", "--data", "shapes:8", "--batch-size", "4", "--epochs", "1", "--out", str(run_dir)]
    for key, value in settings.items():
        if key != "num_classes":
            argv += ["--set", f"{key}={json.dumps(value)}"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir), "--data", "shapes:4", "--split", "val", "--image-size", "320"]) == 1
    assert "fixed-size layers" in capsys.readouterr().err
    tflite = tmp_path / "yolov1.tflite"
    assert cli.main(["export", str(run_dir), "--format", "tflite", "--out", str(tflite)]) == 0
    metrics = tmp_path / "m.json"
    assert cli.main(["evaluate", str(tflite), "--data", "shapes:4", "--split", "val", "--json", str(metrics)]) == 0
    assert 0.0 <= json.loads(metrics.read_text())["AP50"] <= 1.0
    image = next(tfzoo.data.load("shapes:1", "val").as_numpy_iterator())["image"]
    Image.fromarray(image).save(tmp_path / "shape.png")
    assert cli.main(["predict", str(tflite), str(tmp_path / "shape.png"), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "detections.json").is_file()
