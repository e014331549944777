"""Altair charts for the book: they work in a static page, offline, several to a page.

Two parts:

- A renderer. Altair's own HTML output loads vega from a CDN and breaks on the second chart
  of a page; `render` instead emits a ``<div>`` and a ``vegaEmbed(...)`` call against the
  scripts the book serves itself (``book/_static/vendor/``, loaded on every page by
  ``_config.yml``). Notebooks executed for the book call `enable()` once; a chart that ends a
  cell is then stored as that HTML. (It draws only in the book: to look at charts while
  working in Jupyter, keep altair's default renderer.)
- Chart builders from small tidy DataFrames. The built book has no Python kernel, so the
  interactive views carry their precomputed data and filter it in the browser: altair
  parameters bound to sliders and drop-downs drive ``transform_filter``.

Data schemas (one row per value; column names are fixed):

- vision attention: ``image, block, head, patch_row, patch_col, attention``: the [CLS]
  query's attention to the patch at (patch_row, patch_col) of a G×G grid;
- text attention: ``prompt, block, head, position, token, attention``: the [EOS] query's
  attention to the token at ``position`` of the text built for ``prompt`` (e.g. a class);
- head statistics: ``model, tower, block, head, distance, entropy``: one row per head;
  ``model`` is e.g. "CLIP", "W/O Prompt", "W Prompt"; ``distance`` is in pixels for the
  image tower (in token positions for the text tower, if given).

Class-token rows only: a 12-block, 12-head image tower gives 12·12·196 values per image.
To keep pages small the builders ship each (block, head) as one array of values rounded to
three significant digits, and the browser unpacks the selected one.
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

VISION_COLUMNS = ("image", "block", "head", "patch_row", "patch_col", "attention")
TEXT_COLUMNS = ("prompt", "block", "head", "position", "token", "attention")
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


def _rounded(values: np.ndarray) -> list[float]:
    """Three significant digits: plenty for a colour or a bar, and a third of the bytes."""
    return [float(f"{v:.3g}") for v in values.tolist()]


def _pack(df: pd.DataFrame, keys: list[str], order: list[str], arrays: list[str], what: str) -> list[dict]:
    """One record per ``keys`` group holding the ``arrays`` columns as lists, in ``order``."""
    if df.duplicated(keys + order).any():
        raise ChartDataError(f"{what} has duplicate rows for the same {keys + order}")
    if not np.isfinite(df["attention"].to_numpy(dtype=float)).all():
        raise ChartDataError(f"{what} has attention values that are NaN or infinite")
    records = []
    for key, group in df.sort_values(keys + order).groupby(keys, sort=False):
        record = {k: (str(v) if k in ("image", "prompt") else int(v)) for k, v in zip(keys, key)}
        for column in arrays:
            values = group[column].to_numpy()
            record[column] = _rounded(values) if column == "attention" else values.tolist()
        records.append(record)
    return records


def _grid_size(df: pd.DataFrame) -> int:
    """G of the G×G patch grid, checking that every (image, block, head) covers it exactly once."""
    g = int(df["patch_row"].max()) + 1
    inside = df["patch_row"].between(0, g - 1) & df["patch_col"].between(0, g - 1)
    counts = df.groupby(["image", "block", "head"]).size()
    if not inside.all() or (counts != g * g).any() or df.duplicated(list(VISION_COLUMNS[:5])).any():
        raise ChartDataError(f"df_vision must hold each patch of a {g}x{g} grid exactly once per "
                             f"(image, block, head), with patch_row and patch_col in 0..{g - 1}")
    return g


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


def _inline(records: list[dict]) -> alt.InlineData:
    """Records as one JSON string: altair copies a string at once, long nested lists value by value."""
    return alt.InlineData(values=json.dumps(records, separators=(",", ":")), format=alt.DataFormat(type="json"))


def _slider(name: str, values: pd.Series, label: str) -> alt.Parameter:
    low, high = int(values.min()), int(values.max())
    return alt.param(name=name, value=low, bind=alt.binding_range(min=low, max=high, step=1, name=label))


def _dropdown(name: str, options: list[str], label: str) -> alt.Parameter:
    return alt.param(name=name, value=options[0], bind=alt.binding_select(options=options, name=label))


# --- chart builders --------------------------------------------------------------------------

def attention_explorer(df_vision: pd.DataFrame, df_text: pd.DataFrame, images: Mapping[str, object],
                       *, size: int = 220, image_px: int = 112) -> alt.HConcatChart:
    """[CLS] attention over the patches, laid over the image, beside the [EOS] attention over
    the tokens; sliders pick the block and each tower's head, drop-downs the image and prompt.

    ``df_vision`` and ``df_text`` follow the schemas in the module docstring; ``images`` maps
    each image id of ``df_vision`` to a PIL image or an HxWx3 uint8 array (shown at
    ``image_px`` pixels, square, as the grid is). ``size`` is each panel's size in pixels.
    """
    _require_columns(df_vision, VISION_COLUMNS, "df_vision")
    _require_columns(df_text, TEXT_COLUMNS, "df_text")
    df_vision = df_vision.assign(image=df_vision["image"].astype(str))
    df_text = df_text.assign(prompt=df_text["prompt"].astype(str))
    images = {str(k): v for k, v in images.items()}
    missing = sorted(set(df_vision["image"]) - set(images))
    if missing:
        raise ChartDataError(f"images lacks the pictures of image ids {missing[:5]} used in df_vision")
    g = _grid_size(df_vision)
    image_ids = list(dict.fromkeys(df_vision["image"]))
    prompts = list(dict.fromkeys(df_text["prompt"]))

    block = _slider("block", pd.concat([df_vision["block"], df_text["block"]]), "block ")
    vision_head = _slider("vision_head", df_vision["head"], "image head ")
    text_head = _slider("text_head", df_text["head"], "text head ")
    image = _dropdown("image", image_ids, "image ")
    prompt = _dropdown("prompt", prompts, "text ")

    x_scale = alt.Scale(domain=[0, g])
    y_scale = alt.Scale(domain=[0, g], reverse=True)  # row 0 at the top, as in the image
    photo = (
        alt.Chart(_inline([{"image": i, "url": _data_url(images[i], image_px)} for i in image_ids]))
        .transform_filter(alt.datum.image == image)
        .transform_calculate(centre=f"{g / 2}")
        .mark_image(width=size, height=size)
        .encode(x=alt.X("centre:Q", scale=x_scale, axis=None),
                y=alt.Y("centre:Q", scale=y_scale, axis=None), url="url:N")
    )
    vision_records = _pack(df_vision, ["image", "block", "head"], ["patch_row", "patch_col"],
                           ["attention"], "df_vision")
    heat = (
        alt.Chart(_inline(vision_records))
        .transform_filter((alt.datum.image == image) & (alt.datum.block == block)
                          & (alt.datum.head == vision_head))
        .transform_flatten(["attention"])
        # The selected record unpacks into the grid's values in row-major order.
        .transform_window(index="row_number()")
        .transform_calculate(patch_row=f"floor((datum.index - 1) / {g})",
                             patch_col=f"(datum.index - 1) % {g}",
                             row_end="datum.patch_row + 1", col_end="datum.patch_col + 1")
        .mark_rect(opacity=0.6)
        .encode(x=alt.X("patch_col:Q", scale=x_scale, axis=None), x2="col_end:Q",
                y=alt.Y("patch_row:Q", scale=y_scale, axis=None), y2="row_end:Q",
                color=alt.Color("attention:Q", scale=alt.Scale(scheme="inferno"),
                                legend=alt.Legend(title="attention", orient="bottom", gradientLength=size)),
                tooltip=["patch_row:Q", "patch_col:Q", alt.Tooltip("attention:Q", format=".3g")])
    )
    vision = alt.layer(photo, heat).properties(width=size, height=size,
                                               title="image: [CLS] attention over the patches")

    text_records = _pack(df_text, ["prompt", "block", "head"], ["position"],
                         ["attention", "token", "position"], "df_text")
    text = (
        alt.Chart(_inline(text_records))
        .transform_filter((alt.datum.prompt == prompt) & (alt.datum.block == block)
                          & (alt.datum.head == text_head))
        .transform_flatten(["attention", "token", "position"])
        .transform_calculate(label="datum.position + ' ' + datum.token")
        .mark_bar()
        .encode(x=alt.X("label:N", sort=alt.EncodingSortField("position"), title=None),
                y=alt.Y("attention:Q", title="attention"),
                tooltip=["position:Q", "token:N", alt.Tooltip("attention:Q", format=".3g")])
        .properties(width=size, height=size, title="text: [EOS] attention over the tokens")
    )
    return (alt.hconcat(vision, text)
            .add_params(block, vision_head, text_head, image, prompt)
            .properties(usermeta={"book_chart": "attention_explorer"}))


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
    picked = _dropdown("dataset", [str(d) for d in datasets], "dataset ")
    return chart.add_params(picked).transform_filter(alt.datum.dataset == picked)
