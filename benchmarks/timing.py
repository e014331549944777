"""Helpers shared by the benchmarks: medians, pairs timed in alternation, open_clip's own step."""
from __future__ import annotations

import random
import statistics
import time

import torch.nn.functional as F


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(a, b, repeats: int) -> tuple[float, float]:
    """Medians of a and b, timed in alternation so that machine load hits both alike."""
    a(), b()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def open_clip_step(clip, images, tokens, labels) -> None:
    """open_clip's own forward and backward (to the inputs: nothing of it is trained) on the full
    77-token prompts: the reference a prompted training step is compared with."""
    x = images.clone().requires_grad_(True)
    hook = clip.token_embedding.register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    try:
        logits = clip.logit_scale.exp() * F.normalize(clip.encode_image(x), dim=-1) @ \
            F.normalize(clip.encode_text(tokens), dim=-1).T
    finally:
        hook.remove()
    F.cross_entropy(logits, labels).backward()


WORDS = ["red", "fox", "great", "white", "shark", "dog", "cat", "bird", "sea", "snake", "tree", "frog",
         "house", "car", "ship", "boat", "black", "green", "horse", "bear"]
WORDS_PER_NAME = {1: 35, 2: 35, 3: 18, 4: 8, 5: 3, 7: 1}  # weights, in percent


def class_names(n: int, seed: int = 0) -> list[str]:
    """n class names of one-token words, 1 to 7 per name with ImageNet-like frequencies (most names
    are 1-3 words, a few are long), so prompts differ in length as real ones do."""
    rng = random.Random(seed)
    counts = rng.choices(list(WORDS_PER_NAME), weights=list(WORDS_PER_NAME.values()), k=n)
    return [" ".join(rng.choices(WORDS, k=k)) for k in counts]


def padded_text(model, fn):
    """``fn`` run with the model's class prompts in one pass padded to the longest (the code before
    the text tower ran by length), for comparisons in the same process."""
    def run():
        grouped = model.text_groups
        model.group_text(pass_cost=float("inf"))
        try:
            fn()
        finally:
            model.text_groups = grouped
    return run
