"""Re-execution as in JupyterLab (`make lab`): the train notebook and every chapter notebook run
top to bottom with the defaults of their parameters cell on the demo, through nbclient on a
kernel of the venv's interpreter started in the repository root as `make lab` starts kernels
(one kernel, its namespace cleared before each notebook, as the sweep reuses kernels: the imports
are paid once). Beside the papermill tests, which inject parameters instead.

Needs the built demo (`make book`: data/demo, runs/demo, book/generated); runs in a copy of the
working tree holding a copy of it, so the checkout's demo and book are left as they are.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analysis_lib.study.execution import warm_kernel

from test_book_browser import REPO
from test_pipeline import working_copy

pytestmark = pytest.mark.slow
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
DEMO = ("data/demo", "runs/demo", "book/generated")


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory):
    missing = [d for d in DEMO if not (REPO / d).is_dir()]
    if missing or not (REPO / "runs/demo/results.csv").is_file():
        pytest.skip(f"NOTEBOOK RE-EXECUTION NOT RUN: the built demo is missing ({', '.join(missing) or 'runs/demo/results.csv'}); "
                    "run `make book` first")
    copy = working_copy(tmp_path_factory.mktemp("rerun"))
    (copy / "data").mkdir(exist_ok=True)
    (copy / "data" / "demo").symlink_to(REPO / "data" / "demo")          # read only
    for folder in DEMO[1:]:
        shutil.copytree(REPO / folder, copy / folder, symlinks=True)
    return copy


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_its_defaults(demo_copy, name):
    nb = nbformat.read(demo_copy / "notebooks" / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code[:2]), f"{name}: no parameters cell at its top"
    km = warm_kernel(demo_copy)
    try:
        NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": str(demo_copy)}}).execute()
    finally:
        km.close_clients()
    errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count for c in code), f"{name}: a cell did not run"
