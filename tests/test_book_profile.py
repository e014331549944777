"""The book's profile file and the Sphinx glue that shows it on the first page."""
from __future__ import annotations

import html
import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from sphinx.errors import ConfigError

from analysis_lib.report.profile import (BookProfile, ProfileError, ProfileNotFoundError, read_profile,
                                       substitutions, write_profile)
from analysis_lib.report.sphinx import add_profile_substitutions, drop_repeated_scripts

DEMO = BookProfile(profile="demo", experiment_file="experiments/demo.yaml", model="demo-clip",
                   pretrained="analysis_lib/assets/demo-clip.safetensors",
                   model_description="a small CLIP pretrained by this project on generated images",
                   data="generated", datasets=("DemoShapes", "DemoTextures"), seeds=(1, 2), device="cpu",
                   created="2025-01-31T12:00:00Z", commit="abc1234")


def test_write_then_read_gives_the_same_profile(tmp_path):
    path = write_profile(DEMO, tmp_path / "generated" / "profile.json")
    assert json.loads(path.read_text())["schema_version"] == 1
    assert read_profile(path) == DEMO
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]  # no temporary file left


def test_missing_or_malformed_file_says_how_to_fix(tmp_path):
    with pytest.raises(ProfileNotFoundError, match="make book"):
        read_profile(tmp_path / "profile.json")
    path = write_profile(DEMO, tmp_path / "profile.json")
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "gpu": "none"}))
    with pytest.raises(ProfileError, match="unknown keys \\['gpu'\\]"):
        read_profile(path)
    path.write_text(json.dumps({**raw, "data": "synthetic"}))
    with pytest.raises(ProfileError, match="'generated', 'real'"):
        read_profile(path)
    path.write_text("{")
    with pytest.raises(ProfileError, match="not valid JSON"):
        read_profile(path)


def test_summary_warns_only_for_generated_data():
    assert "**generated data**" in DEMO.summary() and "not the paper's numbers" in DEMO.summary()
    real = replace(DEMO, profile="paper", model="ViT-B-16-quickgelu", pretrained="openai", data="real")
    assert "not the paper's numbers" not in real.summary() and "the real datasets" in real.summary()


def rendered(source: str) -> str:
    """MyST source as the HTML a page gets (markdown-it, as MyST parses it, raw HTML allowed)."""
    from markdown_it import MarkdownIt
    return MarkdownIt("commonmark", {"html": True}).render(source)


def test_substitutions_cover_every_field():
    subs = substitutions(DEMO)
    assert rendered(subs["profile_model"]) == "<p>demo-clip</p>\n" and rendered(subs["profile_seeds"]) == "<p>1, 2</p>\n"
    assert subs["profile_summary"] == DEMO.summary()


MARKUP = "<img src=x onerror=alert(7)>"


@pytest.mark.parametrize("field", ["profile", "experiment_file", "model", "pretrained", "model_description",
                                   "device", "created", "commit"])
def test_markup_in_any_field_reaches_the_page_as_text(field):
    """A file name or setting with HTML, MyST syntax, backticks or a newline is shown as written
    (a newline as a space), never run or interpreted."""
    for value in (MARKUP, f"`{MARKUP}`", "a``b`` {{ profile_model }}\n# heading",
                  "{eval}`1` $x$ [l](javascript:x) *b* \\"):
        profile = replace(DEMO, **{field: value})
        shown = html.escape(value.replace("\n", " "), quote=False).replace('"', "&quot;")
        assert rendered(substitutions(profile)[f"profile_{field}"]) == f"<p>{shown}</p>\n"
        page = rendered(profile.summary())
        assert "<img" not in page and "<a " not in page and "<h1" not in page and "<em>" not in page, page
        assert shown in page or f"<code>{shown.strip('`').strip()}</code>" in page, page


def test_sphinx_hook_merges_profile_into_existing_substitutions(tmp_path):
    write_profile(DEMO, tmp_path / "book" / "generated" / "profile.json")
    config = SimpleNamespace(book_profile_path="book/generated/profile.json", myst_substitutions={"other": "x"})
    add_profile_substitutions(SimpleNamespace(srcdir=str(tmp_path)), config)
    assert config.myst_substitutions["other"] == "x"
    assert config.myst_substitutions["profile_profile"] == "demo"
    config.book_profile_path = "elsewhere/profile.json"
    with pytest.raises(ConfigError, match="make book"):  # stops the build with Sphinx's own message
        add_profile_substitutions(SimpleNamespace(srcdir=str(tmp_path)), config)


def test_repeated_inline_scripts_are_dropped_first_kept():
    def script(filename, **attributes):
        return SimpleNamespace(filename=filename, attributes=attributes)
    scripts = [script("a.js"), script(None, body="const X = 1"), script("", body="const X = 1"),
               script("a.js"), script("b.js", defer="defer")]
    context = {"script_files": scripts}
    drop_repeated_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[1], scripts[4]]
