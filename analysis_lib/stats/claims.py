"""The paper's claims as tests, as the claims chapter (notebooks/claims.ipynb) states them: one
effect per claim, dataset, seed (and image, where the statistic is per image), one inference
design and one verdict rule, written here once.

The API, small on purpose (a new claim is one ``Claim`` plus one effect function):

``Claim``            id, statement, what the effect measures, its ``side`` ("above"/"below") of
                     its ``margin``, the ``reason`` for both (fixed before results are seen), and
                     what the ``beside`` column holds (e.g. trained − CLIP next to trained − control).
``register(claim, effect, tables)``
                     adds a claim: ``effect(study: StudyTables) -> DataFrame`` of ``EFFECT_COLUMNS``
                     (claim, dataset, seed, image, value, beside; ``image`` = ``PER_RUN`` (−1) for a
                     statistic with one value per run), from the per-run tables named in ``tables``.
``dataset_row(effects, claim)``
                     per dataset, the seed is the unit: each seed's effect is its mean over the
                     image sample; Student t over seeds (df = seeds − 1), plus, for a per-image
                     statistic, the image-sampling variance of a cluster bootstrap that applies one
                     image resample to every seed (analytic below 10 images: never bootstrap fewer
                     than 10 units). Returns estimate, interval, one-sided p, verdict.
``average_row(rows, claim, datasets)``
                     the dataset is the unit: the mean of the dataset estimates, a t-interval over
                     datasets and the exact sign-flip permutation test (smallest p: 1/2^D).
``claims_table(effects, datasets, seeds)``
                     every row, Holm's correction across the claims' summary rows, the labels.
``margin_table()``   each claim's margin, side and reason: the table the book prints.

Labels: supported (interval wholly on the claim's side of its margin; for a summary row also
Holm-adjusted p < 0.05), contradicted (interval wholly on the other side), inconclusive (the
interval contains the margin), heterogeneous (summary row: one dataset supported, another
contradicted), too few samples (one seed, or one dataset).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ..study.experiment import Experiment
from .causal import ALL_BLOCKS, BELOW_DEPTH, MEAN_ABLATED
from .known_truth import specificity_effects

AVERAGE = "Average"
CONFIDENCE, ALPHA = 0.95, 0.05
N_RESAMPLES = 2000
MIN_BOOTSTRAP_UNITS = 10  # a percentile bootstrap over fewer units is little more than their range
PER_RUN = -1              # the image of an effect with one value per run (seed)
SUPPORTED, CONTRADICTED, INCONCLUSIVE, HETEROGENEOUS, TOO_FEW = (
    "supported", "contradicted", "inconclusive", "heterogeneous", "too few samples")
LABELS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, HETEROGENEOUS, TOO_FEW)
EFFECT_COLUMNS = ["claim", "dataset", "seed", "image", "value", "beside"]
TABLE_COLUMNS = ["claim", "statement", "dataset", "effect", "low", "high", "beside", "n", "unit", "p_value",
                 "p_holm", "verdict", "note"]
VERDICT_RULE = (
    "Each claim's effect has a margin and a side (above or below it), fixed in the library before any "
    "result was seen (the margin table). Per dataset the seed is the unit: each seed's effect is its mean "
    "over the same images, the interval is Student's t over seeds (seeds − 1 degrees of freedom), widened "
    "by the image-sampling variance (a cluster bootstrap that resamples the images once for all seeds) "
    "where the statistic is per image. For the average over datasets the dataset is the unit: the mean of "
    "the dataset effects, a t-interval over datasets, and an exact sign-flip permutation test over "
    "datasets, Holm-corrected across the claims. **Supported**: the 95% interval lies wholly on the "
    "claim's side of its margin (for the average, also Holm-adjusted p < 0.05). **Contradicted**: it lies "
    "wholly on the other side. **Inconclusive**: it contains the margin. **Heterogeneous** (average only): "
    "one dataset supports the claim and another contradicts it. **Too few samples**: one seed (or one "
    "dataset), so no interval.")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    effect: str         # what the effect measures, with its unit
    side: str           # "above" or "below": where the effect must lie for the claim to hold
    margin: float
    reason: str         # why this margin and side
    beside: str = ""    # what the "beside" column holds ("" for nothing)
    across_datasets: bool = True  # rows per dataset and an Average; False: one row, its own summary

    def holds(self, low: float, high: float) -> bool:
        return low > self.margin if self.side == "above" else high < self.margin

    def fails(self, low: float, high: float) -> bool:
        return high < self.margin if self.side == "above" else low > self.margin


@dataclass
class StudyTables:
    """What effect functions read: the per-run tables by name (``per_run.load_table``), the runs'
    metrics (``per_run.run_metrics``), the experiment's low-category-information dataset and its
    analysed variant (``analysis.variant_name``; None: every run of variant kind ivlp)."""

    tables: dict[str, pd.DataFrame]
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    low_information: str | None = None
    variant_name: str | None = None

    def table(self, name: str, variant: str | None = None) -> pd.DataFrame:
        """The rows of table ``name`` from the analysed variant, or those of variant kind
        ``variant`` where it is given (or where no analysed variant is named: kind ivlp)."""
        t = self.tables.get(name, pd.DataFrame())
        if t.empty:
            return t
        if variant is None and self.variant_name is not None and "variant_name" in t:
            return t[t.variant_name == self.variant_name]
        return t[t.variant == (variant or "ivlp")]

    def prompted_name(self, name: str) -> str | None:
        """The name of the prompted runs in table ``name``: the analysed variant, or (none named) the
        first variant of kind ivlp."""
        names = self.table(name).get("variant_name", pd.Series(dtype=str)).unique()
        return names[0] if len(names) else None


CLAIMS: dict[str, Claim] = {}
EFFECTS: dict[str, tuple[Callable[[StudyTables], pd.DataFrame], tuple[str, ...]]] = {}


def register(claim: Claim, effect: Callable[[StudyTables], pd.DataFrame], tables: tuple[str, ...] = ()) -> Claim:
    """Add a claim with the function that computes its effects and the per-run tables it reads."""
    if claim.side not in ("above", "below"):
        raise ValueError(f"claim {claim.id}: side must be 'above' or 'below', got {claim.side!r}")
    CLAIMS[claim.id], EFFECTS[claim.id] = claim, (effect, tuple(tables))
    return claim


def margin_table() -> pd.DataFrame:
    """Each claim's effect, side, margin and the reason for them (fixed before results are seen)."""
    return pd.DataFrame([{"claim": c.id, "statement": c.statement, "effect": c.effect,
                          "holds when the effect is": f"{c.side} {c.margin:g}", "reason": c.reason,
                          "beside it": c.beside or "—"} for c in CLAIMS.values()])


# --------------------------------------------------------------------------- inference
def t_interval(estimate: float, se: float, df: int) -> tuple[float, float]:
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
    return estimate - half, estimate + half


def t_p_value(estimate: float, se: float, df: int, claim: Claim) -> float:
    """One-sided p that the effect lies on the claim's side of its margin (t with ``df``)."""
    distance = estimate - claim.margin if claim.side == "above" else claim.margin - estimate
    if se == 0:
        return 0.0 if distance > 0 else 1.0
    return float(stats.t.sf(distance / se, df))


def cluster_bootstrap_variance(matrix: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0) -> float:
    """Image-sampling variance of the mean of ``matrix`` [seeds, images]: each resample draws the
    images once and applies the same draw to every seed (the images are shared, so they are
    resampled as clusters). Analytic (var over images of the seed-mean / images) below
    ``MIN_BOOTSTRAP_UNITS`` images."""
    per_image = matrix.mean(axis=0)
    n = matrix.shape[1]
    if n < 2:
        return 0.0
    if n < MIN_BOOTSTRAP_UNITS:
        return float(per_image.var(ddof=1) / n)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    return float(matrix[:, draws].mean(axis=(0, 2)).var(ddof=1))


def _label(claim: Claim, low: float, high: float) -> str:
    return SUPPORTED if claim.holds(low, high) else CONTRADICTED if claim.fails(low, high) else INCONCLUSIVE


def dataset_row(effects: pd.DataFrame, claim: Claim, expected_seeds: int | None = None) -> dict:
    """One dataset's row from its effects (seed, image, value[, beside]): the seed is the unit."""
    per_image = bool((effects.image != PER_RUN).any())
    matrix = effects.pivot_table(index="seed", columns="image", values="value")
    complete = matrix.dropna(axis=1)                       # images every seed has
    seed_means = complete.mean(axis=1).to_numpy()
    n_seeds, n_images = len(seed_means), complete.shape[1] if per_image else 0
    estimate = float(seed_means.mean()) if n_seeds else math.nan
    notes = []
    if expected_seeds and n_seeds < expected_seeds:
        notes.append(f"{n_seeds} of {expected_seeds} seeds")
    if per_image and complete.shape[1] < matrix.shape[1]:
        notes.append(f"{matrix.shape[1] - complete.shape[1]} images not in every seed left out")
    beside = float(effects.groupby("seed").beside.mean().mean()) if "beside" in effects else math.nan
    row = {"claim": claim.id, "statement": claim.statement, "effect": estimate, "beside": beside,
           "n": n_seeds, "unit": f"seeds × {n_images} images" if per_image else "seeds",
           "low": math.nan, "high": math.nan, "p_value": math.nan, "p_holm": math.nan,
           "verdict": TOO_FEW, "note": "; ".join(notes)}
    if n_seeds < 2:
        return row
    variance = seed_means.var(ddof=1) / n_seeds
    if per_image:
        variance += cluster_bootstrap_variance(complete.to_numpy())
    se, df = math.sqrt(variance), n_seeds - 1
    low, high = t_interval(estimate, se, df)
    return row | {"low": low, "high": high, "p_value": t_p_value(estimate, se, df, claim),
                  "verdict": _label(claim, low, high)}


def sign_flip_p(values: np.ndarray, claim: Claim) -> float:
    """Exact one-sided sign-flip permutation p of the mean's distance from the margin (all 2^D
    sign patterns; the smallest possible p is 1/2^D)."""
    diffs = np.asarray(values, dtype=float) - claim.margin
    result = stats.permutation_test((diffs,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                    alternative="greater" if claim.side == "above" else "less")
    return float(result.pvalue)


def average_row(rows: pd.DataFrame, claim: Claim, datasets: list[str] | None = None) -> dict:
    """The Average over datasets from the dataset rows (effect, verdict): the dataset is the unit."""
    estimates = rows.effect.dropna().to_numpy()
    D = len(estimates)
    expected = len(datasets) if datasets else D
    missing = sorted(set(datasets or []) - set(rows.dataset[rows.effect.notna()]))
    note = f"{D} of {expected} datasets (no effect for {', '.join(missing)})" if missing else ""
    row = {"claim": claim.id, "statement": claim.statement, "dataset": AVERAGE,
           "effect": float(estimates.mean()) if D else math.nan, "beside": float(rows.beside.mean()),
           "n": D, "unit": "datasets", "low": math.nan, "high": math.nan, "p_value": math.nan, "p_holm": math.nan,
           "verdict": TOO_FEW, "note": note}
    if D < 2:
        return row
    se = estimates.std(ddof=1) / math.sqrt(D)
    low, high = t_interval(row["effect"], se, D - 1)
    extra = f"smallest possible p with {D} datasets: 1/2^{D} = {0.5 ** D:.3g}"
    disagree = {SUPPORTED, CONTRADICTED} <= set(rows.verdict)
    return row | {"low": low, "high": high, "p_value": sign_flip_p(estimates, claim),
                  "note": "; ".join(filter(None, [note, extra])),
                  "verdict": HETEROGENEOUS if disagree else _label(claim, low, high)}


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (nan stays nan and does not count)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return adjusted


def claims_table(effects: pd.DataFrame, datasets: list[str] | None = None,
                 seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per claim × dataset, then the claim's Average over datasets (a claim not
    ``across_datasets``, such as C6e, has one row, its own summary); Holm across the summary rows.

    Rows follow ``datasets`` (default: their order in ``effects``); ``datasets`` and ``seeds`` are
    what the experiment planned, so that a missing run shows in the rows' n and note."""
    if "beside" not in effects:
        effects = effects.assign(beside=math.nan)
    order = {d: i for i, d in enumerate(datasets or dict.fromkeys(effects.dataset))}
    effects = effects.sort_values("dataset", key=lambda d: d.map(order), kind="stable")
    rows = []
    for claim_id, by_claim in effects.groupby("claim", sort=False):
        claim = CLAIMS[claim_id]
        dataset_rows = [dataset_row(part, claim, len(seeds) if seeds else None) | {"dataset": dataset}
                        for dataset, part in by_claim.groupby("dataset", sort=False)]
        rows.extend(dataset_rows)
        if claim.across_datasets:
            present = [d for d in (datasets or []) if d in order]
            rows.append(average_row(pd.DataFrame(dataset_rows), claim, present or None))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    summary = (table.dataset == AVERAGE) | ~table.claim.map(lambda c: CLAIMS[c].across_datasets).astype(bool)
    table.loc[summary, "p_holm"] = holm(table.loc[summary, "p_value"].to_numpy())
    weak = summary & (table.verdict == SUPPORTED) & ~(table.p_holm < ALPHA)
    table.loc[weak, "verdict"] = INCONCLUSIVE
    table.loc[weak, "note"] = table.loc[weak, "note"].map(
        lambda n: "; ".join(filter(None, [n, "interval on the claim's side, but Holm-adjusted p ≥ 0.05"])))
    return table


# --------------------------------------------------------------------------- effects
def _effects(claim: str, frame: pd.DataFrame, value: str = "value", beside: str | None = None,
             image: str | None = None) -> pd.DataFrame:
    """Rows of ``frame`` (dataset, seed[, image], value[, beside]) as the claim's effects."""
    out = frame.assign(claim=claim, image=frame[image] if image else PER_RUN,
                       value=frame[value], beside=frame[beside] if beside else math.nan)
    return out[EFFECT_COLUMNS].reset_index(drop=True)


RUN = ["dataset", "seed"]


def _against(wide: pd.DataFrame, claim: str, keys: list[str], clip: str | None = "CLIP") -> pd.DataFrame:
    """Trained − control as the effect and trained − CLIP beside it (trained alone without ``clip``),
    from a frame with one column per model (prompted, control[, CLIP])."""
    wide = wide.reset_index()
    beside = wide.prompted - wide[clip] if clip else wide.prompted
    return _effects(claim, wide.assign(value=wide.prompted - wide.control, beside=beside),
                    image="image" if "image" in keys else None, beside="beside")


def relative_attention_effect(study: StudyTables) -> pd.DataFrame:
    """C1: per image, the mean over blocks 1.. of the W/O − CLIP total-variation distance."""
    tv = study.table("relative_attention")
    tv = tv[tv.block >= 1].groupby([*RUN, "image", "model"]).tv.mean().unstack("model")
    return _against(tv, "C1", [*RUN, "image"], clip=None)


def enrichment_effect(study: StudyTables) -> pd.DataFrame:
    """C2: per image, the [CLS] foreground enrichment averaged over blocks 1.. and heads."""
    share = study.table("foreground_share")
    share = share[share.block >= 1].groupby([*RUN, "image", "model"]).enrichment.mean().unstack("model")
    return _against(share, "C2", [*RUN, "image"])


def _hm(study: StudyTables) -> pd.DataFrame:
    causal = study.table("causal_ablation")
    return causal.set_index([*RUN, "tower", "form", "ablation"]).hm.unstack("ablation") if not causal.empty else causal


def causal_effect(claim: str, tower: str, form: str) -> Callable[[StudyTables], pd.DataFrame]:
    """C3 (per tower and both; C3d below the prompt depth): HM with the rescaling removed − HM with
    the bias term removed, the total gain (as trained − both removed) beside it."""
    def effect(study: StudyTables) -> pd.DataFrame:
        hm = _hm(study)
        if hm.empty:
            return hm
        trained = hm.xs((tower, ALL_BLOCKS), level=("tower", "form"))["as trained"]   # one form only
        hm = hm.xs((tower, form), level=("tower", "form"))
        return _effects(claim, hm.assign(value=hm["rescaling removed"] - hm["bias term removed"],
                                         beside=trained - hm["both removed"]).reset_index(), beside="beside")
    return effect


def mean_ablation_effect(study: StudyTables) -> pd.DataFrame:
    """C3m: HM as trained − HM with the bias term replaced by its mean; removing it beside."""
    hm = _hm(study)
    if hm.empty:
        return hm
    hm = hm.xs(("both", ALL_BLOCKS), level=("tower", "form")).reset_index()
    return _effects("C3m", hm.assign(value=hm["as trained"] - hm[MEAN_ABLATED],
                                     beside=hm["as trained"] - hm["bias term removed"]), beside="beside")


def _prompt_minus_category(frame: pd.DataFrame, type_column: str, value: str) -> pd.DataFrame:
    """(prompt − category) per dataset, seed and model (one column per model)."""
    means = frame.groupby([*RUN, "model", type_column])[value].mean().unstack(type_column)
    return (means["prompt"] - means["category"]).unstack("model")


def eos_effect(study: StudyTables) -> pd.DataFrame:
    """C4: [EOS] attention on prompt − on category tokens (mean over blocks and heads)."""
    att = study.table("attention")
    eos = att[(att.tower == "text") & att.statistic.str.startswith("eos_to_")]
    eos = eos.assign(token_type=eos.statistic.str.removeprefix("eos_to_"))
    return _against(_prompt_minus_category(eos, "token_type", "value"), "C4", RUN)


def relevance_effect(study: StudyTables) -> pd.DataFrame:
    """C4r: the same by the shares of the alignment's relevance (text tokens)."""
    con = study.table("contributions")
    text = con[(con.tower == "text") & (con.method == "relevance")]
    total = text.groupby([*RUN, "model"]).contribution.transform("sum")
    shares = _prompt_minus_category(text.assign(share=text.contribution / total), "token_type", "share")
    return _against(shares.rename(columns={"zero-shot": "CLIP"}), "C4r", RUN)


def background_effect(study: StudyTables) -> pd.DataFrame:
    """C5: per image, centred key similarity of the vision prompts to background − to foreground
    patches (mean over blocks, heads, prompts)."""
    keys = study.table("background_keys")
    gap = keys.groupby([*RUN, "image", "model"]).centred_gap.mean().unstack("model")
    return _against(gap, "C5", [*RUN, "image"], clip=None)


def matched_bias_variant(metrics: pd.DataFrame) -> str | None:
    """The bias-tuning variant whose learned-parameter count is closest to IVLP's (None without either)."""
    if metrics.empty:
        return None
    bias, ivlp = metrics[metrics.variant == "bias"], metrics[metrics.variant == "ivlp"]
    if bias.empty or ivlp.empty:
        return None
    budget = ivlp.n_trainable.median()
    counts = bias.groupby("variant_name").n_trainable.median()
    return (counts - budget).abs().idxmin()


def _bias_minus_ivlp(metrics: pd.DataFrame) -> pd.DataFrame:
    name = matched_bias_variant(metrics)
    if name is None:
        return pd.DataFrame(columns=[*RUN, "value"])
    hm = metrics[(metrics.variant_name == name) | (metrics.variant == "ivlp")]
    hm = hm.assign(kind=np.where(hm.variant_name == name, "bias", "ivlp"))
    wide = hm.pivot_table(index=RUN, columns="kind", values="hm").reset_index()
    return wide.assign(value=wide.bias - wide.ivlp)


def bias_tuning_effect(study: StudyTables) -> pd.DataFrame:
    """C6: HM(bias setting closest to IVLP's budget) − HM(IVLP), per dataset and seed."""
    return _effects("C6", _bias_minus_ivlp(study.metrics))


def low_information_effect(study: StudyTables) -> pd.DataFrame:
    """C6e: per seed, C6's effect on the low-category-information dataset − its mean on the others."""
    diff, low = _bias_minus_ivlp(study.metrics), study.low_information
    if diff.empty or low is None or low not in set(diff.dataset) or diff.dataset.nunique() < 2:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    wide = diff.pivot_table(index="seed", columns="dataset", values="value")
    others = wide.drop(columns=low).mean(axis=1)
    return _effects("C6e", pd.DataFrame({"dataset": low_information_row(low), "seed": wide.index,
                                         "value": (wide[low] - others).to_numpy()}))


def known_truth_effect(study: StudyTables) -> pd.DataFrame:
    """C7 (the demo world only, where each dataset's shift is known): per dataset and seed, how much
    more IVLP's bias term points along −δ of its own dataset than of the others, trained − control;
    beside it, what removing the bias term costs the compensation S (``known_truth.specificity_effects``)."""
    table = study.tables.get("known_truth", pd.DataFrame())
    name = study.prompted_name("known_truth")
    effects = specificity_effects(table, name) if name else pd.DataFrame(columns=["dataset", "seed", "value"])
    return _effects("C7", effects, beside="beside")


def low_information_row(dataset: str) -> str:
    return f"{dataset} − others"


CONTROL = "the same variant at its seed's initial parameters, untrained"
for _claim, _effect, _tables in (
    (Claim("C1", "In later blocks the relative attention between original tokens changes",
           "mean total-variation distance of W/O rows to CLIP rows, blocks 1.. (vision), trained − control",
           "above", 0.0, "the claim is a change, however small, beyond what inserting untrained prompts does",
           "trained − CLIP"), relative_attention_effect, ("relative_attention",)),
    (Claim("C2", "[CLS] focuses more on the foreground with prompts",
           "[CLS] foreground enrichment over patches (share / foreground fraction), prompted − CLIP, "
           "trained − control, blocks 1..", "above", 0.0,
           "more focus is any increase; the control removes what untrained prompts do", "trained − CLIP"),
     enrichment_effect, ("foreground_share",)),
    (Claim("C3", "The bias term (way b) matters more than the rescaling (way a), both towers",
           "HM with rescaling removed − HM with bias term removed, all blocks (points)", "above", 0.0,
           "'dominates' is any positive difference", "total gain (as trained − both removed)"),
     causal_effect("C3", "both", ALL_BLOCKS), ("causal_ablation",)),
    (Claim("C3v", "… in the vision tower alone", "the same, ablating the vision tower only (points)", "above", 0.0,
           "as C3", "total gain of the vision tower"), causal_effect("C3v", "vision", ALL_BLOCKS),
     ("causal_ablation",)),
    (Claim("C3t", "… in the text tower alone", "the same, ablating the text tower only (points)", "above", 0.0,
           "as C3", "total gain of the text tower"), causal_effect("C3t", "text", ALL_BLOCKS), ("causal_ablation",)),
    (Claim("C3d", "… and so in the blocks below the prompt depth alone",
           "C3 with the ablations below the prompt depth only (points)", "above", 0.0, "as C3",
           "total gain below the prompt depth"), causal_effect("C3d", "both", BELOW_DEPTH), ("causal_ablation",)),
    (Claim("C3m", "The bias term acts as a constant (a dataset bias)",
           "HM as trained − HM with the bias term replaced by its mean over the test images (points)", "below", 1.0,
           "a constant term loses less than 1 HM point when replaced by its mean",
           "HM as trained − HM with the bias term removed"), mean_ablation_effect, ("causal_ablation",)),
    (Claim("C4", "Text prompts shift [EOS] attention from the category tokens to the prompts",
           "[EOS] attention (prompt − category), trained − control (mean over blocks, heads)", "above", 0.0,
           "a shift is any increase beyond what the untrained prompts have", "trained − CLIP"),
     eos_effect, ("attention",)),
    (Claim("C4r", "… and the alignment's relevance too",
           "relevance share (prompt − category), trained − control", "above", 0.0, "as C4", "trained − CLIP"),
     relevance_effect, ("contributions",)),
    (Claim("C5", "Vision prompts resemble the background",
           "centred cosine of prompt keys to background − to foreground patch keys, trained − control",
           "above", 0.0, "resembling the background is any preference for it beyond the untrained prompts'",
           "trained alone (CLIP has no prompts)"), background_effect, ("background_keys",)),
    (Claim("C6", "Bias tuning matches or beats prompt tuning at a similar budget",
           "HM of the bias setting closest to IVLP's budget − HM of IVLP (points)", "above", -1.0,
           "non-inferiority: a true tie must be able to pass, so the margin is one HM point below 0, "
           "fixed before any result"),
     bias_tuning_effect, ()),
    (Claim("C6e", "… by most on the dataset with little category information",
           "C6's effect on that dataset − its mean over the others (points)", "above", 0.0,
           "'by a large margin on EuroSAT' is at least: more than on the other datasets",
           across_datasets=False), low_information_effect, ()),
):
    register(_claim, _effect, _tables)
register(Claim("C7", "The prompts' bias term undoes the dataset's known shift (demo world only)",
               "cosine of the bias term's write β with −δ of its own dataset − mean cosine with the other "
               "datasets' −δ (both centred across datasets; mean over blocks, [CLS] and patches), trained − control",
               "above", 0.0,
               "a bias term aimed at its own dataset's shift is any excess over the other datasets' shifts; "
               "a generic bias term (the same for every dataset) has none",
               "S as trained − S with the bias term removed (patches, mean over blocks)"),
         known_truth_effect, ("known_truth",))


def claim_effects(study: StudyTables) -> pd.DataFrame:
    """Every registered claim's effects (claims whose tables are empty are absent)."""
    parts = []
    for claim_id, (effect, names) in EFFECTS.items():
        if all(not study.table(n).empty for n in names):
            parts.append(effect(study))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EFFECT_COLUMNS)


def experiment_claims(experiment: Experiment) -> pd.DataFrame:
    """The claims table of an experiment, from its per-run tables and metrics."""
    from .per_run import load_table, run_metrics
    names = {n for _, tables in EFFECTS.values() for n in tables}
    study = StudyTables({n: load_table(experiment, n) for n in names}, run_metrics(experiment),
                        experiment.low_information, experiment.analysis.variant_name if experiment.analysis else None)
    return claims_table(claim_effects(study), list(experiment.datasets), list(experiment.seeds))

