"""Every kind of bad input gives one clear error; the check command reports it and fails."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis_lib.data import (BadImageError, DataRootError, MissingImagesError, SplitFileFormatError,
                               SplitFileMissingError, UnknownDatasetError, read_dataset)
from analysis_lib.data.__main__ import main


def test_missing_root(tmp_path):
    with pytest.raises(DataRootError, match="nowhere does not exist"):
        read_dataset("DTD", tmp_path / "nowhere")


def test_missing_split_file_names_it_and_its_source(copy_dataset):
    root = copy_dataset("EuroSAT")
    (root / "eurosat" / "split_zhou_EuroSAT.json").unlink()
    with pytest.raises(SplitFileMissingError,
                       match=r"split_zhou_EuroSAT.json is missing; the CoOp authors .*DATASETS.md"):
        read_dataset("EuroSAT", root)


def test_missing_fgvc_variant_list(copy_dataset):
    root = copy_dataset("FGVCAircraft")
    (root / "fgvc_aircraft" / "images_variant_val.txt").unlink()
    with pytest.raises(SplitFileMissingError, match="images_variant_val.txt is missing; .*2013b"):
        read_dataset("FGVCAircraft", root)


def test_corrupt_json_gives_file_and_position(copy_dataset):
    root = copy_dataset("Food101")
    path = root / "food-101" / "split_zhou_Food101.json"
    path.write_text('{"train": [["a.jpg", 0, "x"]],\n "val": [oops]}')
    with pytest.raises(SplitFileFormatError, match=r"split_zhou_Food101.json: not valid JSON: .* "
                                                   r"line 2, column 10"):
        read_dataset("Food101", root)
    path.write_text(json.dumps({"train": [["a.jpg", "0", "x"]], "val": [], "test": []}))
    with pytest.raises(SplitFileFormatError, match='entry 0 of "train"'):
        read_dataset("Food101", root)


def test_missing_images_fail_or_are_skipped(copy_dataset):
    root = copy_dataset("UCF101")
    full = read_dataset("UCF101", root)
    gone = sorted(full.test, key=lambda i: i.path)[:4]
    for item in gone:
        (root / item.path).unlink()
    with pytest.raises(MissingImagesError, match=r"4 listed image\(s\) missing .*first: Apply_Eye"
                                                 r".*\.\.\.\); .*allow_missing_images"):
        read_dataset("UCF101", root)
    kept = read_dataset("UCF101", root, allow_missing_images=True)
    assert kept.skipped == 4 and kept.test == [i for i in full.test if i not in gone]


def test_unknown_dataset_lists_valid_names(data_root):
    with pytest.raises(UnknownDatasetError, match="'Pets'; valid names: ImageNet, Caltech101"):
        read_dataset("Pets", data_root)


def test_check_command_exit_codes(data_root, copy_dataset, capsys):
    assert main(["check", "--root", str(data_root)]) == 0
    table = capsys.readouterr().out
    assert "EuroSAT       ok       10/10    60     30   20" in table
    assert "DTD           differs  5/47" in table

    root = copy_dataset("OxfordPets")
    (root / "oxford_pets" / "split_zhou_OxfordPets.json").write_text("{")
    assert main(["check", "--root", str(root)]) == 1  # a broken dataset
    out = capsys.readouterr().out
    assert "OxfordPets    broken" in out and "not valid JSON" in out
    assert main(["check", "--root", str(root), "--datasets", "DTD"]) == 1  # requested, missing
    assert "DTD: folder" in capsys.readouterr().out
    assert main(["check", "--root", str(root / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["check", "--root", str(root), "--datasets", "Pets"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_module_entry_point(data_root):
    run = subprocess.run([sys.executable, "-m", "analysis_lib.data", "check", "--root",
                          str(data_root), "--datasets", "DTD", "EuroSAT"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "EuroSAT" in run.stdout


def damage_images(root, name):
    """Truncate one listed image, empty another, replace a third by text; return their paths."""
    items = read_dataset(name, root).train
    truncated, empty, text = (Path(items[i].path) for i in (0, 1, 2))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty.write_bytes(b"")
    text.write_text("not an image")
    return truncated, empty, text


def test_deep_check_lists_every_image_that_does_not_decode(copy_dataset, capsys):
    root = copy_dataset("EuroSAT")
    truncated, empty, text = damage_images(root, "EuroSAT")
    assert main(["check", "--root", str(root), "--datasets", "EuroSAT"]) == 0  # names only
    capsys.readouterr()
    assert main(["check", "--root", str(root), "--datasets", "EuroSAT", "--deep"]) == 1
    out = capsys.readouterr().out
    assert "EuroSAT  broken  10/10" in out and "EuroSAT: 3 image(s) do not decode" in out
    lines = {line.strip().split(": ", 1)[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(lines) == {str(truncated), str(empty), str(text)}
    assert "truncated" in lines[str(truncated)].lower() and "empty file" in lines[str(empty)]
    assert "cannot identify image file" in lines[str(text)]


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_image_in_a_run_names_the_file_and_the_dataset(copy_dataset, workers):
    from torch.utils.data import DataLoader
    from analysis_lib.data.transforms import ItemDataset, eval_transform
    root = copy_dataset("EuroSAT")
    truncated, _, _ = damage_images(root, "EuroSAT")
    items = [item for item in read_dataset("EuroSAT", root).train if item.path == str(truncated)]
    loader = DataLoader(ItemDataset(items, eval_transform(8), "EuroSAT"), num_workers=workers)
    with pytest.raises(BadImageError) as info:  # the same type from a loader process
        next(iter(loader))
    assert f"EuroSAT: cannot decode image {truncated} (" in str(info.value)
    assert "truncated" in str(info.value).lower()
    assert "--deep lists every such file" in str(info.value)


@pytest.mark.parametrize("entry", ["../../../secret.jpg", "a/../../outside.jpg", "/etc/hostname"])
def test_split_entries_cannot_leave_the_dataset(copy_dataset, capsys, entry):
    """A split file that points outside the dataset's image folder is refused, naming the entry,
    even where the target is a readable image (the check command included)."""
    root = copy_dataset("EuroSAT")
    path = root / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(path.read_text())
    target = root / "secret.jpg"
    target.write_bytes((root / "eurosat" / "2750" / split["test"][0][0]).read_bytes())
    split["test"][1][0] = entry
    path.write_text(json.dumps(split))
    with pytest.raises(SplitFileFormatError, match=f'entry 1 of "test" names {entry!r}, outside the image folder'):
        read_dataset("EuroSAT", root)
    assert main(["check", "--root", str(root), "--datasets", "EuroSAT"]) != 0
    captured = capsys.readouterr()
    assert "outside the image folder" in captured.out + captured.err
