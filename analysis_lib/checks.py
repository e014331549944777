"""Typed checks for settings read from files and notebook parameters, shared by every stage.

A wrong name, type or range becomes one ConfigError whose message names the setting, what was
given and what was expected, so a user fixes it without reading a traceback.
"""
from __future__ import annotations

import difflib
import typing
from pathlib import Path

class ConfigError(ValueError):
    """A configuration value with the wrong name, type or range; the message names the fix."""


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               type(None): "null", dict: "a mapping"}


def check_type(where: str, value, expected):
    """``value`` if it has type ``expected`` (int, float, str, bool or a union such as
    ``str | None``), with ints widened to float where a number is expected, so that ``lr: 1``
    and ``lr: 1.0`` hash alike; otherwise a ConfigError naming ``where``, the value and the type."""
    options = typing.get_args(expected) or (expected,)
    for option in options:
        is_bool = isinstance(value, bool)
        if option is type(None) and value is None:
            return value
        if option is bool and is_bool:
            return value
        if option is int and isinstance(value, int) and not is_bool:
            return value
        if option is float and isinstance(value, (int, float)) and not is_bool:
            return float(value)
        if option in (str, dict) and isinstance(value, option):
            return value
    expected_text = " or ".join(_TYPE_NAMES[option] for option in options)
    hint = ""
    if float in options and isinstance(value, str) and _parses_as_float(value):
        hint = f"; YAML reads {value} as text: write it with a dot before the exponent, e.g. 1.0e-5"
    raise ConfigError(f"{where} must be {expected_text}, got {value!r} ({type(value).__name__}){hint}")


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def unknown_name_error(where: str, what: str, name, valid) -> ConfigError:
    """One message for a misspelt name: what was given, the closest valid one, all valid ones."""
    valid = [str(v) for v in valid]
    close = difflib.get_close_matches(str(name), valid, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown {what} {name!r}{guess}; valid: {', '.join(valid)}")


def check_device(where: str, device: str) -> None:
    """``device`` is "auto" or a string torch reads as a device."""
    if device == "auto":
        return
    import torch  # here only: the sweep's modules check settings without loading torch
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{where} {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def check_folder(where: str, path) -> Path:
    """``path`` as a folder that exists or can be made; a ConfigError if it, or a folder above
    it, is a file."""
    path = Path(path).expanduser()
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == path else f"lies under {part}, which is a file"
                raise ConfigError(f"{where} {path} {what}; give a folder (or move the file away)")
            break
    return path
