"""The paper's analyses, each a function from a finished run to small tidy tables.

The per-run stage (``per_run.py``) calls these; the chapters (``report/chapters.py``) read
their tables back; every statistic itself is computed in
``attention_stats.py`` (attention), ``relevance.py`` / ``rollout.py`` (contributions) or
``causal.py`` (ablations).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .. import data
from .collect import collect
from ..model.prompted import PromptedCLIP, build_model
from .relevance import token_relevance
from .rollout import attention_rollout, rollout_row
from ..study.run_folder import LoadedRun, load_run
from ..model.prompted import TOKEN_TYPES
from .attention_stats import (WITH_PROMPT, WITHOUT_PROMPT, AttentionStatistics, DecompositionStatistics,
                              GridLayout, TextLayout, block0_deviation, cls_foreground_enrichment,
                              cls_foreground_of_patches, cls_foreground_share, prompt_background_gap,
                              prompt_background_similarity, relative_attention_change)

def open_run(runs_root: str, dataset: str, variant_name: str, seed: int, data_root: str | None = None,
             device: str = "auto") -> LoadedRun:
    """The finished run ``<runs_root>/<dataset>/<variant_name>/seed<seed>`` (the sweep's layout)."""
    return load_run(Path(runs_root) / dataset / variant_name / f"seed{seed}", device, data_root)


# The zero-shot reference of the figures uses the words IVLP's text prompts start from, so that
# both models' text sequences line up position by position.
ZEROSHOT_TEMPLATE = "a photo of a {}."


def zeroshot_twin(model: PromptedCLIP, template: str = ZEROSHOT_TEMPLATE) -> PromptedCLIP:
    """Zero-shot CLIP on the same backbone and classes as ``model``."""
    return build_model("zeroshot", model.backbone, model.classnames, template).eval()


def first_images(loader, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for x, y in loader:
        images.append(x)
        labels.append(y)
        if sum(len(b) for b in images) >= limit:
            break
    return torch.cat(images)[:limit], torch.cat(labels)[:limit]


# ------------------------------------------------------------------ 0. the datasets
def dataset_summary(datasets: list[data.DatasetSplits]) -> pd.DataFrame:
    """Per dataset: classes (base / novel), images per split, the hand template, masks or not."""
    rows = []
    for splits in datasets:
        spec, n = data.get_spec(splits.name), len(splits.classnames)
        rows.append({"dataset": splits.name, "classes": n, "base": data.base_class_count(n),
                     "novel": n - data.base_class_count(n), "train images": len(splits.train),
                     "val images": len(splits.val), "test images": len(splits.test),
                     "template": spec.template, "masks": spec.mask_dir is not None})
    return pd.DataFrame(rows)


def dataset_gallery(splits: data.DatasetSplits, max_classes: int = 12) -> list[tuple[Image.Image, str]]:
    """The first test image of up to ``max_classes`` classes spread over the label range (so base
    and novel classes both appear), each captioned with its class name and group."""
    n = len(splits.classnames)
    n_base = data.base_class_count(n)
    first = {}
    for item in splits.test:
        first.setdefault(item.label, item)
    gallery = []
    for label in sorted(set(np.linspace(0, n - 1, min(n, max_classes)).round().astype(int).tolist())):
        if label in first:
            with Image.open(first[label].path) as image:
                gallery.append((image.convert("RGB"),
                                f"{splits.classnames[label]} ({'base' if label < n_base else 'novel'})"))
    return gallery


# ------------------------------------------------------------------ 1. decomposition per block
def decomposition_by_block(model: PromptedCLIP, loader, progress: bool = False) -> pd.DataFrame:
    """Mean λ and the norms of the token part and the prompt (bias) part, per tower, block, head."""
    recorder = DecompositionStatistics.for_model(model)
    collect(model, loader, [recorder], progress)
    return recorder.result()


@torch.no_grad()
def block0_proportionality(model: PromptedCLIP, images: torch.Tensor) -> dict[str, float]:
    """Claim C1 per tower: ``block0_deviation`` of ``model`` against its zero-shot twin on ``images``."""
    zs = zeroshot_twin(model)
    names = ["*.blocks.0.attn.pattern", "*.blocks.0.attn.lam"]
    with zs.capture(names) as a, model.capture(names) as b:
        zs(images)
        model(images)
    errors = {}
    for tower in ("vision", "text"):
        zs_layout, layout = zs.token_layout(tower), model.token_layout(tower)
        if tower == "text" and (not model.config.text_n_ctx or zs_layout.n_tokens != layout.n_tokens):
            continue  # no text prompts, or sequences that do not line up position by position
        zs_shared = torch.ones(zs_layout.n_tokens, dtype=torch.bool) if tower == "vision" else ~layout.is_prompt
        errors[tower] = block0_deviation(a[f"{tower}.blocks.0.attn.pattern"], zs_shared,
                                         b[f"{tower}.blocks.0.attn.pattern"], b[f"{tower}.blocks.0.attn.lam"],
                                         ~layout.is_prompt)
    return errors


# ------------------------------------------------------------------ 3 + 4. attention statistics
def attention_statistics(models: dict[str, PromptedCLIP], loader, progress: bool = False) -> pd.DataFrame:
    """EOS attention by token type, attention distance and entropy per block and head, per model."""
    tables = []
    for label, model in models.items():
        recorder = AttentionStatistics.for_model(model)
        collect(model, loader, [recorder], progress)
        tables.append(recorder.result().assign(model=label))
    return pd.concat(tables, ignore_index=True)


# The book's three readings of the image tower's attention, each a (model, attention reading):
# CLIP (zero-shot) and W (the prompted model) as computed (probing-vits), W/O the prompted model
# with its prompt keys dropped and rows renormalised (attention_stats.py). "CLIP" is also the
# zero-shot model's name in every per-run table, "prompted" the analysed variant's.
CLIP, PROMPTED = "CLIP", "prompted"
READINGS = {"CLIP": (CLIP, WITH_PROMPT), "W/O": (PROMPTED, WITHOUT_PROMPT), "W": (PROMPTED, WITH_PROMPT)}


def reading_table(stats: pd.DataFrame) -> pd.DataFrame:
    """One row per (reading, block, head) with distance and entropy (the paper's figure 5), for
    the readings CLIP, W/O and W. Run columns (dataset, variant, seed) of tables read back from
    several runs are kept."""
    vision = stats[stats.tower == "vision"]
    keys = _run_keys(stats)
    rows = []
    for name, (model, reading) in READINGS.items():
        part = vision[(vision.model == model) & (vision.reading == reading)]
        wide = part.pivot_table(index=keys + ["block", "head"], columns="statistic", values="value").reset_index()
        rows.append(wide.assign(reading=name, tower="vision"))
    table = pd.concat(rows, ignore_index=True).rename(
        columns={"attention_distance": "distance", "attention_entropy": "entropy"})
    return table[keys + ["reading", "tower", "block", "head", "distance", "entropy"]]


def eos_attention_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Figure 4: per model, block and head, the [EOS] attention mass on each token type (run columns kept)."""
    text = stats[(stats.tower == "text") & stats.statistic.str.startswith("eos_to_")]
    return text.assign(token_type=text.statistic.str.removeprefix("eos_to_"))[
        _run_keys(stats) + ["model", "block", "head", "token_type", "value"]].rename(columns={"value": "attention"})


def _run_keys(table: pd.DataFrame) -> list[str]:
    """The columns that say which run a row of a table read back from several runs comes from."""
    return [key for key in ("dataset", "variant", "variant_name", "seed") if key in table.columns]


# ------------------------------------------------------------------ 2. token contributions
@torch.no_grad()
def predictions(model: PromptedCLIP, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, true) labels over a loader, class prompts encoded once."""
    text = model.encode_text()
    predicted, true = [], []
    for images, labels in loader:
        predicted.append(model.logits_from(model.encode_image(images), text).argmax(-1).cpu())
        true.append(labels)
    return torch.cat(predicted), torch.cat(true)


def fixed_by_prompting(zeroshot: PromptedCLIP, prompted: PromptedCLIP, loader) -> torch.Tensor:
    """Indices (into the loader's dataset) that zero-shot gets wrong and the prompted model right."""
    zs, labels = predictions(zeroshot, loader)
    pr, _ = predictions(prompted, loader)
    return torch.nonzero((zs != labels) & (pr == labels)).flatten()


def token_contributions(model: PromptedCLIP, dataset, indices: torch.Tensor,
                        control: PromptedCLIP | None = None) -> dict[str, pd.DataFrame]:
    """Relevance (primary) and attention rollout (cross-check) of every token, for zero-shot and the
    prompted model (and its ``control``, labelled so, if given), averaged over the samples ``indices``
    of ``dataset`` (the figures use ``fixed_by_prompting``: those zero-shot gets wrong and the
    prompted model gets right)."""
    if len(indices) == 0:
        raise ValueError("no samples to explain: zero-shot and the prompted model agree on every test image")
    zs = zeroshot_twin(model)
    chosen = [int(i) for i in indices]
    device = next(model.parameters()).device
    images = torch.stack([dataset[i][0] for i in chosen]).to(device)
    labels = torch.tensor([dataset[i][1] for i in chosen], device=device)
    tables = {"vision": [], "text": [], "text_by_type": [], "per_image": []}
    models = {CLIP: zs, PROMPTED: model} | ({"control": control} if control is not None else {})
    for label, m in models.items():
        vision, text = token_relevance(m, images, labels)
        roll_v, roll_t = _rollout_rows(m, images, labels)
        vision, text, roll_v, roll_t = (x.cpu() for x in (vision, text, roll_v, roll_t))
        v_kinds, t_kinds = _vision_kinds(m), _text_kinds(m, labels)
        membership = TextLayout.from_token_layout(m.token_layout("text")).membership()[labels]  # [S, N, types]
        for method, v, t in (("relevance", vision, text), ("rollout", roll_v, roll_t)):
            tables["vision"].append(pd.DataFrame({"model": label, "method": method, "token": range(v.shape[1]),
                                                  "kind": v_kinds, "contribution": v.mean(0).numpy()}))
            tables["text"].append(pd.DataFrame({"model": label, "method": method, "position": range(t.shape[1]),
                                                "kind": t_kinds, "contribution": t.mean(0).numpy()}))
            # Positions hold different types for different class names: sum per type per sample first.
            by_type = torch.einsum("sn,snt->st", t.float(), membership).mean(0)
            tables["text_by_type"].append(pd.DataFrame({"model": label, "method": method, "token_type": TOKEN_TYPES,
                                                        "contribution": by_type.numpy()}))
        grid = m.token_layout("vision").grid
        for i in range(min(4, len(chosen))):
            patch = vision[i, 1:1 + grid * grid].reshape(grid, grid)
            rows, cols = np.meshgrid(range(grid), range(grid), indexing="ij")
            tables["per_image"].append(pd.DataFrame({
                "model": label, "image": chosen[i], "patch_row": rows.ravel(), "patch_col": cols.ravel(),
                "contribution": (patch / patch.max().clamp_min(1e-12)).numpy().ravel()}))
    return {k: pd.concat(v, ignore_index=True) for k, v in tables.items()}


@torch.no_grad()
def _rollout_rows(model: PromptedCLIP, images, labels):
    with model.capture("*.attn.pattern") as cache:
        model(images)
    vision = rollout_row(attention_rollout(cache.blocks("vision", "attn.pattern")), 0)
    text_rollout = attention_rollout(cache.blocks("text", "attn.pattern"))[labels]  # the true class's prompt
    text = rollout_row(text_rollout, model.eos_index[labels])
    return vision, text


def _vision_kinds(model: PromptedCLIP) -> list[str]:
    layout = model.token_layout("vision")
    return ["cls"] + ["patch"] * layout.grid ** 2 + ["prompt"] * int(layout.is_prompt.sum())


def _text_kinds(model: PromptedCLIP, labels: torch.Tensor) -> list[str]:
    types = model.token_layout("text").token_types
    per_class = [types[int(c)] for c in labels]
    return [max(set(col), key=col.count) for col in zip(*per_class)]


# ------------------------------------------------------------------ 5. prompts as background
def patch_foreground(mask_file, image_size: int, grid: int, foreground_values=(1,)) -> torch.Tensor:
    """[G²] bool: patches whose pixels are mostly foreground, after the evaluation crop.

    Masks are trimaps as OxfordPets ships them (1 foreground, 2 background, 3 border); the border
    counts as not foreground.
    """
    with Image.open(mask_file) as mask:
        width, height = mask.size
        scale = image_size / min(width, height)
        mask = mask.resize((max(image_size, round(width * scale)), max(image_size, round(height * scale))),
                           Image.NEAREST)
        left, top = (mask.width - image_size) // 2, (mask.height - image_size) // 2
        pixels = np.asarray(mask.crop((left, top, left + image_size, top + image_size)))
    return majority_patches(torch.from_numpy(np.isin(pixels, foreground_values).astype(np.float32)), grid)


def majority_patches(foreground: torch.Tensor, grid: int) -> torch.Tensor:
    """[G²] bool: the patches of a [S, S] 0/1 pixel mask whose pixels are mostly foreground."""
    patch = foreground.shape[0] // grid
    return foreground.reshape(grid, patch, grid, patch).mean((1, 3)).flatten() > 0.5


def masked_batches(run: LoadedRun, grid: int, limit: int | None):
    """The base test images of the sample (``LoadedRun.sample``) in batches, each with its
    patches' foreground flags [B, G²]."""
    spec = data.get_spec(run.settings.dataset)
    masks = [data.mask_path(spec, run.settings.data_root, item) for item in run.sample("base", limit)]
    if not masks or masks[0] is None:
        raise ValueError(f"{run.settings.dataset} has no foreground masks; use OxfordPets or a demo dataset")
    start = 0
    for images, _ in run.test_loader("base", limit):
        yield images, torch.stack([patch_foreground(m, run.backbone.image_size, grid)
                                   for m in masks[start:start + len(images)]])
        start += len(images)


@torch.no_grad()
def vision_blocks(run: LoadedRun, models: dict[str, PromptedCLIP], limit: int | None, point: str,
                  masked: bool = False):
    """Per batch of the base sample: the index of its first image, the foreground flags (None
    unless ``masked``) and each model's hook ``point`` of every vision block stacked, [L, B, ...]."""
    grid = next(iter(models.values())).token_layout("vision").grid
    batches = (masked_batches(run, grid, limit) if masked
               else ((x, None) for x, _ in run.test_loader("base", limit)))
    first = 0
    for images, fg in batches:
        stacked = {}
        for key, m in models.items():
            with m.capture(f"vision.blocks.*.{point}") as cache:
                m.encode_image(images)
            stacked[key] = cache.stack("vision", point)
        yield first, fg, stacked
        first += len(images)


def _per_image(first: int, model: str, block: int, **columns: torch.Tensor) -> pd.DataFrame:
    """Rows (model, image, block[, head], columns...) of per-image [B] or per-image-and-head [B, H]
    values, images numbered from ``first``."""
    shape = next(iter(columns.values())).shape
    B, H = shape[0], shape[1] if len(shape) == 2 else None
    image = np.arange(first, first + B)
    frame = {"model": model, "image": np.repeat(image, H) if H else image, "block": block}
    if H:
        frame["head"] = np.tile(np.arange(H), B)
    return pd.DataFrame(frame | {name: v.flatten().cpu().numpy() for name, v in columns.items()})


@torch.no_grad()
def background_similarity(run: LoadedRun, model: PromptedCLIP, limit: int | None = 64) -> pd.DataFrame:
    """Per block and head: mean cosine similarity of the vision prompts' keys and values to the
    foreground patches' and to the background patches'."""
    layout = GridLayout.from_token_layout(model.token_layout("vision"))
    rows = []
    for images, fg in masked_batches(run, layout.grid, limit):
        with model.capture(["vision.blocks.*.attn.k", "vision.blocks.*.attn.v"]) as cache:
            model.encode_image(images)
        for name, features in cache.items():
            block, point = int(name.split(".")[2]), name.rsplit(".", 1)[1]
            sim = prompt_background_similarity(features, layout, fg)
            for h in range(sim.foreground.shape[0]):
                rows.append({"block": block, "head": h, "feature": point,
                             "foreground_sum": sim.foreground[h].mean().nan_to_num().item() * sim.n_foreground,
                             "background_sum": sim.background[h].mean().nan_to_num().item() * sim.n_background,
                             "n_foreground": sim.n_foreground, "n_background": sim.n_background})
    sums = pd.DataFrame(rows).groupby(["block", "head", "feature"]).sum().reset_index()
    return sums.assign(foreground=sums.foreground_sum / sums.n_foreground,
                       background=sums.background_sum / sums.n_background)[
        ["block", "head", "feature", "foreground", "background", "n_foreground", "n_background"]]


# ------------------------------------------------------------------ 6. [CLS] on the foreground
def with_clip(models: dict[str, PromptedCLIP]) -> dict[str, PromptedCLIP]:
    """``models`` (e.g. prompted and control) with zero-shot CLIP on the same backbone first."""
    return {CLIP: zeroshot_twin(next(iter(models.values())))} | models


def foreground_share(run: LoadedRun, models: dict[str, PromptedCLIP], limit: int | None = 64) -> pd.DataFrame:
    """Claim C2, per model (CLIP and ``models``), image, block and head: the [CLS] query's
    foreground share of its patch attention (``share``: the same W/O and W), that share
    over the image's foreground fraction (``enrichment``) and, as a second view, the foreground
    share of the whole row, prompts included (``share_of_row``, the W reading)."""
    models = with_clip(models)
    layouts = {k: GridLayout.from_token_layout(m.token_layout("vision")) for k, m in models.items()}
    tables = []
    for first, fg, patterns in vision_blocks(run, models, limit, "attn.pattern", masked=True):
        for key, blocks in patterns.items():
            for block, pattern in enumerate(blocks):                          # [B, H, N, N]
                tables.append(_per_image(
                    first, key, block, share=cls_foreground_of_patches(pattern, layouts[key], fg),
                    enrichment=cls_foreground_enrichment(pattern, layouts[key], fg),
                    share_of_row=cls_foreground_share(pattern, layouts[key], fg, WITH_PROMPT)))
    return pd.concat(tables, ignore_index=True)


def relative_attention(run: LoadedRun, models: dict[str, PromptedCLIP], limit: int | None = 64) -> pd.DataFrame:
    """Claim C1, per model, image and block: ``relative_attention_change`` of its vision attention
    against zero-shot CLIP's on the same images."""
    models = with_clip(models)
    tables = []
    for first, _, patterns in vision_blocks(run, models, limit, "attn.pattern"):
        for key, blocks in patterns.items():
            if key == CLIP:
                continue
            layout = GridLayout.from_token_layout(models[key].token_layout("vision"))
            for block, (pattern, clip) in enumerate(zip(blocks, patterns[CLIP])):
                tables.append(_per_image(first, key, block,
                                         tv=relative_attention_change(pattern, layout, clip)))
    return pd.concat(tables, ignore_index=True)


def background_keys(run: LoadedRun, models: dict[str, PromptedCLIP], limit: int | None = 64) -> pd.DataFrame:
    """Claim C5, per model, image and block: ``prompt_background_gap`` of the vision prompts' keys,
    centred (``centred_gap``) and raw cosine (``raw_gap``, the reading the centring corrects)."""
    tables = []
    for first, fg, keys in vision_blocks(run, models, limit, "attn.k", masked=True):
        for key, blocks in keys.items():
            layout = GridLayout.from_token_layout(models[key].token_layout("vision"))
            for block, k in enumerate(blocks):                                # [B, H, N, d]
                tables.append(_per_image(first, key, block,
                                         centred_gap=prompt_background_gap(k, layout, fg, centred=True),
                                         raw_gap=prompt_background_gap(k, layout, fg, centred=False)))
    return pd.concat(tables, ignore_index=True)
