"""Which input tokens the image-text alignment relies on: gradient-weighted relevance.

Relevance propagation for attention models (Chefer et al., 2021): start from R = I; after each
block, R ← R + Ā R with Ā = mean over heads of (∂s/∂A ⊙ A)⁺, where s is the similarity logit of
the image with its true class and A that block's attention. The [CLS] row of the vision R and
the [EOS] row of the true class's text R give each token's contribution to s.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..model.prompted import PromptedCLIP


def propagate(patterns: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """R after all blocks, from each block's attention [B, H, N, N] and its gradient; [B, N, N]."""
    B, _, N, _ = patterns[0].shape
    R = torch.eye(N, device=patterns[0].device).expand(B, N, N).clone()
    for A, G in zip(patterns, grads):
        cam = (G * A).clamp(min=0).mean(dim=1)                           # [B, N, N]
        R = R + cam @ R
    return R


@contextmanager
def _text_inputs_track_grad(model: PromptedCLIP):
    """Zero-shot text has no learned input; make the embeddings a graph leaf so gradients reach A."""
    hook = model.clip.token_embedding.register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    try:
        yield
    finally:
        hook.remove()


def token_relevance(model: PromptedCLIP, images: torch.Tensor, labels: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: vision relevance of every token for [CLS] [B, N_vision] and text relevance of
    every token of the true class's prompt for its [EOS] [B, N_text] (positions after EOS are 0)."""
    n_vision = len(model.vision_tower.blocks)
    vision_rows, text_rows = [], []
    for image, label in zip(images, labels.tolist()):
        x = image[None].clone().requires_grad_(True)
        with _text_inputs_track_grad(model), torch.enable_grad(), \
                model.capture("*.attn.pattern", keep_graph=True) as cache:
            score = model(x)[0, label]
        patterns = cache.blocks("vision", "attn.pattern") + cache.blocks("text", "attn.pattern")
        grads = torch.autograd.grad(score, patterns)
        R_vision = propagate(patterns[:n_vision], grads[:n_vision])
        R_text = propagate([p[label:label + 1] for p in patterns[n_vision:]],
                           [g[label:label + 1] for g in grads[n_vision:]])
        eos = int(model.eos_index[label])
        text_row = R_text[0, eos].clone()
        text_row[eos + 1:] = 0
        vision_rows.append(R_vision[0, 0].detach())
        text_rows.append(text_row.detach())
    return torch.stack(vision_rows), torch.stack(text_rows)
