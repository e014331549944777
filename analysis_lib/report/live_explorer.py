"""The live attention explorer for Jupyter: the book's explorer views for any image file and any
finished run, computed on demand by the same data function (``stats/explorer_data.image_tables``).

Needs a kernel (the static book shows the precomputed explorer instead). Open it with
``.venv/bin/jupyter lab notebooks/live_explorer.ipynb``.
"""
from __future__ import annotations

import html
import io
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
from PIL import Image

from ..stats.explorer_data import GROUPS, PANELS, TEXT_MODELS, image_tables
from ..study.run_folder import RunFolderError, load_run
from .explorer_page import ALPHA, COLORMAP, TOKEN_COLOURS

SIZE = 200


def cls_row(tables: dict, panel: str, block: int, head: int | None, rollout: bool, image: int = 0) -> np.ndarray:
    """[G²] the [CLS] row of one panel: a head, the mean over heads (``head=None``), or the rollout."""
    p = PANELS.index(panel)
    if rollout:
        return tables["cls_rollout"][p, image, block]
    rows = tables["cls_attention"][p, image, block]                    # [H, G²]
    return rows.mean(0) if head is None else rows[head]


def eos_row(tables: dict, model: str, classname: str, block: int, head: int | None, rollout: bool) -> pd.DataFrame:
    """The [EOS] row of a class prompt: position, token, token_type and ``value``."""
    key = ["position", "token", "token_type"]
    if rollout:
        t = tables["eos_rollout"]
        part = t[(t.model == model) & (t.classname == classname) & (t.block == block)]
        return part[key].assign(value=part.rollout.to_numpy())
    t = tables["eos_attention"]
    part = t[(t.model == model) & (t.classname == classname) & (t.block == block)]
    if head is not None:
        part = part[part["head"] == head]
    return part.groupby(key, as_index=False, sort=False).attention.mean().rename(columns={"attention": "value"})


def heatmap_png(picture: np.ndarray, values: np.ndarray, vmax: float) -> bytes:
    """The picture at SIZE px with the values' grid over it, coloured on 0..vmax (as the book's page)."""
    grid = int(round(len(values) ** 0.5))
    stops = np.asarray(COLORMAP, dtype=np.float32)
    x = np.clip(values / vmax if vmax > 0 else values * 0, 0, 1) * (len(stops) - 1)
    k = np.minimum(np.floor(x).astype(int), len(stops) - 2)
    colours = stops[k] + (stops[k + 1] - stops[k]) * (x - k)[:, None]                    # [G², 3]
    alpha = 255 * (ALPHA[0] + ALPHA[1] * x / (len(stops) - 1))
    rgba = np.concatenate([colours, alpha[:, None]], 1).reshape(grid, grid, 4).round().astype(np.uint8)
    overlay = Image.fromarray(rgba, "RGBA").resize((SIZE, SIZE), Image.NEAREST)
    base = Image.fromarray(picture).convert("RGBA").resize((SIZE, SIZE), Image.BICUBIC)
    buffer = io.BytesIO()
    Image.alpha_composite(base, overlay).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def bars_html(row: pd.DataFrame, vmax: float, title: str) -> str:
    """The [EOS] row as bars coloured by token type."""
    bars = "".join(
        f'<div title="{html.escape(str(r.token))} ({r.token_type}): {r.value:.3f}" style="display:flex;'
        f'flex-direction:column;align-items:center;width:26px"><div style="width:18px;height:'
        f'{round(90 * r.value / vmax) if vmax > 0 else 0}px;background:{TOKEN_COLOURS.get(r.token_type, "#999")}">'
        f'</div><div style="font-size:9px">{html.escape(str(r.token))}</div></div>' for r in row.itertuples())
    return (f'<figure style="margin:0"><div style="display:flex;align-items:flex-end;height:130px;gap:2px">'
            f'{bars}</div><figcaption>{html.escape(title)}</figcaption></figure>')


class LiveExplorer:
    """Widgets: run folder, image file, class prompt; block, head (or mean over heads), text head,
    raw or rollout. A new run, image or class recomputes the tables; the rest only redraws."""

    def __init__(self, run_dir: str, image: str | None = None, data_root: str | None = None):
        self.data_root = data_root
        self.run_dir = widgets.Text(description="run folder", layout=widgets.Layout(width="80%"))
        self.image = widgets.Text(description="image file", layout=widgets.Layout(width="80%"))
        self.classname = widgets.Dropdown(description="class prompt")
        self.block = widgets.IntSlider(0, 0, 0, description="block")
        self.head = widgets.IntSlider(0, 0, 0, description="head")
        self.mean_heads = widgets.Checkbox(False, description="mean over heads")
        self.text_head = widgets.IntSlider(0, 0, 0, description="text head")
        self.view = widgets.ToggleButtons(options=["attention", "rollout"], description="view")
        self.panels = {p: widgets.Image(format="png", width=SIZE, height=SIZE) for p in PANELS}
        self.numbers, self.text, self.message = widgets.HTML(), widgets.HTML(), widgets.HTML()
        self.run, self.tables = None, None
        self.widget = widgets.VBox([
            self.run_dir, self.image, self.classname,
            widgets.HBox([self.block, self.head, self.mean_heads]), widgets.HBox([self.text_head, self.view]),
            widgets.HBox([widgets.VBox([self.panels[p], widgets.Label(p)]) for p in PANELS]),
            self.numbers, self.text, self.message])
        self.run_dir.observe(self._load_run, names="value")
        for w in (self.image, self.classname):
            w.observe(self._compute, names="value")
        for w in (self.block, self.head, self.mean_heads, self.text_head, self.view):
            w.observe(self.draw, names="value")
        self.run_dir.value = str(run_dir)
        if image:
            self.image.value = str(image)

    def _load_run(self, *_):
        try:
            self.run = load_run(self.run_dir.value, data_root=self.data_root)
        except (RunFolderError, OSError, ValueError) as err:
            self.message.value = f"<b>cannot open the run:</b> {html.escape(str(err))}"
            return
        options = [(f"{name} ({g})", (g, label)) for g in GROUPS
                   for label, name in enumerate(self.run.splits[g].classnames)]
        first = self.run.splits["base"].test[0] if self.run.splits["base"].test else None
        self.classname.unobserve(self._compute, names="value")      # one computation for the new run
        self.classname.options = options
        self.classname.value = ("base", first.label) if first else options[0][1]
        self.classname.observe(self._compute, names="value")
        if first is not None and not self.image.value:
            self.image.value = first.path
        else:
            self._compute()

    def _compute(self, *_):
        if self.run is None or not self.image.value or self.classname.value is None:
            return
        try:
            self.tables = image_tables(self.run, [self.image.value], [self.classname.value])
        except (OSError, ValueError) as err:
            self.message.value = f"<b>cannot read</b> {html.escape(self.image.value)}: {html.escape(str(err))}"
            return
        self.message.value = ""
        _, _, blocks, heads, _ = self.tables["cls_attention"].shape
        eos = self.tables["eos_attention"]
        self.block.max, self.head.max, self.text_head.max = blocks - 1, heads - 1, int(eos["head"].max())
        self.draw()

    def draw(self, *_):
        """Redraw the panels, numbers and bars for the current settings from the computed tables."""
        if self.tables is None:
            return
        t, b, rollout = self.tables, self.block.value, self.view.value == "rollout"
        head = None if self.mean_heads.value else self.head.value
        rows = {p: cls_row(t, p, b, head, rollout) for p in PANELS}
        vmax = max(float(r.max()) for r in rows.values())
        for p in PANELS:
            self.panels[p].value = heatmap_png(t["pictures"][0], rows[p], vmax)
        pick = slice(None) if head is None else head
        share, lam = t["prompt_share"][0, b, pick].mean(), t["lam"][0, b, pick].mean()
        self.numbers.value = (f"Block {b}, {'mean over heads' if head is None else f'head {head}'}: the prompts take "
                              f"{100 * share:.1f} % of the [CLS] attention; λ = {lam:.3f}. Colour scale 0 to "
                              f"{vmax:.3g}, shared by the three panels.")
        classname = t["images"].classname[0]
        text_head = None if self.mean_heads.value else self.text_head.value
        eos = {m: eos_row(t, m, classname, min(b, int(t["eos_attention"].block.max())), text_head, rollout)
               for m in TEXT_MODELS}
        emax = max(float(r.value.max()) for r in eos.values())
        self.text.value = '<div style="display:flex;gap:24px">' + "".join(
            bars_html(r, emax, f"[EOS] attention over the class prompt: {m}") for m, r in eos.items()) + "</div>"


def explorer(run_dir: str | Path, image: str | None = None, data_root: str | None = None) -> widgets.VBox:
    """The live explorer's widgets for the finished run in ``run_dir`` (image: its first base test image)."""
    return LiveExplorer(str(run_dir), image, data_root).widget
