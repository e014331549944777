"""The ``analyses`` command: the per-run stage (``stats/per_run.py``), the claims table, then one
notebook per chapter (each a call of its function in ``chapters.py``) executed into the book,
and the profile that tells the reader which model and data the numbers come from.

Each notebook is executed by papermill into ``book/generated/<name>.ipynb`` (via a temporary
file, so a failed analysis never leaves a page that looks finished). A notebook whose executed
copy is newer than the experiment's results, its claims table and its list of missing runs,
with the same parameters, is not run again; those tables are rewritten only when they change.
The executed copy is tagged for Jupyter Book (`tag_for_book`): the page shows outputs and no
code, so the templates stay free of presentation tags.
"""
from __future__ import annotations

import datetime
import logging
import subprocess
from dataclasses import asdict
from pathlib import Path

import nbformat
import pandas as pd
from tqdm.auto import tqdm

from . import markup
from .profile import BookProfile, write_profile
from .. import data
from ..data import DEMO_DATASETS
from ..files import write_text_atomic
from ..model.variants import VariantConfig, variant_config
from ..stats import per_run
from ..stats.claims import experiment_claims
from .chapters import CLAIMS_TABLE
from ..study.completeness import MISSING_TABLE, aggregate_finished, finished_runs, report_missing
from ..study.experiment import Experiment
from ..study.execution import first_line, output_lock, run_notebook
from ..study.sweep import drop_truncated

log = logging.getLogger(__name__)

# The chapters (report/chapters.py, one notebook each), in book order; then the notebooks that show
# one run each: the attention explorer and the library tour.
CHAPTER_NOTEBOOKS = ("datasets", "claims", "decomposition", "causal_ablation", "token_contributions",
                     "cls_foreground", "eos_attention", "distance_entropy", "prompts_as_background",
                     "bias_tuning", "known_truth", "results")
EXPLORER_NOTEBOOK = "attention_explorer"
TOUR_NOTEBOOK = "library_tour"
RUN_NOTEBOOKS = (EXPLORER_NOTEBOOK, TOUR_NOTEBOOK)
DEMO_MODEL = "demo-clip"
EXPLORER_IMAGES = 8  # test images per dataset in the attention explorer


class ChapterError(RuntimeError):
    """A chapter cannot be written (no analysis section, no results, or its notebook failed); the
    message names the fix, or the chapter and where its partial output is."""


def notebook_parameters(experiment: Experiment, name: str, out_dir: Path) -> dict:
    """A chapter gets the experiment file and the tables folder (the datasets chapter also the data
    root in use); the explorer every dataset and seed where the analysed variant's run is finished,
    its data under the site's _static/; the library tour the analysed run of the first dataset."""
    a = experiment.analysis
    tables = str(out_dir / "tables")
    if name == EXPLORER_NOTEBOOK:
        datasets, seeds = explorer_runs(experiment)
        return {"runs_root": experiment.output_root, "datasets": datasets,
                "variant_name": a.variant_name, "seeds": seeds, "data_root": experiment.data_root,
                "n_images": EXPLORER_IMAGES, "static_dir": str(out_dir / "_static")}
    if name == TOUR_NOTEBOOK:
        return {"runs_root": experiment.output_root, "dataset": (explorer_runs(experiment)[0] or list(experiment.datasets))[0],
                "variant_name": a.variant_name, "seed": a.seed, "data_root": experiment.data_root,
                "n_images": a.n_images, "tables_dir": tables}
    params = {"experiment": str(experiment.path), "tables_dir": tables}
    return params | ({"data_root": experiment.data_root} if name == "datasets" else {})


def build_analyses(experiment: Experiment, out_dir: str | Path = "book/generated", cwd: str | Path = ".",
                   notebooks_dir: str | Path = "notebooks", force: bool = False, workers: int = 1,
                   scheduler: str | None = None, threads: int | None = None) -> list[Path]:
    """Compute the per-run tables (``workers``, ``scheduler``, ``threads``: see ``per_run.run_stage``)
    and the claims table, then execute every analysis notebook; returns the executed notebooks.

    The whole command holds the lock of the runs' folder and of ``out_dir`` (``output_lock``), so
    a sweep or other analyses writing into either stop at once, naming this command. Runs that are
    not finished are named in the log and on the claims page, and every table (the results table
    too) is rebuilt from the finished runs alone. A chapter whose runs the experiment lacks says so
    on its page instead of stopping the build (``CHAPTER_NEEDS``)."""
    if experiment.analysis is None:
        raise ChapterError(f"{experiment.path} has no 'analysis' section naming the run to analyse "
                           "(variant_name, seed, n_images)")
    command = f"analyses of {experiment.path}"
    out_dir = Path(out_dir)
    with output_lock(Path(cwd) / experiment.output_root, command), output_lock(Path(cwd) / out_dir, command):
        missing = report_missing(experiment)
        for dataset, size in small_test_sets(experiment).items():
            log.warning("analysis.n_images is %d, but %s has %d base test images: its tables use those %d",
                        experiment.analysis.n_images, dataset, size, size)
        try:
            results = aggregate_finished(experiment)[0]
        except ValueError as err:
            raise ChapterError(str(err)) from None
        per_run.run_stage(experiment, workers, scheduler, threads)
        tables = Path(cwd) / out_dir / "tables"
        (Path(cwd) / out_dir / "_static").mkdir(parents=True, exist_ok=True)  # in html_static_path, even empty
        claims = _write_if_changed(tables / CLAIMS_TABLE, experiment_claims(experiment).to_csv(index=False))
        left_out = _write_if_changed(tables / MISSING_TABLE, pd.DataFrame(
            [asdict(run) for run in missing], columns=["run_id", "reason"]).to_csv(index=False))
        written, library = [], newest_library_file()
        for name in tqdm(CHAPTER_NOTEBOOKS + RUN_NOTEBOOKS, desc="chapters"):
            params = notebook_parameters(experiment, name, out_dir)
            template, target = Path(cwd) / notebooks_dir / f"{name}.ipynb", Path(cwd) / out_dir / f"{name}.ipynb"
            lacking = chapter_lacks(experiment, name)
            if lacking:
                log.warning("%s: %s", name, lacking)
                _write_notebook(nothing_to_show(template, experiment, lacking), target)
            elif not force and _up_to_date(target, params, results, claims, left_out, template, library):
                log.info("%s is up to date", target)
            else:
                _execute(template, target, params, cwd)
            written.append(target)
        write_profile(profile_of(experiment), Path(cwd) / out_dir / "profile.json")
    return written


def small_test_sets(experiment: Experiment) -> dict[str, int]:
    """The datasets whose base test set (the images the per-run tables read) is smaller than
    ``analysis.n_images``, with its size."""
    sizes = {name: len(data.split_classes(data.read_dataset(name, experiment.data_root), "base").test)
             for name in experiment.datasets}
    return {name: size for name, size in sizes.items() if size < experiment.analysis.n_images}


# What a chapter shows needs a finished run of this variant kind (on a dataset with foreground masks).
CHAPTER_NEEDS = {**dict.fromkeys(("decomposition", "causal_ablation", "token_contributions", "eos_attention",
                                  "distance_entropy"), ("ivlp", False)),
                 **dict.fromkeys(("cls_foreground", "prompts_as_background"), ("ivlp", True)),
                 "bias_tuning": ("bias", False)}


def explorer_runs(experiment: Experiment) -> tuple[list[str], list[int]]:
    """What the explorer shows: the datasets on which its run (``analysis``: variant_name, seed) is
    finished, and the seeds whose run of that variant is finished on every one of them."""
    a = experiment.analysis
    done = {(run.dataset, run.seed) for run in finished_runs(experiment) if run.variant_name == a.variant_name}
    datasets = [d for d in experiment.datasets if (d, a.seed) in done]
    seeds = [s for s in experiment.seeds if all((d, s) in done for d in datasets)]
    return datasets, seeds


def chapter_lacks(experiment: Experiment, name: str) -> str | None:
    """Why the experiment cannot fill chapter ``name`` (a sentence for its page), or None."""
    if name in RUN_NOTEBOOKS:
        a = experiment.analysis
        spec = experiment.variants[a.variant_name]
        hparams = {k: v for k, v in spec.items() if k in VariantConfig.__dataclass_fields__ and k != "variant"}
        if not variant_config(spec["variant"], **hparams).vision_n_ctx:
            return (f"the run it shows (analysis: variant_name {a.variant_name}) learns no vision prompts, so its "
                    "three panels would be one drawing; name an ivlp or vision variant in analysis.variant_name")
        if not explorer_runs(experiment)[0]:
            return (f"the run it shows (analysis: variant_name {a.variant_name}, seed {a.seed}) is finished on "
                    "no dataset; the claims page lists the missing runs")
        return None
    if name not in CHAPTER_NEEDS:
        return None
    kind, needs_masks = CHAPTER_NEEDS[name]
    if kind not in {spec["variant"] for spec in experiment.variants.values()}:
        return (f"this experiment has no {kind} variant; add a variant of kind {kind} to its variants, run the "
                "sweep, then the analyses")
    masked = [d for d in experiment.datasets if data.get_spec(d).mask_dir is not None]
    if needs_masks and not masked:
        return "none of this experiment's datasets comes with foreground masks, which this chapter needs"
    finished = [run for run in finished_runs(experiment) if per_run.variant_kind(experiment, run.variant_name) == kind
                and (not needs_masks or run.dataset in masked)]
    if not finished:
        where = " on a dataset with foreground masks" if needs_masks else ""
        return f"none of this experiment's {kind} runs{where} is finished; the claims page lists the missing runs"
    return None


def nothing_to_show(template: Path, experiment: Experiment, reason: str) -> nbformat.NotebookNode:
    """The page of a chapter the experiment cannot fill: the template's title, and why."""
    title = next((line for cell in nbformat.read(template, as_version=4).cells if cell.cell_type == "markdown"
                  for line in cell.source.splitlines() if line.startswith("# ")), f"# {template.stem}")
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        f"{title}\n\nThis chapter has nothing to show for {markup.code(experiment.path)}: "
        f"{markup.text(reason)}.")])


def _write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (atomically) unless it holds it already, so its time says when it changed."""
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return path


def newest_library_file() -> Path:
    """The library's most recently changed source file: a chapter executed before it shows what
    older code computed, so it is executed again."""
    return max(Path(__file__).parents[1].rglob("*.py"), key=lambda p: p.stat().st_mtime)


def _up_to_date(target: Path, params: dict, *inputs: Path) -> bool:
    if not target.is_file() or any(target.stat().st_mtime < i.stat().st_mtime for i in inputs):
        return False
    stored = nbformat.read(target, as_version=4).metadata.get("papermill", {}).get("parameters", {})
    return stored == params


def tag_for_book(nb: nbformat.NotebookNode) -> None:
    """A chapter's code is one library call and display calls, its parameters the experiment file
    the page's profile box names: a reader gains nothing from either, so every code cell's source
    leaves the page (``remove-input``), a cell without output whole (``remove-cell``). A cell
    tagged ``show-input`` keeps its code in view (the library tour, whose code is the point)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.setdefault("tags", [])
        if "show-input" in tags:
            continue
        if not {"remove-input", "remove-cell"} & set(tags):
            tags.append("remove-input" if cell.get("outputs") else "remove-cell")


def _execute(template: Path, target: Path, params: dict, cwd) -> None:
    partial = target.with_name(target.stem + ".partial.ipynb")
    try:
        run_notebook(template, partial, params, cwd)
    except Exception as err:
        raise ChapterError(f"chapter {template.stem} failed: {first_line(err)}; its partial output is "
                           f"{partial}{drop_truncated(partial)}") from err
    _write_notebook(nbformat.read(partial, as_version=4), target)


def _write_notebook(nb: nbformat.NotebookNode, target: Path) -> None:
    """``nb``, tagged for the book, written atomically to ``target`` (in place of any partial
    output an earlier failed execution left)."""
    tag_for_book(nb)
    write_text_atomic(target, nbformat.writes(nb))
    target.with_name(target.stem + ".partial.ipynb").unlink(missing_ok=True)


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
