"""The book's attention explorer: every dataset and seed of the build, the CLIP, W/O and W panels
side by side on one colour scale and W − CLIP on a diverging one, every head of a block, offline.

The page itself carries only a small script (``explorer.js``, inlined into the notebook's output)
and the list of datasets and seeds. Each (dataset, seed)'s data are a script file,
``_static/explorer/<name>_seed<k>.js`` of the built site, that the page adds when a reader picks
it. A script rather than a ``fetch`` because the book also works opened from disk (``file://``),
where browsers refuse ``fetch`` but still load scripts.

What a dataset file holds (`pack_dataset`, from the tables of ``stats/explorer_data.py``):
attention rows quantised to uint8 per row, scaled to the row's maximum (`quantise_rows`), so
each value is off by at most half a step of 256 levels of its row's maximum (`TOLERANCE`):
below what the colour scale (256 levels, from 0 to the largest value of the three panels) or a
bar can show. W/O rows are W rows rescaled (the prompt keys' mass removed and the rest
renormalised), so they share W's codes and keep only their own scale. Arrays travel as base64.
"""
from __future__ import annotations

import base64
import io
import json
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import HTML
from PIL import Image

from ..files import write_text_atomic
from ..stats.explorer_data import PANELS, TEXT_MODELS

LEVELS = 255
TOLERANCE = 0.5 / LEVELS        # largest error of a dequantised value, as a fraction of its row's maximum
SCRIPT = Path(__file__).with_name("explorer.js")
DATA_FOLDER = "explorer"
PICTURE_PX = 112        # under the site's _static/
# Inferno, 9 stops from 0 to the maximum (the browser interpolates between them).
COLORMAP = [[0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85],
            [227, 89, 51], [249, 140, 10], [249, 201, 50], [252, 255, 164]]
# W − CLIP: blue (less attention) through white (no change) to red (more), symmetric about 0.
DIVERGING = [[49, 54, 149], [116, 173, 209], [247, 247, 247], [244, 109, 67], [165, 0, 38]]
# The colour layer's opacity over the picture: low attention is dark (the colour map's dark end
# hides most of the picture), high attention bright.
OPACITY = 0.8
NEAR_ALL = 0.9     # a prompts' share of the [CLS] attention from which the page says why W looks dark
TOKEN_COLOURS = {"sos": "#7f7f7f", "prompt": "#d62728", "template": "#9467bd", "category": "#1f77b4",
                 "period": "#2ca02c", "eos": "#ff7f0e"}


class ExplorerDataError(ValueError):
    """Tables handed to the explorer do not have the shapes ``explorer_data`` documents."""


# --- quantisation ---------------------------------------------------------------------------

def quantise_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative rows (last axis) as uint8 codes of their maximum, and the maxima (float32)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all() or (x < 0).any():
        raise ExplorerDataError("attention rows must be finite and non-negative")
    scale = x.max(axis=-1)
    codes = np.rint(x / np.where(scale > 0, scale, 1)[..., None] * LEVELS).astype(np.uint8)
    return codes, scale.astype(np.float32)


def dequantise_rows(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The inverse of `quantise_rows`, within ``TOLERANCE * scale`` of the original rows."""
    return codes.astype(np.float32) / LEVELS * scale[..., None]


def _b64(array: np.ndarray) -> str:
    dtype = np.uint8 if array.dtype == np.uint8 else np.dtype("<f4")
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _quantised(x: np.ndarray) -> dict:
    codes, scale = quantise_rows(x)
    return {"codes": _b64(codes), "scale": _b64(scale)}


# --- one dataset ----------------------------------------------------------------------------

def pack_dataset(name: str, tables: dict, seed: int = 1) -> dict:
    """The data file's content (see the module docstring) from ``explorer_data`` tables of the run
    of ``name`` with ``seed``."""
    cls, rollout = tables["cls_attention"], tables["cls_rollout"]
    if cls.ndim != 5 or cls.shape[0] != len(PANELS) or rollout.shape != cls.shape[:3] + cls.shape[4:]:
        raise ExplorerDataError(f"{name}: cls_attention must be [{len(PANELS)}, I, L, H, G²] and cls_rollout "
                                f"[{len(PANELS)}, I, L, G²]; got {cls.shape} and {rollout.shape}")
    _, n_images, n_blocks, n_heads, n_patches = cls.shape
    grid = int(round(n_patches ** 0.5))
    images = tables["images"]
    if grid * grid != n_patches or len(images) != n_images or len(tables["pictures"]) != n_images:
        raise ExplorerDataError(f"{name}: {n_patches} patches are not a square grid, or the images table "
                                f"({len(images)} rows) and pictures ({len(tables['pictures'])}) are not {n_images}")
    codes, scale = quantise_rows(cls)
    w, wo = PANELS.index("W"), PANELS.index("W/O")
    if np.abs(codes[wo].astype(int) - codes[w]).max() > 1:
        raise ExplorerDataError(f"{name}: the W/O rows are not the W rows rescaled; check the panels' order {PANELS}")
    text = tables["eos_attention"]
    return {
        "name": name, "seed": int(seed), "key": data_key(name, seed), "grid": grid, "blocks": n_blocks, "heads": n_heads,
        "text_blocks": int(text["block"].max()) + 1, "text_heads": int(text["head"].max()) + 1,
        "panels": list(PANELS), "code_panel": [0 if p == "CLIP" else 1 for p in PANELS],  # W/O uses W's codes
        "images": [{"id": row.image, "classname": row.classname, "group": row.group, "picture": _jpeg(picture)}
                   for row, picture in zip(images.itertuples(), tables["pictures"])],
        "cls": {"codes": _b64(codes[[PANELS.index("CLIP"), w]]), "scale": _b64(scale)},
        "rollout": _quantised(rollout),
        "prompt_share": _b64(tables["prompt_share"]), "lam": _b64(tables["lam"]),
        "text": _pack_text(name, text, tables["eos_rollout"]),
    }


def _pack_text(name: str, raw: pd.DataFrame, rolled: pd.DataFrame) -> dict:
    """Per class prompt and model: tokens, token types, [EOS] rows [L, H, T] and rollout rows [L, T]."""
    packed = {}
    for (classname, model), part in raw.groupby(["classname", "model"], sort=False):
        wide = part.pivot_table(index=["block", "head"], columns="position", values="attention")
        blocks, heads = wide.index.levshape
        if wide.isna().any().any() or len(wide) != blocks * heads:
            raise ExplorerDataError(f"{name}: the [EOS] rows of {classname!r} ({model}) miss blocks, heads or positions")
        tokens = part[(part["block"] == 0) & (part["head"] == 0)].sort_values("position")
        roll = rolled[(rolled.classname == classname) & (rolled.model == model)].pivot_table(
            index="block", columns="position", values="rollout")
        if len(tokens) != wide.shape[1]:
            raise ExplorerDataError(f"{name}: the tokens of {classname!r} ({model}) do not match its [EOS] rows")
        packed.setdefault(classname, {})[model] = {
            "tokens": tokens.token.astype(str).tolist(), "types": tokens.token_type.tolist(),
            "attention": _quantised(wide.to_numpy().reshape(blocks, heads, -1)),
            "rollout": _quantised(roll.to_numpy())}
    missing = [c for c, models in packed.items() if set(models) != set(TEXT_MODELS)]
    if missing:
        raise ExplorerDataError(f"{name}: class prompts {missing[:3]} lack one of the models {TEXT_MODELS}")
    return packed


def _jpeg(picture: np.ndarray) -> str:
    """The picture as an inline JPEG of at most ``PICTURE_PX`` pixels a side (the page draws it
    under a grid of at most 14 × 14 cells at 224 px)."""
    image = Image.fromarray(np.asarray(picture, dtype=np.uint8))
    if max(image.size) > PICTURE_PX:
        image = image.resize((PICTURE_PX, PICTURE_PX), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def data_key(name: str, seed: int) -> str:
    """How the page names one (dataset, seed)'s data (as ``key`` in explorer.js)."""
    return f"{name} seed {int(seed)}"


def data_file(name: str, seed: int) -> str:
    """The (dataset, seed)'s file, relative to the site's ``_static/``."""
    return f"{DATA_FOLDER}/{re.sub(r'[^A-Za-z0-9_-]', '_', name)}_seed{int(seed)}.js"


def dataset_script(packed: dict) -> str:
    """The data file: registers the data with the page's explorer when the browser runs it."""
    body = json.dumps(packed, separators=(",", ":")).replace("<", "\\u003c")
    return ("(window.attentionExplorerData = window.attentionExplorerData || {})"
            f"[{json.dumps(packed['key'])}] = {body};\n")


def write_dataset(static_dir: str | Path, name: str, tables: dict, seed: int = 1) -> Path:
    """Pack ``tables`` (the run of ``name`` with ``seed``) and write them to
    ``<static_dir>/explorer/<name>_seed<seed>.js`` (atomically)."""
    return write_text_atomic(Path(static_dir) / data_file(name, seed), dataset_script(pack_dataset(name, tables, seed)))


# --- the page -------------------------------------------------------------------------------

def explorer(datasets: Sequence[str], seeds: Sequence[int] = (1,)) -> HTML:
    """The explorer for the datasets and seeds whose files `write_dataset` wrote; the first
    dataset's first seed is shown first."""
    if not datasets or not seeds:
        raise ExplorerDataError(f"the explorer needs at least one dataset and one seed, got {list(datasets)} and {list(seeds)}")
    seeds = [int(s) for s in seeds]
    config = {"datasets": list(datasets), "seeds": {d: seeds for d in datasets},
              "files": {data_key(d, s): f"_static/{data_file(d, s)}" for d in datasets for s in seeds},
              "panels": list(PANELS), "textModels": list(TEXT_MODELS), "colormap": COLORMAP, "diverging": DIVERGING,
              "opacity": OPACITY, "nearAll": NEAR_ALL, "tokenColours": TOKEN_COLOURS, "tolerance": TOLERANCE}
    div_id = f"attention-explorer-{uuid.uuid4().hex}"
    config_json = json.dumps(config).replace("<", "\\u003c")
    return HTML(f'<div id="{div_id}" class="book-chart attention-explorer" data-book-chart="attention_explorer">'
                f'</div>\n<script type="text/javascript">\n{SCRIPT.read_text()}\n'
                f'attentionExplorer(document.getElementById({json.dumps(div_id)}), {config_json});\n</script>')


# --- page weight ----------------------------------------------------------------------------

def synthetic_tables(n_images: int, blocks: int, heads: int, grid: int, text_blocks: int, text_heads: int,
                     n_tokens: int, image_size: int, seed: int = 0) -> dict:
    """Random tables of the shapes ``explorer_data`` gives for a model of this shape (for sizes
    and tests): attention rows are distributions, W/O is W renormalised without its first key."""
    rng = np.random.default_rng(seed)
    full = rng.dirichlet(np.ones(grid * grid + 2), size=(len(PANELS), n_images, blocks, heads))
    cls = full[..., 2:].copy()                             # keys 0, 1: [CLS] and one prompt
    w, wo = PANELS.index("W"), PANELS.index("W/O")
    cls[wo] = full[w][..., 2:] / full[w][..., 1:].sum(-1, keepdims=True)
    names = [f"class {i}" for i in range(n_images)]
    images = pd.DataFrame({"image": [f"{i}: {n}" for i, n in enumerate(names)], "classname": names,
                           "group": ["base" if i < (n_images + 1) // 2 else "novel" for i in range(n_images)]})
    text = pd.DataFrame([(m, c, b, h, t, f"w{t}", "template") for m in TEXT_MODELS for c in names
                         for b in range(text_blocks) for h in range(text_heads) for t in range(n_tokens)],
                        columns=["model", "classname", "block", "head", "position", "token", "token_type"])
    text["attention"] = rng.random(len(text))
    rolled = text[text["head"] == 0].drop(columns="head").rename(columns={"attention": "rollout"})
    return {"cls_attention": cls.astype(np.float32), "cls_rollout": cls[:, :, :, 0].astype(np.float32),
            "images": images, "pictures": rng.integers(0, 256, (n_images, image_size, image_size, 3), dtype=np.uint8),
            "prompt_share": full[w][..., 1].astype(np.float32),
            "lam": (1 - full[w][..., 1]).astype(np.float32), "eos_attention": text, "eos_rollout": rolled}


def dataset_bytes(n_images: int, blocks: int = 12, heads: int = 12, grid: int = 14, text_blocks: int = 12,
                  text_heads: int = 8, n_tokens: int = 20, image_size: int = 224) -> int:
    """Size of one dataset file for a model of this shape (default ViT-B/16), by packing random
    tables (random pictures compress worse than photos: an upper bound for them)."""
    tables = synthetic_tables(n_images, blocks, heads, grid, text_blocks, text_heads, n_tokens, image_size)
    return len(dataset_script(pack_dataset("ViT-B/16", tables)).encode())


def weight_table(static_dir: str | Path, datasets: Sequence[str], seeds: Sequence[int], n_images: int) -> pd.DataFrame:
    """Bytes of each data file as written (one per dataset and seed; the page loads one at a time),
    then a last row for a ViT-B/16 data file of as many images, by calculation (12 blocks × 12 heads,
    14×14 patches, 224 px; text 12 blocks × 8 heads, 20 tokens)."""
    rows = [{"data file": f"{d}, seed {s}", "kB": round((Path(static_dir) / data_file(d, s)).stat().st_size / 1e3, 1)}
            for d in datasets for s in seeds]
    rows.append({"data file": f"ViT-B/16, {n_images} images (calculated)", "kB": round(dataset_bytes(n_images) / 1e3, 1)})
    return pd.DataFrame(rows)
