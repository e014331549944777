"""One training run of the base-to-novel protocol, as the train notebook executes it.

Seed → backbone → few-shot split → train on the base classes → evaluate on base test and
novel test (the novel model shares the learned parameters; only its class list differs) →
the run folder: learned parameters (safetensors), the loss curve, metrics.json.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
import typing
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .. import data
from ..model.backbone import load_backbone
from ..files import write_text_atomic
from ..data.transforms import ItemDataset, eval_transform, train_transform
from ..model.prompted import build_model
from .run_record import LOSS_FILE, METRICS_FILE, PARAMS_FILE, harmonic_mean
from ..checks import ConfigError, check_device, check_folder, check_type, unknown_name_error
from .loading import eval_loader, train_loader
from .train_config import TrainConfig
from .trainer import evaluate, set_seed, torch_threads, train

log = logging.getLogger(__name__)

@dataclass
class RunSettings:
    """Everything one run depends on: what to train, where, and the shared training settings."""

    dataset: str
    variant: str
    data_root: str
    output_dir: str
    cache_dir: str | None = None  # few-shot subsets are cached here (None: in the run folder)
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
        check_device("parameter 'device'", self.device)

    @classmethod
    def parameter_names(cls) -> list[str]:
        """The train notebook's parameters: this class's fields and the TrainConfig keys."""
        return sorted(({f.name for f in fields(cls)} - {"train"}) | set(TrainConfig.keys()))

    @classmethod
    def from_parameters(cls, namespace: dict, defined_before: Collection[str] | None = None) -> "RunSettings":
        """Settings from a notebook's parameters: this class's fields plus the TrainConfig keys.

        With ``defined_before`` (the names the notebook defined before its parameters cell),
        every other public name must be a parameter: papermill injects any ``-p NAME VALUE``,
        and a misspelt name (``-p epoch 1``) would otherwise be ignored."""
        if defined_before is not None:
            unknown = sorted(name for name in namespace if name not in defined_before
                             and not name.startswith("_") and name not in cls.parameter_names())
            if unknown:
                raise unknown_name_error("notebook parameters", "parameter", unknown[0], cls.parameter_names())
        own = {f.name for f in fields(cls)} - {"train"}
        return cls(**{k: namespace[k] for k in own if k in namespace},
                   train=TrainConfig.from_parameters(namespace))

    def to_dict(self) -> dict:
        """Flat, like the notebook's parameters."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "train"}
        return {**own, **self.train.to_parameters()}


def resolve_device(device: str) -> torch.device:
    check_device("device", device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this machine has no usable CUDA GPU; use device auto or cpu")
    return torch.device(device)


def versions() -> dict:
    import open_clip
    return {"python": platform.python_version(), "torch": torch.__version__,
            "open_clip": open_clip.__version__}


# Settings that name files or folders: recorded as absolute paths (see recorded_settings).
PATH_SETTINGS = ("pretrained", "data_root", "cache_dir")


def recorded_settings(settings: RunSettings) -> dict:
    """The settings as metrics.json keeps them: paths resolved when the run is made (a
    ``pretrained`` tag stays a tag), so the run folder reopens from any working directory."""
    flat = settings.to_dict()
    for key in PATH_SETTINGS:
        if flat[key] is not None and (key != "pretrained" or os.path.exists(flat[key])):
            flat[key] = os.path.abspath(flat[key])
    return flat


def fewshot_cache(settings: RunSettings) -> Path:
    """Where the run caches its few-shot subset: cache_dir, else the run folder."""
    return Path(settings.cache_dir or Path(settings.output_dir) / "split_fewshot")


def refuse_untypable_classes(settings: RunSettings, backbone, splits) -> None:
    """Type the tokens of every class prompt, base and novel, as the analyses will
    (``token_layout``): a class name they could not type stops the run before it trains. The
    models are built under a forked random state, so the check leaves the run's draws as they were."""
    spec = data.get_spec(settings.dataset)
    with torch.random.fork_rng():
        for split in splits:
            build_model(settings.variant, backbone, data.prompt_classnames(split.classnames), spec.template,
                        **settings.variant_params).token_layout("text")


def run_training(settings: RunSettings) -> dict:
    """Train and evaluate one (dataset, variant, seed) with the configured number of CPU
    threads; write the run folder; return the metrics."""
    with torch_threads(settings.train.threads):
        return _run_training(settings)


def _run_training(settings: RunSettings) -> dict:
    start = time.perf_counter()
    out = check_folder("output_dir", settings.output_dir)
    check_folder("cache_dir", fewshot_cache(settings))
    out.mkdir(parents=True, exist_ok=True)
    set_seed(settings.seed)
    device = resolve_device(settings.device)
    backbone = load_backbone(settings.model, settings.pretrained, device=str(device))
    spec = data.get_spec(settings.dataset)
    cfg = settings.train
    splits = data.fewshot_split(settings.dataset, settings.data_root, cfg.shots, settings.seed,
                                cache_dir=fewshot_cache(settings), imagenet_order=cfg.imagenet_order)
    base, novel = data.split_classes(splits, "base"), data.split_classes(splits, "novel")

    refuse_untypable_classes(settings, backbone, (base, novel))
    model = build_model(settings.variant, backbone, data.prompt_classnames(base.classnames),
                        spec.template, **settings.variant_params)
    losses: list[float] = []
    if model.n_trainable:
        transform = train_transform(backbone.image_size, backbone.mean, backbone.std, cfg.crop_scale)
        loader = train_loader(ItemDataset(base.train, transform, settings.dataset), cfg, settings.seed, device)
        losses = train(model, loader, cfg, settings.progress)
        model.save_trainable(out / PARAMS_FILE)

    def test_loader(items):
        return eval_loader(ItemDataset(items, eval_transform(backbone.image_size, backbone.mean, backbone.std),
                                       settings.dataset), cfg, device)

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
        "settings": recorded_settings(settings), "variant_config": model.config.to_dict(), "versions": versions(),
    }
    write_text_atomic(out / LOSS_FILE, "step,loss\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(losses)))
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2))
    log.info("%s / %s / seed %d: base %.2f novel %.2f HM %.2f", settings.dataset, settings.variant,
             settings.seed, base_acc, novel_acc, metrics["hm"])
    return metrics
