"""Relevance propagation: a token that alone decides the output gets the largest relevance."""
import copy

import torch

from analysis_lib.model.prompted import build_model
from analysis_lib.stats.relevance import propagate, token_relevance


def test_identity_attention_keeps_identity():
    A = torch.eye(5).expand(2, 3, 5, 5)
    R = propagate([A, A], [torch.zeros_like(A), torch.zeros_like(A)])
    torch.testing.assert_close(R, torch.eye(5).expand(2, 5, 5))


def test_only_informative_patch_gets_relevance(tiny):
    """One block; every patch but k is all-zero with no position, class token zero: only patch k
    carries a value, so only k can be relevant to [CLS]."""
    backbone = copy.deepcopy(tiny)
    visual = backbone.clip.visual
    visual.transformer.resblocks = visual.transformer.resblocks[:1]
    with torch.no_grad():
        visual.positional_embedding.zero_()
        visual.class_embedding.zero_()
        visual.ln_pre.bias.zero_()
        for block in visual.transformer.resblocks:
            block.ln_1.bias.zero_()
            block.attn.in_proj_bias.zero_()
    classes = [f"class {i}" for i in range(8)]
    model = build_model("zeroshot", backbone, classes, "a photo of a {}.")
    k, grid, patch = 5, visual.grid_size[0], visual.patch_size[0]
    image = torch.zeros(1, 3, backbone.image_size, backbone.image_size)
    r, c = divmod(k, grid)
    image[..., r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = torch.randn(3, patch, patch)
    vision, text = token_relevance(model, image.expand(len(classes), -1, -1, -1),
                                   torch.arange(len(classes)))
    patches = vision[:, 1:]                                              # drop [CLS] itself
    others = torch.cat([patches[:, :k], patches[:, k + 1:]], dim=1)
    assert others.abs().max() == 0
    assert (patches[:, k] >= 0).all() and (patches[:, k] > 0).any()
    positive = patches[:, k] > 0
    assert (patches[positive].argmax(dim=1) == k).all()
    eos = model.eos_index
    assert all(text[i, eos[i] + 1:].abs().sum() == 0 and text[i, eos[i]] >= 1 for i in range(len(classes)))
