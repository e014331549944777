"""PromptedCLIP: a frozen open_clip CLIP with one variant's prompts and biases, attention observable.

Block 0's prompts enter here, with the embeddings (vision: appended after the patches, after
the positional embedding, before ``ln_pre``; text: replacing the token embeddings right after
[SOS], before the positional embedding); every deeper insertion happens in ``Tower.forward``.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .attention import NO_ABLATION, Ablation
from .backbone import Backbone
from .capture import Cache, Recorder
from ..files import replace_atomically
from .towers import DeepPrompts, PromptSlot, ResidualBiases, Tower
from .variants import VariantConfig, VariantError, check_depths, variant_config

# One more pass through the text tower costs about as much as this many padded token positions
# (a GPU's kernel launches per block; an estimate, not a measurement): fewer, larger groups.
PASS_COST_TOKENS = 256

# What a text position holds: the one list of token types (the statistics group by it, in this order).
TOKEN_TYPES = ("sos", "prompt", "category", "template", "period", "eos")
PADDING = "pad"  # positions after [EOS]: no type, never attended to by the pooled token


@dataclass(frozen=True)
class TokenLayout:
    """What each position of a tower's sequence is (for the statistics)."""

    n_tokens: int
    is_prompt: torch.Tensor                 # [N] bool
    grid: int | None = None                 # vision: patches form a grid × grid square
    patch_px: int | None = None             # vision: pixels per patch side
    token_types: list[list[str]] | None = None  # text: per class, one of TOKEN_TYPES per position
    eos_index: torch.Tensor | None = None   # text: [C]


class PromptedCLIP(nn.Module):
    """Zero-shot CLIP, prompt tuning or bias tuning, for a fixed list of classes."""

    def __init__(self, backbone: Backbone, config: VariantConfig, classnames: list[str], template: str):
        super().__init__()
        clip = backbone.clip
        check_depths(config, len(clip.transformer.resblocks), len(clip.visual.transformer.resblocks))
        self.config, self.classnames = config, list(classnames)
        self.template = config.text_template or template
        self.clip = clip
        self.backbone, self.tokenizer = backbone, backbone.tokenizer
        self._recorder: Recorder | None = None
        self._ablation = NO_ABLATION

        texts, init_words = self._class_prompts()
        tokens = self.tokenizer(texts)                                   # [C, context]
        eos = tokens.argmax(dim=-1)
        # Causal mask: positions after the last [EOS] never influence pooled features.
        self.register_buffer("text_tokens", tokens[:, : int(eos.max()) + 1], persistent=False)
        self.register_buffer("eos_index", eos, persistent=False)
        self.prompt_texts = texts
        self.group_text()

        n_patches = clip.visual.positional_embedding.shape[0]            # [CLS] + patches
        text_slot, vision_slot = PromptSlot(1, config.text_n_ctx), PromptSlot(n_patches, config.vision_n_ctx)
        text_width, vision_width = clip.transformer.width, clip.visual.transformer.width
        text_prompts = vision_prompts = None
        if config.text_n_ctx:
            first = None
            if init_words:
                first = clip.token_embedding(self.text_tokens[:1, text_slot.positions])[0].float()
            text_prompts = DeepPrompts(config.text_depth, config.text_n_ctx, text_width, first)
        if config.vision_n_ctx:
            vision_prompts = DeepPrompts(config.vision_depth, config.vision_n_ctx, vision_width)
        text_biases = vision_biases = None
        if config.bias_text_depth:
            text_biases = ResidualBiases(config.bias_where, config.bias_text_depth, text_width)
        if config.bias_vision_depth:
            vision_biases = ResidualBiases(config.bias_where, config.bias_vision_depth, vision_width)
        self.text_tower = Tower("text", clip.transformer.resblocks, text_slot, text_prompts, text_biases)
        self.vision_tower = Tower("vision", clip.visual.transformer.resblocks, vision_slot, vision_prompts,
                                  vision_biases)
        self.to(backbone.device)

    # ----------------------------------------------------------------- prompts
    def _class_prompts(self) -> tuple[list[str], bool]:
        """The text of each class prompt, and whether learned context starts from the init words."""
        texts, from_words = class_prompts(self.config, self.template, self.classnames, self.tokenizer)
        context = self.clip.context_length
        longest = max(texts, key=lambda t: len(self.tokenizer.encode(t)))
        if len(self.tokenizer.encode(longest)) + 2 > context:
            raise VariantError(f"class prompt {longest!r} does not fit the text context of {context} "
                               "tokens; use fewer prompt tokens or a shorter class name")
        return texts, from_words

    # ----------------------------------------------------------------- towers
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features [B, E]."""
        visual = self.clip.visual
        weight = visual.conv1.weight                                      # images may come from the CPU
        x = visual.conv1(images.to(device=weight.device, dtype=weight.dtype))  # [B, D, G, G]
        x = x.flatten(2).transpose(1, 2)                                  # [B, G*G, D]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        prompts = self.vision_tower.prompts
        if prompts is not None:
            x = self.vision_tower.slot.insert(x, prompts.vectors[0])
        x = visual.ln_pre(x)
        x = self.vision_tower(x, None, self._recorder, self._ablation)
        pooled = visual.ln_post(x[:, 0]) @ visual.proj                    # [B, E]
        return F.normalize(pooled, dim=-1)

    def group_text(self, pass_cost: float = PASS_COST_TOKENS) -> None:
        """Split the class prompts into groups of similar length (see ``length_groups``)."""
        order = torch.sort(self.eos_index.cpu(), stable=True).indices
        lengths = (self.eos_index.cpu()[order] + 1).tolist()
        self.register_buffer("_text_order", order.to(self.eos_index.device), persistent=False)
        self.register_buffer("_text_inverse", torch.argsort(order).to(self.eos_index.device), persistent=False)
        self.text_groups = length_groups(lengths, pass_cost)

    def encode_text(self) -> torch.Tensor:
        """Normalised class features [C, E].

        Each group of prompts runs only up to its own longest [EOS], so a long class name costs
        only its group; exact under the causal mask. While a recorder listens, all classes run
        as one group, in their order, so that its maps are [C, ..., L] as ``token_layout`` says;
        so too under a mean-ablation, whose means are laid out that way.
        """
        if self._recorder is not None or self._ablation.bias_means:
            pooled = self._pooled_text(self.text_tokens, self.eos_index)
        else:
            tokens, eos = self.text_tokens[self._text_order], self.eos_index[self._text_order]
            pooled = torch.cat([self._pooled_text(tokens[start:stop, :length], eos[start:stop])
                                for start, stop, length in self.text_groups])[self._text_inverse]
        proj = self.clip.text_projection
        pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return F.normalize(pooled, dim=-1)

    def _pooled_text(self, tokens: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """The text tower's final-norm output at each prompt's [EOS], [c, D], for tokens [c, L]."""
        clip = self.clip
        x = clip.token_embedding(tokens)                                  # [c, L, D]
        prompts = self.text_tower.prompts
        if prompts is not None:
            x = self.text_tower.slot.insert(x, prompts.vectors[0])
        n = tokens.shape[1]
        x = x + clip.positional_embedding[:n].to(x.dtype)
        x = self.text_tower(x, clip.attn_mask[:n, :n].to(x.dtype), self._recorder, self._ablation)
        x = clip.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eos]

    @property
    def text_is_fixed(self) -> bool:
        """Whether nothing in the text tower is learned: the class features then never change."""
        return not any(p.requires_grad for p in self.text_tower.parameters())

    def logits_from(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return self.clip.logit_scale.exp() * image_features @ text_features.T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [B, C]."""
        return self.logits_from(self.encode_image(images), self.encode_text())

    # ----------------------------------------------------------------- observation
    @contextmanager
    def capture(self, names=None, recorder: Recorder | None = None, keep_graph: bool = False):
        """Within the block, forward passes report the named hook points (see ``capture.py``)."""
        self._recorder = recorder if recorder is not None else Cache(names, keep_graph)
        try:
            yield self._recorder
        finally:
            self._recorder = None

    @contextmanager
    def ablate(self, ablation: Ablation):
        """Within the block, the prompts' rescaling and/or bias term are removed (causal test)."""
        self._ablation = ablation
        try:
            yield self
        finally:
            self._ablation = NO_ABLATION

    def token_layout(self, tower: str) -> TokenLayout:
        if tower == "vision":
            visual = self.clip.visual
            n = visual.positional_embedding.shape[0] + self.config.vision_n_ctx
            grid = visual.grid_size[0]
            return TokenLayout(n, self.vision_tower.slot.mask(n), grid, visual.patch_size[0])
        if tower != "text":
            raise ValueError(f"tower must be 'vision' or 'text', got {tower!r}")
        n = self.text_tokens.shape[1]
        return TokenLayout(n, self.text_tower.slot.mask(n),
                           token_types=self._token_types(),
                           eos_index=self.eos_index.cpu())

    def _token_types(self) -> list[list[str]]:
        """Each class prompt's type per position, from the pieces of the prompt tokenised separately (never by
        searching the class name in the text: Food101's "pho" occurs inside "photo").

        Pieces: [SOS]; the words before the class (learned context: its n_ctx positions are
        "prompt", any init words left fixed are "template"; zero-shot: the template words play the
        prompt's part); the class name ("category"); the words after it ('.' is "period", the rest
        "template"); [EOS]; padding. Where the end of the class name merges with what follows into
        one token ("ram (adult male sheep)." ends in ")."; "Jr." + "." is ".."), the prompt's tokens
        are matched to the pieces from both ends, and the tokens between the words before and the
        words after that still tokenise alike are "category": a merged token holds the end of the
        class name, so it is typed as the class.
        """
        encode = self.tokenizer.encode
        # The words around the class are the same for every class (the template, or the context).
        before, after = (self.prompt_texts[0][: -len(f"{self.classnames[0]}.")], ".") if self.config.text_n_ctx \
            else self.template.split("{}")
        before_ids = encode(before) if before.strip() else []
        n_prompt = self.config.text_n_ctx or len(before_ids)
        after_ids = encode(after)
        after_types = ["period" if self.tokenizer.decode([i]).strip() == "." else "template" for i in after_ids]
        result = []
        for c, (name, eos) in enumerate(zip(self.classnames, self.eos_index.tolist())):
            tokens = self.text_tokens[c, 1:eos].tolist()                  # between [SOS] and [EOS]
            n_before = _common_prefix(tokens, before_ids)
            n_after = _common_prefix(tokens[n_before:][::-1], after_ids[::-1])
            if n_before < n_prompt:
                raise VariantError(f"class {name!r}: the prompt {self.prompt_texts[c]!r} does not keep the "
                                   f"{n_prompt} prompt positions apart from the class name; rename the class")
            types = (["sos"] + ["prompt"] * n_prompt + ["template"] * (n_before - n_prompt)
                     + ["category"] * (len(tokens) - n_before - n_after) + after_types[len(after_types) - n_after:])
            result.append(types + ["eos"] + [PADDING] * (self.text_tokens.shape[1] - eos - 1))
        return result

    # ----------------------------------------------------------------- parameters
    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # the backbone is frozen, including its dropout-like layers
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save_trainable(self, path: str | Path) -> None:
        """Write the learned parameters only, as safetensors, atomically."""
        state = {k: v.contiguous().cpu() for k, v in self.trainable_state().items()}
        with replace_atomically(path) as tmp:
            save_file(state, str(tmp), metadata={"variant": json.dumps(self.config.to_dict())})

    def load_trainable(self, source: str | Path | dict[str, torch.Tensor]) -> None:
        """Load learned parameters from a safetensors file or another model's ``trainable_state()``:
        the same names and shapes as this model's, finite floating-point values."""
        state = source if isinstance(source, dict) else load_file(str(source))
        own = self.trainable_state()
        where = "the given state" if isinstance(source, dict) else str(source)
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            got = {k: tuple(v.shape) for k, v in state.items()}
            want = {k: tuple(v.shape) for k, v in own.items()}
            raise VariantError(f"{where} holds {got}, but this {self.config.variant} model learns {want}")
        for name, tensor in state.items():
            if not tensor.is_floating_point():
                raise VariantError(f"{where}: {name} holds {tensor.dtype} values, but learned parameters "
                                   "are floating point; pass the file save_trainable wrote")
            if not torch.isfinite(tensor).all():
                raise VariantError(f"{where}: {name} holds NaN or infinite values (a diverged or "
                                   "damaged run); train it again")
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name in state:
                    p.copy_(state[name])


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def class_prompts(config: VariantConfig, template: str, classnames: list[str], tokenizer) -> tuple[list[str], bool]:
    """Each class's prompt text as the variant writes it (the template, or ``n_ctx`` learned
    tokens before the name), and whether the learned context starts from ``ctx_init``'s words."""
    n_ctx, init = config.text_n_ctx, config.ctx_init
    if not n_ctx:
        return [(config.text_template or template).format(c) for c in classnames], False
    from_words = init is not None and n_ctx <= len(tokenizer.encode(init))
    prefix = init if from_words else " ".join(["X"] * n_ctx)
    return [f"{prefix} {c}." for c in classnames], from_words


def text_positions(groups: list[tuple[int, int, int]]) -> int:
    """Token positions one pass over the class prompts runs through the text tower, by length group."""
    return sum((stop - start) * length for start, stop, length in groups)


def length_groups(lengths: list[int], pass_cost: float = PASS_COST_TOKENS) -> list[tuple[int, int, int]]:
    """Contiguous groups ``(start, stop, length)`` of ascending ``lengths``, each run padded to its
    own longest, that minimise the padded token count plus ``pass_cost`` per group (one more
    pass through the tower; dynamic programming over the distinct lengths)."""
    distinct = sorted(set(lengths))
    ends = [sum(n <= v for n in lengths) for v in distinct]   # classes up to each distinct length
    best, cut = [0.0], [0]                                     # best[j]: cost of the first j distinct
    for j in range(1, len(distinct) + 1):
        costs = [best[i] + (ends[j - 1] - (ends[i - 1] if i else 0)) * distinct[j - 1] + pass_cost
                 for i in range(j)]
        cut.append(min(range(j), key=costs.__getitem__))
        best.append(costs[cut[-1]])
    groups, j = [], len(distinct)
    while j:
        i = cut[j]
        groups.append((ends[i - 1] if i else 0, ends[j - 1], distinct[j - 1]))
        j = i
    return groups[::-1]


def build_model(variant: str, backbone: Backbone, classnames: list[str], template: str,
                **hparams) -> PromptedCLIP:
    """The variant ``variant`` (see ``variants.py``) on ``backbone`` for these classes."""
    return PromptedCLIP(backbone, variant_config(variant, **hparams), classnames, template)
