"""The per-run stage: every per-run table of an experiment, one Dask task per run (the first step
of the ``analyses`` command; the claims table and the chapters come after it).

Each table is a function of a finished run (``PerRunTable``, in the registry ``TABLES``) that
applies to some variant kinds (ivlp everywhere; text and vision prompts where a statistic compares
them) and, for some, only to datasets with foreground masks. A table is written atomically to
``<run folder>/analyses/<name>.csv``; then ``analyses/manifest.json`` records it under its key (the
run's config hash, ``ANALYSIS_VERSION`` and the number of images), and ``sample`` lists the
images every per-image table looked at (``LoadedRun.sample``: stratified by class, the same for
every seed and variant of a dataset). A learned effect is measured against a control: the tables
that compare models hold the trained model ("prompted") and the same variant at its seed's initial
parameters, untrained ("control", ``LoadedRun.control``). A table whose key matches is
complete and skipped, so a killed task loses only the table it was computing, and a re-run sweep
(new config hash) or a changed definition (new version) makes the tables stale. The claims table
and the chapters read these tables (``load_table``); they never recompute them.

Another table is one more ``PerRunTable`` entry in ``TABLES`` (``register``).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import data
from ..files import write_text_atomic
from ..study.experiment import AnalysisConfig, Experiment, Run
from ..study.run_folder import LoadedRun, load_run
from ..study.execution import dask_client, first_line, output_lock
from ..study.run_record import METRICS_FILE, is_complete, run_folder
from . import analyses
from .causal import ablation_accuracy
from .known_truth import known_truth_table
from ..demo.world import DATASETS as DEMO_WORLD

log = logging.getLogger(__name__)

# Bump when the definition of any per-run table changes: every table is then computed again.
ANALYSIS_VERSION = 4
TABLES_DIR, MANIFEST = "analyses", "manifest.json"
PROMPTED = frozenset({"ivlp", "text", "vision", "coop"})
BLOCK0_IMAGES = 8          # the identity is exact per image: a few images show its rounding error
EXPLAINED_IMAGES = 16      # relevance needs a backward pass per image: explain at most this many


@dataclass(frozen=True)
class PerRunTable:
    """One analysis table of a finished run: ``compute(run, n_images)``, for the runs whose variant
    kind is in ``kinds`` (and, with ``needs_masks``, whose dataset has foreground masks; with
    ``datasets``, whose dataset is one of them)."""

    name: str
    compute: Callable[[LoadedRun, int], pd.DataFrame]
    kinds: frozenset[str] = frozenset({"ivlp"})
    needs_masks: bool = False
    datasets: frozenset[str] | None = None

    def applies(self, kind: str, dataset: str) -> bool:
        return (kind in self.kinds and (not self.needs_masks or data.get_spec(dataset).mask_dir is not None)
                and (self.datasets is None or dataset in self.datasets))


def _decomposition(run: LoadedRun, n: int) -> pd.DataFrame:
    return analyses.decomposition_by_block(run.model("base"), run.test_loader("base", n))


def _block0(run: LoadedRun, n: int) -> pd.DataFrame:
    images, _ = analyses.first_images(run.test_loader("base", n), min(n, BLOCK0_IMAGES))
    errors = analyses.block0_proportionality(run.model("base"), images)
    return pd.DataFrame({"tower": list(errors), "deviation": list(errors.values())})


def trained_and_control(run: LoadedRun) -> dict:
    """The run's trained model and its control, for the base classes."""
    return {"prompted": run.model("base"), "control": run.control("base")}


def _attention(run: LoadedRun, n: int) -> pd.DataFrame:
    return analyses.attention_statistics(analyses.with_clip(trained_and_control(run)), run.test_loader("base", n))


def _contributions(run: LoadedRun, n: int) -> pd.DataFrame:
    """Text contributions per token type and the vision ones per token kind, long format, for
    zero-shot, the trained model and its control on the images prompting fixed."""
    models = trained_and_control(run)
    loader = run.test_loader("base", n)
    chosen = analyses.fixed_by_prompting(analyses.zeroshot_twin(models["prompted"]), models["prompted"], loader)
    if not len(chosen):
        return pd.DataFrame(columns=["tower", "model", "method", "token_type", "contribution", "n_explained"])
    result = analyses.token_contributions(models["prompted"], loader.dataset, chosen[:EXPLAINED_IMAGES],
                                          control=models["control"])
    vision = result["vision"].groupby(["model", "method", "kind"], as_index=False).contribution.sum()
    return pd.concat([result["text_by_type"].assign(tower="text"),
                      vision.rename(columns={"kind": "token_type"}).assign(tower="vision")],
                     ignore_index=True).assign(n_explained=min(len(chosen), EXPLAINED_IMAGES))


TABLES: dict[str, PerRunTable] = {}


def register(table: PerRunTable) -> PerRunTable:
    """Add a table to the stage (its name is its file name and its key in the manifest)."""
    TABLES[table.name] = table
    return table


for _table in (
    PerRunTable("decomposition", _decomposition),
    PerRunTable("block0", _block0),
    PerRunTable("attention", _attention, PROMPTED),
    PerRunTable("relative_attention", lambda run, n: analyses.relative_attention(run, trained_and_control(run), n)),
    PerRunTable("foreground_share", lambda run, n: analyses.foreground_share(run, trained_and_control(run), n),
                needs_masks=True),
    PerRunTable("background_similarity", lambda run, n: analyses.background_similarity(run, run.model("base"), n),
                needs_masks=True),
    PerRunTable("background_keys", lambda run, n: analyses.background_keys(run, trained_and_control(run), n),
                needs_masks=True),
    PerRunTable("causal_ablation", lambda run, n: ablation_accuracy(run)),  # the whole test sets
    PerRunTable("contributions", _contributions),
    # The known-truth test (C7): only the demo world knows each dataset's shift.
    PerRunTable("known_truth", known_truth_table, frozenset({"zeroshot", "ivlp", "vision", "bias"}),
                datasets=frozenset(DEMO_WORLD)),
):
    register(_table)


# --------------------------------------------------------------------------- one run
def table_key(config_hash: str, n_images: int) -> dict:
    return {"config_hash": config_hash, "version": ANALYSIS_VERSION, "n_images": n_images}


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / TABLES_DIR / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def missing_tables(folder: Path, config_hash: str, names: list[str], n_images: int) -> list[str]:
    """The tables among ``names`` that ``folder`` lacks for this configuration."""
    done, key = _manifest(folder), table_key(config_hash, n_images)
    return [name for name in names if done.get(name) != key or not (folder / TABLES_DIR / f"{name}.csv").is_file()]


def sample_listing(run: LoadedRun, n_images: int) -> dict[str, list[str]]:
    """What the per-image tables looked at (the manifest's record): the sampled base test images,
    by path relative to the data root where they lie under it."""
    root = Path(run.settings.data_root).resolve()

    def relative(path: str) -> str:
        p = Path(path).resolve()
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
    return {"base": [relative(item.path) for item in run.sample("base", n_images)]}


def analyse_run(folder: str | Path, config_hash: str, names: list[str], n_images: int,
                data_root: str | None = None, threads: int | None = None) -> dict:
    """Compute the missing tables of one finished run (on a Dask worker or in this process);
    returns {"computed": [...], "seconds": ...}. Each table is written, then recorded."""
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    folder = Path(folder)
    todo = missing_tables(folder, config_hash, names, n_images)
    if todo:
        run = load_run(folder, data_root=data_root)
        sample = {"sample": sample_listing(run, n_images)}
        for name in todo:
            table = TABLES[name].compute(run, n_images)
            write_text_atomic(folder / TABLES_DIR / f"{name}.csv", table.to_csv(index=False))
            manifest = _manifest(folder) | sample | {name: table_key(config_hash, n_images)}
            write_text_atomic(folder / TABLES_DIR / MANIFEST, json.dumps(manifest, indent=2))
    return {"computed": todo, "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------- the stage
class PerRunStageError(RuntimeError):
    """Some runs' per-run tables failed; the message names each run and its error."""


def variant_kind(experiment: Experiment, variant_name: str) -> str:
    """The variant kind (zeroshot, ivlp, bias, ...) of a variant named in the experiment file."""
    return experiment.variants[variant_name]["variant"]


def runs_of_kind(experiment: Experiment, kinds: str | set[str]) -> list[str]:
    """The variant names of the experiment whose kind is ``kinds`` (one, or a set)."""
    kinds = {kinds} if isinstance(kinds, str) else set(kinds)
    return [name for name in experiment.variants if variant_kind(experiment, name) in kinds]


def stage_plan(experiment: Experiment) -> list[tuple[Run, Path, list[str]]]:
    """Every finished run with the tables that apply to it (runs not finished are left out)."""
    plan = []
    for run in experiment.runs():
        folder = run_folder(experiment.output_root, run)
        names = [name for name, table in TABLES.items()
                 if table.applies(variant_kind(experiment, run.variant_name), run.dataset)]
        if names and is_complete(folder, run.config_hash, run.split_sha256):
            plan.append((run, folder, names))
    return plan


def n_images_of(experiment: Experiment) -> int:
    return (experiment.analysis or AnalysisConfig).n_images


def run_stage(experiment: Experiment, workers: int = 1, scheduler: str | None = None,
              threads: int | None = None) -> dict[str, dict]:
    """Compute every missing per-run table of the experiment: one task per run on Dask (a
    LocalCluster of ``workers`` processes, or the cluster at ``scheduler``), or in this process
    for workers=0. Returns {run_id: {"computed", "seconds"}} for the runs that had work; raises
    PerRunStageError naming the failed runs after the others finished."""
    n, root = n_images_of(experiment), Path(experiment.output_root)
    plan = [(run, folder, names) for run, folder, names in stage_plan(experiment)
            if missing_tables(folder, run.config_hash, names, n)]
    log.info("analyses: %d runs with tables to compute", len(plan))
    done, failed = {}, {}
    args = {run.run_id: (str(folder), run.config_hash, names, n, experiment.data_root, threads)
            for run, folder, names in plan}
    with output_lock(root), tqdm(total=len(plan), desc="per-run tables", unit="run") as progress:
        if workers == 0 or not plan:
            for run_id, a in args.items():
                try:
                    done[run_id] = analyse_run(*a)
                except Exception as err:
                    log.error("%s: analyses failed", run_id, exc_info=True)
                    failed[run_id] = first_line(err)
                progress.update()
        else:
            from distributed import as_completed
            with dask_client(workers, scheduler, None) as client:
                futures = {client.submit(analyse_run, *a, pure=False): run_id for run_id, a in args.items()}
                for future in as_completed(futures):
                    try:
                        done[futures[future]] = future.result()
                    except Exception as err:  # the table failed, or the worker died
                        failed[futures[future]] = first_line(err)
                    progress.update()
    if done:
        seconds = sorted(d["seconds"] for d in done.values())
        log.info("analyses: %d runs, median %.1f s per run (max %.1f s)", len(done), seconds[len(seconds) // 2],
                 seconds[-1])
    if failed:
        raise PerRunStageError(f"{len(failed)} of {len(plan)} runs failed their per-run tables: " + "; ".join(
            f"{run_id}: {error}" for run_id, error in sorted(failed.items())) + " (the others are written)")
    return done


# --------------------------------------------------------------------------- reading back
def load_table(experiment: Experiment, name: str) -> pd.DataFrame:
    """Table ``name`` of every run that has it complete, with dataset, variant_name, variant (the
    kind) and seed columns; empty if no run has it."""
    n, frames = n_images_of(experiment), []
    for run, folder, names in stage_plan(experiment):
        if name in names and not missing_tables(folder, run.config_hash, [name], n):
            table = pd.read_csv(folder / TABLES_DIR / f"{name}.csv")
            frames.append(table.assign(dataset=run.dataset, variant_name=run.variant_name,
                                       variant=variant_kind(experiment, run.variant_name), seed=run.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_metrics(experiment: Experiment) -> pd.DataFrame:
    """One row per finished run: dataset, variant_name, variant, seed, base / novel / hm accuracy,
    learned parameters and training wall time (from the runs' metrics.json)."""
    rows = []
    for run in experiment.runs():
        folder = run_folder(experiment.output_root, run)
        if is_complete(folder, run.config_hash, run.split_sha256):
            m = json.loads((folder / METRICS_FILE).read_text())
            rows.append({"dataset": run.dataset, "variant_name": run.variant_name,
                         "variant": variant_kind(experiment, run.variant_name), "seed": run.seed,
                         "base": m["base_acc"], "novel": m["novel_acc"], "hm": m["hm"],
                         "n_trainable": m["n_trainable"], "train_s": m.get("wall_time_s")})
    return pd.DataFrame(rows)
