"""The known-truth chapter's figures and its answer (the numbers come from ``stats.known_truth``)."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image

from ..demo import world
from ..stats import known_truth as kt
from ..stats.causal import MEAN_ABLATED
from .charts import PHONE_WIDTH, FONT_PX, colour, dataset_picker, image_grid
from .numbers import mean_std

SIZE = 96


def paired_gallery(per_dataset: int = 2):
    """Each demo dataset's scenes drawn pretraining-style and dataset-style, side by side (DemoSat:
    two independent drawings of the same class, as it has no exact pair)."""
    images = []
    for name, dataset in world.DATASETS.items():
        for i in range(per_dataset):
            scene = dataset.classes[i * len(dataset.classes) // per_dataset]
            if name in world.PAIRED:
                plain, shifted, _ = world.paired_render(name, scene, [kt.PAIR_SEED, i])
            else:
                plain, _, shifted, _ = world.unpaired_render(name, scene, [kt.PAIR_SEED, i])
            label = dataset.classname(scene)
            images += [(_picture(plain), f"{label}, plain"), (_picture(shifted), name)]
    return image_grid(images, SIZE)


def _picture(image: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))


def specificity_heatmap(m: pd.DataFrame) -> alt.FacetChart:
    """M as a heat map, one panel per seed: a diagonal darker than its row means each dataset's
    prompts undo their own dataset's shift more than the others'."""
    order = list(dict.fromkeys(m["shift of"]))
    base = alt.Chart(m).encode(x=alt.X("shift of:N", sort=order, title="−δ of (the known shift)"),
                               y=alt.Y("prompts of:N", sort=order, title=None))   # rows: β of; the caption says so
    cells = base.mark_rect().encode(color=alt.Color("cosine:Q", scale=alt.Scale(scheme="redblue", domainMid=0,
                                                                                    reverse=True),
                                                    legend=alt.Legend(orient="top", direction="horizontal")),
                                    tooltip=["seed", "prompts of", "shift of", alt.Tooltip("cosine:Q", format=".3f")])
    text = base.mark_text(fontSize=FONT_PX - 1).encode(text=alt.Text("cosine:Q", format=".2f"))
    side = PHONE_WIDTH - 90   # the datasets' names take the rest of a phone's width
    return (cells + text).properties(width=side, height=side).facet(
        row=alt.Row("seed:N", title=None, header=alt.Header(labelOrient="top", labelAnchor="start",
                                                            labelExpr="'seed ' + datum.value")))


def compensation_chart(s: pd.DataFrame, datasets) -> alt.Chart:
    """S per block for the four conditions (IVLP) and bias tuning as trained, one dataset at a time;
    a point per seed, the line through their mean."""
    base = alt.Chart(s).encode(x=alt.X("block:O"), color=alt.Color(
        "series:N", title=None, legend=alt.Legend(orient="top", direction="vertical")))
    line = base.mark_line().encode(y=alt.Y("mean(S):Q", title="compensation S"))
    dots = base.mark_circle(size=30, opacity=0.5).encode(
        y="S:Q", tooltip=["dataset", "series", "seed", "block", alt.Tooltip("S:Q", format=".3f")])
    return dataset_picker((line + dots).properties(width=PHONE_WIDTH - 40, height=200), datasets)


def compensation_series(s: pd.DataFrame, prompted: str, bias_variant: str | None, group: str = "patches"
                        ) -> pd.DataFrame:
    """The chart's rows: the prompted variant's conditions and bias tuning as trained."""
    s = s[s.group == group]
    ivlp = s[s.variant_name == prompted].assign(series=lambda d: f"{prompted} " + d.condition)
    bias = s[(s.variant_name == bias_variant) & (s.condition == "as trained")].assign(series=f"{bias_variant}")
    return pd.concat([ivlp, bias], ignore_index=True)


def hm_comparison(oracle: pd.DataFrame, metrics: pd.DataFrame, prompted: str, bias_variant: str | None
                  ) -> pd.DataFrame:
    """Per dataset and seed: HM of zero-shot, the oracle (best block), the prompted variant and bias
    tuning, long."""
    rows = [oracle.assign(model="zero-shot", variant="zeroshot", hm=oracle["zero-shot hm"]),
            oracle.assign(model="oracle (−δ, best block)", variant="oracle", hm=oracle["oracle hm"])]
    for name in (prompted, bias_variant):
        if name:
            rows.append(metrics[metrics.variant_name == name].assign(model=name))
    return pd.concat([r[["dataset", "seed", "model", "variant", "hm"]] for r in rows], ignore_index=True)


def hm_chart(hm: pd.DataFrame) -> alt.Chart:
    """A dot per seed, models down the side, coloured by variant kind as on every page."""
    models = hm.drop_duplicates("model")
    return alt.Chart(hm).mark_circle(size=60).encode(
        x=alt.X("hm:Q", title="harmonic mean (%)"), y=alt.Y("model:N", title=None, sort=list(models.model)),
        color=colour("variant", list(dict.fromkeys(models.variant)), legend=False),
        row=alt.Row("dataset:N", title=None, header=alt.Header(labelOrient="top", labelAnchor="start")),
        tooltip=["dataset", "model", "seed", alt.Tooltip("hm:Q", format=".1f")]).properties(width=PHONE_WIDTH - 150,
                                                                                            height=90)


def numbers(effects: pd.DataFrame, s: pd.DataFrame, hm: pd.DataFrame, prompted: str) -> pd.DataFrame:
    """The answer's numbers per dataset, mean ± std over seeds: M's diagonal margin, the prompted
    variant's S (patches, mean over blocks) as trained / bias term removed / rescaling removed, oracle
    and prompted HM."""
    s = s[(s.variant_name == prompted) & (s.group == "patches")]
    per_seed = s.groupby(["dataset", "seed", "condition"]).S.mean().unstack("condition")
    hm_wide = hm.pivot_table(index=["dataset", "seed"], columns="model", values="hm")
    joined = effects.set_index(["dataset", "seed"])[["value"]].join(per_seed, how="outer").join(hm_wide, how="outer")
    columns = {"value": "M diagonal − off-diagonal, trained − control", **{c: f"S {c}" for c in per_seed.columns},
               **{c: f"HM {c}" for c in hm_wide.columns}}
    stats = joined.groupby(level="dataset", sort=False).agg(["mean", "std"])
    return pd.DataFrame({label: [mean_std(a, b)
                                 for a, b in zip(stats[(c, "mean")], stats[(c, "std")])]
                         for c, label in columns.items() if (c, "mean") in stats}, index=stats.index)


def compensation_answer(s: pd.DataFrame, hm: pd.DataFrame, datasets, prompted: str) -> str:
    """The answer's second half, per dataset (means over seeds): the prompted variant's S (patches,
    mean over blocks) as trained and what each removal changes, and the oracle's HM beside its HM."""
    s = s[(s.variant_name == prompted) & (s.group == "patches")]
    S = s.groupby(["dataset", "condition"]).S.mean().unstack("condition")
    H = hm.groupby(["dataset", "model"]).hm.mean().unstack("model")
    oracle = next(c for c in H.columns if c.startswith("oracle"))
    parts = []
    for dataset in [d for d in datasets if d in S.index]:
        row = S.loc[dataset]
        trained = row["as trained"]
        moves = ("moves the shifted images towards the plain ones" if trained > 0
                 else "moves the shifted images further from the plain ones")
        parts.append(
            f"**{dataset}**: {prompted} {moves} (S = {trained:+.3f}); without the bias term S = "
            f"{row['bias term removed']:+.3f}, without the rescaling {row['rescaling removed']:+.3f}, with the bias "
            f"term mean-ablated {row[MEAN_ABLATED]:+.3f}; oracle HM {H.loc[dataset, oracle]:.1f} vs {prompted} "
            f"{H.loc[dataset, prompted]:.1f}")
    return "Per dataset (means over seeds): " + "; ".join(parts) + "."
