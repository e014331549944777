"""The causal test of way (a) against way (b) (ours): accuracy with either effect of the prompts removed.

A trained prompted model is evaluated on the whole test set of each class group as trained, with
the bias term removed (rescaling only), with the rescaling removed (λ = 1, bias term kept), with
both removed, and with the bias term replaced by its mean over the test images (a constant: is the
bias term a dataset bias?). Each removal acts in both towers, in the vision tower alone and in the
text tower alone, so that a reader sees the total gain (as trained − both removed), each way's share
and their interaction. In both towers each removal also comes in two forms: in every block (the
prompt slots past the prompt depth carry the previous block's outputs, which still act as keys and
values) and only below the prompt depth (where the learned prompts are).

Cost: an ablation of one tower leaves the other tower's features as trained, so each tower's
features are computed once per ablation state (text: the class prompts; vision: the images, every
state on a batch while it is in memory) and every combination is a matrix product.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..model.attention import Ablation
from ..model.prompted import PromptedCLIP
from ..study.run_record import harmonic_mean
from ..study.run_folder import LoadedRun
from ..study.trainer import autocast_for
from .attention_stats import TextLayout, parse_hook_name

ALL_BLOCKS, BELOW_DEPTH = "all blocks", "below prompt depth"
AS_TRAINED, MEAN_ABLATED = "as trained", "bias term mean-ablated"
REMOVALS = {
    "bias term removed": dict(keep_rescale=True, keep_bias=False),
    "rescaling removed": dict(keep_rescale=False, keep_bias=True),
    "both removed": dict(keep_rescale=False, keep_bias=False),
}
# The states of one tower: (ablation, form) → the ablation (the mean-ablation gets its means later).
STATES = {(AS_TRAINED, ALL_BLOCKS): Ablation()} | {
    (name, form): Ablation(**keep, below_prompt_depth=form == BELOW_DEPTH)
    for form in (ALL_BLOCKS, BELOW_DEPTH) for name, keep in REMOVALS.items()} | {
    (MEAN_ABLATED, ALL_BLOCKS): Ablation()}
TOWERS = ("both", "vision", "text")


class BiasTermMeans:
    """Recorder of the mean bias term (``attn.prompt_part``) per block: vision per head and position
    over the images it sees; text per head and token type over the classes, laid out per class and
    position again. ``result()`` is the ``bias_means`` of an ``Ablation``."""

    def __init__(self, text_layout: TextLayout):
        self.membership = text_layout.membership()              # [C, N, T]
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def wants(self, name: str) -> bool:
        parsed = parse_hook_name(name)
        return parsed is not None and parsed[2] == "attn.prompt_part"

    @torch.no_grad()
    def record(self, name: str, value: torch.Tensor) -> None:
        tower, block, _ = parse_hook_name(name)
        key = f"{tower}.blocks.{block}"
        value = value.float()
        if tower == "text":                                       # [C, H, N, d], once per class list
            m = self.membership.to(value.device)
            per_type = torch.einsum("chnd,cnt->htd", value, m) / m.sum((0, 1)).clamp_min(1)[None, :, None]
            self.sums[key], self.counts[key] = torch.einsum("cnt,htd->chnd", m, per_type), 1
        else:                                                     # [B, H, N, d], per batch of images
            self.sums[key] = self.sums.get(key, 0) + value.sum(0)
            self.counts[key] = self.counts.get(key, 0) + value.shape[0]

    def result(self) -> dict[str, torch.Tensor]:
        return {key: total / self.counts[key] for key, total in self.sums.items()}


@torch.no_grad()
def bias_term_means(model: PromptedCLIP, loader, progress: bool = False) -> dict[str, torch.Tensor]:
    """The mean bias term of every block of ``model`` over ``loader``'s images (vision) and its
    classes (text, per token type): the fixed value a mean-ablation puts in its place."""
    recorder = BiasTermMeans(TextLayout.from_token_layout(model.token_layout("text")))
    device = next(model.parameters()).device
    with model.capture(recorder=recorder):
        model.encode_text()
        for images, _ in tqdm(loader, desc="bias term means", disable=not progress, leave=False):
            model.encode_image(images.to(device))
    return recorder.result()


def _state(ablation: Ablation, tower: str, means: dict | None) -> Ablation:
    return replace(ablation, towers=(tower,), bias_means=means)


@torch.no_grad()
def _features(model: PromptedCLIP, loader, precision: str, progress: bool):
    """Text features [C, E] and image features [n, E] in every state of ``STATES``, and the labels."""
    device = next(model.parameters()).device
    states = [k for k in STATES if k[0] != MEAN_ABLATED]
    images, labels = {k: [] for k in STATES}, []
    with autocast_for(device, precision):
        text = {}
        for key in states:
            with model.ablate(_state(STATES[key], "text", None)):
                text[key] = model.encode_text().float()
        means = BiasTermMeans(TextLayout.from_token_layout(model.token_layout("text")))
        for x, y in tqdm(loader, desc="causal test", disable=not progress, leave=False):
            x = x.to(device)
            labels.append(y)
            for key in states:
                with model.ablate(_state(STATES[key], "vision", None)):
                    if key == (AS_TRAINED, ALL_BLOCKS):
                        with model.capture(recorder=means):
                            images[key].append(model.encode_image(x).float())
                    else:
                        images[key].append(model.encode_image(x).float())
        with model.capture(recorder=means):
            model.encode_text()                      # the text means, as the images' were taken
        mean_state = _state(Ablation(), "text", means.result())
        with model.ablate(mean_state):
            text[MEAN_ABLATED, ALL_BLOCKS] = model.encode_text().float()
        with model.ablate(replace(mean_state, towers=("vision",))):
            for x, _ in tqdm(loader, desc="causal test (mean bias)", disable=not progress, leave=False):
                images[MEAN_ABLATED, ALL_BLOCKS].append(model.encode_image(x.to(device)).float())
    return text, {k: torch.cat(v) for k, v in images.items()}, torch.cat(labels)


def ablation_accuracy(run: LoadedRun, progress: bool = False) -> pd.DataFrame:
    """One row per (tower, ablation, form): base, novel and harmonic-mean accuracy (percent) on the
    whole test set of each class group. Towers: both, vision only, text only (the latter two in
    every block, without the mean-ablation)."""
    accuracy = {}
    for classes in ("base", "novel"):
        model = run.model(classes)
        text, images, labels = _features(model, run.test_loader(classes), run.settings.train.precision, progress)
        trained = (AS_TRAINED, ALL_BLOCKS)
        for tower in TOWERS:
            for key in STATES:
                if tower != "both" and (key[1] == BELOW_DEPTH or key[0] == MEAN_ABLATED):
                    continue
                t = text[key] if tower in ("both", "text") else text[trained]
                v = images[key] if tower in ("both", "vision") else images[trained]
                correct = (model.logits_from(v, t).argmax(-1).cpu() == labels).float().mean().item()
                accuracy.setdefault((tower, *key), {})[classes] = 100.0 * correct
    return pd.DataFrame([{"tower": tower, "ablation": name, "form": form, "base": acc["base"],
                          "novel": acc["novel"], "hm": harmonic_mean(acc["base"], acc["novel"])}
                         for (tower, name, form), acc in accuracy.items()])


def causal_decomposition(causal: pd.DataFrame) -> pd.DataFrame:
    """Per run and tower (all blocks): the total gain (as trained − both removed), what each way
    alone keeps of it (rescaling only: bias term removed − both removed; bias term only: rescaling
    removed − both removed) and their interaction (gain − the two), in HM points."""
    keys = [k for k in ("dataset", "variant", "seed") if k in causal.columns]
    hm = causal[causal.form == ALL_BLOCKS].pivot_table(index=[*keys, "tower"], columns="ablation", values="hm")
    none = hm["both removed"]
    out = pd.DataFrame({"total gain": hm[AS_TRAINED] - none, "way (a) alone": hm["bias term removed"] - none,
                        "way (b) alone": hm["rescaling removed"] - none})
    out["interaction"] = out["total gain"] - out["way (a) alone"] - out["way (b) alone"]
    return out.reset_index()

