"""The feature pyramid network (Lin et al. 2017)."""
from __future__ import annotations

import keras

from tfzoo.layers.conv import Conv2D


def fpn(features, channels, min_level=3, max_level=7, name="fpn", extra="conv", extra_input="c5",
        symmetric_padding=False):
    """Feature pyramid (Lin et al. 2017) over backbone maps ``[C3, C4, C5]`` (or
    ``[C2, C3, C4, C5]``).

    P2/P3-P5: 1x1 lateral convs, top-down nearest 2x upsampling and sum, 3x3 output convs.
    Levels above 5: ``extra="conv"`` as RetinaNet, P6 = 3x3 stride-2 conv on C5, P7 = 3x3
    stride-2 conv on ReLU(P6); ``extra="pool"`` as the FPN paper's Faster R-CNN, P6 = P5
    subsampled with stride 2 (max level 6). ``min_level`` may be from the finest map given
    up to 5 (finer levels are dropped after the top-down pass).

    ``extra_input="p5"`` computes RetinaNet's P6 from P5 instead of C5 (torchvision's
    ``retinanet_resnet50_fpn``); ``symmetric_padding=True`` pads the input of the stride-2
    P6 and P7 convolutions by one pixel on every side, as PyTorch's ``padding=1`` (Keras'
    ``"same"`` pads an even side on the bottom and right only).

    Returns:
      list of ``[B, H_l, W_l, channels]`` tensors for levels ``min_level..max_level``.
    """
    first = 6 - len(features)  # the level of features[0]: 3 for [C3, C4, C5], 2 with C2
    if len(features) not in (3, 4) or not first <= min_level <= 5 or max_level < 5:
        raise ValueError(f"need [C3, C4, C5] or [C2, ..., C5] and {first} <= min_level <= 5 <= max_level, "
                         f"got {len(features)} maps and levels {min_level}..{max_level}")
    if extra not in ("conv", "pool") or (extra == "pool" and max_level > 6):
        raise ValueError(f"extra must be 'conv' or 'pool' (P6 at most), got {extra!r} up to P{max_level}")
    if extra_input not in ("c5", "p5"):
        raise ValueError(f"extra_input must be 'c5' or 'p5', got {extra_input!r}")
    conv = Conv2D
    levels = tuple(range(first, 6))
    laterals = {level: conv(channels, 1, name=f"{name}_lateral_p{level}")(c) for level, c in zip(levels, features)}
    merged = {5: laterals[5]}
    for level in reversed(levels[:-1]):
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up_p{level + 1}")(merged[level + 1])
        merged[level] = keras.layers.Add(name=f"{name}_merge_p{level}")([laterals[level], up])
    outputs = {
        level: conv(channels, 3, padding="same", name=f"{name}_output_p{level}")(merged[level])
        for level in levels if level >= min_level
    }
    if extra == "pool":
        if max_level == 6:
            outputs[6] = keras.layers.MaxPooling2D(1, strides=2, padding="same", name=f"{name}_p6")(outputs[5])
        return [outputs[level] for level in range(min_level, max_level + 1)]
    # P6, P7 stay float32 under a mixed policy: they cost little, and oneDNN's bfloat16
    # stride-2 convolution returns garbage (often Inf/NaN) on a 1x1 input (TF 2.21, AMX CPU),
    # which a 64-px image's C5 or P6 is.
    previous = features[-1] if extra_input == "c5" else outputs[5]
    for level in range(6, max_level + 1):
        if level > 6:
            previous = keras.layers.ReLU(name=f"{name}_relu_p{level - 1}", dtype="float32")(previous)
        padding = "same"
        if symmetric_padding:
            previous = keras.layers.ZeroPadding2D(1, name=f"{name}_pad_p{level}", dtype="float32")(previous)
            padding = "valid"
        previous = conv(channels, 3, strides=2, padding=padding, name=f"{name}_p{level}", dtype="float32")(previous)
        outputs[level] = previous
    return [outputs[level] for level in range(min_level, max_level + 1)]
