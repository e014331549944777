"""Which runs of an experiment are finished, and why the others are not.

Every table of the book is computed from the runs finished for the experiment's current
configuration. A run that failed, was never run, or was finished under another configuration
(or has a damaged metrics.json) is missing: the analyses name each one in their output and on
the claims page, and the results table is rebuilt from the finished runs alone, so no number
counts a run that is not there.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import aggregate
from .experiment import Experiment, Run
from .run_record import METRICS_FILE, is_complete, run_folder

log = logging.getLogger(__name__)

MISSING_TABLE = "missing_runs.csv"  # written by the analyses command into the tables folder


@dataclass(frozen=True)
class MissingRun:
    run_id: str
    reason: str  # what happened, and where to look


def finished_runs(experiment: Experiment) -> list[Run]:
    """The runs whose folder holds a finished run of their current configuration."""
    return [run for run in experiment.runs()
            if is_complete(run_folder(experiment.output_root, run), run.config_hash, run.split_sha256)]


def missing_runs(experiment: Experiment) -> list[MissingRun]:
    """Every run of the experiment that is not finished, with the reason (in the runs' order)."""
    finished = {run.run_id for run in finished_runs(experiment)}
    missing = []
    for run in experiment.runs():
        if run.run_id in finished:
            continue
        folder = run_folder(experiment.output_root, run)
        failed = folder.with_name(f"{folder.name}.failed")
        if failed.is_dir():
            reason = f"failed: its notebook in {failed} shows the error"
        elif (folder / METRICS_FILE).exists():
            reason = (f"{folder / METRICS_FILE} is damaged, or from another configuration of the run or "
                      "another version of its dataset's split file; the sweep runs it again")
        else:
            reason = "not run yet"
        missing.append(MissingRun(run.run_id, reason))
    return missing


def report_missing(experiment: Experiment) -> list[MissingRun]:
    """``missing_runs``, each logged as a warning."""
    missing = missing_runs(experiment)
    if missing:
        log.warning("%d of %d runs of %s are missing and left out of every table (run the sweep to "
                    "complete them):", len(missing), len(experiment.runs()), experiment.path)
        for run in missing:
            log.warning("  %s: %s", run.run_id, run.reason)
    return missing


def aggregate_finished(experiment: Experiment) -> list[Path]:
    """The results table (``aggregate``) of the finished runs, written into output_root; a
    ValueError when no run is finished."""
    done = [run_folder(experiment.output_root, run) / METRICS_FILE for run in finished_runs(experiment)]
    if not done:
        raise ValueError(f"no finished runs of {experiment.path} under {experiment.output_root}: run the sweep "
                         f"first (python -m analysis_lib sweep {experiment.path})")
    paths = aggregate.write_results(aggregate.results_table(aggregate.load_metrics(done)), experiment.output_root)
    log.info("%d of %d runs aggregated into %s", len(done), len(experiment.runs()), ", ".join(map(str, paths)))
    return paths
