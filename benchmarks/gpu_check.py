"""The GPU check: what the study's steps cost on this machine, and what the whole study would.

ViT-B/16 (QuickGELU) with random weights (speed does not depend on the values), the experiment's
training precision, batch size and eval batch size, its ivlp variant:
  * the training step (forward, backward, SGD) of every variant that learns, with 100 and 1000
    classes, recorded against the token positions its class prompts take (the cost model prices
    each variant from its own two steps); for ivlp, the ratio to
    open_clip's own forward+backward on the same batch (100 classes, full 77-token prompts); at
    1000 classes, the ratio of the step with the text tower by length to one padded to the longest;
  * evaluation throughput (image tower, no gradients) at the eval batch size;
  * the per-run stage (decomposition, attention statistics, token contributions) on 64 images;
  * the JPEG decode + augmentation rate of the loader workers beside the rate training consumes;
  * peak GPU memory (on the CPU: the process's peak resident memory);
  * the projected device hours of the experiment (analysis_lib/study/cost.py says how).
The rates go to runs/gpu-check.json, where `python -m analysis_lib sweep --dry-run` finds them.
Under 5 minutes on one GPU; `--device cpu --quick` runs the same steps at small sizes.
"""
from __future__ import annotations

import argparse
import io
import logging
import resource
import time
from datetime import datetime, timezone

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from analysis_lib.data.transforms import train_transform
from analysis_lib.model.backbone import load_backbone
from analysis_lib.model.prompted import build_model, text_positions
from analysis_lib.model.variants import variant_config
from analysis_lib.stats.analyses import attention_statistics, decomposition_by_block, token_contributions, zeroshot_twin
from analysis_lib.study import cost
from analysis_lib.study.experiment import load_experiment
from analysis_lib.study.loading import worker_count
from analysis_lib.study.one_run import resolve_device
from analysis_lib.study.train_config import TrainConfig
from analysis_lib.study.trainer import autocast_for
from timing import class_names, median_time, open_clip_step, padded_text

FULL = {"classes": (100, 1000), "repeats": 10, "eval_batches": 5, "analysis_images": 64, "decode_images": 200}
QUICK = {"classes": (10, 50), "repeats": 1, "eval_batches": 1, "analysis_images": 2, "decode_images": 20,
         "eval_batch_size": 4}
TEMPLATE = "a photo of a {}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="experiments/paper.yaml", help="whose settings and cost")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU check of the script)")
    parser.add_argument("--out", default=cost.RATES_FILE, help="where the measured rates go")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    sizes = QUICK if args.quick else FULL
    device = resolve_device(args.device)
    experiment = load_experiment(args.experiment, require_data=False)
    if "ivlp" not in experiment.variants:
        raise SystemExit(f"{args.experiment} has no variant named ivlp, whose steps the check times")
    cfg: TrainConfig = experiment.train
    eval_batch = sizes.get("eval_batch_size", cfg.eval_batch_size)
    torch.manual_seed(0)
    backbone = load_backbone(experiment.model, None, device=str(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{experiment.model}, random weights, on {name}; precision {cfg.precision}, batch {cfg.batch_size}, "
          f"eval batch {eval_batch}{' (quick sizes)' if args.quick else ''}")

    def synced(fn):
        def run():
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return run

    size = backbone.image_size
    images = torch.randn(cfg.batch_size, 3, size, size, device=device)
    labels = torch.arange(cfg.batch_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s: dict[str, dict[int, float]] = {}
    learning = [name for name, spec in experiment.variants.items()
                if variant_config(spec["variant"], **variant_params(spec)).learns]
    for variant in learning:
        step_s[variant] = {}
        spec = experiment.variants[variant]
        for n_classes in sizes["classes"]:
            model = build_model(spec["variant"], backbone, class_names(n_classes), TEMPLATE, **variant_params(spec))
            step = training_step(model, images, labels % n_classes, cfg, device)
            positions = text_positions(model.text_groups)
            step_s[variant][positions] = median_time(synced(step), sizes["repeats"])
            seconds = step_s[variant][positions]
            print(f"{variant} training step, {n_classes:>4} classes ({positions} text token positions): "
                  f"{seconds * 1e3:8.1f} ms = {cfg.batch_size / seconds:7.1f} images/s "
                  f"({len(model.text_groups)} prompt-length groups)")
            if variant != "ivlp":
                continue
            if n_classes == sizes["classes"][-1]:
                padded = median_time(synced(padded_text(model, step)), sizes["repeats"])
                print(f"  the same step with the prompts padded to the longest: {padded * 1e3:.1f} ms; "
                      f"ratio by length / padded {seconds / padded:.2f}")
            if n_classes == sizes["classes"][0]:
                tokens = backbone.tokenizer(model.prompt_texts).to(device)

                def reference():
                    with autocast_for(device, cfg.precision):
                        open_clip_step(backbone.clip, images, tokens, labels % n_classes)
                theirs = median_time(synced(reference), sizes["repeats"])
                print(f"  open_clip's own forward+backward, same batch and classes: {theirs * 1e3:.1f} ms; "
                      f"ratio ivlp step / open_clip {seconds / theirs:.2f}")
                analysis_model = model
    if device.type == "cuda":
        print(f"peak GPU memory of the training steps: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    model = analysis_model.eval()

    batch = torch.randn(eval_batch, 3, size, size, device=device)

    @torch.no_grad()
    def evaluate():
        with autocast_for(device, cfg.precision):
            for _ in range(sizes["eval_batches"]):
                model.encode_image(batch)
    eval_s = median_time(synced(evaluate), max(1, sizes["repeats"] // 2))
    eval_rate = sizes["eval_batches"] * eval_batch / eval_s
    print(f"evaluation: {eval_rate:8.1f} images/s at batch {eval_batch}")

    decode_rate = decode_images_per_s(sizes["decode_images"], size, cfg.crop_scale)
    workers = max(worker_count(cfg), 1)
    train_rate = cfg.batch_size / min(step_s["ivlp"].values())
    slower = "decoding" if decode_rate * workers < train_rate else "the model"
    print(f"decode + augment (500x375 JPEG): {decode_rate:6.1f} images/s per loader worker x {workers} "
          f"workers = {decode_rate * workers:.1f} images/s, against {train_rate:.1f} images/s a "
          f"{sizes['classes'][0]}-class step consumes: {slower} limits training")

    n = sizes["analysis_images"]
    analysis_model.eval()
    loader = DataLoader(TensorDataset(torch.randn(n, 3, size, size), torch.arange(n) % sizes["classes"][0]),
                        batch_size=min(n, 16))
    start = time.perf_counter()
    decomposition_by_block(analysis_model, loader)
    attention_statistics({"CLIP": zeroshot_twin(analysis_model), "prompted": analysis_model}, loader)
    token_contributions(analysis_model, loader.dataset, torch.arange(n))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print(f"analyses (decomposition, attention statistics, token contributions) on {n} images: "
          f"{time.perf_counter() - start:.1f} s")

    if device.type == "cuda":
        print(f"peak GPU memory, analyses included: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    else:
        print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")

    rates = cost.Rates(device=name, precision=cfg.precision, batch_size=cfg.batch_size, step_s=step_s,
                       eval_images_per_s=eval_rate,
                       measured=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    cost.save_rates(rates, args.out)
    print(f"rates written to {args.out}\nprojected cost of {args.experiment} (all runs):")
    print(cost.summary(experiment.runs(), rates))


def variant_params(spec: dict) -> dict:
    """A variant entry of the experiment file without its name and training settings."""
    return {k: v for k, v in spec.items() if k != "variant" and k not in TrainConfig.keys()}


def training_step(model, images, labels, cfg: TrainConfig, device):
    """One training step as the trainer takes it: class features computed once when the text tower
    learns nothing (``trainer.train``), SGD with the experiment's settings."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()
    fixed_text = None
    if model.text_is_fixed:
        with torch.no_grad(), autocast_for(device, cfg.precision):
            fixed_text = model.encode_text()

    def step():
        with autocast_for(device, cfg.precision):
            logits = model(images) if fixed_text is None else model.logits_from(model.encode_image(images), fixed_text)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def decode_images_per_s(n: int, size: int, crop_scale: float) -> float:
    """One loader worker's rate: open a 500x375 JPEG, decode, random-crop, resize, normalise."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    smooth = Image.fromarray(noise).resize((50, 38)).resize((500, 375), Image.BICUBIC)  # photo-like
    buffer = io.BytesIO()
    smooth.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    transform = train_transform(size, crop_scale=crop_scale)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                   # a loader worker runs single-threaded
    try:
        start = time.perf_counter()
        for _ in range(n):
            with Image.open(io.BytesIO(data)) as image:
                transform(image.convert("RGB"))
        return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
