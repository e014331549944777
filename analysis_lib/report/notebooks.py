"""The analyses of an experiment, executed into the book: the per-run tables (the analyses stage,
``stats/per_run.py``), the claims table, one notebook per chapter, and the profile that tells the
reader which model and data the numbers come from.

Each notebook is executed by papermill into ``book/generated/<name>.ipynb`` (via a temporary
file, so a failed analysis never leaves a page that looks finished). A notebook whose executed
copy is newer than the experiment's results and its claims table, with the same parameters, is
not run again; the claims table is rewritten only when it changes.
The executed copy is tagged for Jupyter Book (`tag_for_book`): the page shows outputs with
each code cell collapsed, so the templates stay free of presentation tags.
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from .profile import BookProfile, write_profile
from ..data import DEMO_DATASETS
from ..files import write_text_atomic
from ..stats import per_run
from ..stats.claims import experiment_claims
from .chapter import CLAIMS_TABLE
from ..study.experiment import Experiment
from ..study.sweep import first_line, run_notebook

log = logging.getLogger(__name__)

# Chapters that read the per-run tables of every run and the claims table; the chapter that
# explains one run; chapters built from the results table of all runs.
STAGE_NOTEBOOKS = ("claims", "decomposition", "causal_ablation", "token_contributions", "cls_foreground",
                   "eos_attention", "distance_entropy", "prompts_as_background", "bias_tuning", "known_truth")
RUN_NOTEBOOKS = ("attention_explorer", "library_tour")
TABLE_NOTEBOOKS = ("results",)
DATA_NOTEBOOKS = ("datasets",)  # chapters about the experiment's data, no run needed
DEMO_MODEL = "demo-clip"
EXPLORER_IMAGES = 8  # test images per dataset in the attention explorer


class AnalysisError(RuntimeError):
    """An analysis notebook failed; the message names it and where its partial output is."""


def notebook_parameters(experiment: Experiment, name: str, out_dir: Path) -> dict:
    tables = str(out_dir / "tables")
    if name in TABLE_NOTEBOOKS:
        return {"runs_root": experiment.output_root, "tables_dir": tables}
    if name in DATA_NOTEBOOKS:
        return {"datasets": list(experiment.datasets), "data_root": experiment.data_root, "tables_dir": tables}
    if name in STAGE_NOTEBOOKS:
        return {"experiment": str(experiment.path), "tables_dir": tables}
    a = experiment.analysis
    params = {"runs_root": experiment.output_root, "dataset": a.dataset, "variant_name": a.variant_name,
              "seed": a.seed, "data_root": experiment.data_root, "n_images": a.n_images, "tables_dir": tables}
    if name == "attention_explorer":  # every dataset and seed of the experiment, its data under the site's _static/
        params = {"runs_root": experiment.output_root, "datasets": list(experiment.datasets),
                  "variant_name": a.variant_name, "seeds": list(experiment.seeds),
                  "data_root": experiment.data_root, "n_images": EXPLORER_IMAGES, "static_dir": str(out_dir / "_static")}
    return params


def build_analyses(experiment: Experiment, out_dir: str | Path = "book/generated", cwd: str | Path = ".",
                   notebooks_dir: str | Path = "notebooks", force: bool = False, workers: int = 1,
                   scheduler: str | None = None, threads: int | None = None) -> list[Path]:
    """Compute the per-run tables (``workers``, ``scheduler``, ``threads``: see ``per_run.run_stage``)
    and the claims table, then execute every analysis notebook; returns the executed notebooks."""
    if experiment.analysis is None:
        raise AnalysisError(f"{experiment.path} has no 'analysis' section naming the run to analyse "
                            "(dataset, variant_name, seed, n_images)")
    results = Path(cwd) / experiment.output_root / "results.csv"
    if not results.is_file():
        raise AnalysisError(f"{results} not found: run the sweep first "
                            f"(python -m analysis_lib sweep {experiment.path})")
    out_dir = Path(out_dir)
    (Path(cwd) / out_dir).mkdir(parents=True, exist_ok=True)
    per_run.run_stage(experiment, workers, scheduler, threads)
    claims = _write_if_changed(Path(cwd) / out_dir / "tables" / CLAIMS_TABLE,
                               experiment_claims(experiment).to_csv(index=False))
    written = []
    for name in tqdm(DATA_NOTEBOOKS + STAGE_NOTEBOOKS + RUN_NOTEBOOKS + TABLE_NOTEBOOKS, desc="analyses"):
        params = notebook_parameters(experiment, name, out_dir)
        target = Path(cwd) / out_dir / f"{name}.ipynb"
        if not force and _up_to_date(target, params, results, claims):
            log.info("%s is up to date", target)
        else:
            _execute(Path(cwd) / notebooks_dir / f"{name}.ipynb", target, params, cwd)
        written.append(target)
    write_profile(profile_of(experiment), Path(cwd) / out_dir / "profile.json")
    return written


def _write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (atomically) unless it holds it already, so its time says when it changed."""
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return path


def _up_to_date(target: Path, params: dict, *inputs: Path) -> bool:
    if not target.is_file() or any(target.stat().st_mtime < i.stat().st_mtime for i in inputs):
        return False
    stored = nbformat.read(target, as_version=4).metadata.get("papermill", {}).get("parameters", {})
    return stored == params


def tag_for_book(nb: nbformat.NotebookNode) -> None:
    """Collapse every code cell's source (``hide-input``: the reader sees the outputs and can open
    the code) and the whole of papermill's injected-parameters cell (``hide-cell``): the values a
    page was computed with stay one click away, but no reader has to scroll past them. A cell
    tagged ``show-input`` keeps its code in view (the library tour, whose code is the point)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.setdefault("tags", [])
        if "show-input" in tags:
            continue
        tag = "hide-cell" if "injected-parameters" in tags else "hide-input"
        if tag not in tags:
            tags.append(tag)


def _execute(template: Path, target: Path, params: dict, cwd) -> None:
    partial = target.with_name(target.stem + ".partial.ipynb")
    try:
        run_notebook(template, partial, params, cwd)
    except Exception as err:
        raise AnalysisError(f"analysis {template.stem} failed: {first_line(err)}; "
                            f"its partial output is {partial}") from err
    nb = nbformat.read(partial, as_version=4)
    tag_for_book(nb)
    nbformat.write(nb, partial)
    os.replace(partial, target)


def profile_of(experiment: Experiment) -> BookProfile:
    generated = all(d in DEMO_DATASETS for d in experiment.datasets)
    description = ("a small CLIP pretrained by this project on generated images"
                   if experiment.model == DEMO_MODEL else f"{experiment.model} with {experiment.pretrained} weights")
    return BookProfile(
        profile=experiment.path.stem, experiment_file=str(experiment.path), model=experiment.model,
        pretrained=str(experiment.pretrained), model_description=description,
        data="generated" if generated else "real", datasets=tuple(experiment.datasets),
        seeds=tuple(experiment.seeds), device=experiment.device,
        created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        commit=_commit())


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None
