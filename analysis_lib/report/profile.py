"""Which model and data a built book's numbers come from, said on its first page.

`make book` writes ``book/generated/profile.json`` once the analyses have run; the book's
Sphinx extension (`analysis_lib.report.sphinx`) reads it at build time and offers its fields as
MyST substitutions, so that ``book/intro.md`` can say, for a demo build, that the numbers come
from the small model on generated data and are not the paper's.

Schema of ``profile.json`` (version 1; all keys required, ``commit`` may be null)::

    {
      "schema_version": 1,
      "profile": "demo",                        # name of the experiment profile
      "experiment_file": "experiments/demo.yaml",
      "model": "demo-clip",                     # open_clip model name
      "pretrained": "openai",                   # open_clip tag or checkpoint path
      "model_description": "a small CLIP pretrained by this project on generated images",
      "data": "generated",                      # "generated" (made by the project) or "real"
      "datasets": ["DemoToys", "DemoTextures"],
      "seeds": [1],
      "device": "cpu",
      "created": "2025-01-31T12:00:00Z",        # when the analyses finished (ISO 8601, UTC)
      "commit": "3d39a4c"                       # git commit of the code, or null
    }
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import markup
from ..files import write_text_atomic

SCHEMA_VERSION = 1
PROFILE_PATH = "book/generated/profile.json"  # relative to the book's source folder
DATA_KINDS = ("generated", "real")


class ProfileError(ValueError):
    """profile.json exists but does not follow the schema."""


class ProfileNotFoundError(FileNotFoundError):
    """profile.json is missing: the analyses that write it have not run."""


@dataclass(frozen=True)
class BookProfile:
    """The facts a reader needs to judge the book's numbers (see the module docstring)."""

    profile: str
    experiment_file: str
    model: str
    pretrained: str
    model_description: str
    data: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    device: str
    created: str
    commit: str | None

    def __post_init__(self) -> None:
        if self.data not in DATA_KINDS:
            raise ProfileError(f"profile 'data' is {self.data!r}; it must be one of {DATA_KINDS}")
        if not self.datasets:
            raise ProfileError("profile 'datasets' is empty; list the datasets the book's numbers use")
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))

    def summary(self) -> str:
        """One paragraph (MyST markdown) for the first page; every field is escaped (``markup``),
        so a file name or setting reaches the page as text, never as markup."""
        data = "**generated data**" if self.data == "generated" else "the real datasets"
        seeds = ", ".join(map(str, self.seeds))
        commit = f", code at commit {markup.code(self.commit)}" if self.commit else ""
        text = (f"This book was built from the **{markup.text(self.profile)}** profile "
                f"({markup.code(self.experiment_file)}). Its numbers come from {markup.code(self.model)} "
                f"(weights: {markup.code(self.pretrained)}), {markup.text(self.model_description)}, on {data}: "
                f"{markup.text(', '.join(self.datasets))}; seeds {seeds}; computed on {markup.text(self.device)}, "
                f"finished {markup.text(self.created)}{commit}.")
        if self.data == "generated":
            text += " They show the method and the pipeline at work; they are not the paper's numbers."
        return text


def write_profile(profile: BookProfile, path: str | os.PathLike) -> Path:
    """Write ``profile`` as JSON, atomically (a reader never sees half a file)."""
    payload = {"schema_version": SCHEMA_VERSION, **asdict(profile)}
    return write_text_atomic(path, json.dumps(payload, indent=2))


def read_profile(path: str | os.PathLike) -> BookProfile:
    """Read and check a profile.json; one clear error for each way it can be wrong."""
    path = Path(path)
    if not path.is_file():
        raise ProfileNotFoundError(
            f"{path} not found: the book states which model and data its numbers come from, and "
            f"that file is written by `make book` after the analyses run. Build with `make book`, "
            f"or write it with analysis_lib.report.profile.write_profile.")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ProfileError(f"{path} is not valid JSON ({err}); rewrite it with write_profile") from err
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        raise ProfileError(f"{path}: 'schema_version' must be {SCHEMA_VERSION}; rewrite it with write_profile")
    expected = {f.name for f in fields(BookProfile)}
    given = set(raw) - {"schema_version"}
    if given != expected:
        raise ProfileError(f"{path}: missing keys {sorted(expected - given)}, unknown keys "
                           f"{sorted(given - expected)}; see the schema in analysis_lib/report/profile.py")
    return BookProfile(**{k: raw[k] for k in expected})


def substitutions(profile: BookProfile) -> dict[str, str]:
    """MyST substitutions: ``{{ profile_summary }}`` plus one per field (``{{ profile_model }}``),
    each escaped (``markup.text``): MyST parses a substitution's value as page source."""
    subs = {f"profile_{k}": markup.text(", ".join(map(str, v)) if isinstance(v, tuple) else v)
            for k, v in asdict(profile).items()}
    subs["profile_summary"] = profile.summary()
    return subs
