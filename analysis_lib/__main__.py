"""Command line: `python -m analysis_lib sweep|aggregate EXPERIMENT.yaml ...`.

sweep      execute every run of the experiment that is not complete, then write the results table
aggregate  write the results table (output_root/results.csv, .json) from the finished runs
analyses   compute the per-run analysis tables of every finished run (Dask, resumable), the claims
           table, and execute the analysis notebooks into the book (book/generated/)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .study import execution, sweep
from .study.run_record import is_complete, run_folder
from .study.experiment import Experiment, check_runnable, load_experiment
from .checks import ConfigError
from .files import FileWriteError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("sweep", help="execute the experiment's runs")
    run.add_argument("experiment", help="experiment file (YAML), e.g. experiments/demo.yaml")
    run.add_argument("--workers", type=int, default=None,
                     help="LocalCluster worker processes (default: one per GPU, 1 without GPUs); "
                          "0 runs in this process, one run after another, without Dask")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="use the running Dask cluster at ADDRESS (tcp://host:8786) instead of a LocalCluster")
    run.add_argument("--only", metavar="PATTERN", action="append",
                     help="only runs whose id (dataset/variant/seedK) matches this shell pattern, "
                          "e.g. 'EuroSAT/*' or '*/ivlp/*'; repeatable")
    run.add_argument("--dry-run", action="store_true",
                     help="check the model, weights, device and variants, then list the runs and whether "
                          "each is complete")
    run.add_argument("--data-root", help="data folder to use instead of the file's data_root")
    agg = commands.add_parser("aggregate", help="write the results table of the finished runs")
    agg.add_argument("experiment")
    ana = commands.add_parser("analyses", help="compute the per-run tables and execute the analysis notebooks")
    ana.add_argument("experiment")
    ana.add_argument("--out", default="book/generated", help="where the executed notebooks go")
    ana.add_argument("--force", action="store_true", help="re-execute notebooks that are up to date")
    ana.add_argument("--data-root", help="data folder to use instead of the file's data_root")
    ana.add_argument("--workers", type=int, default=1,
                     help="LocalCluster worker processes for the per-run tables (default 1); 0: in this process")
    ana.add_argument("--scheduler", metavar="ADDRESS", help="use the running Dask cluster at ADDRESS instead")
    ana.add_argument("--threads", type=int, default=None,
                     help="torch threads per task (default: the CPU count divided by the workers)")
    args = parser.parse_args(argv)
    if args.command in ("sweep", "analyses") and args.workers is not None and args.workers < 0:
        parser.error("--workers must be 0 (in this process) or more")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)

    try:
        if args.command == "aggregate":
            return _aggregate(load_experiment(args.experiment, require_data=False))
        if args.command == "analyses":
            from .report.notebooks import build_analyses
            threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.workers))
            written = build_analyses(load_experiment(args.experiment, data_root=args.data_root), args.out,
                                     force=args.force, workers=args.workers, scheduler=args.scheduler,
                                     threads=threads)
            print(f"{len(written)} analysis notebooks in {args.out}")
            return 0
        experiment = load_experiment(args.experiment, data_root=args.data_root)
        weights_problem = check_runnable(experiment, require_weights=not args.dry_run)
        runs = sweep.select_runs(experiment.runs(), args.only)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError, FileWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        complete = {r.run_id for r in runs if is_complete(run_folder(experiment.output_root, r),
                                                           r.config_hash, r.split_sha256)}
        for r in runs:
            print(f"{r.run_id:<40} {'complete' if r.run_id in complete else 'to run':<9} {r.config_hash[:12]}")
        print(f"{len(runs)} runs, notebook {experiment.notebook}, output {experiment.output_root}")
        if weights_problem:
            print(f"warning: the sweep itself would stop here: {weights_problem}")
        return _projected_cost([r for r in runs if r.run_id not in complete])
    gpus = [] if args.scheduler or experiment.device == "cpu" or args.workers == 0 else execution.visible_gpus()
    workers = args.workers if args.workers is not None else max(1, len(gpus))
    try:
        results = sweep.run_sweep(runs, experiment.notebook, experiment.output_root, workers=workers,
                                  scheduler=args.scheduler, gpus=gpus, reuse_kernels=experiment.reuse_kernels)
    except (execution.SweepBusyError, FileWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(sweep.summary_table(results))
    if any(r.status != "failed" for r in results) and _aggregate(experiment):
        return 2
    return 1 if any(r.status == "failed" for r in results) else 0


def _projected_cost(runs) -> int:
    """The work of the runs still to run and, where the GPU check has measured rates, its device hours."""
    from .study import cost
    try:
        rates = cost.load_rates()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"projected cost of the {len(runs)} runs to run:\n{cost.summary(runs, rates)}" if runs
          else "nothing to run")
    return 0


def _aggregate(experiment: Experiment) -> int:
    """Results table of the runs that are complete for the experiment's current configuration."""
    from .study.completeness import aggregate_finished
    try:
        aggregate_finished(experiment)
    except (ValueError, FileWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
