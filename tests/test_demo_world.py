"""The demo world: datasets in the real layout, exact masks, determinism, the demo experiment."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis_lib.demo import world
from analysis_lib.data import DEMO_DATASETS, get_spec, mask_path, prompt_classnames, read_dataset
from analysis_lib.study.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "analysis_lib" / "assets" / "demo-clip.safetensors"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    world.write_demo_data(root)
    return root


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", DEMO_DATASETS)
def test_datasets_read_like_real_ones(demo_root, name):
    spec = get_spec(name)
    data = read_dataset(name, demo_root)
    assert len(data.classnames) == spec.n_classes
    for which, count in world.COUNTS.items():
        assert len(data.split(which)) == count * spec.n_classes
    assert all(Path(item.path).is_file() for item in data.test)
    with Image.open(data.test[0].path) as image:
        assert image.size == (world.SIZE, world.SIZE)
    prompts = [spec.template.format(c) for c in prompt_classnames(data.classnames)]
    assert len(set(prompts)) == len(prompts)


@pytest.mark.parametrize("name", ["DemoToys", "DemoHues"])
def test_masks_are_trimaps_of_the_drawn_object(demo_root, name):
    spec = get_spec(name)
    data = read_dataset(name, demo_root)
    item = data.test[0]
    trimap = np.asarray(Image.open(mask_path(spec, demo_root, item)))
    assert set(np.unique(trimap)) == {1, 2, 3}
    # The object is drawn in its class colour: foreground pixels are near it, background ones not.
    scene = world.DATASETS[name].classes[item.label]
    image = np.asarray(Image.open(item.path), np.float32) / 255
    colour = np.array(world.COLOURS[scene.colour])
    if name == "DemoHues":
        colour = world.warm_cast(colour)
    distance = np.abs(image - colour).max(-1)
    assert np.median(distance[trimap == 1]) < 0.12 < np.median(distance[trimap == 2])


def test_trimap_border_is_one_pixel_each_side():
    mask = np.zeros((world.SIZE, world.SIZE), bool)
    mask[10:20, 10:20] = True
    t = world.trimap(mask)
    assert (t == 1).sum() == 8 * 8 and (t == 3).sum() == 12 * 12 - 8 * 8
    assert (t == 2).sum() == world.SIZE ** 2 - 12 * 12


def test_writing_is_deterministic_and_resumes(demo_root, tmp_path):
    spec = get_spec("DemoSat")
    (tmp_path / (spec.folder + ".partial")).mkdir()  # left over by an interrupted run
    assert world.write_demo_data(tmp_path, names=("DemoSat",)) == [spec.dataset_dir(tmp_path)]
    assert not (tmp_path / (spec.folder + ".partial")).exists()
    assert _digest(spec.dataset_dir(tmp_path)) == _digest(spec.dataset_dir(demo_root))
    assert world.write_demo_data(tmp_path, names=("DemoSat",)) == []  # already there


def test_root_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        world.main(["--root", str(tmp_path / "data")])
    assert exit_info.value.code != 0 and "is a file; pass a folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_pretraining_batches_are_reproducible_and_captioned():
    images, captions = world.pretraining_batch(seed=7, size=16)
    again, captions_again = world.pretraining_batch(seed=7, size=16)
    other, _ = world.pretraining_batch(seed=8, size=16)
    assert images.shape == (16, world.SIZE, world.SIZE, 3) and images.dtype == np.float32
    assert np.array_equal(images, again) and captions == captions_again
    assert not np.array_equal(images, other)
    assert all(any(c in caption for c in world.COLOURS) for caption in captions)


def test_every_shape_is_drawn_distinctly():
    masks = {s: world.shape_mask(s, 32, 32, 20) for s in world.SHAPES}
    assert all(m.sum() > 200 for m in masks.values())
    for a in world.SHAPES:
        for b in world.SHAPES:
            if a < b:
                assert (masks[a] ^ masks[b]).sum() > 100, (a, b)


def test_demo_experiment_builds_on_demo_clip(demo_root):
    """Every variant of experiments/demo.yaml fits demo-clip; the file's parameter counts hold."""
    from analysis_lib.model.backbone import load_backbone
    from analysis_lib.model.prompted import build_model
    from analysis_lib.report.notebooks import profile_of

    experiment = load_experiment(REPO / "experiments" / "demo.yaml", data_root=str(demo_root))
    assert experiment.datasets == DEMO_DATASETS and experiment.analysis.variant_name == "ivlp"
    assert any(get_spec(d).mask_dir for d in experiment.datasets)  # the foreground chapters have data
    backbone = load_backbone("demo-clip")
    counts = {}
    for name, spec in experiment.variants.items():
        params = {k: v for k, v in spec.items() if k != "variant"}
        counts[name] = build_model(spec["variant"], backbone, ["a", "b"], "a photo of a {}.",
                                   **params).n_trainable
    assert counts == {"zeroshot": 0, "text": 1152, "vision": 1152, "ivlp": 2304,
                      "bias_both": 1536, "bias_mlp": 768, "bias_attn": 768}
    assert profile_of(experiment).data == "generated"



@pytest.mark.slow
def test_short_training_on_demo_data_beats_zero_shot(demo_root, tmp_path):
    """demo-clip on DemoHues (4 shots, 3 epochs): ivlp fixes the colour cast that zero-shot
    misreads (measured: base 55.6% zero-shot, 90.0% ivlp)."""
    from analysis_lib.study.one_run import RunSettings, run_training
    from analysis_lib.study.train_config import TrainConfig

    def base_accuracy(variant, **params):
        settings = RunSettings(
            dataset="DemoHues", variant=variant, variant_params=params, data_root=str(demo_root),
            output_dir=str(tmp_path / variant), model="demo-clip", pretrained=str(SHIPPED),
            progress=False, device="cpu", train=TrainConfig(shots=4, epochs=3, crop_scale=0.5, num_workers=0))
        return run_training(settings)["base_acc"]

    assert base_accuracy("ivlp", text_depth=3, vision_depth=3) > base_accuracy("zeroshot") + 20


# ----------------------------------------------------------------- paired renders (known-truth test)
def _pairs(name, n=6):
    classes = world.DATASETS[name].classes
    return [world.paired_render(name, classes[i % len(classes)], [7, i]) for i in range(n)]


def test_hues_pair_is_the_warm_cast_of_the_plain_image():
    for plain, shifted, _ in _pairs("DemoHues"):
        np.testing.assert_array_equal(shifted, world.warm_cast(plain))
        assert np.abs(shifted - plain).mean() > 0.05


def test_toys_pair_differs_only_in_the_background():
    for plain, shifted, mask in _pairs("DemoToys"):
        assert 0 < mask.mean() < 1
        np.testing.assert_array_equal(shifted[mask], plain[mask])
        assert (np.abs(shifted - plain).max(-1)[~mask] > 0).mean() > 0.9


def test_textures_pair_is_the_faded_plain_image_up_to_the_noise():
    for plain, shifted, mask in _pairs("DemoTextures"):
        assert mask.all()
        residual = shifted - world.fade(plain)
        inside = (shifted > 0) & (shifted < 1)  # where the clip to [0, 1] did not act
        assert abs(residual[inside].std() - 0.05) < 0.01 and abs(residual[inside].mean()) < 0.01
        assert np.abs(shifted - plain).mean() > 0.05  # the shift itself is not small


def test_paired_render_is_deterministic_and_refuses_unpaired_datasets():
    scene = world.DATASETS["DemoToys"].classes[0]
    a, b = world.paired_render("DemoToys", scene, 3), world.paired_render("DemoToys", scene, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="DemoSat has no paired renders"):
        world.paired_render("DemoSat", world.DATASETS["DemoSat"].classes[0], 0)
    plain, plain_mask, shifted, mask = world.unpaired_render("DemoSat", world.DATASETS["DemoSat"].classes[0], 0)
    assert plain.shape == shifted.shape == (world.SIZE, world.SIZE, 3) and mask.any() and plain_mask.any()
