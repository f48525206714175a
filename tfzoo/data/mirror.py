"""Do horizontal flips keep each class itself? A check on the data, before training.

A flip is the default augmentation of most detectors, and it is harmless where a mirrored
object is the same kind of object (a car, a ring). Where it is another class (``b`` and
``d``, left and right arrows) it teaches the model that the two look the same; where it
is no class at all (a mirrored ``F``) it spends capacity on shapes that never occur.

:class:`MirrorCheck` averages a polarity-free *shape map* of every object of each class:
the object's crop in gray levels, its distance from the crop's border median (so a dark
glyph on light ground and a light one on dark ground give the same map), resized to
``size x size`` and scaled to unit peak. From the class means ``M_c`` it reports, with
``corr`` the Pearson correlation of two maps:

- ``mirror_pairs``: classes ``a != b`` with ``corr(flip(M_a), M_b)`` above
  :data:`PAIR_MIN_CORR` and at least :data:`PAIR_MARGIN` above ``corr(M_a, M_b)``: the
  mirror image of ``a`` looks like ``b`` more than ``a`` itself does. Flipping confuses
  them: train with ``--no-flip``.
- ``asymmetric``: classes with ``corr(flip(M_a), M_a)`` below :data:`SYMMETRY_MIN_CORR`
  (a mirrored ``a`` looks unlike an ``a``). A note, not a verdict: cars facing left and
  right are both cars, while a mirrored ``F`` is no letter.

Class means need objects and shape: classes with fewer than :data:`MIN_OBJECTS` objects of
at least :data:`MIN_SIDE_PX` pixels, or whose mean map is flat (:data:`MIN_MAP_STD`: a
filled rectangle fills its box), are left out (``skipped_classes``).

On the benchmarks' stand-ins (``benchmarks/standins.py``, 300 training images) it finds
``b``/``d`` (0.88 flipped against 0.30 unflipped) and nothing else among ten glyphs, no
pair among ten outline symbols, and none in ``shapes``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

#: Side of the shape maps.
MAP_SIZE = 24
#: Objects smaller than this (pixels, either side) carry too little shape to average.
MIN_SIDE_PX = 8
#: Classes with fewer usable objects are not compared.
MIN_OBJECTS = 5
#: ``corr(flip(M_a), M_b)`` must reach this for a mirror pair...
PAIR_MIN_CORR = 0.7
#: ... and exceed ``corr(M_a, M_b)`` by this much.
PAIR_MARGIN = 0.2
#: Class means flatter than this (standard deviation of a unit-peak map) have no shape to
#: compare: a filled box (a rectangle stretched to a square) is uniform.
MIN_MAP_STD = 0.05
#: ``corr(flip(M_a), M_a)`` below this: class ``a`` is mirror-asymmetric.
SYMMETRY_MIN_CORR = 0.8


def shape_map(image, box_px, size=MAP_SIZE):
    """The polarity-free shape map ``[size, size]`` float32 of the object at ``box_px``
    (``[y1, x1, y2, x2]`` pixels) in ``image`` (uint8 ``[H, W, 3]``), or None when the box
    is smaller than :data:`MIN_SIDE_PX`."""
    height, width = image.shape[:2]
    y1, x1 = max(0, int(np.floor(box_px[0]))), max(0, int(np.floor(box_px[1])))
    y2, x2 = min(height, int(np.ceil(box_px[2]))), min(width, int(np.ceil(box_px[3])))
    if y2 - y1 < MIN_SIDE_PX or x2 - x1 < MIN_SIDE_PX:
        return None
    gray = image[y1:y2, x1:x2].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    distance = np.abs(gray - np.median(border))
    resized = np.asarray(Image.fromarray(distance).resize((size, size), Image.BILINEAR), np.float32)
    peak = resized.max()
    return resized / peak if peak > 0 else None


def _corr(a, b):
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


class MirrorCheck:
    """Accumulates shape maps per class (:meth:`add`), then compares them (:meth:`result`)."""

    def __init__(self, class_names, size=MAP_SIZE):
        self.class_names = list(class_names)
        self.size = size
        self.sums = np.zeros([len(self.class_names), size, size], np.float64)
        self.counts = np.zeros(len(self.class_names), np.int64)

    def add(self, image, boxes, classes):
        """Adds one example: uint8 ``image [H, W, 3]``, normalized ``boxes [G, 4]``, ``classes [G]``."""
        height, width = image.shape[:2]
        scale = np.array([height, width, height, width], np.float32)
        for box, cls in zip(np.asarray(boxes, np.float32), np.asarray(classes)):
            if not 0 <= cls < len(self.class_names):
                continue
            m = shape_map(image, box * scale, self.size)
            if m is not None:
                self.sums[cls] += m
                self.counts[cls] += 1

    def result(self):
        """``{"mirror_pairs": [{"classes": [a, b], "flipped_corr", "plain_corr"}], "asymmetric":
        [{"class", "mirror_corr"}], "skipped_classes": [...], "objects": {name: n}}``."""
        means = {k: self.sums[k] / self.counts[k] for k in range(len(self.class_names))
                 if self.counts[k] >= MIN_OBJECTS}
        means = {k: m for k, m in means.items() if m.std() >= MIN_MAP_STD}
        usable = sorted(means)
        pairs, asymmetric = [], []
        for a in usable:
            flipped = means[a][:, ::-1]
            mirror = _corr(flipped, means[a])
            if mirror < SYMMETRY_MIN_CORR:
                asymmetric.append({"class": self.class_names[a], "mirror_corr": round(mirror, 3)})
            for b in usable:
                if b <= a:  # corr(flip(M_a), M_b) == corr(M_a, flip(M_b)): each pair once
                    continue
                flipped_corr, plain_corr = _corr(flipped, means[b]), _corr(means[a], means[b])
                if flipped_corr >= PAIR_MIN_CORR and flipped_corr - plain_corr >= PAIR_MARGIN:
                    pairs.append({"classes": [self.class_names[a], self.class_names[b]],
                                  "flipped_corr": round(flipped_corr, 3), "plain_corr": round(plain_corr, 3)})
        return {
            "mirror_pairs": pairs,
            "asymmetric": asymmetric,
            "skipped_classes": [self.class_names[k] for k in range(len(self.class_names)) if k not in means],
            "objects": {self.class_names[k]: int(self.counts[k]) for k in range(len(self.class_names))},
        }


def check(dataset, class_names, limit=None):
    """:meth:`MirrorCheck.result` over the canonical examples of ``dataset`` (the first
    ``limit`` if given)."""
    checker = MirrorCheck(class_names)
    if limit is not None:
        dataset = dataset.take(limit)
    for example in dataset.as_numpy_iterator():
        checker.add(example["image"], example["boxes"], example["classes"])
    return checker.result()


def summary_lines(result):
    """Human-readable lines of :meth:`MirrorCheck.result` (empty when nothing is found)."""
    lines = []
    if result["mirror_pairs"]:
        shown = ", ".join(f"{p['classes'][0]}/{p['classes'][1]} ({p['flipped_corr']:.2f} vs "
                          f"{p['plain_corr']:.2f})" for p in result["mirror_pairs"])
        lines.append(f"warning: mirrored, these classes look like each other: {shown} (correlation of one "
                     "class's mirrored mean shape with the other's, vs unmirrored); horizontal flips would teach "
                     "the model they are alike: train with --no-flip")
    if result["asymmetric"]:
        shown = ", ".join(f"{a['class']} ({a['mirror_corr']:.2f})" for a in result["asymmetric"])
        lines.append(f"note: flipped, these classes look unlike themselves: {shown}; if a mirrored one is no "
                     "object of its class (a mirrored letter), --no-flip")
    return lines
