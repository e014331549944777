"""Few-shot subsets equal an independent rendering of Dassl's procedure; cache; base/novel."""
import json
import math
import os
import random
import shutil
from collections import defaultdict

import numpy as np
import pytest
import torch

from analysis_lib.data import (Item, SplitFileFormatError, draw_fewshot, fewshot_split,
                               read_dataset, split_classes, subsample_classes)
from analysis_lib.data import fewshot as fewshot_module
from analysis_lib.data.registry import PAPER_DATASETS


def dassl_reference(train, val, shots, seed, imagenet):
    """What a Dassl run does: global seeds first, then train, then val, from the same stream."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    def generate(items, k):
        tracker = defaultdict(list)
        for item in items:
            tracker[item.label].append(item)
        out = []
        for label in tracker:
            group = tracker[label]
            out.extend(random.sample(group, k) if len(group) >= k else list(group))
        return out

    sampled_train = generate(train, shots)
    sampled_val = val if imagenet else generate(val, min(shots, 4))
    return sampled_train, sampled_val


@pytest.mark.parametrize("name", PAPER_DATASETS)
@pytest.mark.parametrize("shots", [2, 5])
def test_subsets_equal_dassl(data_root, tmp_path, name, shots):
    full = read_dataset(name, data_root)
    for seed in (1, 2, 3):
        got = fewshot_split(name, data_root, shots, seed, cache_dir=tmp_path)
        train, val = dassl_reference(full.train, full.val, shots, seed, name == "ImageNet")
        assert got.train == train and got.val == val and got.test == full.test
        assert got.classnames == full.classnames


def test_draw_on_interleaved_uneven_groups():
    """Labels first met out of order, groups smaller and larger than K."""
    rng = random.Random(7)
    items = [Item(f"/x/{i}.jpg", rng.choice([4, 1, 3, 0, 2]), "c") for i in range(90)]
    items += [Item("/x/lonely.jpg", 5, "c")]
    for seed in (1, 2, 3):
        expected, _ = dassl_reference(items, [], 16, seed, imagenet=True)
        assert draw_fewshot(items, 16, random.Random(seed)) == expected
    state = random.getstate()
    fewshot_module.draw_fewshot(items, 3, random.Random(1))
    assert random.getstate() == state  # the caller's global stream is left alone


def test_second_call_reads_the_cache(data_root, tmp_path, monkeypatch):
    first = fewshot_split("OxfordPets", data_root, 4, 1, cache_dir=tmp_path)
    cache = tmp_path / "oxford_pets" / "shot_4-seed_1.json"
    mtime = cache.stat().st_mtime_ns
    payload = json.loads(cache.read_text())
    assert (payload["dataset"], payload["shots"], payload["seed"]) == ("OxfordPets", 4, 1)
    assert payload["train"][0][0] == first.train[0].path.rsplit("/", 1)[1]  # relative path
    assert len(cache.read_text().splitlines()) > len(first.train) + len(first.val)  # one per line

    def no_draw(*args, **kwargs):
        raise AssertionError("drew again instead of reading the cache")
    monkeypatch.setattr(fewshot_module, "draw_fewshot", no_draw)
    assert fewshot_split("OxfordPets", data_root, 4, 1, cache_dir=tmp_path) == first
    assert cache.stat().st_mtime_ns == mtime


def test_cache_is_written_to_cache_dir_only_and_read_from_the_data_root(copy_dataset, tmp_path, monkeypatch):
    root = copy_dataset("ImageNet")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    cache_dir = tmp_path / "cache"
    data = fewshot_split("ImageNet", root, 2, 3, cache_dir=cache_dir)
    assert sorted(p.relative_to(root) for p in root.rglob("*") if cache_dir not in p.parents
                  and p != cache_dir) == before  # the data root is never written
    written = cache_dir / "imagenet" / "shot_2-seed_3.json"
    payload = json.loads(written.read_text())
    assert "val" not in payload and len(payload["train"]) == len(data.train) == 2 * 5
    assert list(written.parent.iterdir()) == [written]  # no temp file left
    # A subset cached in the data root (earlier versions wrote it there) is still read, first
    # from cache_dir, else from the data root, and nothing is written.
    other = fewshot_split("ImageNet", root, 2, 4, cache_dir=tmp_path / "elsewhere")
    (root / "imagenet" / "split_fewshot").mkdir()
    shutil.move(tmp_path / "elsewhere" / "imagenet" / "shot_2-seed_4.json",
                root / "imagenet" / "split_fewshot" / "shot_2-seed_3.json")  # another, valid, subset
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(fewshot_module, "draw_fewshot", None)  # no draw may happen
    assert fewshot_split("ImageNet", root, 2, 3, cache_dir=fresh).train == other.train
    assert not fresh.exists()
    assert fewshot_split("ImageNet", root, 2, 3, cache_dir=cache_dir).train == data.train


def test_imagenet_in_file_system_order(data_root, tmp_path):
    """The option follows CoOp's listing (os.listdir in each sorted class folder), cached apart."""
    listed = read_dataset("ImageNet", data_root, imagenet_order="filesystem")
    folders = sorted((data_root / "imagenet" / "images" / "train").iterdir())
    expected = [str(folder / name) for folder in folders for name in os.listdir(folder)
                if not name.startswith(".")]
    assert [item.path for item in listed.train] == expected
    assert sorted(listed.train) == sorted(read_dataset("ImageNet", data_root).train)
    fewshot_split("ImageNet", data_root, 2, 1, cache_dir=tmp_path, imagenet_order="filesystem")
    assert [p.name for p in (tmp_path / "imagenet").iterdir()] == ["shot_2-seed_1-filesystem.json"]
    with pytest.raises(ValueError, match="imagenet_order must be one of sorted, filesystem, got 'listdir'"):
        read_dataset("ImageNet", data_root, imagenet_order="listdir")


def test_stale_cache_is_an_error(data_root, tmp_path):
    fewshot_split("DTD", data_root, 2, 1, cache_dir=tmp_path)
    cache = tmp_path / "dtd" / "shot_2-seed_1.json"
    cache.write_text(cache.read_text().replace("banded/", "gone/", 1))
    with pytest.raises(SplitFileFormatError, match="not in the dataset's train split.*delete"):
        fewshot_split("DTD", data_root, 2, 1, cache_dir=tmp_path)


def test_base_and_novel(data_root, tmp_path):
    data = fewshot_split("DTD", data_root, 2, 1, cache_dir=tmp_path)  # 5 classes: base 3, novel 2
    n = len(data.classnames)
    base, novel = split_classes(data, "base"), split_classes(data, "novel")
    assert base.classnames == data.classnames[:math.ceil(n / 2)]
    assert novel.classnames == data.classnames[math.ceil(n / 2):]
    for which in ("train", "val", "test"):
        original = {i.path: i for i in data.split(which)}
        for part in (base, novel):
            for item in part.split(which):
                assert part.classnames[item.label] == item.classname
                assert item.classname == original[item.path].classname
        assert sorted(i.path for i in base.split(which) + novel.split(which)) == sorted(original)
    assert {i.label for i in novel.test} == {0, 1}
    assert split_classes(data, "all") == data


def test_subsample_classes_from_items_alone():
    items = [Item(f"/{y}.jpg", y, f"c{y}") for y in (6, 2, 4)]
    kept, names = subsample_classes(items, "novel")  # labels present: 2, 4, 6 -> novel = {6}
    assert kept == [Item("/6.jpg", 0, "c6")] and names == ["c6"]
    with pytest.raises(ValueError, match="base"):
        subsample_classes(items, "new")


def test_corrupt_cache_is_an_error(data_root, tmp_path):
    fewshot_split("DTD", data_root, 2, 2, cache_dir=tmp_path)
    cache = tmp_path / "dtd" / "shot_2-seed_2.json"
    cache.write_text(cache.read_text()[:-5])
    with pytest.raises(SplitFileFormatError, match=r"shot_2-seed_2.json: not valid JSON.*delete"):
        fewshot_split("DTD", data_root, 2, 2, cache_dir=tmp_path)
