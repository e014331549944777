"""The CLIP variants as data: which prompts and biases each one adds, validated once.

    zeroshot  hand template per dataset, nothing learned
    coop      shallow learned text context (text prompts of depth 1)
    text      deep text prompts (language-only IVLP)
    vision    deep vision prompts (VPT-deep style; text: "a photo of a {}." as in the reference
              VPT trainer of MaPLe's code, or text_template)
    ivlp      deep text and vision prompts (independent vision-language prompting)
    bias      learned residual-stream biases in the first blocks of each tower
"""
from __future__ import annotations

import typing
from dataclasses import asdict, dataclass

from ..checks import ConfigError, check_type

VARIANTS = ("zeroshot", "coop", "text", "vision", "ivlp", "bias")
BIAS_PLACES = ("attn", "mlp", "both")
MAX_N_CTX = 32

# Defaults per variant (PromptSRC's IVLP: 4 + 4 tokens, depth 9).
_DEFAULTS = {
    "zeroshot": {},
    "coop": {"text_n_ctx": 4, "text_depth": 1},
    "text": {"text_n_ctx": 4, "text_depth": 9},
    "vision": {"vision_n_ctx": 4, "vision_depth": 9, "text_template": "a photo of a {}."},
    "ivlp": {"text_n_ctx": 4, "text_depth": 9, "vision_n_ctx": 4, "vision_depth": 9},
    "bias": {"bias_where": "both", "bias_text_depth": 12, "bias_vision_depth": 12},
}
# Hyper-parameters each variant accepts (others are an error, not silently ignored).
_ACCEPTS = {
    "zeroshot": set(),
    "coop": {"text_n_ctx", "ctx_init"},
    "text": {"text_n_ctx", "text_depth", "ctx_init"},
    "vision": {"vision_n_ctx", "vision_depth", "text_template"},
    "ivlp": {"text_n_ctx", "text_depth", "vision_n_ctx", "vision_depth", "ctx_init"},
    "bias": {"bias_where", "bias_text_depth", "bias_vision_depth"},
}


class VariantError(ValueError):
    """An unknown variant or a hyper-parameter that does not fit it or the backbone."""


@dataclass(frozen=True)
class VariantConfig:
    variant: str
    text_n_ctx: int = 0
    text_depth: int = 0
    vision_n_ctx: int = 0
    vision_depth: int = 0
    ctx_init: str | None = "a photo of a"
    bias_where: str | None = None
    bias_text_depth: int = 0
    bias_vision_depth: int = 0
    text_template: str | None = None  # the class prompts' text; None: the dataset's template

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def learns(self) -> bool:
        """Whether the variant has any learned parameter (zero-shot has none)."""
        return any((self.text_n_ctx, self.vision_n_ctx, self.bias_text_depth, self.bias_vision_depth))


def variant_config(variant: str, **hparams) -> VariantConfig:
    """Defaults of ``variant`` updated with ``hparams``, type- and range-checked (blocks checked later)."""
    if variant not in VARIANTS:
        raise VariantError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    unknown = set(hparams) - _ACCEPTS[variant]
    if unknown:
        allowed = ", ".join(sorted(_ACCEPTS[variant])) or "none"
        raise VariantError(f"variant {variant!r} does not take {', '.join(sorted(unknown))}; "
                           f"it takes: {allowed}")
    values = {**_DEFAULTS[variant], **hparams}
    types = typing.get_type_hints(VariantConfig)
    try:
        values = {key: check_type(key, value, types[key]) for key, value in values.items()}
    except ConfigError as err:
        raise VariantError(str(err)) from None
    config = VariantConfig(variant=variant, **values)
    for branch in ("text", "vision"):
        n_ctx = getattr(config, f"{branch}_n_ctx")
        if _DEFAULTS[variant].get(f"{branch}_n_ctx") and not 1 <= n_ctx <= MAX_N_CTX:
            raise VariantError(f"{branch}_n_ctx must be in 1..{MAX_N_CTX}, got {n_ctx}")
    if config.text_template is not None and config.text_template.count("{}") != 1:
        raise VariantError(f"text_template must hold one {{}} for the class name, got {config.text_template!r}")
    if variant == "bias" and config.bias_where not in BIAS_PLACES:
        raise VariantError(f"bias_where must be one of {', '.join(BIAS_PLACES)}, got {config.bias_where!r}")
    return config


def check_depths(config: VariantConfig, text_blocks: int, vision_blocks: int) -> None:
    """Prompt depths lie in 1..blocks of their tower, bias depths in 0..blocks (0: that tower untouched)."""
    limits = {"text_depth": text_blocks, "vision_depth": vision_blocks,
              "bias_text_depth": text_blocks, "bias_vision_depth": vision_blocks}
    for key, blocks in limits.items():
        value, lowest = getattr(config, key), 0 if key.startswith("bias") else 1
        if key in _DEFAULTS[config.variant] and not lowest <= value <= blocks:
            raise VariantError(f"{key} must be in {lowest}..{blocks} for this backbone "
                               f"({blocks} blocks), got {value}")
    if config.variant == "bias" and config.bias_text_depth + config.bias_vision_depth == 0:
        raise VariantError("bias tuning needs bias_text_depth or bias_vision_depth above 0")
