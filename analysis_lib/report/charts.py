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

- head statistics: ``model, tower, block, head, distance, entropy``: one row per head;
  ``model`` is e.g. "CLIP", "W/O Prompt", "W Prompt"; ``distance`` is in pixels for the
  image tower (in token positions for the text tower, if given).
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

HEAD_STAT_COLUMNS = ("model", "tower", "block", "head", "distance", "entropy")
RENDERER_NAME = "book"
# vega-embed options: SVG so that the page holds inspectable markup; no link to the online editor.
EMBED_OPTIONS = {"renderer": "svg", "actions": {"export": True, "source": False,
                                                 "compiled": False, "editor": False}}


class ChartDataError(ValueError):
    """A DataFrame handed to a chart builder does not follow the documented schema."""


# --- the renderer ----------------------------------------------------------------------------

def chart_html(spec: Mapping) -> str:
    """A ``<div>`` plus the script that embeds ``spec`` into it with the page's vegaEmbed.

    ``spec["usermeta"]["book_chart"]``, when present, is copied to the div's
    ``data-book-chart`` attribute, so that tests can find a chart of a given kind.
    """
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
    """Mean attention distance against entropy, one dot per head, coloured by model, one panel
    per tower. Hovering a dot shows its block and head; clicking a legend entry highlights
    that model.
    """
    _require_columns(df, HEAD_STAT_COLUMNS, "the head statistics")
    if df.duplicated(["model", "tower", "block", "head"]).any():
        raise ChartDataError("the head statistics have more than one row for a (model, tower, block, head)")
    models = list(dict.fromkeys(df["model"].astype(str)))
    picked = alt.selection_point(fields=["model"], bind="legend")
    return (
        alt.Chart(df[list(HEAD_STAT_COLUMNS)])
        .mark_circle(size=50)
        .encode(x=alt.X("distance:Q", title="mean attention distance"),
                y=alt.Y("entropy:Q", title="mean attention entropy (nats)"),
                color=alt.Color("model:N", scale=alt.Scale(domain=models),
                                legend=alt.Legend(orient="top", title="model (click to highlight)")),
                opacity=alt.condition(picked, alt.value(0.85), alt.value(0.1)),
                tooltip=["model:N", "tower:N", "block:Q", "head:Q",
                         alt.Tooltip("distance:Q", format=".3g"), alt.Tooltip("entropy:Q", format=".3g")])
        .add_params(picked)
        .properties(width=220, height=220)
        .facet(column=alt.Column("tower:N", title=None))
        .resolve_scale(x="independent", y="independent")
        .properties(usermeta={"book_chart": "distance_entropy"})
    )


def dataset_picker(chart, datasets: Sequence[str]):
    """``chart`` (its data has a ``dataset`` column) showing one dataset at a time, chosen in a
    drop-down: the per-dataset view of a chapter, filtered in the browser."""
    options = [str(d) for d in datasets]
    picked = alt.param(name="dataset", value=options[0], bind=alt.binding_select(options=options, name="dataset "))
    return chart.add_params(picked).transform_filter(alt.datum.dataset == picked)
