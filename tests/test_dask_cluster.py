"""The sweep on a real Dask cluster (`dask scheduler` + `dask worker` processes, as on SLURM with
dask-jobqueue) learns exactly what it learns on a LocalCluster."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from analysis_lib.__main__ import main

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).parent / "dask"


def start(args: list[str], log: Path) -> subprocess.Popen:
    """A command in its own process group (so it and its children can be stopped together)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the workers import this checkout's analysis_lib
    with open(log, "w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and one single-threaded worker on 127.0.0.1; both stopped whatever happens."""
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    processes = []
    try:
        processes.append(start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                "--scheduler-file", str(scheduler_file)], tmp_path / "scheduler.log"))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline or processes[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start: {(tmp_path / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        processes.append(start([str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                "--no-dashboard", "--local-directory", str(tmp_path / "worker")],
                               tmp_path / "worker.log"))
        with Client(address) as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            stop(process)


def write_experiment(path: Path, data_root: Path, output_root: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "datasets": ["OxfordPets"], "seeds": [1], "model": {"name": "tiny-clip", "pretrained": None},
        "data_root": str(data_root), "output_root": str(output_root),
        "train": {"shots": 2, "epochs": 2, "num_workers": 0},
        "variants": {"ivlp": {"variant": "ivlp", "text_depth": 2, "vision_depth": 2},
                     "bias": {"variant": "bias", "bias_text_depth": 2, "bias_vision_depth": 2}}}))
    return path


@pytest.mark.slow
def test_sweep_on_a_dask_scheduler_equals_local_cluster(dask_cluster, data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    remote, local = tmp_path / "remote", tmp_path / "local"
    assert main(["sweep", str(write_experiment(tmp_path / "remote.yaml", data_root, remote)),
                 "--scheduler", dask_cluster]) == 0
    assert main(["sweep", str(write_experiment(tmp_path / "local.yaml", data_root, local)), "--workers", "1"]) == 0
    for run in ("OxfordPets/ivlp/seed1", "OxfordPets/bias/seed1"):
        a, b = (load_file(str(root / run / "trainable.safetensors")) for root in (remote, local))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), run
        ma, mb = (json.loads((root / run / "metrics.json").read_text()) for root in (remote, local))
        assert (ma["base_acc"], ma["novel_acc"], ma["config_hash"]) == (mb["base_acc"], mb["novel_acc"],
                                                                        mb["config_hash"])
