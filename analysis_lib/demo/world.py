"""The demo world: drawn shapes, colours and textures, known exactly, for the embedded default.

One renderer serves two purposes. `pretraining_batch` draws captioned scenes on plain backgrounds
(the "web data" the demo CLIP is pretrained on, `analysis_lib.demo.pretrain`). `write_demo_data`
writes four downstream datasets in the CoOp split-file layout, each shifted away from the
pretraining data the way real downstream data are (one room's clutter behind every object, a colour
cast, an unseen scale on terrain, washed-out textures), so that prompts and biases have a real,
dataset-wide bias to fix.
The object masks are known, so the single-object datasets ship OxfordPets-style trimaps.

    python -m analysis_lib.demo.world --root data/demo
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.registry import DEMO_DATASETS, get_spec

SIZE = 64  # pixels; demo-clip's input size
COLOURS = {
    "red": (0.86, 0.16, 0.16), "orange": (0.94, 0.55, 0.12), "yellow": (0.92, 0.84, 0.16),
    "green": (0.2, 0.67, 0.24), "cyan": (0.16, 0.75, 0.78), "blue": (0.16, 0.27, 0.82),
    "purple": (0.55, 0.2, 0.7), "pink": (0.94, 0.47, 0.67),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "bar", "crescent")
PLURAL = {"cross": "crosses"}
PATTERNS = ("plain", "striped", "dotted", "checkered")
COUNTS = {"train": 20, "val": 5, "test": 30}  # images per class and split, downstream datasets

_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


def plural(shape: str) -> str:
    return PLURAL.get(shape, shape + "s")


# Shapes on coordinates (u, v) normalised by the shape's radius, v pointing down.
_SHAPE_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v < 1,
    "square": lambda u, v: np.maximum(abs(u), abs(v)) < 0.8,
    "triangle": lambda u, v: (v < 0.75) & (v > 1.7 * abs(u) - 0.95),
    "diamond": lambda u, v: abs(u) + abs(v) < 1,
    "cross": lambda u, v: ((abs(u) < 0.3) & (abs(v) < 0.95)) | ((abs(v) < 0.3) & (abs(u) < 0.95)),
    "ring": lambda u, v: (u * u + v * v < 1) & (u * u + v * v > 0.36),
    "bar": lambda u, v: (abs(u) < 0.95) & (abs(v) < 0.32),
    "crescent": lambda u, v: (u * u + v * v < 1) & ((u - 0.5) ** 2 + v * v > 0.6),
}


def shape_mask(shape: str, cx: float, cy: float, radius: float) -> np.ndarray:
    return _SHAPE_TESTS[shape]((_X - cx) / radius, (_Y - cy) / radius)


def pattern_field(pattern: str, period: float, angle: float) -> np.ndarray:
    """A 0/1 field over the image: where a patterned surface is dark."""
    if pattern == "plain":
        return np.zeros((SIZE, SIZE), np.float32)
    c, s = np.cos(angle), np.sin(angle)
    a, b = (c * _X + s * _Y) / period, (-s * _X + c * _Y) / period
    if pattern == "striped":
        return (a % 1 < 0.5).astype(np.float32)
    if pattern == "checkered":
        return ((np.floor(a) + np.floor(b)) % 2).astype(np.float32)
    return (((a % 1) - 0.5) ** 2 + ((b % 1) - 0.5) ** 2 < 0.09).astype(np.float32)  # dotted


def surface(colour: str, pattern: str, rng: np.random.Generator, period=(5.0, 9.0)) -> np.ndarray:
    """An (H, W, 3) surface of `colour` with `pattern` drawn in a darker shade of it."""
    rgb = np.clip(np.array(COLOURS[colour], np.float32) + rng.normal(0, 0.03, 3), 0, 1)
    dark = pattern_field(pattern, rng.uniform(*period), rng.choice([0, np.pi / 4, np.pi / 2]))
    return rgb * (1 - 0.55 * dark[..., None])


def plain_background(rng: np.random.Generator) -> np.ndarray:
    """Pretraining's background: light grey with a slight tint and noise."""
    grey = rng.uniform(0.65, 0.95) + rng.normal(0, 0.03, 3)
    return np.clip(grey + rng.normal(0, 0.03, (SIZE, SIZE, 3)), 0, 1).astype(np.float32)


def smooth_field(rng: np.random.Generator, cells: int, low: float, high: float) -> np.ndarray:
    """Random colours on a coarse grid, bilinearly upsampled: clutter unseen in pretraining."""
    coarse = rng.uniform(low, high, (cells, cells, 3)).astype(np.float32)
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(image, np.float32) / 255


def terrain(rng: np.random.Generator) -> np.ndarray:
    """A green-brown land surface seen from above."""
    base = smooth_field(rng, 6, 0, 1)
    land = np.array([0.35, 0.45, 0.22], np.float32) + 0.25 * (base - 0.5) * np.array([1, 0.8, 0.5])
    return np.clip(land + rng.normal(0, 0.04, (SIZE, SIZE, 3)), 0, 1).astype(np.float32)


@dataclass(frozen=True)
class Scene:
    """What is drawn: one object, many small objects, or a texture filling the image."""

    kind: str  # "object" | "many" | "texture"
    colour: str
    shape: str = "circle"
    pattern: str = "plain"


def draw(scene: Scene, rng: np.random.Generator, background: np.ndarray | None = None,
         radius=(12.0, 26.0), small=(4.0, 7.0), period=(5.0, 9.0)) -> tuple[np.ndarray, np.ndarray]:
    """(image in [0, 1], foreground mask) of `scene`; `background` defaults to the plain one."""
    paint = surface(scene.colour, scene.pattern, rng, period)
    if scene.kind == "texture":
        noise = rng.normal(0, 0.03, paint.shape)
        return np.clip(paint + noise, 0, 1).astype(np.float32), np.ones((SIZE, SIZE), bool)
    image = plain_background(rng) if background is None else background.copy()
    if scene.kind == "object":
        r = rng.uniform(*radius)
        centre = rng.uniform(r, SIZE - r, 2)
        mask = shape_mask(scene.shape, *centre, r)
    else:  # many
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(rng.integers(5, 11)):
            r = rng.uniform(*small)
            mask |= shape_mask(scene.shape, *rng.uniform(r, SIZE - r, 2), r)
    image[mask] = paint[mask]
    return image, mask


# ---------------------------------------------------------------------------------------------
# Pretraining: captioned scenes.

_OBJECT_CAPTIONS = (
    "a photo of a {c} {s}.", "a {c} {s}.", "a {c} {s} on a plain background.",
    "a drawing of a {s} in {c}.", "a picture of a {c} {s}.", "{c} {s}.", "the {s} is {c}.",
)
_PATTERN_CAPTIONS = ("a photo of a {p} {c} {s}.", "a {c} {s} with a {p} pattern.", "a {p} {c} {s}.")
_MANY_CAPTIONS = ("many small {c} {ps}.", "a group of {c} {ps}.", "a photo of {c} {ps}.",
                  "lots of tiny {ps} in {c}.")
_TEXTURE_CAPTIONS = ("a {c} {p} texture.", "{p} pattern in {c}.", "a photo of a {c} {p} texture.",
                     "{c} {p} texture.")
_KIND_WEIGHTS = {"object": 0.6, "many": 0.2, "texture": 0.2}


def random_scene(rng: np.random.Generator) -> Scene:
    kind = rng.choice(list(_KIND_WEIGHTS), p=list(_KIND_WEIGHTS.values()))
    colour = rng.choice(list(COLOURS))
    if kind == "texture":
        return Scene("texture", colour, pattern=rng.choice(PATTERNS[1:]))
    pattern = "plain" if rng.random() < 0.5 else rng.choice(PATTERNS[1:])
    return Scene(kind, colour, rng.choice(SHAPES), pattern if kind == "object" else "plain")


def caption(scene: Scene, rng: np.random.Generator) -> str:
    c, s, p = scene.colour, scene.shape, scene.pattern
    if scene.kind == "texture":
        templates = _TEXTURE_CAPTIONS
    elif scene.kind == "many":
        templates = _MANY_CAPTIONS
    else:
        templates = _PATTERN_CAPTIONS if p != "plain" and rng.random() < 0.7 else _OBJECT_CAPTIONS
    return rng.choice(templates).format(c=c, s=s, p=p, ps=plural(s))


def pretraining_batch(seed: int, size: int) -> tuple[np.ndarray, list[str]]:
    """`size` captioned scenes, (N, H, W, 3) float32 images in [0, 1]; the same for the same seed."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(size)]
    images = np.stack([draw(scene, rng)[0] for scene in scenes])
    return images, [caption(scene, rng) for scene in scenes]


def object_classes() -> list[tuple[str, str]]:
    """(colour, shape) of every single-object class of the pretraining world."""
    return [(c, s) for c in COLOURS for s in SHAPES]


def held_out_objects(seed: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Single-object pretraining-style images of every class, and their labels."""
    rng = np.random.default_rng(seed)
    classes = object_classes()
    labels = np.repeat(np.arange(len(classes)), per_class)
    images = np.stack([draw(Scene("object", *classes[i]), rng)[0] for i in labels])
    return images, labels


# ---------------------------------------------------------------------------------------------
# Downstream datasets: each a list of classes and a way of drawing them away from pretraining.

@dataclass(frozen=True)
class DemoDataset:
    classes: tuple[Scene, ...]
    classname: Callable[[Scene], str]
    render: Callable[[Scene, np.random.Generator], tuple[np.ndarray, np.ndarray]]


_ROOM = np.array([0.4, 0.58, 0.55], np.float32)  # every DemoToys photo is taken in the same room


def room(rng: np.random.Generator) -> np.ndarray:
    """DemoToys' background: the one teal room, its clutter different in every photo."""
    return np.clip(_ROOM + 0.5 * (smooth_field(rng, 4, 0, 1) - 0.5), 0, 1)


def _cluttered(scene, rng):
    return draw(scene, rng, background=room(rng))


_CAST = np.array([1.0, 0.78, 0.5], np.float32)  # a warm cast over a whole dataset


def warm_cast(image: np.ndarray) -> np.ndarray:
    """DemoHues' shift from the pretraining images: every colour (RGB in 0..1) under a warm light."""
    return np.clip(image * _CAST + 0.08, 0, 1)


def _cast(scene, rng):
    image, mask = draw(scene, rng)
    return warm_cast(image), mask


def _aerial(scene, rng):
    return draw(scene, rng, background=terrain(rng), small=(2.5, 4.5))


_TEXTURE_PERIOD = (4.0, 7.0)  # DemoTextures' patterns are a little finer than pretraining's


def fade(image: np.ndarray) -> np.ndarray:
    """Half-way to grey, as if every DemoTextures sample were printed on the same washed-out paper."""
    return 0.5 * image + 0.5 * image.mean(-1, keepdims=True)


def _faded_texture(scene, rng):
    image, mask = draw(scene, rng, period=_TEXTURE_PERIOD)
    return np.clip(fade(image) + rng.normal(0, 0.05, image.shape), 0, 1), mask


def _objects(colours, shapes):
    return tuple(Scene("object", c, s) for c in colours for s in shapes)


DATASETS: dict[str, DemoDataset] = {
    "DemoToys": DemoDataset(_objects(("red", "orange", "pink", "purple"), ("circle", "ring", "crescent")),
                lambda s: f"{s.colour} {s.shape}", _cluttered),
    "DemoHues": DemoDataset(_objects(("yellow", "orange", "green", "cyan", "blue", "purple"),
                                     ("triangle", "diamond")),
                lambda s: f"{s.colour} {s.shape}", _cast),
    "DemoSat": DemoDataset(tuple(Scene("many", c, s) for c, s in (
        ("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross"),
        ("purple", "diamond"), ("orange", "ring"), ("cyan", "bar"), ("pink", "crescent"),
        ("blue", "circle"), ("yellow", "square"))),
                lambda s: f"{s.colour} {plural(s.shape)}", _aerial),
    "DemoTextures": DemoDataset(tuple(Scene("texture", c, pattern=p)
                                      for c in ("red", "orange", "blue", "green")
                                      for p in ("striped", "dotted", "checkered")),
                                lambda s: f"{s.colour} {s.pattern}", _faded_texture),
}
assert tuple(DATASETS) == DEMO_DATASETS


# ---------------------------------------------------------------------------------------------
# The known shift: each scene drawn twice, pretraining-style and dataset-style (the known-truth test).

PAIRED = ("DemoToys", "DemoHues", "DemoTextures")  # DemoSat's shift (scale, terrain) has no exact pair


def paired_render(name: str, scene: Scene, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plain, shifted, mask): ``scene`` drawn pretraining-style and as dataset ``name`` draws it,
    differing only by the dataset's shift. The object's random draws (paint, size, place) come from
    their own stream, so the DemoToys room's draws cannot move the object."""
    if name not in PAIRED:
        raise ValueError(f"{name} has no paired renders (only {', '.join(PAIRED)}); use "
                         "unpaired_render for a shift measured between two distributions")
    if name == "DemoHues":
        plain, mask = draw(scene, _stream(seed, 0))
        return plain, warm_cast(plain), mask
    if name == "DemoTextures":
        plain, mask = draw(scene, _stream(seed, 0), period=_TEXTURE_PERIOD)
        return plain, np.clip(fade(plain) + _stream(seed, 1).normal(0, 0.05, plain.shape), 0, 1), mask
    plain, mask = draw(scene, _stream(seed, 0), background=plain_background(_stream(seed, 1)))
    shifted, _ = draw(scene, _stream(seed, 0), background=room(_stream(seed, 2)))  # the same object stream
    return plain, shifted, mask


def _stream(seed, k: int) -> np.random.Generator:
    return np.random.default_rng([*np.atleast_1d(seed), k])


def unpaired_render(name: str, scene: Scene, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(plain, plain mask, shifted, shifted mask): ``scene`` drawn pretraining-style and, independently,
    as dataset ``name`` draws it; for a shift that exists only between the two distributions."""
    plain, plain_mask = draw(scene, _stream(seed, 0))
    shifted, mask = DATASETS[name].render(scene, _stream(seed, 1))
    return plain, plain_mask, shifted, mask


def trimap(mask: np.ndarray) -> np.ndarray:
    """OxfordPets' convention: 1 foreground, 2 background, 3 the one-pixel border between."""
    padded = np.pad(mask, 1, mode="edge")
    grown = np.zeros_like(mask)
    shrunk = np.ones_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            window = padded[dy:dy + SIZE, dx:dx + SIZE]
            grown |= window
            shrunk &= window
    out = np.full(mask.shape, 2, np.uint8)
    out[shrunk] = 1
    out[grown & ~shrunk] = 3
    return out


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_dataset(name: str, root: str | Path) -> Path:
    """Write one demo dataset under `root` (into a temporary folder, renamed when complete)."""
    spec, dataset = get_spec(name), DATASETS[name]
    final = spec.dataset_dir(root)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    split: dict[str, list] = {which: [] for which in COUNTS}
    for label, scene in enumerate(dataset.classes):
        classname = dataset.classname(scene)
        folder = classname.replace(" ", "_")
        for which, count in COUNTS.items():
            for i in range(count):
                rng = np.random.default_rng([DEMO_DATASETS.index(name), label, list(COUNTS).index(which), i])
                image, mask = dataset.render(scene, rng)
                relative = f"{folder}/{folder}_{which}_{i:03d}.jpg"
                target = partial / spec.image_dir / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_to_uint8(image)).save(target, quality=92)
                if spec.mask_dir:
                    mask_file = (partial / spec.mask_dir / relative).with_suffix(".png")
                    mask_file.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(trimap(mask)).save(mask_file)
                split[which].append([relative, label, classname])
    random.Random(0).shuffle(split["train"])
    (partial / spec.split_file).write_text(json.dumps(split), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def write_demo_data(root: str | Path, names=DEMO_DATASETS, force: bool = False) -> list[Path]:
    """Write the demo datasets not yet under `root` (all of them with force)."""
    written = []
    for name in tqdm(names, desc="demo datasets"):
        spec = get_spec(name)
        if force or not (spec.dataset_dir(root) / spec.split_file).is_file():
            written.append(write_dataset(name, root))
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="data root to write the demo datasets under")
    parser.add_argument("--force", action="store_true", help="rewrite datasets already present")
    args = parser.parse_args(argv)
    if Path(args.root).exists() and not Path(args.root).is_dir():
        parser.error(f"--root {args.root} is a file; pass a folder (it is created if missing)")
    written = write_demo_data(args.root, force=args.force)
    print(f"{len(written)} demo dataset(s) written, {len(DEMO_DATASETS) - len(written)} already "
          f"present under {args.root}")


if __name__ == "__main__":
    main()
