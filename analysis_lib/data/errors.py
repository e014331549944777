"""One exception per way a dataset on disk can be wrong; each message names the problem and the fix.

All derive from `DatasetError`, so a command-line tool can catch them in one place, and from the
matching built-in (FileNotFoundError / ValueError), so ordinary callers can too.
"""
from __future__ import annotations

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"


class DatasetError(Exception):
    """Base class of every data-layer error."""


class UnknownDatasetError(DatasetError, ValueError):
    def __init__(self, name: str, valid: list[str]):
        super().__init__(f"unknown dataset {name!r}; valid names: {', '.join(valid)}")


class DataRootError(DatasetError, FileNotFoundError):
    def __init__(self, root):
        super().__init__(
            f"data root {root} does not exist; pass the folder that holds the dataset folders "
            f"(imagenet/, caltech-101/, ...), laid out as in {COOP_DATASETS_MD}"
        )


class DatasetFolderError(DatasetError, FileNotFoundError):
    def __init__(self, name: str, folder):
        super().__init__(
            f"{name}: folder {folder} not found; download the dataset and arrange it as in "
            f"{COOP_DATASETS_MD}"
        )


class SplitFileMissingError(DatasetError, FileNotFoundError):
    def __init__(self, name: str, path, source: str):
        super().__init__(f"{name}: {path} is missing; {source}")


class SplitFileFormatError(DatasetError, ValueError):
    def __init__(self, path, problem: str, fix: str | None = None):
        fix = fix or f"re-download the file (see {COOP_DATASETS_MD})"
        super().__init__(f"{path}: {problem}; {fix}")


class MissingImagesError(DatasetError, FileNotFoundError):
    def __init__(self, name: str, image_root, missing: list[str]):
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        super().__init__(
            f"{name}: {len(missing)} listed image(s) missing under {image_root} (first: {shown}); "
            "complete the download, or pass allow_missing_images=True "
            "(--allow-missing-images) to skip them"
        )


class BadImageError(DatasetError, OSError):
    """A listed image that cannot be decoded (empty, truncated, not an image); built by
    `images.bad_image`. Takes the message alone, so that torch's DataLoader can re-raise it
    from a worker process as it is."""
