import shutil

import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """Miniature trees of the 11 datasets in the CoOp layout (shared: do not modify, copy first)."""
    from analysis_lib.data.fixtures import write_fixtures
    return write_fixtures(tmp_path_factory.mktemp("data"))


@pytest.fixture
def copy_dataset(data_root, tmp_path):
    """copy_dataset(name) -> a private data root holding a copy of that dataset only."""
    from analysis_lib.data import get_spec

    def copy(name):
        spec = get_spec(name)
        shutil.copytree(data_root / spec.folder, tmp_path / spec.folder)
        return tmp_path
    return copy
