"""tfzoo.data.load / class_names / category_ids: spec parsing and dispatch."""
import types

import pytest
import tensorflow_datasets as tfds

import tfzoo.data as data
from tfzoo.data import schema, shapes
from tfzoo.data.validate import Report


def test_shapes_spec():
    ds = data.load("shapes:4", "val")
    assert ds.element_spec == schema.output_signature()
    assert len(list(ds)) == 4
    assert data.load("shapes", "val").cardinality().numpy() == 200
    assert data.class_names("shapes") == list(shapes.CLASS_NAMES)
    assert data.category_ids("shapes") == list(range(1, len(shapes.CLASS_NAMES) + 1))


@pytest.mark.parametrize("spec", ["nope", "voc", "voc:", "shapes:x", "tfds", "coco:", 3])
def test_unknown_spec_names_the_accepted_forms(spec):
    with pytest.raises(ValueError, match="voc:PATH"):
        data.load(spec, "train")


@pytest.mark.parametrize("kind", ["voc", "coco"])
def test_file_readers_get_root_split_and_validation_args(kind, monkeypatch):
    calls = []
    fake = types.SimpleNamespace(
        load=lambda root, split, *, strict=False, report=None: calls.append((root, split, strict, report)) or "ds",
        class_names=lambda root, split=None: ("a", "b"),
        category_ids=lambda root, split=None: [7, 9],
    )
    monkeypatch.setitem(__import__("sys").modules, f"tfzoo.data.{kind}", fake)
    monkeypatch.setattr(data, kind, fake, raising=False)
    report = Report()
    assert data.load(f"{kind}:/some/path", "val", strict=True, report=report) == "ds"
    assert calls == [("/some/path", "val", True, report)]
    assert data.class_names(f"{kind}:/some/path") == ["a", "b"]
    assert data.category_ids(f"{kind}:/some/path") == ([7, 9] if kind == "coco" else [1, 2])


def test_tfds_spec_offline(tfds_temp_dirs):
    with tfds.testing.mock_data(num_examples=2):
        ds = data.load("tfds:voc/2007", "train")
        assert len(list(ds)) == 2
        assert len(data.class_names("tfds:voc/2007")) == 20
        assert data.category_ids("tfds:coco/2017")[:12] == list(range(1, 12)) + [13]


def test_pipeline_is_exported():
    assert callable(data.pipeline)
