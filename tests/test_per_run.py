"""The analyses stage on a miniature experiment: every table of every finished run, resumable,
and the claims table built from them."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from analysis_lib.stats import per_run
from analysis_lib.stats.claims import AVERAGE, CLAIMS, experiment_claims
from analysis_lib.study.experiment import load_experiment
from analysis_lib.study.one_run import RunSettings, run_training
from analysis_lib.study.run_folder import load_run
from analysis_lib.study.run_record import METRICS_FILE, run_folder
from analysis_lib.study.train_config import TrainConfig

pytestmark = pytest.mark.slow
N_IMAGES = 4


def publish(source: Path, folder: Path, run) -> None:
    """A finished run folder as the sweep leaves it: the run's files, its config hash stamped."""
    shutil.copytree(source, folder)
    metrics = json.loads((folder / METRICS_FILE).read_text())
    (folder / METRICS_FILE).write_text(json.dumps({**metrics, "config_hash": run.config_hash}))


@pytest.fixture(scope="module")
def experiment(ivlp_run, data_root, tmp_path_factory):
    """OxfordPets (with trimaps), seed 1: the trained ivlp run of conftest and a bias run."""
    root = tmp_path_factory.mktemp("stage")
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name": "tiny-clip", "pretrained": None}, "data_root": str(data_root),
        "output_root": str(root / "runs"), "datasets": ["OxfordPets"], "seeds": [1],
        "train": {"epochs": 2, "shots": 2, "num_workers": 0},
        "variants": {"ivlp": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2},
                     "bias": {"variant": "bias", "bias_text_depth": 2, "bias_vision_depth": 2}},
        "analysis": {"n_images": N_IMAGES}}))
    exp = load_experiment(path)
    bias = RunSettings(dataset="OxfordPets", variant="bias", data_root=str(data_root), output_dir=str(root / "bias"),
                       variant_params={"bias_text_depth": 2, "bias_vision_depth": 2}, model="tiny-clip",
                       pretrained=None, progress=False, train=TrainConfig(shots=2, epochs=2, num_workers=0))
    run_training(bias)
    for run in exp.runs():
        source = ivlp_run[0].output_dir if run.variant_name == "ivlp" else bias.output_dir
        publish(Path(source), run_folder(exp.output_root, run), run)
    return exp


def ivlp_folder(experiment) -> Path:
    run = next(r for r in experiment.runs() if r.variant_name == "ivlp")
    return run_folder(experiment.output_root, run)


def test_stage_computes_every_table_then_skips_complete_runs(experiment):
    done = per_run.run_stage(experiment, workers=0)
    assert list(done) == ["OxfordPets/ivlp/seed1"]                     # bias runs have no per-run table
    assert done["OxfordPets/ivlp/seed1"]["computed"] == [name for name, table in per_run.TABLES.items()
                                                         if table.applies("ivlp", "OxfordPets")]
    assert "known_truth" not in done["OxfordPets/ivlp/seed1"]["computed"]  # only the demo world knows its shift
    folder = ivlp_folder(experiment) / per_run.TABLES_DIR
    manifest = json.loads((folder / per_run.MANIFEST).read_text())
    ivlp_hash = json.loads((ivlp_folder(experiment) / METRICS_FILE).read_text())["config_hash"]
    assert manifest["attention"] == {"config_hash": ivlp_hash,
                                     "version": per_run.ANALYSIS_VERSION, "n_images": N_IMAGES}
    assert per_run.run_stage(experiment, workers=0) == {}              # complete: nothing to do
    share = per_run.load_table(experiment, "foreground_share")
    run = load_run(ivlp_folder(experiment))
    sample = run.sample("base", N_IMAGES)
    assert set(share.model) == {"CLIP", "prompted", "control"} and share.image.nunique() == len(sample)
    assert set(share[["dataset", "variant", "seed"]].itertuples(index=False)) == {("OxfordPets", "ivlp", 1)}
    # The manifest lists the sampled images, one class after another: every base class is there.
    assert [Path(run.settings.data_root) / p for p in manifest["sample"]["base"]] == [Path(i.path) for i in sample]
    assert {i.label for i in sample} == {i.label for i in run.splits["base"].test}
    # The identity of block 0 (an algebra check, not a claim): W/O rows there are CLIP's.
    tv = per_run.load_table(experiment, "relative_attention")
    assert tv[tv.block == 0].tv.abs().max() < 1e-5 and tv[tv.block > 0].tv.max() > 1e-3


def test_a_killed_task_is_redone_from_where_it_stopped(experiment, monkeypatch):
    per_run.run_stage(experiment, workers=0)
    folder = ivlp_folder(experiment)
    # What a kill during "causal_ablation" leaves: the tables before it recorded, it and the rest not.
    names = list(per_run.TABLES)
    killed = names.index("causal_ablation")
    manifest = json.loads((folder / per_run.TABLES_DIR / per_run.MANIFEST).read_text())
    (folder / per_run.TABLES_DIR / per_run.MANIFEST).write_text(
        json.dumps({k: v for k, v in manifest.items() if k in names[:killed]}))
    (folder / per_run.TABLES_DIR / "causal_ablation.csv").write_text("half a table")
    before = (folder / per_run.TABLES_DIR / "attention.csv").stat().st_mtime_ns
    done = per_run.run_stage(experiment, workers=0)
    assert done["OxfordPets/ivlp/seed1"]["computed"] == [n for n in names[killed:]
                                                         if per_run.TABLES[n].applies("ivlp", "OxfordPets")]
    assert (folder / per_run.TABLES_DIR / "attention.csv").stat().st_mtime_ns == before
    assert "as trained" in (folder / per_run.TABLES_DIR / "causal_ablation.csv").read_text()
    # A failing table is reported with its run, the others of the run stay recorded.
    monkeypatch.setitem(per_run.TABLES, "causal_ablation", per_run.PerRunTable(
        "causal_ablation", lambda run, n: 1 / 0))
    (folder / per_run.TABLES_DIR / per_run.MANIFEST).write_text("{}")
    with pytest.raises(per_run.PerRunStageError, match="OxfordPets/ivlp/seed1: ZeroDivisionError"):
        per_run.run_stage(experiment, workers=0)
    recorded = json.loads((folder / per_run.TABLES_DIR / per_run.MANIFEST).read_text())
    assert set(recorded) - {"sample"} == set(names[:killed])


def test_claims_table_has_a_row_per_claim_and_dataset(experiment):
    per_run.run_stage(experiment, workers=0)
    table = experiment_claims(experiment)
    contributions = per_run.load_table(experiment, "contributions")
    # C6e: no 2nd dataset; C7: the demo world only
    expected = set(CLAIMS) - {"C6e", "C7"} - (set() if len(contributions) else {"C4r"})
    assert set(table.claim) == expected
    assert set(zip(table.claim, table.dataset)) == {(c, d) for c in expected for d in ("OxfordPets", AVERAGE)}
    c6 = table.set_index(["claim", "dataset"]).loc[("C6", "OxfordPets")]
    metrics = per_run.run_metrics(experiment).set_index("variant_name").hm
    assert c6.effect == pytest.approx(metrics["bias"] - metrics["ivlp"])
    # One seed: an effect, but no interval, and the verdict says so (the seed is the unit).
    assert table.verdict.eq("too few samples").all() and table.low.isna().all()
    assert table.set_index(["claim", "dataset"]).loc[("C2", "OxfordPets")].unit.endswith("images")


def test_the_control_is_the_runs_initial_parameters(experiment, data_root, tmp_path):
    """The same run trained for zero epochs saves its initial parameters: the control equals that
    model, and so do its tables (here the attention statistics)."""
    from analysis_lib.stats import analyses
    trained = load_run(ivlp_folder(experiment))
    settings = RunSettings.from_parameters({**trained.metrics["settings"], "output_dir": str(tmp_path / "untrained"),
                                            "epochs": 0})
    run_training(settings)
    untrained = load_run(tmp_path / "untrained")
    control = trained.control("base")
    for name, value in untrained.model("base").trainable_state().items():
        torch.testing.assert_close(control.trainable_state()[name], value, rtol=0, atol=0)
    assert not torch.equal(trained.model("base").trainable_state()["vision_tower.prompts.vectors"],
                           control.trainable_state()["vision_tower.prompts.vectors"])
    loader = trained.test_loader("base", N_IMAGES)
    pd.testing.assert_frame_equal(analyses.attention_statistics({"m": control}, loader),
                                  analyses.attention_statistics({"m": untrained.model("base")}, loader))
    novel = trained.control("novel").trainable_state()
    assert all(torch.equal(novel[k], v) for k, v in control.trainable_state().items())
