"""Numbers as the book prints them: a fixed number of significant digits, a true minus sign,
"mean ± std" where ± is always the standard deviation over seeds (the glossary says so once),
and tables without columns that say nothing (empty, or one value for every row).

A spread is printed to two significant digits and its mean to the same decimal place, so the
digits shown are the digits the seeds agree on; a spread of zero (a variant that learns nothing,
or one seed) prints the mean alone rather than "± 0.00".
"""
from __future__ import annotations

import math

import pandas as pd

DIGITS = 3          # significant digits of a number without a spread
SPREAD_DIGITS = 2   # significant digits of a spread
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
PM = "\u00a0±\u00a0"  # no-break spaces: a narrow table cell wraps "mean ± std" as a whole


def significant(value: float, digits: int = DIGITS, sign: bool = False) -> str:
    """``value`` to ``digits`` significant digits, a true minus sign, and "× 10ⁿ" instead of
    e-notation outside 0.001 … 100 000 (so 7.95e-08 reads 7.95 × 10⁻⁸); "—" for nan."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    value = float(value)
    if value != 0 and not 1e-3 <= abs(value) < 1e5:
        exponent = math.floor(math.log10(abs(value)))
        mantissa = significant(value / 10 ** exponent, digits, sign)
        return f"{mantissa} × 10{str(exponent).translate(SUPERSCRIPT)}"
    decimals = max(0, digits - 1 - (math.floor(math.log10(abs(value))) if value else 0))
    text = f"{value:{'+' if sign else ''}.{decimals}f}"
    return text.replace("-", "−")


def signed(value: float, digits: int = DIGITS) -> str:
    """An effect: ``significant`` with its sign always written (+0.35, −1.2)."""
    return significant(value, digits, sign=True)


def mean_std(mean: float, std: float, sign: bool = False) -> str:
    """One "mean ± std" cell: the std to two significant digits, the mean to the same decimal
    place; the mean alone (to ``DIGITS`` digits) where there is no spread (one seed, or none)."""
    if mean is None or math.isnan(mean):
        return "—"
    if std is None or math.isnan(std) or std == 0:
        return significant(mean, DIGITS, sign)
    decimals = max(0, SPREAD_DIGITS - 1 - math.floor(math.log10(abs(std))))
    if abs(std) < 1e-4 or abs(mean) >= 1e5:  # far from 1: keep the significant digits of each
        return f"{significant(mean, DIGITS, sign)}{PM}{significant(std, SPREAD_DIGITS)}"
    text = f"{mean:{'+' if sign else ''}.{decimals}f}{PM}{std:.{decimals}f}"
    return text.replace("-", "−")


def over_seeds(frame: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """Each ``by`` group's mean and std over seeds (columns ``<value>`` and ``<value>_std``):
    each seed's mean comes first (over datasets, blocks, heads... within the group), so the std
    is the seed-to-seed spread of the number shown. NaN std for a single seed."""
    per_seed = frame.groupby([*by, "seed"], sort=False)[values].mean()
    agg = per_seed.groupby(level=list(range(len(by))), sort=False).agg(["mean", "std"])
    out = pd.DataFrame({name: agg[(v, stat)] for v in values
                        for name, stat in ((v, "mean"), (f"{v}_std", "std"))})
    return out.reset_index()


def with_spread(table: pd.DataFrame, values: list[str], sign: bool = False) -> pd.DataFrame:
    """``table`` (from ``over_seeds``) with each value and its ``_std`` in one "mean ± std" cell."""
    out = table.drop(columns=[f"{v}_std" for v in values])
    for v in values:
        out[v] = [mean_std(m, s, sign) for m, s in zip(table[v], table[f"{v}_std"])]
    return out


def informative(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """The table without its empty columns and those holding one value in every row, and those
    constant values by column (a caption states them once). A one-row table is left whole."""
    if len(table) < 2:
        return table, {}
    constant = {c: table[c].iloc[0] for c in table.columns
                if table[c].isna().all() or table[c].astype(str).nunique() == 1}
    return table.drop(columns=list(constant)), {c: v for c, v in constant.items() if not pd.isna(v)}
