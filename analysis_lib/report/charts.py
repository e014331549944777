"""Altair charts for the book: they work in a static page, offline, several to a page.

Two parts:

- A renderer. Altair's own HTML output loads vega from a CDN and breaks on the second chart
  of a page; `render` instead emits a ``<div>`` and a ``vegaEmbed(...)`` call against the
  scripts the book serves itself (``book/_static/vendor/``, loaded on every page by
  ``_config.yml``). Notebooks executed for the book call `enable()` once; a chart that ends a
  cell is then stored as that HTML. (It draws only in the book: to look at charts while
  working in Jupyter, keep altair's default renderer.)
- Chart builders from small tidy DataFrames. The built book has no Python kernel, so the
  interactive views carry their precomputed data and filter it in the browser (altair
  parameters bound to the legend, sliders or drop-downs). The attention explorer is not an
  altair chart: see ``explorer_page.py``.

Data schema (one row per value; column names are fixed):

- head statistics: ``reading, tower, block, head, distance, entropy``: one row per head;
  ``reading`` is, "CLIP", "W/O" or "W"; ``distance`` is in pixels for the
  image tower (in token positions for the text tower, if given).

One palette for the whole book (``COLOURS``): each reading, model and verdict has one colour on
every page. Charts are at most ``PHONE_WIDTH`` px wide, panels stacked rather than side by side,
so that their text stays readable on a phone's 390 px screen.
"""
from __future__ import annotations

import base64
import html
import io
import json
import uuid
from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import HTML
from PIL import Image

HEAD_STAT_COLUMNS = ("reading", "tower", "block", "head", "distance", "entropy")
RENDERER_NAME = "book"
# vega-embed options: SVG so that the page holds inspectable markup; no link to the online editor.
EMBED_OPTIONS = {"renderer": "svg", "actions": {"export": True, "source": False,
                                                 "compiled": False, "editor": False}}


PHONE_WIDTH = 300  # px: the widest a chart's plotting area gets, so a 390 px screen draws it unscaled
# One colour per reading and model (Tableau 10), per verdict (green holds, red fails, amber
# undecided), per kind of variant; every chart of the book takes its colours from here.
COLOURS = {
    "CLIP": "#4c78a8", "W/O": "#72b7b2", "W": "#e45756", "prompted": "#e45756", "control": "#9e9e9e",
    "supported": "#2e7d32", "contradicted": "#c62828", "inconclusive": "#f9a825", "heterogeneous": "#8e24aa",
    "too few samples": "#9e9e9e",
    "zeroshot": "#4c78a8", "ivlp": "#e45756", "text": "#f58518", "vision": "#54a24b", "bias": "#b279a2",
    "coop": "#9d755d", "oracle": "#333333", "foreground": "#e45756", "background": "#9e9e9e",
    "all blocks": "#4c78a8", "below prompt depth": "#f58518",
}
REFERENCE_COLOUR = "#555555"  # reference lines: margins, chance, zero-shot, as trained
# Type sizes of every chart (vega's default is 10-11 px, below the book's 10 px floor as soon as a
# phone scales a chart down at all); the renderer adds them where a chart sets none of its own.
FONT_PX = 13
BOOK_CONFIG = {"axis": {"labelFontSize": FONT_PX, "titleFontSize": FONT_PX},
               "legend": {"labelFontSize": FONT_PX, "titleFontSize": FONT_PX},
               "header": {"labelFontSize": FONT_PX, "titleFontSize": FONT_PX},
               "title": {"fontSize": FONT_PX + 1}, "text": {"fontSize": FONT_PX - 1}}


class ChartDataError(ValueError):
    """A DataFrame handed to a chart builder does not follow the documented schema."""


# --- the renderer ----------------------------------------------------------------------------

def chart_html(spec: Mapping) -> str:
    """A ``<div>`` plus the script that embeds ``spec`` into it with the page's vegaEmbed.

    The book's type sizes (``BOOK_CONFIG``) fill in what the spec's own config leaves out.
    ``spec["usermeta"]["book_chart"]``, when present, is copied to the div's
    ``data-book-chart`` attribute, so that tests can find a chart of a given kind.
    """
    spec = {**spec, "config": {part: {**sizes, **spec.get("config", {}).get(part, {})}
                               for part, sizes in BOOK_CONFIG.items()} | {
        k: v for k, v in spec.get("config", {}).items() if k not in BOOK_CONFIG}}
    div_id = f"book-chart-{uuid.uuid4().hex}"
    kind = html.escape(str(spec.get("usermeta", {}).get("book_chart", "chart")), quote=True)
    # "</script>" inside the JSON would end the script early; "<" only occurs inside JSON strings,
    # where the escape \u003c means the same.
    spec_json = json.dumps(spec, separators=(",", ":")).replace("<", "\\u003c")
    options_json = json.dumps(EMBED_OPTIONS)
    return f"""<div id="{div_id}" class="book-chart" data-book-chart="{kind}"></div>
<script type="text/javascript">
(function () {{
  var el = document.getElementById("{div_id}");
  if (typeof vegaEmbed === "undefined") {{
    el.textContent = "This chart is drawn by the built book's own scripts. " +
      "To see it in Jupyter, use altair's default renderer: alt.renderers.enable('default').";
    return;
  }}
  vegaEmbed(el, {spec_json}, {options_json}).catch(function (err) {{
    el.textContent = "Chart error: " + err;
    console.error(err);
  }});
}})();
</script>"""


def render(spec: dict, **metadata) -> dict:
    """Altair renderer: the chart as HTML for the book (see `chart_html`)."""
    return {"text/html": chart_html(spec), "text/plain": "<altair chart, drawn in the built book>"}


alt.renderers.register(RENDERER_NAME, render)


def enable():
    """Display altair charts with `render`: call once at the top of a notebook, or use as
    ``with enable(): ...`` to restore the previous renderer afterwards."""
    return alt.renderers.enable(RENDERER_NAME)


# --- data packing ----------------------------------------------------------------------------

def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ChartDataError(f"{what} lacks columns {missing}; it needs {list(columns)} "
                             f"(see the schemas in analysis_lib/report/charts.py)")
    if df.empty:
        raise ChartDataError(f"{what} has no rows")


def _data_url(image, size: int, kind: str = "png") -> str:
    """A small PNG (exact) or JPEG (smaller) of the image, inline, so the page needs no separate file."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buffer = io.BytesIO()
    picture.convert("RGB").resize((size, size), Image.BILINEAR).save(
        buffer, format=kind.upper(), **({"optimize": True} if kind == "png" else {"quality": 85}))
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_grid(images: Sequence[tuple[object, str]], size: int = 96) -> HTML:
    """Captioned images side by side, inline JPEGs (never stored above their own size), so that a
    static page shows them without separate files."""
    figures = "".join(
        f'<figure style="margin:4px;width:{size}px;text-align:center">'
        f'<img src="{_data_url(image, min(size, image.width), "jpeg")}" alt="{html.escape(caption)}" '
        f'style="width:{size}px;height:{size}px;max-width:none"/>'
        f'<figcaption style="font-size:0.75em">{html.escape(caption)}</figcaption></figure>'
        for image, caption in images)
    return HTML(f'<div style="display:flex;flex-wrap:wrap">{figures}</div>')


# --- chart builders --------------------------------------------------------------------------

def distance_entropy_scatter(df: pd.DataFrame) -> alt.FacetChart:
    """Mean attention distance against entropy, one dot per head, coloured by reading, one panel
    per tower (stacked). Hovering a dot shows its block and head; clicking a legend entry
    highlights that reading.
    """
    _require_columns(df, HEAD_STAT_COLUMNS, "the head statistics")
    if df.duplicated(["reading", "tower", "block", "head"]).any():
        raise ChartDataError("the head statistics have more than one row for a (reading, tower, block, head)")
    readings = list(dict.fromkeys(df["reading"].astype(str)))
    picked = alt.selection_point(fields=["reading"], bind="legend")
    return (
        alt.Chart(df[list(HEAD_STAT_COLUMNS)])
        .mark_circle(size=50)
        .encode(x=alt.X("distance:Q", title="mean attention distance (px)"),
                y=alt.Y("entropy:Q", title="mean attention entropy (nats)"),
                color=colour("reading", readings, "reading (click to highlight)"),
                opacity=alt.condition(picked, alt.value(0.85), alt.value(0.1)),
                tooltip=["reading:N", "tower:N", "block:Q", "head:Q",
                         alt.Tooltip("distance:Q", format=".3g"), alt.Tooltip("entropy:Q", format=".3g")])
        .add_params(picked)
        .properties(width=PHONE_WIDTH - 40, height=200)
        .facet(row=alt.Row("tower:N", title=None))
        .resolve_scale(x="independent", y="independent")
        .properties(usermeta={"book_chart": "distance_entropy"})
    )


def colour(field: str, values: Sequence[str], title: str | None = None, legend: bool = True) -> alt.Color:
    """The colour encoding of ``field`` with the book's palette for ``values`` (in that order;
    values without a colour of their own get grey)."""
    values = [str(v) for v in values]
    return alt.Color(f"{field}:N", title=title, scale=alt.Scale(domain=values, range=[
        COLOURS.get(v, "#bab0ac") for v in values]), legend=alt.Legend(orient="top", direction="vertical")
        if legend else None)


def reference_rule(value: float, label: str, axis: str = "x") -> alt.LayerChart:
    """A dashed line at ``value`` on the ``axis`` with its ``label`` (a margin, chance...)."""
    return _labelled_rule(alt.Chart(pd.DataFrame({"value": [value]})), label, axis)


def mean_rule(frame: pd.DataFrame, field: str, label: str, where) -> alt.LayerChart:
    """A dashed vertical line at the mean of ``field`` over the rows of ``frame`` that ``where`` (a
    vega expression) keeps, e.g. zero-shot's HM. Drawn from the chart's own data, so in a
    ``dataset_picker`` it is the picked dataset's mean."""
    return _labelled_rule(alt.Chart(frame).transform_filter(where).transform_aggregate(value=f"mean({field})"),
                          label, "x")


def _labelled_rule(base: alt.Chart, label: str, axis: str) -> alt.LayerChart:
    """``base``'s ``value`` as a dashed reference line on ``axis``, with its label beside it."""
    rule = base.mark_rule(color=REFERENCE_COLOUR, strokeDash=[4, 3]).encode(**{axis: "value:Q"})
    text = base.mark_text(align="left", dx=3, dy=-4 if axis == "y" else 0, baseline="bottom" if axis == "y" else "top",
                          color=REFERENCE_COLOUR).encode(
        **{axis: "value:Q"}, text=alt.value(label), **({"y": alt.value(0)} if axis == "x" else {"x": alt.value(0)}))
    return rule + text


def dataset_picker(chart, datasets: Sequence[str]):
    """``chart`` (its data has a ``dataset`` column) showing one dataset at a time, chosen in a
    drop-down: the per-dataset view of a chapter, filtered in the browser."""
    options = [str(d) for d in datasets]
    picked = alt.param(name="dataset", value=options[0], bind=alt.binding_select(options=options, name="dataset "))
    return chart.add_params(picked).transform_filter(alt.datum.dataset == picked)
