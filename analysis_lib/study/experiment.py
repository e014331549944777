"""Experiment files: datasets × variants × seeds, expanded into the runs the sweep executes.

An experiment file (YAML) names the datasets, the variants (a name → the variant kind and its
hyper-parameters), the seeds, the shared training settings (`TrainConfig`), the backbone, and
where data, runs and the notebook are. Each run becomes one flat parameter dict for the train
notebook, a stable id (`<dataset>/<variant name>/seed<k>`, also its folder under output_root)
and a config hash that tells the sweep whether a finished folder still matches the file.

Relative paths in the file are relative to the directory the sweep is started from (the
repository root, as in every command of the README); the notebook runs there too.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..checks import ConfigError, check_device, check_folder, check_type, unknown_name_error
from .train_config import TrainConfig
from ..model.variants import VARIANTS, VariantConfig, VariantError, check_depths, variant_config

DEFAULT_NOTEBOOK = "notebooks/train.ipynb"
DEFAULT_SEEDS = (1, 2, 3)
REQUIRED_KEYS = ("datasets", "variants", "model", "data_root")
OPTIONAL_KEYS = ("seeds", "train", "output_root", "notebook", "device", "analysis", "reuse_kernels",
                 "cache_dir")
# Parameters that say where things are or how fast they are computed, not what: left out of the
# config hash, so moving the data, the runs or the few-shot caches, or another machine's loader
# processes (batches do not depend on them, see loading.py), does not make finished runs look stale.
LOCATION_KEYS = ("data_root", "output_dir", "cache_dir", "num_workers")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


class ExperimentError(ConfigError):
    """An experiment file that cannot be run as written; the message names the file, key and fix."""


@dataclass(frozen=True)
class Run:
    """One notebook execution: (dataset, variant, seed) with every parameter it gets."""

    run_id: str
    dataset: str
    variant_name: str
    seed: int
    params: dict  # the notebook's parameters, except output_dir (the sweep sets it)
    config_hash: str
    split_sha256: str | None = None  # the dataset's split lists (data.split_sha256); None: data not here

    @property
    def seed_free_hash(self) -> str | None:
        """For a variant that learns nothing (zero-shot), the hash of its configuration without the
        seed: the test sets are fixed, so every seed's result is the same and one execution serves
        them all (the sweep copies it). None for the other variants."""
        if variant_config(self.params["variant"], **self.params["variant_params"]).learns:
            return None
        return config_hash({key: value for key, value in self.params.items() if key != "seed"})


@dataclass(frozen=True)
class AnalysisConfig:
    """The analyses: ``variant_name`` is the analysed variant, the runs every chapter and the
    attention explorer show (``seed``: the explorer's run of each dataset); ``n_images`` test
    images per run for every per-run table (``stats/per_run.py``); ``low_information`` names the
    dataset with little category information (claim C6e)."""

    variant_name: str
    seed: int
    n_images: int = 64
    low_information: str | None = None


@dataclass(frozen=True)
class Experiment:
    path: Path
    datasets: tuple[str, ...]
    variants: dict[str, dict]  # name -> {"variant": kind, hyper-parameters..., train overrides...}
    seeds: tuple[int, ...]
    train: TrainConfig
    model: str
    pretrained: str | None
    data_root: str
    output_root: str
    notebook: str
    device: str
    analysis: AnalysisConfig | None = None
    reuse_kernels: bool = False  # one kernel per sweep worker, cleared between runs (sweep.py)
    cache_dir: str | None = None  # few-shot subsets (default: <output_root>/split_fewshot)

    @property
    def low_information(self) -> str | None:
        """The dataset with little category information (claim C6e), if the file names one."""
        return self.analysis.low_information if self.analysis else None

    def runs(self) -> list[Run]:
        """Every (dataset, variant, seed), datasets outermost, in the file's order."""
        splits = {dataset: _split_sha256(dataset, self.data_root) for dataset in self.datasets}
        return [self._run(dataset, name, seed, splits[dataset]) for dataset in self.datasets
                for name in self.variants for seed in self.seeds]

    def _run(self, dataset: str, variant_name: str, seed: int, split: str | None) -> Run:
        spec = dict(self.variants[variant_name])
        kind = spec.pop("variant")
        overrides = {key: spec.pop(key) for key in list(spec) if key in TrainConfig.keys()}
        train = TrainConfig.from_dict({**self.train.to_parameters(), **overrides})
        params = {"dataset": dataset, "variant": kind, "variant_params": spec, "seed": seed,
                  "model": self.model, "pretrained": self.pretrained, "data_root": self.data_root,
                  "cache_dir": self.cache_dir or f"{self.output_root}/split_fewshot",
                  "device": self.device, **train.to_parameters()}
        return Run(run_id=f"{dataset}/{variant_name}/seed{seed}", dataset=dataset,
                   variant_name=variant_name, seed=seed, params=params,
                   config_hash=config_hash(params), split_sha256=split)


def _split_sha256(dataset: str, data_root: str) -> str | None:
    """The dataset's split lists' fingerprint where its data are here (``data.split_sha256``);
    None without the data, or for a dataset the registry does not know."""
    from ..data import UnknownDatasetError, split_sha256
    if not Path(data_root).expanduser().is_dir():
        return None
    try:
        return split_sha256(dataset, data_root)
    except UnknownDatasetError:
        return None


def hashed_config(params: Mapping) -> dict:
    """The part of a run's parameters that defines its result (everything but locations)."""
    return {key: value for key, value in params.items() if key not in LOCATION_KEYS}


def config_hash(params: Mapping) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of `hashed_config(params)`."""
    canonical = json.dumps(hashed_config(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_runnable(experiment: Experiment, require_weights: bool = True) -> str | None:
    """What would stop every run after its kernel started, checked before any starts: the model
    name, the checkpoint file or tag (that its weights are cached, whole, or can be downloaded), the
    device, and each variant's depths against the model's blocks. One ExperimentError.

    With ``require_weights=False`` (a dry run, e.g. projecting the cost on a laptop without the
    weights) missing weights are returned as a message instead of raised."""
    import open_clip
    from ..model.backbone import check_backbone, check_weights_file, resolve_weights
    try:
        check_device("device", experiment.device)
        check_backbone(experiment.model, experiment.pretrained)
        cfg = open_clip.get_model_config(experiment.model)
        blocks = cfg["text_cfg"]["layers"], cfg["vision_cfg"]["layers"]
        hparam_keys = set(VariantConfig.__dataclass_fields__) - {"variant"}
        for name, spec in experiment.variants.items():
            try:
                config = variant_config(spec["variant"], **{k: v for k, v in spec.items() if k in hparam_keys})
                check_depths(config, *blocks)
            except VariantError as err:
                raise ConfigError(f"variants.{name}: {err} (model {experiment.model})") from None
    except (ValueError, FileNotFoundError) as err:
        raise ExperimentError(f"{experiment.path}: {err}") from None
    try:
        cached = resolve_weights(experiment.model, experiment.pretrained, download=False)
    except (ValueError, FileNotFoundError) as err:
        if require_weights:
            raise ExperimentError(f"{experiment.path}: {err}") from None
        return f"{experiment.path}: {err}"
    try:
        if cached:  # the checkpoint given, or a tag's file in the download cache: damaged is an error
            check_weights_file(cached)
    except ValueError as err:
        raise ExperimentError(f"{experiment.path}: {err}") from None
    return None


def registered_datasets() -> list[str]:
    """The dataset names the project's registry knows: the default list of valid names."""
    from ..data import dataset_names
    return dataset_names()


def load_experiment(path: str | Path, known_datasets: Collection[str] | None = None,
                    data_root: str | None = None, require_data: bool = True) -> Experiment:
    """Read and validate an experiment file; every problem is one ExperimentError.

    known_datasets: valid dataset names (default: `registered_datasets()`).
    data_root: replaces the file's data_root (a machine's own data folder).
    require_data: whether data_root must exist (not needed to aggregate finished runs).
    """
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"experiment file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ExperimentError(f"{path} is not valid YAML: {err}") from None
    try:
        return _parse(path, raw, known_datasets if known_datasets is not None else registered_datasets(),
                      data_root, require_data)
    except ConfigError as err:
        raise ExperimentError(f"{path}: {err}") from None


def _parse(path: Path, raw, known_datasets: Collection[str], data_root_override,
           require_data: bool) -> Experiment:
    if not isinstance(raw, dict):
        raise ConfigError(f"the file must be a mapping with keys {', '.join(REQUIRED_KEYS)}, "
                          f"got {type(raw).__name__}")
    for key in raw:
        if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
            raise unknown_name_error("top level", "key", key, sorted(REQUIRED_KEYS + OPTIONAL_KEYS))
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise ConfigError(f"missing key {key!r} (required: {', '.join(REQUIRED_KEYS)})")

    datasets = _name_list(raw["datasets"], "datasets", str)
    for name in datasets:
        if name not in known_datasets:
            raise unknown_name_error("datasets", "dataset", name, known_datasets)
    seeds = _name_list(raw.get("seeds", list(DEFAULT_SEEDS)), "seeds", int)
    variants = _variants(raw["variants"])
    train = TrainConfig.from_dict(raw.get("train") or {}, where="train")
    model, pretrained = _model(raw["model"])

    data_root = check_type("data_root", data_root_override or raw["data_root"], str)
    if require_data and not Path(data_root).expanduser().is_dir():
        raise ConfigError(f"data_root {data_root} (here: {Path(data_root).expanduser().absolute()}) "
                          "does not exist; set data_root in the file or pass --data-root DIR")
    output_root = check_type("output_root", raw.get("output_root", f"runs/{path.stem}"), str)
    check_folder("output_root", output_root)
    cache_dir = check_type("cache_dir", raw.get("cache_dir"), str | None)
    if cache_dir is not None:
        check_folder("cache_dir", cache_dir)
    notebook = check_type("notebook", raw.get("notebook", DEFAULT_NOTEBOOK), str)
    if not Path(notebook).is_file():
        raise ConfigError(f"notebook {notebook} not found (relative paths start at the directory "
                          "the sweep runs from, normally the repository root)")
    return Experiment(path=path, datasets=datasets, variants=variants, seeds=seeds, train=train,
                      model=model, pretrained=pretrained, data_root=data_root,
                      output_root=output_root, cache_dir=cache_dir,
                      notebook=notebook, device=check_type("device", raw.get("device", "auto"), str),
                      analysis=_analysis(raw.get("analysis"), datasets, variants, seeds),
                      reuse_kernels=check_type("reuse_kernels", raw.get("reuse_kernels", False), bool))


def _analysis(value, datasets, variants, seeds) -> AnalysisConfig | None:
    """The optional ``analysis`` section; its variant and seed must be among the runs."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"analysis must be a mapping {{variant_name, seed, n_images}}, got {value!r}")
    keys = tuple(AnalysisConfig.__dataclass_fields__)
    for key in value:
        if key not in keys:
            raise unknown_name_error("analysis", "key", key, keys)
    hints = {"variant_name": str, "seed": int, "n_images": int, "low_information": str | None}
    defaults = {"seed": seeds[0], "n_images": AnalysisConfig.n_images, "low_information": None,
                "variant_name": "ivlp" if "ivlp" in variants else next(iter(variants))}
    config = AnalysisConfig(**{k: check_type(f"analysis.{k}", value.get(k, defaults[k]), hints[k]) for k in keys})
    if config.n_images < 1:
        raise ConfigError(f"analysis.n_images must be at least 1 (the test images per run that each analysis "
                          f"table uses), got {config.n_images}")
    for key, allowed in (("variant_name", variants), ("seed", seeds), ("low_information", datasets)):
        if getattr(config, key) not in allowed and not (key == "low_information" and config.low_information is None):
            raise unknown_name_error(f"analysis.{key}", key, getattr(config, key), allowed)
    return config


def _name_list(value, where: str, item_type) -> tuple:
    """A non-empty list without repeats, each item of ``item_type``."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list, got {value!r}")
    items = tuple(check_type(f"{where}[{i}]", item, item_type) for i, item in enumerate(value))
    repeated = sorted({str(item) for item in items if items.count(item) > 1})
    if repeated:
        raise ConfigError(f"{where} lists {', '.join(repeated)} more than once")
    return items


def _model(value) -> tuple[str, str | None]:
    if not isinstance(value, dict):
        raise ConfigError(f"model must be a mapping {{name: ..., pretrained: ...}}, got {value!r}")
    for key in value:
        if key not in ("name", "pretrained"):
            raise unknown_name_error("model", "key", key, ("name", "pretrained"))
    for key in ("name", "pretrained"):
        if key not in value:
            raise ConfigError(f"model.{key} is missing (pretrained: an open_clip tag such as openai, "
                              "a checkpoint path, or null for random weights)")
    return check_type("model.name", value["name"], str), check_type("model.pretrained",
                                                                     value["pretrained"], str | None)


def _variants(value) -> dict[str, dict]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"variants must be a non-empty mapping name -> {{variant: kind, ...}}, got {value!r}")
    variants = {}
    hparam_keys = tuple(f for f in VariantConfig.__dataclass_fields__ if f != "variant")
    allowed = ("variant",) + hparam_keys + TrainConfig.keys()
    for name, spec in value.items():
        where = f"variants.{name}"
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise ConfigError(f"variant name {name!r} must be letters, digits, _ . + - (it names a folder)")
        if not isinstance(spec, dict) or "variant" not in spec:
            raise ConfigError(f"{where} must be a mapping with a 'variant' key "
                              f"(one of {', '.join(VARIANTS)}), got {spec!r}")
        for key in spec:
            if key not in allowed:
                raise unknown_name_error(where, "key", key, allowed)
        kind = spec["variant"]
        if kind not in VARIANTS:
            raise unknown_name_error(f"{where}.variant", "variant", kind, VARIANTS)
        hparams = {key: spec[key] for key in spec if key in hparam_keys}
        overrides = {key: spec[key] for key in spec if key in TrainConfig.keys()}
        TrainConfig.from_dict(overrides, where=where)  # checked here; runs() merges them into train
        try:
            variant_config(kind, **hparams)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
        variants[name] = {"variant": kind, **hparams, **overrides}
    return variants
