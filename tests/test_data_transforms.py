"""The protocol's preprocessing and the torch Dataset over reader items."""
import torch
from PIL import Image

from analysis_lib.data import Item, read_dataset
from analysis_lib.data.transforms import ItemDataset, eval_transform, train_transform


def test_test_transform_normalises_with_given_statistics(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (40, 30), color=128).save(path)  # grey, one channel: must become RGB
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)
    image, label = ItemDataset([Item(str(path), 3, "x")], eval_transform(8, mean, std))[0]
    assert label == 3 and image.shape == (3, 8, 8)
    expected = torch.tensor([(128 / 255 - m) / s for m, s in zip(mean, std)])
    assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=1e-4)


def test_train_transform_crops_to_size(data_root):
    items = read_dataset("DTD", data_root).train[:3]
    dataset = ItemDataset(items, train_transform(12))
    assert len(dataset) == 3
    torch.manual_seed(0)
    images = torch.stack([dataset[i][0] for i in range(3)])
    assert images.shape == (3, 3, 12, 12) and torch.isfinite(images).all()
