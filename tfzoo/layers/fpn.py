"""The feature pyramid network (Lin et al. 2017)."""
from __future__ import annotations

import keras

from tfzoo.layers.conv import Conv2D


def fpn(features, channels, min_level=3, max_level=7, name="fpn"):
    """Feature pyramid (Lin et al. 2017) over backbone maps ``[C3, C4, C5]``.

    P3-P5: 1x1 lateral convs, top-down nearest 2x upsampling and sum, 3x3 output convs.
    Levels above 5 as in RetinaNet: P6 = 3x3 stride-2 conv on C5, P7 = 3x3 stride-2 conv on
    ReLU(P6). ``min_level`` may be 3..5 (finer levels are dropped after the top-down pass).

    Returns:
      list of ``[B, H_l, W_l, channels]`` tensors for levels ``min_level..max_level``.
    """
    if not 3 <= min_level <= 5 or max_level < 5:
        raise ValueError(f"need 3 <= min_level <= 5 <= max_level, got {min_level}..{max_level}")
    c3, c4, c5 = features
    conv = Conv2D
    laterals = {
        level: conv(channels, 1, name=f"{name}_lateral_p{level}")(c)
        for level, c in zip((3, 4, 5), (c3, c4, c5))
    }
    merged = {5: laterals[5]}
    for level in (4, 3):
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up_p{level + 1}")(merged[level + 1])
        merged[level] = keras.layers.Add(name=f"{name}_merge_p{level}")([laterals[level], up])
    outputs = {
        level: conv(channels, 3, padding="same", name=f"{name}_output_p{level}")(merged[level])
        for level in (3, 4, 5)
    }
    # P6, P7 stay float32 under a mixed policy: they cost little, and oneDNN's bfloat16
    # stride-2 convolution returns garbage (often Inf/NaN) on a 1x1 input (TF 2.21, AMX CPU),
    # which a 64-px image's C5 or P6 is.
    previous = c5
    for level in range(6, max_level + 1):
        if level > 6:
            previous = keras.layers.ReLU(name=f"{name}_relu_p{level - 1}", dtype="float32")(previous)
        previous = conv(channels, 3, strides=2, padding="same", name=f"{name}_p{level}", dtype="float32")(previous)
        outputs[level] = previous
    return [outputs[level] for level in range(min_level, max_level + 1)]
