"""The Darknets of YOLOv2 and YOLOv3 (Redmon & Farhadi 2017, 2018), built in Keras.

Every convolution is Darknet's "convolutional" layer with ``batch_normalize=1``: no
bias, batch norm (:data:`BATCHNORM_EPSILON`), leaky ReLU 0.1.
Stride-2 convolutions pad like Darknet (one pixel on every side, so output ``i`` sees input
rows ``2i - 1 .. 2i + 1``): a zero row and column on the top and left, then a "valid"
convolution. Keras' "same" would pad bottom and right instead and shift every strided map
by one pixel against weights converted from Darknet's ``.weights`` files.

- ``darknet19`` (YOLOv2 table 6, without its classifier): 18 convolutions and 5 max-pools;
  C3 is the last 256-channel map (stride 8), C4 the last 512-channel map (stride 16, the
  26 x 26 x 512 map of YOLOv2's passthrough at 416), C5 the last 1024-channel map
  (stride 32).
- ``darknet53`` (YOLOv3 table 1, without its classifier): 52 convolutions, five stride-2
  convolutions each followed by 1, 2, 8, 8, 4 residual blocks (1x1 halving, 3x3 restoring
  the channels); C3, C4, C5 are the outputs of the 8, 8 and 4 block stages (256, 512, 1024
  channels; YOLOv3's three scales).

- ``darknet_tiny`` (the trunk of ``yolov2-tiny-voc.cfg`` and ``yolov3-tiny.cfg``): 3x3
  convolutions of 16, 32, 64, 128, 256, 512 channels, each but the last followed by a 2x2
  stride-2 max-pool, then a 2x2 stride-1 max-pool (Darknet pads it on the bottom and right,
  as Keras' "same" does); C4 is the 256-channel map (stride 16, 26 x 26 at 416), C5 the
  512-channel map after the last pool (stride 32).

- ``yolov1`` and ``fast_yolo``: YOLOv1's 24 convolutions and Fast YOLO's 9, down to one
  1024-channel map at stride 64 (C6: 7 x 7 at 448), batch-normalized.

Each takes a width multiplier ``alpha`` (1: the published widths).

None has ImageNet weights in Keras: they train from random initialization or load a
weights file. Inputs are expected in [0, 1] (Darknet divides pixels by 255: preprocessing
mode ``"unit"``).
"""
from __future__ import annotations

import keras

from tfzoo.layers import Conv2D, FusedBatchNormalization

#: Darknet's leaky ReLU slope.
LEAKY_SLOPE = 0.1
#: Batch-norm epsilon. Darknet divides by ``sqrt(variance) + 1e-6`` where Keras divides by
#: ``sqrt(variance + epsilon)``; with 1e-6 the two differ by about ``1e-6 / (2 variance)``
#: relative: 5e-7 for a variance of 1, 0.5 % for 1e-4, more for the near-dead channels of
#: converted weights (Keras' default 1e-3 would move them visibly everywhere).
BATCHNORM_EPSILON = 1e-6
#: Darknet-19 (YOLOv2 table 6, classifier left out): ``(filters, kernel)`` of each
#: convolution, ``"M"`` for a 2x2 stride-2 max-pool.
DARKNET19 = (
    (32, 3), "M", (64, 3), "M",
    (128, 3), (64, 1), (128, 3), "M",
    (256, 3), (128, 1), (256, 3), "M",
    (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), "M",
    (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
)
#: Darknet-53 (YOLOv3 table 1): residual blocks after each stride-2 convolution.
DARKNET53_BLOCKS = (1, 2, 8, 8, 4)
#: The tiny trunks' widths: one 3x3 convolution per stride 1 ... 32.
DARKNET_TINY = (16, 32, 64, 128, 256, 512)
#: YOLOv1's 24 convolutions (Redmon et al. 2016, figure 3): ``(filters, kernel, stride)``,
#: ``"M"`` a 2x2 stride-2 max-pool; 448 -> 7 x 7 x 1024 (stride 64).
YOLOV1 = (
    (64, 7, 2), "M", (192, 3, 1), "M",
    (128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1), "M",
    *((256, 1, 1), (512, 3, 1)) * 4, (512, 1, 1), (1024, 3, 1), "M",
    *((512, 1, 1), (1024, 3, 1)) * 2, (1024, 3, 1), (1024, 3, 2),
    (1024, 3, 1), (1024, 3, 1),
)
#: Fast YOLO's 9 convolutions (sec. 2 "Fast YOLO"; Darknet's ``yolo-tiny.cfg`` of 2016):
#: 16 ... 512 each followed by a max-pool, then three of 1024; 448 -> 7 x 7 x 1024.
FAST_YOLO = (
    (16, 3, 1), "M", (32, 3, 1), "M", (64, 3, 1), "M", (128, 3, 1), "M", (256, 3, 1), "M", (512, 3, 1), "M",
    (1024, 3, 1), (1024, 3, 1), (1024, 3, 1),
)


def conv_bn_leaky(x, filters, kernel, stride, name, momentum):
    """Darknet's convolutional layer with ``batch_normalize=1`` (see the module doc). A
    stride-2 convolution pads ``kernel // 2`` rows and columns on the top and left (and
    ``kernel // 2 - 1`` on the bottom and right, the rest of Darknet's symmetric padding
    that an even side never reads)."""
    if stride == 2:
        pad = kernel // 2
        x = keras.layers.ZeroPadding2D(((pad, pad - 1), (pad, pad - 1)), name=f"{name}_pad")(x)
    x = Conv2D(filters, kernel, stride, padding="valid" if stride == 2 else "same", use_bias=False,
               name=f"{name}_conv")(x)
    x = FusedBatchNormalization(momentum=momentum, epsilon=BATCHNORM_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_leaky")(x)


def scaled_width(filters, alpha):
    """``filters`` times the width multiplier ``alpha``, rounded, at least 8."""
    return max(8, int(round(filters * alpha)))


def darknet19(image_size, alpha=1.0, batchnorm_momentum=None):
    """``(model, {"C3", "C4", "C5"})`` of Darknet-19 (see the module doc); ``alpha``
    scales every width (1: the paper's)."""
    momentum = 0.99 if batchnorm_momentum is None else float(batchnorm_momentum)
    inputs = keras.Input((*image_size, 3), name="image")
    x, features, stride, conv = inputs, {}, 1, 0
    for item in DARKNET19:
        if item == "M":
            features[f"C{stride.bit_length() - 1}"] = x  # the last map at this stride
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"pool{stride.bit_length()}")(x)
            stride *= 2
            continue
        conv += 1
        x = conv_bn_leaky(x, scaled_width(item[0], alpha), item[1], 1, f"conv{conv}", momentum)
    features["C5"] = x
    features = {k: features[k] for k in ("C3", "C4", "C5")}
    return keras.Model(inputs, features, name="darknet19"), features


def darknet53(image_size, alpha=1.0, batchnorm_momentum=None):
    """``(model, {"C3", "C4", "C5"})`` of Darknet-53 (see the module doc); ``alpha``
    scales every width (1: the paper's)."""
    momentum = 0.99 if batchnorm_momentum is None else float(batchnorm_momentum)
    inputs = keras.Input((*image_size, 3), name="image")
    x = conv_bn_leaky(inputs, scaled_width(32, alpha), 3, 1, "stem", momentum)
    features = {}
    for stage, blocks in enumerate(DARKNET53_BLOCKS, start=1):
        filters = scaled_width(64 * 2 ** (stage - 1), alpha)
        x = conv_bn_leaky(x, filters, 3, 2, f"down{stage}", momentum)
        for block in range(1, blocks + 1):
            name = f"stage{stage}_block{block}"
            y = conv_bn_leaky(x, filters // 2, 1, 1, f"{name}_1", momentum)
            y = conv_bn_leaky(y, filters, 3, 1, f"{name}_2", momentum)
            x = keras.layers.Add(name=f"{name}_add")([x, y])
        if stage >= 3:
            features[f"C{stage}"] = x
    return keras.Model(inputs, features, name="darknet53"), features


def darknet_tiny(image_size, alpha=1.0, batchnorm_momentum=None):
    """``(model, {"C4", "C5"})`` of the tiny YOLOs' trunk (see the module doc)."""
    momentum = 0.99 if batchnorm_momentum is None else float(batchnorm_momentum)
    inputs = keras.Input((*image_size, 3), name="image")
    x, features = inputs, {}
    for k, filters in enumerate(DARKNET_TINY, start=1):
        x = conv_bn_leaky(x, scaled_width(filters, alpha), 3, 1, f"conv{k}", momentum)
        if k == 5:
            features["C4"] = x
        stride = 2 if k < len(DARKNET_TINY) else 1
        x = keras.layers.MaxPooling2D(2, stride, padding="same", name=f"pool{k}")(x)
    features["C5"] = x
    return keras.Model(inputs, features, name="darknet_tiny"), features


def _yolov1_trunk(layout, name, image_size, alpha=1.0, batchnorm_momentum=None):
    momentum = 0.99 if batchnorm_momentum is None else float(batchnorm_momentum)
    inputs = keras.Input((*image_size, 3), name="image")
    x, conv, pool = inputs, 0, 0
    for item in layout:
        if item == "M":
            pool += 1
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"pool{pool}")(x)
            continue
        conv += 1
        filters, kernel, stride = item
        x = conv_bn_leaky(x, scaled_width(filters, alpha), kernel, stride, f"conv{conv}", momentum)
    return keras.Model(inputs, {"C6": x}, name=name), {"C6": x}


def yolov1_trunk(image_size, alpha=1.0, batchnorm_momentum=None):
    """``(model, {"C6"})``: YOLOv1's 24 convolutions (:data:`YOLOV1`), stride 64, with batch
    normalization (the paper has none; Darknet's later ``yolov1.cfg`` and the seed add it)."""
    return _yolov1_trunk(YOLOV1, "yolov1_trunk", image_size, alpha, batchnorm_momentum)


def fast_yolo_trunk(image_size, alpha=1.0, batchnorm_momentum=None):
    """``(model, {"C6"})``: Fast YOLO's 9 convolutions (:data:`FAST_YOLO`), stride 64, with
    batch normalization."""
    return _yolov1_trunk(FAST_YOLO, "fast_yolo_trunk", image_size, alpha, batchnorm_momentum)


# --- Darknet's .weights files ------------------------------------------------------------
#
# The format Darknet writes (src/parser.c, save_weights / load_weights): a header of three
# int32 (major, minor, revision) and the images seen (int64 from version 0.2 on, int32
# before), then each layer's parameters in the cfg's order, float32 little-endian; for a
# convolution with batch normalization: biases (the batch norm's beta), scales (gamma),
# rolling mean, rolling variance, then the kernel [out, in, kh, kw]; without: biases, then
# the kernel. ImageNet-pretrained trunks (``darknet53.conv.74``: Darknet-53's 52
# convolutions; ``darknet19_448.conv.23``: Darknet-19's 18) are such files cut after the
# trunk.


class DarknetWeightsError(ValueError):
    """A Darknet weights file that does not fit the model (named with the layer)."""


def darknet_convolutions(model):
    """``[(conv, batch_norm or None)]`` of a Darknet trunk in its cfg's order (the graph's
    order: the trunks are chains, with residual additions); given a detector, those of its
    trunk (its ``"backbone"`` layer). A convolution ``X_conv`` pairs with ``X_bn``."""
    try:
        trunk = model.get_layer("backbone")
    except ValueError:
        trunk = model
    norms = {layer.name: layer for layer in trunk.layers if isinstance(layer, keras.layers.BatchNormalization)}
    convs = [layer for layer in trunk.layers if isinstance(layer, keras.layers.Conv2D)]
    return [(conv, norms.get(conv.name[:-len("_conv")] + "_bn") if conv.name.endswith("_conv") else None)
            for conv in convs]


def read_weights_file(path):
    """``(header, values)`` of a Darknet ``.weights`` file: ``{"major", "minor", "revision",
    "seen"}`` and every parameter after the header, float32 (a file cut inside a value
    loses that value: the layer it belongs to names the cut)."""
    import numpy as np  # noqa: PLC0415

    with open(path, "rb") as f:
        data = f.read()
    major, minor, revision = (int(v) for v in np.frombuffer(data[:12], "<i4")) if len(data) >= 12 else (0, 0, 0)
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000  # images seen: int64 from 0.2 on
    if len(data) < (20 if wide else 16):
        raise DarknetWeightsError(f"{path}: {len(data)} bytes, too short for a Darknet weights header")
    seen = int(np.frombuffer(data[12:20], "<i8")[0] if wide else np.frombuffer(data[12:16], "<i4")[0])
    body = data[20 if wide else 16:]
    values = np.frombuffer(body[:len(body) // 4 * 4], "<f4")
    return {"major": major, "minor": minor, "revision": revision, "seen": seen}, values


def write_weights_file(path, arrays, seen=0):
    """Writes ``arrays`` (float32, in order) after a version 0.2.0 header with ``seen`` as a
    Darknet ``.weights`` file, atomically."""
    import numpy as np  # noqa: PLC0415

    from tfzoo.atomic import atomic_file  # noqa: PLC0415

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(np.array([0, 2, 0], "<i4").tobytes() + np.array([seen], "<i8").tobytes())
        for array in arrays:
            f.write(np.ascontiguousarray(array, "<f4").tobytes())


def convolution_values(conv, norm):
    """A convolutional layer's parameters in Darknet's order: with a batch norm ``[beta,
    gamma, mean, variance, kernel [out, in, kh, kw]]``, else ``[bias, kernel]``."""
    import numpy as np  # noqa: PLC0415

    kernel = np.asarray(conv.kernel, np.float32)
    if norm is not None:
        gamma, beta, mean, variance = (np.asarray(w, np.float32) for w in norm.get_weights())
        parts = [beta, gamma, mean, variance]
    else:
        parts = [np.asarray(conv.bias, np.float32) if conv.use_bias else np.zeros([kernel.shape[-1]], np.float32)]
    return parts + [kernel.transpose(3, 2, 0, 1)]


def take_values(values, position, sizes, path, where):
    """``(chunks, new position)``: the next ``sum(sizes)`` values split by ``sizes``;
    :class:`DarknetWeightsError` naming ``path`` and ``where`` (the layer) when the file ends first."""
    import numpy as np  # noqa: PLC0415

    need = sum(sizes)
    if position + need > len(values):
        raise DarknetWeightsError(f"{path}: ends inside layer {where} (needs {need} values, "
                                  f"{len(values) - position} left)")
    return np.split(values[position:position + need], np.cumsum(sizes)[:-1]), position + need


def set_convolution(conv, norm, values, position, path, where):
    """Reads one convolutional layer (:func:`convolution_values`' order) from ``values`` at
    ``position`` into ``conv`` (and ``norm``); returns the new position."""
    import numpy as np  # noqa: PLC0415

    kh, kw, cin, cout = conv.kernel.shape
    sizes = ([cout] * 4 if norm is not None else [cout]) + [cout * cin * kh * kw]
    chunks, position = take_values(values, position, sizes, path, where)
    weights = chunks[-1].reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0)
    if norm is not None:
        beta, gamma, mean, variance = chunks[:4]
        norm.set_weights([gamma, beta, mean, variance])
        conv.set_weights([weights] + ([np.zeros([cout], np.float32)] if conv.use_bias else []))
    else:
        conv.set_weights([weights] + ([chunks[0]] if conv.use_bias else []))
    return position


def load_darknet_weights(model, path, convolutions=None):
    """Loads a Darknet trunk's ``.weights`` file into the convolutions of ``model`` (a
    trunk, or a detector: its trunk's), in order.

    ``convolutions``: how many to load (default: as many as the file holds, at most the
    trunk's: a ``.conv.74`` file is Darknet-53's 52). Returns the number loaded.
    :class:`DarknetWeightsError` names the file and the layer when the file ends inside a
    layer, and says so when values are left after the trunk (a whole detector's file, such
    as ``yolov3.weights``: :func:`tfzoo.convert.darknet.load_yolo_weights` reads those).
    """
    _, values = read_weights_file(path)
    position = 0
    pairs = darknet_convolutions(model)
    limit = len(pairs) if convolutions is None else int(convolutions)
    loaded = 0
    for conv, norm in pairs[:limit]:
        if position == len(values) and convolutions is None:
            break
        position = set_convolution(conv, norm, values, position, path,
                                   f"{conv.name} (convolution {loaded + 1})")
        loaded += 1
    if convolutions is None and position != len(values):
        raise DarknetWeightsError(f"{path}: {len(values) - position} values left after the trunk's {loaded} "
                                  "convolutions: a whole detector's file or another network's; this reads trunk "
                                  "files (darknet53.conv.74, darknet19_448.conv.23); 'tfzoo convert' reads "
                                  "yolov3.weights and yolov3-tiny.weights")
    return loaded


def save_darknet_weights(model, path, convolutions=None, seen=0):
    """Writes the first ``convolutions`` (default: all) of ``model``'s trunk convolutions
    (:func:`darknet_convolutions`) as a Darknet ``.weights`` file (version 0.2.0,
    atomically), the inverse of :func:`load_darknet_weights`."""
    pairs = darknet_convolutions(model)[:convolutions]
    write_weights_file(path, (part for conv, norm in pairs for part in convolution_values(conv, norm)), seen)
