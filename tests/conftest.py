"""Suite-wide fixtures."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _proposal_cache(tmp_path_factory):
    """Selective search proposals computed by the tests (proposal-based presets, the CLI)
    go to a temporary cache, never the user's ~/.cache/tfzoo."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TFZOO_CACHE", str(tmp_path_factory.mktemp("tfzoo_cache")))
    yield
    mp.undo()
