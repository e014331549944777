"""Decoding the listed images: the one place a file becomes an RGB image, so that a bad file is
always one error naming the file and its dataset, during a run or in `data check --deep`."""
from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from tqdm import tqdm

from .errors import BadImageError

# What PIL raises for a file it cannot read whole: OSError (truncated, unidentified, unreadable),
# ValueError / SyntaxError (broken headers), DecompressionBombError (absurd sizes).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def bad_image(dataset: str | None, path: str, reason: str) -> BadImageError:
    where = f"{dataset}: " if dataset else ""
    return BadImageError(f"{where}cannot decode image {path} ({reason}); replace or remove the file "
                         "(python -m analysis_lib.data check --root DATA --deep lists every such file)")


def open_rgb(path: str, dataset: str | None = None) -> Image.Image:
    """The image at ``path``, fully decoded, as RGB; a BadImageError naming it otherwise."""
    try:
        return _decode(path)
    except DECODE_ERRORS as err:
        raise bad_image(dataset, path, _reason(path, err)) from None


def _decode(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _reason(path: str, err: Exception) -> str:
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file"
    return str(err) or type(err).__name__


def _problem(path: str) -> str | None:
    try:
        _decode(path)
    except DECODE_ERRORS as err:
        return _reason(path, err)
    return None


def find_bad_images(paths: Iterable[str], desc: str = "decoding",
                    workers: int | None = None) -> list[tuple[str, str]]:
    """(path, reason) for every file that does not decode, in the given order. Decoding runs in
    threads (PIL releases the GIL while it decodes), one per CPU unless told otherwise."""
    paths = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        problems = list(tqdm(pool.map(_problem, paths), total=len(paths), desc=desc, unit="image",
                             disable=None))
    return [(path, problem) for path, problem in zip(paths, problems) if problem]
