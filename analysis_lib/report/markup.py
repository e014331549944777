"""Text from file names, settings or data, made inert for a MyST page.

MyST passes raw HTML through to the published page, and its syntax (roles, substitutions,
links) acts on punctuation, so anything a user wrote must be escaped before it joins page
source: an experiment file named ``<img src=x onerror=alert(1)>.yaml`` must read as that name,
not run. CommonMark defines a backslash before any ASCII punctuation character as that
character, literally; inside a code span nothing is interpreted, and the span is closed only by
a run of backticks as long as its fence.
"""
from __future__ import annotations

import re
import string

_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")  # a newline would end a line of the page's source
_BACKTICKS = re.compile(r"`+")


def text(value: object) -> str:
    """``value`` as literal MyST text: every ASCII punctuation character backslash-escaped,
    control characters (newlines included) shown as one space."""
    return _PUNCTUATION.sub(r"\\\1", _CONTROL.sub(" ", str(value)))


def code(value: object) -> str:
    """``value`` as a MyST code span, whatever backticks it holds."""
    value = _CONTROL.sub(" ", str(value))
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(value)), default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"
