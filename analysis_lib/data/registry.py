"""What each dataset is on disk: folder, image folder, split file, hand template, class count.

The 11 datasets use the CoOp / Dassl layout under one data root, so a user's existing download
works unchanged. Further datasets in the split-file layout (`<root>/<folder>/<image_dir>/...` plus
`split_<Name>.json`, optional masks) join through `register_dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import COOP_DATASETS_MD, UnknownDatasetError

LAYOUTS = ("split_file", "imagenet", "fgvc_aircraft")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset's on-disk description.

    layout: "split_file" (a JSON {"train"|"val"|"test": [[rel_path, label, classname], ...]}),
    "imagenet" (classnames.txt + images/{train,val}/<wnid>/*) or "fgvc_aircraft"
    (variants.txt + images_variant_{split}.txt). Masks, where a dataset has them, lie at
    `<folder>/<mask_dir>/<image path relative to image_dir, with suffix .png>`.
    ignored_folders / renamed_folders: how the literature turned class folders into class
    names when it generated the split file (used to build split files from folders).
    """

    name: str
    folder: str
    image_dir: str
    template: str
    split_file: str | None = None
    layout: str = "split_file"
    n_classes: int | None = None
    mask_dir: str | None = None
    ignored_folders: tuple[str, ...] = ()
    renamed_folders: dict[str, str] = field(default_factory=dict)
    source: str = "the dataset's producer writes it next to the images"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout {self.layout!r} is not one of {LAYOUTS}")
        if self.layout == "split_file" and not self.split_file:
            raise ValueError(f"{self.name}: the split_file layout needs split_file=<name>.json")

    def dataset_dir(self, root: str | Path) -> Path:
        return Path(root).expanduser().absolute() / self.folder

    def image_root(self, root: str | Path) -> Path:
        return self.dataset_dir(root) / self.image_dir

    def classes_from_folders(self, folders: list[str]) -> list[tuple[str, str]]:
        """(folder, class name) in label order: folders sorted, ignored dropped, renamed."""
        kept = sorted(f for f in folders if f not in self.ignored_folders)
        return [(f, self.renamed_folders.get(f, f)) for f in kept]


def _coop_split(name: str, split_file: str) -> str:
    return f"the CoOp authors distribute {split_file}: {COOP_DATASETS_MD} (section {name}) links it"


CALTECH101_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CALTECH101_RENAMED = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard",
                      "Motorbikes": "motorbike"}
EUROSAT_RENAMED = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land", "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings",
    "River": "River", "SeaLake": "Sea or Lake",
}


def _split_spec(name, folder, image_dir, split_file, template, n_classes, **extra) -> DatasetSpec:
    return DatasetSpec(name=name, folder=folder, image_dir=image_dir, split_file=split_file,
                       template=template, n_classes=n_classes,
                       source=_coop_split(name, split_file), **extra)


_BUILTIN = [
    DatasetSpec(name="ImageNet", folder="imagenet", image_dir="images", layout="imagenet",
                template="a photo of a {}.", n_classes=1000,
                source=f"classnames.txt comes from the CoOp authors: {COOP_DATASETS_MD} "
                       "(section ImageNet) links it"),
    _split_spec("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                "a photo of a {}.", 100, ignored_folders=CALTECH101_IGNORED,
                renamed_folders=CALTECH101_RENAMED),
    _split_spec("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json",
                "a photo of a {}, a type of pet.", 37, mask_dir="annotations/trimaps"),
    _split_spec("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json",
                "a photo of a {}.", 196),
    _split_spec("Flowers102", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                "a photo of a {}, a type of flower.", 102),
    _split_spec("Food101", "food-101", "images", "split_zhou_Food101.json",
                "a photo of {}, a type of food.", 101),
    DatasetSpec(name="FGVCAircraft", folder="fgvc_aircraft", image_dir="images",
                layout="fgvc_aircraft", template="a photo of a {}, a type of aircraft.",
                n_classes=100,
                source="variants.txt and images_variant_{train,val,test}.txt come with the "
                       "FGVC-Aircraft 2013b archive (its data/ folder); "
                       f"{COOP_DATASETS_MD} (section FGVCAircraft) says where"),
    _split_spec("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json", "a photo of a {}.", 397),
    _split_spec("DTD", "dtd", "images", "split_zhou_DescribableTextures.json", "{} texture.", 47),
    _split_spec("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json",
                "a centered satellite photo of {}.", 10, renamed_folders=EUROSAT_RENAMED),
    _split_spec("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
                "a photo of a person doing {}.", 101),
]
PAPER_DATASETS: tuple[str, ...] = tuple(spec.name for spec in _BUILTIN)
# CoOp's test-set sizes (images; its split files and DATASETS.md), for projecting a study's cost.
COOP_TEST_SIZES = {"ImageNet": 50_000, "Caltech101": 2_465, "OxfordPets": 3_669, "StanfordCars": 8_041,
                   "Flowers102": 2_463, "Food101": 30_300, "FGVCAircraft": 3_333, "SUN397": 19_850,
                   "DTD": 1_692, "EuroSAT": 8_100, "UCF101": 3_783}

# The embedded default's datasets, drawn by analysis_lib.demo.world in the split-file layout.
_DEMO = [
    DatasetSpec(name=name, folder=folder, image_dir="images", split_file=f"split_{name}.json",
                template=template, n_classes=n_classes, mask_dir=mask_dir,
                source="generate it with: python -m analysis_lib.demo.world --root <data root>")
    for name, folder, template, n_classes, mask_dir in (
        ("DemoToys", "demo_toys", "a photo of a {}, a type of toy.", 12, "annotations/trimaps"),
        ("DemoHues", "demo_hues", "a photo of a {}.", 12, "annotations/trimaps"),
        ("DemoSat", "demo_sat", "a centered satellite photo of {}.", 10, None),
        ("DemoTextures", "demo_textures", "{} texture.", 12, None),
    )
]
DEMO_DATASETS: tuple[str, ...] = tuple(spec.name for spec in _DEMO)
_REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in _BUILTIN + _DEMO}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset; registering the same spec twice is harmless, a different one is an error."""
    known = _REGISTRY.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"dataset {spec.name!r} is already registered with another description")
    _REGISTRY[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    """The 11 datasets in the paper's order, the demo datasets, then registered extras."""
    return list(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(name, dataset_names()) from None
