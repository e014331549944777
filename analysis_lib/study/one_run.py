"""One training run of the base-to-novel protocol, as the train notebook executes it.

Seed → backbone → few-shot split → train on the base classes → evaluate on base test and
novel test (the novel model shares the learned parameters; only its class list differs) →
the run folder: learned parameters (safetensors), the loss curve, metrics.json.
"""
from __future__ import annotations

import json
import logging
import platform
import time
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .. import data
from ..model.backbone import load_backbone
from ..files import write_text_atomic
from ..data.transforms import ItemDataset, eval_transform, train_transform
from ..model.prompted import build_model
from .aggregate import harmonic_mean
from ..checks import check_type
from .loading import eval_loader, train_loader
from .train_config import TrainConfig
from .trainer import evaluate, set_seed, train

log = logging.getLogger(__name__)

PARAMS_FILE = "trainable.safetensors"
METRICS_FILE = "metrics.json"
LOSS_FILE = "loss.csv"


@dataclass
class RunSettings:
    """Everything one run depends on: what to train, where, and the shared training settings."""

    dataset: str
    variant: str
    data_root: str
    output_dir: str
    variant_params: dict = field(default_factory=dict)
    seed: int = 1
    model: str = "ViT-B-16-quickgelu"
    pretrained: str | None = "openai"
    device: str = "auto"
    progress: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        hints = typing.get_type_hints(RunSettings)
        for f in fields(self):
            if f.name != "train":
                check_type(f"parameter {f.name!r}", getattr(self, f.name), hints[f.name])

    @classmethod
    def from_parameters(cls, namespace: dict) -> "RunSettings":
        """Settings from a notebook's parameters: this class's fields plus the TrainConfig keys."""
        own = {f.name for f in fields(cls)} - {"train"}
        return cls(**{k: namespace[k] for k in own if k in namespace},
                   train=TrainConfig(**{k: namespace[k] for k in TrainConfig.keys() if k in namespace}))

    def to_dict(self) -> dict:
        """Flat, like the notebook's parameters."""
        flat = asdict(self)
        return {**flat, **flat.pop("train")}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def versions() -> dict:
    import open_clip
    return {"python": platform.python_version(), "torch": torch.__version__,
            "open_clip": open_clip.__version__}


def run_training(settings: RunSettings) -> dict:
    """Train and evaluate one (dataset, variant, seed); write the run folder; return the metrics."""
    start = time.perf_counter()
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(settings.seed)
    device = resolve_device(settings.device)
    backbone = load_backbone(settings.model, settings.pretrained, device=str(device))
    spec = data.get_spec(settings.dataset)
    cfg = settings.train
    splits = data.fewshot_split(settings.dataset, settings.data_root, cfg.shots, settings.seed)
    base, novel = data.split_classes(splits, "base"), data.split_classes(splits, "novel")

    model = build_model(settings.variant, backbone, data.prompt_classnames(base.classnames),
                        spec.template, **settings.variant_params)
    losses: list[float] = []
    if model.n_trainable:
        transform = train_transform(backbone.image_size, backbone.mean, backbone.std, cfg.crop_scale)
        loader = train_loader(ItemDataset(base.train, transform), cfg, settings.seed, device)
        losses = train(model, loader, lr=cfg.lr, epochs=cfg.epochs, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, warmup_epochs=cfg.warmup_epochs,
                       warmup_lr=cfg.warmup_lr, precision=cfg.precision, progress=settings.progress)
        model.save_trainable(out / PARAMS_FILE)

    def test_loader(items):
        return eval_loader(ItemDataset(items, eval_transform(backbone.image_size, backbone.mean, backbone.std)),
                           cfg, device)

    base_acc = evaluate(model, test_loader(base.test), cfg.precision, settings.progress)
    novel_model = build_model(settings.variant, backbone, data.prompt_classnames(novel.classnames),
                              spec.template, **settings.variant_params)
    novel_model.load_trainable(model.trainable_state())
    novel_acc = evaluate(novel_model, test_loader(novel.test), cfg.precision, settings.progress)

    metrics = {
        "dataset": settings.dataset, "variant": settings.variant, "seed": settings.seed,
        "base_acc": base_acc, "novel_acc": novel_acc, "hm": harmonic_mean(base_acc, novel_acc),
        "n_trainable": model.n_trainable, "n_base_classes": len(base.classnames),
        "n_novel_classes": len(novel.classnames), "n_train_images": len(base.train),
        "wall_time_s": time.perf_counter() - start, "device": str(device),
        "settings": settings.to_dict(), "variant_config": model.config.to_dict(), "versions": versions(),
    }
    write_text_atomic(out / LOSS_FILE, "step,loss\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(losses)))
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2))
    log.info("%s / %s / seed %d: base %.2f novel %.2f HM %.2f", settings.dataset, settings.variant,
             settings.seed, base_acc, novel_acc, metrics["hm"])
    return metrics
