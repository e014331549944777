"""The sweep around the train notebook: experiment files, resuming, interrupted and failing runs,
the kernel's interpreter, aggregation. A tiny generated notebook stands in for the trainer."""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import torch
import yaml
from safetensors.torch import load_file

from analysis_lib.study import experiment as experiment_module
from analysis_lib.__main__ import main
from analysis_lib.study.aggregate import AVERAGE, load_metrics, results_table, write_results
from analysis_lib.study.execution import OneGPUPerWorker
from analysis_lib.study.run_record import METRICS_FILE, harmonic_mean, is_complete
from analysis_lib.study.experiment import ExperimentError, config_hash, hashed_config, load_experiment
from analysis_lib.study.sweep import run_sweep, select_runs
from analysis_lib.checks import ConfigError
from analysis_lib.study.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
KNOWN = ("Toy", "Other")
PAPER_DATASETS = ("ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101",
                  "FGVCAircraft", "SUN397", "DTD", "EuroSAT", "UCF101")


def write_notebook(path: Path, control: Path) -> None:
    """A stand-in for notebooks/train.ipynb: records each execution in control/executions.log,
    fails when control/fail-<dataset>-<seed> exists, sleeps while control/sleep exists, and
    writes metrics.json (accuracies derived from the seed) into output_dir."""
    params = nbformat.v4.new_code_cell('dataset = "Toy"\nvariant = "ivlp"\nvariant_params = {}\n'
                                       'seed = 1\noutput_dir = "out"')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(textwrap.dedent(f"""\
        leftover = "metrics" in globals()  # a reused kernel must start each run with a clean namespace
        import json, os, pathlib, sys, time
        control = pathlib.Path({str(control)!r})
        with open(control / "executions.log", "a") as log:
            log.write(f"{{dataset}}/{{variant}}/{{seed}}\\n")
        if (control / f"fail-{{dataset}}-{{seed}}").exists():
            raise RuntimeError(f"told to fail on {{dataset}} seed {{seed}}\\nsecond line")
        if (control / "sleep").exists():
            (control / "sleeping.pid").write_text(str(os.getpid()))
            time.sleep(60)
        metrics = {{"dataset": dataset, "variant": variant, "seed": seed, "base_acc": 70.0 + seed,
                    "novel_acc": 60.0 - seed, "hm": 0.0, "n_trainable": 8, "wall_time_s": 0.1,
                    "executable": sys.executable,
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "variant_params": variant_params, "kernel_pid": os.getpid(), "leftover": leftover}}
        pathlib.Path(output_dir, "metrics.json").write_text(json.dumps(metrics))"""))
    nb = nbformat.v4.new_notebook(cells=[params, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


IVLP = {"ivlp": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2}}  # fits tiny-clip's 2 blocks


def experiment_dict(**changes) -> dict:
    spec = {"datasets": ["Toy"], "seeds": [1, 2],
            "variants": {"ivlp": {"variant": "ivlp", "text_n_ctx": 4, "text_depth": 2, "vision_depth": 2},
                         "bias_mlp": {"variant": "bias", "bias_where": "mlp", "bias_text_depth": 2,
                                      "bias_vision_depth": 2, "lr": 0.01}},
            "train": {"epochs": 2, "warmup_lr": 1.0e-5},
            "model": {"name": "tiny-clip", "pretrained": None},
            "data_root": "data", "output_root": "runs", "notebook": "train.ipynb"}
    spec.update(changes)
    return spec


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory with a stand-in notebook, a data folder and an experiment file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiment_module, "registered_datasets", lambda: list(KNOWN))
    (tmp_path / "control").mkdir()
    (tmp_path / "data").mkdir()
    write_notebook(tmp_path / "train.ipynb", tmp_path / "control")
    return tmp_path


def write_experiment(folder: Path, **changes) -> Path:
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment_dict(**changes), sort_keys=False))
    return path


def executions(project: Path) -> list[str]:
    log = project / "control" / "executions.log"
    return log.read_text().split() if log.exists() else []


# --- experiment files -------------------------------------------------------------------------

def test_runs_expand_with_stable_ids_and_hashes(project):
    exp = load_experiment(write_experiment(project), KNOWN)
    runs = exp.runs()
    assert [r.run_id for r in runs] == ["Toy/ivlp/seed1", "Toy/ivlp/seed2",
                                        "Toy/bias_mlp/seed1", "Toy/bias_mlp/seed2"]
    ivlp, bias = runs[0].params, runs[2].params
    assert ivlp["variant"] == "ivlp" and ivlp["variant_params"] == {"text_n_ctx": 4, "text_depth": 2,
                                                                    "vision_depth": 2}
    assert ivlp["lr"] == TrainConfig().lr and bias["lr"] == 0.01  # a variant overrides train keys
    assert bias["variant_params"] == {"bias_where": "mlp", "bias_text_depth": 2, "bias_vision_depth": 2}
    assert ivlp["epochs"] == 2
    assert set(TrainConfig.keys()) <= set(ivlp)
    assert len({r.config_hash for r in runs}) == 4
    # Stable across loads, blind to where the data lies, sensitive to every other parameter.
    other_root = project / "elsewhere"
    other_root.mkdir()
    again = load_experiment(write_experiment(project), KNOWN, data_root=str(other_root)).runs()
    assert [r.config_hash for r in again] == [r.config_hash for r in runs]
    assert again[0].params["data_root"] == str(other_root)
    assert config_hash({**ivlp, "seed": 3}) != runs[0].config_hash
    # An integer lr hashes like the same float.
    as_int = load_experiment(write_experiment(project, train={"epochs": 2, "lr": 1}), KNOWN).runs()
    as_float = load_experiment(write_experiment(project, train={"epochs": 2, "lr": 1.0}), KNOWN).runs()
    assert as_int[0].config_hash == as_float[0].config_hash


def test_paper_and_demo_experiments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notebooks").mkdir()
    write_notebook(tmp_path / "notebooks" / "train.ipynb", tmp_path)
    paper = load_experiment(REPO / "experiments" / "paper.yaml", PAPER_DATASETS, data_root=str(tmp_path))
    runs = paper.runs()
    assert len(runs) == 11 * 7 * 3 and len({r.run_id for r in runs}) == len(runs)
    assert paper.train == TrainConfig()  # the file writes PromptSRC's protocol out: the defaults
    assert (paper.model, paper.pretrained) == ("ViT-B-16-quickgelu", "openai")
    assert paper.analysis.variant_name == "ivlp"  # the chapters analyse the paper's IVLP runs
    ivlp = next(r for r in runs if r.variant_name == "ivlp").params["variant_params"]
    assert {k: ivlp[k] for k in ("text_n_ctx", "text_depth", "vision_n_ctx", "vision_depth")} == \
        {"text_n_ctx": 4, "text_depth": 9, "vision_n_ctx": 4, "vision_depth": 9}
    demo_spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    demo = load_experiment(REPO / "experiments" / "demo.yaml", demo_spec["datasets"], data_root=str(tmp_path))
    assert demo.model == "demo-clip" and demo.train.epochs < TrainConfig().epochs


@pytest.mark.parametrize("changes, message", [
    ({"dataset": ["Toy"]}, "top level: unknown key 'dataset' (did you mean 'datasets'?); valid: analysis, cache_dir, data_root, datasets"),
    ({"datasets": ["Toyy"]}, "datasets: unknown dataset 'Toyy' (did you mean 'Toy'?); valid: Toy, Other"),
    ({"variants": {"v": {"variant": "ivpl"}}}, "variants.v.variant: unknown variant 'ivpl' (did you mean 'ivlp'?)"),
    ({"variants": {"v": {"variant": "ivlp", "n_ctx": 4}}}, "variants.v: unknown key 'n_ctx'"),
    ({"variants": {"v": {"variant": "bias", "bias_where": "mlpp"}}}, "variants.v: bias_where must be one of attn, mlp, both, got 'mlpp'"),
    ({"variants": {"v": {"variant": "ivlp", "text_depth": 9.5}}}, "variants.v: text_depth must be an integer, got 9.5 (float)"),
    ({"variants": {"v": {"variant": "ivlp", "ctx_init": 3}}}, "variants.v: ctx_init must be a string or null, got 3 (int)"),
    ({"variants": {"v": {"variant": "ivlp", "lr": "high"}}}, "variants.v.lr must be a number, got 'high' (str)"),
    ({"variants": {"bad/name": {"variant": "ivlp"}}}, "variant name 'bad/name' must be"),
    ({"seeds": [1, "2"]}, "seeds[1] must be an integer, got '2' (str)"),
    ({"seeds": [1, 1]}, "seeds lists 1 more than once"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number, got 'fast' (str)"),
    ({"train": {"warmup_lr": "1e-5"}}, "train.warmup_lr must be a number, got '1e-5' (str); YAML reads 1e-5 as text"),
    ({"train": {"epoch": 3}}, "train: unknown key 'epoch' (did you mean 'epochs'?)"),
    ({"train": {"precision": "fp8"}}, "train.precision must be one of auto, fp32, fp16, bf16, got 'fp8'"),
    ({"model": {"name": "tiny-clip"}}, "model.pretrained is missing"),
    ({"model": {"name": 3, "pretrained": None}}, "model.name must be a string, got 3 (int)"),
    ({"data_root": "no/such/folder"}, "data_root no/such/folder (here: "),
    ({"notebook": "missing.ipynb"}, "notebook missing.ipynb not found"),
])
def test_bad_experiment_inputs_give_one_clear_error(project, changes, message):
    path = write_experiment(project, **changes)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path, KNOWN)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_output_root_that_is_a_file_is_named(project):
    (project / "taken").write_text("a file")
    path = write_experiment(project, output_root="taken")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path, KNOWN)
    assert str(info.value) == f"{path}: output_root taken is a file; give a folder (or move the file away)"


@pytest.mark.parametrize("changes, message", [
    ({"model": {"name": "tiny-clipp", "pretrained": None}}, "unknown model 'tiny-clipp'"),
    ({"model": {"name": "tiny-clip", "pretrained": "missing.pt"}},
     "pretrained='missing.pt' is neither a checkpoint file nor a known tag"),
    ({"model": {"name": "ViT-B-16", "pretrained": "openai"}},
     "model 'ViT-B-16' uses GELU, but the 'openai' weights were trained with QuickGELU and would "
     "compute other features; use model 'ViT-B-16-quickgelu' with pretrained 'openai'"),
    ({"device": "gpu"}, "device 'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
    ({"variants": {"deep": {"variant": "ivlp", "text_depth": 2, "vision_depth": 9}}},
     "variants.deep: vision_depth must be in 1..2 for this backbone (2 blocks), got 9 (model tiny-clip)"),
    ({"variants": {"v": {"variant": "vision", "text_template": "a photo"}}},
     "variants.v: text_template must hold one {} for the class name, got 'a photo'"),
])
def test_dry_run_checks_what_would_fail_every_run(project, capsys, changes, message):
    """Each of these would fail every run after its kernel started; the dry run and the sweep
    refuse them at once, naming the setting."""
    path = write_experiment(project, **changes)
    for extra in (["--dry-run"], ["--workers", "0"]):
        assert main(["sweep", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and message in err
    assert executions(project) == [] and not (project / "runs").exists()


def test_missing_key_and_variant_checks(project):
    spec = experiment_dict()
    del spec["model"]
    path = project / "nomodel.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ExperimentError, match="missing key 'model'"):
        load_experiment(path, KNOWN)
    bad = write_experiment(project, variants={"b": {"variant": "bias", "text_n_ctx": 4}})
    with pytest.raises(ExperimentError, match="variants.b: variant 'bias' does not take text_n_ctx"):
        load_experiment(bad, KNOWN)
    stale = write_experiment(project, analysis={"dataset": "Toy"})  # the setting a file may still carry
    with pytest.raises(ExperimentError, match="analysis: unknown key 'dataset'"):
        load_experiment(stale, KNOWN)


def test_train_config_checks_values_directly():
    with pytest.raises(ConfigError, match="batch_size must be an integer, got '4'"):
        TrainConfig(batch_size="4")
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)


# --- the sweep --------------------------------------------------------------------------------

@pytest.mark.slow
def test_resumed_sweep_does_no_work_for_completed_runs(project):
    runs = load_experiment(write_experiment(project, seeds=[1]), KNOWN).runs()
    first = run_sweep(runs, "train.ipynb", "runs", workers=0)
    assert [r.status for r in first] == ["done", "done"]
    assert len(executions(project)) == 2
    for run in runs:
        metrics = json.loads((project / "runs" / run.run_id / METRICS_FILE).read_text())
        assert metrics["config_hash"] == run.config_hash == config_hash(metrics["config"])
        assert metrics["config"] == hashed_config(run.params) and metrics["variant_name"] == run.variant_name
        assert metrics["variant_params"] == run.params["variant_params"]  # the notebook got them
        assert metrics["papermill"]["kernel_s"] > 0 and len(metrics["papermill"]["cells"]) >= 2
        assert (project / "runs" / run.run_id / "train.ipynb").is_file()
    assert not list((project / "runs").rglob("*.tmp-*"))

    second = run_sweep(runs, "train.ipynb", "runs", workers=0)
    assert [r.status for r in second] == ["skipped", "skipped"]
    assert len(executions(project)) == 2  # no notebook ran
    # A changed configuration is stale: re-run, and the folder is replaced.
    changed = load_experiment(write_experiment(project, seeds=[1], train={"epochs": 3}), KNOWN).runs()
    assert [r.status for r in run_sweep(changed[:1], "train.ipynb", "runs", workers=0)] == ["done"]
    assert is_complete(project / "runs" / changed[0].run_id, changed[0].config_hash)
    assert not is_complete(project / "runs" / changed[0].run_id, runs[0].config_hash)


@pytest.mark.slow
def test_half_finished_runs_are_rerun(project):
    runs = load_experiment(write_experiment(project, seeds=[1], variants=IVLP,
                                            datasets=["Toy", "Other"]), KNOWN).runs()
    toy, other = (project / "runs" / r.run_id for r in runs)
    leftover = toy.with_name(toy.name + ".tmp-0123abcd")  # a run killed before its rename
    leftover.mkdir(parents=True)
    (leftover / METRICS_FILE).write_text(json.dumps({"config_hash": runs[0].config_hash}))
    other.mkdir(parents=True)  # a folder whose metrics.json the sweep never stamped
    (other / METRICS_FILE).write_text(json.dumps({"base_acc": 1.0}))
    (other / "stale.txt").write_text("from an old attempt")
    assert not is_complete(toy, runs[0].config_hash) and not is_complete(other, runs[1].config_hash)

    results = run_sweep(runs, "train.ipynb", "runs", workers=0)
    assert [r.status for r in results] == ["done", "done"] and len(executions(project)) == 2
    assert not leftover.exists() and not (other / "stale.txt").exists()
    assert is_complete(toy, runs[0].config_hash) and is_complete(other, runs[1].config_hash)
    assert sorted(p.name for p in toy.parent.iterdir()) == ["seed1"]


@pytest.mark.slow
def test_killed_sweep_leaves_nothing_complete_and_is_rerun(project, capsys):
    """Kill a real sweep process while its notebook runs; meanwhile a second sweep into the same
    folder is refused; after the kill the next sweep re-runs that run."""
    exp = write_experiment(project, seeds=[1], variants=IVLP)
    (project / "control" / "sleep").touch()
    script = ("import sys, analysis_lib.study.experiment as e; e.registered_datasets = lambda: ['Toy'];"
              "from analysis_lib.__main__ import main; sys.exit(main(sys.argv[1:]))")
    sweep_process = subprocess.Popen([sys.executable, "-c", script, "sweep", str(exp), "--workers", "0"],
                                     cwd=project, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = project / "control" / "sleeping.pid"
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline and sweep_process.poll() is None:
        time.sleep(0.2)
    assert pid_file.exists(), "the notebook never started"
    assert main(["sweep", str(exp), "--workers", "0"]) == 2  # a second sweep into the same folder
    assert f"sweep (pid {sweep_process.pid}) is writing into" in capsys.readouterr().err
    os.killpg(sweep_process.pid, signal.SIGKILL)
    sweep_process.wait()
    kernel_pid = int(pid_file.read_text())
    try:  # the kernel has its own session: end it too
        os.kill(kernel_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    folder = project / "runs" / "Toy" / "ivlp" / "seed1"
    assert not folder.exists() and list(folder.parent.glob("seed1.tmp-*"))

    (project / "control" / "sleep").unlink()
    assert main(["sweep", str(exp), "--workers", "0"]) == 0
    assert json.loads((folder / METRICS_FILE).read_text())["config_hash"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["seed1"]  # the leftover is gone
    assert executions(project) == ["Toy/ivlp/1", "Toy/ivlp/1"]


@pytest.mark.slow
def test_failing_run_on_local_cluster_does_not_stop_the_others(project, capsys):
    """The one test through a real LocalCluster: two workers, three runs, one fails."""
    exp = write_experiment(project, seeds=[1, 2, 3], variants=IVLP)
    (project / "control" / "fail-Toy-2").touch()
    assert main(["sweep", str(exp), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "done 2 · skipped 0 · failed 1" in out
    failed_line = next(line for line in out.splitlines() if line.startswith("Toy/ivlp/seed2"))
    assert "RuntimeError: told to fail on Toy seed 2" in failed_line and "second line" not in out
    failed = project / "runs" / "Toy" / "ivlp" / "seed2.failed"
    assert str(failed) in failed_line and "told to fail" in (failed / "train.ipynb").read_text()
    for seed in (1, 3):
        metrics = json.loads((project / "runs" / "Toy" / "ivlp" / f"seed{seed}" / METRICS_FILE).read_text())
        assert metrics["config_hash"] and metrics["executable"] == sys.executable
    table = json.loads((project / "runs" / "results.json").read_text())
    assert {row["dataset"]: row["n_seeds"] for row in table} == {"Toy": 2, AVERAGE: 2}

    # The rerun executes only the failed run, and clears its .failed folder.
    (project / "control" / "fail-Toy-2").unlink()
    assert main(["sweep", str(exp), "--workers", "0"]) == 0
    assert "done 1 · skipped 2 · failed 0" in capsys.readouterr().out
    assert not failed.exists()


@pytest.mark.slow
def test_kernel_runs_on_this_interpreter_whatever_kernelspecs_say(project, monkeypatch):
    """A user-wide 'python3' kernelspec for another interpreter must not be used."""
    from jupyter_client.kernelspec import KernelSpecManager
    bogus = project / "jupyter" / "kernels" / "python3"
    bogus.mkdir(parents=True)
    (bogus / "kernel.json").write_text(json.dumps({"argv": ["/nonexistent/python", "-m", "ipykernel_launcher",
                                                            "-f", "{connection_file}"],
                                                   "display_name": "elsewhere", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(project / "jupyter"))
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == "/nonexistent/python"
    runs = load_experiment(write_experiment(project, seeds=[1], variants=IVLP),
                           KNOWN).runs()
    assert [r.status for r in run_sweep(runs, "train.ipynb", "runs", workers=0)] == ["done"]
    metrics = json.loads((project / "runs" / runs[0].run_id / METRICS_FILE).read_text())
    assert metrics["executable"] == sys.executable


def test_dry_run_and_only(project, capsys):
    exp = write_experiment(project)
    assert main(["sweep", str(exp), "--dry-run", "--only", "*/bias_mlp/*"]) == 0
    out = capsys.readouterr().out
    assert "Toy/bias_mlp/seed1" in out and "to run" in out and "Toy/ivlp" not in out
    assert not (project / "runs").exists() and executions(project) == []
    assert main(["sweep", str(exp), "--only", "Nothing/*"]) == 2
    assert "--only Nothing/* matches none of the 4 runs" in capsys.readouterr().err
    assert main(["sweep", str(write_experiment(project, datasets=["Nope"])), "--dry-run"]) == 2
    assert "unknown dataset 'Nope'" in capsys.readouterr().err


def test_select_runs_by_pattern(project):
    runs = load_experiment(write_experiment(project), KNOWN).runs()
    assert [r.run_id for r in select_runs(runs, ["*/seed2", "Toy/ivlp/seed1"])] == \
        ["Toy/ivlp/seed1", "Toy/ivlp/seed2", "Toy/bias_mlp/seed2"]
    assert select_runs(runs, None) == runs


def test_one_gpu_per_local_worker(monkeypatch):
    class Worker:
        def __init__(self, name):
            self.name = name
    plugin = OneGPUPerWorker(["2", "5"])
    seen = []
    for name in (0, 1, 2):
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        plugin.setup(Worker(name))
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["2", "5", "2"]


# --- aggregation ------------------------------------------------------------------------------

def test_aggregate_mean_std_and_average(tmp_path):
    accs = {("A", 1): (80.0, 60.0), ("A", 2): (84.0, 64.0), ("B", 1): (50.0, 70.0), ("B", 2): (56.0, 66.0)}
    records = [{"dataset": d, "variant_name": "ivlp", "seed": s, "base_acc": b, "novel_acc": n,
                "n_trainable": 46080} for (d, s), (b, n) in accs.items()]
    records.append({"dataset": "A", "variant_name": "zeroshot", "seed": 1, "base_acc": 70.0,
                    "novel_acc": 75.0, "n_trainable": 0})  # no B: no Average row for zeroshot
    table = results_table(records).set_index(["dataset", "variant_name"])
    row = table.loc[("A", "ivlp")]
    assert row.base_mean == 82.0 and row.novel_mean == 62.0 and row.n_seeds == 2
    assert row.base_std == pytest.approx(statistics.stdev([80.0, 84.0]))
    assert row.hm == pytest.approx(2 * 82 * 62 / (82 + 62))
    assert row.hm_std == pytest.approx(statistics.stdev([2 * 80 * 60 / 140, 2 * 84 * 64 / 148]))
    avg = table.loc[(AVERAGE, "ivlp")]
    per_seed_base = [(80 + 50) / 2, (84 + 56) / 2]
    assert avg.base_mean == pytest.approx((82 + 53) / 2)
    assert avg.base_std == pytest.approx(statistics.stdev(per_seed_base))
    assert avg.hm == pytest.approx(harmonic_mean(avg.base_mean, avg.novel_mean))
    assert (AVERAGE, "zeroshot") not in table.index
    assert table.loc[("A", "zeroshot")].n_seeds == 1 and table.loc[("A", "zeroshot")].base_std != \
        table.loc[("A", "zeroshot")].base_std  # NaN: one seed has no spread

    csv, js = write_results(results_table(records), tmp_path)
    assert csv.read_text().splitlines()[0].startswith("dataset,variant_name,n_seeds,base_mean")
    assert len(json.loads(js.read_text())) == len(table) and not list(tmp_path.glob("*.tmp"))
    os.utime(csv, (1, 1))                             # the same table again: the file is not touched,
    write_results(results_table(records), tmp_path)   # so the analyses built from it stay up to date
    assert csv.stat().st_mtime == 1
    write_results(results_table(records[:-1]), tmp_path)
    assert csv.stat().st_mtime > 1
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"dataset": "A"}))
    with pytest.raises(ValueError, match="lacks variant_name, seed"):
        load_metrics([bad])


def test_harmonic_mean():
    assert harmonic_mean(69.34, 74.22) == pytest.approx(71.70, abs=0.005)  # zero-shot CLIP, 11 datasets
    assert harmonic_mean(0, 0) == 0.0
    assert list(harmonic_mean([50.0, 0.0], [50.0, 0.0])) == [50.0, 0.0]


def test_analysis_section_defaults_and_checks(project):
    path = write_experiment(project, analysis={"n_images": 8})
    analysis = load_experiment(path, KNOWN).analysis
    experiment = load_experiment(path, KNOWN)
    assert analysis.n_images == 8
    assert analysis.seed == experiment.seeds[0] and analysis.variant_name in experiment.variants
    bad = write_experiment(project, analysis={"variant_name": "nope"})
    with pytest.raises(ExperimentError, match="analysis.variant_name: unknown variant_name 'nope'"):
        load_experiment(bad, KNOWN)
    stale = write_experiment(project, analysis={"dataset": "Toy"})  # the setting a file may still carry
    with pytest.raises(ExperimentError, match="analysis: unknown key 'dataset'"):
        load_experiment(stale, KNOWN)


# --- reused kernels -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("reuse", [False, True])
def test_reused_kernel_runs_every_notebook_in_one_clean_process(project, reuse):
    (project / "control" / "fail-Toy-1").touch()  # a failing run must not spoil the kernel's next runs
    runs = load_experiment(write_experiment(project), KNOWN).runs()
    results = run_sweep(runs, "train.ipynb", "runs", workers=0, reuse_kernels=reuse)
    assert [r.status for r in results] == ["failed", "done", "failed", "done"]
    metrics = [json.loads((project / r.folder / METRICS_FILE).read_text()) for r in results if r.status == "done"]
    assert not any(m["leftover"] for m in metrics)
    assert (len({m["kernel_pid"] for m in metrics}) == 1) == reuse


@pytest.mark.slow
def test_reused_kernel_trains_exactly_like_a_fresh_one(data_root, tmp_path, monkeypatch):
    """The real train notebook: ivlp after a bias run in the same kernel equals ivlp in a new kernel."""
    monkeypatch.chdir(REPO)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "datasets": ["OxfordPets"], "seeds": [1], "model": {"name": "tiny-clip", "pretrained": None},
        "data_root": str(data_root), "output_root": str(tmp_path / "reused"),
        "train": {"shots": 2, "epochs": 2, "num_workers": 0},
        "variants": {"bias": {"variant": "bias", "bias_text_depth": 2, "bias_vision_depth": 2},
                     "ivlp": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2}}}))
    runs = load_experiment(path).runs()
    reused = run_sweep(runs, "notebooks/train.ipynb", str(tmp_path / "reused"), workers=0, reuse_kernels=True)
    fresh = run_sweep(runs[1:], "notebooks/train.ipynb", str(tmp_path / "fresh"), workers=0)
    assert [r.status for r in reused + fresh] == ["done"] * 3
    a, b = (load_file(str(Path(r.folder) / "trainable.safetensors")) for r in (reused[1], fresh[0]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_results_are_bit_identical_in_this_process_and_on_dask_workers(data_root, tmp_path, monkeypatch):
    """--workers 0 and --workers 1 train alike although their kernels inherit different thread
    counts (Dask sets OMP_NUM_THREADS=1 in its workers; here this process's is 2)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "datasets": ["OxfordPets"], "seeds": [1], "model": {"name": "tiny-clip", "pretrained": None},
        "data_root": str(data_root), "output_root": str(tmp_path / "runs"),
        "train": {"shots": 2, "epochs": 2, "num_workers": 0},
        "variants": {"ivlp": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2}}}))
    runs = load_experiment(path).runs()
    here, dask = (run_sweep(runs, "notebooks/train.ipynb", str(tmp_path / name), workers=workers)[0]
                  for name, workers in (("here", 0), ("dask", 1)))
    assert here.status == dask.status == "done"
    a, b = (load_file(str(Path(r.folder) / "trainable.safetensors")) for r in (here, dask))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (Path(here.folder) / "loss.csv").read_text() == (Path(dask.folder) / "loss.csv").read_text()


def test_zeroshot_runs_once_per_dataset_and_is_shared_across_seeds(project, capsys):
    exp = write_experiment(project, seeds=[1, 2, 3], variants={"zeroshot": {"variant": "zeroshot"},
                                                               "ivlp": {"variant": "ivlp", "text_depth": 2,
                                                                        "vision_depth": 2}})
    assert main(["sweep", str(exp), "--workers", "0"]) == 0
    assert "done 4 · shared 2 · skipped 0 · failed 0" in capsys.readouterr().out
    assert sorted(executions(project)) == ["Toy/ivlp/1", "Toy/ivlp/2", "Toy/ivlp/3", "Toy/zeroshot/1"]
    runs = {run.run_id: run for run in load_experiment(exp, KNOWN).runs()}
    for seed in (1, 2, 3):
        run = runs[f"Toy/zeroshot/seed{seed}"]
        folder = project / "runs" / run.run_id
        assert is_complete(folder, run.config_hash)                       # each seed's own hash
        metrics = json.loads((folder / METRICS_FILE).read_text())
        assert metrics["seed"] == seed and metrics["base_acc"] == 71.0  # seed 1's result
        assert metrics.get("shared_from") == (None if seed == 1 else "Toy/zeroshot/seed1")
    assert len({r.config_hash for r in runs.values()}) == 6 and runs["Toy/ivlp/seed1"].seed_free_hash is None
    table = json.loads((project / "runs" / "results.json").read_text())
    assert {(row["variant_name"], row["n_seeds"]) for row in table if row["dataset"] == "Toy"} == \
        {("zeroshot", 3), ("ivlp", 3)}                                  # the table still counts every seed

    # Resumed: a lost seed's copy is made again from the complete run, without executing anything.
    shutil.rmtree(project / "runs" / "Toy" / "zeroshot" / "seed3")
    assert main(["sweep", str(exp), "--workers", "0"]) == 0
    assert "shared 1 · skipped 5" in capsys.readouterr().out and len(executions(project)) == 4
    # A failed execution fails the seeds that share it, naming it.
    (project / "control" / "fail-Toy-1").touch()
    changed = write_experiment(project, seeds=[1, 2], train={"epochs": 3},
                               variants={"zeroshot": {"variant": "zeroshot"}})
    assert main(["sweep", str(changed), "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "failed 2" in out and "shares the result of Toy/zeroshot/seed1, which failed" in out


def test_a_kernel_that_dies_on_start_is_started_again(tmp_path, monkeypatch):
    """A kernel whose ports another process took dies before its first reply: the sweep's warm
    kernel is started anew, and the second, real one is the one returned."""
    from analysis_lib.study import execution

    class DiesOnFirstStart(execution.WarmKernelManager):
        starts = 0

        def client(self, **kwargs):
            client = super().client(**kwargs)
            DiesOnFirstStart.starts += 1
            if DiesOnFirstStart.starts == 1:
                async def died(timeout=None):
                    raise RuntimeError("Kernel died before replying to kernel_info")
                client.wait_for_ready = died
            return client

    monkeypatch.setattr(execution, "WarmKernelManager", DiesOnFirstStart)
    km = execution.warm_kernel(tmp_path)
    try:
        assert isinstance(km, DiesOnFirstStart) and execution.run_sync(km.is_alive)()
        assert DiesOnFirstStart.starts >= 2
    finally:
        execution._WARM_KERNELS.pop(str(tmp_path.absolute()), None)
        execution.run_sync(km.shutdown_kernel)(now=True)
