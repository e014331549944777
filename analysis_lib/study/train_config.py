"""The training hyper-parameters every trained variant shares, typed and checked once.

Experiment files, the sweep and the trainer all read the same `TrainConfig`, so a key, a type or
a default lives in exactly one place. The defaults are PromptSRC's IVLP protocol (book/method.md,
"Protocol"): SGD with momentum, a cosine schedule after warm-up epochs at a constant small lr;
the schedule's form is the trainer's, only its numbers are configurable.
"""
from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from ..checks import ConfigError, check_type, unknown_name_error
from ..data.readers import IMAGENET_ORDERS

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Training and evaluation settings of one run; defaults: PromptSRC's IVLP protocol."""

    shots: int = 16  # training images per class (Dassl's few-shot draw)
    epochs: int = 20
    batch_size: int = 4
    lr: float = 0.0025  # SGD, cosine decay to 0 after the warm-up
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1  # epochs at the constant warmup_lr before the cosine schedule
    warmup_lr: float = 1e-5
    crop_scale: float = 0.08  # smallest area fraction of the training random crop (Dassl's RRCROP_SCALE)
    precision: str = "auto"  # auto: bf16 autocast on a GPU, fp32 on the CPU
    eval_batch_size: int = 100
    num_workers: int | None = None  # DataLoader processes; None: one per CPU, at most 8 (see loading.py)
    # torch's CPU threads in the run's process. Results depend on it in the last bits (float
    # sums split over threads), so it is a setting, the same whether the sweep runs in this
    # process or on Dask workers, instead of whatever the process inherits.
    threads: int = 1
    imagenet_order: str = "sorted"  # ImageNet's images per class folder: sorted, or "filesystem" as CoOp

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            object.__setattr__(self, f.name, check_type(f.name, getattr(self, f.name), hints[f.name]))
        for name, lowest in (("shots", 1), ("epochs", 0), ("batch_size", 1), ("warmup_epochs", 0),
                             ("eval_batch_size", 1), ("num_workers", 0), ("threads", 1)):
            if getattr(self, name) is not None and getattr(self, name) < lowest:
                raise ConfigError(f"{name} must be at least {lowest}, got {getattr(self, name)}")
        for name in ("lr", "momentum", "weight_decay", "warmup_lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 < self.crop_scale <= 1:
            raise ConfigError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.imagenet_order not in IMAGENET_ORDERS:
            raise ConfigError(f"imagenet_order must be one of {', '.join(IMAGENET_ORDERS)}, "
                              f"got {self.imagenet_order!r}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_parameters(self) -> dict:
        """The settings as the train notebook's flat parameters (one per key); ``from_parameters``
        reads them back."""
        return asdict(self)

    @classmethod
    def from_parameters(cls, namespace: Mapping) -> TrainConfig:
        """The settings among a notebook's parameters (``namespace``: its globals); other names are
        not this class's business, missing keys take their defaults."""
        return cls(**{key: namespace[key] for key in cls.keys() if key in namespace})

    @classmethod
    def from_dict(cls, values: Mapping, where: str = "train") -> TrainConfig:
        """Defaults updated with ``values``; an unknown key or a bad value is a ConfigError
        whose message starts with ``where`` (the section of the experiment file)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be a mapping of {', '.join(cls.keys())}, "
                              f"got {values!r} ({type(values).__name__})")
        for key in values:
            if key not in cls.keys():
                raise unknown_name_error(where, "key", key, sorted(cls.keys()))
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{where}.{err}") from None
