"""The paper's claims as tests (PAPER.md, "The claims as tests"): one effect per claim, dataset and
seed (and image where the statistic is per image), a bootstrap interval, a paired test and a
verdict from one rule, ``verdict``.

Each claim's effect is a signed number whose side of the claim's margin says whether the claim
holds for that sample: ``above`` (effect > margin supports it) or ``below``. The inputs are the
per-run tables of the analyses stage (``per_run.py``) and the runs' metrics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..study.experiment import Experiment
from .causal import ALL_BLOCKS, BELOW_DEPTH
from .per_run import load_table, run_metrics

AVERAGE = "Average"
CONFIDENCE = 0.95
N_RESAMPLES = 2000
SUPPORTED, NOT_SUPPORTED, MIXED, TOO_FEW = "supported", "not supported", "mixed", "too few samples"
VERDICT_RULE = (
    "A claim's effect has a margin and a side (above or below it). For one dataset: if the 95% bootstrap "
    "interval of the effect lies wholly on the claim's side of the margin, the claim is supported; if it "
    "lies wholly on the other side, or touches the margin from there, it is not supported; if the interval "
    "contains the margin, the verdict is mixed. For the average over datasets the same rule applies to the "
    "average's interval, except that it is mixed whenever some datasets support the claim and others do "
    "not. With fewer than two samples there is no interval: too few samples.")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    effect: str      # what the effect measures, with its unit
    side: str        # "above" or "below": where the effect must lie for the claim to hold
    margin: float = 0.0


CLAIMS = {c.id: c for c in (
    Claim("C1", "Block 0 rescales the original tokens' attention by a pure proportion",
          "max |A_prompted − λ·A_zero-shot| in block 0", "below", 1e-4),
    Claim("C2", "[CLS] attends more to the foreground with prompts",
          "foreground share of [CLS] attention, W/O − CLIP (mean over blocks, heads)", "above"),
    Claim("C3", "The bias term (way b) matters more than the rescaling (way a)",
          "HM with rescaling removed − HM with bias term removed, all blocks (points)", "above"),
    Claim("C3d", "… and so in the blocks below the prompt depth alone",
          "the same, ablations below the prompt depth only (points)", "above"),
    Claim("C4", "Text prompts shift [EOS] attention from the category tokens to the prompts",
          "[EOS] attention (prompt − category), prompted − zero-shot (mean over blocks, heads)", "above"),
    Claim("C4r", "… and the alignment's relevance too",
          "relevance share (prompt − category), prompted − zero-shot", "above"),
    Claim("C5", "Vision prompts resemble the background",
          "cosine similarity of prompt keys/values to background − to foreground patches", "above"),
    Claim("C6", "Bias tuning matches or beats prompt tuning at a similar budget",
          "HM of the bias-tuning setting closest to IVLP's budget − HM of IVLP (points)", "above"),
)}


# --------------------------------------------------------------------------- the rule
def verdict(low: float, high: float, claim: Claim, dataset_verdicts: tuple[str, ...] = ()) -> str:
    """The one verdict rule (``VERDICT_RULE``); ``dataset_verdicts`` for the average row only."""
    if math.isnan(low) or math.isnan(high):
        return TOO_FEW
    if SUPPORTED in dataset_verdicts and NOT_SUPPORTED in dataset_verdicts:
        return MIXED
    holds, fails = (low > claim.margin, high <= claim.margin) if claim.side == "above" else \
        (high < claim.margin, low >= claim.margin)
    return SUPPORTED if holds else NOT_SUPPORTED if fails else MIXED


def interval(values: np.ndarray) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (nan, nan for fewer than two values; the
    value itself twice when all values are equal)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES,
                             method="percentile", random_state=0)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_test(values: np.ndarray, claim: Claim) -> float:
    """One-sided Wilcoxon signed-rank p-value that the effects lie on the claim's side of the margin
    (the effects are paired differences already); nan when it is undefined (under two non-zero ones)."""
    diffs = np.asarray(values, dtype=float) - claim.margin
    if np.count_nonzero(diffs) < 2:
        return math.nan
    return float(stats.wilcoxon(diffs, alternative="greater" if claim.side == "above" else "less").pvalue)


# --------------------------------------------------------------------------- effects per sample
UNIT_COLUMNS = ["claim", "dataset", "seed", "unit", "value"]


def _units(claim: str, frame: pd.DataFrame, value: str, unit: str | None = None) -> pd.DataFrame:
    """Rows of ``frame`` (dataset, seed[, unit], value) as the claim's samples."""
    out = frame.assign(claim=claim, unit=frame[unit] if unit else 0).rename(columns={value: "value"})
    return out[UNIT_COLUMNS]


def _c1(block0: pd.DataFrame) -> pd.DataFrame:
    return _units("C1", block0.groupby(["dataset", "seed"], as_index=False).deviation.max(), "deviation")


def _c2(share: pd.DataFrame) -> pd.DataFrame:
    per_image = share.groupby(["dataset", "seed", "image", "reading"]).share.mean().unstack("reading")
    effect = (per_image["W/O"] - per_image["CLIP"]).rename("effect").reset_index()
    return _units("C2", effect, "effect", "image")


def _c3(causal: pd.DataFrame) -> list[pd.DataFrame]:
    hm = causal.set_index(["dataset", "seed", "form", "ablation"]).hm.unstack("ablation")
    effect = (hm["rescaling removed"] - hm["bias term removed"]).rename("effect").reset_index()
    return [_units(claim, effect[effect.form == form], "effect")
            for claim, form in (("C3", ALL_BLOCKS), ("C3d", BELOW_DEPTH))]


def _prompt_minus_category(frame: pd.DataFrame, type_column: str, value: str, zeroshot: str) -> pd.DataFrame:
    """(prompt − category) of the prompted model minus that of zero-shot, per dataset and seed."""
    means = frame.groupby(["dataset", "seed", "model", type_column])[value].mean().unstack(type_column)
    gap = (means["prompt"] - means["category"]).unstack("model")
    return (gap["prompted"] - gap[zeroshot]).rename("effect").reset_index()


def _c4(attention: pd.DataFrame) -> pd.DataFrame:
    eos = attention[(attention.tower == "text") & attention.statistic.str.startswith("eos_to_")]
    eos = eos.assign(token_type=eos.statistic.str.removeprefix("eos_to_"))
    return _units("C4", _prompt_minus_category(eos, "token_type", "value", "CLIP"), "effect")


def _c4r(contributions: pd.DataFrame) -> pd.DataFrame:
    text = contributions[(contributions.tower == "text") & (contributions.method == "relevance")]
    total = text.groupby(["dataset", "seed", "model"]).contribution.transform("sum")
    text = text.assign(share=text.contribution / total)
    return _units("C4r", _prompt_minus_category(text, "token_type", "share", "CLIP"), "effect")


def _c5(background: pd.DataFrame) -> pd.DataFrame:
    effect = (background.background - background.foreground).rename("effect")
    per_run = background.assign(effect=effect).groupby(["dataset", "seed"], as_index=False).effect.mean()
    return _units("C5", per_run, "effect")


def matched_bias_variant(metrics: pd.DataFrame) -> str | None:
    """The bias-tuning variant whose learned-parameter count is closest to IVLP's (None without either)."""
    bias, ivlp = metrics[metrics.variant == "bias"], metrics[metrics.variant == "ivlp"]
    if bias.empty or ivlp.empty:
        return None
    budget = ivlp.n_trainable.median()
    counts = bias.groupby("variant_name").n_trainable.median()
    return (counts - budget).abs().idxmin()


def _c6(metrics: pd.DataFrame) -> pd.DataFrame:
    name = matched_bias_variant(metrics)
    if name is None:
        return pd.DataFrame(columns=UNIT_COLUMNS)
    hm = metrics[metrics.variant_name.isin([name]) | (metrics.variant == "ivlp")]
    hm = hm.assign(kind=np.where(hm.variant_name == name, "bias", "ivlp"))
    wide = hm.pivot_table(index=["dataset", "seed"], columns="kind", values="hm").dropna().reset_index()
    return _units("C6", wide.assign(effect=wide.bias - wide.ivlp), "effect")


def claim_samples(tables: dict[str, pd.DataFrame], metrics: pd.DataFrame) -> pd.DataFrame:
    """Every claim's effect per dataset, seed and unit, from the ivlp runs' tables (``load_table``
    of each name) and the runs' metrics (``run_metrics``). Claims whose table is empty are absent."""
    ivlp = {name: t[t.variant == "ivlp"] if not t.empty else t for name, t in tables.items()}
    parts = []
    makers = {"block0": lambda t: [_c1(t)], "foreground_share": lambda t: [_c2(t)], "causal_ablation": _c3,
              "attention": lambda t: [_c4(t)], "contributions": lambda t: [_c4r(t)],
              "background_similarity": lambda t: [_c5(t)]}
    for name, make in makers.items():
        if not ivlp.get(name, pd.DataFrame()).empty:
            parts.extend(make(ivlp[name]))
    if not metrics.empty:
        parts.append(_c6(metrics))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=UNIT_COLUMNS)


# --------------------------------------------------------------------------- the table
def _row(claim: Claim, dataset: str, values: np.ndarray, paired: np.ndarray, unit: str,
         dataset_verdicts: tuple[str, ...] = ()) -> dict:
    low, high = interval(values)
    return {"claim": claim.id, "statement": claim.statement, "dataset": dataset, "effect": float(np.mean(values)),
            "low": low, "high": high, "n": len(values), "unit": unit, "p_value": paired_test(paired, claim),
            "verdict": verdict(low, high, claim, dataset_verdicts)}


def claims_table(samples: pd.DataFrame, datasets: list[str] | None = None) -> pd.DataFrame:
    """One row per claim × dataset, then the claim's Average row: effect (mean), 95% bootstrap
    interval, number of samples, one-sided paired Wilcoxon p-value and the verdict.

    Per-image claims resample (seed, image) pairs and test the seeds' means; the Average row
    resamples and tests the (dataset, seed) means, its effect the mean over datasets. Rows follow
    ``datasets`` (default: their order in ``samples``)."""
    order = {d: i for i, d in enumerate(datasets or dict.fromkeys(samples.dataset))}
    samples = samples.sort_values("dataset", key=lambda d: d.map(order), kind="stable")
    rows = []
    for claim_id, by_claim in samples.groupby("claim", sort=False):
        claim = CLAIMS[claim_id]
        per_image = by_claim.unit.nunique() > 1
        seed_means = by_claim.groupby(["dataset", "seed"], sort=False).value.mean().reset_index()
        verdicts = []
        for dataset, part in by_claim.groupby("dataset", sort=False):
            seeds = seed_means[seed_means.dataset == dataset].value.to_numpy()
            row = _row(claim, dataset, part.value.to_numpy(), seeds, "seed × image" if per_image else "seed")
            rows.append(row)
            verdicts.append(row["verdict"])
        average = _row(claim, AVERAGE, seed_means.value.to_numpy(), seed_means.value.to_numpy(),
                       "dataset × seed", tuple(verdicts))
        average["effect"] = float(seed_means.groupby("dataset").value.mean().mean())
        rows.append(average)
    return pd.DataFrame(rows, columns=["claim", "statement", "dataset", "effect", "low", "high", "n", "unit",
                                       "p_value", "verdict"])


def experiment_claims(experiment: Experiment) -> pd.DataFrame:
    """The claims table of an experiment, from its per-run tables and metrics."""
    names = ("block0", "foreground_share", "causal_ablation", "attention", "contributions", "background_similarity")
    return claims_table(claim_samples({n: load_table(experiment, n) for n in names}, run_metrics(experiment)),
                        list(experiment.datasets))
