"""The images every per-image statistic looks at: a stratified sample of a class group's test set.

Test lists on disk are grouped by class (CoOp's split files, ImageNet's val folders), so the first n
images would show two or three classes only. The sample takes ceil(n / C) images from each of the
C classes (all of a class that has fewer), drawn with a fixed seed that is no run's seed: every
seed and variant of a dataset sees the same images.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

from .readers import Item

SAMPLE_SEED = 20231218  # fixed once for the study; a run's seed never enters the sample


def stratified_sample(items: Sequence[Item], n: int | None, seed: int = SAMPLE_SEED) -> list[Item]:
    """ceil(n / C) items of each class of ``items``, in the list's order (every item for n=None)."""
    if n is None:
        return list(items)
    if n < 1:
        raise ValueError(f"the image sample needs n >= 1, got {n}")
    by_class: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_class.setdefault(item.label, []).append(index)
    if not by_class:
        return []
    per_class, rng = math.ceil(n / len(by_class)), random.Random(seed)
    chosen = sorted(i for label in sorted(by_class) for i in _draw(by_class[label], per_class, rng))
    return [items[i] for i in chosen]


def _draw(indices: list[int], k: int, rng: random.Random) -> list[int]:
    return indices if len(indices) <= k else rng.sample(indices, k)
