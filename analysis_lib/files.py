"""Writing files so that a reader never sees half of one (a temporary file, then a rename), and
reading the JSON files the stages hand each other with one error that names a bad file."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class FileWriteError(OSError):
    """A file that could not be written (a full disk, no permission); the message names it."""


@contextlib.contextmanager
def replace_atomically(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; ``path`` is replaced by it only if the block succeeds.

    The file gets the permissions any new file gets here (0666 less the umask; ``mkstemp`` alone
    gives 0600, which no other user, such as a web server, can read). A write that fails for lack
    of space or permission is one FileWriteError naming ``path``; the temporary file is removed
    and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as err:
        _raise_write_error(path, err)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        os.unlink(tmp)
        _raise_write_error(path, err)


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EIO)


def _raise_write_error(path: Path, err: BaseException):
    """Raise ``err`` as a FileWriteError naming ``path`` when it is a failed write, else as it is."""
    if isinstance(err, FileWriteError) or not isinstance(err, OSError) or err.errno not in _WRITE_ERRNOS:
        raise err
    raise FileWriteError(err.errno, f"{path} could not be written ({err.strerror}); it is left as it was: "
                                    "free space on that disk (or fix its permissions) and run the command again") from err


def current_umask() -> int:
    """This process's umask (read from /proc where it can be, since setting it to read it back
    races with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
