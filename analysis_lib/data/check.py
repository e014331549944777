"""Which datasets under a data root are usable, and what to do about the others."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataRootError, DatasetError, DatasetFolderError
from .images import find_bad_images
from .readers import SPLITS, read_dataset
from .registry import dataset_names, get_spec


@dataclass
class DatasetStatus:
    name: str
    status: str  # "ok", "differs" (class count unlike the literature's), "missing", "broken"
    n_classes: int | None = None
    expected_classes: int | None = None
    counts: dict[str, int] = field(default_factory=dict)  # images per split
    problem: str = ""
    bad_images: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), with deep


def check_datasets(root: str | Path, datasets: list[str] | None = None, *,
                   allow_missing_images: bool = False, deep: bool = False) -> list[DatasetStatus]:
    """Read every named dataset (default: all registered) and report its state; ``deep`` also
    decodes every listed image and reports those that do not decode as broken."""
    specs = [get_spec(name) for name in (datasets or dataset_names())]
    if not Path(root).expanduser().is_dir():
        raise DataRootError(root)
    report = []
    for spec in specs:
        if not spec.dataset_dir(root).is_dir():
            problem = DatasetFolderError(spec.name, spec.dataset_dir(root))
            report.append(DatasetStatus(spec.name, "missing", expected_classes=spec.n_classes,
                                        problem=_without_name(spec.name, problem)))
            continue
        try:
            data = read_dataset(spec.name, root, allow_missing_images=allow_missing_images)
        except DatasetError as e:
            report.append(DatasetStatus(spec.name, "broken", expected_classes=spec.n_classes,
                                        problem=_without_name(spec.name, e)))
            continue
        n = len(data.classnames)
        differs = spec.n_classes is not None and n != spec.n_classes
        notes = [f"{n} classes where the literature's has {spec.n_classes}"] if differs else []
        if data.skipped:
            notes.append(f"skipped {data.skipped} listed image(s) missing on disk")
        bad = []
        if deep:
            paths = [item.path for s in SPLITS for item in data.split(s)]
            bad = find_bad_images(paths, desc=f"decoding {spec.name}")
        if bad:
            notes.insert(0, f"{len(bad)} image(s) do not decode; replace or remove them")
        status = "broken" if bad else "differs" if differs else "ok"
        report.append(DatasetStatus(spec.name, status, n, spec.n_classes,
                                    {s: len(data.split(s)) for s in SPLITS}, "; ".join(notes), bad))
    return report


def _without_name(name: str, error: Exception) -> str:
    return str(error).removeprefix(f"{name}: ")


def format_report(report: list[DatasetStatus]) -> str:
    """A fixed-width table, then one line per problem."""
    header = ("dataset", "status", "classes", *SPLITS)
    rows = [header] + [
        (r.name, r.status,
         "-" if r.n_classes is None else f"{r.n_classes}/{r.expected_classes or '?'}",
         *(str(r.counts[s]) if r.counts else "-" for s in SPLITS))
        for r in report]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for r in report:
        if r.problem:
            lines.append(f"{r.name}: {r.problem}")
        lines += [f"  {path}: {reason}" for path, reason in r.bad_images]
    return "\n".join(lines)
