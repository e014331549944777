"""A training run end to end on the miniature data, read back by the analyses."""
import json
from pathlib import Path

import pytest

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
    removals = ["bias term removed", "rescaling removed", "both removed"]
    assert list(zip(table["ablation"], table["form"])) == [("as trained", "all blocks")] + [
        (name, form) for form in ("all blocks", "below prompt depth") for name in removals]
    # The run's prompts reach every block (depth 2 of 2): both forms are the same ablation.
    forms = table.iloc[1:].set_index(["form", "ablation"])
    assert forms.loc["all blocks"].equals(forms.loc["below prompt depth"])


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
