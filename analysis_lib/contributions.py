"""Token contributions to the image-text alignment (the paper's figures 2 and 3).

Computed on the test samples that zero-shot CLIP gets wrong and the prompted model gets right,
then averaged per position: text positions of the true class's prompt ([SOS], prompts or template
words, class-name tokens, '.', [EOS]; zero after [EOS]), and vision tokens (patches, then the
vision prompts).
"""
from __future__ import annotations

import pandas as pd
import torch

from .model import PromptedCLIP
from .relevance import token_relevance


@torch.no_grad()
def predictions(model: PromptedCLIP, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, true) labels over a loader, class prompts encoded once."""
    text = model.encode_text()
    predicted, true = [], []
    for images, labels in loader:
        predicted.append(model.logits_from(model.encode_image(images), text).argmax(-1).cpu())
        true.append(labels)
    return torch.cat(predicted), torch.cat(true)


def fixed_by_prompting(zeroshot: PromptedCLIP, prompted: PromptedCLIP, loader) -> torch.Tensor:
    """Indices (into the loader's dataset) that zero-shot gets wrong and the prompted model right."""
    zs, labels = predictions(zeroshot, loader)
    pr, _ = predictions(prompted, loader)
    return torch.nonzero((zs != labels) & (pr == labels)).flatten()


def mean_relevance(model: PromptedCLIP, images: torch.Tensor, labels: torch.Tensor) -> dict[str, pd.DataFrame]:
    """Relevance per token position, averaged over the samples: tidy tables for both towers."""
    vision, text = token_relevance(model, images, labels)
    layout = model.token_layout("vision")
    kinds = ["cls"] + ["patch"] * layout.grid ** 2 + ["prompt"] * int(layout.is_prompt.sum())
    vision_rows = pd.DataFrame({"token": range(len(kinds)), "kind": kinds,
                                "relevance": vision.mean(0).numpy()})
    types = model.token_layout("text").token_types
    per_class = [types[int(c)] for c in labels]
    text_rows = pd.DataFrame({
        "position": range(text.shape[1]),
        "kind": [_most_common([t[p] for t in per_class]) for p in range(text.shape[1])],
        "relevance": text.mean(0).numpy()})
    return {"vision": vision_rows, "text": text_rows}


def _most_common(values: list[str]) -> str:
    return max(set(values), key=values.count)
