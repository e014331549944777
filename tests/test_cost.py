"""The study's projected cost: the work of each run, and device hours at measured rates."""
import math

import pytest

from analysis_lib.__main__ import main
from analysis_lib.data.registry import COOP_TEST_SIZES, PAPER_DATASETS
from analysis_lib.study import cost
from analysis_lib.study.experiment import load_experiment
from test_sweep import REPO

RATES = cost.Rates(device="test GPU", precision="bf16", batch_size=4, step_s={100: 0.1, 1000: 1.0},
                   eval_images_per_s=1000.0, measured="2026-01-01T00:00:00Z")


@pytest.fixture
def paper(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    return {run.run_id: run for run in load_experiment("experiments/paper.yaml", data_root=str(tmp_path)).runs()}


def test_work_of_the_paper_runs(paper):
    assert set(COOP_TEST_SIZES) == set(PAPER_DATASETS)
    ivlp = cost.run_work(paper["ImageNet/ivlp/seed1"])
    assert ivlp == cost.Work(steps=20 * math.ceil(16 * 500 / 4), classes=500, text_learned=True, test_images=50_000)
    assert cost.run_work(paper["EuroSAT/vision/seed2"]).text_learned is False
    assert cost.run_work(paper["DTD/zeroshot/seed1"]).steps == 0
    # CoOp's test sets, once per run: 7 variants x 3 seeds x 133,696 images
    assert sum(cost.run_work(run).test_images for run in paper.values()) == 21 * 133_696
    # ... of which the sweep evaluates zero-shot once per dataset: 19 evaluations of each test set
    imagenet = next(line for line in cost.summary(list(paper.values()), None).splitlines() if "ImageNet" in line)
    assert imagenet.split() == ["ImageNet", "21", "runs", "720,000", "steps", "950,000", "test", "images"]


def test_step_cost_is_linear_in_the_classes_when_the_text_tower_learns():
    assert RATES.step_seconds(500, text_learned=True) == pytest.approx(0.5)
    assert RATES.step_seconds(500, text_learned=False) == pytest.approx(0.0)  # intercept: class features once
    work = cost.Work(steps=1000, classes=100, text_learned=True, test_images=5000)
    assert RATES.seconds(work) == pytest.approx(1000 * 0.1 + 5.0)
    assert RATES.seconds(cost.Work(1, 10, True, None)) is None


def test_dry_run_prints_the_projected_hours(paper, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cost, "RATES_FILE", str(tmp_path / "gpu-check.json"))
    args = ["sweep", "experiments/paper.yaml", "--dry-run", "--data-root", str(tmp_path), "--only", "EuroSAT/*"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "no device hours" in out
    # Without OpenAI's weights here the dry run still projects, and says what the sweep would stop on.
    assert "warning: the sweep itself would stop here: experiments/paper.yaml: weights for " \
        "ViT-B-16-quickgelu / openai are not cached" in out
    cost.save_rates(RATES)
    assert cost.load_rates() == RATES
    assert main(args) == 0
    out = capsys.readouterr().out
    expected = sum(RATES.seconds(cost.run_work(run)) for run_id, run in paper.items() if run_id.startswith("EuroSAT/"))
    assert f"total {expected / 3600:.1f} device hours on test GPU" in out and "EuroSAT" in out
    (tmp_path / "gpu-check.json").write_text('{"device": 1}')
    assert main(args) == 2
    assert "gpu-check.json is not a GPU check's rates file" in capsys.readouterr().err
