"""The causal test of way (a) against way (b) (ours): accuracy with either effect of the prompts removed.

A trained prompted model is evaluated four times — as trained; with the bias term removed
(rescaling only); with the rescaling removed (λ = 1, bias term kept); with both removed — on the
base and the novel test classes. If the prompts work mainly as a dataset bias (the paper's claim),
removing the bias term costs much more than removing the rescaling.
"""
from __future__ import annotations

import pandas as pd

from ..model.attention import Ablation
from ..study.run_folder import LoadedRun
from ..study.aggregate import harmonic_mean
from ..study.trainer import evaluate

ABLATIONS = {
    "as trained": Ablation(keep_rescale=True, keep_bias=True),
    "bias term removed": Ablation(keep_rescale=True, keep_bias=False),
    "rescaling removed": Ablation(keep_rescale=False, keep_bias=True),
    "both removed": Ablation(keep_rescale=False, keep_bias=False),
}


def ablation_accuracy(run: LoadedRun, limit: int | None = None, progress: bool = False) -> pd.DataFrame:
    """One row per ablation: base, novel and harmonic-mean accuracy (percent)."""
    rows = []
    models = {c: run.model(c) for c in ("base", "novel")}
    loaders = {c: run.test_loader(c, limit) for c in ("base", "novel")}
    for name, ablation in ABLATIONS.items():
        acc = {}
        for classes in ("base", "novel"):
            with models[classes].ablate(ablation):
                acc[classes] = evaluate(models[classes], loaders[classes], run.settings.train.precision, progress)
        rows.append({"ablation": name, "base": acc["base"], "novel": acc["novel"],
                     "hm": harmonic_mean(acc["base"], acc["novel"])})
    return pd.DataFrame(rows)
