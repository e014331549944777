"""Each reader gives the class names, label order and lists that the CoOp / Dassl readers give."""
import json
from pathlib import Path

import pytest

from analysis_lib.data import (PAPER_DATASETS, DatasetSpec, dataset_names, get_spec, mask_path,
                               prompt_classnames, read_classnames, read_dataset, register_dataset)
from analysis_lib.data import registry
from fixture_data import COUNTS, write_split_dataset

# Class names in label order, as the literature's readers name the miniature trees' classes.
EXPECTED = {
    "ImageNet": ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark"],
    # sorted folders (upper case first), BACKGROUND_Google and Faces_easy dropped, four renamed
    "Caltech101": ["face", "leopard", "motorbike", "accordion", "airplane", "anchor"],
    "OxfordPets": ["abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound",
                   "beagle", "bengal"],
    "StanfordCars": ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan",
                     "2008 Acura TL Type-S", "2012 Acura TSX Sedan"],
    "Flowers102": ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
                   "english marigold"],
    "Food101": ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare"],
    "FGVCAircraft": ["707-320", "727-200", "737-200", "A300B4", "Cessna 172", "DC-10"],
    "SUN397": ["abbey", "airplane_cabin", "airport_terminal", "alley", "amphitheater",
               "outdoor apartment_building"],
    "DTD": ["banded", "blotchy", "braided", "bubbly", "bumpy"],
    "EuroSAT": ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
                "Industrial Buildings", "Pasture Land", "Permanent Crop Land",
                "Residential Buildings", "River", "Sea or Lake"],
    "UCF101": ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling", "Balance_Beam"],
}


def test_registry_matches_the_paper():
    assert list(PAPER_DATASETS) == list(EXPECTED)
    assert [get_spec(n).n_classes for n in PAPER_DATASETS] == [
        1000, 100, 37, 196, 102, 101, 100, 397, 47, 10, 101]
    assert get_spec("DTD").template.format("banded") == "banded texture."
    assert get_spec("EuroSAT").template.format("Forest") == "a centered satellite photo of Forest."


@pytest.mark.parametrize("name", list(EXPECTED))
def test_reader_names_labels_and_counts(data_root, name):
    data = read_dataset(name, data_root)
    assert data.classnames == EXPECTED[name]
    n = len(EXPECTED[name])
    if name == "ImageNet":  # train and val only; val is the test set
        assert len(data.train) == COUNTS["train"] * n
        assert data.val == data.test and len(data.test) == COUNTS["val"] * n
    else:
        for which, count in COUNTS.items():
            assert len(data.split(which)) == count * n
    for which in ("train", "val", "test"):
        for item in data.split(which):
            assert Path(item.path).is_absolute() and Path(item.path).is_file()
            assert data.classnames[item.label] == item.classname


@pytest.mark.parametrize("name", list(EXPECTED))
def test_class_names_alone_match_the_reader(data_root, name):
    """What the cost model reads without listing any image: the reader's names, in label order."""
    assert read_classnames(name, data_root) == read_dataset(name, data_root).classnames == EXPECTED[name]


def test_imagenet_labels_follow_sorted_wnid_folders(data_root):
    data = read_dataset("ImageNet", data_root)
    for item in data.train + data.test:
        wnid = Path(item.path).parent.name
        assert item.label == sorted(["n01440764", "n01443537", "n01484850", "n01491361",
                                     "n01494475"]).index(wnid)


def test_fgvc_labels_follow_variants_file_order(data_root):
    variants = (data_root / "fgvc_aircraft" / "variants.txt").read_text().splitlines()
    data = read_dataset("FGVCAircraft", data_root)
    assert all(variants[item.label] == item.classname for item in data.train)


def test_split_file_entries_are_read_in_file_order(data_root):
    spec = get_spec("DTD")
    listed = json.loads((spec.dataset_dir(data_root) / spec.split_file).read_text())["train"]
    data = read_dataset("DTD", data_root)
    assert [(str(Path(i.path).relative_to(spec.image_root(data_root))), i.label, i.classname)
            for i in data.train] == [tuple(entry) for entry in listed]


def test_prompt_classnames_replace_underscores():
    assert prompt_classnames(["apple_pie", "outdoor apartment_building"]) == [
        "apple pie", "outdoor apartment building"]


def test_oxford_pets_trimaps(data_root):
    spec = get_spec("OxfordPets")
    item = read_dataset("OxfordPets", data_root).test[0]
    mask = mask_path(spec, data_root, item)
    assert mask == data_root / "oxford_pets/annotations/trimaps" / (Path(item.path).stem + ".png")
    assert mask.is_file()
    assert mask_path(get_spec("DTD"), data_root, item) is None


def test_registered_extra_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test
    spec = DatasetSpec(name="DemoShapes", folder="demo_shapes", image_dir="images",
                       split_file="split_DemoShapes.json", template="a photo of a {}.",
                       n_classes=3, mask_dir="masks")
    register_dataset(spec)
    register_dataset(spec)  # the same description again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(DatasetSpec(name="DemoShapes", folder="other", image_dir="images",
                                     split_file="x.json", template="{}"))
    assert dataset_names()[-1] == "DemoShapes"
    write_split_dataset(spec, tmp_path, [("circle", "circle"), ("square", "square"),
                                         ("star", "star")])
    data = read_dataset("DemoShapes", tmp_path)
    assert data.classnames == ["circle", "square", "star"]
    assert mask_path(spec, tmp_path, data.train[0]).is_file()
