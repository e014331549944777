"""Miniature copies of the 11 datasets' on-disk layouts, for tests and demonstrations.

Each tree keeps the real folder names, file naming, split-file schema and class-naming rules
(ImageNet wnids in classnames.txt, Caltech101's BACKGROUND_Google / Faces_easy folders,
OxfordPets trimaps, FGVCAircraft's variant text files), with a handful of real classes and a
few tiny JPEGs each. Split-file train lists are written in a shuffled order so that readers and
samplers meet labels in a non-sorted first-appearance order, as they may in real files.
"""
from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from analysis_lib.data.registry import PAPER_DATASETS, DatasetSpec, get_spec

COUNTS = {"train": 6, "val": 3, "test": 2}  # images per class and split
IMAGE_SIZE = 16

PathOf = Callable[[str, str, int], str]  # (class folder, split, running index) -> relative path


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_image(path: Path, seed: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_jpeg(seed))


def _write_trimap(path: Path):
    """Pet-style trimap: 1 foreground (a centred square), 2 background, 3 the border between."""
    trimap = np.full((IMAGE_SIZE, IMAGE_SIZE), 2, dtype=np.uint8)
    trimap[3:13, 3:13] = 3
    trimap[4:12, 4:12] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(trimap).save(path)


def _letters(n: int) -> str:
    """16 lowercase letters, like SUN397's file names."""
    return "".join(chr(97 + (7 * n + 11 * k) % 26) for k in range(16))


def _per_class_path(folder: str, split: str, n: int) -> str:
    return f"{folder}/{folder}_{n}.jpg"


def write_split_dataset(spec: DatasetSpec, root: str | Path, classes: list[tuple[str, str]],
                        path_of: PathOf = _per_class_path) -> Path:
    """Write images, masks (if the spec has any) and the split JSON; label = index in `classes`."""
    image_root = spec.image_root(root)
    split: dict[str, list] = {s: [] for s in COUNTS}
    n = 0
    for label, (folder, classname) in enumerate(classes):
        for which, count in COUNTS.items():
            for _ in range(count):
                n += 1
                relative = path_of(folder, which, n)
                _write_image(image_root / relative, seed=n)
                if spec.mask_dir:
                    _write_trimap(spec.dataset_dir(root) / spec.mask_dir
                                  / Path(relative).with_suffix(".png"))
                split[which].append([relative, label, classname])
    random.Random(0).shuffle(split["train"])
    (spec.dataset_dir(root) / spec.split_file).write_text(json.dumps(split), encoding="utf-8")
    return spec.dataset_dir(root)


def _write_caltech101(spec: DatasetSpec, root: Path):
    folders = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion",
               "airplanes", "anchor"]
    for folder in spec.ignored_folders:  # present on disk, never listed
        _write_image(spec.image_root(root) / folder / "image_0001.jpg", seed=0)
    counter = {}

    def path_of(folder, which, n):
        counter[folder] = counter.get(folder, 0) + 1
        return f"{folder}/image_{counter[folder]:04d}.jpg"

    write_split_dataset(spec, root, spec.classes_from_folders(folders), path_of)


def _write_oxford_pets(spec: DatasetSpec, root: Path):
    breeds = ["Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound",
              "beagle", "Bengal"]
    write_split_dataset(spec, root, [(b, b.lower()) for b in breeds],
                        lambda breed, which, n: f"{breed}_{n}.jpg")


def _write_stanford_cars(spec: DatasetSpec, root: Path):
    names = ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan",
             "2008 Acura TL Type-S", "2012 Acura TSX Sedan"]
    write_split_dataset(spec, root, [(name, name) for name in names],
                        lambda _, which, n: f"cars_{'test' if which == 'test' else 'train'}"
                                            f"/{n:05d}.jpg")


def _write_flowers102(spec: DatasetSpec, root: Path):
    names = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
             "english marigold"]
    write_split_dataset(spec, root, [(name, name) for name in names],
                        lambda _, which, n: f"image_{n:05d}.jpg")


def _write_food101(spec: DatasetSpec, root: Path):
    folders = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare"]
    write_split_dataset(spec, root, spec.classes_from_folders(folders),
                        lambda folder, which, n: f"{folder}/{1005640 + n}.jpg")


def _write_sun397(spec: DatasetSpec, root: Path):
    folders = ["a/abbey", "a/airplane_cabin", "a/airport_terminal", "a/alley", "a/amphitheater",
               "a/apartment_building/outdoor"]
    # SUN397's names: the folder minus its first letter, reversed ("outdoor apartment_building")
    classes = [(f, " ".join(f.split("/")[1:][::-1])) for f in folders]
    write_split_dataset(spec, root, classes,
                        lambda folder, which, n: f"{folder}/sun_{_letters(n)}.jpg")


def _write_dtd(spec: DatasetSpec, root: Path):
    folders = ["banded", "blotchy", "braided", "bubbly", "bumpy"]
    write_split_dataset(spec, root, spec.classes_from_folders(folders),
                        lambda folder, which, n: f"{folder}/{folder}_{n:04d}.jpg")


def _write_eurosat(spec: DatasetSpec, root: Path):
    write_split_dataset(spec, root, spec.classes_from_folders(list(spec.renamed_folders)))


def _write_ucf101(spec: DatasetSpec, root: Path):
    folders = ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling", "Balance_Beam"]
    write_split_dataset(
        spec, root, spec.classes_from_folders(folders),
        lambda folder, which, n: f"{folder}/v_{folder.replace('_', '')}_g{n % 25 + 1:02d}_c01.jpg")


def _write_imagenet(spec: DatasetSpec, root: Path):
    classes = [("n01440764", "tench"), ("n01443537", "goldfish"),
               ("n01484850", "great white shark"), ("n01491361", "tiger shark"),
               ("n01494475", "hammerhead shark")]
    dataset_dir = spec.dataset_dir(root)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "classnames.txt").write_text(
        "".join(f"{wnid} {name}\n" for wnid, name in classes), encoding="utf-8")
    n = 0
    for wnid, _ in classes:
        for i in range(COUNTS["train"]):
            n += 1
            _write_image(spec.image_root(root) / "train" / wnid / f"{wnid}_{100 + i}.JPEG", seed=n)
        for _ in range(COUNTS["val"]):
            n += 1
            _write_image(spec.image_root(root) / "val" / wnid / f"ILSVRC2012_val_{n:08d}.JPEG",
                         seed=n)


def _write_fgvc_aircraft(spec: DatasetSpec, root: Path):
    variants = ["707-320", "727-200", "737-200", "A300B4", "Cessna 172", "DC-10"]
    dataset_dir = spec.dataset_dir(root)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "variants.txt").write_text("".join(v + "\n" for v in variants), encoding="utf-8")
    lines: dict[str, list[str]] = {s: [] for s in COUNTS}
    n = 0
    for variant in variants:
        for which, count in COUNTS.items():
            for _ in range(count):
                n += 1
                image_id = f"{1000000 + 37 * n:07d}"
                _write_image(spec.image_root(root) / f"{image_id}.jpg", seed=n)
                lines[which].append(f"{image_id} {variant}\n")
    for which, entries in lines.items():
        (dataset_dir / f"images_variant_{which}.txt").write_text("".join(entries), encoding="utf-8")


_WRITERS = {
    "ImageNet": _write_imagenet, "Caltech101": _write_caltech101, "OxfordPets": _write_oxford_pets,
    "StanfordCars": _write_stanford_cars, "Flowers102": _write_flowers102,
    "Food101": _write_food101, "FGVCAircraft": _write_fgvc_aircraft, "SUN397": _write_sun397,
    "DTD": _write_dtd, "EuroSAT": _write_eurosat, "UCF101": _write_ucf101,
}


def write_fixtures(root: str | Path, datasets: tuple[str, ...] = PAPER_DATASETS) -> Path:
    """Write the miniature tree of each named dataset under `root`; returns `root`."""
    root = Path(root)
    for name in datasets:
        _WRITERS[name](get_spec(name), root)
    return root
