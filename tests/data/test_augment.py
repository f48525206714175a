"""tfzoo.data.augment: box-aware, aligned, graph-safe, deterministic augmentation."""
import functools

import numpy as np
import pytest
import tensorflow as tf

import tfzoo.data
from tfzoo.data import augment as aug
from tfzoo.data import schema
from tfzoo.data.pipeline import validate
from tfzoo.ops import boxes as box_ops

OBJECT = (255, 0, 0)
BACKGROUND = (0, 255, 0)


def _example(h=60, w=80, rects=((10, 20, 30, 50),), image_id="x"):
    """Green image with red filled rectangles ``(y1, x1, y2, x2)`` in pixels."""
    image = np.zeros([h, w, 3], np.uint8) + np.array(BACKGROUND, np.uint8)
    boxes = []
    for y1, x1, y2, x2 in rects:
        image[y1:y2, x1:x2] = OBJECT
        boxes.append([y1 / h, x1 / w, y2 / h, x2 / w])
    n = len(boxes)
    classes = np.arange(n, dtype=np.int32)
    return schema.make_example(
        image, np.reshape(np.asarray(boxes, np.float32), [n, 4]), classes,
        is_crowd=classes % 2 == 0, difficult=classes % 3 == 0, image_id=image_id,
    )


def _object_box(image):
    """Pixel box ``[y1, x1, y2, x2]`` of the clearly-red pixels, or None."""
    image = np.asarray(image)
    red = (image[..., 0] > 190) & (image[..., 1] < 64)
    if not red.any():
        return None
    rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32)


def _seed(i):
    return tf.constant([i, 17], tf.int64)


RANDOM_OPS = {
    "flip": aug.random_flip_left_right,
    "scale_crop": functools.partial(aug.random_scale_crop, output_size=(64, 96)),
    "zoom_out": functools.partial(aug.ssd_zoom_out, prob=1.0),
    "ssd_crop": aug.ssd_random_crop,
    "jitter_crop": aug.random_jitter_crop,
    "hsv": aug.random_hsv,
    "ssd_photometric": aug.ssd_photometric,
    **{f"preset_{name}": aug.preset(name, (64, 64)) for name in aug.PRESETS},
}
RANDOM_OPS["zoom_out_crop"] = lambda example, seed: aug.ssd_zoom_out_crop(
    example, seed, tf.random.experimental.stateless_fold_in(seed, 1), (64, 96), prob=1.0)
GEOMETRIC = ("flip", "scale_crop", "zoom_out", "ssd_crop", "jitter_crop", "zoom_out_crop")


def _ssd_geometry(example, seed):
    """The SSD preset without its photometric step (colours must stay put to find pixels)."""
    s_zoom, s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    example = aug.ssd_zoom_out(example, s_zoom)
    return aug.random_flip_left_right(aug.ssd_random_crop(example, s_crop), s_flip)


RANDOM_OPS["ssd_geometry"] = _ssd_geometry


def _check_valid(out):
    boxes = out[schema.BOXES].numpy()
    assert boxes.dtype == np.float32 and boxes.shape[1:] == (4,)
    assert np.all((boxes >= 0) & (boxes <= 1))
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    classes = out[schema.CLASSES].numpy()
    n = len(boxes)
    assert classes.shape == out[schema.IS_CROWD].shape == out[schema.DIFFICULT].shape == (n,)
    # rows stayed aligned: the flags were functions of the class id
    np.testing.assert_array_equal(out[schema.IS_CROWD].numpy(), classes % 2 == 0)
    np.testing.assert_array_equal(out[schema.DIFFICULT].numpy(), classes % 3 == 0)
    image = out[schema.IMAGE].numpy()
    assert image.min() >= 0 and image.max() <= 255
    assert out[schema.IMAGE_ID].numpy() == b"x"


def test_flip_twice_is_identity():
    ex = _example()
    twice = aug.flip_left_right(aug.flip_left_right(ex))
    np.testing.assert_array_equal(twice[schema.IMAGE], ex[schema.IMAGE])
    np.testing.assert_allclose(twice[schema.BOXES], ex[schema.BOXES], atol=1e-6)
    once = aug.flip_left_right(ex)
    np.testing.assert_allclose(_object_box(once[schema.IMAGE]) / [60, 80, 60, 80], once[schema.BOXES][0], atol=1e-6)


def test_random_flip_probability_extremes():
    ex = _example()
    never = aug.random_flip_left_right(ex, _seed(0), prob=0.0)
    always = aug.random_flip_left_right(ex, _seed(0), prob=1.0)
    np.testing.assert_array_equal(never[schema.IMAGE], ex[schema.IMAGE])
    np.testing.assert_array_equal(always[schema.IMAGE], aug.flip_left_right(ex)[schema.IMAGE])


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_boxes_stay_valid_and_aligned(name):
    rects = ((0, 0, 20, 30), (10, 20, 30, 50), (35, 60, 60, 80), (5, 70, 15, 78), (40, 5, 55, 25))
    for i in range(8):
        _check_valid(RANDOM_OPS[name](_example(rects=rects), _seed(i)))


@pytest.mark.parametrize("name", GEOMETRIC + ("ssd_geometry", "preset_scale_jitter"))
def test_boxes_match_the_pixels_after_geometric_ops(name):
    """The box of the single red rectangle tightly bounds the red pixels (1.5 px tolerance)."""
    checked = 0
    for i in range(12):
        out = RANDOM_OPS[name](_example(), _seed(i))
        image = out[schema.IMAGE].numpy()
        h, w = image.shape[:2]
        found = _object_box(image)
        if len(out[schema.BOXES]) == 0:
            continue
        assert found is not None
        np.testing.assert_allclose(out[schema.BOXES][0].numpy() * [h, w, h, w], found, atol=1.5)
        checked += 1
    assert checked >= 6


def test_zoom_out_crop_in_one_resampling_equals_the_two_steps():
    """The preset's fused zoom-out + crop (one bilinear sampling at the input size) gives
    the boxes and, to resampling, the pixels of zoom-out, crop, then resize, draw for draw."""
    rects = ((0, 0, 20, 30), (10, 20, 30, 50), (35, 60, 60, 80), (5, 70, 15, 78))
    zoomed = 0
    for i in range(12):
        ex = _example(rects=rects)
        s_zoom, s_crop = _seed(i), _seed(100 + i)
        fused = aug.ssd_zoom_out_crop(ex, s_zoom, s_crop, (48, 64))
        steps = aug.resize(aug.ssd_random_crop(aug.ssd_zoom_out(ex, s_zoom), s_crop), (48, 64))
        np.testing.assert_array_equal(fused[schema.CLASSES], steps[schema.CLASSES])
        # the two-step path snaps the canvas and the crop to whole pixels: within a pixel
        np.testing.assert_allclose(fused[schema.BOXES].numpy() * [48, 64, 48, 64],
                                   steps[schema.BOXES].numpy() * [48, 64, 48, 64], atol=1.5)
        assert fused[schema.IMAGE].shape == (48, 64, 3)
        difference = np.abs(fused[schema.IMAGE].numpy() - steps[schema.IMAGE].numpy())
        assert np.median(difference) < 2.0, (i, np.median(difference))
        zoomed += int(np.any(np.all(np.isclose(fused[schema.IMAGE].numpy(), aug.MEAN_RGB, atol=0.5), axis=-1)))
    assert zoomed >= 3  # the canvas fill showed up in several draws


def test_ssd_preset_at_a_size_gives_that_size():
    out = aug.preset("ssd", (40, 56))(_example(), _seed(1))
    assert out[schema.IMAGE].shape == (40, 56, 3)
    assert aug.preset("ssd")(_example(), _seed(1))[schema.IMAGE].shape[-1] == 3


def test_resize_and_pad_and_back_to_original():
    ex = _example(h=60, w=80)
    out = aug.resize_and_pad(ex, 100)
    image = out[schema.IMAGE].numpy()
    assert image.shape == (100, 100, 3) and image.dtype == np.float32
    assert np.all(image[76:] == 0)  # 60 * 100/80 = 75 rows of content, then padding
    np.testing.assert_allclose(out[schema.BOXES][0] * 100, _object_box(image), atol=1.0)
    info = out[aug.IMAGE_INFO].numpy()
    np.testing.assert_allclose(info, [[60, 80], [100, 100], [1.25, 1.25], [0, 0]])
    back = aug.boxes_to_original(out[schema.BOXES], info)
    np.testing.assert_allclose(back, ex[schema.BOXES] * [60, 80, 60, 80], atol=1e-3)


def test_scale_crop_image_info_maps_boxes_back():
    ex = _example(h=60, w=80, rects=((20, 30, 40, 50),))  # central: never cut by the crop
    checked = 0
    for i in range(6):
        out = aug.random_scale_crop(ex, _seed(i), 64, scale_range=(1.0, 1.6))
        assert out[schema.IMAGE].shape == (64, 64, 3)
        if len(out[schema.BOXES]) and np.all(out[schema.BOXES].numpy() % 1 != 0):
            back = aug.boxes_to_original(out[schema.BOXES], out[aug.IMAGE_INFO])
            np.testing.assert_allclose(back, ex[schema.BOXES] * [60, 80, 60, 80], atol=1e-2)
            checked += 1
    assert checked >= 4


def test_resize_warps_and_keeps_boxes():
    ex = _example()
    out = aug.resize(ex, (30, 100))
    assert out[schema.IMAGE].shape == (30, 100, 3)
    np.testing.assert_array_equal(out[schema.BOXES], ex[schema.BOXES])
    np.testing.assert_allclose(out[aug.IMAGE_INFO][2], [0.5, 1.25])


def test_ssd_crop_uses_every_option():
    ex = _example(rects=((10, 20, 30, 50), (35, 60, 60, 80)))
    sizes = {tuple(aug.ssd_random_crop(ex, _seed(i))[schema.IMAGE].shape) for i in range(40)}
    assert (60, 80, 3) in sizes and len(sizes) > 10  # whole image sometimes, crops otherwise


def test_ssd_crop_respects_min_iou():
    """Pixels encode their coordinates, so the crop's window can be read off its corner."""
    h, w = 60, 80
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    box = np.array([[10 / h, 20 / w, 30 / h, 50 / w]], np.float32)
    ex = schema.make_example(image, box, [0])
    cropped = 0
    for i in range(30):
        out = aug.ssd_random_crop(ex, _seed(i), options=(0.5,))
        crop = out[schema.IMAGE].numpy()
        ch, cw = crop.shape[:2]
        if (ch, cw) == (h, w):
            continue  # no candidate satisfied the constraint: the whole image is kept
        y0, x0 = crop[0, 0, :2]
        window = np.array([[y0 / h, x0 / w, (y0 + ch) / h, (x0 + cw) / w]], np.float32)
        assert box_ops.iou(window, box).numpy()[0, 0] >= 0.5 - 0.03  # snapped to pixels
        cropped += 1
    assert cropped >= 10


def test_zoom_out_fills_with_mean():
    ex = _example()
    out = aug.ssd_zoom_out(ex, _seed(3), prob=1.0, max_ratio=3.0)
    image = out[schema.IMAGE].numpy()
    assert image.shape[0] >= 60 and image.shape[1] >= 80
    corners = image[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert any(np.allclose(c, aug.MEAN_RGB, atol=1e-3) for c in corners)


def test_zoom_out_canvas_is_capped_and_boxes_still_match_pixels():
    """A large source zoomed out 4x stays within max_side, and its box still bounds the object."""
    ex = _example(h=600, w=800, rects=((100, 200, 400, 500),))
    for i in range(4):
        out = aug.ssd_zoom_out(ex, _seed(i), prob=1.0, max_ratio=4.0, max_side=500)
        image = out[schema.IMAGE].numpy()
        h, w = image.shape[:2]
        assert max(h, w) <= 501
        np.testing.assert_allclose(out[schema.BOXES][0].numpy() * [h, w, h, w], _object_box(image), atol=2.0)
    # Below the cap nothing is shrunk: the canvas is the full zoomed-out size.
    out = aug.ssd_zoom_out(_example(), _seed(0), prob=1.0, max_ratio=4.0, max_side=10_000)
    assert out[schema.IMAGE].shape[0] >= 60 and out[schema.IMAGE].shape[1] >= 80


def test_photometric_ops_keep_geometry():
    ex = _example()
    for op in (aug.random_hsv, aug.ssd_photometric):
        out = op(ex, _seed(5))
        np.testing.assert_array_equal(out[schema.BOXES], ex[schema.BOXES])
        assert out[schema.IMAGE].shape == (60, 80, 3)
        assert not np.array_equal(out[schema.IMAGE].numpy(), ex[schema.IMAGE].numpy().astype(np.float32))


def test_hsv_jitter_ranges():
    """YOLO: exposure and saturation scaled by a factor in [1/1.5, 1.5], both ways; hue
    shifted by at most 0.1 of the wheel. The colour is mid-range so nothing clips."""
    ex = schema.make_example(np.tile(np.array([160, 120, 80], np.uint8), [2, 2, 1]), np.zeros([0, 4]), [])
    h0, s0, v0 = tf.image.rgb_to_hsv(ex[schema.IMAGE][0, 0] / 255).numpy()
    ratios_s, ratios_v, shifts = [], [], []
    for i in range(40):
        out = aug.random_hsv(ex, _seed(i))
        assert out[schema.IMAGE].dtype == tf.float32
        h, s, v = tf.image.rgb_to_hsv(out[schema.IMAGE][0, 0] / 255).numpy()
        ratios_s.append(s / s0)
        ratios_v.append(v / v0)
        shifts.append((h - h0 + 0.5) % 1.0 - 0.5)
    for ratios in (ratios_s, ratios_v):
        assert 1 / 1.5 - 1e-3 <= min(ratios) < 0.8 and 1.25 < max(ratios) <= 1.5 + 1e-3
    assert max(np.abs(shifts)) <= 0.1 + 1e-3 and max(np.abs(shifts)) > 0.05


@pytest.mark.parametrize("hw", [(1, 1), (1, 300), (300, 2)])
def test_tiny_and_extreme_images(hw):
    ex = schema.make_example(np.full(hw + (3,), 200, np.uint8), [[0.0, 0.0, 1.0, 1.0]], [0])
    for name in aug.PRESETS:
        out = aug.resize_and_pad(aug.preset(name, (32, 32))(ex, _seed(2)), 32)
        assert out[schema.IMAGE].shape == (32, 32, 3)
        boxes = out[schema.BOXES].numpy()
        assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] > boxes[:, :2])


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_empty_boxes(name):
    out = RANDOM_OPS[name](_example(rects=()), _seed(1))
    assert out[schema.BOXES].shape == (0, 4) and out[schema.CLASSES].shape == (0,)


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_deterministic_given_seed(name):
    ex = _example(rects=((10, 20, 30, 50), (35, 60, 60, 80)))
    a, b = RANDOM_OPS[name](ex, _seed(4)), RANDOM_OPS[name](ex, _seed(4))
    for key in (schema.IMAGE, schema.BOXES, schema.CLASSES):
        np.testing.assert_array_equal(a[key], b[key])


def test_runs_in_dataset_map_and_tf_function():
    examples = [_example(rects=()), _example(), _example(h=40, w=90, rects=((1, 1, 39, 89), (5, 5, 10, 10)))]
    ds = tf.data.Dataset.from_generator(lambda: ({k: v.numpy() for k, v in e.items()} for e in examples),
                                        output_signature=schema.output_signature())
    for name in ("preset_ssd", "preset_yolo", "preset_scale_jitter"):
        fn = RANDOM_OPS[name]
        mapped = ds.enumerate().map(lambda i, ex: aug.resize_and_pad(fn(ex, tf.stack([i, i])), 64))
        outs = list(mapped)
        assert len(outs) == 3 and all(o[schema.IMAGE].shape == (64, 64, 3) for o in outs)
        graph_fn = tf.function(fn, input_signature=[schema.output_signature(), tf.TensorSpec([2], tf.int64)])
        for i, ex in enumerate(examples):
            _check_valid(graph_fn(ex, _seed(i)))


def test_unknown_preset():
    with pytest.raises(ValueError, match="known presets"):
        aug.preset("mosaic")
    with pytest.raises(ValueError, match="image_size"):
        aug.preset("scale_jitter")


# --- flip=False: a dataset-level choice ----------------------------------------------


def _same(a, b):
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in (schema.IMAGE, schema.BOXES))


def test_flip_preset_without_flips_returns_the_example_unchanged():
    example = _example(rects=((10, 5, 30, 25),))
    on, off = aug.preset("flip"), aug.preset("flip", flip=False)
    flipped = sum(not _same(on(example, _seed(i)), example) for i in range(20))
    assert 0 < flipped < 20  # flips are random with flip=True ...
    assert all(_same(off(example, _seed(i)), example) for i in range(20))  # ... and never happen without


@pytest.mark.parametrize("name", ["scale_jitter", "ssd", "yolo"])
def test_presets_without_flips_keep_their_other_draws(name):
    """flip=False changes nothing but the flip: where the flip preset does not flip, both agree."""
    example = _example(rects=((10, 5, 30, 25), (35, 50, 55, 75)))
    on, off = aug.preset(name, (64, 64)), aug.preset(name, (64, 64), flip=False)
    agree = differ = 0
    for i in range(16):
        a, b = on(example, _seed(i)), off(example, _seed(i))
        if _same(a, b):
            agree += 1
        else:
            differ += 1
            # Where they differ, the flip preset flipped: the no-flip output mirrored is the flip output
            # for the flip-last presets (ssd, yolo).
            if name != "scale_jitter":
                np.testing.assert_array_equal(np.asarray(aug.flip_left_right(b)[schema.IMAGE]), np.asarray(a[schema.IMAGE]))
    assert agree > 0 and differ > 0


def test_pipeline_follows_the_encoders_flip_setting():
    from tfzoo.data.pipeline import PaddedBoxesEncoder, pipeline

    examples = [_example(h=64, w=64, rects=((10, 5, 30, 25),), image_id=str(i)) for i in range(16)]
    dataset = tf.data.Dataset.from_tensor_slices({k: [e[k] for e in examples] for k in (schema.IMAGE, schema.IMAGE_ID)})
    dataset = dataset.map(lambda e: dict(e, **{schema.BOXES: examples[0][schema.BOXES],
                                               schema.CLASSES: examples[0][schema.CLASSES],
                                               schema.IS_CROWD: examples[0][schema.IS_CROWD],
                                               schema.DIFFICULT: examples[0][schema.DIFFICULT]}))

    def left_edges(flip):
        encoder = PaddedBoxesEncoder(64, max_boxes=2, augment="flip", flip=flip)
        batches = pipeline(dataset, encoder, batch_size=16, training=True, seed=0)
        _, targets = next(iter(batches))
        return {round(float(v), 3) for v in targets[schema.BOXES].numpy()[:, 0, 1]}

    assert left_edges(False) == {round(5 / 64, 3)}  # never mirrored
    assert left_edges(True) == {round(5 / 64, 3), round(39 / 64, 3)}  # some mirrored


def _with_proposals(example):
    """The example with proposals equal to its boxes plus one box of its own."""
    extra = tf.constant([[0.05, 0.05, 0.3, 0.45]], tf.float32)
    return {**example, schema.PROPOSALS: tf.concat([example[schema.BOXES], extra], 0)}


@pytest.mark.parametrize("name", ["flip", "scale_jitter", "ssd", "yolo"])
def test_proposals_move_with_the_image_like_the_boxes(name):
    """Every geometric op moves proposals exactly as it moves boxes: proposals made equal
    to the boxes stay equal to the kept boxes (ground-truth filters such as SSD's centre
    rule may drop boxes, never the matching proposals), and are clipped like them."""
    fn = aug.preset(name, (96, 96))
    for i, example in enumerate(tfzoo.data.load("shapes:6", "val").take(6)):
        example = _with_proposals(dict(example))
        out = aug.resize_and_pad(fn(example, tf.constant([i, 7], tf.int64)), (96, 96))
        boxes, proposals = out[schema.BOXES].numpy(), out[schema.PROPOSALS].numpy()
        assert proposals.shape[1] == 4 and np.all((proposals >= 0) & (proposals <= 1))
        assert np.all(proposals[:, 2:] > proposals[:, :2])
        for box in boxes:  # each kept box is among the proposals, moved identically
            assert np.min(np.abs(proposals - box).max(axis=1)) < 1e-5, (name, box, proposals)


def test_proposals_are_validated_with_the_example():
    example = dict(tfzoo.data.load("shapes:1", "val").get_single_element())
    example[schema.PROPOSALS] = tf.constant([[0.1, 0.1, 0.5, 0.5], [np.nan, 0, 1, 1], [0.5, 0.5, 0.5, 0.9],
                                             [-0.2, 0.3, 0.4, 1.3]], tf.float32)
    out = validate(example)
    np.testing.assert_allclose(out[schema.PROPOSALS], [[0.1, 0.1, 0.5, 0.5], [0.0, 0.3, 0.4, 1.0]])
