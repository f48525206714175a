"""Darknet's whole-detector ``.weights`` files (``yolov3.weights``, ``yolov3-tiny.weights``)
in and out of tfzoo's ``yolov3`` and ``yolov3_tiny``.

The file (Darknet's ``src/parser.c``; :mod:`tfzoo.backbones.darknet` reads the header and
the convolutional layers) holds every ``[convolutional]`` section of the ``.cfg`` in order.
tfzoo's graph has the same convolutions; :func:`darknet_layers` lists them in the cfg's
order (the trunk's, then per scale, coarsest first: the five alternating 1x1 / 3x3
convolutions, the 3x3 one before the output, the output, then the 1x1 convolution that
feeds the upsampling of the next scale). Checked against the published ``yolov3.cfg`` and
``yolov3-tiny.cfg`` (``tests/models/test_convert_darknet.py``).

A ``[yolo]`` layer's output convolution has ``P * (5 + K)`` filters, per prior ``x, y, w,
h, objectness, K classes``; tfzoo splits it into three convolutions per scale (box ``t_y,
t_x, t_h, t_w``, objectness, classes: :data:`tfzoo.models.yolo.OUTPUT_PARTS`), so its
channels are regrouped and the box terms swapped to (y, x, h, w). The class order is the
cfg's (``coco.names`` for the published files: COCO's categories in id order, which is
tfzoo's contiguous order for ``tfds:coco/2017`` and COCO folders).

What stays different (documented, measured in BENCHMARKS.md):

- Darknet's batch norm divides by ``sqrt(variance) + 1e-6``, Keras' by ``sqrt(variance +
  1e-6)`` (:data:`tfzoo.backbones.darknet.BATCHNORM_EPSILON`): about ``1e-6 / (2
  variance)`` apart, relative (5e-7 at a variance of 1, 0.5 % at 1e-4). The weights are
  stored as the file has them, so a file reads back equal to the bit.
- Darknet's detector letterboxes a photograph into its square input; tfzoo's YOLOs warp
  it (as they train). On square images at the network size both see the same pixels.
"""
from __future__ import annotations

import re

import numpy as np

from tfzoo.backbones.darknet import (DarknetWeightsError, convolution_values, darknet_convolutions, read_weights_file,
                                     set_convolution, take_values, write_weights_file)

#: Darknet's order of a prediction's entries, and where tfzoo's box terms come from:
#: tfzoo's (t_y, t_x, t_h, t_w) are Darknet's entries (1, 0, 3, 2).
BOX_FROM_DARKNET = (1, 0, 3, 2)


def _layer(detector, name):
    return detector.get_layer(name)


def _conv_bn(detector, stem):
    return ("conv", _layer(detector, f"{stem}_conv"), _layer(detector, f"{stem}_bn"))


def darknet_layers(detector):
    """The convolutional layers of a ``yolov3`` / ``yolov3_tiny`` detector in the order of
    its Darknet cfg: ``("conv", conv, batch_norm)`` or ``("yolo", scale name)`` for a
    scale's output (its three convolutions, one Darknet layer)."""
    backbone = detector.config.backbone
    if backbone not in ("darknet53", "darknet_tiny") or len(detector.config.masks) not in (2, 3):
        raise ValueError(f"{detector.config.name}: Darknet .weights files are read for YOLOv3 (darknet53) and "
                         f"YOLOv3-tiny (darknet_tiny) layouts, not {backbone}")
    layers = [("conv", conv, norm) for conv, norm in darknet_convolutions(detector)]
    if backbone == "darknet_tiny":
        layers += [_conv_bn(detector, "head5_1"), _conv_bn(detector, "head5_2"), _conv_bn(detector, "head5_3"),
                   ("yolo", "p5"), _conv_bn(detector, "up4_conv"), _conv_bn(detector, "head4_1"), ("yolo", "p4")]
        return layers
    for level, name in ((5, "p5"), (4, "p4"), (3, "p3")):
        if level < 5:
            layers.append(_conv_bn(detector, f"up{level}_conv"))
        layers += [_conv_bn(detector, f"head{level}_{k}") for k in range(1, 7)]
        layers.append(("yolo", name))
    return layers


def _output_layers(detector, name):
    from tfzoo.models.yolo import OUTPUT_PARTS, output_key  # noqa: PLC0415

    return [_layer(detector, output_key(name, part)) for part, _ in OUTPUT_PARTS]


def _priors_of(detector, name):
    return len(detector.config.masks[detector.output_names_by_stride.index(name)])


def _darknet_channel_order(priors, num_classes):
    """For tfzoo's output channels concatenated (box ``[P * 4]``, objectness ``[P]``, classes
    ``[P * K]``), the index of each in Darknet's ``[P * (5 + K)]`` output."""
    entries = 5 + num_classes
    box = [n * entries + BOX_FROM_DARKNET[j] for n in range(priors) for j in range(4)]
    objectness = [n * entries + 4 for n in range(priors)]
    classes = [n * entries + 5 + k for n in range(priors) for k in range(num_classes)]
    return np.array(box + objectness + classes)


def _set_output(detector, name, values, position, path):
    box, obj, cls = _output_layers(detector, name)
    cin = box.kernel.shape[2]
    order = _darknet_channel_order(_priors_of(detector, name), detector.config.num_classes)
    filters = len(order)
    (bias, kernel), position = take_values(values, position, [filters, filters * cin], path,
                                           f"{name} output ({filters} filters)")
    kernel = kernel.reshape(filters, cin)[order]  # tfzoo's channel order
    bias = bias[order]
    start = 0
    for layer in (box, obj, cls):
        count = layer.kernel.shape[-1]
        layer.set_weights([kernel[start:start + count].T.reshape(1, 1, cin, count), bias[start:start + count]])
        start += count
    return position


def _output_values(detector, name):
    box, obj, cls = _output_layers(detector, name)
    kernel = np.concatenate([np.asarray(layer.kernel, np.float32)[0, 0].T for layer in (box, obj, cls)])
    bias = np.concatenate([np.asarray(layer.bias, np.float32) for layer in (box, obj, cls)])
    order = _darknet_channel_order(_priors_of(detector, name), detector.config.num_classes)
    darknet_kernel, darknet_bias = np.empty_like(kernel), np.empty_like(bias)
    darknet_kernel[order], darknet_bias[order] = kernel, bias
    return [darknet_bias, darknet_kernel]  # [out, in] = [out, in, 1, 1] in C order


def load_yolo_weights(detector, path):
    """Loads a whole detector's Darknet ``.weights`` file (``yolov3.weights``,
    ``yolov3-tiny.weights``, or one :func:`save_yolo_weights` wrote) into ``detector``,
    whose config must match the file's cfg (:func:`config_from_cfg`). Returns the header.
    :class:`~tfzoo.backbones.darknet.DarknetWeightsError` names the file and the layer
    where it ends early, or the values left over (another cfg's file)."""
    header, values = read_weights_file(path)
    position = 0
    layers = darknet_layers(detector)
    for index, layer in enumerate(layers):
        if layer[0] == "conv":
            _, conv, norm = layer
            position = set_convolution(conv, norm, values, position, path,
                                       f"{conv.name} (convolutional layer {index + 1})")
        else:
            position = _set_output(detector, layer[1], values, position, path)
    if position != len(values):
        raise DarknetWeightsError(f"{path}: {len(values) - position} values left after the "
                                  f"{len(layers)} convolutional layers of "
                                  f"{detector.config.name} ({detector.config.num_classes} classes): a file of another "
                                  "cfg (other classes, priors per scale or widths); pass its --cfg")
    return header


def save_yolo_weights(detector, path, seen=0):
    """Writes ``detector``'s weights as a Darknet ``.weights`` file (version 0.2.0,
    atomically): the inverse of :func:`load_yolo_weights`."""
    def arrays():
        for layer in darknet_layers(detector):
            if layer[0] == "conv":
                yield from convolution_values(layer[1], layer[2])
            else:
                yield from _output_values(detector, layer[1])

    write_weights_file(path, arrays(), seen)


# --- the .cfg -------------------------------------------------------------------------------


def parse_cfg(text):
    """``[(section, {key: value})]`` of a Darknet ``.cfg`` text (comments and blank lines
    dropped, values as strings)."""
    sections = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"line {number}: a section header without ']': {raw.strip()!r}")
            sections.append((line[1:-1].strip(), {}))
            continue
        if "=" not in line or not sections:
            raise ValueError(f"line {number}: expected key=value inside a section, got {raw.strip()!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        sections[-1][1][key] = value
    return sections


def _numbers(text, kind=float):
    return [kind(v) for v in re.split(r"[,\s]+", text.strip()) if v]


def config_from_cfg(text):
    """tfzoo settings for a Darknet YOLOv3 cfg's text: ``{"backbone", "image_size",
    "num_classes", "priors", "masks"}`` (priors as (h, w) fractions of the input, masks
    coarsest scale first), plus ``"layout"``: ``[(filters, size, stride, batch_normalize,
    input channels)]`` of its convolutional sections, to check a detector against
    (:func:`cfg_layout`).

    The masks must use each prior once (the published cfgs do); a cfg whose masks share or
    skip priors is refused with its masks named."""
    sections = parse_cfg(text)
    if not sections or sections[0][0] not in ("net", "network"):
        raise ValueError("a Darknet cfg starts with a [net] section")
    net = sections[0][1]
    width, height = int(net.get("width", 416)), int(net.get("height", 416))
    if width != height:
        raise ValueError(f"[net] is {width} x {height}; tfzoo's YOLOs take square inputs")
    yolo = [options for name, options in sections if name == "yolo"]
    if len(yolo) not in (2, 3):
        raise ValueError(f"{len(yolo)} [yolo] sections: YOLOv3 has 3, YOLOv3-tiny 2")
    anchors = _numbers(yolo[0]["anchors"])
    pairs = [(anchors[i], anchors[i + 1]) for i in range(0, len(anchors), 2)]  # (w, h) pixels at the net size
    classes = {int(options.get("classes", 20)) for options in yolo}  # Darknet's default: 20
    if len(classes) != 1:
        raise ValueError(f"the [yolo] sections disagree on classes: {sorted(classes)}")
    masks = tuple(tuple(_numbers(options["mask"], int)) for options in yolo)  # the cfg's order: coarsest first
    used = sorted(i for mask in masks for i in mask)
    if used != list(range(len(pairs))):
        raise ValueError(f"masks {[list(m) for m in masks]} do not use each of the {len(pairs)} anchors once")
    layout = _cfg_layout(sections[1:], int(net.get("channels", 3)))
    return {"backbone": "darknet_tiny" if len(yolo) == 2 else "darknet53", "image_size": width,
            "num_classes": classes.pop(), "priors": tuple((round(h / width, 6), round(w / width, 6)) for w, h in pairs),
            "masks": masks, "layout": layout}


def _cfg_layout(layers, channels):
    """``[(filters, size, stride, batch_normalize, input channels)]`` of a cfg's
    ``[convolutional]`` sections (``layers``: the sections after ``[net]``), the input
    channels followed through the routes, shortcuts, pools and upsamplings."""
    out, produced = [], []  # produced[i]: the channels layer i outputs
    for index, (name, options) in enumerate(layers):
        previous = produced[-1] if produced else channels
        if name == "convolutional":
            filters = int(options["filters"])
            out.append((filters, int(options.get("size", 1)), int(options.get("stride", 1)),
                        int(options.get("batch_normalize", 0)), previous))
            produced.append(filters)
        elif name == "route":
            sources = [int(v) for v in _numbers(options["layers"], int)]
            produced.append(sum(produced[i if i >= 0 else index + i] for i in sources))
        else:  # shortcut, maxpool, upsample, yolo: the channels pass through
            produced.append(previous)
    return out


def cfg_layout(detector):
    """``[(filters, size, stride, batch_normalize, input channels)]`` of ``detector``'s
    layers in cfg order (:func:`darknet_layers`), as a cfg's ``[convolutional]`` sections
    give them (:func:`config_from_cfg`'s ``"layout"``)."""
    out = []
    for layer in darknet_layers(detector):
        if layer[0] == "conv":
            conv = layer[1]
            kh, _, cin, cout = (int(v) for v in conv.kernel.shape)
            out.append((cout, kh, int(conv.strides[0]), 1, cin))
        else:
            outputs = _output_layers(detector, layer[1])
            out.append((sum(int(lyr.kernel.shape[-1]) for lyr in outputs), 1, 1, 0, int(outputs[0].kernel.shape[2])))
    return out


#: The presets a Darknet file converts into, by trunk.
PRESETS = {"darknet53": "yolov3", "darknet_tiny": "yolov3_tiny"}
#: What a converted detector sets on top of its preset: the published widths (tfzoo's CPU
#: ``yolov3_tiny`` is narrower), no other weights, and the priors kept when it trains on.
FULL_WIDTH = {"backbone_alpha": 1.0, "head_width": 1.0, "backbone_weights": None, "fit_priors": False}


def build_for_cfg(cfg, model=None):
    """A random-weight ``yolov3`` / ``yolov3_tiny`` detector shaped as ``cfg`` (its text,
    :func:`config_from_cfg`) says, its layers checked against the cfg's, section by section."""
    import tfzoo  # noqa: PLC0415

    settings = config_from_cfg(cfg)
    expected = PRESETS[settings["backbone"]]
    if model not in (None, expected):
        raise ValueError(f"the cfg has {'two' if expected == 'yolov3_tiny' else 'three'} [yolo] layers: a {expected} "
                         f"cfg, not {model}'s")
    model = expected
    detector = tfzoo.build_model(model, **FULL_WIDTH, **{k: v for k, v in settings.items() if k != "layout"})
    ours = cfg_layout(detector)
    if ours != settings["layout"]:
        first = next((i for i, (a, b) in enumerate(zip(ours, settings["layout"])) if a != b),
                     min(len(ours), len(settings["layout"])))
        raise ValueError(f"{model} does not match the cfg at convolutional section {first + 1}: "
                         f"(filters, size, stride, batch_normalize, input channels) "
                         f"{ours[first] if first < len(ours) else 'none'} here, "
                         f"{settings['layout'][first] if first < len(settings['layout']) else 'none'} in the cfg "
                         f"({len(ours)} sections here, {len(settings['layout'])} there)")
    return detector
