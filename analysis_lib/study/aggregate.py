"""The results table: mean ± std over seeds of base, novel and HM per dataset × variant, plus the
"Average" row over datasets that the literature reports.

HM follows the literature's tables: the harmonic mean of the *mean* base and novel accuracies
(for the Average row: of the dataset-averaged ones). Its spread, hm_std, is the standard
deviation over seeds of each seed's own HM. Standard deviations use ddof=1 (the sample
standard deviation over seeds; undefined, so empty, for a single seed).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..files import read_json, write_text_atomic
from .run_record import harmonic_mean

log = logging.getLogger(__name__)

AVERAGE = "Average"
RESULTS_NAME = "results"  # results.csv and results.json
_KEYS = ("dataset", "variant_name", "seed", "base_acc", "novel_acc", "n_trainable")


def load_metrics(paths: Iterable[str | Path]) -> list[dict]:
    """The metrics.json records of finished runs (each must carry the keys the table needs)."""
    records = []
    for path in paths:
        record = read_json(path, "run the sweep again: it re-runs that run")
        missing = [key for key in _KEYS if key not in record] if isinstance(record, dict) else _KEYS
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}: not a metrics.json the sweep completed")
        records.append(record)
    return records


def results_table(records: list[dict]) -> pd.DataFrame:
    """One row per (dataset, variant_name) in the records' order, then one "Average" row per
    variant over the seeds for which it has every dataset of the table."""
    runs = pd.DataFrame([{key: record[key] for key in _KEYS} for record in records])
    if runs.empty:
        raise ValueError("no finished runs to aggregate")
    n_datasets = runs["dataset"].nunique()
    per_seed = runs.groupby(["variant_name", "seed"], sort=False).agg(
        base_acc=("base_acc", "mean"), novel_acc=("novel_acc", "mean"),
        n_trainable=("n_trainable", "first"), datasets=("dataset", "nunique")).reset_index()
    complete = per_seed["datasets"] == n_datasets
    for variant in per_seed.loc[~complete, "variant_name"].unique():
        log.warning("%s: seeds missing some of the %d datasets are left out of its Average row",
                    variant, n_datasets)
    average = per_seed[complete].drop(columns="datasets").assign(dataset=AVERAGE)
    both = pd.concat([runs, average], ignore_index=True)
    both["hm"] = harmonic_mean(both["base_acc"], both["novel_acc"])
    table = both.groupby(["dataset", "variant_name"], sort=False).agg(
        n_seeds=("seed", "nunique"), base_mean=("base_acc", "mean"), base_std=("base_acc", "std"),
        novel_mean=("novel_acc", "mean"), novel_std=("novel_acc", "std"), hm_std=("hm", "std"),
        n_trainable=("n_trainable", "first")).reset_index()
    table.insert(table.columns.get_loc("hm_std"), "hm", harmonic_mean(table["base_mean"], table["novel_mean"]))
    return table


def write_results(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """results.csv and results.json in ``out_dir``, each written to a temporary file first. A file
    whose content is unchanged is left alone: the analyses count as up to date while they are
    newer than results.csv, so a resumed sweep with nothing new must not touch it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".csv", table.to_csv(index=False)),
                         (".json", table.to_json(orient="records", indent=2))):
        path = out_dir / (RESULTS_NAME + suffix)
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            write_text_atomic(path, text)
        written.append(path)
    return written
