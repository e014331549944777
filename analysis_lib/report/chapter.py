"""What every analysis chapter starts and ends with: the experiment and its claims table, then
the claims' answers glued for the chapter's last paragraph; and the runs the numbers leave out."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from . import charts
from ..stats.claims import answer
from ..study.completeness import MISSING_TABLE
from ..study.experiment import Experiment, load_experiment

CLAIMS_TABLE = "claims.csv"  # written by the analyses command into the tables folder


def open_chapter(experiment_file: str, tables_dir: str) -> tuple[Experiment, pd.DataFrame]:
    """The experiment and its claims table; charts render for the book from here on."""
    charts.enable()
    return load_experiment(experiment_file, require_data=False), pd.read_csv(Path(tables_dir) / CLAIMS_TABLE)


def glue_answers(claims: pd.DataFrame, claim_ids: list[str]) -> None:
    """Glue each claim's answer sentence as Markdown under ``answer_<id>`` ({glue:md}`answer_C3`)."""
    for claim_id in claim_ids:
        glue(f"answer_{claim_id}", Markdown(answer(claims, claim_id)), display=False)


def runs_left_out(tables_dir: str) -> None:
    """Show the runs of the experiment that are not finished, hence in no table or verdict of the
    book (the analyses command lists them in ``missing_runs.csv``), or that none is."""
    missing = pd.read_csv(Path(tables_dir) / MISSING_TABLE)
    if missing.empty:
        display(Markdown("Every run of the experiment is finished and counted in these numbers."))
        return
    runs = "1 run of the experiment is" if len(missing) == 1 else f"{len(missing)} runs of the experiment are"
    display(Markdown(f"**{runs} missing** and left out of every table and verdict of this book; run the "
                     "sweep to complete them:"))
    display(missing)
