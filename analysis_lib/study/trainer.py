"""One trainer for every trainable variant, one evaluator for all, with the literature's protocol.

Protocol (PromptSRC's IVLP, Dassl's conventions): SGD with momentum and weight decay; the
learning rate is set once per epoch — a constant warm-up value for the first epochs, then a
cosine decay that starts from the base rate; the last epoch is evaluated.
"""
from __future__ import annotations

import logging
import math
import random
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..model.prompted import PromptedCLIP
from .train_config import TrainConfig

log = logging.getLogger(__name__)

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch, as the literature's runs do before anything draws."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


@contextmanager
def torch_threads(n: int):
    """torch uses ``n`` CPU threads within the block, then as many as before."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def learning_rate(epoch: int, lr: float, epochs: int, warmup_epochs: int, warmup_lr: float) -> float:
    """Constant ``warmup_lr`` for the warm-up epochs, then cosine from ``lr`` over ``epochs`` steps."""
    if epoch < warmup_epochs:
        return warmup_lr
    return 0.5 * lr * (1 + math.cos(math.pi * (epoch - warmup_epochs) / epochs))


def autocast_for(device: torch.device, precision: str):
    """Mixed precision on a GPU (bf16 unless told otherwise), plain fp32 on the CPU."""
    if device.type != "cuda" or precision == "fp32":
        return nullcontext()
    dtype = AUTOCAST["bf16" if precision == "auto" else precision]
    return torch.autocast("cuda", dtype=dtype)


def train(model: PromptedCLIP, loader: DataLoader, cfg: TrainConfig, progress: bool = True) -> list[float]:
    """Train the learned parameters of ``model`` with ``cfg``'s optimiser, schedule and precision;
    returns the loss of every step."""
    lr, epochs, precision = cfg.lr, cfg.epochs, cfg.precision
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"variant {model.config.variant!r} has nothing to train")
    optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision == "fp16")
    losses: list[float] = []
    bar = tqdm(total=epochs * len(loader), desc=f"train {model.config.variant}", disable=not progress)
    model.train()
    fixed_text = None
    if model.text_is_fixed:  # nothing learned in the text tower: its class features never change
        with torch.no_grad(), autocast_for(device, precision):
            fixed_text = model.encode_text()
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch, lr, epochs, cfg.warmup_epochs, cfg.warmup_lr)
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast_for(device, precision):
                logits = model(images) if fixed_text is None else \
                    model.logits_from(model.encode_image(images), fixed_text)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: PromptedCLIP, loader: DataLoader, precision: str = "auto",
             progress: bool = True) -> float:
    """Top-1 accuracy in percent; the class prompts are encoded once, not once per batch."""
    device = next(model.parameters()).device
    model.eval()
    correct = total = 0
    with autocast_for(device, precision):
        text = model.encode_text()
        for images, labels in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            logits = model.logits_from(model.encode_image(images.to(device)), text)
            correct += (logits.argmax(dim=-1).cpu() == labels).sum().item()
            total += labels.numel()
    if total == 0:
        raise ValueError("the evaluation set is empty")
    return 100.0 * correct / total
