"""The README is the front door: short, and every link and picture in it leads somewhere real."""
from __future__ import annotations

import re
import shutil
import subprocess
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


def test_make_env_stops_with_one_error_when_the_disk_is_short(tmp_path):
    """Before it writes anything: a half-installed .venv is what a full disk leaves otherwise."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "requirements.txt").touch()
    (tmp_path / "pyproject.toml").touch()
    done = subprocess.run(["make", "env", "VENV_GB=1000000000"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "GB free here; the environment (.venv) needs about 1000000000 GB: free some disk and rerun" in done.stderr
    assert not (tmp_path / ".venv").exists()
