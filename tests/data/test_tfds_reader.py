"""tfzoo.data.tfds_reader against tfds.testing.mock_data (offline, MockPolicy.USE_CODE)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfzoo.data import schema, tfds_reader
from tfzoo.data.validate import Report

MOCK = dict(policy=tfds.testing.MockPolicy.USE_CODE)
pytestmark = pytest.mark.usefixtures("tfds_temp_dirs")


def _fixed(examples):
    """An ``as_dataset_fn`` yielding ``examples`` (dicts of NumPy values) in the builder's format."""

    def as_dataset(self, *args, **kwargs):
        del args, kwargs
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=self.info.features.get_tensor_spec())

    return as_dataset


def _image(h=20, w=30):
    return np.full([h, w, 3], 7, np.uint8)


def _check_canonical(ex, num_classes):
    assert ex[schema.IMAGE].dtype == tf.uint8 and ex[schema.IMAGE].shape[-1] == 3
    boxes, classes = ex[schema.BOXES].numpy(), ex[schema.CLASSES].numpy()
    n = len(boxes)
    assert boxes.dtype == np.float32 and classes.dtype == np.int32
    assert ex[schema.IS_CROWD].shape == ex[schema.DIFFICULT].shape == (n,) == classes.shape
    assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] > boxes[:, :2])
    assert np.all((classes >= 0) & (classes < num_classes))
    assert ex[schema.IMAGE_ID].dtype == tf.string


@pytest.mark.parametrize("name,num_classes", [("voc/2007", 20), ("coco/2017", 80)])
def test_random_mock_examples_become_canonical(name, num_classes):
    """Random mock records are inconsistent (object fields of different lengths, inverted
    boxes): the reader repairs them and reports what it did."""
    with tfds.testing.mock_data(num_examples=4, **MOCK):
        report = Report()
        ds = tfds_reader.load(name, "train", report=report)
        assert ds.element_spec == schema.output_signature(area=name.startswith("coco"))
        items = list(ds)
        assert len(tfds_reader.class_names(name)) == num_classes
    assert len(items) == 4
    for ex in items:
        _check_canonical(ex, num_classes)
    assert len(report) > 0 and all(p.file == f"tfds:{name}/train" for p in report)


def test_voc_fields_map_exactly():
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], np.float32)
    record = {
        "image": _image(),
        "image/filename": "JPEGImages/000005.jpg",
        "labels": np.array([3, 14], np.int64),
        "labels_no_difficult": np.array([3], np.int64),
        "objects": {
            "bbox": boxes,
            "label": np.array([3, 14], np.int64),
            "pose": np.array([0, 1], np.int64),
            "is_truncated": np.array([False, True]),
            "is_difficult": np.array([False, True]),
        },
    }
    with tfds.testing.mock_data(as_dataset_fn=_fixed([record]), **MOCK):
        report = Report()
        (ex,) = list(tfds_reader.load("voc/2007", "test", report=report))
    np.testing.assert_array_equal(ex[schema.BOXES], boxes)
    np.testing.assert_array_equal(ex[schema.CLASSES], [3, 14])
    np.testing.assert_array_equal(ex[schema.DIFFICULT], [False, True])
    np.testing.assert_array_equal(ex[schema.IS_CROWD], [False, False])
    assert ex[schema.IMAGE_ID].numpy() == b"000005"
    assert len(report) == 0


def _coco_record(boxes, labels, crowd, image_id=42):
    n = len(labels)
    return {
        "image": _image(),
        "image/filename": "000000000042.jpg",
        "image/id": np.int64(image_id),
        "objects": {
            "id": np.arange(n, dtype=np.int64),
            "area": np.arange(10, 10 + n, dtype=np.int64),
            "bbox": np.asarray(boxes, np.float32).reshape([n, 4]),
            "label": np.asarray(labels, np.int64),
            "is_crowd": np.asarray(crowd, bool),
        },
    }


def test_coco_fields_map_and_bad_boxes_are_dropped_and_reported():
    record = _coco_record(
        [[0.1, 0.1, 0.3, 0.4], [0.5, 0.5, 0.4, 0.9], [0.2, 0.2, 0.6, 0.6]], [0, 5, 79], [False, False, True]
    )
    empty = _coco_record(np.zeros([0, 4]), [], [], image_id=7)
    with tfds.testing.mock_data(as_dataset_fn=_fixed([record, empty]), **MOCK):
        report = Report()
        ex, ex_empty = list(tfds_reader.load("coco/2017", "validation", report=report))
    np.testing.assert_allclose(ex[schema.BOXES], [[0.1, 0.1, 0.3, 0.4], [0.2, 0.2, 0.6, 0.6]])
    np.testing.assert_array_equal(ex[schema.CLASSES], [0, 79])
    np.testing.assert_array_equal(ex[schema.IS_CROWD], [False, True])
    np.testing.assert_array_equal(ex[schema.AREA], [10.0, 12.0])  # the segment areas, for APs/APm/APl
    assert ex[schema.IMAGE_ID].numpy() == b"42"
    assert ex_empty[schema.BOXES].shape == (0, 4) and ex_empty[schema.IMAGE_ID].numpy() == b"7"
    (problem,) = list(report)
    assert problem.record == "42" and "invalid" in problem.problem and problem.action == "dropped boxes"


def test_strict_stops_at_the_first_problem():
    record = _coco_record([[0.5, 0.5, 0.4, 0.9]], [1], [False])
    with tfds.testing.mock_data(as_dataset_fn=_fixed([record]), **MOCK):
        ds = tfds_reader.load("coco/2017", "validation", strict=True)
        with pytest.raises(tf.errors.OpError, match="DataError"):
            list(ds)


def test_category_ids():
    with tfds.testing.mock_data(**MOCK):
        ids = tfds_reader.category_ids("coco/2017")
        assert len(ids) == 80 and ids[0] == 1 and ids[-1] == 90 and len(set(ids)) == 80
        assert tfds_reader.category_ids("voc/2007") == list(range(1, 21))
