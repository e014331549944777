"""Image preprocessing of the literature's protocol, and a torch Dataset over reader items.

Size, mean and std come from the model (Backbone.image_size / .mean / .std); open_clip's
OpenAI values are the defaults because the paper's backbone is OpenAI's CLIP.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms as T

from .images import open_rgb
from .readers import Item

BICUBIC = T.InterpolationMode.BICUBIC


def train_transform(size: int = 224, mean: Sequence[float] = OPENAI_DATASET_MEAN,
                    std: Sequence[float] = OPENAI_DATASET_STD, crop_scale: float = 0.08) -> T.Compose:
    """Random resized crop (area crop_scale-1, bicubic) and horizontal flip: Dassl's training input."""
    return T.Compose([T.RandomResizedCrop(size, scale=(crop_scale, 1.0), interpolation=BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def eval_transform(size: int = 224, mean: Sequence[float] = OPENAI_DATASET_MEAN,
                   std: Sequence[float] = OPENAI_DATASET_STD) -> T.Compose:
    """Shorter side to `size` (bicubic), centre crop, normalise: CLIP's and Dassl's test input."""
    return T.Compose([T.Resize(size, interpolation=BICUBIC), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])


class ItemDataset(torch.utils.data.Dataset):
    """(image tensor, label) pairs from reader items; images are decoded lazily, as RGB. A file
    that does not decode is an error naming it and ``dataset``."""

    def __init__(self, items: Sequence[Item], transform: Callable[[Image.Image], torch.Tensor],
                 dataset: str | None = None):
        self.items = list(items)
        self.transform = transform
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        return self.transform(open_rgb(item.path, self.dataset)), item.label
