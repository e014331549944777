"""A training run end to end on the miniature data, read back by the analyses."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analysis_lib.stats.causal import ablation_accuracy
from analysis_lib.study.run_record import METRICS_FILE
from analysis_lib.study.one_run import RunSettings, run_training
from analysis_lib.study.run_folder import RunFolderError, load_run
from analysis_lib.checks import ConfigError
from analysis_lib.study.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_run_folder_and_reload(ivlp_run):
    settings, metrics = ivlp_run
    written = json.loads((Path(settings.output_dir) / METRICS_FILE).read_text())
    run = load_run(settings.output_dir)
    config, clip = run.model("base").config, run.backbone.clip
    prompts = (config.text_depth * config.text_n_ctx * clip.transformer.width
               + config.vision_depth * config.vision_n_ctx * clip.visual.transformer.width)
    assert written["base_acc"] == metrics["base_acc"] and written["n_trainable"] == prompts  # deep prompts only
    assert run.model("novel").classnames != run.model("base").classnames
    every = ablation_accuracy(run)
    table = every[every.tower == "both"]
    as_trained = table.set_index("ablation").loc["as trained"]               # the whole test sets, as the run
    assert as_trained["base"] == pytest.approx(metrics["base_acc"], abs=1e-4)
    assert as_trained["novel"] == pytest.approx(metrics["novel_acc"], abs=1e-4)
    removals = ["bias term removed", "rescaling removed", "both removed"]
    assert list(zip(table["ablation"], table["form"])) == [("as trained", "all blocks")] + [
        (name, form) for form in ("all blocks", "below prompt depth") for name in removals] + [
        ("bias term mean-ablated", "all blocks")]
    # The run's prompts reach every block (depth 2 of 2): both forms are the same ablation.
    forms = table.iloc[1:-1].set_index(["form", "ablation"])
    assert forms.loc["all blocks"].equals(forms.loc["below prompt depth"])
    # One tower at a time: as trained and the three removals, in every block.
    for tower in ("vision", "text"):
        assert list(every[every.tower == tower].ablation) == ["as trained"] + removals


def test_same_seed_same_metrics(ivlp_run, tmp_path):
    settings, metrics = ivlp_run
    again = run_training(RunSettings.from_parameters({**settings.to_dict(), "output_dir": str(tmp_path)}))
    for key in ("base_acc", "novel_acc", "hm"):
        assert again[key] == metrics[key]
    assert (tmp_path / "loss.csv").read_text() == \
        (Path(settings.output_dir) / "loss.csv").read_text()


def test_missing_run_folder(tmp_path):
    with pytest.raises(RunFolderError, match="not a finished run folder"):
        load_run(tmp_path)


def test_wrong_parameter_type():
    with pytest.raises(ConfigError, match="epochs must be an integer, got '3'"):
        RunSettings.from_parameters(dict(dataset="OxfordPets", variant="ivlp", data_root="d", output_dir="o",
                                         epochs="3"))
    with pytest.raises(ConfigError, match="parameter 'seed' must be an integer, got 1.5"):
        RunSettings(dataset="OxfordPets", variant="ivlp", data_root="d", output_dir="o", seed=1.5)


def notebook_cells(name="train.ipynb"):
    import nbformat
    return nbformat.read(REPO / "notebooks" / name, as_version=4).cells


def test_train_notebook_defaults_are_train_config_and_every_name_a_parameter():
    """Executing the notebook's cells up to its parameters gives TrainConfig's defaults, and the
    parameters cell defines parameters only."""
    code = [cell for cell in notebook_cells() if cell.cell_type == "code"]
    index = next(i for i, cell in enumerate(code) if "parameters" in cell.metadata.get("tags", []))
    namespace: dict = {}
    for cell in code[:index]:
        exec(cell.source, namespace)
    before = set(namespace) | {"_names_before_parameters"}
    exec(code[index].source, namespace)
    assert sorted(set(namespace) - before) == RunSettings.parameter_names()
    settings = RunSettings.from_parameters(namespace, defined_before=before)
    assert settings.train == TrainConfig()


def test_misspelt_notebook_parameter_is_an_error():
    with pytest.raises(ConfigError) as info:
        RunSettings.from_parameters(dict(dataset="OxfordPets", variant="ivlp", data_root="d", output_dir="o",
                                         epoch=1, In=[]), defined_before={"In"})
    assert str(info.value).startswith("notebook parameters: unknown parameter 'epoch' (did you mean 'epochs'?)")


@pytest.mark.slow
def test_unknown_parameter_fails_the_train_notebook(data_root, tmp_path):
    """`papermill ... -p epoch 1` (for epochs) stops the notebook before it trains. (The sweep
    passes parameters through papermill alike; its experiment file refuses unknown keys first.)"""
    params = {"dataset": "OxfordPets", "data_root": data_root, "output_dir": tmp_path / "run",
              "model": "tiny-clip", "epoch": 1}
    done = subprocess.run([str(Path(sys.executable).with_name("papermill")), "notebooks/train.ipynb",
                           str(tmp_path / "out.ipynb"), *(arg for key, value in params.items()
                                                          for arg in ("-p", key, str(value))),
                           "-p", "pretrained", "None", "--log-level", "ERROR"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "ConfigError: notebook parameters: unknown parameter 'epoch' (did you mean 'epochs'?)" in done.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def tree(root: Path) -> dict:
    """Every path under root with its size and modification time."""
    return {p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_read_only_data_root_works_end_to_end(copy_dataset, tmp_path_factory):
    """The data root is only read: chmod'ed read-only (which does not stop root, so the tree is
    also compared before and after), a run trains, caches its subset in the run folder, reloads."""
    root = copy_dataset("OxfordPets")
    before = tree(root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        out = tmp_path_factory.mktemp("run")  # copy_dataset's root is tmp_path: write elsewhere
        settings = RunSettings(dataset="OxfordPets", variant="coop", data_root=str(root), output_dir=str(out),
                               variant_params={"text_n_ctx": 2}, model="tiny-clip", pretrained=None,
                               progress=False, train=TrainConfig(shots=1, epochs=1, num_workers=0))
        metrics = run_training(settings)
        assert (out / "split_fewshot" / "oxford_pets" / "shot_1-seed_1.json").is_file()
        assert metrics["n_train_images"] == len(load_run(out).splits["base"].train)
        assert tree(root) == before
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.write_bytes(b'{"base_acc": "\xff"}'), "is not UTF-8 text (byte 14)"),
    (lambda p: p.mkdir(), "is a folder, not a file"),
])
def test_damaged_metrics_file_is_named(tmp_path, damage, problem):
    from analysis_lib.study.aggregate import load_metrics
    from analysis_lib.study.run_record import is_complete
    path = tmp_path / "metrics.json"
    damage(path)
    for read in (lambda: load_metrics([path]), lambda: load_run(tmp_path)):
        with pytest.raises(ValueError) as info:
            read()
        assert str(info.value).startswith(f"{path} {problem}; ")
    assert not is_complete(tmp_path, "any")  # the sweep runs such a run again


def test_output_dir_that_is_a_file_is_named(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    settings = RunSettings(dataset="OxfordPets", variant="ivlp", data_root="d", output_dir=str(taken / "run"))
    with pytest.raises(ConfigError, match=f"output_dir {taken / 'run'} lies under {taken}, which is a file"):
        run_training(settings)
    with pytest.raises(ConfigError, match="parameter 'device' 'gpu' is not a device; use auto, cpu, cuda"):
        RunSettings(dataset="OxfordPets", variant="ivlp", data_root="d", output_dir="o", device="gpu")


def test_run_uses_its_configured_thread_count(data_root, tmp_path, monkeypatch):
    """Results may depend on torch's CPU thread count, so a run sets its own (TrainConfig.threads)
    instead of the one its process inherited (Dask workers get 1, a plain process all cores)."""
    from analysis_lib.study import one_run
    seen = []
    real_train = one_run.train

    def train(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_train(*args, **kwargs)
    monkeypatch.setattr(one_run, "train", train)
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    settings = RunSettings(dataset="OxfordPets", variant="coop", data_root=str(data_root),
                           output_dir=str(tmp_path), variant_params={"text_n_ctx": 2}, model="tiny-clip",
                           pretrained=None, progress=False,
                           train=TrainConfig(shots=1, epochs=1, num_workers=0, threads=wanted))
    metrics = run_training(settings)
    assert seen == [wanted] and torch.get_num_threads() == before
    assert metrics["settings"]["threads"] == wanted


def test_vision_variant_trains_the_same_with_class_features_computed_once(data_root, tmp_path, monkeypatch):
    """The frozen text tower's features, computed once per run, give bit-identical learned prompts."""
    from safetensors.torch import load_file

    from analysis_lib.model.prompted import PromptedCLIP
    from analysis_lib.study.train_config import TrainConfig

    original = PromptedCLIP.encode_text

    def train(out, calls):
        def counted(model):
            calls.append(1)
            return original(model)
        monkeypatch.setattr(PromptedCLIP, "encode_text", counted)
        run_training(RunSettings(dataset="OxfordPets", variant="vision", data_root=str(data_root),
                                 output_dir=str(out), variant_params={"vision_depth": 2}, model="tiny-clip",
                                 pretrained=None, progress=False,
                                 train=TrainConfig(shots=2, epochs=2, num_workers=0)))
        return load_file(str(out / "trainable.safetensors")), Path(out / "loss.csv").read_text()

    once_calls, every_step_calls = [], []
    once = train(tmp_path / "once", once_calls)
    monkeypatch.setattr(PromptedCLIP, "text_is_fixed", property(lambda self: False))
    every_step = train(tmp_path / "every", every_step_calls)
    assert once[1] == every_step[1]                                   # the same losses, to the digit
    assert once[0].keys() == every_step[0].keys()
    assert all(torch.equal(once[0][k], every_step[0][k]) for k in once[0])
    steps = len(once[1].splitlines()) - 1
    assert len(once_calls) == 1 + 2 and len(every_step_calls) == steps + 2  # + base and novel evaluation


def test_run_folder_reopens_from_any_directory(data_root, tiny, tmp_path, monkeypatch):
    """A run made with relative paths (weights, data) reopens from another working directory:
    paths are recorded resolved, and a run recorded with relative ones is found from its folder."""
    from safetensors.torch import save_file
    from analysis_lib.data import get_spec
    project = tmp_path / "project"
    (project / "weights").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tiny.clip.state_dict().items()}, project / "weights" / "tiny.safetensors")
    folder = get_spec("OxfordPets").folder
    shutil.copytree(data_root / folder, project / "data" / folder)
    monkeypatch.chdir(project)
    metrics = run_training(RunSettings(dataset="OxfordPets", variant="ivlp", data_root="data", output_dir="runs/r",
                                       model="tiny-clip", pretrained="weights/tiny.safetensors", progress=False,
                                       variant_params={"text_depth": 1, "vision_depth": 1},
                                       train=TrainConfig(shots=1, epochs=1, num_workers=0)))
    assert metrics["settings"]["pretrained"] == str(project / "weights" / "tiny.safetensors")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    run_dir = project / "runs" / "r"

    def base_accuracy():
        table = ablation_accuracy(load_run(run_dir))
        return table.set_index(["tower", "ablation", "form"]).loc[("both", "as trained", "all blocks"), "base"]
    assert base_accuracy() == pytest.approx(metrics["base_acc"])
    recorded = json.loads((run_dir / METRICS_FILE).read_text())       # as runs made before recorded them
    recorded["settings"].update(pretrained="weights/tiny.safetensors", data_root="data")
    (run_dir / METRICS_FILE).write_text(json.dumps(recorded))
    assert base_accuracy() == pytest.approx(metrics["base_acc"])
