"""torchvision detection checkpoints in tfzoo's models.

A checkpoint is read as a state dict of arrays: a ``.pth`` / ``.pt`` file through
``torch.load(..., weights_only=True)`` (no arbitrary objects are unpickled; the ``[convert]``
extra installs torch), or a ``.safetensors`` file, which this module parses itself (no torch
needed). A training checkpoint of torchvision's reference scripts (``{"model": state_dict,
"optimizer": ...}``) is unwrapped. The converted model needs no torch.

Sources so far:

- ``retinanet_resnet50_fpn`` (COCO_V1, box AP 36.4 on COCO val2017) -> ``retinanet``
  (:func:`retinanet_config`, :func:`load_retinanet`).

How a checkpoint's layout becomes tfzoo's:

- Convolution kernels ``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``.
- Batch norm: folded into Keras' layer as ``gamma = weight / sqrt(running_var + eps)``,
  ``beta = bias - running_mean * gamma``, moving mean 0 and moving variance ``1 -
  keras_eps``, so the Keras layer computes exactly torchvision's affine map whatever the
  two epsilons. torchvision's epsilon is not in the file: a state dict with
  ``num_batches_tracked`` entries comes from ``nn.BatchNorm2d`` (epsilon 1e-5); one
  without them from ``FrozenBatchNorm2d``, which the published COCO_V1 RetinaNet and Faster
  R-CNN load with epsilon 0 (``overwrite_eps``). ``bn_eps`` overrides the rule.
- Key spellings of older torchvision versions (FPN ``inner_blocks.0.weight``, RetinaNet
  head ``conv.2.weight``, RPN ``rpn.head.conv.weight``) are read as the current ones.
- Classes: a 91-entry head is torchvision's COCO index (category id = index, 0 the
  background, ten unused "N/A" ids): tfzoo's 80 contiguous classes are its columns
  :data:`tfzoo.data.tfds_reader.COCO_CATEGORY_IDS`, named as COCO names them (the names
  ``tfds:coco/2017`` has). Any other count ``N`` is read as torchvision's fine-tuning
  convention, column 0 the background and ``N - 1`` classes after it.
- Box deltas: torchvision's ``(dx, dy, dw, dh)`` -> tfzoo's ``(dy, dx, dh, dw)``.

The exactness check (``benchmarks/bench_convert.py``, ``tests/models/test_convert_torchvision.py``
where torch is installed) builds torchvision's model with random weights, converts its
state dict and compares features, raw head outputs and detections.
"""
from __future__ import annotations

import json
import os
import re
import struct

import numpy as np

from tfzoo.data.tfds_reader import COCO_CATEGORY_IDS
from tfzoo.export.parity import compare_detections

#: COCO's 80 category names in id order (tfzoo's contiguous COCO classes 0..79; the names
#: ``tfds:coco/2017`` reads from the annotation files).
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
#: Entries of torchvision's COCO class index (background, 80 classes, 10 unused ids).
TORCHVISION_COCO_ENTRIES = 91
#: tfzoo's (dy, dx, dh, dw) are torchvision's delta entries (1, 0, 3, 2).
DELTAS_FROM_TORCHVISION = (1, 0, 3, 2)
#: Suffixes of checkpoint files this module reads.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the
    file and the entry."""


# --- reading --------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
                       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _read_safetensors(path):
    """``{name: array}`` of a safetensors file: an 8-byte little-endian header length, a JSON
    header ``{name: {"dtype", "shape", "data_offsets"}}``, then the data."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise CheckpointError(f"{path}: too short for a safetensors file ({len(blob)} bytes)")
    (length,) = struct.unpack("<Q", blob[:8])
    if not 2 <= length <= len(blob) - 8:
        raise CheckpointError(f"{path}: not a safetensors file (header length {length} for {len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a safetensors file (header: {error})") from None
    data = memoryview(blob)[8 + length:]
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: entry {name!r} has no dtype, shape and data_offsets") from None
        if dtype == "BF16":
            raw = np.frombuffer(data[begin:end], "<u2").astype(np.uint32) << 16
            values = raw.view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            values = np.frombuffer(data[begin:end], np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise CheckpointError(f"{path}: entry {name!r} has dtype {dtype}, which tfzoo does not read")
        if not 0 <= begin <= end <= len(data) or values.size != int(np.prod(shape, dtype=np.int64)):
            raise CheckpointError(f"{path}: entry {name!r}: {end - begin} bytes of {dtype} for shape {list(shape)}")
        arrays[name] = values.reshape(shape)
    return arrays


def _read_torch(path):
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        raise ImportError(f"{path}: reading a .pth checkpoint needs torch: pip install 'tfzoo[convert]' (or save it "
                          "as .safetensors, which tfzoo reads without torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, runtime and zip errors alike
        raise CheckpointError(f"{path}: torch.load(weights_only=True) failed: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and not any(hasattr(v, "shape") for v in state.values()):
        for key in ("model", "state_dict", "model_state_dict"):  # a training script's checkpoint
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {name: value.detach().cpu().float().numpy() if value.is_floating_point() else value.cpu().numpy()
            for name, value in state.items() if isinstance(value, torch.Tensor)}


#: Older torchvision spellings -> current ones (torchvision renames them on load too).
_OLD_KEYS = (
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), r"\1.0.\2"),
    (re.compile(r"^(head\.(?:classification|regression)_head\.conv)\.(\d+)\.(weight|bias)$"),
     lambda m: f"{m.group(1)}.{int(m.group(2)) // 2}.0.{m.group(3)}"),
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
)


def canonical_keys(state):
    """The state dict with older torchvision key spellings renamed to the current ones;
    a leading ``module.`` (``DataParallel``) is dropped."""
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        for pattern, replacement in _OLD_KEYS:
            key = pattern.sub(replacement, key)
        out[key] = value
    return out


def read_state_dict(path):
    """``{name: numpy array}`` of a ``.pth`` / ``.pt`` or ``.safetensors`` checkpoint, with
    the current key spellings (:func:`canonical_keys`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if path.endswith(".safetensors"):
        state = _read_safetensors(path)
    elif path.endswith((".pth", ".pt")):
        state = _read_torch(path)
    else:
        raise CheckpointError(f"{path}: not a checkpoint tfzoo reads (suffixes {', '.join(CHECKPOINT_SUFFIXES)})")
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    return canonical_keys(state)


def write_safetensors(path, state):
    """Writes ``{name: array}`` as a safetensors file (float32 / int64 entries), atomically;
    for the tests and for users who convert a ``.pth`` once and keep a torch-free file."""
    from tfzoo.atomic import atomic_file  # noqa: PLC0415

    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float16): "F16"}
    header, chunks, offset = {}, [], 0
    for name in sorted(state):
        array = np.ascontiguousarray(state[name])
        if array.dtype not in names:
            array = array.astype(np.float32)
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


# --- setting weights --------------------------------------------------------------------


class _Source:
    """The state dict being converted: hands out entries by name, remembers which were
    used, and names the file in every error."""

    def __init__(self, state, path, bn_eps=None):
        self.state, self.path, self.used = state, path, set()
        tracked = any(key.endswith(".num_batches_tracked") for key in state)
        self.bn_eps = bn_eps if bn_eps is not None else (1e-5 if tracked else 0.0)
        self.used.update(key for key in state if key.endswith(".num_batches_tracked"))

    def take(self, key, shape=None):
        if key not in self.state:
            raise CheckpointError(f"{self.path}: no entry {key!r} (is it a checkpoint of this architecture?)")
        value = np.asarray(self.state[key], np.float32)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"{self.path}: entry {key!r} has shape {list(value.shape)}, the model needs "
                                  f"{list(shape)}")
        self.used.add(key)
        return value

    def shape(self, key):
        if key not in self.state:
            raise CheckpointError(f"{self.path}: no entry {key!r} (is it a checkpoint of this architecture?)")
        return tuple(self.state[key].shape)

    def check_all_used(self):
        unused = sorted(k for k in self.state if k not in self.used)
        if unused:
            more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
            raise CheckpointError(f"{self.path}: entries the model has no place for: {', '.join(unused[:5])}{more} "
                                  "(a checkpoint of another architecture?)")


def _set(layer, values, source, key):
    expected = [tuple(w.shape) for w in layer.weights]
    got = [tuple(v.shape) for v in values]
    if expected != got:
        raise CheckpointError(f"{source.path}: {key} gives {layer.name} weights of shapes {got}, it has {expected}")
    layer.set_weights(values)


def set_conv(layer, source, key, out_channels=None):
    """Sets a Keras convolution from ``{key}.weight`` (and ``.bias``), optionally with its
    output channels picked and ordered by ``out_channels`` (indices into torchvision's)."""
    kernel = source.take(f"{key}.weight").transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
    values = [kernel]
    if layer.use_bias:
        values.append(source.take(f"{key}.bias"))
    if out_channels is not None:
        values = [v[..., out_channels] for v in values]
    _set(layer, values, source, key)


def set_batch_norm(layer, source, key):
    """Sets a Keras batch norm from torchvision's ``{key}.{weight,bias,running_mean,
    running_var}``, folded (see the module doc) so that both epsilons drop out."""
    scale = source.take(f"{key}.weight") / np.sqrt(source.take(f"{key}.running_var") + source.bn_eps)
    shift = source.take(f"{key}.bias") - source.take(f"{key}.running_mean") * scale
    variance = np.full_like(scale, 1.0 - layer.epsilon)
    _set(layer, [scale, shift, np.zeros_like(scale), variance], source, key)


def set_resnet(backbone, source, prefix):
    """Loads torchvision's ResNet (``{prefix}conv1``, ``{prefix}layer1.0.conv1`` ...) into a
    :func:`tfzoo.backbones.resnet.torchvision_resnet` backbone."""
    set_conv(backbone.get_layer("conv1_conv"), source, f"{prefix}conv1")
    set_batch_norm(backbone.get_layer("conv1_bn"), source, f"{prefix}bn1")
    stage = 1
    while any(k.startswith(f"{prefix}layer{stage}.") for k in source.state):
        block = 0
        while any(k.startswith(f"{prefix}layer{stage}.{block}.") for k in source.state):
            ours, theirs = f"conv{stage + 1}_block{block + 1}", f"{prefix}layer{stage}.{block}"
            try:
                for k in (1, 2, 3):
                    set_conv(backbone.get_layer(f"{ours}_{k}_conv"), source, f"{theirs}.conv{k}")
                    set_batch_norm(backbone.get_layer(f"{ours}_{k}_bn"), source, f"{theirs}.bn{k}")
                if block == 0:
                    set_conv(backbone.get_layer(f"{ours}_0_conv"), source, f"{theirs}.downsample.0")
                    set_batch_norm(backbone.get_layer(f"{ours}_0_bn"), source, f"{theirs}.downsample.1")
            except ValueError as error:  # Keras: no such layer
                if isinstance(error, CheckpointError):
                    raise
                raise CheckpointError(f"{source.path}: {theirs} has no place in the model's ResNet "
                                      f"({error})") from None
            block += 1
        stage += 1


def coco_columns(num_entries, source, key):
    """``(class columns, background column, class names)`` of a classification output with
    ``num_entries`` entries per anchor (see the module doc)."""
    if num_entries == TORCHVISION_COCO_ENTRIES:
        return list(COCO_CATEGORY_IDS), 0, COCO_CLASS_NAMES
    if num_entries < 2:
        raise CheckpointError(f"{source.path}: {key} has {num_entries} class entries per anchor; a torchvision "
                              "detector has the background and at least one class")
    return list(range(1, num_entries)), 0, ()


# --- RetinaNet ----------------------------------------------------------------------------

#: torchvision RetinaNet's inference settings (``torchvision.models.detection.RetinaNet``).
RETINANET_SETTINGS = {"score_threshold": 0.05, "pre_nms_top_k": 1000, "nms_iou_threshold": 0.5,
                      "max_detections": 300}


def retinanet_config(state, image_size=1024, source="checkpoint"):
    """The ``retinanet`` overrides that match ``retinanet_resnet50_fpn``'s architecture:
    torchvision's ResNet-50, P6 from P5 with symmetric padding, its anchors, its
    inference settings (300 detections), and the classes of its head."""
    src = state if isinstance(state, _Source) else _Source(state, source)
    key = "head.classification_head.cls_logits.weight"
    entries = src.shape(key)[0]
    anchors = src.shape("head.regression_head.bbox_reg.weight")[0] // 4
    if anchors != 9 or entries % anchors:
        raise CheckpointError(f"{src.path}: {key} has {entries} outputs for {anchors} anchors per location; "
                              "retinanet_resnet50_fpn has 9 anchors (3 sizes x 3 ratios)")
    columns, _, names = coco_columns(entries // anchors, src, key)
    if "backbone.fpn.extra_blocks.p6.weight" in src.state and src.shape("backbone.fpn.extra_blocks.p6.weight")[1] != 256:
        raise CheckpointError(f"{src.path}: P6 is computed from C5 ({src.shape('backbone.fpn.extra_blocks.p6.weight')[1]} "
                              "channels): that is retinanet_resnet50_fpn_v2, whose GroupNorm heads tfzoo does not "
                              "convert; retinanet_resnet50_fpn (v1) is")
    return {"backbone": "resnet50_tv", "backbone_weights": None, "image_size": int(image_size),
            "num_classes": len(columns), "class_names": tuple(names), "p6_input": "p5", "symmetric_padding": True,
            "anchor_style": "torchvision", **RETINANET_SETTINGS}


def load_retinanet(detector, state, path="checkpoint", bn_eps=None):
    """Sets a ``retinanet`` built with :func:`retinanet_config`'s overrides from the state
    dict of torchvision's ``retinanet_resnet50_fpn``; every entry must find its place."""
    source = _Source(state, path, bn_eps)
    set_resnet(detector.get_layer("backbone"), source, "backbone.body.")
    for index, level in enumerate((3, 4, 5)):
        set_conv(detector.get_layer(f"fpn_lateral_p{level}"), source, f"backbone.fpn.inner_blocks.{index}.0")
        set_conv(detector.get_layer(f"fpn_output_p{level}"), source, f"backbone.fpn.layer_blocks.{index}.0")
    set_conv(detector.get_layer("fpn_p6"), source, "backbone.fpn.extra_blocks.p6")
    set_conv(detector.get_layer("fpn_p7"), source, "backbone.fpn.extra_blocks.p7")
    config = detector.config
    for head, theirs in (("class_head", "classification_head"), ("box_head", "regression_head")):
        for i in range(config.head_convs):
            set_conv(detector.get_layer(f"{head}_conv{i}"), source, f"head.{theirs}.conv.{i}.0")
    anchors = config.num_anchors
    entries = source.shape("head.classification_head.cls_logits.weight")[0] // anchors
    columns, _, _ = coco_columns(entries, source, "head.classification_head.cls_logits")
    set_conv(detector.get_layer("class_head_predict"), source, "head.classification_head.cls_logits",
             [a * entries + c for a in range(anchors) for c in columns])
    set_conv(detector.get_layer("box_head_predict"), source, "head.regression_head.bbox_reg",
             [a * 4 + j for a in range(anchors) for j in DELTAS_FROM_TORCHVISION])
    source.check_all_used()
    return detector


# --- checking a conversion against torchvision ----------------------------------------------


def _run_reference(state, images, settings):
    """torchvision's outputs (:mod:`tfzoo.convert.torchvision_reference`, in a process of
    its own) on ``images``."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from tfzoo.convert import torchvision_reference  # noqa: PLC0415  (imports numpy only)

    with tempfile.TemporaryDirectory(prefix="tfzoo-check-") as folder:
        source, target = os.path.join(folder, "in.npz"), os.path.join(folder, "out.npz")
        np.savez(source, images=images, **settings, **{f"state/{k}": v for k, v in state.items()})
        # run_path, not "python FILE": the file's folder first on sys.path would make this
        # module "torchvision" there.
        runner = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        done = subprocess.run([sys.executable, "-c", runner, torchvision_reference.__file__, source, target],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"torchvision's reference failed (exit {done.returncode}): {tail}")
        with np.load(target) as data:
            return {k: data[k] for k in data.files}


def _relative(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))


def _batched(per_image):
    """``[(boxes [n, 4], scores [n], classes [n]), ...]`` -> a padded detections dict."""
    most = max([len(scores) for _, scores, _ in per_image] + [1])
    out = {"detection_boxes": np.zeros((len(per_image), most, 4), np.float32),
           "detection_scores": np.zeros((len(per_image), most), np.float32),
           "detection_classes": np.full((len(per_image), most), -1, np.int32),
           "num_detections": np.array([len(scores) for _, scores, _ in per_image], np.int32)}
    for i, (boxes, scores, classes) in enumerate(per_image):
        out["detection_boxes"][i, :len(scores)] = boxes
        out["detection_scores"][i, :len(scores)] = scores
        out["detection_classes"][i, :len(scores)] = classes
    return out


def check_retinanet(detector, state, images, bn_eps=None, score_threshold=None):
    """Runs torchvision's ``retinanet_resnet50_fpn`` holding ``state`` and the converted
    ``detector`` on ``images`` (``[N, S, S, 3]`` RGB pixels at the detector's size) with the
    same inference settings, and measures how far apart they are.

    torchvision runs in a process of its own (:mod:`tfzoo.convert.torchvision_reference`)
    and resizes nothing there (its transform's sizes are set to ``S``); its caps
    (candidates per level, detections per image) are lifted on both sides, so that its
    background and unused-id columns take no slots. Needs torch and torchvision.

    Returns:
      dict: per backbone map (C3-C5) and raw head output the largest difference
      relative to torchvision's largest magnitude, and the detections matched one to one
      by class and IoU >= 0.99 (:func:`tfzoo.export.parity.compare_detections`) over the
      images.
    """
    source = _Source(state, "checkpoint", bn_eps)
    config = detector.config
    size = config.image_size
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be [N, {size}, {size}, 3], got {list(images.shape)}")
    threshold = config.score_threshold if score_threshold is None else float(score_threshold)
    uncapped = type(detector).create(config.replace(score_threshold=threshold, pre_nms_top_k=10**6,
                                                    max_detections=20000))
    uncapped.set_weights(detector.get_weights())
    entries = source.shape("head.classification_head.cls_logits.weight")[0] // config.num_anchors
    columns, _, _ = coco_columns(entries, source, "head.classification_head.cls_logits")
    reference = _run_reference(state, images, {"image_size": size, "score_threshold": threshold,
                                               "bn_eps": source.bn_eps})
    backbone, normalize = detector.get_layer("backbone"), detector.get_layer("normalize")
    report = {"features": {}, "heads": {}}
    ours_found, theirs_found, empty = [], [], 0
    for i, image in enumerate(images):
        maps = backbone(normalize(image[None]))
        for name in ("C3", "C4", "C5"):
            gap = _relative(maps[name], reference[f"{i}/{name}"])
            report["features"][name] = max(gap, report["features"].get(name, 0.0))
        outputs = detector(image[None], training=False)
        pairs = {"class_logits": (outputs["class_logits"], reference[f"{i}/cls_logits"][..., columns]),
                 "box_deltas": (outputs["box_deltas"],
                                reference[f"{i}/bbox_regression"][..., list(DELTAS_FROM_TORCHVISION)])}
        for name, (ours, theirs) in pairs.items():
            report["heads"][name] = max(_relative(ours, theirs), report["heads"].get(name, 0.0))
        # torchvision's detections of tfzoo's classes; boxes clipped to nothing are kept there
        # and dropped by tfzoo (they match no object), so they are counted apart
        boxes, labels = reference[f"{i}/boxes"][:, [1, 0, 3, 2]], reference[f"{i}/labels"]
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        keep = np.isin(labels, columns)
        empty += int((keep & ~nonempty).sum())
        keep &= nonempty
        theirs_found.append((boxes[keep], reference[f"{i}/scores"][keep], np.searchsorted(columns, labels[keep])))
        detected = uncapped.detect(image[None])
        n = int(detected["num_detections"][0])
        ours_found.append((np.asarray(detected["detection_boxes"][0, :n]) * size,
                           np.asarray(detected["detection_scores"][0, :n]),
                           np.asarray(detected["detection_classes"][0, :n])))
    matched = compare_detections(_batched(theirs_found), _batched(ours_found), iou=0.99)
    report["detections"] = {"theirs": matched["count_a"], "ours": matched["count_b"], "matched": matched["matched"],
                            "only_theirs": matched["only_a"], "only_ours": matched["only_b"],
                            "max_score_diff": matched["max_score_diff"], "theirs_empty_dropped": empty}
    report["settings"] = {"image_size": size, "images": len(images), "score_threshold": threshold,
                          "bn_eps": source.bn_eps}
    return report
