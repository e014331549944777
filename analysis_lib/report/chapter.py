"""What every analysis chapter starts and ends with: the experiment and its claims table, then
the claims' answers glued for the chapter's last paragraph."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

from . import charts
from ..stats.claims import answer
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
