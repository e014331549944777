"""What every chapter of the book is made of: a ``Page`` (the answer box that opens it, the
tables and figures it shows in order, each numbered with its caption, the tables by value and the
numbers its prose quotes) and the parts of an answer box. The chapters themselves, and the one
call a chapter's notebook makes (``open_page``), are in ``chapters.py``.
"""
from __future__ import annotations

import html
import math
import re
import unicodedata
from dataclasses import dataclass, field

import pandas as pd
from IPython.display import HTML, display

from . import charts
from .numbers import informative, significant, signed
from ..study.aggregate import AVERAGE  # the row over datasets, of the results and the claims table alike
from ..study.experiment import Experiment

GLOSSARY = "../glossary.html"  # from a generated page (book/generated/) to the glossary (book/)
LONG_TABLE = 12              # rows: a longer table opens on demand


@dataclass
class Shown:
    """A table or figure of a chapter: what is drawn, its caption and whether it is a figure."""

    content: object   # an altair chart, a DataFrame, or HTML
    caption: str
    figure: bool


@dataclass
class Page:
    """A chapter: its answer box, what it shows (in order), its tables by value and its numbers."""

    answer: str                                                   # HTML of the answer box
    shown: dict[str, Shown] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # written as <tables_dir>/<name>.csv
    numbers: dict[str, object] = field(default_factory=dict)       # glued for the prose (text, or Markdown)

    def figure(self, name: str, chart, caption: str) -> None:
        self.shown[name] = Shown(chart, caption, True)

    def table(self, name: str, table: pd.DataFrame | HTML, caption: str) -> None:
        self.shown[name] = Shown(table, caption, False)

    def label(self, name: str) -> str:
        """"Figure 2" or "Table 1": figures and tables are numbered apart, in the page's order."""
        figure = self.shown[name].figure
        same = [n for n, s in self.shown.items() if s.figure == figure]
        return f"{'Figure' if figure else 'Table'} {same.index(name) + 1}"

    def show(self, name: str) -> None:
        """Display the table or figure ``name`` with its numbered caption: a table loses its
        constant columns (the caption states them once), a long one opens on demand. Nothing for a
        name this experiment's page lacks (published numbers for datasets the papers did not use,
        a per-run table no run has)."""
        if name not in self.shown:
            return
        item = self.shown[name]
        content, note = item.content, ""
        if isinstance(content, pd.DataFrame):
            content, constant = informative(content)
            note = "".join(f" Every row: {c} = {v}." for c, v in constant.items())
        caption = f"<p class=\"caption\"><strong>{self.label(name)}.</strong> {html.escape(item.caption)}{html.escape(note)}</p>"
        if isinstance(content, pd.DataFrame):
            body = content.to_html(index=False, border=0, classes="book-table", na_rep="—")
            if len(content) > LONG_TABLE:
                body = f"<details><summary>{len(content)} rows: show</summary>{body}</details>"
            display(HTML(caption + body))
        else:
            if not item.figure:
                display(HTML(caption))
            display(content)
            if item.figure:
                display(HTML(caption))


# --------------------------------------------------------------------------- the answer box
def answer_box(lines: list[str]) -> str:
    """The box that opens a chapter: its answer in a few lines of HTML (already escaped)."""
    items = "".join(f"<p>{line}</p>" for line in lines)
    return f'<div class="admonition tip answer-box"><p class="admonition-title">Answer</p>{items}</div>'


def term(word: str, entry: str | None = None) -> str:
    """``word`` linked to the glossary's ``entry`` (default: the word), at the anchor Sphinx gives
    a glossary term: "term-" and its ASCII letters and digits, other runs as "-"."""
    slug = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKD", entry or word).encode("ascii", "ignore")
                  .decode().lower()).strip("-")
    return f'<a href="{GLOSSARY}#term-{slug}">{html.escape(word)}</a>'


def verdict_badge(verdict: str) -> str:
    colour = charts.COLOURS.get(verdict, "#9e9e9e")
    return (f'<span class="verdict" style="border-bottom:3px solid {colour};white-space:nowrap">'
            f"{html.escape(verdict)}</span>")


def interval_text(row) -> str:
    """"+0.12 (95 % interval −0.03 to +0.27)", or the effect alone without an interval."""
    if math.isnan(row.low):
        return signed(row.effect)
    return f"{signed(row.effect)} (95 % interval {signed(row.low)} to {signed(row.high)})"


def claim_answer(claims: pd.DataFrame, claim_id: str) -> str | None:
    """One claim's answer: the statement, the measured effect with its interval over datasets,
    and the verdict on each dataset and on average (HTML); None if the claim was not measured."""
    from ..stats.claims import CLAIMS
    rows = claims[claims.claim == claim_id] if not claims.empty else claims
    if rows.empty:
        return None
    claim = CLAIMS[claim_id]
    rows = rows.set_index("dataset")
    summary = rows.loc[AVERAGE] if AVERAGE in rows.index else rows.iloc[-1]
    per_dataset = " · ".join(f"{html.escape(str(d))} {verdict_badge(r.verdict)}"
                             for d, r in rows.drop(index=AVERAGE, errors="ignore").iterrows())
    where = "averaged over the datasets" if AVERAGE in rows.index else f"on {html.escape(str(summary.name))}"
    holm = "" if pd.isna(summary.get("p_holm", math.nan)) else f", Holm-adjusted p = {significant(summary.p_holm)}"
    return (f"<strong>{html.escape(claim.statement)}</strong> ({claim_id}): {verdict_badge(summary.verdict)} "
            f"{where}. Measured as {html.escape(claim.effect)}: {interval_text(summary)}{holm}, "
            f"over {summary.n} {html.escape(str(summary.unit))}." + (f" Per dataset: {per_dataset}." if per_dataset else ""))


def claim_answers(claims: pd.DataFrame, claim_ids: tuple[str, ...]) -> list[str]:
    """The answers of the measured claims among ``claim_ids`` (or one line saying none was)."""
    lines = [a for a in (claim_answer(claims, c) for c in claim_ids) if a]
    return lines or [f"{', '.join(claim_ids)}: not measured in this experiment (no analysed runs with the "
                     "tables they need)."]


def analysed(experiment: Experiment, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-run table that come from the experiment's analysed variant."""
    if table.empty:
        return table
    return table[table.variant_name == analysed_variant(experiment)]


def analysed_variant(experiment: Experiment) -> str:
    """The variant the chapters analyse: the experiment file's ``analysis.variant_name``."""
    if experiment.analysis is None:
        raise ValueError(f"{experiment.path} has no 'analysis' section naming the analysed variant "
                         "(variant_name, seed, n_images)")
    return experiment.analysis.variant_name
