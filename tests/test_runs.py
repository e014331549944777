"""A training run end to end on the miniature data, read back by the analyses."""
import json
from pathlib import Path

import pytest
import torch

from analysis_lib.stats.causal import ablation_accuracy
from analysis_lib.study.one_run import RunSettings, run_training
from analysis_lib.study.run_folder import RunFolderError, load_run
from analysis_lib.checks import ConfigError


def test_run_folder_and_reload(ivlp_run):
    settings, metrics = ivlp_run
    written = json.loads((Path(settings.output_dir) / "metrics.json").read_text())
    assert written["base_acc"] == metrics["base_acc"] and written["n_trainable"] == 1024
    run = load_run(settings.output_dir)
    assert run.model("novel").classnames != run.model("base").classnames
    table = ablation_accuracy(run)
    as_trained = table.set_index("ablation").loc["as trained"]
    assert as_trained["base"] == pytest.approx(metrics["base_acc"])
    assert as_trained["novel"] == pytest.approx(metrics["novel_acc"])
    assert list(table["ablation"]) == ["as trained", "bias term removed", "rescaling removed", "both removed"]


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
