"""A training run end to end on the miniature data, read back by the analyses."""
import json
from pathlib import Path

import pytest

from analysis_lib.stats.causal import ablation_accuracy
from analysis_lib.study.experiment import METRICS_FILE
from analysis_lib.study.one_run import RunSettings, run_training
from analysis_lib.study.run_folder import RunFolderError, load_run
from analysis_lib.checks import ConfigError


def test_run_folder_and_reload(ivlp_run):
    settings, metrics = ivlp_run
    written = json.loads((Path(settings.output_dir) / METRICS_FILE).read_text())
    run = load_run(settings.output_dir)
    config, clip = run.model("base").config, run.backbone.clip
    prompts = (config.text_depth * config.text_n_ctx * clip.transformer.width
               + config.vision_depth * config.vision_n_ctx * clip.visual.transformer.width)
    assert written["base_acc"] == metrics["base_acc"] and written["n_trainable"] == prompts  # deep prompts only
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
