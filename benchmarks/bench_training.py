"""Training steps at ViT-B/16 size: the text tower's share, and what two savings are worth.

Every ivlp step re-encodes all class prompts (the text prompts are being learned), so the text
tower's cost grows with the number of classes. Measured here, in one run, interleaved medians:
  * text by length: prompts grouped by length, each group run to its own longest [EOS], against
    one pass padded to the longest prompt (the code before), on a 1000-class ivlp step;
  * class features once per run for the `vision` variant (nothing learned in its text tower),
    against re-encoding them at every step (the code before), on a 100-class step;
  * the `text` variant's step against ivlp's (100 classes): the cost model prices each on its own.
Class names: see ``timing.class_names``; the ratio of the first saving depends on their spread of
lengths.
"""
from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F

from analysis_lib.model.backbone import load_backbone
from analysis_lib.model.prompted import build_model
from timing import class_names, compare, padded_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    backbone = load_backbone("ViT-B-16-quickgelu")
    images = torch.randn(args.batch, 3, 224, 224)
    labels = torch.arange(args.batch)
    template = "a photo of a {}."
    print(f"threads={args.threads} batch={args.batch} repeats={args.repeats} (medians, interleaved)")

    model = build_model("ivlp", backbone, class_names(args.classes), template)

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()

    def text_only():
        model.zero_grad(set_to_none=True)
        model.encode_text().sum().backward()

    lengths = (model.eos_index + 1).tolist()
    groups = [length for _, _, length in model.text_groups]
    print(f"ivlp, {args.classes} classes: prompt lengths {min(lengths)}-{max(lengths)} tokens "
          f"(mean {sum(lengths) / len(lengths):.1f}), {len(groups)} groups up to {groups}")
    text, text_padded = compare(text_only, padded_text(model, text_only), args.repeats)
    print(f"  text tower forward+backward {text:.2f} s by length / {text_padded:.2f} s padded to the "
          f"longest: ratio {text / text_padded:.3f}")
    grouped, padded = compare(step, padded_text(model, step), args.repeats)
    print(f"  training step {grouped:.2f} s by length / {padded:.2f} s padded to the longest: "
          f"ratio {grouped / padded:.3f} (text tower {100 * text / grouped:.0f}% of the step)")

    vision = build_model("vision", backbone, class_names(100), template)
    fixed = vision.encode_text().detach()

    def vision_step(features):
        vision.zero_grad(set_to_none=True)
        text_features = vision.encode_text() if features is None else features
        F.cross_entropy(vision.logits_from(vision.encode_image(images), text_features), labels).backward()

    once, every = compare(lambda: vision_step(fixed), lambda: vision_step(None), args.repeats)
    print(f"vision, 100 classes: step {once:.2f} s with the class features computed once per run / "
          f"{every:.2f} s re-encoded every step: ratio {once / every:.3f} "
          f"(saves {every - once:.2f} s per step)")

    # The cost model prices each variant from its own step (analysis_lib/study/cost.py): how far
    # apart are the two prompt variants that learn text?
    text, ivlp = (build_model(v, backbone, class_names(100), template) for v in ("text", "ivlp"))

    def step_of(model):
        def run():
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
        return run
    text_s, ivlp_s = compare(step_of(text), step_of(ivlp), args.repeats)
    print(f"text / ivlp, 100 classes: step {text_s:.2f} s / {ivlp_s:.2f} s: ratio {text_s / ivlp_s:.3f}")


if __name__ == "__main__":
    main()
