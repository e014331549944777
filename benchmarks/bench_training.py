"""Time of one ivlp training step at ViT-B/16 size with many classes, and the text tower's share.

Every step re-encodes all class prompts (the text prompts are being learned), so the text tower's
cost grows with the number of classes while the image tower's grows with the batch.
"""
from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F

from analysis_lib.model.backbone import load_backbone
from analysis_lib.model.prompted import build_model
from timing import median_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=500)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    backbone = load_backbone("ViT-B-16-quickgelu")
    classes = [f"object number {i}" for i in range(args.classes)]
    model = build_model("ivlp", backbone, classes, "a photo of a {}.")
    images = torch.randn(args.batch, 3, 224, 224)
    labels = torch.arange(args.batch)

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()

    def text_only():
        model.zero_grad(set_to_none=True)
        model.encode_text().sum().backward()

    total, text = median_time(step, args.repeats), median_time(text_only, args.repeats)
    print(f"threads={args.threads} classes={args.classes} batch={args.batch} "
          f"text context={model.text_tokens.shape[1]} tokens")
    print(f"training step: {total:.2f} s; text tower forward+backward: {text:.2f} s "
          f"({100 * text / total:.0f}% of the step)")


if __name__ == "__main__":
    main()
