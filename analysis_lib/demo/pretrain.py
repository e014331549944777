"""Contrastive pretraining of demo-clip on the demo world's captioned scenes.

No CLIP weights can be downloaded here, and a random CLIP has no zero-shot ability, so the
embedded default pretrains its own: a small open_clip config (`model/configs/demo-clip.json`)
trained with CLIP's loss on `world.pretraining_batch`. The result is deterministic for a
seed and thread count, is saved as fp16 safetensors in open_clip's own key names, and loads
through the same path as real weights (`load_backbone("demo-clip", "<file>")`).

    python -m analysis_lib.demo.pretrain --out analysis_lib/assets/demo-clip.safetensors
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file
from torchvision.transforms.functional import normalize
from tqdm import tqdm

from ..model import backbone  # noqa: F401  (registers demo-clip's config with open_clip)
from . import world
from ..files import replace_atomically

MODEL = "demo-clip"


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0


def normalise(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) floats in [0, 1] -> CLIP's normalised (N, 3, H, W) input."""
    return normalize(torch.from_numpy(images).permute(0, 3, 1, 2), OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)


def _optimizer(model: torch.nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW as in CLIP: weight decay on matrices only, not on gains, biases or the logit scale."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "logit_scale" not in name else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def _learning_rate(step: int, config: PretrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.5 * config.lr * (1 + math.cos(math.pi * progress))


def pretrain(config: PretrainConfig = PretrainConfig(), progress: bool = True) -> open_clip.model.CLIP:
    """Train demo-clip from a seeded random init; returns the model in eval mode."""
    torch.manual_seed(config.seed)
    model = open_clip.create_model(MODEL)
    tokenizer = open_clip.get_tokenizer(MODEL)
    optimizer = _optimizer(model, config)
    loss_fn = open_clip.ClipLoss()
    model.train()
    bar = tqdm(range(config.steps), desc="pretraining demo-clip", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        images, captions = world.pretraining_batch(config.seed * 10**6 + step, config.batch_size)
        image_features, text_features, logit_scale = model(normalise(images), tokenizer(captions))
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def held_out_accuracy(model: open_clip.model.CLIP, per_class: int = 10, seed: int = 999_999_999) -> float:
    """Zero-shot accuracy on fresh single-object scenes over all colour x shape classes."""
    tokenizer = open_clip.get_tokenizer(MODEL)
    classes = world.object_classes()
    text = model.encode_text(tokenizer([f"a photo of a {c} {s}." for c, s in classes]), normalize=True)
    images, labels = world.held_out_objects(seed, per_class)
    image = torch.cat([model.encode_image(normalise(chunk), normalize=True)
                       for chunk in np.array_split(images, max(1, len(images) // 256))])
    return float(((image @ text.T).argmax(1).numpy() == labels).mean())


def save_checkpoint(model: open_clip.model.CLIP, path: str | Path, metadata: dict) -> Path:
    """fp16 safetensors with open_clip's key names, written atomically."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    with replace_atomically(Path(path)) as partial:
        save_file(tensors, str(partial), metadata={k: str(v) for k, v in metadata.items()})
    return Path(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--steps", type=int, default=PretrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=PretrainConfig.batch_size)
    parser.add_argument("--seed", type=int, default=PretrainConfig.seed)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (results depend on it)")
    args = parser.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        parser.error(f"--out {args.out}: the checkpoint must end in .safetensors")
    if args.steps < 1 or args.batch_size < 2 or args.threads < 1:
        parser.error("--steps and --threads must be at least 1, --batch-size at least 2 (contrastive pairs)")
    torch.set_num_threads(args.threads)
    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    start = time.perf_counter()
    model = pretrain(config)
    minutes = (time.perf_counter() - start) / 60
    accuracy = held_out_accuracy(model)
    chance = 1 / len(world.object_classes())
    save_checkpoint(model, args.out, {**asdict(config), "threads": args.threads,
                                      "held_out_zeroshot_accuracy": f"{accuracy:.4f}"})
    print(f"pretrained in {minutes:.1f} min; held-out zero-shot accuracy {accuracy:.1%} "
          f"(chance {chance:.1%}); wrote {args.out}")


if __name__ == "__main__":
    main()
