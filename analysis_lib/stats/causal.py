"""The causal test of way (a) against way (b) (ours): accuracy with either effect of the prompts removed.

A trained prompted model is evaluated as trained, with the bias term removed (rescaling only),
with the rescaling removed (λ = 1, bias term kept) and with both removed, on the base and the
novel test classes; each ablation in two forms: in every block (the prompt slots past the prompt
depth carry the previous block's outputs, which still act as keys and values) and only in the
blocks below the prompt depth (where the learned prompts are). If the prompts work mainly as a
dataset bias (the paper's claim), removing the bias term costs much more than removing the rescaling.
"""
from __future__ import annotations

import pandas as pd

from ..model.attention import Ablation
from ..study.run_folder import LoadedRun
from ..study.aggregate import harmonic_mean
from ..study.trainer import evaluate

ALL_BLOCKS, BELOW_DEPTH = "all blocks", "below prompt depth"
MEAN_ABLATED = "bias term mean-ablated"
REMOVALS = {
    "bias term removed": dict(keep_rescale=True, keep_bias=False),
    "rescaling removed": dict(keep_rescale=False, keep_bias=True),
    "both removed": dict(keep_rescale=False, keep_bias=False),
}
ABLATIONS = {("as trained", ALL_BLOCKS): Ablation()} | {
    (name, form): Ablation(**keep, below_prompt_depth=form == BELOW_DEPTH)
    for form in (ALL_BLOCKS, BELOW_DEPTH) for name, keep in REMOVALS.items()}


def ablation_accuracy(run: LoadedRun, limit: int | None = None, progress: bool = False) -> pd.DataFrame:
    """One row per (ablation, form): base, novel and harmonic-mean accuracy (percent) on the first
    ``limit`` test images of each class group (all for None)."""
    rows = []
    models = {c: run.model(c) for c in ("base", "novel")}
    loaders = {c: run.test_loader(c, limit) for c in ("base", "novel")}
    for (name, form), ablation in ABLATIONS.items():
        acc = {}
        for classes in ("base", "novel"):
            with models[classes].ablate(ablation):
                acc[classes] = evaluate(models[classes], loaders[classes], run.settings.train.precision, progress)
        rows.append({"ablation": name, "form": form, "base": acc["base"], "novel": acc["novel"],
                     "hm": harmonic_mean(acc["base"], acc["novel"])})
    return pd.DataFrame(rows)
