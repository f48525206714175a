"""Dense prediction heads: shared across pyramid levels (RetinaNet: :func:`dense_head`; the
RPN: :func:`rpn_head`) or one per feature map (SSD: :func:`per_map_head`)."""
from __future__ import annotations

import keras

from tfzoo.layers.conv import Conv2D

#: ``norm`` values of :func:`dense_head`.
HEAD_NORMS = ("none", "group")


def dense_head(levels, outputs_per_anchor, num_anchors, channels, num_convs, bias_init="zeros", norm="none",
               separable=False, name="head"):
    """A RetinaNet-style head shared across levels: ``num_convs`` x (3x3 conv + ReLU), then
    a 3x3 conv with ``num_anchors * outputs_per_anchor`` channels.

    The same layer objects run on every level (one set of weights). The output conv and
    the reshape run in float32 (mixed-precision safe). ``norm="group"`` puts a GroupNorm
    (groups of 8 channels at most 32 groups, shared across levels, as detectron2's GN
    heads) between each conv and its ReLU: heads trained from scratch converge much faster.
    ``separable=True`` makes every 3x3 conv, the output conv included, a depthwise 3x3 conv
    followed by a 1x1 conv (SSDLite's and EfficientDet's heads): with 80 classes, a 96-channel
    output conv at 320 px costs 2.7 GFLOP as a plain 3x3 conv and 0.3 GFLOP separable.

    Returns:
      ``[B, sum_l H_l * W_l * num_anchors, outputs_per_anchor]`` float32, levels in order,
      anchor-major within each location (matching :func:`tfzoo.ops.anchors.multilevel_anchors`).
    """
    if norm not in HEAD_NORMS:
        raise ValueError(f"norm must be one of {HEAD_NORMS}, got {norm!r}")

    def conv3x3(filters, layer_name, **kwargs):
        if not separable:
            return Conv2D(filters, 3, padding="same", kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                          name=layer_name, **kwargs)
        # The depthwise kernel keeps Keras' default (Glorot) initialization: with both
        # factors at stddev 0.01 the gradients of each would be scaled by the other's 1e-2.
        return keras.layers.SeparableConv2D(
            filters, 3, padding="same", pointwise_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name=layer_name, **kwargs)

    convs = []
    for i in range(num_convs):
        convs.append(conv3x3(channels, f"{name}_conv{i}", activation="relu" if norm == "none" else None))
        if norm == "group":
            groups = max(1, min(32, channels // 8))
            convs.append(keras.layers.GroupNormalization(groups, name=f"{name}_gn{i}"))
            convs.append(keras.layers.ReLU(name=f"{name}_relu{i}"))
    predict = conv3x3(num_anchors * outputs_per_anchor, f"{name}_predict", dtype="float32",
                      bias_initializer=bias_init)
    per_level = []
    for level_index, x in enumerate(levels):
        for layer in convs:
            x = layer(x)
        x = predict(x)  # [B, H, W, A * D]
        per_level.append(keras.layers.Reshape((-1, outputs_per_anchor), name=f"{name}_reshape{level_index}", dtype="float32")(x))  # [B, H*W*A, D]
    if len(per_level) == 1:
        return per_level[0]
    return keras.layers.Concatenate(axis=1, name=f"{name}_concat", dtype="float32")(per_level)


def per_map_head(maps, outputs_per_anchor, anchors_per_map, separable=False, bias_init="zeros", name="head"):
    """SSD's heads: one 3x3 convolution per feature map (its own weights; maps differ in
    channels) with ``anchors_per_map[k] * outputs_per_anchor`` outputs, reshaped and
    concatenated in map order.

    ``separable=True``: SSDLite's depthwise 3x3 + 1x1 (Sandler et al. 2018). The output
    convs and the reshapes run in float32 (mixed-precision safe).

    Returns:
      ``[B, sum_k H_k * W_k * anchors_per_map[k], outputs_per_anchor]`` float32,
      anchor-major within each location (matching :func:`tfzoo.ops.anchors.ssd_default_boxes`).
    """
    if len(maps) != len(anchors_per_map):
        raise ValueError(f"one anchor count per map: {len(anchors_per_map)} for {len(maps)} maps")
    per_map = []
    for k, (x, anchors) in enumerate(zip(maps, anchors_per_map)):
        filters = int(anchors) * outputs_per_anchor
        if separable:
            conv = keras.layers.SeparableConv2D(filters, 3, padding="same", dtype="float32",
                                                bias_initializer=bias_init, name=f"{name}_{k}")
        else:
            conv = Conv2D(filters, 3, padding="same", dtype="float32", bias_initializer=bias_init,
                          name=f"{name}_{k}")
        per_map.append(keras.layers.Reshape((-1, outputs_per_anchor), dtype="float32",
                                            name=f"{name}_reshape{k}")(conv(x)))  # [B, H*W*anchors, D]
    if len(per_map) == 1:
        return per_map[0]
    return keras.layers.Concatenate(axis=1, dtype="float32", name=f"{name}_concat")(per_map)


def rpn_head(levels, num_anchors, channels, name="rpn"):
    """Faster R-CNN's region proposal head (Ren et al. 2015, sec. 3.1): a 3x3 convolution of
    ``channels`` with ReLU, then two sibling 1x1 convolutions, one objectness logit and 4
    box deltas per anchor. With several levels (FPN) the same three layers run on every
    level (Lin et al. 2017: the head is shared). Weights drawn from N(0, 0.01), biases 0,
    as the paper initializes the new layers. The sibling convolutions and reshapes run in
    float32 (mixed-precision safe).

    Returns:
      ``(objectness [B, sum_l H_l * W_l * num_anchors], deltas [B, ..., 4])`` float32,
      levels in order, anchor-major within each location (matching
      :func:`tfzoo.ops.anchors.grid_anchors` and :func:`tfzoo.ops.anchors.multilevel_anchors`).
    """
    init = keras.initializers.RandomNormal(stddev=0.01)
    conv = Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer=init, name=f"{name}_conv")
    logits = Conv2D(num_anchors, 1, kernel_initializer=init, dtype="float32", name=f"{name}_objectness")
    boxes = Conv2D(4 * num_anchors, 1, kernel_initializer=init, dtype="float32", name=f"{name}_deltas")
    objectness, deltas = [], []
    for index, x in enumerate(levels):
        x = conv(x)
        objectness.append(keras.layers.Reshape((-1,), dtype="float32", name=f"{name}_objectness_reshape{index}")(
            logits(x)))  # [B, H*W*A]
        deltas.append(keras.layers.Reshape((-1, 4), dtype="float32", name=f"{name}_deltas_reshape{index}")(
            boxes(x)))  # [B, H*W*A, 4]
    if len(levels) == 1:
        return objectness[0], deltas[0]
    return (keras.layers.Concatenate(axis=1, dtype="float32", name=f"{name}_objectness_concat")(objectness),
            keras.layers.Concatenate(axis=1, dtype="float32", name=f"{name}_deltas_concat")(deltas))
