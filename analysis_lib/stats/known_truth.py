"""The known-truth test (C7, its rule stated in notebooks/known_truth.ipynb): does the prompts'
bias term undo the shift the demo world put into each dataset?

The demo world draws every scene twice (``world.paired_render``): pretraining-style and
dataset-style. In zero-shot CLIP's vision residual stream (each block's output, ``resid_post``) the
known shift per block ℓ and token group is δ_ℓ = mean over pairs of h_ℓ(shifted) − h_ℓ(plain), its
constancy κ_ℓ = ‖δ̄‖² / mean ‖δ_i‖² (1: every pair moved alike, so one constant vector could undo it).
The prompts' bias term writes β_ℓ = out_proj((1 − λ)·attn_P) to the residual stream, the rescaling
out_proj((λ − 1)·attn_X) (together: the prompted minus the prompt-free attention output); bias
tuning writes its learned vectors. The compensation S_ℓ = 1 − E‖h^P_ℓ(shifted) − h_ℓ(plain)‖² /
E‖h_ℓ(shifted) − h_ℓ(plain)‖² says how much of the shift the prompted model removes (1: all, 0: none,
< 0: it moves further away). The oracle is zero-shot CLIP with −δ_ℓ added at block ℓ.

DemoSat has no exact pair (its shift is a scale and a terrain): its scenes are drawn twice
independently (``world.unpaired_render``), so δ is the difference of the two distributions' means,
and the foreground and background groups, which differ between the two drawings, are left out.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.functional import normalize

from ..demo import world
from ..model.attention import Ablation
from ..model.backbone import Backbone
from ..model.capture import Steer
from ..model.prompted import PromptedCLIP
from ..study.run_record import harmonic_mean
from ..study.run_folder import LoadedRun
from ..study.trainer import evaluate
from .analyses import majority_patches, zeroshot_twin
from .causal import MEAN_ABLATED, bias_term_means

GROUPS = ("cls", "foreground", "background", "patches")
SHARED_GROUPS = ("cls", "patches")  # the groups every demo dataset has, paired or not
PAIR_SEED = 7019                     # the renders' own seed: no run's seed, the same for every run
CONDITIONS = {"as trained": Ablation(), "bias term removed": Ablation(keep_bias=False),
              "rescaling removed": Ablation(keep_rescale=False), MEAN_ABLATED: Ablation()}  # + its means
WRITES = ("bias term", "rescaling")
CONTROL = " (control)"  # suffix of the writes of the same variant at its initial, untrained prompts


@dataclass(frozen=True)
class Pairs:
    """Scenes of one dataset drawn pretraining-style (``plain``) and dataset-style (``shifted``),
    as the model's input [P, 3, H, W], with the token groups [P, N] over [CLS] + patches."""

    plain: torch.Tensor
    shifted: torch.Tensor
    groups: dict[str, torch.Tensor]
    paired: bool


def pairs(dataset: str, backbone: Backbone, per_class: int) -> Pairs:
    """``per_class`` pairs of every class of demo dataset ``dataset`` (all classes: the vision tower
    does not see the class names)."""
    if dataset not in world.DATASETS:
        raise ValueError(f"{dataset} is not a demo dataset: only the demo world ({', '.join(world.DATASETS)}) "
                         "knows its shift")
    paired = dataset in world.PAIRED
    plain, shifted, masks = [], [], []
    for label, scene in enumerate(world.DATASETS[dataset].classes):
        for i in range(per_class):
            seed = [PAIR_SEED, label, i]
            if paired:
                p, s, m = world.paired_render(dataset, scene, seed)
            else:
                p, _, s, m = world.unpaired_render(dataset, scene, seed)
            plain.append(p)
            shifted.append(s)
            masks.append(m)
    grid = backbone.clip.visual.grid_size[0]
    fg = torch.stack([majority_patches(torch.from_numpy(m.astype(np.float32)), grid) for m in masks])
    cls = torch.zeros(len(masks), 1 + grid * grid, dtype=torch.bool)
    cls[:, 0] = True
    groups = {"cls": cls, "patches": ~cls}
    if paired:
        no_cls = torch.zeros_like(cls[:, :1])
        groups |= {"foreground": torch.cat([no_cls, fg], 1), "background": torch.cat([no_cls, ~fg], 1)}

    def model_input(images):
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
        return normalize(x, backbone.mean, backbone.std)

    return Pairs(model_input(plain), model_input(shifted), groups, paired)


@torch.no_grad()
def residual_stream(model: PromptedCLIP, images: torch.Tensor, adds: dict | None = None,
                    batch: int = 128) -> torch.Tensor:
    """Each vision block's output at the original tokens ([CLS] + patches), [L, P, N, D], with
    ``adds`` (``Steer``) added on the way."""
    n = model.clip.visual.positional_embedding.shape[0]
    out = []
    for start in range(0, len(images), batch):
        with model.capture(recorder=Steer(adds or {}, "vision.blocks.*.resid_post")) as cache:
            model.encode_image(images[start:start + batch])
        out.append(cache.stack("vision", "resid_post")[:, :, :n].float().cpu())
    return torch.cat(out, dim=1)


def group_means(values: torch.Tensor, groups: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per group, the mean of ``values`` [L, P, N, D] over the group's (image, token) cells, [L, D]."""
    return {g: values[:, mask].mean(1) for g, mask in groups.items() if mask.any()}


def known_shift(h_plain: torch.Tensor, h_shifted: torch.Tensor,
                groups: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(δ, κ) per group: δ [L, D] the mean shift, κ [L] = ‖δ̄‖² / mean ‖δ_i‖²."""
    d = h_shifted - h_plain
    delta = group_means(d, groups)
    kappa = {g: delta[g].pow(2).sum(-1) / d[:, groups[g]].pow(2).sum(-1).mean(1) for g in delta}
    return delta, kappa


def compensation(h_prompted: torch.Tensor, h_plain: torch.Tensor, h_shifted: torch.Tensor,
                 groups: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """S per group, [L]: 1 − E‖h^P(shifted) − h(plain)‖² / E‖h(shifted) − h(plain)‖²."""
    left = (h_prompted - h_plain).pow(2).sum(-1)
    shift = (h_shifted - h_plain).pow(2).sum(-1)
    return {g: 1 - left[:, m].mean(1) / shift[:, m].mean(1) for g, m in groups.items() if m.any()}


@torch.no_grad()
def attention_writes(model: PromptedCLIP, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the prompts' two ways write to the residual stream in each vision block, at the
    original tokens: "bias term" out_proj((1 − λ)·attn_P) and "rescaling" out_proj((λ − 1)·attn_X),
    each [L, P, N, D] (out_proj's own bias belongs to neither)."""
    n = model.clip.visual.positional_embedding.shape[0]
    with model.capture(["vision.blocks.*.attn.prompt_part", "vision.blocks.*.attn.token_part",
                        "vision.blocks.*.attn.lam"]) as cache:
        model.encode_image(images)
    writes = {w: [] for w in WRITES}
    for block, prompt, tokens, lam in zip(model.vision_tower.blocks, cache.blocks("vision", "attn.prompt_part"),
                                          cache.blocks("vision", "attn.token_part"),
                                          cache.blocks("vision", "attn.lam")):
        def write(heads):  # [P, H, N, d] -> [P, N, D] through out_proj's weight and the layer scale
            return block.ls_1(heads.transpose(1, 2).flatten(2) @ block.attn.out_proj.weight.T)[:, :n]
        writes["bias term"].append(write(prompt))
        writes["rescaling"].append(write(tokens * (1 - 1 / lam.unsqueeze(-1))))
    return {w: torch.stack(v).float().cpu() for w, v in writes.items()}


def learned_biases(model: PromptedCLIP) -> torch.Tensor:
    """Bias tuning's write to each vision block's residual stream (after attention and MLP), [L, D]."""
    biases = model.vision_tower.biases
    return torch.stack([torch.as_tensor(biases.at("attn", i) + biases.at("mlp", i)).expand(model.clip.visual.
                        transformer.width) for i in range(len(model.vision_tower.blocks))]).detach().float().cpu()


def oracle_adds(delta: dict[str, torch.Tensor], block: int, n_tokens: int) -> dict[str, torch.Tensor]:
    """The oracle's intervention: −δ_ℓ at block ℓ's output, [CLS] and patches each by their own δ."""
    add = torch.cat([-delta["cls"][block][None], -delta["patches"][block][None].expand(n_tokens - 1, -1)])
    return {f"vision.blocks.{block}.resid_post": add}


# --------------------------------------------------------------------------- the per-run table
def _vector_rows(quantity: str, condition: str, per_group: dict[str, torch.Tensor]) -> list[dict]:
    return [{"quantity": quantity, "condition": condition, "block": block, "group": g, "dim": dim, "value": v}
            for g, values in per_group.items() for block, row in enumerate(values.tolist())
            for dim, v in enumerate(row)]


def _scalar_rows(quantity: str, condition: str, per_group: dict[str, torch.Tensor]) -> list[dict]:
    return [{"quantity": quantity, "condition": condition, "block": block, "group": g, "dim": -1, "value": v}
            for g, values in per_group.items() for block, v in enumerate(values.tolist())]


def known_truth_table(run: LoadedRun, n_images: int) -> pd.DataFrame:
    """The run's part of the known-truth test, long format (quantity, condition, block, group, dim,
    value; dim −1 for a scalar), on ceil(n_images / classes) pairs of each class of its dataset.

    Zero-shot runs: δ and κ, S of the oracle at each block, and the oracle's accuracy (base, novel,
    HM on the whole test sets; block −1 is zero-shot itself). Prompted runs with vision prompts:
    β of the bias term and of the rescaling, trained and of the control (untrained prompts), S as trained, bias term removed, rescaling removed, bias
    term mean-ablated (replaced by its mean over the run's test-image sample, as in claim C3m).
    Bias tuning: β of its learned vectors, S as trained."""
    model = run.model("base")
    dataset, kind = run.settings.dataset, model.config.variant
    classes = len(world.DATASETS[dataset].classes)
    p = pairs(dataset, run.backbone, math.ceil(n_images / classes))
    zs = zeroshot_twin(model)
    h_plain, h_shifted = residual_stream(zs, p.plain), residual_stream(zs, p.shifted)
    rows: list[dict] = []
    if kind == "zeroshot":
        delta, kappa = known_shift(h_plain, h_shifted, p.groups)
        rows += _vector_rows("delta", "zero-shot", delta) + _scalar_rows("kappa", "zero-shot", kappa)
        n_tokens = h_plain.shape[2]
        models = {c: run.model(c) for c in ("base", "novel")}
        loaders = {c: list(run.test_loader(c)) for c in ("base", "novel")}  # decoded once, evaluated 5 times
        for block in [-1, *range(h_plain.shape[0])]:
            adds = oracle_adds(delta, block, n_tokens) if block >= 0 else {}
            acc = {}
            for c in ("base", "novel"):
                with models[c].capture(recorder=Steer(adds)):
                    acc[c] = evaluate(models[c], loaders[c], run.settings.train.precision, progress=False)
            acc["hm"] = harmonic_mean(acc["base"], acc["novel"])
            rows += [{"quantity": "oracle accuracy", "condition": c, "block": block, "group": "", "dim": -1,
                      "value": v} for c, v in acc.items()]
            if block >= 0:
                steered = residual_stream(zs, p.shifted, adds)
                rows += _scalar_rows("S", f"oracle at block {block}",
                                     compensation(steered, h_plain, h_shifted, p.groups))
    elif kind == "bias":
        rows += _vector_rows("beta", "learned bias", {g: learned_biases(model) for g in p.groups})
        rows += _scalar_rows("S", "as trained", compensation(residual_stream(model, p.shifted), h_plain, h_shifted,
                                                             p.groups))
    else:
        for suffix, m in (("", model), (CONTROL, run.control("base"))):  # trained, and untrained (the control)
            for name, values in attention_writes(m, p.shifted).items():
                rows += _vector_rows("beta", name + suffix, group_means(values, p.groups))
        means = bias_term_means(model, run.test_loader("base", n_images))
        for condition, ablation in CONDITIONS.items():
            if condition == MEAN_ABLATED:
                ablation = replace(ablation, bias_means=means)
            with model.ablate(ablation):
                h = residual_stream(model, p.shifted)
            rows += _scalar_rows("S", condition, compensation(h, h_plain, h_shifted, p.groups))
    return pd.DataFrame(rows, columns=["quantity", "condition", "block", "group", "dim", "value"]).assign(
        paired=p.paired, n_pairs=len(p.plain))


# --------------------------------------------------------------------------- specificity
def vectors(table: pd.DataFrame, quantity: str, condition: str, groups=SHARED_GROUPS) -> dict[str, np.ndarray]:
    """Per dataset, the (block, group, dim) vector of ``quantity`` [blocks, groups, D], from one seed's
    known_truth rows (``load_table``'s dataset column)."""
    part = table[(table.quantity == quantity) & (table.condition == condition) & table.group.isin(groups)]
    out = {}
    for dataset, rows in part.groupby("dataset", sort=False):
        wide = rows.pivot_table(index=["block", "group"], columns="dim", values="value")
        wide = wide.reindex(pd.MultiIndex.from_product([sorted(rows.block.unique()), list(groups)]))
        out[dataset] = wide.to_numpy().reshape(rows.block.nunique(), len(groups), -1)
    return out


def specificity_matrix(beta: dict[str, np.ndarray], delta: dict[str, np.ndarray]) -> pd.DataFrame:
    """M[d, d'] = cos(β̃_d, −δ̃_d'), both centred across datasets, averaged over blocks and groups:
    rows the datasets whose prompts wrote β, columns the datasets whose shift δ they are compared to."""
    names = [d for d in beta if d in delta]
    if len(names) < 2:
        raise ValueError(f"the specificity matrix needs at least two datasets with both β and δ, got {names}")
    b = np.stack([beta[d] for d in names])
    s = -np.stack([delta[d] for d in names])
    b, s = b - b.mean(0), s - s.mean(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)  # noqa: E731
    cos = np.einsum("ilgd,jlgd->ijlg", unit(b), unit(s)).mean((2, 3))
    return pd.DataFrame(cos, index=pd.Index(names, name="prompts of"), columns=pd.Index(names, name="shift of"))


def diagonal_margin(matrix: np.ndarray) -> np.ndarray:
    """Per row d: M[d, d] − the mean of M[d, d'] over d' ≠ d (C7's effect for dataset d)."""
    matrix = np.asarray(matrix, float)
    n = len(matrix)
    return np.diag(matrix) - (matrix.sum(1) - np.diag(matrix)) / (n - 1)


def permutation_p(matrix: np.ndarray) -> float:
    """One-sided exact permutation test over dataset labels: the share of the D! matchings of rows to
    columns whose mean matched cosine is at least the true matching's (smallest p: 1/D!)."""
    matrix = np.asarray(matrix, float)
    n = len(matrix)
    observed = np.trace(matrix) / n
    matched = [matrix[np.arange(n), list(p)].mean() for p in itertools.permutations(range(n))]
    return float(np.mean(np.asarray(matched) >= observed - 1e-12))


# --------------------------------------------------------------------------- the study's view
# ``table`` below is ``per_run.load_table(experiment, "known_truth")``: every run's rows with its
# dataset, variant_name, variant (kind) and seed.
def specificity(table: pd.DataFrame, variant_name: str, write: str = "bias term") -> pd.DataFrame:
    """M per seed, long (seed, prompts_of, shift_of, cosine): the ``write`` of the ``variant_name`` runs
    against the zero-shot runs' δ of the same seed."""
    frames = []
    for seed, part in table.groupby("seed"):
        beta = vectors(part[part.variant_name == variant_name], "beta", write)
        delta = vectors(part[part.variant == "zeroshot"], "delta", "zero-shot")
        if len(set(beta) & set(delta)) < 2:
            continue
        m = specificity_matrix(beta, delta).stack().rename("cosine").reset_index()
        frames.append(m.assign(seed=seed))
    columns = ["seed", "prompts of", "shift of", "cosine"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def specificity_summary(m: pd.DataFrame) -> pd.DataFrame:
    """Per seed: mean diagonal and off-diagonal cosine of M and the permutation p over dataset labels."""
    rows = []
    for seed, part in m.groupby("seed"):
        wide = part.pivot(index="prompts of", columns="shift of", values="cosine")
        wide = wide.loc[wide.columns].to_numpy()
        off = ~np.eye(len(wide), dtype=bool)
        rows.append({"seed": seed, "diagonal": float(np.diag(wide).mean()), "off-diagonal": float(wide[off].mean()),
                     "p (permutation)": permutation_p(wide), "smallest p": 1 / math.factorial(len(wide))})
    return pd.DataFrame(rows)


def compensation_table(table: pd.DataFrame) -> pd.DataFrame:
    """S per run, condition, block and group (dataset, variant_name, seed, condition, block, group, S)."""
    s = table[table.quantity == "S"].rename(columns={"value": "S"})
    return s[["dataset", "variant_name", "seed", "condition", "block", "group", "S"]].reset_index(drop=True)


def oracle_table(table: pd.DataFrame) -> pd.DataFrame:
    """The oracle's base, novel and HM accuracy per dataset, seed and block (−1: zero-shot as it is)."""
    acc = table[(table.quantity == "oracle accuracy")]
    return acc.pivot_table(index=["dataset", "seed", "block"], columns="condition", values="value").reset_index()[
        ["dataset", "seed", "block", "base", "novel", "hm"]]


def best_oracle(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and seed, the oracle at the block where −δ helps most (an upper reference: the
    block is chosen on the test set) and zero-shot's HM beside it."""
    oracle = oracle_table(table)
    steered = oracle[oracle.block >= 0]
    best = steered.loc[steered.groupby(["dataset", "seed"]).hm.idxmax()]
    zs = oracle[oracle.block == -1].set_index(["dataset", "seed"]).hm.rename("zero-shot hm")
    return best.rename(columns={"hm": "oracle hm"}).join(zs, on=["dataset", "seed"]).reset_index(drop=True)


def diagonal_margins(table: pd.DataFrame, variant_name: str, write: str = "bias term") -> pd.DataFrame:
    """Per (dataset, seed): M[d, d] − mean over d' ≠ d of M[d, d'] in that seed's M of ``write``
    (how much more it points along −δ of its own dataset than along the others'). Columns
    dataset, seed, value."""
    rows = []
    for seed, part in specificity(table, variant_name, write).groupby("seed"):
        wide = part.pivot(index="prompts of", columns="shift of", values="cosine")
        wide = wide.loc[wide.columns]
        rows += [{"dataset": d, "seed": seed, "value": v} for d, v in zip(wide.index, diagonal_margin(wide))]
    return pd.DataFrame(rows, columns=["dataset", "seed", "value"])


def specificity_effects(table: pd.DataFrame, variant_name: str) -> pd.DataFrame:
    """C7's effect per (dataset, seed): the bias term's diagonal margin (``diagonal_margins``),
    trained − control (the same prompts untrained: what inserting them points along without
    learning); beside it, what removing the bias term costs the compensation: S as trained − S
    bias term removed (patches, mean over blocks). Columns dataset, seed, value, beside; empty
    without paired tables."""
    trained = diagonal_margins(table, variant_name)
    control = diagonal_margins(table, variant_name, "bias term" + CONTROL)
    effects = trained.merge(control, on=["dataset", "seed"], suffixes=("", "_control"))
    effects = effects.assign(value=effects.value - effects.value_control)[["dataset", "seed", "value"]]
    s = compensation_table(table)
    s = s[(s.variant_name == variant_name) & (s.group == "patches")]
    drop = s.pivot_table(index=["dataset", "seed"], columns="condition", values="S")
    if not drop.empty:
        drop = (drop["as trained"] - drop["bias term removed"]).rename("beside").reset_index()
        effects = effects.merge(drop, on=["dataset", "seed"], how="left")
    return effects


@torch.no_grad()
def visibility(backbone: Backbone, dataset: str, template: str, per_class: int = 20) -> pd.DataFrame:
    """Can demo-clip tell the classes of ``dataset`` apart, drawn pretraining-style and dataset-style?
    Per style: zero-shot accuracy over all its classes (do the names reach the images?) and a
    nearest-class-mean probe on the image features (half of each class's renders as shots, the other
    half as tests: is the class in the image at all?). Chance is 1 / classes."""
    from ..model.prompted import build_model
    scenes = world.DATASETS[dataset].classes
    names = [world.DATASETS[dataset].classname(s) for s in scenes]
    model = build_model("zeroshot", backbone, names, template).eval()
    p = pairs(dataset, backbone, per_class)
    labels = torch.arange(len(scenes)).repeat_interleave(per_class)
    text, half = model.encode_text(), per_class // 2
    rows = []
    for style, images in (("pretraining-style", p.plain), (f"{dataset}-style", p.shifted)):
        features = model.encode_image(images)
        zero_shot = (model.logits_from(features, text).argmax(-1) == labels).float().mean()
        grouped = features.reshape(len(scenes), per_class, -1)
        centres = torch.nn.functional.normalize(grouped[:, :half].mean(1), dim=-1)
        probe = ((grouped[:, half:] @ centres.T).argmax(-1) == torch.arange(len(scenes))[:, None]).float().mean()
        rows.append({"style": style, "zero-shot accuracy": 100 * float(zero_shot),
                     "nearest-class-mean probe accuracy": 100 * float(probe), "chance": 100 / len(scenes)})
    return pd.DataFrame(rows)
