"""tfzoo.data.pipeline with the trivial PaddedBoxesEncoder."""
import numpy as np
import pytest
import tensorflow as tf

import tfzoo.data as data
from tfzoo.data import augment as aug
from tfzoo.data import schema, shapes
from tfzoo.data.pipeline import (
    Encoder, PaddedBoxesEncoder, pad_ground_truth, pad_ground_truth_to_bucket, pipeline, validate,
)

SIZE = 96
MAX_BOXES = 8


@pytest.fixture(scope="module")
def dataset():
    return data.load("shapes:12", "train").cache()


def _batches(ds, n=None):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in (ds if n is None else ds.take(n))]


def _assert_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)


def test_training_outputs_are_static_and_typed(dataset):
    ds = pipeline(dataset, PaddedBoxesEncoder(SIZE, MAX_BOXES), 4, True, seed=1, augment="ssd")
    inputs, targets = ds.element_spec
    assert inputs == tf.TensorSpec([4, SIZE, SIZE, 3], tf.float32)
    assert targets == {
        "boxes": tf.TensorSpec([4, MAX_BOXES, 4], tf.float32),
        "classes": tf.TensorSpec([4, MAX_BOXES], tf.int32),
        "is_crowd": tf.TensorSpec([4, MAX_BOXES], tf.bool),
        "difficult": tf.TensorSpec([4, MAX_BOXES], tf.bool),
    }
    batches = _batches(ds)
    assert len(batches) == 3
    for images, t in batches:
        assert images.min() >= 0 and images.max() <= 255
        real = t["classes"] >= 0
        assert np.all(t["classes"][~real] == schema.PAD_CLASS)
        assert np.all(t["boxes"][~real] == 0) and not t["is_crowd"][~real].any()
        b = t["boxes"][real]
        assert np.all((b >= 0) & (b <= 1)) and np.all(b[:, 2:] > b[:, :2])
        assert np.all(t["classes"][real] < len(shapes.CLASS_NAMES))
        # padding rows only after the real ones
        assert np.all(np.diff(real.astype(int), axis=1) <= 0)


@pytest.mark.parametrize("preset", aug.PRESETS)
def test_seeded_pipeline_is_deterministic(dataset, preset):
    make = lambda: pipeline(dataset, PaddedBoxesEncoder(SIZE, MAX_BOXES), 4, True, seed=3, augment=preset)
    a, b = make(), make()
    epoch1, epoch2 = _batches(a), _batches(a)
    _assert_equal(epoch1, _batches(b))
    _assert_equal(epoch2, _batches(b))
    # a new epoch reshuffles and re-augments
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])


def test_different_seeds_differ(dataset):
    a = _batches(pipeline(dataset, PaddedBoxesEncoder(SIZE, MAX_BOXES), 4, True, seed=1), 1)
    b = _batches(pipeline(dataset, PaddedBoxesEncoder(SIZE, MAX_BOXES), 4, True, seed=2), 1)
    assert not np.array_equal(a[0][0], b[0][0])


def test_cache_gives_the_same_batches(dataset):
    enc = PaddedBoxesEncoder(SIZE, MAX_BOXES)
    _assert_equal(_batches(pipeline(dataset, enc, 4, True, seed=5, cache=True)),
                  _batches(pipeline(dataset, enc, 4, True, seed=5)))


def test_evaluation_outputs_map_back_to_original_pixels():
    ds = pipeline(data.load("shapes:5", "val"), PaddedBoxesEncoder(SIZE, MAX_BOXES), 2, False)
    images_spec, truth_spec = ds.element_spec
    assert images_spec == tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    assert truth_spec["image_info"] == tf.TensorSpec([None, 4, 2], tf.float32)
    assert truth_spec["image_id"] == tf.TensorSpec([None], tf.string)
    seen = 0
    for images, truth in _batches(ds):
        back = aug.boxes_to_original(truth["boxes"], truth["image_info"]).numpy()
        for j, image_id in enumerate(truth["image_id"]):
            ref = shapes.generate("val", int(image_id.decode().split("_")[1]))
            h, w = ref[schema.IMAGE].shape[:2]
            n = len(ref[schema.CLASSES])
            np.testing.assert_array_equal(truth["classes"][j][:n], ref[schema.CLASSES])
            assert np.all(truth["classes"][j][n:] == schema.PAD_CLASS)
            np.testing.assert_allclose(back[j][:n], ref[schema.BOXES] * [h, w, h, w], atol=1e-3)
            np.testing.assert_allclose(truth["image_info"][j][0], [h, w])
            seen += 1
    assert seen == 5


def test_warp_resize_when_the_encoder_does_not_keep_aspect_ratio():
    enc = PaddedBoxesEncoder((64, 80), MAX_BOXES, keep_aspect_ratio=False)
    images, truth = _batches(pipeline(data.load("shapes:2", "val"), enc, 2, False))[0]
    assert images.shape == (2, 64, 80, 3)
    h, w = truth["image_info"][0][0]
    np.testing.assert_allclose(truth["image_info"][0][2], [64 / h, 80 / w], rtol=1e-6)


class _Detector:
    """Stands for a Keras detector exposing its encoder."""

    def __init__(self, encoder):
        self.encoder = encoder


def test_detector_with_encoder_and_argument_checks(dataset):
    enc = PaddedBoxesEncoder(SIZE, MAX_BOXES, augment="none")
    assert pipeline(dataset, _Detector(enc), 4, True, seed=0).element_spec[0].shape == (4, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="disagrees"):
        pipeline(dataset, enc, 4, True, image_size=128)
    with pytest.raises(ValueError, match="training"):
        pipeline(dataset, enc, 4, False, augment="ssd")
    with pytest.raises(TypeError, match="Encoder"):
        pipeline(dataset, object(), 4, True)
    with pytest.raises(TypeError, match="Dataset"):
        pipeline("shapes", enc, 4, True)


def test_encoder_targets_must_have_static_shapes(dataset):
    class Ragged(Encoder):
        image_size = (SIZE, SIZE)

        def targets(self, example):
            return example[schema.BOXES]

    with pytest.raises(ValueError, match="static shapes"):
        pipeline(dataset, Ragged(), 4, True)


class _CountingEncoder(Encoder):
    """Targets: the ground-truth row count it was given and its valid boxes' summed area."""

    image_size = (SIZE, SIZE)

    def box_targets(self, ground_truth):
        valid = tf.cast(ground_truth[schema.CLASSES] >= 0, tf.float32)
        boxes = ground_truth[schema.BOXES]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return {"rows": tf.shape(boxes)[0], "area": tf.reduce_sum(area * valid)}


@pytest.mark.parametrize("rows,bucket", [(0, 1), (1, 1), (3, 4), (5, 8)])
def test_encoder_box_targets_plain_or_xla_on_bucketed_ground_truth(rows, bucket):
    rng = np.random.default_rng(rows)
    corners = np.sort(rng.uniform(size=(rows, 2, 2)), axis=1).reshape(rows, 4)[:, [0, 2, 1, 3]]
    example = {
        schema.IMAGE: tf.zeros([SIZE, SIZE, 3]),
        schema.BOXES: tf.constant(corners, tf.float32),
        schema.CLASSES: tf.constant(rng.integers(0, 3, size=rows), tf.int32),
        schema.IS_CROWD: tf.zeros([rows], tf.bool),
        schema.DIFFICULT: tf.zeros([rows], tf.bool),
        schema.IMAGE_ID: tf.constant("x"),  # a string: must not reach XLA
    }
    plain = _CountingEncoder().targets(example)
    xla_encoder = _CountingEncoder()
    xla_encoder.xla_targets = True
    compiled = xla_encoder.targets(example)
    assert int(plain["rows"]) == rows and int(compiled["rows"]) == bucket  # padded, once compiled per bucket
    expected = np.sum((corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1]))
    np.testing.assert_allclose([float(plain["area"]), float(compiled["area"])], [expected] * 2, rtol=1e-5, atol=1e-7)


def test_encoder_without_targets_names_both_hooks():
    class Bare(Encoder):
        image_size = (SIZE, SIZE)

    with pytest.raises(NotImplementedError, match=r"targets\(example\) or box_targets\(ground_truth\)"):
        Bare().targets({k: tf.zeros([0]) for k in schema.BOX_KEYS})


def test_validate_drops_bad_boxes_with_their_fields():
    bad = schema.make_example(
        np.zeros([10, 10, 3], np.uint8),
        [[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.2, 0.9], [np.nan, 0, 1, 1], [-0.5, -0.5, 1.5, 0.5]],
        [0, 1, 2, 3], is_crowd=[True, False, False, True],
    )
    out = validate(bad)
    np.testing.assert_allclose(out[schema.BOXES], [[0.1, 0.1, 0.5, 0.5], [0, 0, 1, 0.5]])
    np.testing.assert_array_equal(out[schema.CLASSES], [0, 3])
    np.testing.assert_array_equal(out[schema.IS_CROWD], [True, True])


def test_pad_ground_truth_cuts_and_pads():
    ex = schema.make_example(np.zeros([4, 4, 3], np.uint8), np.tile([[0.1, 0.2, 0.3, 0.4]], [5, 1]), [1, 2, 3, 4, 0])
    out = pad_ground_truth(ex, 3)
    assert out[schema.BOXES].shape == (3, 4) and out[schema.CLASSES].numpy().tolist() == [1, 2, 3]
    out = pad_ground_truth(ex, 7)
    assert out[schema.CLASSES].numpy().tolist() == [1, 2, 3, 4, 0, -1, -1]
    assert np.all(out[schema.BOXES].numpy()[5:] == 0)


def test_evaluation_batches_of_images_without_objects():
    examples = [schema.make_example(np.full([20 + i, 30, 3], 9, np.uint8), np.zeros([0, 4]), []) for i in range(3)]
    ds = tf.data.Dataset.from_generator(lambda: ({k: v.numpy() for k, v in e.items()} for e in examples),
                                        output_signature=schema.output_signature())
    batches = _batches(pipeline(ds, PaddedBoxesEncoder(32, 4), 2, False))
    assert [b[0].shape[0] for b in batches] == [2, 1]  # the last, partial batch is kept
    assert batches[0][1]["boxes"].shape == (2, 0, 4) and batches[1][1]["classes"].shape == (1, 0)
    (images, targets), = _batches(pipeline(ds, PaddedBoxesEncoder(32, 4), 2, True, seed=0, augment="ssd"))
    assert images.shape == (2, 32, 32, 3) and np.all(targets["classes"] == schema.PAD_CLASS)


def test_training_with_fewer_examples_than_a_batch_is_an_error():
    dataset = data.load("shapes:3", "val")
    with pytest.raises(ValueError, match="3 examples, fewer than batch_size 4"):
        pipeline(dataset, PaddedBoxesEncoder(64, max_boxes=8), batch_size=4, training=True)
    # Evaluation keeps the partial batch, so it is fine.
    batches = list(pipeline(dataset, PaddedBoxesEncoder(64, max_boxes=8), batch_size=4, training=False))
    assert len(batches) == 1 and batches[0][0].shape[0] == 3


@pytest.mark.parametrize("rows, bucket", [(0, 1), (1, 1), (2, 2), (3, 4), (8, 8), (9, 16), (100, 128)])
def test_ground_truth_is_padded_to_a_power_of_two(rows, bucket):
    rng = np.random.default_rng(rows)
    truth = {
        schema.BOXES: tf.constant(rng.uniform(0.0, 1.0, [rows, 4]), tf.float32),
        schema.CLASSES: tf.constant(rng.integers(0, 3, rows), tf.int32),
        schema.IS_CROWD: tf.constant(rng.uniform(size=rows) < 0.5),
        schema.DIFFICULT: tf.constant(rng.uniform(size=rows) < 0.5),
    }
    padded = pad_ground_truth_to_bucket({**truth, schema.IMAGE_ID: tf.constant("x")})
    assert sorted(padded) == sorted(schema.BOX_KEYS)
    for key, value in truth.items():
        assert padded[key].shape[0] == bucket and padded[key].dtype == value.dtype
        np.testing.assert_array_equal(padded[key][:rows], value)
    np.testing.assert_array_equal(padded[schema.CLASSES][rows:], -1)
    np.testing.assert_array_equal(padded[schema.BOXES][rows:], 0.0)
    assert not np.any(padded[schema.IS_CROWD][rows:]) and not np.any(padded[schema.DIFFICULT][rows:])


def test_multi_scale_training_builds_each_batch_at_one_size():
    """train_sizes: a size drawn per size_period batches (YOLOv2's every 10), every batch
    of one size, the encoder called at that size; reproducible with a seed, redrawn per epoch."""
    from tfzoo.data.pipeline import PaddedBoxesEncoder

    class MultiScale(PaddedBoxesEncoder):
        train_sizes = (64, 96, 128)
        size_period = 2

        def targets(self, example):  # depends on the size it is called at, as a grid's would
            return {**super().targets(example), "size": tf.shape(example["image"])[0]}

    encoder = MultiScale(64, max_boxes=8, augment="none", keep_aspect_ratio=False)
    ds = pipeline(data.load("shapes:48", "train"), encoder, 2, training=True, seed=3)

    def sizes_of(dataset):
        out = []
        for images, targets in dataset:
            assert images.shape[1] == images.shape[2] and (targets["size"].numpy() == images.shape[1]).all()
            out.append(images.shape[1])
        return out

    first, second = sizes_of(ds), sizes_of(ds)
    assert len(first) == 24 and set(first) <= {64, 96, 128}
    assert all(first[i] == first[i + 1] for i in range(0, 24, 2))  # one size per 2 batches
    assert len(set(first)) > 1 and first != second  # sizes change, and again next epoch
    again = pipeline(data.load("shapes:48", "train"), encoder, 2, training=True, seed=3)
    assert sizes_of(again) == first  # reproducible


def test_a_proposal_based_model_gets_its_proposals_with_the_image():
    """input_names ("images", "proposals"): inputs are a dict, the proposals letterboxed
    with the image (equal to the ground truth boxes they were made from), cut or padded
    with zero boxes to max_proposals; in training and in evaluation."""
    from tfzoo.data.pipeline import PaddedBoxesEncoder

    def add_proposals(example):
        return {**example, schema.PROPOSALS: example[schema.BOXES]}

    source = data.load("shapes:4", "val").map(add_proposals)
    encoder = PaddedBoxesEncoder(64, max_boxes=6, augment="none", input_names=("images", "proposals"),
                                 max_proposals=6)
    for training in (False, True):
        for inputs, truth in pipeline(source, encoder, 2, training=training, shuffle_buffer=0):
            assert inputs["images"].shape[1:] == (64, 64, 3) and inputs["proposals"].shape[1:] == (6, 4)
            count = int(tf.reduce_sum(tf.cast(truth["classes"] >= 0, tf.int32)))
            got = inputs["proposals"].numpy()
            want = truth["boxes"].numpy()
            for b in range(got.shape[0]):
                n = int((truth["classes"][b] >= 0).numpy().sum())
                np.testing.assert_allclose(got[b, :n], want[b, :n], atol=1e-6)
                assert not got[b, n:].any()  # zero boxes pad
            assert count > 0
    plain = PaddedBoxesEncoder(64, input_names=("images", "proposals"))
    with pytest.raises(ValueError, match="the model takes proposals but the examples have none"):
        next(iter(pipeline(data.load("shapes:2", "val"), plain, 2, training=False)))
