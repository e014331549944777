"""Running a model over test images while recorders reduce its hook points on the fly.

The class prompts go through the text tower once; the images go through the vision tower batch
by batch. Nothing but the recorders' running sums is kept, whatever the number of images.
"""
from __future__ import annotations

from typing import Iterable

import torch
from tqdm.auto import tqdm

from ..model.capture import Recorder
from ..model.prompted import PromptedCLIP


class Fanout:
    """One recorder that hands each hook point to every recorder that wants it."""

    def __init__(self, recorders: Iterable[Recorder]):
        self.recorders = list(recorders)

    def wants(self, name: str) -> bool:
        return any(r.wants(name) for r in self.recorders)

    def record(self, name: str, value: torch.Tensor) -> None:
        for r in self.recorders:
            if r.wants(name):
                r.record(name, value)


@torch.no_grad()
def collect(model: PromptedCLIP, loader, recorders: Iterable[Recorder], progress: bool = True) -> None:
    """Feed ``recorders`` with the text tower on the class prompts and the vision tower on ``loader``."""
    fan = Fanout(recorders)
    device = next(model.parameters()).device
    with model.capture(recorder=fan):
        model.encode_text()
        for images, _ in tqdm(loader, desc="attention statistics", disable=not progress, leave=False):
            model.encode_image(images.to(device))
