"""Few-shot subsets as Dassl draws them for a seed, cached as readable JSON; base/novel classes.

Dassl seeds python's `random` with the run's seed before anything else draws, then samples the
train list and after it the val list from that one stream. `random.Random(seed)` produces the
same stream as `random.seed(seed)`, so drawing from a private generator gives the literature's
exact subsets without touching the caller's global random state.
"""
from __future__ import annotations

import json
import logging
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..files import write_text_atomic
from .errors import SplitFileFormatError
from .readers import SPLITS, DatasetSplits, Item, items_from_entries, load_json, read_dataset
from .registry import get_spec

log = logging.getLogger(__name__)
WHICH_CLASSES = ("all", "base", "novel")
_CACHE_FIX = "delete the file to draw the subset again"


def draw_fewshot(items: Sequence[Item], shots: int, rng: random.Random) -> list[Item]:
    """`shots` items per label, as Dassl's generate_fewshot_dataset (repeat=False) picks them.

    Labels are visited in the order they first appear in `items`; a label with fewer than
    `shots` items keeps all of them.
    """
    groups: defaultdict[int, list[Item]] = defaultdict(list)  # keeps first-appearance order
    for item in items:
        groups[item.label].append(item)
    chosen: list[Item] = []
    for group in groups.values():
        chosen += rng.sample(group, shots) if len(group) >= shots else group
    return chosen


def fewshot_split(dataset: str, root: str | Path, shots: int, seed: int, *,
                  cache_dir: str | Path | None = None, allow_missing_images: bool = False,
                  imagenet_order: str = "sorted") -> DatasetSplits:
    """The dataset with `shots` train and min(shots, 4) val items per class for `seed`; test whole.

    ImageNet keeps its whole val (= test) list, as in CoOp. The subset is read from
    `<cache_dir>/<folder>/shot_<K>-seed_<S>.json`, or else from the data root's
    `<root>/<folder>/split_fewshot/` (where earlier versions wrote it, as CoOp keeps its pickles);
    a new draw is written to `cache_dir` only, so the data root may be read-only. A cache listing
    images the dataset no longer has is an error; the draw depends on images and labels only, so
    class names are taken from the dataset as it is now (a renamed class keeps its subset).
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}; use read_dataset for the full lists")
    spec = get_spec(dataset)
    full = read_dataset(dataset, root, allow_missing_images=allow_missing_images,
                        imagenet_order=imagenet_order)
    subsample_val = spec.layout != "imagenet"
    # A draw from ImageNet in file-system order is another subset: it gets its own file.
    order = f"-{imagenet_order}" if spec.layout == "imagenet" and imagenet_order != "sorted" else ""
    name = f"shot_{shots}-seed_{seed}{order}.json"
    places = [spec.dataset_dir(root) / "split_fewshot" / name]
    if cache_dir is not None:
        places.insert(0, Path(cache_dir) / spec.folder / name)
    image_root = spec.image_root(root)
    path = next((place for place in places if place.is_file()), None)
    if path is not None:
        log.info("reading the %d-shot subset for seed %d from %s", shots, seed, path)
        cached = _read_cache(path, image_root, full, subsample_val)
    else:
        rng = random.Random(seed)
        cached = {"train": draw_fewshot(full.train, shots, rng)}
        if subsample_val:
            cached["val"] = draw_fewshot(full.val, min(shots, 4), rng)
        if cache_dir is not None:
            _write_cache(places[0], image_root, {"dataset": spec.name, "shots": shots, "seed": seed},
                         cached)
            log.info("wrote the %d-shot subset for seed %d to %s", shots, seed, places[0])
    return DatasetSplits(full.name, full.classnames, cached["train"], cached.get("val", full.val),
                         full.test, skipped=full.skipped)


def _write_cache(path: Path, image_root: Path, header: dict, lists: dict[str, list[Item]]):
    payload = dict(header)
    for which, items in lists.items():
        payload[which] = [[Path(i.path).relative_to(image_root).as_posix(), i.label, i.classname]
                          for i in items]
    write_text_atomic(path, _one_item_per_line(payload))


def _one_item_per_line(payload: dict) -> str:
    """JSON that a person can read and diff: one [path, label, classname] entry per line."""
    fields = []
    for key, value in payload.items():
        if isinstance(value, list):
            entries = ",\n".join("  " + json.dumps(entry) for entry in value)
            fields.append(f" {json.dumps(key)}: [\n{entries}\n ]")
        else:
            fields.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def _read_cache(path: Path, image_root: Path, full: DatasetSplits,
                subsample_val: bool) -> dict[str, list[Item]]:
    payload = load_json(path, _CACHE_FIX)
    lists = {}
    for which in ("train", "val") if subsample_val else ("train",):
        if not isinstance(payload, dict) or which not in payload:
            raise SplitFileFormatError(path, f'no "{which}" list', _CACHE_FIX)
        items = items_from_entries(path, which, payload[which], image_root)
        known = {(item.path, item.label): item for item in full.split(which)}
        unknown = [item for item in items if (item.path, item.label) not in known]
        if unknown:
            raise SplitFileFormatError(path, f"{len(unknown)} {which} item(s) are not in the "
                                             f"dataset's {which} split (first: {unknown[0].path})",
                                       _CACHE_FIX)
        lists[which] = [known[item.path, item.label] for item in items]  # class names as the dataset has them now
    return lists


def base_class_count(n_classes: int) -> int:
    """How many of n classes are base: the first ceil(n/2) labels (the rest are novel)."""
    return math.ceil(n_classes / 2)


def subsample_classes(items: Sequence[Item], which: str = "all",
                      classnames: Sequence[str] | None = None) -> tuple[list[Item], list[str]]:
    """Keep the base (first ceil(n/2) sorted labels) or novel (the rest) classes, relabelled from 0.

    The n labels are those of `classnames` when given, else those present in `items` (as CoOp,
    which takes them from the train list). Returns the items and the kept classes' names.
    """
    if which not in WHICH_CLASSES:
        raise ValueError(f"which={which!r}; expected one of {WHICH_CLASSES}")
    if classnames is not None:
        names = dict(enumerate(classnames))
    else:
        names = {item.label: item.classname for item in items}
    labels = sorted(names)
    half = base_class_count(len(labels))
    selected = {"all": labels, "base": labels[:half], "novel": labels[half:]}[which]
    new_label = {old: new for new, old in enumerate(selected)}
    kept = [Item(i.path, new_label[i.label], i.classname) for i in items if i.label in new_label]
    return kept, [names[label] for label in selected]


def split_classes(dataset: DatasetSplits, which: str) -> DatasetSplits:
    """`subsample_classes` applied alike to train, val and test (after the few-shot draw)."""
    results = [subsample_classes(dataset.split(s), which, dataset.classnames) for s in SPLITS]
    return DatasetSplits(dataset.name, results[0][1], *(items for items, _ in results),
                         skipped=dataset.skipped)
