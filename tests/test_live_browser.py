"""`make explore` and `make lab` in a real browser with a real kernel.

One Voilà server (as `make explore` starts it: ``python -m analysis_lib.report.servers explore``)
serves the live explorer over a finished tiny run for the module; headless chromium, driven by
playwright-core (tests/browser/check_live.mjs), moves its widgets, uploads a picture and a file
that is no image, and records every request. A JupyterLab server (`make lab`) opens a notebook
and its kernel must reach idle (tests/browser/check_lab.mjs). `make browser-deps` installs the
browser; without it the tests skip, saying so.
"""
from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from jupyter_client.kernelspec import KernelSpecManager
from PIL import Image

from analysis_lib.report import live_explorer
from analysis_lib.stats import causal, explorer_data
from analysis_lib.study.run_folder import load_run
from test_book_browser import BROWSER, REPO, require_browser
from test_dask_cluster import start, stop

pytestmark = pytest.mark.slow


@contextmanager
def server(kind: str, log: Path, *args: str):
    """``python -m analysis_lib.report.servers kind args`` from the repository's root, as `make`
    runs it; yields the URL it prints and when it was started (time.time())."""
    started = time.time()
    proc = start([sys.executable, "-m", "analysis_lib.report.servers", kind, *args], log)
    try:
        url = None
        for _ in range(600):
            found = re.search(r"http://127\.0\.0\.1:\d+/\S*", log.read_text())
            url = url or (found and found.group(0))
            if url:
                try:
                    urllib.request.urlopen(url, timeout=5).close()
                    break
                except OSError:
                    pass
            assert proc.poll() is None, f"the {kind} server stopped:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        else:
            pytest.fail(f"the {kind} server did not answer in a minute:\n{log.read_text()[-3000:]}")
        yield url, started
    finally:
        stop(proc)


def node(script: str, *args: str) -> dict:
    proc = subprocess.run(["node", str(BROWSER / script), *args], capture_output=True, text=True, timeout=400, cwd=BROWSER)
    assert proc.stdout, f"{script} printed nothing:\n{proc.stderr}"
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], "\n".join(report["problems"] + [report.get("pageText", "")]) or proc.stderr
    return report


@pytest.fixture(scope="module")
def runs_root(ivlp_run, tmp_path_factory):
    """An output root holding the tiny finished ivlp run as <dataset>/<variant>/seed1."""
    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(ivlp_run[0].output_dir, root / "OxfordPets" / "ivlp" / "seed1")
    return root


@pytest.fixture(scope="module")
def explore(runs_root, tmp_path_factory):
    require_browser()
    run_dir = runs_root / "OxfordPets" / "ivlp" / "seed1"
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    with server("explore", log, "--runs-root", str(runs_root), "--run", str(run_dir)) as (url, started):
        yield url, started, run_dir


def library_top(run_dir: Path, runs_root: Path, key: tuple[str, str]) -> list[tuple[str, float]]:
    """The top classes of the explorer's first image with the causal test's ablation ``key``,
    computed here from the model and the library's ablation (``causal.STATES``)."""
    first = live_explorer.LiveExplorer(runs_root, run_dir)       # the state the page opens in
    run = load_run(run_dir)
    model = run.model(first.classname.value[0])
    inputs, _ = explorer_data.model_inputs(run, [first.source])
    with torch.no_grad(), model.ablate(causal.STATES[key]):
        probs = model(inputs).float().softmax(-1)[0]
    p, c = probs.topk(min(live_explorer.TOP, len(model.classnames)))
    return [(model.classnames[i], float(v)) for i, v in zip(c.tolist(), p)]


def shown_top(table: dict, columns: slice) -> list[tuple[str, float]]:
    return [(row[columns][0], float(row[columns][1])) for row in table["rows"]]


def test_live_explorer_in_the_browser(explore, runs_root, tmp_path):
    url, started, run_dir = explore
    picture, not_picture = tmp_path / "mine.png", tmp_path / "notes.txt"
    Image.fromarray((np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)).save(picture)
    not_picture.write_text("not an image")
    report = node("check_live.mjs", "--url", url, "--png", str(picture), "--text", str(not_picture), "--rounds", "10")

    assert report["panels"] == 4                            # CLIP, W/O, W and W − CLIP
    moved = ["block", "block_again", "head", "mean_heads", "rollout", "attention", "query_patch", "overview_head", "upload"]
    assert {m: report["changed"].get(m) for m in moved} == dict.fromkeys(moved, True)
    # The probabilities shown as trained and with the bias term removed are the library's.
    trained = library_top(run_dir, runs_root, live_explorer.AS_TRAINED)
    ablated = library_top(run_dir, runs_root, ("bias term removed", causal.ALL_BLOCKS))
    for table in (report["trained"], report["ablated"]):
        assert [n for n, _ in shown_top(table, slice(1, 3))] == [n for n, _ in trained]
        assert [p for _, p in shown_top(table, slice(1, 3))] == pytest.approx([p for _, p in trained], abs=5e-5)
    assert report["ablated"]["header"][-1] == "bias term removed, all blocks"
    assert [n for n, _ in shown_top(report["ablated"], slice(3, 5))] == [n for n, _ in ablated]
    assert [p for _, p in shown_top(report["ablated"], slice(3, 5))] == pytest.approx([p for _, p in ablated], abs=5e-5)
    assert [p for _, p in ablated] != pytest.approx([p for _, p in trained], abs=1e-4)   # the toggle changed them
    assert "Showing your image mine.png" in report["uploadMessage"]
    assert "notes.txt is not an image" in report["nonImageMessage"]
    print(f"live explorer: first view {report['firstViewAt'] / 1e3 - started:.1f} s after the server's start "
          f"(`make explore`); block slider to redraw, median of {len(report['redrawMs'])}: "
          f"{statistics.median(report['redrawMs']):.0f} ms (range {min(report['redrawMs'])}–{max(report['redrawMs'])} ms)")


def test_make_lab_opens_a_notebook_on_the_venv_kernel(tmp_path):
    require_browser()
    with server("lab", tmp_path / "lab.log") as (url, started):
        # ?reset: a fresh workspace, whatever an earlier session left open
        notebook = url.replace("/lab/tree/notebooks?", "/lab/tree/notebooks/live_explorer.ipynb?reset&")
        assert notebook != url, url                          # the URL printed opens the notebooks folder
        report = node("check_lab.mjs", "--url", notebook)
        token = url.rsplit("token=", 1)[1]
        with urllib.request.urlopen(f"{url.split('/lab/')[0]}/api/sessions?token={token}") as response:
            [session] = [s for s in json.load(response) if s["path"] == "notebooks/live_explorer.ipynb"]
        with urllib.request.urlopen(f"{url.split('/lab/')[0]}/api/kernelspecs?token={token}") as response:
            default = json.load(response)["default"]
    assert report["cells"] >= 3 and report["kernel"] == "Python 3 (ipykernel)"
    assert session["kernel"]["execution_state"] == "idle"
    # That kernel is the venv's: its spec lives in the venv and runs "python", which Jupyter replaces
    # by the interpreter running the server (the venv's, as `make lab` starts it).
    spec = KernelSpecManager().get_kernel_spec(default)
    assert session["kernel"]["name"] == default == "python3"
    assert Path(spec.resource_dir).is_relative_to(Path(sys.prefix)) and spec.argv[0] == "python"
    print(f"make lab: notebook open, kernel idle {report['idleAt'] / 1e3 - started:.1f} s after the server's start")
