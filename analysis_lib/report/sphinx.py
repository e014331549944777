"""The book's Sphinx extension (``sphinx: extra_extensions`` in ``_config.yml``).

- Reads ``book/generated/profile.json`` (`analysis_lib.report.profile`) and adds its fields to
  the MyST substitutions, so the first page says which model and data the numbers come from
  (``{{ profile_summary }}``, ``{{ profile_model }}``, ...). A missing or malformed file stops
  the build with the error that says how to make it.
- Sets the footer's copyright year to the year of the build (``_config.yml`` names none).
- Drops repeated inline scripts from each page. Under Sphinx 7.4 the inline settings that
  sphinx-thebe and sphinx-togglebutton add on a build event end up in the page twice, and the
  second ``const THEBE_JS_URL`` is a JavaScript error on every page.
- Gives each page only the heavy scripts it uses: vega, vega-lite and vega-embed (0.8 MB) where a
  chart is drawn, MathJax (1.1 MB) where there is math. Both are configured for every page
  (``html_js_files``; Jupyter Book asks Sphinx for MathJax on every page), which is what a page
  with a chart or a formula needs; the others shed them here.
- On the search page, says how to serve the book when it is opened from disk (``file://``), where
  the browser lets search list the matching pages but not show their excerpts.
"""
from __future__ import annotations

import datetime
from pathlib import Path

from sphinx.errors import ConfigError

from .profile import PROFILE_PATH, ProfileError, ProfileNotFoundError, read_profile, substitutions


def add_profile_substitutions(app, config) -> None:
    """`config-inited`: merge the profile's substitutions into ``myst_substitutions``."""
    try:
        profile = read_profile(Path(app.srcdir) / config.book_profile_path)
    except (ProfileError, ProfileNotFoundError) as err:
        raise ConfigError(str(err)) from err  # Sphinx reports its own errors without a traceback
    config.myst_substitutions = {**config.myst_substitutions, **substitutions(profile)}


def copyright_this_year(app, config) -> None:
    """`config-inited`: "© Copyright <year of the build>", not a year written into a file once."""
    config.copyright = str(datetime.datetime.now(datetime.timezone.utc).year)


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """`html-page-context`: keep the first of scripts with the same file (or body) and attributes."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (str(script.filename or ""), tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


CHART_SCRIPTS = ("vendor/vega/", "vendor/vega-lite/", "vendor/vega-embed/")


def load_only_what_the_page_uses(app, pagename, templatename, context, doctree) -> None:
    """`html-page-context`, after the others: drop the chart scripts from a page without a chart
    (``charts.render`` writes ``vegaEmbed(``) and MathJax from a page without math (``class="math``)."""
    body = context.get("body", "")
    charts, math = "vegaEmbed(" in body, 'class="math' in body

    def used(script) -> bool:
        name = str(script.filename or "")
        if any(part in name for part in CHART_SCRIPTS):
            return charts
        if name.endswith(str(app.config.mathjax_path)) or str(script.attributes.get("body", "")).startswith("window.MathJax"):
            return math
        return True
    context["script_files"] = [script for script in context.get("script_files", []) if used(script)]


SEARCH_NOTE = "search-from-disk.js"  # book/_static/


def add_search_note(app, pagename, templatename, context, doctree) -> None:
    """`html-page-context`, before the others: the search page's note for readers offline."""
    if pagename == "search":
        app.add_js_file(SEARCH_NOTE)


def setup(app) -> dict:
    app.add_config_value("book_profile_path", PROFILE_PATH, "env")
    app.connect("config-inited", add_profile_substitutions)
    app.connect("config-inited", copyright_this_year)
    app.connect("html-page-context", add_search_note, priority=400)
    app.connect("html-page-context", drop_repeated_scripts)
    app.connect("html-page-context", load_only_what_the_page_uses, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
