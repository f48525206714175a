"""Slow, obvious pure-Python references the tests compare tfzoo's tensor code against."""
import numpy as np


def box_iou(a, b):
    """IoU of two ``[y1, x1, y2, x2]`` boxes, one pair, in plain Python; 0 for an empty union."""
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + max(b[2] - b[0], 0) * max(b[3] - b[1], 0) - inter
    return inter / union if union > 0 else 0.0


def pairwise_iou(a, b):
    """``[N, M]`` IoU matrix of ``[N, 4]`` and ``[M, 4]`` boxes, one pair at a time."""
    return np.array([[box_iou(x, y) for y in b] for x in a], np.float64).reshape(len(a), len(b))
