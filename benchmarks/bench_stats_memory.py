"""Peak memory of the attention statistics for 100 images at ViT-B/16 size, on the CPU.

The recorders reduce every block's maps as they are produced, so the peak stays near one batch's
worth of maps, far below what holding every image's full maps would take.
"""
from __future__ import annotations

import argparse
import logging
import resource

import torch
from torch.utils.data import TensorDataset, DataLoader

from analysis_lib.model.backbone import load_backbone
from analysis_lib.stats.collect import collect
from analysis_lib.model.prompted import build_model
from analysis_lib.stats.attention_stats import AttentionStatistics, DecompositionStatistics


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    backbone = load_backbone("ViT-B-16-quickgelu")
    model = build_model("ivlp", backbone, [f"object {i}" for i in range(10)], "a photo of a {}.")
    images = torch.randn(args.images, 3, 224, 224)
    loader = DataLoader(TensorDataset(images, torch.zeros(args.images)), batch_size=args.batch)
    with torch.no_grad():                      # one plain pass: the baseline peak of the model itself
        for x, _ in loader:
            model.encode_image(x)
    before = peak_rss_mb()
    recorders = [AttentionStatistics.for_model(model), DecompositionStatistics.for_model(model)]
    collect(model, loader, recorders, progress=False)
    after = peak_rss_mb()
    n = model.token_layout("vision").n_tokens
    blocks, heads = len(model.vision_tower.blocks), backbone.clip.visual.transformer.resblocks[0].attn.num_heads
    full_maps = args.images * blocks * heads * n * n * 4 / 2**20
    print(f"{args.images} images, batch {args.batch}, {blocks} blocks x {heads} heads x {n}x{n} maps")
    print(f"peak RSS: {before:.0f} MB after plain forward passes, {after:.0f} MB after collecting "
          f"the statistics (+{after - before:.0f} MB)")
    print(f"holding every image's full vision maps would need {full_maps:.0f} MB "
          f"({full_maps / max(after - before, 1):.0f}x the measured increase)")


if __name__ == "__main__":
    main()
