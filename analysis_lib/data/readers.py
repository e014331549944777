"""Read a dataset's train / val / test items and class names exactly as the CoOp / Dassl readers do.

Class names are returned as the literature's readers give them (underscores kept, e.g.
"apple_pie"); the literature's trainers replace "_" by " " only when they write the prompts,
which `prompt_classnames` does.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from .errors import (DataRootError, DatasetFolderError, MissingImagesError, SplitFileFormatError,
                     SplitFileMissingError)
from .registry import DatasetSpec, get_spec

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
# How ImageNet's images are listed in each class folder: sorted by name (the same on every
# machine, the default) or in the file system's order, as CoOp's reader lists them.
IMAGENET_ORDERS = ("sorted", "filesystem")


class Item(NamedTuple):
    path: str  # absolute image path
    label: int
    classname: str


@dataclass
class DatasetSplits:
    """A dataset's three item lists; classnames[label] is each label's name."""

    name: str
    classnames: list[str]
    train: list[Item]
    val: list[Item]
    test: list[Item]
    skipped: int = 0  # listed images missing on disk, skipped because allow_missing_images

    def split(self, which: str) -> list[Item]:
        if which not in SPLITS:
            raise ValueError(f"split {which!r} is not one of {SPLITS}")
        return getattr(self, which)


def prompt_classnames(classnames: list[str]) -> list[str]:
    """The names the literature's trainers put into the prompts: underscores become spaces."""
    return [name.replace("_", " ") for name in classnames]


def read_dataset(name: str, root: str | Path, *, allow_missing_images: bool = False,
                 imagenet_order: str = "sorted") -> DatasetSplits:
    """All three splits of dataset `name` under data root `root`.

    For ImageNet, val is the test set (the literature evaluates on ImageNet's val images), and
    `imagenet_order` (one of IMAGENET_ORDERS) says how each class folder's images are listed.
    """
    if imagenet_order not in IMAGENET_ORDERS:
        raise ValueError(f"imagenet_order must be one of {', '.join(IMAGENET_ORDERS)}, got {imagenet_order!r}")
    spec = get_spec(name)
    dataset_dir = _dataset_dir(spec, root)
    if spec.layout == "imagenet":
        splits, classnames = _read_imagenet(spec, dataset_dir, imagenet_order == "sorted")
    else:
        reader = {"split_file": _read_split_file, "fgvc_aircraft": _read_fgvc_aircraft}[spec.layout]
        splits, classnames = reader(spec, dataset_dir)
    skipped = 0
    if spec.layout != "imagenet":  # ImageNet's items are listed from disk: nothing can be missing
        splits, skipped = _drop_missing(spec, spec.image_root(root), splits, allow_missing_images)
    return DatasetSplits(spec.name, classnames, *(splits[s] for s in SPLITS), skipped=skipped)


def read_classnames(name: str, root: str | Path) -> list[str]:
    """Dataset `name`'s class names by label, without listing or checking its images (what the
    cost model needs). ImageNet's labels are its sorted class folders, named by classnames.txt."""
    spec = get_spec(name)
    dataset_dir = _dataset_dir(spec, root)
    if spec.layout != "imagenet":
        reader = {"split_file": _read_split_file, "fgvc_aircraft": _read_fgvc_aircraft}[spec.layout]
        return reader(spec, dataset_dir)[1]
    path = _required_file(spec, dataset_dir / "classnames.txt")
    with open(path, encoding="utf-8") as f:
        names = dict(line.strip().partition(" ")[::2] for line in f if line.strip())
    return [names[wnid] for wnid in sorted(names)]


def split_sha256(name: str, root: str | Path) -> str | None:
    """sha256 over the files that list the dataset's splits and class names (the split file;
    ImageNet's classnames.txt; FGVCAircraft's variant lists), or None where one is missing.
    A run records it, so a run made before such a file was edited no longer counts as finished."""
    spec = get_spec(name)
    folder = spec.dataset_dir(root)
    files = {"imagenet": ["classnames.txt"],
             "fgvc_aircraft": ["variants.txt"] + [f"images_variant_{which}.txt" for which in SPLITS]
             }.get(spec.layout, [spec.split_file])
    try:
        stats = [(str(folder / file), (folder / file).stat()) for file in files]
    except OSError:
        return None
    return _sha256_of(tuple((path, st.st_mtime_ns, st.st_size) for path, st in stats))


@functools.lru_cache(maxsize=64)
def _sha256_of(files: tuple[tuple[str, int, int], ...]) -> str | None:
    """sha256 over the files' bytes; keyed by (path, mtime, size), so an edited file is read again."""
    digest = hashlib.sha256()
    for path, _, _ in files:
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            return None
    return digest.hexdigest()


def mask_path(spec: DatasetSpec, root: str | Path, item: Item) -> Path | None:
    """The item's foreground mask (OxfordPets trimap, demo masks); None if the dataset has none."""
    if spec.mask_dir is None:
        return None
    relative = Path(item.path).relative_to(spec.image_root(root))
    return spec.dataset_dir(root) / spec.mask_dir / relative.with_suffix(".png")


def _dataset_dir(spec: DatasetSpec, root: str | Path) -> Path:
    if not Path(root).expanduser().is_dir():
        raise DataRootError(root)
    dataset_dir = spec.dataset_dir(root)
    if not dataset_dir.is_dir():
        raise DatasetFolderError(spec.name, dataset_dir)
    return dataset_dir


def _required_file(spec: DatasetSpec, path: Path) -> Path:
    if not path.is_file():
        raise SplitFileMissingError(spec.name, path, spec.source)
    return path


def _classnames_by_label(path: Path, splits: dict[str, list[Item]]) -> list[str]:
    """label -> name (Dassl takes it from the train list); labels must be 0..n-1, one name each."""
    names: dict[int, str] = {}
    for item in (item for which in SPLITS for item in splits[which]):
        if names.setdefault(item.label, item.classname) != item.classname:
            raise SplitFileFormatError(path, f"label {item.label} has two class names "
                                             f"({names[item.label]!r}, {item.classname!r})")
    if sorted(names) != list(range(len(names))):
        raise SplitFileFormatError(path, f"the labels are not 0..{len(names) - 1}")
    return [names[label] for label in range(len(names))]


def load_json(path: Path, fix: str | None = None):
    """A JSON file's content; broken JSON is one error naming the file and the position."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        problem = (f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} "
                   f"(character {e.pos})")
        raise SplitFileFormatError(path, problem, fix) from None


def items_from_entries(path: Path, which: str, entries, image_root: Path) -> list[Item]:
    """[[relative_path, label, classname], ...] as items with absolute paths; a path that is
    absolute or climbs out of ``image_root`` is refused (a split file reads nothing outside it)."""
    if not isinstance(entries, list):
        raise SplitFileFormatError(path, f'"{which}" is not a list of [relative_path, label, '
                                         "classname]")
    items = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], int) and isinstance(entry[2], str)):
            raise SplitFileFormatError(path, f'entry {i} of "{which}" is {entry!r}, '
                                             "expected [relative_path, label, classname]")
        if os.path.isabs(entry[0]) or os.path.normpath(entry[0]).split(os.sep)[0] == os.pardir:
            raise SplitFileFormatError(path, f'entry {i} of "{which}" names {entry[0]!r}, outside the image '
                                             f"folder {image_root}; entries are paths relative to it",
                                       "fix or re-download the file; images are read only from inside the dataset")
        items.append(Item(str(image_root / entry[0]), entry[1], entry[2]))
    return items


def _read_split_file(spec: DatasetSpec, dataset_dir: Path):
    path = _required_file(spec, dataset_dir / spec.split_file)
    split = load_json(path)
    if not isinstance(split, dict) or not set(SPLITS) <= set(split):
        raise SplitFileFormatError(path, 'expected {"train": [...], "val": [...], "test": [...]}')
    image_root = dataset_dir / spec.image_dir
    splits = {which: items_from_entries(path, which, split[which], image_root) for which in SPLITS}
    return splits, _classnames_by_label(path, splits)


def _image_files(folder: Path, sort: bool) -> list[str]:
    # Sorted for a machine-independent order. CoOp lists in os.listdir order, which depends on
    # the file system, so its ImageNet few-shot draws are not portable between machines;
    # sort=False follows it (os.scandir and os.listdir read the directory in the same order).
    names = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    return sorted(names) if sort else names


def _read_imagenet(spec: DatasetSpec, dataset_dir: Path, sort_images: bool):
    path = _required_file(spec, dataset_dir / "classnames.txt")
    names = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            wnid, _, name = line.strip().partition(" ")
            if wnid:
                names[wnid] = name
    folders = {}
    for which in ("train", "val"):
        split_dir = dataset_dir / spec.image_dir / which
        if not split_dir.is_dir():
            raise DatasetFolderError(spec.name, split_dir)
        folders[which] = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if folders["train"] != folders["val"]:
        raise SplitFileFormatError(dataset_dir / spec.image_dir, "images/train and images/val "
                                   "hold different class folders")
    unnamed = [w for w in folders["train"] if w not in names]
    if unnamed:
        raise SplitFileFormatError(path, f"no name for class folder(s) {unnamed[:3]}")
    splits = {}
    for which in ("train", "val"):
        split_dir = dataset_dir / spec.image_dir / which
        listing = tqdm(folders[which], desc=f"listing ImageNet {which}", leave=False,
                       disable=None)  # 1.3M files: minutes on a slow disk
        splits[which] = [Item(str(split_dir / wnid / image), label, names[wnid])
                         for label, wnid in enumerate(listing)
                         for image in _image_files(split_dir / wnid, sort_images)]
    splits["test"] = splits["val"]
    return splits, [names[w] for w in folders["train"]]


def _read_fgvc_aircraft(spec: DatasetSpec, dataset_dir: Path):
    variants_path = _required_file(spec, dataset_dir / "variants.txt")
    with open(variants_path, encoding="utf-8") as f:
        classnames = [line.strip() for line in f if line.strip()]
    label_of = {name: label for label, name in enumerate(classnames)}  # file order, as CoOp
    image_root = dataset_dir / spec.image_dir
    splits = {}
    for which in SPLITS:
        path = _required_file(spec, dataset_dir / f"images_variant_{which}.txt")
        items = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                image_id, _, variant = line.strip().partition(" ")
                if not image_id:
                    continue
                if variant not in label_of:
                    raise SplitFileFormatError(path, f"line {lineno}: variant {variant!r} is not "
                                                     f"in {variants_path.name}")
                items.append(Item(str(image_root / f"{image_id}.jpg"), label_of[variant], variant))
        splits[which] = items
    return splits, classnames


def _drop_missing(spec: DatasetSpec, image_root: Path, splits: dict[str, list[Item]],
                  allow_missing: bool) -> tuple[dict[str, list[Item]], int]:
    """Fail on listed images that are not on disk, or skip them when asked to."""
    gone = sorted({item.path for s in SPLITS for item in splits[s]
                   if not os.path.isfile(item.path)})
    if not gone:
        return splits, 0
    if not allow_missing:
        raise MissingImagesError(spec.name, image_root,
                                 [os.path.relpath(p, image_root) for p in gone])
    log.warning("%s: skipping %d listed image(s) missing on disk", spec.name, len(gone))
    missing = set(gone)
    return {s: [item for item in splits[s] if item.path not in missing] for s in SPLITS}, len(gone)
