"""Session fixtures: the tiny detector and its exports (see :mod:`tests.export.helpers`)."""
import pytest

from tests.export import helpers


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export_artifacts")


@pytest.fixture(scope="session")
def detector():
    return helpers.detector()


@pytest.fixture(scope="session")
def saved_model_path(artifacts_dir):
    return helpers.artifact("saved_model", artifacts_dir)


@pytest.fixture(scope="session")
def tflite_path(artifacts_dir):
    return helpers.artifact("tflite", artifacts_dir)


@pytest.fixture(scope="session")
def tflite_int8_path(artifacts_dir):
    return helpers.artifact("tflite_int8", artifacts_dir)


@pytest.fixture(scope="session")
def keras_path(artifacts_dir):
    return helpers.artifact("keras", artifacts_dir)
