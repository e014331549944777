"""The study's projected cost: the work of each run, and device hours at measured rates."""
import dataclasses
import math

import pytest

from analysis_lib.__main__ import main
from analysis_lib.data import base_class_count, get_spec, prompt_classnames, read_classnames
from analysis_lib.data.registry import COOP_TEST_SIZES, PAPER_DATASETS
from analysis_lib.model.prompted import build_model, text_positions
from analysis_lib.study import cost
from analysis_lib.study.experiment import load_experiment
from test_sweep import REPO

RATES = cost.Rates(device="test GPU", precision="bf16", batch_size=4,
                   step_s={"ivlp": {1000: 0.1, 10000: 1.0}, "text": {1000: 0.1, 10000: 0.7},
                           "vision": {1000: 0.08, 10000: 0.08}},
                   eval_images_per_s=1000.0, measured="2026-01-01T00:00:00Z")


@pytest.fixture
def paper(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    return {run.run_id: run for run in load_experiment("experiments/paper.yaml", data_root=str(tmp_path)).runs()}


@pytest.fixture
def paper_with_data(data_root, monkeypatch):
    monkeypatch.chdir(REPO)
    return {run.run_id: run for run in load_experiment("experiments/paper.yaml", data_root=str(data_root)).runs()}


def test_work_of_the_paper_runs(paper):
    assert set(COOP_TEST_SIZES) == set(PAPER_DATASETS)
    ivlp = cost.run_work(paper["ImageNet/ivlp/seed1"])
    # no data under this root: the steps and test images are known, the prompts' positions are not
    assert ivlp == cost.Work(steps=20 * math.ceil(16 * 500 / 4), variant="ivlp", text_positions=None,
                             test_images=50_000)
    assert cost.run_work(paper["DTD/zeroshot/seed1"]).steps == 0
    # CoOp's test sets, once per run: 7 variants x 3 seeds x 133,696 images
    assert sum(cost.run_work(run).test_images for run in paper.values()) == 21 * 133_696
    # ... of which the sweep evaluates zero-shot once per dataset: 19 evaluations of each test set
    imagenet = next(line for line in cost.summary(list(paper.values()), None).splitlines() if "ImageNet" in line)
    assert imagenet.split() == ["ImageNet", "21", "runs", "720,000", "steps", "950,000", "test", "images"]


@pytest.mark.parametrize("dataset", ["ImageNet", "FGVCAircraft", "OxfordPets"])
@pytest.mark.parametrize("variant", ["ivlp", "text", "vision", "bias_both_12"])
def test_prompt_positions_are_those_the_variant_runs_on_the_datasets_own_classes(
        paper_with_data, data_root, vitb16, dataset, variant):
    """The cost model prices the token positions the model itself runs: the dataset's base-class
    prompts, written and tokenised as the variant writes them, grouped by length as the model groups them."""
    run = paper_with_data[f"{dataset}/{variant}/seed1"]
    names = read_classnames(dataset, data_root)
    model = build_model(run.params["variant"], vitb16, prompt_classnames(names[:base_class_count(len(names))]),
                        get_spec(dataset).template, **run.params["variant_params"])
    work = cost.run_work(run)
    assert work.variant == variant and work.text_positions == text_positions(model.text_groups) > 0


def test_each_variant_is_priced_from_its_own_steps():
    # a + b * positions through each variant's two points
    assert RATES.step_seconds("ivlp", 5500) == pytest.approx(0.55)
    assert RATES.step_seconds("text", 5500) == pytest.approx(0.4)
    assert RATES.step_seconds("vision", 5500) == pytest.approx(0.08)   # class features once per run
    assert RATES.step_seconds("bias_both", 5500) is None               # not timed by the check
    work = cost.Work(steps=1000, variant="text", text_positions=1000, test_images=5000)
    assert RATES.seconds(work) == pytest.approx(1000 * 0.1 + 5.0)
    assert RATES.seconds(cost.Work(0, "zeroshot", 0, 5000)) == pytest.approx(5.0)
    assert RATES.seconds(cost.Work(1, "ivlp", None, 10)) is None     # class names not readable
    assert RATES.seconds(cost.Work(1, "ivlp", 10, None)) is None     # no test-set size
    assert RATES.seconds(cost.Work(1, "bias_both", 10, 10)) is None  # variant not timed


def test_prompt_lengths_count_the_tokens_the_variant_writes():
    params = {"text_n_ctx": 4, "vision_n_ctx": 4, "ctx_init": "a photo of a"}
    lengths = cost.prompt_lengths("ViT-B-16-quickgelu", "ivlp", params, "unused {}", ["cat", "great white shark"])
    assert lengths == [2 + 4 + 1 + 1, 2 + 4 + 3 + 1]   # [SOS] [EOS], "a photo of a", the name, "."
    text_only = cost.prompt_lengths("ViT-B-16-quickgelu", "zeroshot", {}, "itap of a {} in the dark.", ["cat"])
    assert text_only == [2 + 9]                         # the template's words and the name


def test_dry_run_prints_the_projected_hours(paper, copy_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cost, "RATES_FILE", str(tmp_path / "gpu-check.json"))
    args = ["sweep", "experiments/paper.yaml", "--dry-run", "--data-root", str(tmp_path), "--only", "EuroSAT/*"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "no device hours" in out
    # Without OpenAI's weights here the dry run still projects, and says what the sweep would stop on.
    assert "warning: the sweep itself would stop here: experiments/paper.yaml: weights for " \
        "ViT-B-16-quickgelu / openai are not cached" in out
    learning = {run.variant_name for run in paper.values() if cost.run_work(run).steps}
    rates = dataclasses.replace(RATES, step_s={v: RATES.step_s["ivlp"] for v in learning})
    cost.save_rates(rates)
    assert cost.load_rates() == rates
    assert main(args) == 0   # no EuroSAT under the data root: its prompts cannot be priced
    assert "not counted: EuroSAT (class names not readable under the data root" in capsys.readouterr().out
    copy_dataset("EuroSAT")  # into tmp_path, the data root
    runs = load_experiment("experiments/paper.yaml", data_root=str(tmp_path)).runs()
    assert main(args) == 0
    out = capsys.readouterr().out
    expected = sum(rates.seconds(cost.run_work(run)) for run in runs
                   if run.dataset == "EuroSAT" and (run.seed == 1 or cost.run_work(run).steps))
    assert f"total {expected / 3600:.1f} device hours on test GPU" in out and "not counted" not in out
    (tmp_path / "gpu-check.json").write_text('{"device": 1}')
    assert main(args) == 2
    assert "gpu-check.json is not a GPU check's rates file" in capsys.readouterr().err
