"""The per-run stage on one finished run: time per table, its ratio to the run's training time,
and the peak memory for 8 against 64 images (each size in a fresh process, so peaks do not mix).

Usage: python benchmarks/bench_analyses_stage.py RUN_FOLDER [--threads 2]
(a finished ivlp run of the sweep, e.g. runs/demo/DemoToys/ivlp/seed1; nothing is written there:
the tables go to a temporary copy of the folder).
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(run_folder: Path, n_images: int, threads: int) -> dict:
    """Every table of the stage for ``n_images``, in this process: seconds per table and peak RSS."""
    import torch
    from analysis_lib.stats import per_run
    from analysis_lib.study.run_folder import load_run
    torch.set_num_threads(threads)
    logging.getLogger().setLevel(logging.ERROR)
    start = time.perf_counter()
    run = load_run(run_folder)
    seconds = {"load": time.perf_counter() - start}
    for name, table in per_run.TABLES.items():
        if table.applies(run.settings.variant, run.settings.dataset):
            start = time.perf_counter()
            table.compute(run, n_images)
            seconds[name] = time.perf_counter() - start
    return {"n_images": n_images, "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_folder", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.run_folder, args.child, args.threads)))
        return
    metrics = json.loads((args.run_folder / "metrics.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(args.run_folder, copy, ignore=shutil.ignore_patterns("analyses"))
        results = [json.loads(subprocess.run(
            [sys.executable, __file__, str(copy), "--threads", str(args.threads), "--child", str(n)],
            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]) for n in args.images]
    train_s = metrics["wall_time_s"]
    print(f"run {args.run_folder}: training took {train_s:.1f} s (metrics.json wall_time_s)")
    for r in results:
        total = sum(r["seconds"].values())
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items())
        print(f"{r['n_images']:>3} images: stage {total:.1f} s = {total / train_s:.2f} x training "
              f"({parts}); peak RSS {r['peak_rss_mb']:.0f} MB")
    if len(results) >= 2:
        print(f"peak memory {results[-1]['n_images']} / {results[0]['n_images']} images: "
              f"{results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
