"""The README is the front door: short, and every link and picture in it leads somewhere real."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_readme_is_short_and_its_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not t.startswith(("http://", "https://"))]
    assert local and [t for t in local if not (REPO / t).exists()] == []
    assert "actions/workflows/test.yml/badge.svg" in text and (REPO / ".github/workflows/test.yml").is_file()
    picture = REPO / "book/_static/attention-explorer.png"
    assert "book/_static/attention-explorer.png" in local and picture.stat().st_size < 100_000


def test_readme_commands_are_make_targets():
    makefile = (REPO / "Makefile").read_text()
    text = README.read_text(encoding="utf-8")
    for target in set(re.findall(r"`make ([a-z-]+)", text)):
        assert re.search(rf"^{target}:", makefile, re.M), f"README names `make {target}`, the Makefile has no such target"
