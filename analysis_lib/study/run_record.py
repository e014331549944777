"""What a finished run leaves behind: its folder, the files in it, the results it reports and
the mark that says it is complete. Torch-free, so that the sweep and the results table read run
folders without loading a model (``run_folder.py`` loads one back).

A run's results are its accuracy (%) on the base and on the novel test classes and their
harmonic mean, HM; ``metrics.json`` holds them with the run's settings, and the run's config
hash once the sweep has published the folder.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..files import FileContentError, read_json
from .experiment import Run

log = logging.getLogger(__name__)

# What a run writes last into its folder; with the run's config hash inside, the folder is complete.
METRICS_FILE = "metrics.json"
PARAMS_FILE = "trainable.safetensors"  # the learned parameters only
LOSS_FILE = "loss.csv"


def harmonic_mean(base, novel):
    """HM = 2·base·novel / (base + novel), 0 where both are 0; numbers or arrays alike."""
    base, novel = np.asarray(base, dtype=float), np.asarray(novel, dtype=float)
    total = base + novel
    hm = np.divide(2 * base * novel, total, out=np.zeros_like(total), where=total != 0)
    return hm.item() if hm.ndim == 0 else hm


def run_folder(output_root: Path, run: Run) -> Path:
    return Path(output_root) / run.run_id


def is_complete(folder: Path, config_hash: str, split_sha256: str | None = None) -> bool:
    """Whether ``folder`` holds a finished run of exactly this configuration and, where
    ``split_sha256`` is given, of these split lists (``Run.split_sha256``; a run recorded without
    one, made by an earlier version, is taken as it is)."""
    path = Path(folder) / METRICS_FILE
    if not path.exists():
        return False
    try:
        metrics = read_json(path, "the run will be run again")
    except FileContentError as err:
        log.warning("%s", err)
        return False
    if not isinstance(metrics, dict) or metrics.get("config_hash") != config_hash:
        return False
    if split_sha256 and metrics.get("split_sha256") not in (None, split_sha256):
        log.warning("%s: the dataset's split file changed since this run was made; it will be run again", folder)
        return False
    return True
