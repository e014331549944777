"""The whole study's path on small inputs: sweep → analyses → book → browser.

tiny-clip with random weights on the miniature OxfordPets (it has trimaps), through the one
command a real study takes, `make study EXPERIMENT=... DATA_ROOT=...`, run in a copy of this
working tree (so that the checkout's own book and runs are left alone).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from test_book_browser import REPO, check_in_browser, require_browser

TABLES = {"datasets", "claims", "decomposition", "causal_ablation", "contributions", "cls_foreground",
          "eos_attention", "distance_entropy", "prompts_as_background", "bias_tuning"}


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "analysis_lib", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


def working_copy(target: Path) -> Path:
    """This working tree's files (tracked, and untracked but not ignored), with the same .venv."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            capture_output=True, text=True, cwd=REPO, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to((REPO / ".venv").resolve())
    return target


@pytest.fixture(scope="module")
def pipeline(data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    experiment = root / "exp.yaml"
    experiment.write_text(yaml.safe_dump({
        "model": {"name": "tiny-clip", "pretrained": None}, "data_root": "/nonexistent/the-make-flag-replaces-it",
        "output_root": str(root / "runs"), "datasets": ["OxfordPets"], "seeds": [1],
        "train": {"epochs": 2, "shots": 2, "num_workers": 0},
        "variants": {"zeroshot": {"variant": "zeroshot"},
                     "ivlp": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2},
                     "bias_both": {"variant": "bias", "bias_text_depth": 2, "bias_vision_depth": 2}},
        "analysis": {"variant_name": "ivlp", "seed": 1, "n_images": 6}}))
    copy = working_copy(root / "repo")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    # -o .venv/.done: the environment exists; a test never reinstalls it
    study = subprocess.run(["make", "-o", ".venv/.done", "study", f"EXPERIMENT={experiment}",
                            f"DATA_ROOT={data_root}", "WORKERS=0"],
                           capture_output=True, text=True, cwd=copy, env=env, timeout=1800)
    return root, experiment, study, copy, data_root


@pytest.mark.slow
def test_one_command_runs_sweep_analyses_and_book(pipeline):
    root, experiment, study, copy, data_root = pipeline
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
    results = pd.read_csv(root / "runs" / "results.csv")
    assert set(results.variant_name) == {"zeroshot", "ivlp", "bias_both"}
    generated = copy / "book" / "generated"
    assert {p.stem for p in (generated / "tables").glob("*.csv")} >= TABLES
    for notebook in generated.glob("*.ipynb"):
        nb = nbformat.read(notebook, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.output_type == "error"]
        assert not errors, f"{notebook.name}: {errors[0].ename}: {errors[0].evalue}"
        for cell in (c for c in nb.cells if c.cell_type == "code"):      # tagged for the book
            tags = cell.metadata["tags"]
            assert "show-input" in tags or {"remove-input", "remove-cell"} & set(tags), (notebook.name, tags)
    tour = nbformat.read(generated / "library_tour.ipynb", as_version=4)    # executed with the chapters
    assert sum("show-input" in c.metadata["tags"] for c in tour.cells if c.cell_type == "code") >= 5
    claims = pd.read_csv(generated / "tables" / "claims.csv")
    assert {"C1", "C2", "C3", "C5", "C6"} <= set(claims.claim) and set(claims.dataset) == {"OxfordPets", "Average"}
    profile = json.loads((generated / "profile.json").read_text())
    assert profile["model"] == "tiny-clip" and profile["datasets"] == ["OxfordPets"]
    assert profile["experiment_file"] == str(experiment) and profile["profile"] == "exp"
    first_page = (copy / "_build" / "html" / "book" / "intro.html").read_text()
    assert str(experiment) in first_page and "tiny-clip" in first_page  # the profile box names them
    again = subprocess.run(["make", "-o", ".venv/.done", "study", f"EXPERIMENT={experiment}",
                            f"DATA_ROOT={data_root}", "WORKERS=0"],
                           capture_output=True, text=True, cwd=copy, timeout=1800,
                           env={**os.environ, "PYTHONPATH": str(copy)})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 complete, 0 to execute" in again.stderr and "up to date" in again.stderr  # resumed


@pytest.mark.slow
def test_book_from_the_pipeline_in_browser(pipeline):
    require_browser()
    # Screenshots of every page at 1280 and 390 px go to $BOOK_SCREENSHOTS (CI keeps them as build
    # artefacts), else to the run's temporary folder; never into the repository.
    shots = Path(os.environ.get("BOOK_SCREENSHOTS") or pipeline[0] / "screenshots")
    report = check_in_browser(pipeline[3] / "_build" / "html", shots)
    generated = {p["page"]: p for p in report["pages"] if p["page"].startswith("book/generated/")}
    assert "book/generated/distance_entropy.html" in generated
    tour = generated.pop("book/generated/library_tour.html")
    assert tour["code"]["shown"] >= 5 and tour["charts"]              # the tour's code is its content
    for page, info in generated.items():            # a reader sees outputs, no code
        assert info["code"]["inputs"] == 0, f"{page}: {info['code']['inputs']} code cells on the page"
        if not page.endswith("attention_explorer.html"):   # the answer on the first screen (900 px)
            assert info["answerTop"] is not None and info["answerTop"] < 900, (page, info["answerTop"])


def test_bad_experiment_gives_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: tiny-clip, pretrained: null}\ndata_root: /nonexistent\n"
                   "datasets: [OxfordPets]\nvariants: {z: {variant: zeroshot}}\n")
    proc = cli("sweep", str(bad))
    assert proc.returncode == 2 and "data_root /nonexistent" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = cli("analyses", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "not found" in missing.stderr
