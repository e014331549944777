import logging
import os
import shutil

import pytest
import torch

# Two threads in all: split between the test processes when `make test` runs several (pytest-xdist).
torch.set_num_threads(max(1, 2 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
logging.getLogger().setLevel(logging.ERROR)  # open_clip warns about random init on every build


@pytest.fixture(scope="session")
def tiny():
    from analysis_lib.model.backbone import load_backbone
    return load_backbone("tiny-clip")


@pytest.fixture(scope="session")
def vitb16():
    """ViT-B/16 at full size with random weights (OpenAI's architecture, QuickGELU)."""
    from analysis_lib.model.backbone import load_backbone
    torch.manual_seed(0)
    return load_backbone("ViT-B-16-quickgelu")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """Miniature trees of the 11 datasets in the CoOp layout (shared: do not modify, copy first)."""
    from fixture_data import write_fixtures
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


@pytest.fixture(scope="session")
def ivlp_run(data_root, tmp_path_factory):
    """A finished ivlp run of tiny-clip on the miniature OxfordPets (which has trimaps)."""
    from analysis_lib.study.one_run import RunSettings, run_training
    from analysis_lib.study.train_config import TrainConfig

    out = tmp_path_factory.mktemp("run")
    settings = RunSettings(dataset="OxfordPets", variant="ivlp", data_root=str(data_root), output_dir=str(out),
                           variant_params={"text_depth": 2, "vision_depth": 2}, model="tiny-clip",
                           pretrained=None, progress=False, train=TrainConfig(shots=2, epochs=2, num_workers=0))
    return settings, run_training(settings)


LONGEST_FILE = "test_pipeline.py"   # its fixture runs a whole study and builds its book (~4 min)


def pytest_collection_modifyitems(items):
    """The longest file first, then the other files with end-to-end tests (marked slow): `make test`
    hands whole files to its processes in this order, so no long file is left running alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path.name != LONGEST_FILE, item.path not in slow_files))   # stable
