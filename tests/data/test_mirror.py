"""tfzoo.data.mirror: which classes a horizontal flip turns into others."""
import numpy as np
import pytest
import tensorflow as tf

from tfzoo.data import mirror


def _glyph(kind, size):
    """A ``size x size`` boolean mask: ``b`` (stem left, bowl right), ``d`` (its mirror),
    ``ring`` (symmetric) or ``hook`` (an asymmetric L)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    bowl = np.abs(np.hypot(yy - 0.68, xx - 0.55) - 0.25) < 0.08
    if kind == "b":
        return bowl | ((xx > 0.22) & (xx < 0.36))
    if kind == "d":
        return _glyph("b", size)[:, ::-1]
    if kind == "ring":
        return np.abs(np.hypot(yy - 0.5, xx - 0.5) - 0.35) < 0.08
    if kind == "hook":
        return ((xx > 0.2) & (xx < 0.35)) | ((yy > 0.7) & (yy < 0.85) & (xx > 0.2))
    raise ValueError(kind)


def _scene(rng, kinds):
    """A 200 x 200 noisy image with one object per entry of ``kinds``, random colours and
    contrast sign; returns ``(image, boxes, classes)``."""
    image = rng.uniform(60, 190, size=(200, 200, 3)) + rng.normal(0, 8, size=(200, 200, 3))
    boxes, classes = [], []
    for i, (cls, kind) in enumerate(kinds):
        size = int(rng.integers(24, 60))
        y, x = 10 + 95 * (i // 2), 10 + 95 * (i % 2)
        mask = _glyph(kind, size)
        colour = rng.uniform(0, 40, size=3) if rng.random() < 0.5 else rng.uniform(215, 255, size=3)
        image[y:y + size, x:x + size][mask] = colour
        boxes.append([y / 200, x / 200, (y + size) / 200, (x + size) / 200])
        classes.append(cls)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, np.float32), np.asarray(classes)


KINDS = ("b", "d", "ring", "hook")


def _check(kinds_by_class, images=40, seed=0):
    rng = np.random.default_rng(seed)
    checker = mirror.MirrorCheck([f"c{k}" for k in range(len(kinds_by_class))])
    for _ in range(images):
        picks = rng.integers(len(kinds_by_class), size=4)
        checker.add(*_scene(rng, [(int(c), kinds_by_class[c]) for c in picks]))
    return checker.result()


def test_mirror_pair_found_once_and_symmetric_classes_left_alone():
    result = _check(KINDS)
    assert [p["classes"] for p in result["mirror_pairs"]] == [["c0", "c1"]]  # b/d, once
    pair = result["mirror_pairs"][0]
    assert pair["flipped_corr"] >= mirror.PAIR_MIN_CORR
    assert pair["flipped_corr"] - pair["plain_corr"] >= mirror.PAIR_MARGIN
    assert {a["class"] for a in result["asymmetric"]} == {"c0", "c1", "c3"}  # b, d, hook; not the ring
    assert result["skipped_classes"] == [] and sum(result["objects"].values()) == 160
    lines = mirror.summary_lines(result)
    assert "c0/c1" in lines[0] and "--no-flip" in lines[0]


def test_no_pair_without_mirrored_classes():
    result = _check(("b", "ring", "hook"))
    assert result["mirror_pairs"] == []
    assert not any("look like each other" in line for line in mirror.summary_lines(result))


def test_shape_map_ignores_contrast_polarity_and_colour():
    rng = np.random.default_rng(1)
    image, boxes, _ = _scene(rng, [(0, "b")])
    box_px = boxes[0] * 200
    dark = mirror.shape_map(image, box_px)
    inverted = mirror.shape_map(255 - image, box_px)
    np.testing.assert_allclose(dark, inverted, atol=0.02)
    assert dark.shape == (mirror.MAP_SIZE, mirror.MAP_SIZE) and dark.max() == pytest.approx(1.0)


def test_small_boxes_and_rare_classes_are_skipped():
    image = np.zeros([50, 50, 3], np.uint8)
    assert mirror.shape_map(image, [0, 0, mirror.MIN_SIDE_PX - 1, 30]) is None
    checker = mirror.MirrorCheck(["a", "b"])
    rng = np.random.default_rng(2)
    for _ in range(mirror.MIN_OBJECTS - 1):
        checker.add(*_scene(rng, [(0, "b")]))
    checker.add(image, np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), np.array([5]))  # unknown class: ignored
    result = checker.result()
    assert result["skipped_classes"] == ["a", "b"] and result["mirror_pairs"] == []


def test_check_reads_a_dataset():
    rng = np.random.default_rng(3)
    scenes = [_scene(rng, [(0, "b"), (1, "d"), (0, "b"), (1, "d")]) for _ in range(12)]
    dataset = tf.data.Dataset.from_generator(
        lambda: ({"image": i, "boxes": b, "classes": c} for i, b, c in scenes),
        output_signature={"image": tf.TensorSpec([200, 200, 3], tf.uint8), "boxes": tf.TensorSpec([None, 4]),
                          "classes": tf.TensorSpec([None], tf.int64)})
    result = mirror.check(dataset, ["b", "d"], limit=10)
    assert result["objects"] == {"b": 20, "d": 20}
    assert [p["classes"] for p in result["mirror_pairs"]] == [["b", "d"]]
