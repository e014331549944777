"""Multi-head self-attention over open_clip's weights, with the prompt decomposition exposed.

For query i, original keys X and prompt keys P (book/method.md, "The decomposition"):
    λ_i   = Σ_{j∈X} A_ij                      (the mass left to the original tokens)
    out_i = Σ_{j∈X} A_ij v_j + Σ_{p∈P} A_ip v_p
          = λ_i · attn_X(i) + (1 − λ_i) · attn_P(i)
The first term is the prompt-free attention rescaled by λ (way a), the second the bias term,
a convex mix of prompt values (way b). ``Ablation`` removes either at evaluation time, or
replaces the bias term by its mean (is it a constant, a dataset bias?).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .capture import Scope


@dataclass(frozen=True)
class Ablation:
    """Which of the two effects of the prompts to keep (the causal test of way (a) vs way (b)).

    In blocks at or past a tower's prompt depth the prompt slots hold the previous block's outputs
    at the prompt positions, which still act as keys and values: by default the ablation acts
    there too (all blocks); ``below_prompt_depth`` limits it to the blocks with learned prompts.
    ``towers`` says which towers it acts in. ``bias_means`` (block name such as
    ``vision.blocks.3`` → a tensor broadcastable to that block's ``attn.prompt_part``) replaces the
    bias term by a fixed value, its mean (``causal.bias_term_means``); blocks it does not name keep theirs.
    """

    keep_rescale: bool = True
    keep_bias: bool = True
    below_prompt_depth: bool = False
    towers: tuple[str, ...] = ("text", "vision")
    bias_means: Mapping[str, torch.Tensor] | None = None

    @property
    def active(self) -> bool:
        return not (self.keep_rescale and self.keep_bias) or bool(self.bias_means)


NO_ABLATION = Ablation()


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None,
                   prompt_keys: torch.Tensor | None, scope: Scope,
                   ablation: Ablation = NO_ABLATION) -> torch.Tensor:
    """Self-attention of ``x`` [B, N, D] with ``attn``'s weights; ``prompt_keys`` [N] marks P.

    Runs the fused kernel unless a hook wants the attention internals or an ablation is on.
    """
    B, N, D = x.shape
    H = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)          # [B, N, 3D]
    q, k, v = qkv.view(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)       # 3 × [B, H, N, d]
    explicit = scope.wants_attention() or (ablation.active and prompt_keys is not None)
    if not explicit:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, N, d]
    else:
        out = _explicit_attention(q, k, v, mask, prompt_keys, scope, ablation)
    out = out.transpose(1, 2).reshape(B, N, D)                          # [B, N, D]
    return attn.out_proj(out)


def _explicit_attention(q, k, v, mask, prompt_keys, scope: Scope, ablation: Ablation):
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5             # [B, H, N, N]
    if mask is not None:
        scores = scores + mask
    pattern = scores.softmax(dim=-1)
    for name, value in (("q", q), ("k", k), ("v", v), ("pattern", pattern)):
        scope.record(f"attn.{name}", value)
    decompose = any(scope.wants(f"attn.{p}") for p in ("lam", "token_part", "prompt_part"))
    if not (decompose or ablation.active):
        return pattern @ v
    if prompt_keys is None:
        prompt_keys = torch.zeros(pattern.shape[-1], dtype=torch.bool, device=pattern.device)
    on_tokens = pattern.masked_fill(prompt_keys, 0.0)
    lam = on_tokens.sum(dim=-1)                                          # [B, H, N]
    token_part = on_tokens @ v                                           # [B, H, N, d]
    prompt_part = pattern.masked_fill(~prompt_keys, 0.0) @ v
    scope.record("attn.lam", lam)
    scope.record("attn.token_part", token_part)
    scope.record("attn.prompt_part", prompt_part)
    if not ablation.active:
        return pattern @ v
    tokens = token_part if ablation.keep_rescale else token_part / lam.unsqueeze(-1)
    if not ablation.keep_bias:
        return tokens
    mean = ablation.bias_means.get(scope.prefix) if ablation.bias_means else None
    return tokens + (prompt_part if mean is None else mean.to(prompt_part.dtype).expand_as(prompt_part))
