"""The book in a real browser: offline, every chart drawn, the explorer's slider working.

The test builds the book from a temporary copy of its configuration and pages, with the
generated chapters replaced by stand-ins (an executed notebook holding two attention
explorers, a scatter, a chart wider than the page and a widget made from random data; one-line
pages for the others), serves the site on 127.0.0.1 and drives Debian's chromium through
playwright-core (tests/browser/check_book.mjs). `make browser-deps` installs both; without them
the tests skip, saying so.

Set BOOK_HTML=_build/html to run the same browser check on a book built by `make book`.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import altair as alt
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from ipywidgets import IntSlider
from ipywidgets.embed import embed_data

from analysis_lib.report import charts
from analysis_lib.report.notebooks import tag_for_book
from analysis_lib.report.profile import BookProfile, write_profile

REPO = Path(__file__).resolve().parents[1]
BROWSER = REPO / "tests" / "browser"
GENERATED = "book/generated"
EXPLORER_PAGE = "attention_explorer"
CHROMIUM = Path("/usr/bin/chromium")  # the path check_book.mjs launches


def require_browser() -> None:
    """Skip, naming the fix, unless `make browser-deps` has installed chromium and playwright-core."""
    missing = [name for name, there in ((str(CHROMIUM), CHROMIUM.is_file()), ("node", shutil.which("node")),
                                        ("playwright-core", (BROWSER / "node_modules" / "playwright-core").is_dir()))
               if not there]
    if missing:
        pytest.skip(f"BROWSER TEST NOT RUN: {', '.join(missing)} missing; run `make browser-deps` "
                    "(`make test` does)")


def generated_pages(toc: Path) -> list[str]:
    """The `file:` entries of the table of contents that `make book` generates."""
    def files(node):
        if isinstance(node, dict):
            yield from ([node["file"]] if "file" in node else [])
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for item in node:
                yield from files(item)
    return [f for f in files(yaml.safe_load(toc.read_text())) if f.startswith(GENERATED + "/")]


def random_attention(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Explorer data in the documented schemas: 2 images on a 14x14 grid, 12 blocks, 12/8 heads."""
    g, blocks = 14, 12
    index = pd.MultiIndex.from_product([["cat.jpg", "dog.jpg"], range(blocks), range(12), range(g), range(g)],
                                       names=list(charts.VISION_COLUMNS[:5]))
    weights = rng.dirichlet(np.ones(g * g), size=len(index) // (g * g)).ravel()
    vision = pd.DataFrame({"attention": weights}, index=index).reset_index()
    rows = []
    for prompt, tokens in {"cat": ["[SOS]", "a", "photo", "of", "a", "cat", ".", "[EOS]"],
                           "dog": ["[SOS]", "X", "X", "X", "X", "dog", ".", "[EOS]"]}.items():
        for block in range(blocks):
            for head in range(8):
                for position, (token, a) in enumerate(zip(tokens, rng.dirichlet(np.ones(len(tokens))))):
                    rows.append((prompt, block, head, position, token, a))
    text = pd.DataFrame(rows, columns=charts.TEXT_COLUMNS)
    images = {name: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for name in ("cat.jpg", "dog.jpg")}
    return vision, text, images


def random_head_stats(rng: np.random.Generator) -> pd.DataFrame:
    rows = [(model, tower, block, head, rng.uniform(10, 100), rng.uniform(0.5, 5))
            for model in ("CLIP", "W/O Prompt", "W Prompt")
            for tower, heads in (("vision", 12), ("text", 8))
            for block in range(12) for head in range(heads)]
    return pd.DataFrame(rows, columns=charts.HEAD_STAT_COLUMNS)


def chart_output(chart: alt.TopLevelMixin) -> nbformat.NotebookNode:
    """The output a notebook cell gets after `charts.enable()`, through altair's renderer."""
    with charts.enable():
        bundle = chart._repr_mimebundle_()
    return nbformat.v4.new_output("display_data", data=bundle)


def explorer_notebook() -> nbformat.NotebookNode:
    """An executed-looking notebook as the book gets it: papermill's parameter cells, two explorers
    on one page, a scatter, a chart wider than the content column and a widget; tagged as
    `analysis_lib.report.notebooks` tags the executed analyses."""
    rng = np.random.default_rng(0)
    first, second = random_attention(rng), random_attention(rng)
    slider = IntSlider(value=3, min=0, max=10, description="threshold")
    widget = embed_data(views=[slider])
    code = nbformat.v4.new_code_cell("charts.attention_explorer(...)", execution_count=1, outputs=[
        chart_output(charts.attention_explorer(*first)),
        chart_output(charts.attention_explorer(*second)),
        chart_output(charts.distance_entropy_scatter(random_head_stats(rng))),
        chart_output(alt.Chart(pd.DataFrame({"x": range(60), "y": rng.uniform(size=60)})).mark_bar()
                     .encode(x="x:O", y="y:Q").properties(width=1600, height=80, usermeta={"book_chart": "wide"})),
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": widget["view_specs"][0], "text/plain": repr(slider)}),
    ])
    parameters = nbformat.v4.new_code_cell("n_images = 4", execution_count=1, metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("n_images = 2", execution_count=2,
                                         metadata={"tags": ["injected-parameters"]})
    code.execution_count = 3
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Attention explorer (test data)"),
                                         parameters, injected, code])
    tag_for_book(nb)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": widget["manager_state"]}
    return nb


def build_test_book(root: Path, generated: Path | None = None) -> Path:
    """Copy the book's sources to ``root`` with ``generated`` as its generated pages (by default
    stand-ins), build; returns the HTML folder."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("generated"))
    if generated is not None:
        shutil.copytree(generated, root / GENERATED)
    else:
        write_stand_ins(root)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jupyter_book), "build", str(root), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"jupyter-book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return root / "_build" / "html"


def write_stand_ins(root: Path) -> None:
    pages = generated_pages(root / "_toc.yml")
    assert f"{GENERATED}/{EXPLORER_PAGE}" in pages
    for page in pages:
        path = root / page
        path.parent.mkdir(parents=True, exist_ok=True)
        if page.endswith(EXPLORER_PAGE):
            nbformat.write(explorer_notebook(), path.with_suffix(".ipynb"))
        else:
            path.with_suffix(".md").write_text(f"# {path.name} (stand-in)\n\nA page of the browser test.\n")
    write_profile(BookProfile(profile="test", experiment_file="experiments/demo.yaml", model="tiny-clip",
                              pretrained="none", model_description="random weights", data="generated",
                              datasets=("DemoShapes",), seeds=(1,), device="cpu",
                              created="2025-01-01T00:00:00Z", commit=None),
                  root / GENERATED / "profile.json")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(directory: Path):
    """The folder over HTTP on 127.0.0.1, on a free port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def check_in_browser(html: Path, screenshots: Path | None = None) -> dict:
    with serve(html) as base:
        command = ["node", str(BROWSER / "check_book.mjs"), "--base", base]
        if screenshots:
            screenshots.mkdir(parents=True, exist_ok=True)
            command += ["--screenshots", str(screenshots)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=BROWSER)
    assert proc.stdout, f"check_book.mjs printed nothing:\n{proc.stderr}"
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], "\n".join(report["problems"]) or proc.stderr
    return report


@pytest.fixture(scope="module")
def browser():
    require_browser()


@pytest.mark.slow
def test_book_offline_charts_render_and_slider_moves(browser, tmp_path):
    html = build_test_book(tmp_path)
    report = check_in_browser(html, os.environ.get("BOOK_SCREENSHOTS") and Path(os.environ["BOOK_SCREENSHOTS"]))

    by_page = {p["page"]: p for p in report["pages"]}
    assert set(by_page) >= {"book/intro.html", "book/method.html", "book/reproducing.html",
                            f"{GENERATED}/{EXPLORER_PAGE}.html"}
    explorer = by_page[f"{GENERATED}/{EXPLORER_PAGE}.html"]
    kinds = sorted(c["kind"] for c in explorer["charts"] if c["kind"] != "vega-embed")
    assert kinds == ["attention_explorer", "attention_explorer", "distance_entropy", "wide"]
    wide = next(c for c in explorer["charts"] if c["kind"] == "wide")
    assert 0 < wide["width"] < 1600 and wide["overflow"] <= 1     # scaled down into the column
    assert explorer["code"] == {"inputs": 3, "shown": 0}         # every code cell collapsed, none gone
    assert [e["changed"] for e in explorer["explorers"]] == [True, True]
    assert explorer["widgets"] == 1
    assert by_page["book/method.html"]["math"] > 10
    intro = (html / "book" / "intro.html").read_text()
    assert "<strong>test</strong> profile" in intro and "not the paper" in intro
    year = datetime.datetime.now(datetime.timezone.utc).year
    assert re.search(rf"©\s*Copyright\s*{year}\b", intro), "the footer's copyright year is not this build's"


@pytest.mark.slow
@pytest.mark.skipif("BOOK_HTML" not in os.environ, reason="set BOOK_HTML=_build/html to check a built book")
def test_built_book_in_browser(browser):
    report = check_in_browser(Path(os.environ["BOOK_HTML"]).resolve())
    assert any(p["page"].endswith(f"{EXPLORER_PAGE}.html") for p in report["pages"])


def test_executed_notebooks_are_tagged_for_the_book():
    """Code folds away (the reader opens it), papermill's injected cell folds whole, text stays; twice is once."""
    cells = [nbformat.v4.new_markdown_cell("# A chapter"),
             nbformat.v4.new_code_cell("n_images = 4", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("n_images = 2", metadata={"tags": ["injected-parameters"]}),
             nbformat.v4.new_code_cell("table")]
    nb = nbformat.v4.new_notebook(cells=cells)
    tag_for_book(nb)
    tag_for_book(nb)
    assert [c.metadata.get("tags") for c in nb.cells] == [
        None, ["parameters", "hide-input"], ["injected-parameters", "hide-cell"], ["hide-input"]]
