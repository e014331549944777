"""Book charts: the offline renderer and the data the explorer ships to the browser."""
from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis_lib.report import charts
from analysis_lib.report.charts import ChartDataError

G = 4


def vision_frame(images=("a", "b"), blocks=2, heads=3, seed=0) -> pd.DataFrame:
    """Rows in shuffled order; attention values with three significant digits, so they survive rounding."""
    index = pd.MultiIndex.from_product([list(images), range(blocks), range(heads), range(G), range(G)],
                                       names=list(charts.VISION_COLUMNS[:5]))
    df = index.to_frame(index=False)
    rng = np.random.default_rng(seed)
    df["attention"] = rng.integers(100, 999, len(df)) / 1000
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)


def text_frame(blocks=2, heads=2) -> pd.DataFrame:
    tokens = ["[SOS]", "X", "cat", ".", "[EOS]"]
    rows = [("cat", b, h, i, t, (i + 1) / 10) for b in range(blocks) for h in range(heads)
            for i, t in enumerate(tokens)]
    return pd.DataFrame(rows, columns=charts.TEXT_COLUMNS)


def images(names=("a", "b")) -> dict:
    return {n: np.zeros((8, 8, 3), np.uint8) for n in names}


def shipped_records(spec: dict, key: str) -> list[dict]:
    """The records of the inline dataset whose records carry ``key``."""
    for values in spec["datasets"].values():
        records = json.loads(values) if isinstance(values, str) else values
        if records and key in records[0]:
            return records
    raise AssertionError(f"no dataset with {key!r}")


def test_explorer_ships_each_grid_in_row_major_order():
    df = vision_frame()
    spec = charts.attention_explorer(df, text_frame(), images()).to_dict()
    records = shipped_records(spec, "head")
    vision = [r for r in records if "image" in r]
    assert len(vision) == 2 * 2 * 3
    for record in vision:
        rows = df[(df["image"] == record["image"]) & (df["block"] == record["block"]) & (df["head"] == record["head"])]
        expected = rows.sort_values(["patch_row", "patch_col"])["attention"].tolist()
        assert record["attention"] == expected


def test_explorer_text_keeps_tokens_with_their_positions():
    df = text_frame().sample(frac=1, random_state=1)
    spec = charts.attention_explorer(vision_frame(), df, images()).to_dict()
    record = next(r for r in shipped_records(spec, "token") if r["block"] == 1 and r["head"] == 0)
    assert record["token"] == ["[SOS]", "X", "cat", ".", "[EOS]"]
    assert record["position"] == [0, 1, 2, 3, 4]
    assert record["attention"] == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_explorer_sliders_span_the_data():
    spec = charts.attention_explorer(vision_frame(blocks=3, heads=5), text_frame(heads=2), images()).to_dict()
    binds = {p["name"]: p["bind"] for p in spec["params"]}
    assert (binds["block"]["min"], binds["block"]["max"]) == (0, 2)
    assert binds["vision_head"]["max"] == 4 and binds["text_head"]["max"] == 1
    assert binds["image"]["options"] == ["a", "b"]
    assert spec["usermeta"] == {"book_chart": "attention_explorer"}


def test_explorer_rejects_bad_input():
    with pytest.raises(ChartDataError, match="patch_col"):
        charts.attention_explorer(vision_frame().drop(columns="patch_col"), text_frame(), images())
    with pytest.raises(ChartDataError, match="exactly once"):
        charts.attention_explorer(vision_frame().iloc[1:], text_frame(), images())
    with pytest.raises(ChartDataError, match=r"\['b'\]"):
        charts.attention_explorer(vision_frame(), text_frame(), images(("a",)))
    with pytest.raises(ChartDataError, match="duplicate"):
        charts.attention_explorer(vision_frame(), pd.concat([text_frame()] * 2), images())
    with pytest.raises(ChartDataError, match="NaN"):
        charts.attention_explorer(vision_frame(), text_frame().assign(attention=np.nan), images())


def head_stats() -> pd.DataFrame:
    rows = [(m, "vision", b, h, 10.0 * b + h, 1.0 + h) for m in ("CLIP", "W/O Prompt", "W Prompt")
            for b in range(2) for h in range(3)]
    return pd.DataFrame(rows, columns=charts.HEAD_STAT_COLUMNS)


def test_scatter_one_dot_per_head_with_legend_selection():
    spec = charts.distance_entropy_scatter(head_stats()).to_dict()
    data = next(iter(spec["datasets"].values()))
    assert len(data) == 3 * 2 * 3
    assert spec["params"][0]["bind"] == "legend"
    assert spec["spec"]["encoding"]["color"]["scale"]["domain"] == ["CLIP", "W/O Prompt", "W Prompt"]
    with pytest.raises(ChartDataError, match="more than one row"):
        charts.distance_entropy_scatter(pd.concat([head_stats()] * 2))


def test_chart_html_escapes_the_spec_and_tags_the_kind():
    spec = {"usermeta": {"book_chart": "distance_entropy"}, "title": "</script><b>"}
    first, second = charts.chart_html(spec), charts.chart_html(spec)
    assert first.count("</script>") == 1 and first.rstrip().endswith("</script>")
    embedded = first.split("vegaEmbed(el, ")[1].rsplit(", {", 1)[0]
    assert json.loads(embedded) == spec  # the escaped JSON still reads back as the spec
    assert 'data-book-chart="distance_entropy"' in first
    div_id = first.split('id="')[1].split('"')[0]
    assert div_id not in second  # two charts on a page get their own divs
    assert f'document.getElementById("{div_id}")' in first and "vegaEmbed(el," in first


def test_renderer_is_used_inside_enable_and_restored_after():
    before = alt.renderers.active
    with charts.enable():
        bundle = charts.distance_entropy_scatter(head_stats())._repr_mimebundle_()
    assert alt.renderers.active == before
    assert "vegaEmbed(" in bundle["text/html"] and 'data-book-chart="distance_entropy"' in bundle["text/html"]


def test_image_grid_inlines_each_image_with_an_escaped_caption():
    images = [(Image.new("RGB", (16, 16), "red"), "a <b> & c"), (Image.new("RGB", (16, 16), "blue"), "d")]
    page = charts.image_grid(images, size=48).data
    assert page.count("<figure") == 2 and page.count("data:image/jpeg;base64,") == 2
    assert "a &lt;b&gt; &amp; c" in page and "<b>" not in page
