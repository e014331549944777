"""Attention rollout (Abnar & Zuidema, 2020): the cross-check of gradient-weighted relevance.

How much each input token reaches each output token if attention alone mixed them: per block,
average the heads, add the identity for the residual connection, renormalise the rows, and
multiply the blocks' matrices from the first to the last. No gradients, no model needed.
"""
from __future__ import annotations

import torch


def attention_rollout(patterns: list[torch.Tensor]) -> torch.Tensor:
    """Rollout through one tower's blocks, ``patterns`` in block order, each [B, H, N, N] → [B, N, N].

    Row i gives how much each input token contributes to token i after the last block.
    """
    if not patterns:
        raise ValueError("attention_rollout needs the attention pattern of at least one block")
    B, _, N, _ = patterns[0].shape
    eye = torch.eye(N, device=patterns[0].device)
    rollout = eye.expand(B, N, N)
    for pattern in patterns:
        mixed = pattern.float().mean(dim=1) + eye                       # [B, N, N]: heads averaged, + residual
        rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
    return rollout


def rollout_row(rollout: torch.Tensor, query: int | torch.Tensor) -> torch.Tensor:
    """The row [B, N] of one query per sample: an index ([CLS] = 0) or a [B] tensor (each class's [EOS])."""
    B, N, _ = rollout.shape
    index = torch.as_tensor(query, device=rollout.device).long().expand(B)
    return rollout.gather(1, index.view(B, 1, 1).expand(B, 1, N)).squeeze(1)  # [B, N]
