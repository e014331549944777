"""Inputs a careless or malicious user gives, and what each gets: missing and failed runs named,
one lock per output folder, a full disk, file permissions, chapters an experiment cannot fill,
edited split files, untypable class names, damaged weights, n_images out of range, the kernel's
shutdown, and (slow) a book built from a file named with markup, checked in Chromium."""
from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from analysis_lib.__main__ import main
from analysis_lib.files import FileWriteError, write_text_atomic
from analysis_lib.report.notebooks import chapter_lacks, nothing_to_show
from analysis_lib.study import execution, sweep
from analysis_lib.study.completeness import aggregate_finished, missing_runs
from analysis_lib.study.experiment import load_experiment
from analysis_lib.study.run_record import METRICS_FILE
from test_sweep import KNOWN, REPO, project, write_experiment  # noqa: F401 - project is a fixture

VARIANTS = {"zeroshot": {"variant": "zeroshot"}, "ivlp": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2}}
ANALYSIS = {"variant_name": "ivlp", "seed": 1, "n_images": 2}


def finish(project, run, base_acc: float = 70.0) -> pathlib.Path:
    """A finished run folder for ``run``, as the sweep leaves it (metrics stamped with its hash)."""
    folder = project / "runs" / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METRICS_FILE).write_text(json.dumps({
        "dataset": run.dataset, "variant_name": run.variant_name, "seed": run.seed, "base_acc": base_acc,
        "novel_acc": 60.0, "n_trainable": 8, "config_hash": run.config_hash}))
    return folder


def test_missing_and_failed_runs_are_named_and_left_out_of_the_results(project, caplog):
    exp = load_experiment(write_experiment(project, variants=VARIANTS, seeds=[1, 2], analysis=ANALYSIS), KNOWN)
    runs = {run.run_id: run for run in exp.runs()}
    for run_id in ("Toy/zeroshot/seed1", "Toy/zeroshot/seed2", "Toy/ivlp/seed1"):
        finish(project, runs[run_id], base_acc=80.0 if run_id == "Toy/ivlp/seed1" else 70.0)
    old = finish(project, runs["Toy/ivlp/seed2"], base_acc=10.0)
    aggregate_finished(exp)                                   # a table that still counts ivlp seed 2
    (old / METRICS_FILE).unlink()
    old.with_name("seed2.failed").mkdir()                      # ... which has failed since
    assert [(m.run_id, m.reason.split(":")[0]) for m in missing_runs(exp)] == [("Toy/ivlp/seed2", "failed")]
    csv = aggregate_finished(exp)[0]
    table = pd.read_csv(csv).set_index(["dataset", "variant_name"])
    assert table.loc[("Toy", "ivlp"), "n_seeds"] == 1 and table.loc[("Toy", "ivlp"), "base_mean"] == 80.0
    # the command names it too (the analyses stop later here: the stand-in runs have no model)
    with caplog.at_level("WARNING"):
        assert main(["analyses", str(exp.path), "--workers", "0", "--out", str(project / "book")]) == 2
    assert "1 of 4 runs" in caplog.text and "Toy/ivlp/seed2: failed" in caplog.text
    (old / METRICS_FILE).write_text("{")                        # damaged, and not run at all
    finish(project, runs["Toy/zeroshot/seed2"]).joinpath(METRICS_FILE).unlink()
    reasons = {m.run_id: m.reason for m in missing_runs(exp)}
    assert "Toy/ivlp/seed2" in reasons and reasons["Toy/zeroshot/seed2"] == "not run yet"


def test_a_chapter_without_its_runs_says_so(project):
    exp = load_experiment(write_experiment(project, variants=VARIANTS, seeds=[1], datasets=["OxfordPets"],
                                           analysis=ANALYSIS), ["OxfordPets"])
    assert chapter_lacks(exp, "bias_tuning").startswith("this experiment has no bias variant")
    assert chapter_lacks(exp, "decomposition").startswith("none of this experiment's ivlp runs is finished")
    assert chapter_lacks(exp, "attention_explorer").startswith("the run it shows")
    assert chapter_lacks(exp, "datasets") is None
    for run in exp.runs():
        finish(project, run)
    assert chapter_lacks(exp, "decomposition") is None and chapter_lacks(exp, "attention_explorer") is None
    assert chapter_lacks(exp, "cls_foreground") is None        # OxfordPets has masks
    zeroshot = load_experiment(write_experiment(project, variants=VARIANTS, seeds=[1], datasets=["OxfordPets"],
                                                analysis={**ANALYSIS,
                                                          "variant_name": "zeroshot"}), ["OxfordPets"])
    assert "learns no vision prompts" in chapter_lacks(zeroshot, "attention_explorer")
    page = nothing_to_show(REPO / "notebooks" / "bias_tuning.ipynb", exp, chapter_lacks(exp, "bias_tuning"))
    source = page.cells[0].source
    assert source.startswith("# Does bias tuning match prompt tuning at a similar budget?\n") and "has no bias variant" in source


HOLDER = ("import sys, time; from pathlib import Path; from analysis_lib.study.execution import output_lock\n"
          "with output_lock(Path(sys.argv[1]), 'analyses of other.yaml'):\n"
          "    print('held', flush=True); time.sleep(120)")


@pytest.mark.parametrize("held", ["runs", "book"])
def test_analyses_refuse_an_output_folder_another_command_writes(project, capsys, held):
    """Both the runs' folder and the book's are locked for the whole command."""
    exp = write_experiment(project, variants=VARIANTS, seeds=[1], analysis=ANALYSIS)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(project / held)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["analyses", str(exp), "--out", str(project / "book")]) == 2
        err = capsys.readouterr().err
        assert f"analyses of other.yaml (pid {holder.pid}) is writing into {project / held}" in err
        assert not (project / "book" / "tables").exists()
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_taken_again_by_its_holder_only(tmp_path):
    with execution.output_lock(tmp_path, "sweep"), execution.output_lock(tmp_path, "analyses"):
        proc = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from analysis_lib.study."
                               "execution import output_lock\nwith output_lock(Path(sys.argv[1])): pass", str(tmp_path)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert "SweepBusyError" in proc.stderr and f"sweep (pid {os.getpid()}) is writing into" in proc.stderr
    with execution.output_lock(tmp_path):   # released
        pass


def full_disk(monkeypatch, after: int = 10):
    """Every Path.write_text from now on writes ``after`` characters, then fails as a full disk does."""
    def write_text(self, data, *args, **kwargs):
        with open(self, "w", encoding="utf-8") as f:
            f.write(data[:after])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


def test_full_disk_names_the_file_and_leaves_it_as_it_was(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    write_text_atomic(target, "the old table\n")
    full_disk(monkeypatch)
    with pytest.raises(FileWriteError, match=f"{target} could not be written \\(No space left on device\\)"):
        write_text_atomic(target, "a new table that does not fit\n")
    assert target.read_text() == "the old table\n" and [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_full_disk_in_the_aggregate_command_is_one_error(project, monkeypatch, capsys):
    exp = load_experiment(write_experiment(project, variants=VARIANTS, seeds=[1], analysis=ANALYSIS), KNOWN)
    for run in exp.runs():
        finish(project, run)
    full_disk(monkeypatch)
    assert main(["aggregate", str(exp.path)]) == 2
    err = capsys.readouterr().err
    assert "runs/results.csv could not be written (No space left on device)" in err and "Traceback" not in err
    assert sorted(p.name for p in (project / "runs").iterdir()) == ["Toy"]


def test_a_run_cut_short_by_a_full_disk_names_it_and_leaves_no_truncated_notebook(project, monkeypatch):
    exp = load_experiment(write_experiment(project, variants=VARIANTS, seeds=[1], analysis=ANALYSIS), KNOWN)

    def run_notebook(template, executed, parameters, cwd, reuse_kernel=False):
        pathlib.Path(executed).write_bytes(b'{"cells": [{"cell_type": "co')  # papermill's write, cut short
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(sweep, "run_notebook", run_notebook)
    result = sweep.execute_run(exp.runs()[1], "train.ipynb", "runs", project)
    failed = project / "runs" / "Toy" / "ivlp" / "seed1.failed"
    assert result.status == "failed" and result.folder == str(failed)
    assert "No space left on device" in result.error and f"{failed / 'train.ipynb'} was cut short" in result.error
    assert list(failed.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    """Results, tables and the explorer's data files are written atomically; they must still get
    the permissions a new file gets (a web server or a colleague reads them)."""
    old = os.umask(umask)
    try:
        path = write_text_atomic(tmp_path / "table.csv", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


MARKUP_NAME = "<img src=x onerror=alert(7)>"


@pytest.mark.slow
def test_a_book_from_a_file_named_with_markup_runs_no_script(data_root, tmp_path):
    """A miniature experiment (tiny-clip, one dataset, zero-shot only: one execution, shared by
    two seeds) in a file named with markup: one run deleted after the sweep; the analyses name it,
    the claims page lists it, the chapters that need ivlp or bias runs (and the explorer, which
    needs vision prompts) say they have nothing to show, and in Chromium no script of the name
    runs on any page."""
    from test_book_browser import check_in_browser, require_browser
    from test_pipeline import working_copy
    require_browser()

    def run(*command):   # in the copy, with the copy's analysis_lib (the book's Sphinx extension too)
        return subprocess.run(command, capture_output=True, text=True, cwd=copy, timeout=900,
                              env={**os.environ, "PYTHONPATH": str(copy)})
    experiment = tmp_path / f"{MARKUP_NAME}.yaml"
    experiment.write_text(json.dumps({
        "model": {"name": "tiny-clip", "pretrained": None}, "data_root": str(data_root),
        "output_root": str(tmp_path / "runs"), "datasets": ["OxfordPets"], "seeds": [1, 2],
        "train": {"epochs": 1, "shots": 1, "num_workers": 0}, "variants": {"zeroshot": {"variant": "zeroshot"}},
        "analysis": {"n_images": 2}}))
    (tmp_path / "repo").mkdir()
    copy = working_copy(tmp_path / "repo")
    swept = run(sys.executable, "-m", "analysis_lib", "sweep", str(experiment), "--workers", "0")
    assert swept.returncode == 0, swept.stderr[-3000:]
    (tmp_path / "runs" / "OxfordPets" / "zeroshot" / "seed2" / METRICS_FILE).unlink()
    analysed = run(sys.executable, "-m", "analysis_lib", "analyses", str(experiment), "--workers", "0")
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    assert "OxfordPets/zeroshot/seed2: not run yet" in analysed.stderr
    book = run(str(pathlib.Path(sys.executable).with_name("jupyter-book")), "build", ".", "-W", "-n", "--keep-going")
    assert book.returncode == 0, book.stdout[-3000:] + book.stderr[-3000:]
    html = copy / "_build" / "html"
    intro = (html / "book" / "intro.html").read_text()
    assert "<img src=x" not in intro and "&lt;img src=x onerror=alert(7)&gt;" in intro
    generated = html / "book" / "generated"
    assert "has no bias variant" in (generated / "bias_tuning.html").read_text()
    assert "has no ivlp variant" in (generated / "decomposition.html").read_text()
    assert "learns no vision prompts" in (generated / "attention_explorer.html").read_text()
    assert "OxfordPets/zeroshot/seed2" in (generated / "claims.html").read_text()
    check_in_browser(html)   # no dialog, no request for the image "x", no script error on any page


def test_editing_a_split_file_after_the_sweep_makes_its_runs_stale(project, data_root, caplog):
    """Class names renamed in the split file: the finished runs no longer count (they were
    trained on the old names), and the few-shot subset, which depends on images and labels
    only, is read with the new names instead of failing."""
    from analysis_lib.data import fewshot_split, get_spec
    spec = get_spec("EuroSAT")
    shutil.copytree(data_root / spec.folder, project / "data" / spec.folder)
    exp = load_experiment(write_experiment(project, variants=VARIANTS, seeds=[1], datasets=["EuroSAT"],
                                           analysis=ANALYSIS), ["EuroSAT"])
    cache = project / "runs" / "split_fewshot"
    before = fewshot_split("EuroSAT", "data", 1, 1, cache_dir=cache)
    for run in exp.runs():
        finish(project, run).joinpath(METRICS_FILE).write_text(json.dumps({
            **json.loads((project / "runs" / run.run_id / METRICS_FILE).read_text()),
            "split_sha256": run.split_sha256}))
    assert missing_runs(exp) == []
    split_file = project / "data" / spec.folder / spec.split_file
    split = json.loads(split_file.read_text())
    for which in split:
        split[which] = [[path, label, f"renamed {name}"] for path, label, name in split[which]]
    split_file.write_text(json.dumps(split))
    with caplog.at_level("WARNING"):
        assert [m.run_id for m in missing_runs(exp)] == ["EuroSAT/zeroshot/seed1", "EuroSAT/ivlp/seed1"]
    assert "split file changed since this run was made" in caplog.text
    after = fewshot_split("EuroSAT", "data", 1, 1, cache_dir=cache)
    assert [i.path for i in after.train] == [i.path for i in before.train]
    assert after.classnames == [f"renamed {name}" for name in before.classnames]
    assert {i.classname for i in after.train} <= set(after.classnames)


def test_a_class_name_the_analyses_cannot_type_is_refused_before_training(data_root, tmp_path, monkeypatch):
    from analysis_lib.model.prompted import PromptedCLIP
    from analysis_lib.model.variants import VariantError
    from analysis_lib.study import one_run
    from analysis_lib.study.train_config import TrainConfig
    untypable = "Sea or Lake"

    def token_layout(self, tower):
        if untypable in self.classnames:
            raise VariantError(f"class {untypable!r}: cannot be typed")
        return original(self, tower)
    original = PromptedCLIP.token_layout
    monkeypatch.setattr(PromptedCLIP, "token_layout", token_layout)
    monkeypatch.setattr(one_run, "train", lambda *a, **k: pytest.fail("trained before checking the class names"))
    settings = one_run.RunSettings(dataset="EuroSAT", variant="ivlp", data_root=str(data_root),
                                   output_dir=str(tmp_path / "run"), model="tiny-clip", pretrained=None,
                                   progress=False, variant_params={"text_depth": 1, "vision_depth": 1},
                                   train=TrainConfig(shots=1, epochs=1, num_workers=0))
    with pytest.raises(VariantError, match="'Sea or Lake': cannot be typed"):   # a novel class
        one_run.run_training(settings)
    assert not (tmp_path / "run" / "trainable.safetensors").exists()


DEMO_WEIGHTS = REPO / "analysis_lib" / "assets" / "demo-clip.safetensors"


def cut_short(source: pathlib.Path, target: pathlib.Path, lose: int) -> pathlib.Path:
    """``source`` less its last ``lose`` bytes, as an interrupted download leaves it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes()[:-lose])
    return target


@pytest.mark.parametrize("lose", [1, 5_000_000, DEMO_WEIGHTS.stat().st_size - 20])  # the last byte ... the header
def test_dry_run_finds_a_truncated_weights_file_and_names_it(project, capsys, lose):
    weights = cut_short(DEMO_WEIGHTS, project / "demo-clip.safetensors", lose)
    exp = write_experiment(project, variants=VARIANTS, seeds=[1], model={"name": "demo-clip",
                                                                        "pretrained": str(weights)})
    assert main(["sweep", str(exp), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"weights file {weights} is damaged" in err and "cut short" in err


def test_a_damaged_weights_file_in_the_download_cache_is_named(project, monkeypatch, capsys):
    """A tag whose cached file (here a torch.save zip, cut short) is damaged: the dry run names it."""
    import torch
    from analysis_lib.model import backbone
    whole = project / "whole.pt"
    torch.save({"w": torch.arange(100000.0)}, whole)
    cached = cut_short(whole, project / "cache" / "ViT-B-16.pt", 1000)
    monkeypatch.setattr(backbone, "resolve_weights", lambda *a, **k: str(cached))
    exp = write_experiment(project, variants=VARIANTS, seeds=[1],
                           model={"name": "ViT-B-16-quickgelu", "pretrained": "openai"})
    assert main(["sweep", str(exp), "--dry-run"]) == 2
    assert f"weights file {cached} is damaged: it is not a complete zip archive" in capsys.readouterr().err


def test_a_load_error_of_any_kind_names_the_weights_file(tmp_path, monkeypatch):
    """Errors of the loaders (safetensors' own kind included) name the file being loaded."""
    import open_clip
    from analysis_lib.model.backbone import CheckpointError, load_backbone

    class SafetensorError(Exception):
        pass

    def create_model(*args, **kwargs):
        raise SafetensorError("Error while deserializing header: MetadataIncompleteBuffer")
    monkeypatch.setattr(open_clip, "create_model", create_model)
    with pytest.raises(CheckpointError, match=f"pretrained={DEMO_WEIGHTS}: .*SafetensorError: Error while"):
        load_backbone("demo-clip", str(DEMO_WEIGHTS))


@pytest.mark.parametrize("n_images", [0, -3])
def test_n_images_below_one_stops_the_sweep_before_any_run(project, capsys, n_images):
    exp = write_experiment(project, variants=VARIANTS, seeds=[1], analysis={**ANALYSIS, "n_images": n_images})
    assert main(["sweep", str(exp), "--dry-run"]) == 2
    assert f"analysis.n_images must be at least 1 (the test images per run that each analysis table uses), " \
           f"got {n_images}" in capsys.readouterr().err
    assert not (project / "runs").exists()


def test_n_images_beyond_a_test_set_is_noticed(project, data_root):
    from analysis_lib.report.notebooks import small_test_sets
    exp = load_experiment(write_experiment(project, variants=VARIANTS, seeds=[1], data_root=str(data_root),
                                           datasets=["OxfordPets", "EuroSAT"],
                                           analysis={**ANALYSIS, "n_images": 7}),
                          ["OxfordPets", "EuroSAT"])
    assert small_test_sets(exp) == {"OxfordPets": 6}   # 3 base classes × 2 test images; EuroSAT has 10


def test_a_notebook_run_sends_its_kernel_no_interrupt(tmp_path, monkeypatch):
    """An interrupt sent to shut a kernel down is what wrote "[IPKernelApp] ERROR | KeyboardInterrupt
    caught in kernel." into normal runs' output; the sweep's kernels are shut down without one."""
    from jupyter_client.manager import KernelManager
    interrupts = []

    async def interrupt(self):
        interrupts.append(self)
    monkeypatch.setattr(KernelManager, "_async_interrupt_kernel", interrupt)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "t.ipynb")
    execution.run_notebook(tmp_path / "t.ipynb", tmp_path / "out.ipynb", {}, tmp_path)
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].execution_count == 1
    assert interrupts == []
