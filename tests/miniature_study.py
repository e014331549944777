"""A miniature finished experiment without training: run folders as the sweep and the analyses
stage leave them (metrics.json with its config hash, every per-run table with its manifest
entry, results.csv), filled with random numbers of the right schema. The chapter functions read
it as they read a real experiment; the tests compare what a chapter states with their own
computation from the same per-run tables.

Two datasets (OxfordPets with masks, EuroSAT without), three seeds, zero-shot, IVLP (``deep``, the
analysed variant), text prompts (``shallow``: it has attention tables too, shifted, so that a
chapter mixing them in would show other numbers) and two bias-tuning settings.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis_lib.model.prompted import TOKEN_TYPES
from analysis_lib.stats import per_run
from analysis_lib.study import aggregate
from analysis_lib.study.experiment import Experiment, load_experiment
from analysis_lib.study.run_record import METRICS_FILE, harmonic_mean, run_folder

DATASETS = ["OxfordPets", "EuroSAT"]
SEEDS = [1, 2, 3]
VARIANTS = {"zeroshot": {"variant": "zeroshot"},
            "deep": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2},
            "shallow": {"variant": "text", "text_depth": 1},
            "bias_a": {"variant": "bias", "bias_text_depth": 1, "bias_vision_depth": 1},
            "bias_b": {"variant": "bias", "bias_text_depth": 2, "bias_vision_depth": 2}}
ANALYSED = "deep"
BLOCKS, HEADS, IMAGES = 2, 2, 4


def _tables(rng: np.random.Generator, shift: float) -> dict[str, pd.DataFrame]:
    """Every per-run table of one prompted run; ``shift`` moves the run's values."""
    grid = [(tower, b, h) for tower in ("vision", "text") for b in range(BLOCKS) for h in range(HEADS)]
    decomposition = pd.DataFrame(
        [(t, b, h, s, "with_prompt", v, 10) for t, b, h in grid for s, v in (
            ("lambda", np.clip(0.9 - 0.3 * b + shift + rng.normal(0, 0.05), 0, 1)),
            ("token_part_norm", rng.uniform(1, 2)), ("prompt_part_norm", rng.uniform(0, 1)))],
        columns=["tower", "block", "head", "statistic", "reading", "value", "n"])
    attention = pd.DataFrame(
        [("vision", b, h, s, reading, rng.uniform(10, 30) + shift * 10 + (5 if reading == "without_prompt" else 0),
          10, model)
         for b in range(BLOCKS) for h in range(HEADS) for model in ("CLIP", "prompted", "control")
         for reading in (("with_prompt",) if model == "CLIP" else ("with_prompt", "without_prompt"))
         for s in ("attention_distance", "attention_entropy")]
        + [("text", b, h, f"eos_to_{t}", "with_prompt", rng.uniform(0, 1) + shift, 10, model)
           for b in range(BLOCKS) for h in range(HEADS) for model in ("CLIP", "prompted", "control") for t in TOKEN_TYPES],
        columns=["tower", "block", "head", "statistic", "reading", "value", "n", "model"])
    share = pd.DataFrame([(m, i, b, h, rng.uniform(0.2, 0.6) + shift) for m in ("CLIP", "prompted", "control")
                          for i in range(IMAGES) for b in range(BLOCKS) for h in range(HEADS)],
                         columns=["model", "image", "block", "head", "share"])
    share = share.assign(enrichment=share.share / 0.4, share_of_row=share.share * 0.9)
    relative = pd.DataFrame([(m, i, b, 0.0 if b == 0 else rng.uniform(0, 0.2) + shift) for m in ("prompted", "control")
                             for i in range(IMAGES) for b in range(BLOCKS)], columns=["model", "image", "block", "tv"])
    keys = pd.DataFrame([(m, i, b, rng.uniform(-0.1, 0.2) + shift, rng.uniform(-0.1, 0.2)) for m in ("prompted", "control")
                         for i in range(IMAGES) for b in range(BLOCKS)],
                        columns=["model", "image", "block", "centred_gap", "raw_gap"])
    background = pd.DataFrame([(b, h, f, rng.uniform(0, 0.3), rng.uniform(0.1, 0.5) + shift, 20, 40)
                               for b in range(BLOCKS) for h in range(HEADS) for f in ("k", "v")],
                              columns=["block", "head", "feature", "foreground", "background", "n_foreground",
                                       "n_background"])
    causal = pd.DataFrame([(t, a, f, rng.uniform(40, 90) + shift * 10, rng.uniform(40, 90))
                           for t in ("both", "vision", "text") for f in ("all blocks", "below prompt depth") for a in
                           ("as trained", "bias term removed", "rescaling removed", "both removed",
                            "bias term mean-ablated")],
                          columns=["tower", "ablation", "form", "base", "novel"])
    causal = causal.assign(hm=harmonic_mean(causal.base, causal.novel))
    causal = causal[~((causal.ablation == "as trained") & (causal.form == "below prompt depth"))]
    contributions = pd.DataFrame(
        [("text", m, meth, t, rng.uniform(0, 1) + shift, 3) for m in ("CLIP", "prompted", "control") for meth in
         ("relevance", "rollout") for t in TOKEN_TYPES]
        + [("vision", m, meth, k, rng.uniform(0, 1), 3) for m in ("CLIP", "prompted", "control") for meth in
           ("relevance", "rollout") for k in ("cls", "patch", "prompt")],
        columns=["tower", "model", "method", "token_type", "contribution", "n_explained"])
    block0 = pd.DataFrame({"tower": ["vision", "text"], "deviation": rng.uniform(1e-8, 1e-6, 2)})
    return {"decomposition": decomposition, "block0": block0, "attention": attention, "foreground_share": share,
            "relative_attention": relative, "background_similarity": background, "background_keys": keys,
            "causal_ablation": causal, "contributions": contributions}


def write_study(root: Path, data_root: Path) -> Experiment:
    """The miniature experiment under ``root``: its file, run folders, per-run tables, results."""
    path = root / "mini.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name": "tiny-clip", "pretrained": None}, "data_root": str(data_root),
        "output_root": str(root / "runs"), "datasets": DATASETS, "seeds": SEEDS, "variants": VARIANTS,
        "analysis": {"variant_name": ANALYSED, "seed": 1, "n_images": IMAGES}}, sort_keys=False))
    experiment = load_experiment(path)
    rng = np.random.default_rng(0)
    records = []
    for run in experiment.runs():
        folder = run_folder(experiment.output_root, run)
        (folder / per_run.TABLES_DIR).mkdir(parents=True)
        kind = VARIANTS[run.variant_name]["variant"]
        learns = kind != "zeroshot"
        base = 60.0 + (20 + 5 * rng.standard_normal() if learns else 0.0)
        novel = 55.0 + (rng.uniform(-20, 10) if learns else 0.0)
        metrics = {"dataset": run.dataset, "variant_name": run.variant_name, "variant": kind, "seed": run.seed,
                   "base_acc": base, "novel_acc": novel, "hm": harmonic_mean(base, novel),
                   "n_trainable": {"zeroshot": 0, "ivlp": 4096, "text": 2048, "bias": 1024 * (1 + ("_b" in run.variant_name))}[kind],
                   "wall_time_s": 1.0, "config_hash": run.config_hash}
        (folder / METRICS_FILE).write_text(json.dumps(metrics))
        records.append(metrics)
        names = [n for n, t in per_run.TABLES.items() if t.applies(kind, run.dataset)]
        tables = _tables(rng, 0.5 if run.variant_name == "shallow" else 0.0)
        manifest = {}
        for name in names:
            tables[name].to_csv(folder / per_run.TABLES_DIR / f"{name}.csv", index=False)
            manifest[name] = per_run.table_key(run.config_hash, IMAGES)
        (folder / per_run.TABLES_DIR / per_run.MANIFEST).write_text(json.dumps(manifest))
    aggregate.write_results(aggregate.results_table(records), experiment.output_root)
    return experiment
