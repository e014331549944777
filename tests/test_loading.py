"""The run's loaders: training batches independent of the number of loader processes."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from analysis_lib.data.transforms import train_transform
from analysis_lib.study.loading import MAX_AUTO_WORKERS, eval_loader, train_loader, worker_count
from analysis_lib.study.train_config import TrainConfig


class Pictures(Dataset):
    """Small random pictures, randomly cropped and flipped as in training (torch's global RNG)."""

    def __init__(self, n=10):
        rng = np.random.default_rng(0)
        self.images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]
        self.transform = train_transform(16)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index]), index


def epochs(workers, n_epochs=2):
    cfg = TrainConfig(batch_size=3, num_workers=workers)
    loader = train_loader(Pictures(), cfg, seed=1, device=torch.device("cpu"))
    assert loader.persistent_workers == (workers > 0) and not loader.pin_memory
    return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(n_epochs)]


def test_training_batches_do_not_depend_on_the_worker_count():
    reference = epochs(0)
    for workers in (1, 2):
        batches = epochs(workers)
        for epoch_a, epoch_b in zip(reference, batches):
            assert len(epoch_a) == len(epoch_b) == 4
            for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
                assert torch.equal(ya, yb) and torch.equal(xa, xb)
    first, second = reference
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in second]))  # reshuffled
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(10))


def test_augmentation_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    list(train_loader(Pictures(), TrainConfig(batch_size=3, num_workers=0), seed=1, device=torch.device("cpu")))
    assert torch.equal(torch.rand(3), expected)


def test_worker_count_from_the_machine_by_default(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)))
    assert TrainConfig().num_workers is None and worker_count(TrainConfig()) == MAX_AUTO_WORKERS
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert worker_count(TrainConfig()) == 2 and worker_count(TrainConfig(num_workers=0)) == 0
    loader = eval_loader(Pictures(), TrainConfig(num_workers=0), torch.device("cuda"))
    assert loader.pin_memory and loader.batch_size == 100


def test_config_hash_ignores_the_worker_count():
    from analysis_lib.study.experiment import config_hash
    params = {"dataset": "EuroSAT", "seed": 1, "num_workers": 2}
    assert config_hash(params) == config_hash({**params, "num_workers": None})
    assert config_hash(params) != config_hash({**params, "seed": 2})
