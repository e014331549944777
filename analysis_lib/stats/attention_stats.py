"""The attention statistics of the study, each defined here and nowhere else (book/method.md,
"Statistics").

Pure torch on the tensors of the model's hook points (``capture.py``): batched, device-agnostic,
computed in float32 whatever precision the model runs in. Two *readings* of every per-query
statistic (called readings, not variants, so as not to collide with the model variants):

- ``with_prompt``: the attention as the model computed it, every key kept and rows not
  renormalised. Keys that are not patches ([CLS], prompts) count at distance 0: the probing-vits
  definition of attention distance, exactly. This is the book's readings "CLIP" (zero-shot model)
  and "W" (prompted model).
- ``without_prompt``: the prompt keys dropped and each row renormalised over the remaining keys
  ([CLS] + patches, [CLS] still at distance 0), the reading "W/O". A softmax restricted to a subset of
  keys equals the full softmax renormalised over that subset, so this is the attention among the
  original tokens that the prompts' share rescales. For a model without prompts both readings
  agree, so W/O − W measures the prompts alone.

Queries are the original tokens only (patches for distance and entropy; [SOS]..[EOS] for text),
never prompt queries, whose outputs are replaced before the next block.
The accumulators at the end implement the recorder protocol, so the statistics of a whole
test set are reduced batch by batch without ever storing the attention maps.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from ..model.prompted import PADDING, TOKEN_TYPES

WITH_PROMPT, WITHOUT_PROMPT = "with_prompt", "without_prompt"
READINGS = (WITH_PROMPT, WITHOUT_PROMPT)


class LayoutError(ValueError):
    """A tensor does not match the token layout it came with."""


# --------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class GridLayout:
    """Vision tokens: [CLS], then grid × grid patches in row-major order, then prompts.

    Build it from the model with ``GridLayout.from_token_layout(model.token_layout("vision"))``.
    """

    is_prompt: torch.Tensor  # [N] bool
    grid: int
    patch_px: int = 16
    cls_index: int = 0
    first_patch: int = 1

    def __post_init__(self):
        n, last = len(self.is_prompt), self.first_patch + self.grid ** 2
        if last > n or self.cls_index >= n or self.first_patch <= self.cls_index < last:
            raise LayoutError(f"a {self.grid}x{self.grid} grid from position {self.first_patch} and [CLS] "
                              f"at {self.cls_index} do not fit {n} tokens; check grid and is_prompt")
        if self.is_prompt[self.patches].any() or self.is_prompt[self.cls_index]:
            raise LayoutError("is_prompt marks a patch or the [CLS] token; prompts come after the patches")

    @classmethod
    def from_token_layout(cls, layout) -> "GridLayout":
        """From the model's ``TokenLayout`` (CLS at 0, patches from 1, as MODEL_API.md fixes)."""
        if layout.grid is None:
            raise LayoutError("this token layout has no patch grid; pass model.token_layout('vision')")
        return cls(layout.is_prompt.bool(), layout.grid, layout.patch_px)

    @property
    def n_tokens(self) -> int:
        return len(self.is_prompt)

    @property
    def patches(self) -> slice:
        return slice(self.first_patch, self.first_patch + self.grid ** 2)

    @property
    def is_patch(self) -> torch.Tensor:
        """[N] bool: the patch keys (not [CLS], not prompts)."""
        mask = torch.zeros(self.n_tokens, dtype=torch.bool)
        mask[self.patches] = True
        return mask

    def key_distances(self, device=None) -> torch.Tensor:
        """[G², N] pixel distance from each patch query to each key; [CLS] and prompt keys at 0.

        Prompts and [CLS] have no place on the image grid, so they count as distance 0, as in the
        probing-vits code: their share of the attention shrinks the distance.
        """
        g = torch.arange(self.grid, device=device, dtype=torch.float32)
        pos = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1).reshape(-1, 2)  # [G², 2] (row, col)
        dist = torch.zeros(self.grid ** 2, self.n_tokens, device=device)
        dist[:, self.patches] = self.patch_px * torch.cdist(pos, pos)
        return dist

    def check(self, tensor: torch.Tensor, dim: int) -> None:
        if tensor.shape[dim] != self.n_tokens:
            raise LayoutError(f"tensor of shape {tuple(tensor.shape)} has {tensor.shape[dim]} tokens at dim {dim}, "
                              f"the layout {self.n_tokens}; pass the layout of the model that produced it")


@dataclass(frozen=True)
class TextLayout:
    """Text tokens of C class prompts: each position's type (``TOKEN_TYPES`` or ``pad``) and the [EOS] index."""

    token_types: list[list[str]]  # C lists of N labels
    eos_index: torch.Tensor       # [C] long

    def __post_init__(self):
        lengths = {len(t) for t in self.token_types}
        if len(lengths) != 1 or len(self.token_types) != len(self.eos_index):
            raise LayoutError(f"{len(self.token_types)} label lists of lengths {sorted(lengths)} for "
                              f"{len(self.eos_index)} EOS indices; give one equally long list per class")
        wrong = [c for c, (types, e) in enumerate(zip(self.token_types, self.eos_index.tolist()))
                 if types[e] != "eos"]
        if wrong:
            raise LayoutError(f"classes {wrong[:5]} are not labelled 'eos' at their eos_index")

    @classmethod
    def from_token_layout(cls, layout) -> "TextLayout":
        if layout.token_types is None:
            raise LayoutError("this token layout has no token types; pass model.token_layout('text')")
        return cls(layout.token_types, layout.eos_index.long())

    @property
    def n_tokens(self) -> int:
        return len(self.token_types[0])

    def membership(self, groups: Sequence[str] = TOKEN_TYPES, device=None) -> torch.Tensor:
        """[C, N, n_groups] one-hot: which group each position of each prompt belongs to (pad: none)."""
        unknown = {t for types in self.token_types for t in types} - set(groups) - {PADDING}
        if unknown:
            raise LayoutError(f"token types {sorted(unknown)} are in no group; add them to groups={tuple(groups)}")
        index = {g: i for i, g in enumerate(groups)}
        out = torch.zeros(len(self.token_types), self.n_tokens, len(groups), device=device)
        for c, types in enumerate(self.token_types):
            for n, t in enumerate(types):
                if t != PADDING:
                    out[c, n, index[t]] = 1.0
        return out

    def check(self, pattern: torch.Tensor) -> None:
        if pattern.shape[0] != len(self.eos_index) or pattern.shape[-1] != self.n_tokens:
            raise LayoutError(f"pattern of shape {tuple(pattern.shape)} does not match {len(self.eos_index)} "
                              f"classes of {self.n_tokens} tokens; pass the text layout of the same model")

    def query_mask(self, device=None) -> torch.Tensor:
        """[C, N] True up to and including each prompt's [EOS] (the padding after it excluded)."""
        return torch.arange(self.n_tokens, device=device) <= self.eos_index.to(device)[:, None]


# --------------------------------------------------------------------------- per-query statistics
def renormalise_without(pattern: torch.Tensor, drop_keys_mask: torch.Tensor) -> torch.Tensor:
    """Rows renormalised over the kept keys: the attention each query pays when the dropped keys
    are absent. ``drop_keys_mask`` is [N] bool (or broadcastable to ``pattern``). Rows with no
    mass on any kept key stay zero."""
    kept = pattern.masked_fill(drop_keys_mask.to(pattern.device), 0.0)
    return kept / kept.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)


def read_rows(rows: torch.Tensor, layout: GridLayout, reading: str) -> torch.Tensor:
    """Attention rows [..., N] in float32 as ``reading`` sees them: as computed (with_prompt), or
    with the prompt keys dropped and each row renormalised over [CLS] + patches (without_prompt)."""
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")
    layout.check(rows, -1)
    rows = rows.float()
    return renormalise_without(rows, layout.is_prompt) if reading == WITHOUT_PROMPT else rows


def _patch_rows(pattern: torch.Tensor, layout: GridLayout, reading: str) -> torch.Tensor:
    """The patch queries' rows [B, H, G², N] in float32, in the given reading."""
    return read_rows(pattern[:, :, layout.patches, :], layout, reading)


def attention_distance(pattern: torch.Tensor, layout: GridLayout, reading: str = WITH_PROMPT) -> torch.Tensor:
    """Mean attention distance in pixels of each patch query, Σ_j A_ij · patch_px · ‖pos_i − pos_j‖.

    ``pattern`` [B, H, N, N] → [B, H, G²]; the figure's value per head is ``.mean((0, 2))``.
    [CLS] and prompt keys count at distance 0 (``GridLayout.key_distances``), rows as ``reading`` reads them.
    """
    return _distance(_patch_rows(pattern, layout, reading), layout)


def attention_entropy(pattern: torch.Tensor, layout: GridLayout, reading: str = WITH_PROMPT) -> torch.Tensor:
    """Entropy in nats of each patch query's attention, −Σ_j A_ij log A_ij (0 log 0 = 0).

    ``pattern`` [B, H, N, N] → [B, H, G²]; average over (0, 2) for the value per head.
    """
    return _entropy(_patch_rows(pattern, layout, reading))


def cls_foreground_share(pattern: torch.Tensor, layout: GridLayout, foreground: torch.Tensor,
                         reading: str = WITH_PROMPT) -> torch.Tensor:
    """Claim C2: the share of the [CLS] query's attention that falls on foreground patches, [B, H].

    ``foreground`` [B, G²] bool. The share is Σ_{j∈fg} A_0j of the row as ``reading`` reads it
    (with_prompt: the whole row; without_prompt: renormalised over [CLS] + patches). A share of
    the patch attention alone would not see the readings apart: renormalising a row rescales
    every patch alike, so Σ_fg / Σ_patches is the same in both (``cls_foreground_of_patches``).
    """
    _check_foreground(foreground, pattern.shape[0], layout)
    row = read_rows(pattern[:, :, layout.cls_index, :], layout, reading)[..., layout.patches]  # [B, H, G²]
    return torch.einsum("bhq,bq->bh", row, foreground.to(row.device).float())


def cls_foreground_of_patches(pattern: torch.Tensor, layout: GridLayout, foreground: torch.Tensor) -> torch.Tensor:
    """[B, H]: Σ_{j∈fg} A_0j / Σ_{j∈patches} A_0j, the foreground share of the [CLS] query's patch
    attention (the same in both readings)."""
    patches = pattern[:, :, layout.cls_index, layout.patches].float()
    return cls_foreground_share(pattern, layout, foreground) / patches.sum(-1).clamp_min(torch.finfo(torch.float32).tiny)


def _distance(rows: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    return (rows * layout.key_distances(rows.device)).sum(dim=-1)


def _entropy(rows: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(rows, rows).sum(dim=-1)


def _eos_mass(pattern: torch.Tensor, eos_index: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """[C, H, n_groups]: each class's [EOS] attention summed within each group of keys."""
    C, H, N, _ = pattern.shape
    index = eos_index.to(pattern.device).view(C, 1, 1, 1).expand(C, H, 1, N)
    rows = pattern.gather(2, index).squeeze(2).float()                  # [C, H, N]: the EOS query's row
    return rows @ membership                                            # [C, H, N] @ [C, N, G] → [C, H, G]


def eos_attention_by_type(pattern: torch.Tensor, layout: TextLayout,
                          groups: Sequence[str] = TOKEN_TYPES) -> torch.Tensor:
    """[H, n_groups]: the [EOS] query's attention mass on each token type, averaged over the classes.

    ``pattern`` [C, H, N, N] holds one text sequence per class. With the causal mask the groups of
    each head sum to 1 (padding after [EOS] is never attended to).
    """
    layout.check(pattern)
    return _eos_mass(pattern, layout.eos_index, layout.membership(groups, pattern.device)).mean(dim=0)


def block0_deviation(zeroshot: torch.Tensor, zeroshot_shared: torch.Tensor, prompted: torch.Tensor,
                     lam: torch.Tensor, prompted_shared: torch.Tensor) -> float:
    """Claim C1: the largest |A_prompted − λ · A_zero-shot| of block 0 over the tokens both models share.

    ``zeroshot`` [B, H, Nz, Nz] and ``prompted`` [B, H, Np, Np] are block 0's patterns on the same
    input, ``lam`` [B, H, Np] the prompted model's λ; the masks [Nz] and [Np] pick the shared
    tokens, in the same order (vision: [CLS] + patches; text: [SOS], class name, '.', [EOS], where
    the prompts replace the template words). The zero-shot rows are renormalised over the shared
    keys (a no-op in vision, where they are all of its keys). 0 up to rounding if the rescaling of
    block 0 is a pure proportion.
    """
    zs_shared, pr_shared = zeroshot_shared.to(zeroshot.device), prompted_shared.to(prompted.device)
    zero = zeroshot[:, :, zs_shared][..., zs_shared].float()
    zero = zero / zero.sum(-1, keepdim=True)
    ours = prompted[:, :, pr_shared][..., pr_shared].float()
    return (ours - lam[:, :, pr_shared, None].float() * zero).abs().max().item()


class BackgroundSimilarity(NamedTuple):
    """Mean cosine similarity of each prompt to foreground and background patches, [H, P] each;
    the counts of (image, patch) pairs averaged let callers combine batches by weighted mean."""

    foreground: torch.Tensor
    background: torch.Tensor
    n_foreground: int
    n_background: int


def _prompt_patch_cosine(features: torch.Tensor, layout: GridLayout, centred: bool = False) -> torch.Tensor:
    """[B, H, P, G²] cosine similarity of each prompt's key (or value) to each patch's, per head;
    ``centred``: both first minus the image's mean patch feature (per head), so that what every
    token shares does not dominate the cosine."""
    layout.check(features, 2)
    if not layout.is_prompt.any():
        raise LayoutError("the layout has no prompt tokens; this statistic needs a model with vision prompts")
    features = features.float()
    prompts = features[:, :, layout.is_prompt.to(features.device)]     # [B, H, P, d]
    patches = features[:, :, layout.patches]                            # [B, H, G², d]
    if centred:
        centre = patches.mean(dim=2, keepdim=True)
        prompts, patches = prompts - centre, patches - centre
    return F.normalize(prompts, dim=-1) @ F.normalize(patches, dim=-1).transpose(-1, -2)


def _check_foreground(foreground: torch.Tensor, batch: int, layout: GridLayout) -> None:
    if foreground.shape != (batch, layout.grid ** 2):
        raise LayoutError(f"foreground mask of shape {tuple(foreground.shape)}, expected "
                          f"{(batch, layout.grid ** 2)} (one flag per patch per image)")


def prompt_background_similarity(features: torch.Tensor, layout: GridLayout,
                                 foreground: torch.Tensor) -> BackgroundSimilarity:
    """Do vision prompts look like background? (ours) Cosine similarity, per head, of each prompt's
    key (or value) to the patches' keys (values), averaged over all foreground (image, patch)
    pairs and over all background pairs.

    ``features`` [B, H, N, d] (one block's ``attn.k`` or ``attn.v``); ``foreground`` [B, G²] bool.
    A kind of patch absent from the whole batch gives NaN.
    """
    cosine = _prompt_patch_cosine(features, layout)                     # [B, H, P, G²]
    _check_foreground(foreground, features.shape[0], layout)
    fg = foreground.to(cosine.device).float()                           # [B, G²]
    n_fg, n_bg = int(fg.sum()), int((1 - fg).sum())
    return BackgroundSimilarity(torch.einsum("bhpq,bq->hp", cosine, fg) / n_fg,
                                torch.einsum("bhpq,bq->hp", cosine, 1 - fg) / n_bg, n_fg, n_bg)


def prompt_background_gap(keys: torch.Tensor, layout: GridLayout, foreground: torch.Tensor,
                          centred: bool = True) -> torch.Tensor:
    """Claim C5, per image [B]: the mean cosine of the prompts' keys to the background patches' keys
    minus that to the foreground patches', averaged over heads and prompts; centred by the image's
    mean patch key (``_prompt_patch_cosine``). NaN for an image without foreground or background."""
    cosine = _prompt_patch_cosine(keys, layout, centred)                # [B, H, P, G²]
    _check_foreground(foreground, keys.shape[0], layout)
    fg = foreground.to(cosine.device).float()
    mean_fg = torch.einsum("bhpq,bq->bhp", cosine, fg) / fg.sum(-1)[:, None, None]
    mean_bg = torch.einsum("bhpq,bq->bhp", cosine, 1 - fg) / (1 - fg).sum(-1)[:, None, None]
    return (mean_bg - mean_fg).mean(dim=(1, 2))


def cls_foreground_enrichment(pattern: torch.Tensor, layout: GridLayout, foreground: torch.Tensor) -> torch.Tensor:
    """Claim C2, [B, H]: the foreground share of the [CLS] query's patch attention divided by the
    image's foreground fraction of patches (1 = no preference; more diffuse attention alone does
    not raise it). NaN for an image without foreground patches."""
    fraction = foreground.float().mean(-1).to(pattern.device)           # [B]
    return cls_foreground_of_patches(pattern, layout, foreground) / fraction[:, None]


def relative_attention_change(prompted: torch.Tensor, layout: GridLayout, clip: torch.Tensor) -> torch.Tensor:
    """Claim C1, per image [B]: the total-variation distance between each original query's W/O
    Prompt row (prompt keys dropped, renormalised) and the CLIP row of the same query ([CLS] and
    patches, same input), averaged over queries and heads. 0 in block 0 (the rescaling there is a
    pure proportion); above 0 where the relative attention between original tokens changed."""
    layout.check(prompted, -1)
    keep = ~layout.is_prompt.to(prompted.device)
    rows = renormalise_without(prompted.float(), layout.is_prompt)[:, :, keep][..., keep]   # [B, H, n, n]
    if rows.shape != clip.shape:
        raise LayoutError(f"prompted rows {tuple(rows.shape)} on the original tokens do not match the CLIP "
                          f"pattern {tuple(clip.shape)}; pass both models' patterns of the same block and images")
    return 0.5 * (rows - clip.float()).abs().sum(-1).mean(dim=(1, 2))


# --------------------------------------------------------------------------- streaming reduction
_HOOK_NAME = re.compile(r"(?P<tower>vision|text)\.blocks\.(?P<block>\d+)\.(?P<point>[\w.]+)")


def parse_hook_name(name: str) -> tuple[str, int, str] | None:
    """``vision.blocks.3.attn.pattern`` → ("vision", 3, "attn.pattern"); None for other names."""
    match = _HOOK_NAME.fullmatch(name)
    return (match["tower"], int(match["block"]), match["point"]) if match else None


class _RunningMeans:
    """Per (tower, block, statistic, reading): a running per-head sum and the number of samples."""

    def __init__(self):
        self._sums: dict[tuple, torch.Tensor] = {}
        self._counts: dict[tuple, torch.Tensor | int] = {}

    def add(self, key: tuple, per_head_sum: torch.Tensor, n: torch.Tensor | int) -> None:
        self._sums[key] = self._sums.get(key, 0) + per_head_sum
        self._counts[key] = self._counts.get(key, 0) + n

    def frame(self) -> pd.DataFrame:
        rows = []
        for key in sorted(self._sums):
            n = int(self._counts[key])
            for head, total in enumerate(self._sums[key].double().cpu().tolist()):
                rows.append((*key[:2], head, *key[2:], total / n, n))
        return pd.DataFrame(rows, columns=["tower", "block", "head", "statistic", "reading", "value", "n"])


class AttentionStatistics:
    """Recorder reducing ``attn.pattern`` hooks on the fly: per block and head,
    vision → attention distance and entropy over patch queries (both readings);
    text → the [EOS] attention on each token type (statistic ``eos_to_{group}``).

    A tower without a layout is ignored. ``result()`` gives the means so far as a tidy table.
    """

    def __init__(self, vision: GridLayout | None = None, text: TextLayout | None = None,
                 groups: Sequence[str] = TOKEN_TYPES):
        self.vision, self.text, self.groups = vision, text, tuple(groups)
        self._membership = text.membership(self.groups) if text is not None else None
        self._means = _RunningMeans()

    @classmethod
    def for_model(cls, model, groups: Sequence[str] = TOKEN_TYPES) -> "AttentionStatistics":
        return cls(GridLayout.from_token_layout(model.token_layout("vision")),
                   TextLayout.from_token_layout(model.token_layout("text")), groups)

    def wants(self, name: str) -> bool:
        parsed = parse_hook_name(name)
        return parsed is not None and parsed[2] == "attn.pattern" and getattr(self, parsed[0]) is not None

    @torch.no_grad()
    def record(self, name: str, value: torch.Tensor) -> None:
        tower, block, _ = parse_hook_name(name)
        if tower == "vision":
            n = value.shape[0] * self.vision.grid ** 2                 # (image, patch query) pairs
            for reading in READINGS:
                rows = _patch_rows(value, self.vision, reading)         # [B, H, G², N]
                self._means.add((tower, block, "attention_distance", reading),
                                _distance(rows, self.vision).sum((0, 2)), n)
                self._means.add((tower, block, "attention_entropy", reading), _entropy(rows).sum((0, 2)), n)
        else:
            self.text.check(value)
            self._membership = self._membership.to(value.device)
            mass = _eos_mass(value, self.text.eos_index, self._membership)  # [C, H, G]
            for g, group in enumerate(self.groups):
                self._means.add((tower, block, f"eos_to_{group}", WITH_PROMPT), mass[:, :, g].sum(0), len(mass))

    def result(self) -> pd.DataFrame:
        return self._means.frame()


class DecompositionStatistics:
    """Recorder reducing the decomposition's hooks on the fly: per block and head, the mean λ
    (``attn.lam``) and the mean L2 norms of the token part and the prompt part, over the queries
    that ``query_masks[tower]`` marks ([N], or [B, N] for a fixed batch such as the C class prompts).

    ``for_model`` uses the queries of the study, the original tokens only: vision [CLS] + patches;
    text [SOS] .. [EOS] of each prompt without the prompt positions. Towers without a mask are ignored.
    """

    POINTS = {"attn.lam": "lambda", "attn.token_part": "token_part_norm", "attn.prompt_part": "prompt_part_norm"}

    def __init__(self, query_masks: dict[str, torch.Tensor]):
        self.query_masks = {tower: mask.bool() for tower, mask in query_masks.items()}
        self._means = _RunningMeans()

    @classmethod
    def for_model(cls, model) -> "DecompositionStatistics":
        text = model.token_layout("text")
        queries = TextLayout.from_token_layout(text).query_mask() & ~text.is_prompt.bool()
        return cls({"vision": ~model.token_layout("vision").is_prompt.bool(), "text": queries})

    def wants(self, name: str) -> bool:
        parsed = parse_hook_name(name)
        return parsed is not None and parsed[2] in self.POINTS and parsed[0] in self.query_masks

    @torch.no_grad()
    def record(self, name: str, value: torch.Tensor) -> None:
        tower, block, point = parse_hook_name(name)
        per_query = value.float() if point == "attn.lam" else value.float().norm(dim=-1)  # [B, H, N]
        B, _, N = per_query.shape
        mask = self.query_masks[tower].to(value.device)
        if mask.shape not in ((N,), (B, N)):
            raise LayoutError(f"{name} has batch {B} and {N} tokens, but the {tower} query mask has shape "
                              f"{tuple(mask.shape)}; give [N] or [B, N]")
        mask = mask.expand(B, N).float()                                # [B, N]
        self._means.add((tower, block, self.POINTS[point], WITH_PROMPT),
                        torch.einsum("bhn,bn->h", per_query, mask), mask.sum())

    def result(self) -> pd.DataFrame:
        return self._means.frame()
