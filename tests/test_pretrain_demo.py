"""demo-clip's pretraining: it learns, it is deterministic, its checkpoint loads like real weights."""
from pathlib import Path

import pytest
import torch

from analysis_lib.demo import world
from analysis_lib.demo import pretrain as pretrain_module
from analysis_lib.model.backbone import load_backbone
from analysis_lib.demo.pretrain import PretrainConfig, held_out_accuracy, pretrain, save_checkpoint

SHIPPED = Path(pretrain_module.__file__).parents[1] / "assets" / "demo-clip.safetensors"
CHANCE = 1 / len(world.object_classes())


@pytest.mark.slow
def test_reduced_pretraining_learns_zero_shot():
    """120 steps of 64 (30 s on 2 threads) already reach about 15x chance on unseen scenes."""
    model = pretrain(PretrainConfig(steps=120, batch_size=64, warmup=20, lr=2e-3), progress=False)
    assert held_out_accuracy(model, per_class=4) > 5 * CHANCE


@pytest.mark.slow
def test_pretraining_is_deterministic():
    config = PretrainConfig(steps=3, batch_size=8, warmup=1)
    a, b = pretrain(config, progress=False).state_dict(), pretrain(config, progress=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = pretrain(PretrainConfig(steps=3, batch_size=8, warmup=1, seed=1), progress=False).state_dict()
    assert not torch.equal(a["visual.conv1.weight"], c["visual.conv1.weight"])


@pytest.mark.slow
def test_checkpoint_loads_through_the_real_weights_path(tmp_path):
    model = pretrain(PretrainConfig(steps=2, batch_size=8, warmup=1), progress=False)
    path = save_checkpoint(model, tmp_path / "demo.safetensors", {"steps": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["demo.safetensors"]  # no temporary left
    backbone = load_backbone("demo-clip", str(path))
    images = pretrain_module.normalise(world.pretraining_batch(0, 4)[0])
    with torch.no_grad():
        expected = model.encode_image(images)
        loaded = backbone.clip.encode_image(images)
    assert backbone.image_size == world.SIZE
    torch.testing.assert_close(loaded, expected, atol=2e-2, rtol=2e-2)  # fp16 storage


def test_shipped_checkpoint_has_zero_shot_ability():
    backbone = load_backbone("demo-clip", str(SHIPPED))
    assert held_out_accuracy(backbone.clip, per_class=5) > 20 * CHANCE


@pytest.mark.parametrize("args, message", [
    (["--out", "demo.pt"], "must end in .safetensors"),
    (["--out", "demo.safetensors", "--steps", "0"], "--steps and --threads must be at least 1"),
    (["--out", "demo.safetensors", "--batch-size", "1"], "--batch-size at least 2"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, args, message):
    args = [str(tmp_path / a) if a.startswith("demo.") else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        pretrain_module.main(args)
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
