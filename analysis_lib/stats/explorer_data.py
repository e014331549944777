"""The attention explorer's data, per finished run: what the book's explorer page and the live
explorer show, computed once by the same functions.

For a few test images (base and novel classes) and the prompted run beside its zero-shot twin
on the same backbone (``analyses.zeroshot_twin``), per block and head:

- the [CLS] query's (or, live, any patch's) attention over the patches in three panels (book/method.md, "Statistics"):
  ``CLIP`` (zero-shot), ``W/O`` (the prompted model with its prompt keys dropped and each row
  renormalised over [CLS] + patches) and ``W`` (the prompted model as run);
- the same three as attention rollout up to each block (heads averaged, ``rollout.py``);
- the prompts' share of the [CLS] attention and λ (the mass left to the original tokens,
  averaged over the [CLS] and patch queries);
- for each image's class prompt, the [EOS] query's attention over its tokens, raw and rolled
  out, for zero-shot CLIP and the prompted model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..data import prompt_classnames
from ..data.readers import Item
from ..data.transforms import eval_transform
from ..files import replace_atomically, write_text_atomic
from ..model.prompted import PromptedCLIP
from ..study.run_folder import LoadedRun
from .analyses import zeroshot_twin
from .attention_stats import GridLayout, renormalise_without
from .rollout import attention_rollout, rollout_row

PANELS = ("CLIP", "W/O", "W")        # the order of the panels' axis in the arrays
TEXT_MODELS = ("CLIP", "prompted")
GROUPS = ("base", "novel")


def explorer_tables(run: LoadedRun, n_images: int = 8) -> dict[str, np.ndarray | pd.DataFrame]:
    """The explorer's tables for ``n_images`` test images of ``run`` (half base, half novel, one
    class after another), written next to the run (`write_explorer_tables`) and into the book's
    explorer page (`report/explorer_page.py`). Keys and shapes (I images,
    L blocks, H heads, G² patches, S the model's input size):

    - ``images`` DataFrame: image, path, classname, group (base / novel), label (within group);
    - ``pictures`` uint8 [I, S, S, 3]: each image as the model sees it (resized, centre-cropped);
    - ``cls_attention`` float32 [3, I, L, H, G²] and ``cls_rollout`` [3, I, L, G²], panels ``PANELS``;
    - ``prompt_share``, ``lam`` float32 [I, L, H] (the prompted model);
    - ``eos_attention`` DataFrame: model, classname, block, head, position, token, token_type,
      attention; ``eos_rollout`` the same with ``rollout`` for ``attention`` and no head.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    chosen = explorer_items(run, n_images)
    return image_tables(run, [item.path for item, _ in chosen], [(group, item.label) for item, group in chosen])


def explorer_items(run: LoadedRun, n: int) -> list[tuple[Item, str]]:
    """``n`` test items, the first ceil(n/2) from the base classes, the rest from the novel ones;
    within a group one image per class in turn, so that as many classes as possible appear."""
    chosen = []
    for group, count in zip(GROUPS, (n - n // 2, n // 2)):
        by_class: dict[int, list[Item]] = {}
        for item in run.splits[group].test:
            by_class.setdefault(item.label, []).append(item)
        queues = [list(items) for _, items in sorted(by_class.items())]
        picked = []
        while len(picked) < count and any(queues):
            picked += [q.pop(0) for q in queues if q][: count - len(picked)]
        chosen += [(item, group) for item in picked]
    if len(chosen) < n:
        raise ValueError(f"{run.settings.dataset} has {len(chosen)} test images, the explorer asked for {n}")
    return chosen


def model_inputs(run: LoadedRun, paths: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """The image files as the run's model sees them [B, 3, S, S] and as pictures uint8 [B, S, S, 3]
    (resized, centre-cropped, not normalised)."""
    size = run.backbone.image_size
    to_model = eval_transform(size, run.backbone.mean, run.backbone.std)
    to_picture = eval_transform(size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    inputs, pictures = [], []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        inputs.append(to_model(rgb))
        pictures.append((to_picture(rgb).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return torch.stack(inputs), np.stack(pictures)


@torch.no_grad()
def image_tables(run: LoadedRun, paths: list[str], classes: list[tuple[str, int]], query: int = 0
                 ) -> dict[str, np.ndarray | pd.DataFrame]:
    """`explorer_tables` for any image files: ``classes[i]`` = (group, label) names the class
    prompt shown beside image ``i`` (label within the group's classes); ``query``: 0 for the [CLS]
    row, q ≥ 1 for the row of patch q - 1 (row-major) instead."""
    if len(paths) != len(classes) or not paths:
        raise ValueError(f"give one (group, label) per image: {len(paths)} paths, {len(classes)} classes")
    prompted = run.model("base")
    inputs, pictures = model_inputs(run, paths)
    tables = vision_tables(prompted, zeroshot_twin(prompted), inputs, query)
    names = [prompt_classnames(run.splits[group].classnames)[label] for group, label in classes]  # as the models name them
    tables["images"] = pd.DataFrame({"image": [f"{i}: {n}" for i, n in enumerate(names)], "path": list(paths),
                                     "classname": names, "group": [g for g, _ in classes],
                                     "label": [label for _, label in classes]})
    tables["pictures"] = pictures
    text = []
    for group in GROUPS:
        labels = sorted({label for g, label in classes if g == group})
        if labels:
            model = prompted if group == "base" else run.model(group)
            text.append(text_tables(model, zeroshot_twin(model), labels))
    tables["eos_attention"] = pd.concat([t[0] for t in text], ignore_index=True)
    tables["eos_rollout"] = pd.concat([t[1] for t in text], ignore_index=True)
    return tables


def vision_tables(prompted: PromptedCLIP, zeroshot: PromptedCLIP, images: torch.Tensor, query: int = 0
                  ) -> dict[str, np.ndarray]:
    """The [CLS] rows (or patch ``query`` - 1's, see `image_tables`) of both models on ``images``
    [B, 3, S, S] (see `explorer_tables`)."""
    names = ["vision.blocks.*.attn.pattern", "vision.blocks.*.attn.lam"]
    with zeroshot.capture(names[:1]) as zs_cache, prompted.capture(names) as cache:
        zeroshot.encode_image(images)
        prompted.encode_image(images)
    layout = GridLayout.from_token_layout(prompted.token_layout("vision"))
    prompt_keys = prompted.token_layout("vision").is_prompt.bool()
    n_blocks = len(prompted.vision_tower.blocks)
    zs = [zs_cache[f"vision.blocks.{b}.attn.pattern"].float() for b in range(n_blocks)]  # L × [B, H, N0, N0]
    w = [cache[f"vision.blocks.{b}.attn.pattern"].float() for b in range(n_blocks)]      # L × [B, H, N, N]
    wo = [renormalise_without(p, prompt_keys) for p in w]
    rows = {"CLIP": zs, "W/O": wo, "W": w}
    patches = layout.patches
    if not 0 <= query <= layout.grid ** 2:
        raise ValueError(f"query {query} is neither [CLS] (0) nor one of the {layout.grid ** 2} patches (1 to {layout.grid ** 2})")
    q = layout.cls_index if query == 0 else layout.first_patch + query - 1   # the same position in both models
    cls = np.stack([torch.stack([p[:, :, q, patches] for p in rows[m]], 1).cpu().numpy() for m in PANELS])
    rollout = np.stack([torch.stack([rollout_row(attention_rollout(rows[m][: b + 1]), q)[:, patches]
                                     for b in range(n_blocks)], 1).cpu().numpy() for m in PANELS])
    original = ~prompt_keys
    lam = torch.stack([cache[f"vision.blocks.{b}.attn.lam"].float()[..., original].mean(-1)
                       for b in range(n_blocks)], 1)                                    # [B, L, H]
    share = torch.stack([p[:, :, q, prompt_keys].sum(-1) for p in w], 1)                # [B, L, H]
    return {"cls_attention": cls.astype(np.float32), "cls_rollout": rollout.astype(np.float32),
            "prompt_share": share.cpu().numpy().astype(np.float32), "lam": lam.cpu().numpy().astype(np.float32)}


def text_tables(prompted: PromptedCLIP, zeroshot: PromptedCLIP, labels: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The [EOS] rows of the class prompts ``labels``, raw per head and rolled out, both models."""
    raw, rolled = [], []
    for name, model in zip(TEXT_MODELS, (zeroshot, prompted)):
        with model.capture("text.blocks.*.attn.pattern") as cache:
            model.encode_text()
        patterns = [cache[f"text.blocks.{b}.attn.pattern"].float() for b in range(len(model.text_tower.blocks))]
        types = model.token_layout("text").token_types
        for c in labels:
            eos = int(model.eos_index[c])
            tokens = [token_label(model, types[c][p], p, i) for p, i in enumerate(model.text_tokens[c, :eos + 1].tolist())]
            base = {"model": name, "classname": model.classnames[c], "position": range(eos + 1), "token": tokens,
                    "token_type": types[c][:eos + 1]}
            for b, pattern in enumerate(patterns):
                for h in range(pattern.shape[1]):
                    raw.append(pd.DataFrame({**base, "block": b, "head": h,
                                             "attention": pattern[c, h, eos, :eos + 1].cpu().numpy()}))
                row = rollout_row(attention_rollout([p[c:c + 1] for p in patterns[: b + 1]]), eos)[0]
                rolled.append(pd.DataFrame({**base, "block": b, "rollout": row[:eos + 1].cpu().numpy()}))
    columns = ["model", "classname", "block", "head", "position", "token", "token_type"]
    return (pd.concat(raw, ignore_index=True)[columns + ["attention"]],
            pd.concat(rolled, ignore_index=True)[[c for c in columns if c != "head"] + ["rollout"]])


def token_label(model: PromptedCLIP, token_type: str, position: int, token_id: int) -> str:
    """What a reader sees under a bar: [SOS], [EOS], [P1].. for learned prompts, else the word piece."""
    if token_type in ("sos", "eos"):
        return f"[{token_type.upper()}]"
    if token_type == "prompt" and model.config.text_n_ctx:
        return f"[P{position}]"
    return model.tokenizer.decode([token_id]).strip() or "·"


# ------------------------------------------------------------------ stored next to the run
def write_explorer_tables(tables: dict[str, np.ndarray | pd.DataFrame], folder: str | Path) -> Path:
    """Write the tables into ``folder``: arrays in ``arrays.npz``, each DataFrame as ``<name>.csv``
    (every file atomically)."""
    folder = Path(folder)
    arrays = {k: v for k, v in tables.items() if isinstance(v, np.ndarray)}
    with replace_atomically(folder / "arrays.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    for name, frame in tables.items():
        if isinstance(frame, pd.DataFrame):
            write_text_atomic(folder / f"{name}.csv", frame.to_csv(index=False))
    write_text_atomic(folder / "tables.json", json.dumps(sorted(tables)))
    return folder


def read_explorer_tables(folder: str | Path) -> dict[str, np.ndarray | pd.DataFrame]:
    """The tables `write_explorer_tables` wrote."""
    folder = Path(folder)
    if not (folder / "tables.json").is_file():
        raise FileNotFoundError(f"{folder} holds no explorer tables (tables.json missing); "
                                "write them with explorer_data.write_explorer_tables")
    with np.load(folder / "arrays.npz") as arrays:
        tables = {k: arrays[k] for k in arrays.files}
    for name in json.loads((folder / "tables.json").read_text()):
        if name not in tables:
            tables[name] = pd.read_csv(folder / f"{name}.csv", keep_default_na=False)
    return tables
