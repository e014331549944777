"""Book charts: the offline renderer, the scatter and the image grid."""
from __future__ import annotations

import json

import altair as alt
import pandas as pd
import pytest
from PIL import Image

from analysis_lib.report import charts
from analysis_lib.report.charts import ChartDataError

def head_stats() -> pd.DataFrame:
    rows = [(m, "vision", b, h, 10.0 * b + h, 1.0 + h) for m in ("CLIP", "W/O", "W")
            for b in range(2) for h in range(3)]
    return pd.DataFrame(rows, columns=charts.HEAD_STAT_COLUMNS)


def test_scatter_one_dot_per_head_with_legend_selection():
    spec = charts.distance_entropy_scatter(head_stats()).to_dict()
    data = next(iter(spec["datasets"].values()))
    assert len(data) == 3 * 2 * 3
    assert spec["params"][0]["bind"] == "legend"
    assert spec["spec"]["encoding"]["color"]["scale"]["domain"] == ["CLIP", "W/O", "W"]
    with pytest.raises(ChartDataError, match="more than one row"):
        charts.distance_entropy_scatter(pd.concat([head_stats()] * 2))


def test_chart_html_escapes_the_spec_and_tags_the_kind():
    spec = {"usermeta": {"book_chart": "distance_entropy"}, "title": "</script><b>"}
    first, second = charts.chart_html(spec), charts.chart_html(spec)
    assert first.count("</script>") == 1 and first.rstrip().endswith("</script>")
    embedded = first.split("vegaEmbed(el, ")[1].rsplit(", {", 1)[0]
    back = json.loads(embedded)  # the escaped JSON still reads back as the spec, with the book's type sizes
    assert back == {**spec, "config": charts.BOOK_CONFIG}
    own = json.loads(charts.chart_html({"config": {"axis": {"labelFontSize": 20}}}).split("vegaEmbed(el, ")[1]
                     .rsplit(", {", 1)[0])
    assert own["config"]["axis"] == {"labelFontSize": 20, "titleFontSize": charts.FONT_PX}  # a chart's own size wins
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


def test_dataset_picker_filters_to_the_picked_dataset():
    """The per-dataset view: a drop-down of the datasets, first one shown, the data filtered by it."""
    data = pd.DataFrame({"dataset": ["A", "A", "B"], "x": [1, 2, 3]})
    spec = charts.dataset_picker(alt.Chart(data).mark_point().encode(x="x:Q"), ["A", "B"]).to_dict()
    [param] = spec["params"]
    assert param["bind"] == {"input": "select", "options": ["A", "B"], "name": "dataset "}
    assert param["value"] == "A"
    assert spec["transform"] == [{"filter": f"(datum.dataset === {param['name']})"}]
