"""The live attention explorer: the book's explorer views for any finished prompted run and any
image (a test image or an upload), any query patch, and live ablations of the prompts' two ways.

Computed on demand by the book page's data function (``stats/explorer_data.image_tables``); the
ablations are the causal test's states (``stats/causal.STATES``, ``PromptedCLIP.ablate``), in both towers. Needs a
kernel: ``make explore`` serves it as a Voilà app, ``make lab`` opens ``notebooks/live_explorer.ipynb``.
"""
from __future__ import annotations

import html
import io
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from ..stats import causal
from ..stats.causal import ALL_BLOCKS, BELOW_DEPTH, REMOVALS, STATES
from ..stats.explorer_data import GROUPS, PANELS, TEXT_MODELS, explorer_items, image_tables, model_inputs
from ..files import read_json
from ..model.variants import VariantError, variant_config
from ..study.run_record import METRICS_FILE
from ..study.run_folder import LoadedRun, RunFolderError, load_run
from .explorer_page import COLORMAP, DIVERGING, NEAR_ALL, OPACITY, TOKEN_COLOURS
from .servers import RUN_VARIABLE, RUNS_ROOT_VARIABLE

SIZE = 200              # pixels of a panel
SMALL = 72              # pixels of a head in the overview
TEST_IMAGES = 40        # test images offered per run (half base, half novel, classes in turn)
TOP = 5
DIFFERENCE = "W − CLIP"
AS_TRAINED = (causal.AS_TRAINED, ALL_BLOCKS)


# --- what is shown (the same selections as the book page's script) ---------------------------

def cls_row(tables: dict, panel: str, block: int, head: int | None, rollout: bool, image: int = 0) -> np.ndarray:
    """[G²] the query's row of one panel: a head, the mean over heads (``head=None``), or the rollout."""
    p = PANELS.index(panel)
    if rollout:
        return tables["cls_rollout"][p, image, block]
    rows = tables["cls_attention"][p, image, block]                    # [H, G²]
    return rows.mean(0) if head is None else rows[head]


def panel_rows(tables: dict, block: int, head: int | None, rollout: bool) -> dict[str, np.ndarray]:
    """The three panels' rows and W − CLIP."""
    rows = {p: cls_row(tables, p, block, head, rollout) for p in PANELS}
    return rows | {DIFFERENCE: rows["W"] - rows["CLIP"]}


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


@torch.no_grad()
def top_classes(run: LoadedRun, path: str, group: str, ablation: tuple[str, str], k: int = TOP) -> pd.DataFrame:
    """The ``k`` most probable classes of ``group`` for the image file, as trained and with the
    causal test's ``ablation`` (a key of ``causal.STATES``, in both towers): rank, class and probability each."""
    model = run.model(group)
    inputs, _ = model_inputs(run, [path])
    names = model.classnames
    columns = {}
    for label, key in (("trained", AS_TRAINED), ("ablated", ablation)):
        with model.ablate(STATES[key]):
            probs = model(inputs).float().softmax(-1)[0]
        p, c = probs.topk(min(k, len(names)))
        columns |= {f"class {label}": [names[i] for i in c.tolist()], f"p {label}": p.numpy()}
    return pd.DataFrame({"rank": range(1, len(p) + 1), **columns})


def prompted_runs(runs_root: str | Path) -> list[Path]:
    """The finished run folders of prompted variants at any depth under ``runs_root``
    (``.../<dataset>/<variant>/seed<k>`` holding their metrics)."""
    found = [p for p in Path(runs_root).rglob(METRICS_FILE) if re.fullmatch(r"seed\d+", p.parent.name)]
    settings = {p.parent: read_json(p, "").get("settings", {}) for p in found}
    return sorted(run for run, s in settings.items() if any(has_prompts(s.get("variant"), s.get("variant_params") or {})))


def has_prompts(variant: str, variant_params: dict) -> tuple[bool, bool]:
    """Whether a run of this variant learns vision prompts and text prompts."""
    try:
        config = variant_config(variant, **variant_params)
    except (VariantError, TypeError):
        return False, False
    return config.vision_n_ctx > 0 and config.vision_depth > 0, config.text_n_ctx > 0 and config.text_depth > 0


# --- drawing ---------------------------------------------------------------------------------

def _colours(stops: list, unit: np.ndarray) -> np.ndarray:
    stops = np.asarray(stops, dtype=np.float32)
    x = np.clip(unit, 0, 1) * (len(stops) - 1)
    k = np.minimum(np.floor(x).astype(int), len(stops) - 2)
    return stops[k] + (stops[k + 1] - stops[k]) * (x - k)[..., None]


def grid_png(picture: np.ndarray, unit: np.ndarray, stops: list, size: int = SIZE) -> bytes:
    """The picture at ``size`` px under the grid of ``unit`` values (0..1) coloured on ``stops``
    at the book page's opacity: low values dark, high bright (or, diverging, blue / white / red)."""
    grid = int(round(len(unit) ** 0.5))
    rgb = _colours(stops, unit).reshape(grid, grid, 3)
    layer = Image.fromarray(rgb.round().astype(np.uint8)).resize((size, size), Image.NEAREST)
    base = Image.fromarray(picture).convert("RGB").resize((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    Image.blend(base, layer, OPACITY).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_bar_html(stops: list, low: float, high: float, kind: str) -> str:
    gradient = ", ".join(f"rgb({r},{g},{b})" for r, g, b in stops)
    middle = "0" if low < 0 else f"{high / 2:.3g}"
    return (f'<div class="colour-bar" data-kind="{kind}" data-min="{low:.6g}" data-max="{high:.6g}" style="width:100%">'
            f'<div style="height:10px;background:linear-gradient(to right, {gradient})"></div>'
            f'<div style="display:flex;justify-content:space-between;font-size:0.75em"><span>{low:.3g}</span>'
            f'<span>{middle}</span><span>{high:.3g}</span></div></div>')


def bars_html(row: pd.DataFrame, vmax: float, title: str) -> str:
    """The [EOS] row as bars coloured by token type, each with its value above it."""
    bars = "".join(
        f'<div title="{html.escape(str(r.token))} ({r.token_type}): {r.value:.4f}" style="display:flex;'
        f'flex-direction:column;align-items:center;width:28px"><div style="font-size:8px">{r.value:.2f}</div>'
        f'<div style="width:18px;height:{round(90 * r.value / vmax) if vmax > 0 else 0}px;'
        f'background:{TOKEN_COLOURS.get(r.token_type, "#999")}"></div>'
        f'<div style="font-size:9px">{html.escape(str(r.token))}</div></div>' for r in row.itertuples())
    return (f'<figure style="margin:0"><div style="display:flex;align-items:flex-end;height:140px;gap:2px">'
            f'{bars}</div><figcaption>{html.escape(title)} (0 to {vmax:.3g})</figcaption></figure>')


def top_html(top: pd.DataFrame, ablation: tuple[str, str]) -> str:
    rows = "".join(f"<tr><td>{rank}</td><td>{html.escape(a)}</td><td>{pa:.4f}</td><td>{html.escape(b)}</td>"
                   f"<td>{pb:.4f}</td></tr>" for rank, a, pa, b, pb in zip(
                       top["rank"], top["class trained"], top["p trained"], top["class ablated"], top["p ablated"]))
    return (f'<table class="top-classes"><thead><tr><th></th><th colspan="2">as trained</th>'
            f'<th colspan="2">{html.escape(causal.AS_TRAINED if ablation == AS_TRAINED else ", ".join(ablation))}</th>'
            f'</tr></thead><tbody>{rows}</tbody></table>')


# --- the widgets -----------------------------------------------------------------------------

class LiveExplorer:
    """Widgets: run, image (test image or upload), class prompt, query patch; block, head (or mean
    over heads), text head, raw or rollout; the ablation. A new run, image, class or query
    recomputes the tables; the rest only redraws."""

    def __init__(self, runs_root: str | Path, run_dir: str | Path | None = None, data_root: str | None = None):
        self.runs_root, self.data_root = Path(runs_root), data_root
        layout = widgets.Layout(width="auto")
        self.run_choice = widgets.Dropdown(description="run", layout=widgets.Layout(width="28em"))
        self.image = widgets.Dropdown(description="test image", layout=widgets.Layout(width="28em"))
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="your image")
        self.classname = widgets.Dropdown(description="class prompt", layout=widgets.Layout(width="28em"))
        self.block = widgets.IntSlider(0, 0, 0, description="block", continuous_update=False)
        self.head = widgets.IntSlider(0, 0, 0, description="head", continuous_update=False)
        self.mean_heads = widgets.Checkbox(False, description="mean over heads", indent=False, layout=layout)
        self.text_head = widgets.IntSlider(0, 0, 0, description="text head", continuous_update=False)
        self.view = widgets.ToggleButtons(options=["attention", "rollout"], description="view")
        self.query = widgets.IntText(0, description="query", layout=widgets.Layout(display="none"))
        self.query_grid = widgets.GridBox(layout=widgets.Layout(grid_gap="1px"))
        self.query_cls = widgets.Button(description="[CLS]", layout=widgets.Layout(width="5em"))
        self.removal = widgets.ToggleButtons(options=[causal.AS_TRAINED, *REMOVALS], description="ablation")
        self.form = widgets.ToggleButtons(options=[ALL_BLOCKS, BELOW_DEPTH], description="in")
        self.panels = {p: widgets.Image(format="png", width=SIZE, height=SIZE) for p in (*PANELS, DIFFERENCE)}
        for p, image in self.panels.items():
            image.add_class("live-panel")
        self.readout, self.note, self.numbers, self.bars = (widgets.HTML() for _ in range(4))
        self.text, self.top, self.message = widgets.HTML(), widgets.HTML(), widgets.HTML()
        self.message.add_class("live-message")
        self.top.add_class("live-top")
        self.readout.add_class("live-readout")
        self.overview = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.run, self.source, self.tables, self._upload_file = None, None, None, None
        titles = {"CLIP": "CLIP (zero-shot)", "W/O": "W/O: prompts' keys dropped", "W": "W: prompted, as run",
                  DIFFERENCE: "W − CLIP (blue less, red more)"}
        self.widget = widgets.VBox([
            self.run_choice, widgets.HBox([self.image, self.upload]), self.classname, self.message,
            widgets.HBox([self.view, self.mean_heads]), widgets.HBox([self.block, self.head, self.text_head]),
            self.readout, self.note,
            widgets.HBox([widgets.VBox([self.panels[p], widgets.Label(titles[p])]) for p in self.panels]),
            self.bars, self.numbers,
            widgets.HTML("<b>Query</b>: click a patch (row-major, as on the image) or [CLS] to see its attention row."),
            widgets.HBox([self.query_cls, self.query_grid]),
            widgets.HTML("<b>Every head of the block</b> (W panel, one scale); click a head to show it above."),
            self.overview, self.text,
            widgets.HTML("<b>Live ablation</b> of the prompts' two ways (the causal test): the top classes "
                         "of the image's class group as trained and ablated."),
            self.removal, self.form, self.top])
        self.run_choice.observe(self._load_run, names="value")
        self.image.observe(self._pick_test_image, names="value")
        self.upload.observe(self._uploaded, names="value")
        for w in (self.classname, self.query):
            w.observe(self._compute, names="value")
        for w in (self.block, self.head, self.mean_heads, self.text_head, self.view):
            w.observe(self.draw, names="value")
        for w in (self.removal, self.form):
            w.observe(self._ablate, names="value")
        self.query_cls.on_click(lambda _: setattr(self.query, "value", 0))
        runs = prompted_runs(self.runs_root)
        if run_dir is not None and Path(run_dir).resolve() not in [r.resolve() for r in runs]:
            runs.insert(0, Path(run_dir))                  # shown even if it is not one (it says why)
        if not runs:
            self.message.value = (f"<b>No finished runs of prompted variants under {html.escape(str(self.runs_root))}</b>: run the sweep "
                                  "(`make book` for the demo) or pass the output root of your experiment.")
            return
        self.run_choice.options = [(str(r.relative_to(self.runs_root)) if r.is_relative_to(self.runs_root) else str(r),
                                    str(r)) for r in runs]
        self.run_choice.value = str(run_dir if run_dir is not None else runs[0])

    # --- computing -------------------------------------------------------------------------
    def _load_run(self, *_):
        self.tables = None
        try:
            run = load_run(self.run_choice.value, data_root=self.data_root)
        except (RunFolderError, OSError, ValueError, KeyError) as err:
            self.message.value = f"<b>Cannot open {html.escape(self.run_choice.value)} as a run:</b> {html.escape(str(err))}"
            return
        if not any(has_prompts(run.settings.variant, run.settings.variant_params)):
            self.message.value = (f"<b>{html.escape(self.run_choice.value)} has no prompts</b> (variant "
                                  f"{html.escape(run.settings.variant)}): pick a run of a prompted variant (ivlp, vision, text).")
            return
        self.run, self.message.value = run, ""
        n = min(TEST_IMAGES, 2 * min(len(run.splits[g].test) for g in GROUPS))
        items = explorer_items(run, n)
        names = {g: run.splits[g].classnames for g in GROUPS}
        classes = [(f"{names[g][label]} ({g})", (g, label)) for g in GROUPS for label in range(len(names[g]))]
        with self._quiet():
            self.classname.options = classes
            self.image.options = [(f"{group}: {names[group][item.label]} · {Path(item.path).name}",
                                   (item.path, group, item.label)) for item, group in items]
        self.image.value = None
        self.image.value = self.image.options[0][1]

    _busy = False

    @contextmanager
    def _quiet(self):
        """Change the image and class widgets without recomputing for each change."""
        self._busy = True
        try:
            yield
        finally:
            self._busy = False

    def _pick_test_image(self, change):
        if change["new"] is None or self._busy:
            return
        path, group, label = change["new"]
        self.source = path
        with self._quiet():
            self.classname.value = (group, label)
        self._compute()

    def _uploaded(self, change):
        files = change["new"]
        if not files:
            return
        upload = files[0]
        name = upload["name"]
        try:
            with Image.open(io.BytesIO(upload["content"])) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            self.message.value = (f"<b>{html.escape(name)} is not an image</b> that can be read: "
                                  "upload a PNG, JPEG or another image file.")
            return
        suffix = Path(name).suffix or ".img"
        with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
            f.write(bytes(upload["content"]))
        if self._upload_file:
            Path(self._upload_file).unlink(missing_ok=True)
        self._upload_file = self.source = f.name
        self.message.value = f"Showing your image {html.escape(name)}."
        self._compute()

    def _compute(self, *_):
        if self.run is None or self.source is None or self.classname.value is None or self._busy:
            return
        try:
            self.tables = image_tables(self.run, [self.source], [self.classname.value], self.query.value)
        except (OSError, ValueError) as err:
            self.message.value = f"<b>Cannot show {html.escape(str(self.source))}:</b> {html.escape(str(err))}"
            return
        _, _, blocks, heads, patches = self.tables["cls_attention"].shape
        eos = self.tables["eos_attention"]
        self.block.max, self.head.max, self.text_head.max = blocks - 1, heads - 1, int(eos["head"].max())
        self._query_buttons(int(round(patches ** 0.5)))
        self.draw()
        self._ablate()

    def _query_buttons(self, grid: int):
        if len(self.query_grid.children) == grid * grid:
            return
        buttons = []
        for q in range(grid * grid):
            b = widgets.Button(description="", tooltip=f"patch row {q // grid}, column {q % grid}",
                               layout=widgets.Layout(width="14px", height="14px", padding="0"))
            b.add_class("query-patch")
            b.on_click(lambda _, q=q: setattr(self.query, "value", q + 1))
            buttons.append(b)
        self.query_grid.children = buttons
        self.query_grid.layout.grid_template_columns = f"repeat({grid}, 14px)"

    def _ablate(self, *_):
        if self.run is None or self.source is None or self.classname.value is None:
            return
        key = AS_TRAINED if self.removal.value == causal.AS_TRAINED else (self.removal.value, self.form.value)
        self.top.value = top_html(top_classes(self.run, self.source, self.classname.value[0], key), key)

    # --- drawing ---------------------------------------------------------------------------
    def draw(self, *_):
        """Redraw the panels, numbers, overview and bars for the current settings from the tables."""
        if self.tables is None:
            return
        t, b, rollout = self.tables, self.block.value, self.view.value == "rollout"
        head = None if self.mean_heads.value or rollout else self.head.value
        rows = panel_rows(t, b, head, rollout)
        vmax = max(float(rows[p].max()) for p in PANELS)
        spread = float(np.abs(rows[DIFFERENCE]).max())
        picture = t["pictures"][0]
        for p in PANELS:
            self.panels[p].value = grid_png(picture, rows[p] / vmax if vmax > 0 else rows[p] * 0, COLORMAP)
        self.panels[DIFFERENCE].value = grid_png(picture, 0.5 + rows[DIFFERENCE] / (2 * spread) if spread > 0 else
                                                 rows[DIFFERENCE] * 0 + 0.5, DIVERGING)
        self.bars.value = ('<div style="display:grid;grid-template-columns:3fr 1fr;gap:8px;width:' f'{4 * SIZE + 24}px">'
                           + colour_bar_html(COLORMAP, 0.0, vmax, "attention")
                           + colour_bar_html(DIVERGING, -spread, spread, "difference") + "</div>")
        query = "[CLS]" if self.query.value == 0 else f"patch {self.query.value - 1}"
        heads_ = "mean over heads" if head is None else f"head {head}"
        what = (f"{query}'s rollout up to block {b} (heads averaged: rollout has no head)" if rollout
                else f"{query}'s attention in block {b}, {heads_}")
        image = t["images"].iloc[0]
        self.readout.value = (f"<b>Shown:</b> {html.escape(self.run_choice.value)}, "
                              f"{html.escape(Path(str(self.source)).name)} with the class prompt of "
                              f"{html.escape(image.classname)} ({image.group}); {html.escape(what)}.")
        pick = slice(None) if head is None else head
        share, lam = float(t["prompt_share"][0, b, pick].mean()), float(t["lam"][0, b, pick].mean())
        vision, _ = has_prompts(self.run.settings.variant, self.run.settings.variant_params)
        self.numbers.value = (f"Prompted model, block {b}, {heads_}: the prompts take {100 * share:.1f} % of the "
                              f"{query}'s attention; λ = {lam:.3f}. Colour scale 0 to {vmax:.3g}, shared by the three panels.")
        self.note.value = (
            f"<i>This run learns no vision prompts (variant {html.escape(self.run.settings.variant)}): its image tower is "
            "CLIP's, so CLIP, W/O and W are the same attention; the text side below shows its prompts.</i>" if not vision else
            f"<i>Here the prompts take {100 * share:.1f} % of the attention, so W's patches share the remaining "
            f"{100 * (1 - share):.1f} % and look dark on the common scale; W/O shows them renormalised.</i>"
            if share >= NEAR_ALL else "")
        self._draw_overview(b)
        text_head = None if self.mean_heads.value else self.text_head.value
        eos = {m: eos_row(t, m, image.classname, min(b, int(t["eos_attention"].block.max())), text_head, rollout)
               for m in TEXT_MODELS}
        emax = max(float(r.value.max()) for r in eos.values())
        self.text.value = '<div style="display:flex;flex-wrap:wrap;gap:24px">' + "".join(
            bars_html(r, emax, f"[EOS] attention over the class prompt: {m}") for m, r in eos.items()) + "</div>"

    def _draw_overview(self, block: int):
        rows = self.tables["cls_attention"][PANELS.index("W"), 0, block]            # [H, G²]
        top = float(rows.max())
        if len(self.overview.children) != len(rows):
            boxes = []
            for h in range(len(rows)):
                button = widgets.Button(description=f"head {h}", layout=widgets.Layout(width=f"{SMALL}px"))
                button.add_class("overview-head")
                button.on_click(lambda _, h=h: self._select_head(h))
                boxes.append(widgets.VBox([widgets.Image(format="png", width=SMALL, height=SMALL), button]))
            self.overview.children = boxes
        for h, box in enumerate(self.overview.children):
            box.children[0].value = grid_png(self.tables["pictures"][0], rows[h] / top if top > 0 else rows[h] * 0,
                                             COLORMAP, SMALL)

    def _select_head(self, h: int):
        self.mean_heads.value = False
        self.view.value = "attention"
        self.head.value = h


def explorer(runs_root: str | Path | None = None, run_dir: str | Path | None = None,
             data_root: str | None = None) -> widgets.VBox:
    """The live explorer over the finished runs under ``runs_root``, showing ``run_dir`` first (None:
    ``$EXPLORE_RUNS_ROOT`` and ``$EXPLORE_RUN``, as ``make explore`` sets them, else ``runs`` and
    the first run found)."""
    runs_root = runs_root or os.environ.get(RUNS_ROOT_VARIABLE) or "runs"
    run_dir = run_dir or os.environ.get(RUN_VARIABLE) or None
    return LiveExplorer(runs_root, run_dir, data_root).widget
