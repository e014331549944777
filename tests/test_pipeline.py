"""The whole study's path on small inputs: sweep → analyses → book → browser.

tiny-clip with random weights on the miniature OxfordPets (it has trimaps), through the same
commands `make book` runs on the embedded default.
"""
import json
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

from test_book_browser import REPO, build_test_book, check_in_browser, setup_browser

TABLES = {"datasets", "claims", "decomposition", "causal_ablation", "contributions", "cls_foreground",
          "eos_attention", "distance_entropy", "prompts_as_background", "bias_tuning"}


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "analysis_lib", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def pipeline(data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    experiment = root / "exp.yaml"
    experiment.write_text(yaml.safe_dump({
        "model": {"name": "tiny-clip", "pretrained": None}, "data_root": str(data_root),
        "output_root": str(root / "runs"), "datasets": ["OxfordPets"], "seeds": [1],
        "train": {"epochs": 2, "shots": 2, "num_workers": 0},
        "variants": {"zeroshot": {"variant": "zeroshot"},
                     "ivlp": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2},
                     "bias_both": {"variant": "bias", "bias_text_depth": 2, "bias_vision_depth": 2}},
        "analysis": {"dataset": "OxfordPets", "variant_name": "ivlp", "seed": 1, "n_images": 6}}))
    sweep = cli("sweep", str(experiment), "--workers", "0")
    analyses = cli("analyses", str(experiment), "--out", str(root / "generated"))
    return root, experiment, sweep, analyses


def test_sweep_and_analyses_write_their_outputs(pipeline):
    root, experiment, sweep, analyses = pipeline
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    results = pd.read_csv(root / "runs" / "results.csv")
    assert set(results.variant_name) == {"zeroshot", "ivlp", "bias_both"}
    assert analyses.returncode == 0, analyses.stderr[-3000:]
    assert {p.stem for p in (root / "generated" / "tables").glob("*.csv")} >= TABLES
    for notebook in (root / "generated").glob("*.ipynb"):
        nb = nbformat.read(notebook, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.output_type == "error"]
        assert not errors, f"{notebook.name}: {errors[0].ename}: {errors[0].evalue}"
    claims = pd.read_csv(root / "generated" / "tables" / "claims.csv")
    assert {"C1", "C2", "C3", "C5", "C6"} <= set(claims.claim) and set(claims.dataset) == {"OxfordPets", "Average"}
    profile = json.loads((root / "generated" / "profile.json").read_text())
    assert profile["model"] == "tiny-clip" and profile["datasets"] == ["OxfordPets"]
    again = cli("analyses", str(experiment), "--out", str(root / "generated"))
    assert again.returncode == 0 and "up to date" in again.stderr  # nothing re-executed


def test_book_from_the_pipeline_in_browser(pipeline, tmp_path):
    root = pipeline[0]
    setup_browser()
    html = build_test_book(tmp_path, generated=root / "generated")
    report = check_in_browser(html)
    pages = {p["page"] for p in report["pages"]}
    assert "book/generated/distance_entropy.html" in pages


def test_bad_experiment_gives_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: tiny-clip, pretrained: null}\ndata_root: /nonexistent\n"
                   "datasets: [OxfordPets]\nvariants: {z: {variant: zeroshot}}\n")
    proc = cli("sweep", str(bad))
    assert proc.returncode == 2 and "data_root /nonexistent" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = cli("analyses", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "not found" in missing.stderr
