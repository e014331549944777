"""The book's Sphinx extension (``sphinx: extra_extensions`` in ``_config.yml``).

- Reads ``book/generated/profile.json`` (`analysis_lib.report.profile`) and adds its fields to
  the MyST substitutions, so the first page says which model and data the numbers come from
  (``{{ profile_summary }}``, ``{{ profile_model }}``, ...). A missing or malformed file stops
  the build with the error that says how to make it.
- Sets the footer's copyright year to the year of the build (``_config.yml`` names none).
- Drops repeated inline scripts from each page. Under Sphinx 7.4 the inline settings that
  sphinx-thebe and sphinx-togglebutton add on a build event end up in the page twice, and the
  second ``const THEBE_JS_URL`` is a JavaScript error on every page.
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


def setup(app) -> dict:
    app.add_config_value("book_profile_path", PROFILE_PATH, "env")
    app.connect("config-inited", add_profile_substitutions)
    app.connect("config-inited", copyright_this_year)
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
