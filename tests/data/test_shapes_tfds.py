"""tfzoo.data.shapes_tfds: the ``tfzoo_shapes`` TFDS builder, prepared offline with tiny splits."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

import tfzoo.data
from tfzoo.data import schema, shapes, tfds_reader
from tfzoo.data.shapes_tfds import TfzooShapes

#: Images per split the builder is run with (the real splits hold 2000 / 200 / 200).
SIZES = {"train": 4, "val": 3, "test": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data dir holding ``tfzoo_shapes`` prepared with :data:`SIZES` images per split."""
    root = tmp_path_factory.mktemp("tfds")
    with pytest.MonkeyPatch.context() as mp:
        for split, n in SIZES.items():
            mp.setitem(shapes.SPLITS, split, (shapes.SPLITS[split][0], n))
        tfds.builder("tfzoo_shapes", data_dir=str(root)).download_and_prepare()
    return str(root)


def test_builder_is_named_and_describes_shapes(data_dir):
    builder = tfds.builder("tfzoo_shapes", data_dir=data_dir)
    assert isinstance(builder, TfzooShapes) and str(builder.version) == "1.0.0"
    assert builder.info.features["objects"]["label"].names == list(shapes.CLASS_NAMES)
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == SIZES


@pytest.mark.parametrize("split", sorted(SIZES))
def test_records_are_the_generated_images_in_index_order(data_dir, split):
    records = list(tfds.load("tfzoo_shapes", split=split, data_dir=data_dir, download=False))
    assert len(records) == SIZES[split]
    for index, record in enumerate(records):
        expected = shapes.generate(split, index)
        assert record["image/filename"].numpy().decode() == f"{expected[schema.IMAGE_ID]}.png"
        np.testing.assert_array_equal(record["image"], expected[schema.IMAGE])  # PNG: lossless
        np.testing.assert_allclose(record["objects"]["bbox"], expected[schema.BOXES], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(record["objects"]["label"], expected[schema.CLASSES])


def _assert_canonical_equal(got, expected):
    assert len(got) == len(expected)
    for ex, want in zip(got, expected):
        assert ex[schema.IMAGE_ID].numpy().decode() == want[schema.IMAGE_ID]
        np.testing.assert_array_equal(ex[schema.IMAGE], want[schema.IMAGE])
        np.testing.assert_allclose(ex[schema.BOXES], want[schema.BOXES], rtol=0, atol=1e-6)
        for key in (schema.CLASSES, schema.IS_CROWD, schema.DIFFICULT):
            np.testing.assert_array_equal(ex[key], want[key])
            assert ex[key].dtype == want[key].dtype


def test_spec_reads_the_prepared_records_as_canonical_examples(data_dir, monkeypatch):
    """``tfds:tfzoo_shapes`` gives what the spec ``shapes`` gives, read from the prepared files."""

    def _no_regeneration(self, split):
        raise AssertionError("tfzoo_shapes was generated again instead of read")

    monkeypatch.setattr(TfzooShapes, "_generate_examples", _no_regeneration)
    monkeypatch.setattr(constants, "DATA_DIR", data_dir)  # TFDS' default data dir
    ds = tfzoo.data.load("tfds:tfzoo_shapes", "val")
    assert ds.element_spec == schema.output_signature()
    _assert_canonical_equal(list(ds), list(shapes.examples("val", SIZES["val"])))
    assert tfzoo.data.class_names("tfds:tfzoo_shapes") == list(shapes.CLASS_NAMES)

    prefix = tfds_reader.load("tfzoo_shapes", "test[:1]", data_dir=data_dir, download=False)
    _assert_canonical_equal(list(prefix), list(shapes.examples("test", 1)))


def test_import_stays_light_and_the_reader_registers_the_builder():
    """``import tfzoo.data`` imports neither TFDS nor the builder; the reader imports it on demand."""
    code = (
        "import sys, tfzoo.data\n"
        "assert 'tensorflow_datasets' not in sys.modules and 'tfzoo.data.shapes_tfds' not in sys.modules\n"
        "from tfzoo.data import shapes\n"
        "assert tfzoo.data.class_names('tfds:tfzoo_shapes:1.0.0') == list(shapes.CLASS_NAMES)\n"
        "assert 'tfzoo.data.shapes_tfds' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
