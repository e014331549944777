"""Speed ratios of the CLIP variants against open_clip's own forward, measured in one run.

CPU, ViT-B/16 with random weights, batch 8, a fixed thread count. Absolute times on shared
machines are noise; the ratios (same process, interleaved repeats, medians) are the result.
"""
from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F

from analysis_lib.model.backbone import load_backbone
from analysis_lib.model.prompted import build_model
from timing import compare, open_clip_step

CLASSES = [f"object number {i}" for i in range(100)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    backbone = load_backbone("ViT-B-16-quickgelu")
    clip = backbone.clip
    images = torch.randn(args.batch, 3, 224, 224)
    template = "a photo of a {}."
    zeroshot = build_model("zeroshot", backbone, CLASSES, template)
    ivlp = build_model("ivlp", backbone, CLASSES, template, text_n_ctx=4, vision_n_ctx=4,
                       text_depth=9, vision_depth=9)
    full_tokens = backbone.tokenizer(ivlp.prompt_texts)
    labels = torch.arange(args.batch) % len(CLASSES)
    rows = []

    with torch.no_grad():
        ours, theirs = compare(lambda: zeroshot.encode_image(images), lambda: clip.encode_image(images),
                               args.repeats)
    rows.append(("zeroshot image forward / open_clip image forward", ours / theirs, 1.05))

    def ivlp_step():
        ivlp.zero_grad(set_to_none=True)
        F.cross_entropy(ivlp(images), labels).backward()

    ours, theirs = compare(ivlp_step, lambda: open_clip_step(clip, images, full_tokens, labels), args.repeats)
    rows.append(("ivlp training step (4+4, depth 9, 100 classes) / open_clip fwd+bwd to inputs",
                 ours / theirs, 1.15))

    with torch.no_grad():
        def captured():
            with ivlp.capture():
                ivlp(images)
        ours, theirs = compare(captured, lambda: ivlp(images), args.repeats)
    rows.append(("ivlp forward with full attention capture / without", ours / theirs, 1.5))

    with torch.no_grad():
        truncated = ivlp.text_tokens

        def text_full():
            ivlp.text_tokens = full_tokens
            try:
                with ivlp.capture([]):  # while a recorder listens, one pass over the tokens as given
                    ivlp.encode_text()
            finally:
                ivlp.text_tokens = truncated
        ours, theirs = compare(lambda: ivlp.encode_text(), text_full, args.repeats)
    rows.append((f"text features, 100 classes: by length (up to {truncated.shape[1]} tokens) / full 77",
                 ours / theirs, None))

    print(f"threads={args.threads} batch={args.batch} repeats={args.repeats} (medians, interleaved)")
    for name, ratio, target in rows:
        verdict = "" if target is None else ("  ok" if ratio <= target else f"  ABOVE target {target}")
        print(f"{ratio:6.3f}  {name}{'' if target is None else f' (target <= {target})'}{verdict}")


if __name__ == "__main__":
    main()
