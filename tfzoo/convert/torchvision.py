"""torchvision detection checkpoints in tfzoo's models.

A checkpoint is read as a state dict of arrays: a ``.pth`` / ``.pt`` file through
``torch.load(..., weights_only=True)`` (no arbitrary objects are unpickled; the ``[convert]``
extra installs torch), or a ``.safetensors`` file, which this module parses itself (no torch
needed). A training checkpoint of torchvision's reference scripts (``{"model": state_dict,
"optimizer": ...}``) is unwrapped. The converted model needs no torch.

Sources (each ``*_config`` function sets the preset to the checkpoint's architecture and
says how):

- ``retinanet_resnet50_fpn`` (COCO_V1, box AP 36.4 on COCO val2017) -> ``retinanet``
  (:func:`retinanet_config`, :func:`load_retinanet`, :func:`check_retinanet`);
- ``fasterrcnn_resnet50_fpn`` (COCO_V1, box AP 37.0) -> ``faster_rcnn_fpn``
  (:func:`faster_rcnn_config`, :func:`load_faster_rcnn`, :func:`check_faster_rcnn`);
- ``ssd300_vgg16`` (COCO_V1, box AP 25.1) -> ``ssd300`` (:func:`ssd_config`,
  :func:`load_ssd`, :func:`check_ssd`).

How a checkpoint's layout becomes tfzoo's:

- Convolution kernels ``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``.
- Batch norm: folded into Keras' layer as ``gamma = weight / sqrt(running_var + eps)``,
  ``beta = bias - running_mean * gamma``, moving mean 0 and moving variance ``1 -
  keras_eps``, so Keras' own epsilon drops out. torchvision's epsilon is not in the file and
  is inferred (:func:`batch_norm_eps`): a state dict with ``num_batches_tracked`` entries
  comes from ``nn.BatchNorm2d`` (epsilon 1e-5); one without them from
  ``FrozenBatchNorm2d``, which the published COCO_V1 RetinaNet and Faster R-CNN load with
  epsilon 0 (``overwrite_eps``). A model fine-tuned from ImageNet weights through
  torchvision's ``weights_backbone`` has frozen batch norms at 1e-5 and no such entries:
  pass ``bn_eps=1e-5`` (``tfzoo convert --bn-eps 1e-5``) for it. (The two differ by about
  ``1e-5 / (2 running_var)``, relative.)
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

import collections
import json
import os
import re
import struct

import numpy as np

from tfzoo.data.tfds_reader import COCO_CATEGORY_IDS

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
        if dtype != "BF16" and dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: entry {name!r} has dtype {dtype}, which tfzoo does not read")
        itemsize = 2 if dtype == "BF16" else np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= len(data)) or \
                end - begin != itemsize * int(np.prod(shape, dtype=np.int64)):
            raise CheckpointError(f"{path}: entry {name!r}: bytes {begin}..{end} of {len(data)} for {dtype} of shape "
                                  f"{list(shape)}")
        if dtype == "BF16":
            values = (np.frombuffer(data[begin:end], "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            values = np.frombuffer(data[begin:end], np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
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


def batch_norm_eps(state, bn_eps=None):
    """torchvision's batch-norm epsilon for ``state``: ``bn_eps`` if given, else 1e-5 where
    the state dict has ``num_batches_tracked`` entries (``BatchNorm2d``) and 0 where it has
    none (``FrozenBatchNorm2d`` as the published COCO_V1 checkpoints load it)."""
    if bn_eps is not None:
        return float(bn_eps)
    return 1e-5 if any(key.endswith(".num_batches_tracked") for key in state) else 0.0


class _Source:
    """The state dict being converted: hands out entries by name, remembers which were
    used, and names the file in every error."""

    def __init__(self, state, path, bn_eps=None):
        self.state, self.path, self.used = state, path, set()
        self.bn_eps = batch_norm_eps(state, bn_eps)
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


def set_resnet(backbone, source, prefix, blocks=(3, 4, 6, 3)):
    """Loads torchvision's ResNet (``{prefix}conv1``, ``{prefix}layer1.0.conv1`` ...; ``blocks``
    per stage, ResNet-50's by default) into a :func:`tfzoo.backbones.resnet.torchvision_resnet`
    backbone. A missing entry is named; an entry beyond the layout is left for
    ``check_all_used`` to name."""
    set_conv(backbone.get_layer("conv1_conv"), source, f"{prefix}conv1")
    set_batch_norm(backbone.get_layer("conv1_bn"), source, f"{prefix}bn1")
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            ours, theirs = f"conv{stage + 1}_block{block + 1}", f"{prefix}layer{stage}.{block}"
            for k in (1, 2, 3):
                set_conv(backbone.get_layer(f"{ours}_{k}_conv"), source, f"{theirs}.conv{k}")
                set_batch_norm(backbone.get_layer(f"{ours}_{k}_bn"), source, f"{theirs}.bn{k}")
            if block == 0:
                set_conv(backbone.get_layer(f"{ours}_0_conv"), source, f"{theirs}.downsample.0")
                set_batch_norm(backbone.get_layer(f"{ours}_0_bn"), source, f"{theirs}.downsample.1")


class HeadColumns(collections.namedtuple("HeadColumns", "columns extra background names")):
    """Where a torchvision classification output's entries go (see the module doc): the
    entry of each of tfzoo's classes, the entries no class takes (the ten unused COCO ids),
    the background's, and the class names."""

    @property
    def softmax_order(self):
        """The entries in the order of tfzoo's softmax heads: ``[K classes, extra, background]``."""
        return [*self.columns, *self.extra, self.background]


def head_columns(source, key, per_anchor=1):
    """:class:`HeadColumns` of the classification output ``key`` (its ``.weight`` has
    ``per_anchor`` times the entries of one anchor as rows)."""
    entries = source.shape(f"{key}.weight")[0] // per_anchor
    if entries == TORCHVISION_COCO_ENTRIES:
        columns, names = list(COCO_CATEGORY_IDS), COCO_CLASS_NAMES
    elif entries < 2:
        raise CheckpointError(f"{source.path}: {key} has {entries} class entries per anchor; a torchvision "
                              "detector has the background and at least one class")
    else:
        columns, names = list(range(1, entries)), ()
    extra = [i for i in range(1, entries) if i not in columns]
    return HeadColumns(columns, extra, 0, names)


# --- RetinaNet ----------------------------------------------------------------------------

#: torchvision RetinaNet's inference settings (``torchvision.models.detection.RetinaNet``).
RETINANET_SETTINGS = {"score_threshold": 0.05, "pre_nms_top_k": 1000, "nms_iou_threshold": 0.5,
                      "max_detections": 300}


def retinanet_config(state, image_size=1024, source="checkpoint"):
    """The ``retinanet`` overrides that match ``retinanet_resnet50_fpn``'s architecture:
    torchvision's ResNet-50, P6 from P5 with symmetric padding, its anchors, its
    inference settings (300 detections), and the classes of its head."""
    src = state if isinstance(state, _Source) else _Source(state, source)
    key = "head.classification_head.cls_logits"
    entries = src.shape(f"{key}.weight")[0]
    anchors = src.shape("head.regression_head.bbox_reg.weight")[0] // 4
    if anchors != 9 or entries % anchors:
        raise CheckpointError(f"{src.path}: {key} has {entries} outputs for {anchors} anchors per location; "
                              "retinanet_resnet50_fpn has 9 anchors (3 sizes x 3 ratios)")
    columns, _, _, names = head_columns(src, key, anchors)
    p6 = "backbone.fpn.extra_blocks.p6.weight"
    if p6 in src.state and src.shape(p6)[1] != 256:
        raise CheckpointError(f"{src.path}: P6 is computed from C5 ({src.shape(p6)[1]} channels): that is retinanet_resnet50_fpn_v2, whose GroupNorm heads tfzoo does not "
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
    columns = head_columns(source, "head.classification_head.cls_logits", anchors).columns
    set_conv(detector.get_layer("class_head_predict"), source, "head.classification_head.cls_logits",
             [a * entries + c for a in range(anchors) for c in columns])
    set_conv(detector.get_layer("box_head_predict"), source, "head.regression_head.bbox_reg",
             [a * 4 + j for a in range(anchors) for j in DELTAS_FROM_TORCHVISION])
    source.check_all_used()
    return detector


# --- Faster R-CNN ----------------------------------------------------------------------------

#: torchvision Faster R-CNN's inference settings (``torchvision.models.detection.FasterRCNN``):
#: 1,000 proposals per level and per image at test, NMS 0.7; detections above 0.05, per-class
#: NMS 0.5, 100 per image, no cap before the NMS (so the cap is every proposal's every class).
FASTER_RCNN_SETTINGS = {"rpn_pre_nms_test": 1000, "rpn_post_nms_test": 1000, "rpn_nms_iou": 0.7,
                        "score_threshold": 0.05, "nms_iou_threshold": 0.5, "max_detections": 100}


#: torchvision Faster R-CNN's class output (91 COCO entries).
FASTER_RCNN_CLASSES = "roi_heads.box_predictor.cls_score"


def _box_rows(columns):
    """``bbox_pred``'s rows of tfzoo's class-major (dy, dx, dh, dw) columns (the background's
    and the unused ids' rows dropped)."""
    return [c * 4 + j for c in columns for j in DELTAS_FROM_TORCHVISION]


def faster_rcnn_config(state, image_size=1024, source="checkpoint"):
    """The ``faster_rcnn_fpn`` overrides that match ``fasterrcnn_resnet50_fpn``: torchvision's
    ResNet-50, its anchors, RoIAlign as it samples (averaged, not aligned), the softmax over
    its 91 entries, its inference settings."""
    src = state if isinstance(state, _Source) else _Source(state, source)
    columns, extra, _, names = head_columns(src, FASTER_RCNN_CLASSES)
    if src.shape("rpn.head.cls_logits.weight")[0] != 3:
        raise CheckpointError(f"{src.path}: rpn.head.cls_logits has {src.shape('rpn.head.cls_logits.weight')[0]} "
                              "anchors per location; fasterrcnn_resnet50_fpn has 3 (one size x 3 ratios per level)")
    if "roi_heads.box_head.fc6.weight" not in src.state:
        raise CheckpointError(f"{src.path}: no roi_heads.box_head.fc6: that is fasterrcnn_resnet50_fpn_v2 (a "
                              "convolutional box head), which tfzoo does not convert; fasterrcnn_resnet50_fpn (v1) is")
    proposals = FASTER_RCNN_SETTINGS["rpn_post_nms_test"]
    return {"backbone": "resnet50_tv", "backbone_weights": None, "image_size": int(image_size),
            "num_classes": len(columns), "class_names": tuple(names), "anchor_style": "torchvision",
            "roi_pool_mode": "avg", "roi_aligned": False, "extra_logits": len(extra),
            "roi_pre_nms_top_k": proposals * len(columns), **FASTER_RCNN_SETTINGS}


def load_faster_rcnn(detector, state, path="checkpoint", bn_eps=None):
    """Sets a ``faster_rcnn_fpn`` built with :func:`faster_rcnn_config`'s overrides from the
    state dict of torchvision's ``fasterrcnn_resnet50_fpn``; every entry must find its place."""
    source = _Source(state, path, bn_eps)
    set_resnet(detector.get_layer("backbone"), source, "backbone.body.")
    for index, level in enumerate((2, 3, 4, 5)):
        set_conv(detector.get_layer(f"fpn_lateral_p{level}"), source, f"backbone.fpn.inner_blocks.{index}.0")
        set_conv(detector.get_layer(f"fpn_output_p{level}"), source, f"backbone.fpn.layer_blocks.{index}.0")
    set_conv(detector.get_layer("rpn_conv"), source, "rpn.head.conv.0.0")
    set_conv(detector.get_layer("rpn_objectness"), source, "rpn.head.cls_logits")
    anchors = detector.config.num_anchors
    set_conv(detector.get_layer("rpn_deltas"), source, "rpn.head.bbox_pred",
             [a * 4 + j for a in range(anchors) for j in DELTAS_FROM_TORCHVISION])
    # fc6 reads the pooled [C, 7, 7] flattened channel-first; tfzoo's [7, 7, C] row-major
    fc6 = source.take("roi_heads.box_head.fc6.weight")
    size, channels = detector.config.roi_size, detector.config.fpn_channels
    if fc6.shape[1] != channels * size * size:
        raise CheckpointError(f"{path}: roi_heads.box_head.fc6 reads {fc6.shape[1]} values, the model pools "
                              f"{size} x {size} x {channels}")
    kernel = fc6.reshape(-1, channels, size, size).transpose(2, 3, 1, 0).reshape(size * size * channels, -1)
    _set(detector.get_layer("roi_fc0"), [kernel, source.take("roi_heads.box_head.fc6.bias")], source,
         "roi_heads.box_head.fc6")
    _set(detector.get_layer("roi_fc1"), [source.take("roi_heads.box_head.fc7.weight").T,
                                         source.take("roi_heads.box_head.fc7.bias")], source, "roi_heads.box_head.fc7")
    head = head_columns(source, FASTER_RCNN_CLASSES)
    order = head.softmax_order
    _set(detector.get_layer("roi_class"), [source.take(f"{FASTER_RCNN_CLASSES}.weight")[order].T,
                                           source.take(f"{FASTER_RCNN_CLASSES}.bias")[order]],
         source, FASTER_RCNN_CLASSES)
    rows = _box_rows(head.columns)
    _set(detector.get_layer("roi_box"), [source.take("roi_heads.box_predictor.bbox_pred.weight")[rows].T,
                                         source.take("roi_heads.box_predictor.bbox_pred.bias")[rows]],
         source, "roi_heads.box_predictor.bbox_pred")
    source.check_all_used()
    return detector


# --- SSD ----------------------------------------------------------------------------------

#: torchvision ssd300_vgg16's default boxes and inference settings (``models/detection/ssd.py``).
SSD300_SETTINGS = {"image_size": 300, "scales": (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
                   "anchor_steps": (8.0, 16.0, 32.0, 64.0, 100.0, 300.0), "clip_anchor_sizes": True,
                   "vgg_normalization": "torchvision_ssd", "score_threshold": 0.01, "pre_nms_top_k": 400,
                   "pre_nms_per_class": True, "nms_iou_threshold": 0.45, "max_detections": 200}
#: tfzoo's VGG-16 layers <- torchvision's ``backbone.features`` indices (conv1_1 ... conv4_3).
_VGG_FEATURES = {"block1_conv1": 0, "block1_conv2": 2, "block2_conv1": 5, "block2_conv2": 7, "block3_conv1": 10,
                 "block3_conv2": 12, "block3_conv3": 14, "block4_conv1": 17, "block4_conv2": 19, "block4_conv3": 21}


def _ssd_anchor_order(anchors):
    """torchvision's default box of each of tfzoo's at one location: the two ratio-1 boxes
    come first in both; then torchvision has each pair wide (``w = s sqrt(r)``) then tall,
    tfzoo tall then wide."""
    return [a if a < 2 else a + 1 if a % 2 == 0 else a - 1 for a in range(anchors)]


def ssd_config(state, image_size=None, source="checkpoint"):
    """The ``ssd300`` overrides that match torchvision's ``ssd300_vgg16``: its normalization,
    default boxes (scales 0.07 ... 1.05, steps, sizes clipped), the softmax over its 91
    entries, its inference settings (the 400 best boxes of each class, NMS 0.45, 200)."""
    src = state if isinstance(state, _Source) else _Source(state, source)
    anchors = src.shape("head.regression_head.module_list.0.weight")[0] // 4
    columns, extra, _, names = head_columns(src, "head.classification_head.module_list.0", anchors)
    if image_size not in (None, 300):
        raise ValueError(f"{src.path}: ssd300_vgg16 runs at 300 x 300 (its default boxes' steps are 300's), "
                         f"not {image_size}")
    return {"num_classes": len(columns), "class_names": tuple(names), "extra_logits": len(extra),
            "backbone_weights": None, **SSD300_SETTINGS}


def load_ssd(detector, state, path="checkpoint", bn_eps=None):
    """Sets an ``ssd300`` built with :func:`ssd_config`'s overrides from the state dict of
    torchvision's ``ssd300_vgg16``; every entry must find its place."""
    source = _Source(state, path, bn_eps)
    backbone = detector.get_layer("backbone")
    for ours, index in _VGG_FEATURES.items():
        set_conv(backbone.get_layer(ours), source, f"backbone.features.{index}")
    for conv, index in (("block5_conv1", 1), ("block5_conv2", 3), ("block5_conv3", 5)):
        set_conv(backbone.get_layer(conv), source, f"backbone.extra.0.{index}")
    set_conv(backbone.get_layer("fc6"), source, "backbone.extra.0.7.1")
    set_conv(backbone.get_layer("fc7"), source, "backbone.extra.0.7.3")
    _set(detector.get_layer("conv4_3_norm"), [source.take("backbone.scale_weight")], source, "backbone.scale_weight")
    for k in range(len(detector.config.extra_layers)):
        set_conv(detector.get_layer(f"conv{k + 8}_1"), source, f"backbone.extra.{k + 1}.0")
        set_conv(detector.get_layer(f"conv{k + 8}_2"), source, f"backbone.extra.{k + 1}.2")
    config = detector.config
    anchors0 = config.anchors_per_map[0]
    entries = source.shape("head.classification_head.module_list.0.weight")[0] // anchors0
    order = head_columns(source, "head.classification_head.module_list.0", anchors0).softmax_order
    for k, anchors in enumerate(config.anchors_per_map):
        theirs = _ssd_anchor_order(anchors)
        set_conv(detector.get_layer(f"class_head_{k}"), source, f"head.classification_head.module_list.{k}",
                 [theirs[a] * entries + c for a in range(anchors) for c in order])
        set_conv(detector.get_layer(f"box_head_{k}"), source, f"head.regression_head.module_list.{k}",
                 [theirs[a] * 4 + j for a in range(anchors) for j in DELTAS_FROM_TORCHVISION])
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
    if not theirs.size:
        return 0.0
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


def _uncapped(detector, threshold, **caps):
    """A float32 copy of ``detector`` at score threshold ``threshold`` with its caps lifted."""
    return detector._float32_copy(detector.config.replace(score_threshold=threshold, **caps))


#: Detections with a side under this many pixels need no partner (they are counted apart):
#: IoU is no measure of a sub-pixel box (random weights make them by the hundred, and their
#: IoU moves with float rounding), and torchvision keeps boxes clipped to nothing where
#: tfzoo drops them. Each side's other detections must find a partner among the other's
#: with sides of at least half this, so that a box of 0.99 px on one side and 1.01 on the
#: other still pair.
MIN_MATCHED_SIDE = 1.0


def _sides(boxes):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _torchvision_found(reference, i, columns):
    """torchvision's detections of image ``i`` of tfzoo's classes: ``(boxes y1 x1 y2 x2
    pixels, scores, classes)``."""
    boxes, labels = reference[f"{i}/boxes"][:, [1, 0, 3, 2]], reference[f"{i}/labels"]
    keep = np.isin(labels, columns)
    return boxes[keep], reference[f"{i}/scores"][keep], np.searchsorted(columns, labels[keep])


def _found(detections, size):
    n = int(detections["num_detections"][0])
    return (np.asarray(detections["detection_boxes"][0, :n]) * size, np.asarray(detections["detection_scores"][0, :n]),
            np.asarray(detections["detection_classes"][0, :n]))


def _at_least(found, side):
    keep = _sides(found[0]) >= side
    return tuple(np.asarray(part)[keep] for part in found)


def _matched(theirs, ours):
    """Matches per-image lists of ``(boxes, scores, classes)`` one to one (see
    :data:`MIN_MATCHED_SIDE`)."""
    from tfzoo.export.parity import compare_detections  # noqa: PLC0415  (the checks' only; converting needs none)

    large, loose = MIN_MATCHED_SIDE, MIN_MATCHED_SIDE / 2.0

    def one_way(a, b):
        return compare_detections(_batched([_at_least(x, large) for x in a]),
                                  _batched([_at_least(x, loose) for x in b]), iou=0.99)

    forward, backward = one_way(theirs, ours), one_way(ours, theirs)
    return {"theirs": forward["count_a"], "ours": backward["count_a"], "matched": forward["matched"],
            "only_theirs": forward["only_a"], "only_ours": backward["only_a"],
            "max_score_diff": max(forward["max_score_diff"], backward["max_score_diff"]),
            "theirs_small": sum(int((_sides(t[0]) < large).sum()) for t in theirs),
            "ours_small": sum(int((_sides(o[0]) < large).sum()) for o in ours)}


def _gap(report, group, name, ours, theirs):
    report[group][name] = max(_relative(ours, theirs), report[group].get(name, 0.0))


def _prepare(detector, state, images, bn_eps, score_threshold, architecture, path):
    source = _Source(state, path, bn_eps)
    size = detector.config.image_size
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be [N, {size}, {size}, 3], got {list(images.shape)}")
    threshold = detector.config.score_threshold if score_threshold is None else float(score_threshold)
    reference = _run_reference(state, images, {"image_size": size, "score_threshold": threshold,
                                               "bn_eps": source.bn_eps, "architecture": architecture})
    settings = {"image_size": size, "images": len(images), "score_threshold": threshold, "bn_eps": source.bn_eps}
    return source, images, threshold, reference, settings


def check_retinanet(detector, state, images, bn_eps=None, score_threshold=None, path="checkpoint"):
    """Runs torchvision's ``retinanet_resnet50_fpn`` holding ``state`` and the converted
    ``detector`` on ``images`` (``[N, S, S, 3]`` RGB pixels at the detector's size) with the
    same inference settings, and measures how far apart they are.

    torchvision runs in a process of its own (:mod:`tfzoo.convert.torchvision_reference`)
    and resizes nothing there (its transform's sizes are set to ``S``); its caps
    (candidates per level, detections per image) are lifted on both sides, so that its
    background and unused-id columns take no slots. Needs torch and torchvision.

    Returns:
      dict: per backbone map (C3-C5) and raw head output the largest difference relative
      to torchvision's largest magnitude, and the detections matched one to one by class
      and IoU >= 0.99 (:func:`tfzoo.export.parity.compare_detections`) over the images.
    """
    source, images, threshold, reference, settings = _prepare(detector, state, images, bn_eps, score_threshold,
                                                              "retinanet_resnet50_fpn", path)
    uncapped = _uncapped(detector, threshold, pre_nms_top_k=10**6, max_detections=20000)
    columns = head_columns(source, "head.classification_head.cls_logits", detector.config.num_anchors).columns
    backbone, normalize = detector.get_layer("backbone"), detector.get_layer("normalize")
    report = {"features": {}, "heads": {}}
    ours_found, theirs_found = [], []
    for i, image in enumerate(images):
        maps = backbone(normalize(image[None]))
        for name in ("C3", "C4", "C5"):
            _gap(report, "features", name, maps[name], reference[f"{i}/{name}"])
        outputs = detector(image[None], training=False)
        _gap(report, "heads", "class_logits", outputs["class_logits"], reference[f"{i}/cls_logits"][..., columns])
        _gap(report, "heads", "box_deltas", outputs["box_deltas"],
             reference[f"{i}/bbox_regression"][..., list(DELTAS_FROM_TORCHVISION)])
        theirs_found.append(_torchvision_found(reference, i, columns))
        ours_found.append(_found(uncapped.detect(image[None]), detector.config.image_size))
    report["detections"] = _matched(theirs_found, ours_found)
    report["settings"] = settings
    return report


def check_faster_rcnn(detector, state, images, bn_eps=None, score_threshold=None, path="checkpoint"):
    """:func:`check_retinanet` for ``fasterrcnn_resnet50_fpn`` and its ``faster_rcnn_fpn``:
    the backbone maps C2-C5, the RPN's raw outputs, the proposals (matched one to one by
    IoU >= 0.99), the RoI head's raw outputs on torchvision's own proposals (so that a
    proposal ranked differently by a rounding does not count twice) and the detections
    (torchvision's per-image cap lifted, and tfzoo's). The RPN's cap per level before its
    NMS is lifted on both sides too: the 1,000th score of a level of random weights has
    many neighbours within float rounding, which either side may rank first. The RoI
    head and the proposal and detection matching run on the uncapped models."""
    import keras  # noqa: PLC0415


    source, images, threshold, reference, settings = _prepare(detector, state, images, bn_eps, score_threshold,
                                                              "fasterrcnn_resnet50_fpn", path)
    config = detector.config
    size = config.image_size
    uncapped = _uncapped(detector, threshold, max_detections=20000, rpn_pre_nms_test=10**6)
    columns = head_columns(source, FASTER_RCNN_CLASSES)
    order, rows, columns = columns.softmax_order, _box_rows(columns.columns), columns.columns
    backbone, normalize = detector.get_layer("backbone"), detector.get_layer("normalize")
    head = detector._roi_head_model(any_count=True)  # on torchvision's proposals
    report = {"features": {}, "heads": {}}
    ours_found, theirs_found, theirs_proposals, ours_proposals = [], [], [], []
    for i, image in enumerate(images):
        maps = backbone(normalize(image[None]))
        for name in ("C2", "C3", "C4", "C5"):
            _gap(report, "features", name, maps[name], reference[f"{i}/{name}"])
        outputs = uncapped(image[None], training=False)
        _gap(report, "heads", "rpn_objectness", outputs["rpn_objectness"], reference[f"{i}/rpn_objectness"])
        _gap(report, "heads", "rpn_deltas", outputs["rpn_deltas"],
             reference[f"{i}/rpn_deltas"][..., list(DELTAS_FROM_TORCHVISION)])
        proposals = reference[f"{i}/proposals"][:, [1, 0, 3, 2]]  # [R, 4] pixels, by objectness
        ours = np.asarray(outputs["proposals"][0]) * size
        ours = ours[(ours[:, 2] > ours[:, 0]) & (ours[:, 3] > ours[:, 1])]  # without the padding
        for boxes, into in ((proposals, theirs_proposals), (ours, ours_proposals)):
            into.append((boxes, np.linspace(1.0, 0.5, len(boxes)), np.zeros(len(boxes), np.int32)))
        class_logits, box_deltas = head([*(outputs[key] for key in detector.feature_keys),
                                         keras.ops.convert_to_tensor((proposals / size)[None], "float32")])
        _gap(report, "heads", "roi_class_logits", class_logits, reference[f"{i}/class_logits"][None][..., order])
        _gap(report, "heads", "roi_box_deltas", box_deltas, reference[f"{i}/box_regression"][None][..., rows])
        theirs_found.append(_torchvision_found(reference, i, columns))
        ours_found.append(_found(uncapped.detect(image[None]), size))
    report["proposals"] = _matched(theirs_proposals, ours_proposals)
    report["detections"] = _matched(theirs_found, ours_found)
    report["settings"] = settings
    return report


def check_ssd(detector, state, images, score_threshold=None, path="checkpoint"):
    """:func:`check_retinanet` for ``ssd300_vgg16`` and its ``ssd300``: conv4_3 and fc7, the
    raw head outputs (torchvision's default boxes put in tfzoo's order) and the detections
    (torchvision's caps lifted: its 400 boxes per class and 200 per image, and tfzoo's)."""
    source, images, threshold, reference, settings = _prepare(detector, state, images, None, score_threshold,
                                                              "ssd300_vgg16", path)
    config = detector.config
    uncapped = _uncapped(detector, threshold, pre_nms_top_k=10**6, max_detections=20000)
    head = head_columns(source, "head.classification_head.module_list.0", config.anchors_per_map[0])
    rows, start = [], 0  # torchvision's row of each of tfzoo's default boxes
    for (height, width), anchors in zip(detector.map_sizes, config.anchors_per_map):
        theirs = _ssd_anchor_order(anchors)
        rows += [start + cell * anchors + theirs[a] for cell in range(height * width) for a in range(anchors)]
        start += height * width * anchors
    backbone, normalize = detector.get_layer("backbone"), detector.get_layer("normalize")
    report = {"features": {}, "heads": {}}
    ours_found, theirs_found = [], []
    for i, image in enumerate(images):
        maps = backbone(normalize(image[None]))
        for name in ("conv4_3", "fc7"):
            _gap(report, "features", name, maps[name], reference[f"{i}/{name}"])
        outputs = detector(image[None], training=False)
        _gap(report, "heads", "class_logits", outputs["class_logits"],
             reference[f"{i}/cls_logits"][:, rows][..., head.softmax_order])
        _gap(report, "heads", "box_deltas", outputs["box_deltas"],
             reference[f"{i}/bbox_regression"][:, rows][..., list(DELTAS_FROM_TORCHVISION)])
        theirs_found.append(_torchvision_found(reference, i, head.columns))
        ours_found.append(_found(uncapped.detect(image[None]), config.image_size))
    report["detections"] = _matched(theirs_found, ours_found)
    report["settings"] = settings
    return report
