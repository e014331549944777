"""The book in a real browser: offline, every chart drawn, the explorer's slider working.

The test builds the book from a temporary copy of its configuration and pages, with the
generated chapters replaced by stand-ins (executed notebooks: the attention explorer over two
datasets of random data beside a scatter and a chart wider than the page, tagged as the book's
chapters are; a widget; one-line pages for the others), serves the site on 127.0.0.1 and drives
Debian's chromium through playwright-core (tests/browser/check_book.mjs). `make browser-deps`
installs both; without them the tests skip, saying so.

Every page's first load is weighed (the files it transferred, raw and gzip-compressed as a static
host serves them) against PAGE_BUDGET; the table is printed (`pytest -s`).

Set BOOK_HTML=_build/html to run the same browser check on a book built by `make book`, and
BOOK_SCREENSHOT=book/_static/attention-explorer.png to take the README's picture of its explorer.
"""
from __future__ import annotations

import base64
import datetime
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from functools import lru_cache, partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import altair as alt
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from ipywidgets import IntSlider
from PIL import Image
from ipywidgets.embed import dependency_state, embed_data

from analysis_lib.report import charts, explorer_page
from analysis_lib.report.notebooks import tag_for_book
from analysis_lib.report.profile import BookProfile, write_profile

REPO = Path(__file__).resolve().parents[1]
BROWSER = REPO / "tests" / "browser"
GENERATED = "book/generated"
EXPLORER_PAGE = "attention_explorer"
CHROMIUM = Path("/usr/bin/chromium")  # the path check_book.mjs launches
WIDGET_PAGE = "results"  # the stand-in page that holds a widget


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


EXPLORER_DATASETS = {"SynthPets": (4, 14), "SynthSat": (2, 8)}  # name: (blocks, grid), different on purpose
EXPLORER_SEEDS = (1, 2)


def write_explorer_data(static_dir: Path) -> None:
    """The explorer's data files for two stand-in datasets and two seeds, packed from random tables."""
    for n, (name, (blocks, grid)) in enumerate(EXPLORER_DATASETS.items()):
        for seed in EXPLORER_SEEDS:
            tables = explorer_page.synthetic_tables(8, blocks, 4, grid, blocks, 2, 9, 64, seed=10 * n + seed)
            explorer_page.write_dataset(static_dir, name, tables, seed)


def random_head_stats(rng: np.random.Generator) -> pd.DataFrame:
    rows = [(model, tower, block, head, rng.uniform(10, 100), rng.uniform(0.5, 5))
            for model in ("CLIP", "W/O", "W")
            for tower, heads in (("vision", 12), ("text", 8))
            for block in range(12) for head in range(heads)]
    return pd.DataFrame(rows, columns=charts.HEAD_STAT_COLUMNS)


def chart_output(chart: alt.TopLevelMixin) -> nbformat.NotebookNode:
    """The output a notebook cell gets after `charts.enable()`, through altair's renderer."""
    with charts.enable():
        bundle = chart._repr_mimebundle_()
    return nbformat.v4.new_output("display_data", data=bundle)


def notebook(title: str, outputs: list, widget_state: dict | None = None) -> nbformat.NotebookNode:
    """An executed-looking notebook: a title and one code cell with these outputs."""
    code = nbformat.v4.new_code_cell("...", execution_count=1, outputs=outputs)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}"), code])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if widget_state:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": widget_state}
    return nb


def explorer_notebook() -> nbformat.NotebookNode:
    """The explorer over two stand-in datasets, a scatter and a chart wider than the content column,
    after papermill's parameter cells, tagged as `analysis_lib.report.notebooks` tags the chapters."""
    page = explorer_page.explorer(list(EXPLORER_DATASETS), EXPLORER_SEEDS)
    rng = np.random.default_rng(0)
    code = nbformat.v4.new_code_cell("explorer_page.explorer(...)", execution_count=3, outputs=[
        nbformat.v4.new_output("display_data", data={"text/html": page.data, "text/plain": "<explorer>"}),
        chart_output(charts.distance_entropy_scatter(random_head_stats(rng))),
        chart_output(alt.Chart(pd.DataFrame({"x": range(60), "y": rng.uniform(size=60)})).mark_bar()
                     .encode(x="x:O", y="y:Q").properties(width=1600, height=80, usermeta={"book_chart": "wide"}))])
    parameters = nbformat.v4.new_code_cell("n_images = 4", execution_count=1, metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("n_images = 2", execution_count=2,
                                         metadata={"tags": ["injected-parameters"]})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Attention explorer (test data)"),
                                         parameters, injected, code])
    tag_for_book(nb)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def widget_notebook() -> nbformat.NotebookNode:
    """A widget, and a table with a column that holds one value in every row (a planted fault)."""
    slider = IntSlider(value=3, min=0, max=10, description="threshold")
    widget = embed_data(views=[slider], state=dependency_state(slider))   # not every widget this process made
    constant = pd.DataFrame({"dataset": ["A", "B"], "seeds": [3, 3]})
    return notebook("A widget (test data)", [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": widget["view_specs"][0], "text/plain": repr(slider)}),
        nbformat.v4.new_output("display_data", data={"text/html": constant.to_html(), "text/plain": "table"})],
        widget["manager_state"])


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
            write_explorer_data(root / GENERATED / "_static")
        elif page.endswith(WIDGET_PAGE):
            nbformat.write(widget_notebook(), path.with_suffix(".ipynb"))
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


def check_in_browser(html: Path, screenshots: Path | None = None, planted: tuple[str, ...] = (),
                     shot: Path | None = None) -> dict:
    """check_book.mjs's report on the site at ``html``; every problem it finds fails the test,
    except those matching a ``planted`` pattern, each of which must be found (a test page that
    plants a fault proves the check sees it)."""
    with serve(html) as base:
        command = ["node", str(BROWSER / "check_book.mjs"), "--base", base, "--files", str(html)]
        if shot:
            command += ["--shot", f"{GENERATED}/{EXPLORER_PAGE}.html:{shot}"]
        if screenshots:
            screenshots.mkdir(parents=True, exist_ok=True)
            command += ["--screenshots", str(screenshots)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=BROWSER)
    assert proc.stdout, f"check_book.mjs printed nothing:\n{proc.stderr}"
    report = json.loads(proc.stdout)
    unexpected = [p for p in report["problems"] if not any(re.search(pattern, p) for pattern in planted)]
    assert not unexpected and (report["ok"] or planted), "\n".join(unexpected) or proc.stderr
    missed = [pattern for pattern in planted if not any(re.search(pattern, p) for p in report["problems"])]
    assert not missed, f"check_book.mjs did not report the planted faults {missed}"
    assert report["search"]["listed"] and report["search"]["note"], report["search"]
    return report


# A page's first visit transfers its own files and the theme's, and, only where the page uses
# them (asserted in the tests below), the book's vendored libraries: vega + vega-lite + vega-embed
# (0.83 MB, 0.27 MB gzip) where a chart is drawn, MathJax (1.2 MB with its fonts) where there is math,
# the widget manager (3.7 MB) where a widget is saved; and the attention explorer's data of the
# dataset shown (`check_explorer` weighs it). The budget is for the rest, set from the demo book's
# measured pages (book/performance.md): 0.94-1.07 MB (0.32-0.38 MB gzip) each.
PAGE_BUDGET = {"raw": 1.2e6, "gzip": 0.45e6}
LIBRARIES = ("vega", "vega-lite", "vega-embed", "mathjax", "requirejs", "html-manager")


@lru_cache(maxsize=None)
def _gzip_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes()))


def _library(url: str) -> str | None:
    """Which vendored library (or the explorer's per-dataset data, weighed by `check_explorer`) a file is of."""
    if "/_static/explorer/" in url:
        return "explorer data"
    parts = url.split("/_static/vendor/")
    return parts[1].split("/")[0] if len(parts) == 2 and parts[1].split("/")[0] in LIBRARIES else None


def page_weights(report: dict, html: Path) -> dict[str, dict]:
    """Every page's first load: files, bytes as files (served uncompressed here) and gzip-compressed,
    in all and without what only some pages load (``own``), and which of those it loaded."""
    weights = {}
    for page in report["pages"]:
        urls = {unquote(r["url"]) for r in page["firstLoad"]}
        paths = {url: html / url.lstrip("/") for url in urls}
        own = [path for url, path in paths.items() if _library(url) is None]
        weights[page["page"]] = {
            "files": len(paths), "raw": sum(p.stat().st_size for p in paths.values()),
            "gzip": sum(map(_gzip_size, paths.values())), "own_raw": sum(p.stat().st_size for p in own),
            "own_gzip": sum(map(_gzip_size, own)), "libraries": sorted({_library(u) for u in urls} - {None})}
    return weights


def check_page_weights(report: dict, html: Path) -> dict[str, dict]:
    """Print every page's weight (a markdown table); fail on a page whose own files pass PAGE_BUDGET."""
    weights = page_weights(report, html)
    rows = [f"| `{page}` | {w['files']} | {w['raw'] / 1e6:.2f} | {w['gzip'] / 1e6:.2f} | "
            f"{w['own_raw'] / 1e6:.2f} | {w['own_gzip'] / 1e6:.2f} | {', '.join(w['libraries']) or '—'} |"
            for page, w in sorted(weights.items())]
    print("\n".join(["| page | files | MB | MB gzip | own files: MB | MB gzip | loaded only where used |",
                     "| --- | ---: | ---: | ---: | ---: | ---: | --- |", *rows]))
    over = [f"{page}: {w['own_raw'] / 1e6:.2f} MB ({w['own_gzip'] / 1e6:.2f} MB gzip)" for page, w in weights.items()
            if w["own_raw"] > PAGE_BUDGET["raw"] or w["own_gzip"] > PAGE_BUDGET["gzip"]]
    assert not over, (f"pages over the budget of {PAGE_BUDGET['raw'] / 1e6} MB ({PAGE_BUDGET['gzip'] / 1e6} MB "
                      "gzip) besides the libraries and data it loads where used: " + "; ".join(over))
    return weights


def explorer_weight(page: dict, html: Path) -> dict:
    """The explorer page's first load in bytes, as served (raw) and gzip-compressed as a static host
    serves it, and the same with the first dataset's file replaced by a ViT-B/16 one of 8 images."""
    files = {r["url"] for r in page["firstLoad"]}
    first = next(f for f in files if "/_static/explorer/" in f)
    raw = sum((html / f.lstrip("/")).stat().st_size for f in files)
    gz = sum(_gzip_size(html / f.lstrip("/")) for f in files)
    data = (html / first.lstrip("/")).read_bytes()
    vitb16 = explorer_page.synthetic_tables(8, 12, 12, 14, 12, 8, 20, 224)
    vit_data = explorer_page.dataset_script(explorer_page.pack_dataset("ViT-B/16", vitb16)).encode()
    return {"files": len(files), "raw": raw, "gzip": gz, "data_raw": len(data), "data_gzip": len(gzip.compress(data)),
            "vitb16_raw": raw - len(data) + len(vit_data),
            "vitb16_gzip": gz - len(gzip.compress(data)) + len(gzip.compress(vit_data))}


def packed_data(html: Path, key: str) -> dict:
    """The content of the data file the page loaded for ``key`` ("<dataset> seed <k>")."""
    name, seed = key.rsplit(" seed ", 1)
    text = (html / "_static" / explorer_page.data_file(name, int(seed))).read_text()
    return json.loads(text[text.index("] = ") + 4:].rstrip(";\n"))


def _decoded(packed: dict, key: str, shape) -> np.ndarray:
    dtype = np.uint8 if key == "codes" else np.float32
    return np.frombuffer(base64.b64decode(packed[key]), dtype=dtype).reshape(shape)


def drawn_rows(packed: dict, image: int, block: int, head: int, mode: str) -> dict[str, np.ndarray]:
    """The [CLS] rows the page should draw in this state, dequantised from the data file, and W − CLIP."""
    panels, grid, I, L, H = packed["panels"], packed["grid"], len(packed["images"]), packed["blocks"], packed["heads"]
    if mode == "rollout":
        codes = _decoded(packed["rollout"], "codes", (len(panels), I, L, grid * grid))
        scale = _decoded(packed["rollout"], "scale", (len(panels), I, L))
        rows = {p: explorer_page.dequantise_rows(codes[n, image, block], scale[n, image, block]) for n, p in enumerate(panels)}
    else:
        codes = _decoded(packed["cls"], "codes", (2, I, L, H, grid * grid))
        scale = _decoded(packed["cls"], "scale", (len(panels), I, L, H))
        per_head = {p: explorer_page.dequantise_rows(codes[packed["code_panel"][n], image, block], scale[n, image, block])
                    for n, p in enumerate(panels)}
        rows = {p: r.mean(0) if head < 0 else r[head] for p, r in per_head.items()}
    return rows | {"W − CLIP": rows["W"] - rows["CLIP"]}


def check_probe(probe: dict, html: Path) -> None:
    """The colour bars span the drawn panels' range, and hovering shows the data file's values."""
    state = probe["state"]
    packed = packed_data(html, state["key"])
    image, block, head = int(state["image"]), int(state["block"]), int(state["head"])
    rows = drawn_rows(packed, image, block, head, state["mode"])
    top = max(float(rows[p].max()) for p in packed["panels"])
    assert probe["bars"]["attention"] == pytest.approx([0, top], rel=1e-5)          # the colour bar = the panels' maximum
    spread = float(np.abs(rows["W − CLIP"]).max())
    assert probe["bars"]["difference"] == pytest.approx([-spread, spread], rel=1e-5)
    grid = packed["grid"]
    for hover, (fx, fy) in zip(probe["hovers"], [(0.02, 0.02), (0.7, 0.4)]):
        assert hover["patch"] == int(fy * grid) * grid + int(fx * grid)
        shown = dict(re.findall(r"(CLIP|W/O|W|W − CLIP) (-?[\d.e+-]+)(?:,|$)", hover["text"].split(": ", 1)[1]))
        assert set(shown) == set(rows), hover["text"]
        for panel, value in shown.items():                                      # 4 significant digits
            assert float(value) == pytest.approx(float(rows[panel][hover["patch"]]), rel=1e-3, abs=1e-9), panel
    classname = packed["images"][image]["classname"]
    text_block, text_head = min(block, packed["text_blocks"] - 1), int(state["textHead"])
    for eos in probe["eos"]:
        t = packed["text"][classname][eos["model"]]
        shape = (packed["text_blocks"], packed["text_heads"], len(t["tokens"]))
        values = explorer_page.dequantise_rows(_decoded(t["attention"], "codes", shape), _decoded(t["attention"], "scale", shape[:2]))
        expected = values[text_block].mean(0) if text_head < 0 else values[text_block, text_head]
        assert float(eos["text"].rsplit(": ", 1)[1]) == pytest.approx(float(expected[eos["index"]]), rel=1e-3, abs=1e-9)


def check_explorer(page: dict, html: Path) -> dict:
    """Every control of the explorer changed the view, each (dataset, seed) loaded only when picked,
    what the reader reads off the page is the data file's, and the page fits a phone."""
    [explorer] = page["explorers"]
    controls = ["block", "overview", "head", "text_head", "image", "mean_heads", "rollout", "raw", "overview_panel",
                "seed", "dataset"]
    assert explorer["panelsDiffer"] and {c: explorer[c] for c in controls} == dict.fromkeys(controls, True)
    check_probe(explorer["probe"], html)
    first = [r["url"] for r in page["firstLoad"] if "/_static/explorer/" in r["url"]]
    later = [r["url"] for r in page["laterLoads"] if "/_static/explorer/" in r["url"]]
    assert len(first) == 1 and len(later) == 2 and first[0] not in later, (first, later)
    weight = explorer_weight(page, html)
    print(f"explorer page, first load: {weight['files']} files, {weight['raw'] / 1e6:.2f} MB "
          f"({weight['gzip'] / 1e6:.2f} MB gzip), of which the first dataset {weight['data_raw'] / 1e3:.0f} kB "
          f"({weight['data_gzip'] / 1e3:.0f} kB gzip); with ViT-B/16 data (8 images): "
          f"{weight['vitb16_raw'] / 1e6:.2f} MB ({weight['vitb16_gzip'] / 1e6:.2f} MB gzip)")
    assert weight["vitb16_gzip"] < 2e6
    return weight


@pytest.fixture(scope="module")
def browser():
    require_browser()


@pytest.mark.slow
def test_book_offline_charts_render_and_explorer_responds(browser, tmp_path):
    html = build_test_book(tmp_path)
    # Planted: the chart wider than the column shrinks its text below 10 px on a phone; the widget
    # page's table has a column with one value in every row.
    report = check_in_browser(html, os.environ.get("BOOK_SCREENSHOTS") and Path(os.environ["BOOK_SCREENSHOTS"]),
                              planted=(rf"{EXPLORER_PAGE}\.html: chart text drawn at [0-9.]+ px on a 390 px screen",
                                       r"results\.html: a table column holds one value in every row: seeds = \"3\""))

    by_page = {p["page"]: p for p in report["pages"]}
    assert set(by_page) >= {"book/intro.html", "book/method.html", "book/reproducing.html",
                            f"{GENERATED}/{EXPLORER_PAGE}.html"}
    explorer = by_page[f"{GENERATED}/{EXPLORER_PAGE}.html"]
    kinds = sorted(c["kind"] for c in explorer["charts"] if c["kind"] != "vega-embed")
    assert kinds == ["attention_explorer", "distance_entropy", "wide"]
    wide = next(c for c in explorer["charts"] if c["kind"] == "wide")
    assert 0 < wide["width"] < 1600 and wide["overflow"] <= 1     # scaled down into the column
    assert explorer["code"] == {"inputs": 0, "shown": 0}         # no code on the page
    check_explorer(explorer, html)
    weights = check_page_weights(report, html)
    libraries = {page: w["libraries"] for page, w in weights.items()}
    assert libraries["book/intro.html"] == [] and libraries["book/method.html"] == ["mathjax"]
    assert libraries[f"{GENERATED}/{EXPLORER_PAGE}.html"] == ["explorer data", "vega", "vega-embed", "vega-lite"]
    assert libraries[f"{GENERATED}/{WIDGET_PAGE}.html"] == ["html-manager", "requirejs"]
    assert not any("fontawesome.js" in r["url"] for p in report["pages"] for r in p["firstLoad"])
    assert by_page[f"{GENERATED}/{WIDGET_PAGE}.html"]["widgets"] == 1
    assert by_page["book/method.html"]["math"] > 10
    intro = (html / "book" / "intro.html").read_text()
    assert "<strong>test</strong> profile" in intro and "not the paper" in intro
    year = datetime.datetime.now(datetime.timezone.utc).year
    assert re.search(rf"©\s*Copyright\s*{year}\b", intro), "the footer's copyright year is not this build's"


@pytest.mark.slow
@pytest.mark.skipif("BOOK_HTML" not in os.environ, reason="set BOOK_HTML=_build/html to check a built book")
def test_built_book_in_browser(browser):
    html = Path(os.environ["BOOK_HTML"]).resolve()
    shot = os.environ.get("BOOK_SCREENSHOT") and Path(os.environ["BOOK_SCREENSHOT"]).resolve()
    report = check_in_browser(html, shot=shot)
    [explorer] = [p for p in report["pages"] if p["page"].endswith(f"{EXPLORER_PAGE}.html")]
    check_explorer(explorer, html)
    check_page_weights(report, html)
    if shot:  # the README's picture: 256 colours are plenty for a page of flat colours and one image
        Image.open(shot).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(shot, optimize=True)


def test_executed_notebooks_are_tagged_for_the_book():
    """Code leaves the page (a cell without output whole), text stays; twice is once."""
    shown = nbformat.v4.new_code_cell("page.show('table')", outputs=[nbformat.v4.new_output("stream", text="x")])
    cells = [nbformat.v4.new_markdown_cell("# A chapter"),
             nbformat.v4.new_code_cell("n_images = 4", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("n_images = 2", metadata={"tags": ["injected-parameters"]}), shown]
    nb = nbformat.v4.new_notebook(cells=cells)
    tag_for_book(nb)
    tag_for_book(nb)
    assert [c.metadata.get("tags") for c in nb.cells] == [
        None, ["parameters", "remove-cell"], ["injected-parameters", "remove-cell"], ["remove-input"]]
