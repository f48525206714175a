"""Keras building blocks shared by the detectors, one module each: :mod:`.normalization`
(input normalization, fused batch norm), :mod:`.conv` (``Conv2D``), :mod:`.fpn`,
:mod:`.heads` (dense heads), :mod:`.precision` (dtype policies of model parts).

Everything here is either a registered serializable layer or a function that wires stock
Keras layers into a functional graph, so models load with ``safe_mode=True``.

Shape legend: B batch, H/W feature height/width, A anchors, K classes, L levels.
"""
from __future__ import annotations

from tfzoo.layers.conv import (GROUPED_MIN_PIXELS, Conv2D, SpaceToDepth, _grouped_inference_host, output_kernel,
                               portable_convolutions)
from tfzoo.layers.fpn import fpn
from tfzoo.layers.heads import HEAD_NORMS, dense_head, per_map_head, rpn_head
from tfzoo.layers.normalization import NORMALIZATION_MODES, FusedBatchNormalization, ImageNormalization, L2Normalization
from tfzoo.layers.precision import DTYPE_POLICIES, dtype_policy

__all__ = [
    "DTYPE_POLICIES",
    "dtype_policy",
    "NORMALIZATION_MODES",
    "ImageNormalization",
    "FusedBatchNormalization",
    "GROUPED_MIN_PIXELS",
    "portable_convolutions",
    "_grouped_inference_host",
    "Conv2D",
    "SpaceToDepth",
    "output_kernel",
    "fpn",
    "HEAD_NORMS",
    "rpn_head",
    "dense_head",
    "per_map_head",
    "L2Normalization",
]
