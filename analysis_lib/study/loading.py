"""The run's DataLoaders: fed as fast as the machine allows, with batches that do not depend on it.

Loader worker processes stay alive across epochs, batches go to pinned memory when the model is on
a GPU (so that `non_blocking` copies overlap compute), and the worker count defaults to the
machine's CPUs. Training batches are the same for any worker count: each sample's random crop and
flip run under a seed drawn, with the shuffled order, from the run's generator in the main
process (torch's default instead seeds each worker, so batches would depend on how many there
are, and so would the learned parameters).
"""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .train_config import TrainConfig

MAX_AUTO_WORKERS = 8  # JPEG decoding scales to about this many processes per GPU


def worker_count(cfg: TrainConfig) -> int:
    """The configured loader processes, or (None) one per CPU this process may use, at most 8."""
    if cfg.num_workers is not None:
        return cfg.num_workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_AUTO_WORKERS, cpus)


class SeededSampler(Sampler):
    """Each epoch: a random order of the samples, each with its own augmentation seed."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator).tolist()
        return iter(zip(order, seeds))


class SeededSamples(Dataset):
    """``dataset[index]`` computed under torch's global RNG seeded with the sampler's seed (and
    restored afterwards), for keys ``(index, seed)`` from ``SeededSampler``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def _options(cfg: TrainConfig, device: torch.device) -> dict:
    workers = worker_count(cfg)
    return {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": device.type == "cuda"}


def train_loader(dataset: Dataset, cfg: TrainConfig, seed: int, device: torch.device) -> DataLoader:
    """Shuffled, augmented batches of ``cfg.batch_size``, the same for any worker count."""
    sampler = SeededSampler(len(dataset), torch.Generator().manual_seed(seed))
    # The loader's own generator only seeds its workers (unused: each sample is seeded); given
    # one, the loader leaves torch's global RNG alone.
    return DataLoader(SeededSamples(dataset), batch_size=cfg.batch_size, sampler=sampler, drop_last=False,
                      generator=torch.Generator().manual_seed(seed), **_options(cfg, device))


def eval_loader(dataset: Dataset, cfg: TrainConfig, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.eval_batch_size, **_options(cfg, device))
