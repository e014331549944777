"""Reading a finished run folder back: the trained model for base or novel classes, its test data.

Analyses start here, so that they see exactly the model and the few-shot split the run used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .. import data
from ..files import read_json
from ..model.backbone import Backbone, load_backbone
from ..data.sample import stratified_sample
from ..data.transforms import ItemDataset, eval_transform
from ..model.prompted import PromptedCLIP, build_model
from .one_run import PATH_SETTINGS, RunSettings, fewshot_cache, resolve_device
from .run_record import METRICS_FILE, PARAMS_FILE
from .trainer import set_seed


class RunFolderError(FileNotFoundError):
    """A run folder that is missing or incomplete."""


@dataclass
class LoadedRun:
    settings: RunSettings
    metrics: dict
    backbone: Backbone
    splits: dict[str, data.DatasetSplits]  # "base" and "novel"
    init_rng: torch.Tensor | None = None   # torch's RNG state when the run built its model

    def _build(self, classes: str) -> PromptedCLIP:
        s = self.settings
        return build_model(s.variant, self.backbone, data.prompt_classnames(self.splits[classes].classnames),
                           data.get_spec(s.dataset).template, **s.variant_params)

    def model(self, classes: str = "base") -> PromptedCLIP:
        """The trained variant for the base or the novel classes (learned parameters loaded)."""
        model = self._build(classes)
        if model.n_trainable:
            model.load_trainable(Path(self.settings.output_dir) / PARAMS_FILE)
        return model.eval()

    def control(self, classes: str = "base") -> PromptedCLIP:
        """The control: the same variant at the run's initial parameters, untrained (the prompts or
        biases its seed drew before training; the novel classes' model shares them, as trained)."""
        if self.init_rng is None:
            raise RunFolderError("this run was loaded without its initial random state; use load_run")
        with torch.random.fork_rng(devices=[]):
            torch.random.set_rng_state(self.init_rng)
            initial = self._build("base")
        if classes == "base":
            return initial.eval()
        model = self._build(classes)
        model.load_trainable(initial.trainable_state())
        return model.eval()

    def sample(self, classes: str = "base", limit: int | None = None) -> list[data.Item]:
        """The test images of a class group that the per-image statistics use: ``stratified_sample``
        of ``limit`` (the same for every seed and variant), or every test image for None."""
        return stratified_sample(self.splits[classes].test, limit)

    def test_loader(self, classes: str = "base", limit: int | None = None, batch_size: int = 50) -> DataLoader:
        """Batches of ``sample(classes, limit)``, in order, with their labels."""
        transform = eval_transform(self.backbone.image_size, self.backbone.mean, self.backbone.std)
        return DataLoader(ItemDataset(self.sample(classes, limit), transform, self.settings.dataset),
                          batch_size=batch_size)


def _located(settings: dict, run_dir: Path) -> dict:
    """Relative paths that runs made before paths were recorded absolute (``recorded_settings``)
    keep: each is looked up from the working directory, then from the folders above the run
    folder and above the folder the run was made in (``output_dir`` as recorded), so a run reopens
    from anywhere while it lies in, or was made in, the project it was made from."""
    bases = [Path("."), *run_dir.absolute().parents, *Path(settings.get("output_dir", ".")).absolute().parents]
    found = {}
    for key in PATH_SETTINGS:
        value = settings.get(key)
        if value and not Path(value).is_absolute() and not Path(value).exists():
            found[key] = next((str(base / value) for base in bases if (base / value).exists()), value)
    return found


def load_run(run_dir: str | Path, device: str = "auto", data_root: str | None = None) -> LoadedRun:
    """Rebuild a run from its folder; ``data_root`` overrides where the data lives now."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / METRICS_FILE
    if not metrics_file.exists():
        raise RunFolderError(f"{run_dir} has no {METRICS_FILE}: it is not a finished run folder "
                             "(run the sweep, or point at another folder)")
    metrics = read_json(metrics_file, "this run folder is damaged: run the sweep again to redo the run")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("settings"), dict):
        raise RunFolderError(f"{metrics_file} holds no run settings: it was not written by a run "
                             "(run the sweep again to redo the run)")
    recorded = {**metrics["settings"], **_located(metrics["settings"], run_dir)}
    settings = RunSettings.from_parameters({**recorded, "output_dir": str(run_dir),
                                            "data_root": data_root or recorded["data_root"]})
    set_seed(settings.seed)  # as the run did: a randomly initialised backbone comes out the same
    backbone = load_backbone(settings.model, settings.pretrained, device=str(resolve_device(device)))
    splits = data.fewshot_split(settings.dataset, settings.data_root, settings.train.shots, settings.seed,
                                cache_dir=fewshot_cache(settings), imagenet_order=settings.train.imagenet_order)
    # The run built its model here, from this state: the control rebuilds it (``LoadedRun.control``).
    return LoadedRun(settings, metrics, backbone, {c: data.split_classes(splits, c) for c in ("base", "novel")},
                     torch.random.get_rng_state())
