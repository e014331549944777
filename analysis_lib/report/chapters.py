"""One function per chapter of the book: the experiment and its claims table in, the chapter's
``Page`` out (answer box, tables and figures with captions, tables by value, glued numbers); and
``open_page``, the one call a chapter's notebook makes. A notebook holds its parameters, that
call, one ``page.show(name)`` per table or figure, and prose.

Every chapter reads the per-run tables of the analysed variant (``analysis.variant_name`` of the
experiment file), never a variant named in the code; spreads are standard deviations over seeds
(``numbers.over_seeds``). The chapters' questions are their titles in the notebooks.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import HTML, Markdown, display
from myst_nb import glue

from . import charts, markup
from .chapter import AVERAGE, Page, analysed, analysed_variant, answer_box, claim_answers, term
from .numbers import informative, mean_std, over_seeds, significant, signed, with_spread
from ..stats import analyses, per_run
from ..files import write_text_atomic
from ..study.experiment import Experiment, load_experiment

CLAIMS_TABLE = "claims.csv"  # written by the analyses command into the tables folder
H = 180  # px: a panel's height


def _empty(what: str) -> Page:
    return Page(answer_box([f"No {what} in this experiment: no finished runs of the analysed variant "
                            "have the tables this chapter reads."]))


def _open(experiment: Experiment, claims: pd.DataFrame, table: str, claim_ids: tuple[str, ...]
          ) -> tuple[Page, pd.DataFrame]:
    """A claim's chapter: its answer box from the claims table, and the analysed variant's per-run
    table ``table``."""
    return (Page(answer_box(claim_answers(claims, claim_ids))),
            analysed(experiment, per_run.load_table(experiment, table)))


def _per_block(frame: pd.DataFrame, y: str, title: str, colour_field: str, colours: list[str],
               domain: list[float] | None = None) -> alt.LayerChart:
    """``y`` (from ``over_seeds``) per block, a line per ``colour_field`` value, bars ± its std over seeds."""
    base = alt.Chart(frame.assign(low=frame[y] - frame[f"{y}_std"].fillna(0), high=frame[y] + frame[f"{y}_std"].fillna(0)))
    scale = alt.Scale(domain=domain) if domain else alt.Scale(zero=False)
    return (base.mark_line(point=True).encode(
        x=alt.X("block:O", title="block"), y=alt.Y(f"{y}:Q", title=title, scale=scale),
        color=charts.colour(colour_field, colours, colour_field),
        tooltip=[colour_field, "block", alt.Tooltip(f"{y}:Q", format=".3f"), alt.Tooltip(f"{y}_std:Q", format=".2g")])
        + base.mark_errorbar().encode(x="block:O", y=alt.Y("low:Q", title=title, scale=scale), y2="high:Q",
                                      color=charts.colour(colour_field, colours, legend=False))
    ).properties(width=charts.PHONE_WIDTH - 40, height=H)


def _stacked(frame: pd.DataFrame, y: str, title: str, colour: alt.Color, row: str) -> alt.FacetChart:
    """``y`` per block, a line per colour, one panel per ``row`` value, panels stacked (a phone's width)."""
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("block:O", title="block"), y=alt.Y(f"{y}:Q", title=title), color=colour,
        tooltip=[c for c in frame.columns if c != y] + [alt.Tooltip(f"{y}:Q", format=".3g")]).properties(
        width=charts.PHONE_WIDTH - 40, height=H).facet(row=alt.Row(f"{row}:N", title=None))


def _strip(frame: pd.DataFrame, x: str, x_title: str, y: str, colour_field: str, colours: list[str],
           tooltip: list[str], sort: list[str] | None = None) -> alt.Chart:
    """One dot per seed (and per row of ``frame``), categories down the side."""
    return alt.Chart(frame).mark_circle(size=60, opacity=0.8).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y(f"{y}:N", sort=sort, title=None), color=charts.colour(colour_field, colours),
        tooltip=tooltip).properties(width=charts.PHONE_WIDTH - 140, height=alt.Step(22))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _data_text(per_dataset: pd.DataFrame) -> str:
    """What a claim's per-dataset rows rest on, e.g. "4 datasets, each 3 seeds × 64–66 images": the
    numbers that differ between datasets as their range."""
    texts = [f"{n} {unit}".split(" ") for n, unit in zip(per_dataset.n, per_dataset.unit)]
    if len({len(t) for t in texts}) == 1:
        each = " ".join(words[0] if len(set(words)) == 1 else
                        f"{min(map(int, words))}–{max(map(int, words))}" if all(w.isdigit() for w in words) else
                        "/".join(dict.fromkeys(words)) for words in zip(*texts))
    else:
        each = ", ".join(dict.fromkeys(" ".join(t) for t in texts))
    return f"{_count(len(per_dataset), 'dataset')}, {'each ' if len(per_dataset) > 1 else ''}{each}"


# --------------------------------------------------------------------------- the datasets
def datasets(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """What each dataset holds: classes (base / novel), images per split, template, masks."""
    from ..data import read_dataset
    splits = [read_dataset(name, experiment.data_root) for name in experiment.datasets]
    summary = analyses.dataset_summary(splits)
    n_classes = summary.classes
    page = Page(answer_box([
        f"<strong>{len(summary)} datasets</strong>, {significant(n_classes.min(), 2)}"
        f"{'' if n_classes.nunique() == 1 else f' to {n_classes.max()}'} classes each; the first half of each "
        f"dataset's classes are the {term('base')} classes a model is trained on, the rest the {term('novel')} "
        f"classes it never sees. {int(summary['test images'].sum())} test images in all; "
        f"{int(summary.masks.sum())} of the datasets have foreground masks (the chapters on [CLS] and the "
        "background use those only)."]))
    page.tables["datasets"] = summary
    page.numbers["n_datasets"] = str(len(summary))
    page.table("summary", summary, "Classes and images per dataset and split; masks: whether foreground "
               "masks come with the images.")
    page.figure("galleries", HTML("".join(f"<h3>{html.escape(s.name)}</h3>"
                                          + charts.image_grid(analyses.dataset_gallery(s)).data for s in splits)),
                "One test image per class, for up to twelve classes of each dataset, captioned with the class "
                "name and its group (base or novel).")
    return page


# --------------------------------------------------------------------------- decomposition
LAMBDA, TOKEN_PART, PROMPT_PART = "lambda", "token_part_norm", "prompt_part_norm"
LAMBDA_TITLE = "λ (share kept by original tokens)"
PART_WORDS = {TOKEN_PART: "token part (λ × attention over the original tokens)",
              PROMPT_PART: "prompt part ((1 − λ) × bias term)"}


def decomposition(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """λ and the two parts' norms per block and tower; the block-0 identity (C1)."""
    table = analysed(experiment, per_run.load_table(experiment, "decomposition"))
    if table.empty:
        return _empty("decomposition tables")
    lam = table[table.statistic == LAMBDA]
    per_block = over_seeds(lam, ["tower", "block"], ["value"]).rename(columns={"value": "lambda",
                                                                              "value_std": "lambda_std"})
    last = per_block.groupby("tower").tail(1).set_index("tower")
    page = Page("")
    page.tables["decomposition"] = table
    page.tables["lambda_per_block"] = per_block
    for tower, row in last.iterrows():
        page.numbers[f"lambda_last_{tower}"] = mean_std(row["lambda"], row.lambda_std)
    lines = claim_answers(claims, ("C1",))
    lines.append(f"In the last block, the original tokens keep a share {term('λ', 'λ (lambda)')} of "
                 + " and ".join(f"{mean_std(r['lambda'], r.lambda_std)} ({t} tower)" for t, r in last.iterrows())
                 + " of each query's attention (mean ± std over seeds); the prompts take the rest.")
    page.answer = answer_box(lines)
    chart = alt.layer(_per_block(per_block, "lambda", LAMBDA_TITLE, "tower", ["vision", "text"], [0, 1]),
                      charts.reference_rule(1.0, "no prompts: λ = 1", "y"))
    page.figure("lambda", chart, "λ per block, averaged over the analysed runs' datasets, heads and original-token "
                "queries; bars: ± std over seeds.")
    block0 = analysed(experiment, per_run.load_table(experiment, "block0"))
    if not block0.empty:
        worst = block0.groupby(["dataset", "tower"], as_index=False).deviation.max()
        page.tables["block0"] = worst
        page.table("block0", worst.assign(deviation=worst.deviation.map(significant)).rename(
            columns={"deviation": "largest |A − λ·A_CLIP| in block 0"}),
            "Block 0: the largest deviation of the prompted attention over the original tokens from λ times "
            "CLIP's, over seeds and test images (about 10⁻⁶ is floating-point rounding).")
    relative = analysed(experiment, per_run.load_table(experiment, "relative_attention"))
    if not relative.empty:
        tv = over_seeds(relative, ["model", "block"], ["tv"])
        page.tables["relative_attention"] = tv
        page.figure("relative", _per_block(tv, "tv", "TV distance to CLIP", "model", list(dict.fromkeys(tv.model))),
                    "Total-variation distance of each original query's W/O attention row to CLIP's row for the same "
                    "query and image, per block: the trained model against its control (the same prompts, "
                    "untrained); mean over datasets and images, bars: ± std over seeds. Block 0 is zero by the "
                    "identity above.")
    norms = table[table.statistic != LAMBDA].groupby(["tower", "block", "statistic"], as_index=False).value.mean()
    norms = norms.assign(part=norms.statistic.map(PART_WORDS))
    page.tables["part_norms"] = norms
    page.figure("norms", _stacked(norms.drop(columns="statistic"), "value", "mean L2 norm", alt.Color(
        "part:N", title=None, legend=alt.Legend(orient="top", direction="vertical"),
        scale=alt.Scale(range=[charts.COLOURS["W/O"], charts.COLOURS["W"]])), "tower"),
        "Norms of the two parts of each attention output, per block (mean over datasets, seeds and heads).")
    return page


# --------------------------------------------------------------------------- the causal test
CAUSAL_CLAIMS = ("C3", "C3v", "C3t", "C3d", "C3m")


def causal_ablation(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """Accuracy with the bias term, the rescaling or both removed (C3 and its readings)."""
    page, causal = _open(experiment, claims, "causal_ablation", CAUSAL_CLAIMS)
    if causal.empty:
        return page
    keys = [c for c in ("form", "ablation", "tower") if c in causal.columns]
    summary = over_seeds(causal, keys, ["base", "novel", "hm"])
    page.tables["causal_ablation"] = causal
    page.tables["causal_summary"] = summary
    page.table("summary", with_spread(summary, ["base", "novel", "hm"]).rename(columns={"hm": "HM"}),
               "Accuracy (%) on the base and novel test classes and their harmonic mean, averaged over datasets; "
               "mean ± std over seeds.")
    if "tower" in causal.columns:
        from ..stats.causal import causal_decomposition
        ways = ["total gain", "way (a) alone", "way (b) alone", "interaction"]
        parts = over_seeds(causal_decomposition(causal), ["tower"], ways)
        page.tables["causal_parts"] = parts
        page.table("parts", with_spread(parts, ways, sign=True),
                   "The gain of the trained prompts over both ways removed (HM points, all blocks), split into what "
                   "the rescaling (way a) and the bias term (way b) keep alone and their interaction, per tower "
                   "ablated; mean ± std over seeds.")
        causal = causal[causal.tower == "both"]
    as_trained = causal[causal.ablation == "as trained"].hm.mean()
    ablations = list(dict.fromkeys(causal.ablation))
    chart = alt.layer(_strip(causal, "hm", "harmonic mean (%)", "ablation", "form", list(dict.fromkeys(causal.form)),
                             ["dataset", "seed", "ablation", "form", "base", "novel", "hm"], ablations),
                      charts.mean_rule(causal, "hm", "as trained", alt.datum.ablation == "as trained"))
    page.figure("hm", charts.dataset_picker(chart, list(experiment.datasets)),
                "HM per ablation on one dataset (pick it above), in both forms; one dot per seed; dashed: as "
                "trained, mean over the dataset's seeds.")
    page.numbers["hm_as_trained"] = significant(as_trained)
    return page


# --------------------------------------------------------------------------- token contributions
def token_contributions(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """Relevance (and rollout) per token type, on the images prompting fixes (C4r)."""
    page, contributions = _open(experiment, claims, "contributions", ("C4r",))
    page.tables["contributions"] = contributions  # empty where prompting fixed no image
    if contributions.empty:
        page.numbers["n_explained"] = "0"
        return page
    explained = int(contributions.groupby(["dataset", "seed"]).n_explained.first().sum())
    page.numbers["n_explained"] = str(explained)
    for tower, title in (("text", "relevance share"), ("vision", "summed contribution")):
        part = contributions[contributions.tower == tower]
        if part.empty:
            continue
        mean = part.groupby(["method", "model", "token_type"], as_index=False).contribution.mean()
        page.tables[f"contributions_{tower}"] = mean
        page.figure(tower, alt.Chart(mean).mark_bar().encode(
            y=alt.Y("token_type:N", title=None), x=alt.X("contribution:Q", title=title),
            color=charts.colour("model", [analyses.CLIP, analyses.PROMPTED], "model"), yOffset="model:N",
            tooltip=["method", "model", "token_type", alt.Tooltip("contribution:Q", format=".3g")]).properties(
            width=charts.PHONE_WIDTH - 100, height=alt.Step(10)).facet(row=alt.Row("method:N", title=None)),
            f"{'Language' if tower == 'text' else 'Image'} branch: contribution per token type, averaged over "
            f"datasets, seeds and the {explained} explained images.")
    return page


# --------------------------------------------------------------------------- [CLS] and the foreground
def cls_foreground(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """The [CLS] query's foreground enrichment per model and block: CLIP, the trained prompts and
    their control (C2)."""
    page, share = _open(experiment, claims, "foreground_share", ("C2",))
    if share.empty:
        return page
    share = share.replace([np.inf, -np.inf], np.nan)
    masked = [d for d in experiment.datasets if d in set(share.dataset)]
    page.numbers["masked_datasets"] = ", ".join(masked)
    models = list(dict.fromkeys(share.model))
    summary = over_seeds(share, ["model"], ["share", "enrichment", "share_of_row"])
    page.tables["cls_foreground_summary"] = summary
    page.table("summary", with_spread(summary, ["share", "enrichment", "share_of_row"]).rename(
        columns={"share": "share of the patches", "share_of_row": "share of the whole row"}),
        "The [CLS] query's attention on foreground patches: its share of the attention on patches, that share "
        "over the image's foreground fraction (the enrichment; 1: no preference) and its share of the whole "
        f"row, prompts included; over {', '.join(masked)}, blocks, heads and images, mean ± std over seeds.")
    per_block = over_seeds(share, ["model", "block"], ["enrichment"])
    page.tables["cls_foreground"] = per_block
    page.figure("per_block", alt.layer(
        _per_block(per_block, "enrichment", "[CLS] foreground enrichment", "model", models),
        charts.reference_rule(1.0, "no preference", "y")),
        f"Foreground enrichment of the [CLS] query's attention per block, over {', '.join(masked)}: CLIP, the "
        "trained prompts and their control (mean over datasets, heads and images; bars: ± std over seeds).")
    return page


# --------------------------------------------------------------------------- [EOS] attention
def eos_attention(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """The text [EOS] query's attention per token type, CLIP against the prompted model (C4)."""
    attention = per_run.load_table(experiment, "attention")
    table = analyses.eos_attention_table(attention) if not attention.empty else attention
    page = Page(answer_box(claim_answers(claims, ("C4",))))
    eos = analysed(experiment, table)
    if eos.empty:
        return page
    page.tables["eos_attention"] = table
    summary = over_seeds(eos, ["model", "token_type"], ["attention"])
    page.tables["eos_summary"] = summary
    wide = with_spread(summary, ["attention"]).pivot(index="token_type", columns="model", values="attention")
    page.table("summary", wide.reset_index().rename(columns={"token_type": "token type"}),
               "Share of the [EOS] query's attention on each token type, averaged over datasets, blocks and heads; "
               "mean ± std over seeds.")
    per_block = eos.groupby(["model", "token_type", "block"], as_index=False).attention.mean()
    page.figure("per_block", _stacked(per_block, "attention", "[EOS] attention share", alt.Color(
        "token_type:N", title="token type", legend=alt.Legend(orient="top", columns=3)), "model"),
        "[EOS] attention per token type and block, CLIP against the prompted model (mean over datasets, seeds, "
        "heads).")
    return page


# --------------------------------------------------------------------------- distance and entropy
def distance_entropy(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """Attention distance and entropy per head for the three readings (the paper's figure 5)."""
    attention = per_run.load_table(experiment, "attention")
    if attention.empty:
        return _empty("attention tables")
    every_variant = analyses.reading_table(attention)
    table = analysed(experiment, every_variant)
    if table.empty:
        return _empty("attention tables")
    page = Page("")
    page.tables["distance_entropy"] = every_variant
    per_seed = table.pivot_table(index=["dataset", "seed", "block", "head"], columns="reading", values="distance")
    gap = (per_seed["W/O"] - per_seed["W"]).groupby(level="seed").mean()
    page.numbers["prompt_distance_gap"] = mean_std(gap.mean(), gap.std(), sign=True)
    summary = over_seeds(table, ["reading"], ["distance", "entropy"])
    page.tables["distance_entropy_summary"] = summary
    page.answer = answer_box([
        "The paper states no claim of its own here. What the numbers say: removing the prompt keys (W/O against "
        f"{term('W')}) changes the image tower's mean attention distance by "
        f"<strong>{page.numbers['prompt_distance_gap']} px</strong> (mean ± std over seeds, over datasets, blocks "
        "and heads): the prompts' share of the attention, which counts at distance 0."])
    page.table("summary", with_spread(summary, ["distance", "entropy"]).rename(
        columns={"distance": "distance (px)", "entropy": "entropy (nats)"}),
        "Mean attention distance and entropy of the patch queries per reading; mean ± std over seeds.")
    mean = table.groupby(["reading", "tower", "block", "head"], as_index=False)[["distance", "entropy"]].mean()
    page.figure("scatter", charts.distance_entropy_scatter(mean),
                "One dot per block and head: mean attention distance against entropy, averaged over datasets and "
                "seeds. Hover for the block and head; click a reading to highlight it.")
    return page


# --------------------------------------------------------------------------- prompts as background
def prompts_as_background(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """Similarity of the vision prompts' keys and values to foreground and background patches (C5)."""
    page, background = _open(experiment, claims, "background_similarity", ("C5",))
    if background.empty:
        return page
    page.tables["prompts_as_background"] = background
    summary = over_seeds(background, ["dataset", "feature"], ["foreground", "background"])
    page.tables["background_summary"] = summary
    page.table("summary", with_spread(summary, ["foreground", "background"]),
               "Cosine similarity of the prompts' keys (k) and values (v) to the foreground and to the background "
               "patches'; mean over blocks, heads and images, ± std over seeds.")
    per_block = background.melt(id_vars=["dataset", "seed", "block", "head", "feature"],
                                value_vars=["foreground", "background"], var_name="patches", value_name="similarity")
    per_block = per_block.groupby(["feature", "patches", "block"], as_index=False).similarity.mean()
    page.figure("per_block", _stacked(per_block, "similarity", "cosine similarity", charts.colour(
        "patches", ["foreground", "background"], "patches"), "feature"),
        "Similarity of the prompts to foreground and background patches per block (mean over datasets, seeds, "
        "heads).")
    keys = analysed(experiment, per_run.load_table(experiment, "background_keys"))
    if not keys.empty:
        gap = over_seeds(keys, ["dataset", "model"], ["centred_gap", "raw_gap"])
        page.tables["background_keys"] = gap
        page.table("keys", with_spread(gap, ["centred_gap", "raw_gap"], sign=True).rename(
            columns={"centred_gap": "centred gap", "raw_gap": "raw cosine gap"}),
            "The claim's measure: how much closer the prompts' keys are to the background patches' keys than to "
            "the foreground's, centred (each key minus the image's mean key) and as raw cosines, for the trained "
            "prompts and their control; mean over blocks, heads and images, ± std over seeds.")
    return page


# --------------------------------------------------------------------------- bias tuning
def bias_tuning(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """Base, novel and HM of every variant with its learned-parameter count (Table 1, C6)."""
    from ..study.reference import reference_table
    results = pd.read_csv(f"{experiment.output_root}/results.csv")
    metrics = per_run.run_metrics(experiment)
    page = Page("")
    page.tables["bias_tuning"] = results
    average = results[results.dataset == AVERAGE].set_index("variant_name")
    kinds = {name: spec["variant"] for name, spec in experiment.variants.items()}
    bias = [n for n in average.index if kinds.get(n) == "bias"]
    lines = claim_answers(claims, ("C6", "C6e"))
    analysed_name = analysed_variant(experiment)
    if bias and analysed_name in average.index:
        best = average.loc[bias].hm.idxmax()
        page.numbers["best_bias"] = best
        page.numbers["best_bias_hm"] = mean_std(average.loc[best, "hm"], average.loc[best, "hm_std"])
        page.numbers["analysed_hm"] = mean_std(average.loc[analysed_name, "hm"], average.loc[analysed_name, "hm_std"])
        lines.append(f"Averaged over the datasets the best bias-tuning setting, <strong>{html.escape(best)}</strong>, "
                     f"reaches an {term('HM')} of {page.numbers['best_bias_hm']} against "
                     f"{page.numbers['analysed_hm']} for {html.escape(analysed_name)} (mean ± std over seeds).")
    below = _below_zero_shot(results, kinds)
    if below:
        lines.append("Below zero-shot CLIP's HM: " + "; ".join(below) + ".")
    page.answer = answer_box(lines)
    table = results[["dataset", "variant_name", "n_trainable", "n_seeds"]].copy()
    for name, mean, std in (("base", "base_mean", "base_std"), ("novel", "novel_mean", "novel_std"),
                            ("HM", "hm", "hm_std")):
        table[name] = [mean_std(m, s) for m, s in zip(results[mean], results[std])]
    page.table("table1", table.rename(columns={"variant_name": "variant", "n_trainable": "learned parameters",
                                               "n_seeds": "seeds"}),
               "Accuracy (%) on the base and novel test classes and their harmonic mean per dataset and variant; "
               "mean ± std over seeds.")
    if not metrics.empty:
        chart = _strip(metrics, "hm", "harmonic mean (%)", "variant_name", "variant",
                       list(dict.fromkeys(metrics.variant)), ["dataset", "variant_name", "seed", "base", "novel", "hm",
                                                              "n_trainable"], list(experiment.variants))
        if (metrics.variant == "zeroshot").any():
            chart = alt.layer(chart, charts.mean_rule(metrics, "hm", "zero-shot", alt.datum.variant == "zeroshot"))
        page.figure("hm", charts.dataset_picker(chart, list(experiment.datasets)),
                    "HM of every run on one dataset (pick it above), one dot per seed; dashed: zero-shot CLIP.")
    published = reference_table([d for d in experiment.datasets])
    if not published.empty:
        page.table("published", published, "Published base / novel / HM (%) for ViT-B/16 (MaPLe and PromptSRC "
                   "papers), beside ours.")
    return page


def _below_zero_shot(results: pd.DataFrame, kinds: dict[str, str]) -> list[str]:
    """"<variant> on <dataset> (HM x vs y)" for every trained variant whose mean HM on a dataset is
    below zero-shot's: a collapse a reader must not miss."""
    per_dataset = results[results.dataset != AVERAGE]
    zero = per_dataset[per_dataset.variant_name.map(kinds) == "zeroshot"].set_index("dataset").hm
    out = []
    for row in per_dataset.itertuples():
        if kinds.get(row.variant_name) != "zeroshot" and row.dataset in zero.index and row.hm < zero[row.dataset]:
            out.append(f"{html.escape(row.variant_name)} on {html.escape(row.dataset)} "
                       f"({significant(row.hm)} vs {significant(zero[row.dataset])})")
    return out


# --------------------------------------------------------------------------- results
def results(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """Per dataset: the best variant by HM, zero-shot's HM and the gain; the published numbers."""
    from ..study.reference import PER_DATASET
    table = pd.read_csv(f"{experiment.output_root}/results.csv")
    kinds = {name: spec["variant"] for name, spec in experiment.variants.items()}
    rows = []
    for dataset, part in table.groupby("dataset", sort=False):
        best = part.loc[part.hm.idxmax()]
        zero = part[part.variant_name.map(kinds) == "zeroshot"]
        row = {"dataset": dataset, "best variant": best.variant_name, "its HM": mean_std(best.hm, best.hm_std),
               "zero-shot HM": significant(zero.hm.iloc[0]) if len(zero) else "—",
               "gain (points)": signed(best.hm - zero.hm.iloc[0]) if len(zero) else "—"}
        if dataset in PER_DATASET:
            row["published MaPLe HM"] = significant(PER_DATASET[dataset]["MaPLe"][2])
        rows.append(row)
    summary = pd.DataFrame(rows)
    page = Page("")
    page.tables["results_summary"] = summary
    average = summary[summary.dataset == AVERAGE]
    lines = []
    if len(average):
        a = average.iloc[0]
        lines.append(f"Averaged over the datasets, <strong>{html.escape(a['best variant'])}</strong> has the highest "
                     f"{term('HM')}: {a['its HM']} (mean ± std over seeds), {a['gain (points)']} points over "
                     f"zero-shot CLIP's {a['zero-shot HM']}.")
    wins = summary[summary.dataset != AVERAGE]["best variant"].value_counts()
    lines.append("Best per dataset: " + ", ".join(f"{html.escape(v)} on {n}" for v, n in wins.items()) + " dataset"
                 + ("s" if wins.sum() > 1 else "") + ". Every number per run and variant is in the bias-tuning chapter.")
    page.answer = answer_box(lines)
    page.table("summary", summary, "The best variant by HM per dataset against zero-shot CLIP; HM in %, mean ± std "
               "over seeds.")
    return page


# --------------------------------------------------------------------------- the known-truth test
def known_truth(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """Does the bias term point along the shift the demo world put into each dataset, and is that
    where the accuracy comes from (C7)? Only the demo world knows its datasets' shift."""
    from ..model.backbone import load_backbone
    from ..stats import claims as claim_stats, known_truth as kt
    from ..data import get_spec
    from . import known_truth as report
    table = per_run.load_table(experiment, "known_truth")
    lines = claim_answers(claims, ("C7",))
    if table.empty:
        return Page(answer_box(lines + ["This experiment has no paired renders (only the demo world knows its "
                                         "datasets' shift): there is no known-truth test."]))
    page = Page("")
    metrics = per_run.run_metrics(experiment)
    bias_variant = claim_stats.matched_bias_variant(metrics)
    prompted = analysed_variant(experiment)
    page.tables["known_truth"] = table[table.dim < 0]
    page.figure("pairs", report.paired_gallery(), "Pairs of each demo dataset: plain (pretraining-style) left, "
                "shifted (the dataset's style) right.")
    kappa = table[table.quantity == "kappa"].pivot_table(index=["dataset", "group"], columns="block", values="value",
                                                          sort=False)
    page.table("kappa", kappa.round(3).reset_index(), "Constancy κ of the known shift per block and token group "
               "(zero-shot is deterministic: the same in every seed).")
    writes = {f"{prompted} bias term": "bias term",
              f"{prompted} bias term, control (untrained prompts)": "bias term" + kt.CONTROL,
              f"{prompted} rescaling (the competitor)": "rescaling", f"{prompted} rescaling, control": "rescaling" + kt.CONTROL}
    matrices = {label: kt.specificity(table, prompted, write) for label, write in writes.items()}
    page.figure("specificity", report.specificity_heatmap(matrices[f"{prompted} bias term"]),
                "The specificity matrix M per seed: the cosine of each dataset's bias term β (rows) with each "
                "dataset's −shift (columns), both centred across the datasets.")
    summaries = {label: kt.specificity_summary(m) for label, m in matrices.items()}
    if bias_variant:
        summaries[f"{bias_variant} learned vectors (the reference)"] = kt.specificity_summary(
            kt.specificity(table, bias_variant, "learned bias"))
    page.table("specificity_summary", pd.concat(summaries, names=["write"]).round(3).reset_index(),
               "Per write and seed: M's mean diagonal and off-diagonal cosine and the permutation p.")
    compensation = kt.compensation_table(table)
    page.figure("compensation", report.compensation_chart(report.compensation_series(compensation, prompted, bias_variant),
                                                          list(experiment.datasets)),
                f"Compensation S per block (all patches), {prompted} as trained and with each removal, bias tuning as "
                "trained; one dataset at a time, a point per seed, the line through their mean.")
    hm = report.hm_comparison(kt.best_oracle(table), metrics, prompted, bias_variant)
    page.figure("oracle", report.hm_chart(hm), f"HM of zero-shot, the oracle (−δ at its best block), {prompted} and "
                "bias tuning per dataset; points: seeds.")
    page.table("numbers", report.numbers(kt.specificity_effects(table, prompted), compensation, hm, prompted)
               .reindex(list(experiment.datasets)).reset_index(),
               "The answer's numbers per dataset, mean ± std over seeds.")
    if "DemoSat" in experiment.datasets:
        backbone = load_backbone(experiment.model, experiment.pretrained)
        page.table("visibility", kt.visibility(backbone, "DemoSat", get_spec("DemoSat").template).round(1),
                   "Can demo-clip tell DemoSat's classes apart? Zero-shot accuracy and a nearest-class-mean probe "
                   "(%), on the classes drawn pretraining-style and DemoSat-style.")
    bold = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>",
                  html.escape(report.compensation_answer(compensation, hm, list(experiment.datasets), prompted)))
    page.answer = answer_box(lines + [bold])
    return page


# --------------------------------------------------------------------------- the claims
CHAPTER_OF = {"C1": "decomposition", "C2": "cls_foreground", "C4": "eos_attention", "C4r": "token_contributions",
              "C5": "prompts_as_background", "C6": "bias_tuning", "C6e": "bias_tuning", "C7": "known_truth",
              **dict.fromkeys(CAUSAL_CLAIMS, "causal_ablation")}


def claims_page(experiment: Experiment, claims: pd.DataFrame) -> Page:
    """The claims at a glance: statement | measure | data | verdict per dataset | chapter, and the
    forest plot of every effect with its interval and margin."""
    from ..stats.claims import CLAIMS
    from .chapter import verdict_badge, interval_text
    if claims.empty:
        return _rules_and_runs(_empty("claims"), experiment)
    page = Page("")
    page.tables["claims"] = claims
    rows = []
    for claim_id, part in claims.groupby("claim", sort=False):
        claim = CLAIMS[claim_id]
        per_dataset = part.set_index("dataset")
        summary = per_dataset.loc[AVERAGE] if AVERAGE in per_dataset.index else per_dataset.iloc[-1]
        chapter = CHAPTER_OF.get(claim_id)
        rows.append({
            "claim": f"<strong>{claim_id}</strong> {html.escape(claim.statement)}",
            "measure": html.escape(claim.effect) + f"; holds {claim.side} {significant(claim.margin)}",
            "data": html.escape(_data_text(per_dataset.drop(index=AVERAGE, errors="ignore"))),
            "effect": interval_text(summary),
            "verdict": "<br>".join(f"{html.escape(str(d))}: {verdict_badge(r.verdict)}" for d, r in per_dataset.iterrows()),
            "chapter": f'<a href="{chapter}.html">{chapter.replace("_", " ")}</a>' if chapter else "—"})
    statement = pd.DataFrame(rows)
    counts = claims[claims.dataset == AVERAGE].verdict.value_counts()
    single = [c for c, part in claims.groupby("claim", sort=False) if AVERAGE not in set(part.dataset)]
    page.answer = answer_box([
        f"<strong>{len(statement)} claims</strong> tested on {len(experiment.datasets)} datasets and "
        f"{len(experiment.seeds)} seeds. Averaged over the datasets: "
        + ", ".join(f"{n} {verdict_badge(v)}" for v, n in counts.items())
        + (f"; {', '.join(single)} on one comparison only (no average)" if single else "") + ".",
        "Each row below gives the claim, how it is measured, the data, the effect with its 95 % interval and the "
        "verdict per dataset; the forest plot under it draws every interval against the claim's margin."])
    statement, constant = informative(statement)  # e.g. one dataset and seed: the same data on every row
    # On a phone each claim is a card: the cells stack, each after its column's name (book.css).
    labelled = statement.apply(lambda column: column if column.name == "claim" else
                               f'<span class="phone-label">{column.name}: </span>' + column)
    page.table("claims", HTML(labelled.to_html(index=False, escape=False, border=0, classes="book-table claims-table")),
               "The claims and their verdicts (rule below the plot). The effect is the average over the datasets "
               "(a claim on one comparison: that comparison's), with its 95 % interval."
               + "".join(f" Every claim's {c}: {v}." for c, v in constant.items()))
    shown = claims.dropna(subset=["low"]).assign(
        margin=lambda t: t.claim.map(lambda c: CLAIMS[c].margin))
    if not shown.empty:
        base = alt.Chart(shown)
        y = alt.Y("dataset:N", sort=list(dict.fromkeys(shown.dataset)), title=None)
        points = base.mark_point(filled=True, size=70).encode(
            y=y, x=alt.X("effect:Q", title="effect (unit: see the claim)"),
            color=charts.colour("verdict", list(dict.fromkeys(shown.verdict)), "verdict"),
            tooltip=["claim", "dataset", alt.Tooltip("effect:Q", format=".3g"), alt.Tooltip("low:Q", format=".3g"),
                     alt.Tooltip("high:Q", format=".3g"), "verdict"])
        bars = base.mark_rule().encode(y=y, x="low:Q", x2="high:Q")
        margin = base.mark_rule(color=charts.REFERENCE_COLOUR, strokeDash=[4, 3]).encode(x="margin:Q")
        page.figure("forest", alt.layer(margin, bars, points).properties(width=charts.PHONE_WIDTH - 60, height=alt.Step(18))
                    .facet(row=alt.Row("claim:N", title=None, sort=list(dict.fromkeys(shown.claim))))
                    .resolve_scale(x="independent", y="independent"),
                    "Every claim's effect per dataset and on average, with its 95 % interval; dashed: the claim's "
                    "margin (the claim holds on its side of it).")
    return _rules_and_runs(page, experiment)


def _rules_and_runs(page: Page, experiment: Experiment) -> Page:
    """What the claims page says whatever the results: the verdict rule, each claim's margin and
    which runs of the experiment the numbers count."""
    from ..stats.claims import VERDICT_RULE, margin_table
    from ..study.completeness import missing_runs
    page.numbers["verdict_rule"] = Markdown(VERDICT_RULE)
    margins = margin_table()
    page.tables["claim_margins"] = margins
    page.table("margins", margins.drop(columns="statement"),
               "What each claim measures, the side of its margin on which it holds, and the reason for both, as "
               "the library fixes them before any result is seen; \"beside it\": what the claims table shows "
               "beside the effect.")
    missing = missing_runs(experiment)
    page.numbers["runs_counted"] = Markdown(
        "Every run of the experiment is finished and counted in these numbers." if not missing else
        f"**{_count(len(missing), 'run')} of the experiment missing**, left out of every table and verdict of this "
        "book; run the sweep to complete them:\n\n" + "\n".join(f"- {markup.code(run.run_id)}: {markup.text(run.reason)}"
                                                             for run in missing))
    return page


CHAPTERS = {"datasets": datasets, "claims": claims_page, "decomposition": decomposition,
            "causal_ablation": causal_ablation, "token_contributions": token_contributions,
            "cls_foreground": cls_foreground, "eos_attention": eos_attention, "distance_entropy": distance_entropy,
            "prompts_as_background": prompts_as_background, "bias_tuning": bias_tuning, "known_truth": known_truth,
            "results": results}


def open_page(chapter: str, experiment_file: str, tables_dir: str, data_root: str | None = None) -> Page:
    """The chapter ``chapter`` of the experiment: computed, its tables written to ``tables_dir``,
    its numbers glued, its answer box displayed; charts render for the book from here on."""
    charts.enable()
    experiment = load_experiment(experiment_file, data_root=data_root, require_data=False)
    claims_file = Path(tables_dir) / CLAIMS_TABLE
    claims = pd.read_csv(claims_file) if claims_file.is_file() else pd.DataFrame()
    page = CHAPTERS[chapter](experiment, claims)
    for name, table in page.tables.items():
        write_text_atomic(Path(tables_dir) / f"{name}.csv", table.to_csv(index=False))
    for name, value in page.numbers.items():
        glue(name, value, display=False)
    display(HTML(page.answer))
    return page
