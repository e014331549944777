"""Writing files so that a reader never sees half of one (a temporary file, then a rename), and
reading the JSON files the stages hand each other with one error that names a bad file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replace_atomically(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; ``path`` is replaced by it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with replace_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


class FileContentError(ValueError):
    """A file that is missing or does not hold what it should; the message names it and the fix."""


def read_json(path: str | Path, fix: str):
    """The JSON content of ``path``; a missing, unreadable, non-UTF-8 or broken file is one
    FileContentError that names the file, the problem and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problem = "does not exist"
    except IsADirectoryError:
        problem = "is a folder, not a file"
    except UnicodeDecodeError as err:
        problem = f"is not UTF-8 text (byte {err.start})"
    except json.JSONDecodeError as err:
        problem = f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
    except OSError as err:
        problem = f"cannot be read ({err.strerror})"
    raise FileContentError(f"{path} {problem}; {fix}")
