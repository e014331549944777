"""One transformer tower of CLIP, run block by block over open_clip's own modules.

``Tower.forward`` is the one place where prompts and biases enter a block:
  * deep prompts: before block i (0 < i < depth) the prompt slot is *replaced* by block i's own
    learned vectors (block 0's prompts enter with the embeddings, see ``prompted.py``);
  * bias tuning: learned vectors are added to the residual stream after the attention and/or
    the MLP of blocks i < depth, every token alike.
Because replaced prompts never pass their own output on, a deep prompt acts on the other tokens
only through its keys and values in that block: a constrained key/value prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import NO_ABLATION, Ablation, self_attention
from .capture import Recorder, Scope


@dataclass(frozen=True)
class PromptSlot:
    """Where a tower's prompt tokens sit in its sequence: positions start .. start + length - 1.

    The one definition of the prompt positions: block 0 (``prompted.py``), the deep blocks
    (``Tower.forward``), the attention's prompt keys and the statistics' ``TokenLayout`` all ask it.
    """

    start: int
    length: int

    @property
    def stop(self) -> int:
        return self.start + self.length

    @property
    def positions(self) -> slice:
        return slice(self.start, self.stop)

    def mask(self, n_tokens: int, device=None) -> torch.Tensor:
        """[n_tokens] bool, True at the prompt positions."""
        mask = torch.zeros(n_tokens, dtype=torch.bool, device=device)
        mask[self.positions] = True
        return mask

    def key_mask(self, n_tokens: int, device=None) -> torch.Tensor | None:
        """``mask``, or None without prompts (the attention then skips the decomposition)."""
        return self.mask(n_tokens, device) if self.length else None

    def insert(self, x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """``x`` [B, N, D] with the slot holding ``vectors`` [length, D], for every sequence.

        The slot's tokens are replaced; a sequence that ends where the slot starts (the vision
        embeddings before block 0) gets them appended.
        """
        vectors = vectors.to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :self.start], vectors, x[:, self.stop:]], dim=1)


class DeepPrompts(nn.Module):
    """Learned prompt vectors for blocks 0 .. depth-1 of one tower: ``vectors`` [depth, n_ctx, width]."""

    def __init__(self, depth: int, n_ctx: int, width: int, first: torch.Tensor | None = None):
        super().__init__()
        vectors = torch.empty(depth, n_ctx, width).normal_(std=0.02)
        if first is not None:
            vectors[0] = first
        self.vectors = nn.Parameter(vectors)

    @property
    def depth(self) -> int:
        return self.vectors.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.vectors.shape[1]


class ResidualBiases(nn.Module):
    """Learned residual-stream biases after attention (``attn``) and/or MLP (``mlp``), [depth, width]."""

    def __init__(self, where: str, depth: int, width: int):
        super().__init__()
        self.attn = nn.Parameter(torch.zeros(depth, width)) if where in ("attn", "both") else None
        self.mlp = nn.Parameter(torch.zeros(depth, width)) if where in ("mlp", "both") else None

    def at(self, name: str, block: int) -> torch.Tensor | float:
        bias = getattr(self, name)
        return bias[block] if bias is not None and block < bias.shape[0] else 0.0


class Tower(nn.Module):
    """Runs open_clip's residual blocks with this variant's prompts and biases inserted."""

    def __init__(self, name: str, blocks: nn.ModuleList, slot: PromptSlot,
                 prompts: DeepPrompts | None, biases: ResidualBiases | None):
        super().__init__()
        self.name, self.slot = name, slot
        self.blocks = blocks
        self.prompts = prompts
        self.biases = biases

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                recorder: Recorder | None = None, ablation: Ablation = NO_ABLATION) -> torch.Tensor:
        prompt_keys = self.slot.key_mask(x.shape[1], x.device)
        for i, block in enumerate(self.blocks):
            if self.prompts is not None and 0 < i < self.prompts.depth:
                x = self.slot.insert(x, self.prompts.vectors[i])
            scope = Scope(recorder, f"{self.name}.blocks.{i}")
            scope.record("resid_pre", x)
            attn_out = self_attention(block.attn, block.ln_1(x), mask, prompt_keys, scope, self._ablation(ablation, i))
            x = x + block.ls_1(attn_out) + self._bias("attn", i)
            x = x + block.ls_2(block.mlp(block.ln_2(x))) + self._bias("mlp", i)
            x = scope.edit("resid_post", x)
            scope.record("resid_post", x)
        return x

    def _ablation(self, ablation: Ablation, block: int) -> Ablation:
        """The ablation in effect in ``block``: none in a tower it leaves alone, none past the prompt
        depth for a depth-limited one."""
        depth = self.prompts.depth if self.prompts is not None else 0
        if self.name not in ablation.towers or (ablation.below_prompt_depth and block >= depth):
            return NO_ABLATION
        return ablation

    def _bias(self, where: str, block: int):
        return 0.0 if self.biases is None else self.biases.at(where, block)
