"""Execute an experiment's runs: one papermill execution of the train notebook per run, on Dask.

A run folder is complete when its metrics.json carries the run's config hash. The sweep writes
that hash last, into a private `<run>.tmp-<uuid>` folder, and only then renames the folder into
place, so a killed or failed run never looks complete and the next sweep re-runs it; completed
runs with the same hash are skipped. A variant that learns nothing (zero-shot) gives the same
result for every seed, so it is executed once per configuration and copied into the other seeds'
folders, each stamped with its own id and hash (`shared_from` names the executed run). A failed
run's folder is kept as `<run>.failed` (its executed notebook shows the traceback); the other
runs go on.

With `reuse_kernels`, each worker process keeps one notebook kernel and clears its namespace
(`%reset -f`) between runs instead of starting a new one: imported modules stay loaded, which
saves seconds per run, worth it only when runs themselves take seconds (the embedded default).
Every run still sets its own seeds, so its results do not depend on the runs before it.

Workers: `distributed.LocalCluster` (one process per worker, one task at a time each), or the
user's own Dask cluster through its scheduler address. On a LocalCluster with GPUs each worker
sees one GPU (`CUDA_VISIBLE_DEVICES`, round robin over the visible ones, set before the kernel
starts); a cluster the user brings (e.g. dask-jobqueue on SLURM) keeps its own assignment.
"""
from __future__ import annotations

import atexit
import fcntl
import fnmatch
import json
import logging
import os
import shutil
import statistics
import time
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import papermill
from distributed import WorkerPlugin, as_completed
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec
from jupyter_core.utils import run_sync
from tqdm.auto import tqdm

from .experiment import METRICS_FILE, Run, hashed_config
from ..files import FileContentError, read_json, write_text_atomic

log = logging.getLogger(__name__)

KERNEL_NAME = "python3"


class ThisInterpreterKernelManager(AsyncKernelManager):
    """Starts every notebook kernel as ipykernel on the interpreter running the sweep.

    Jupyter resolves the name "python3" through kernelspec folders, where a user-wide spec left by
    `ipykernel install --user` in another environment would run the notebook with other packages;
    this manager skips the lookup, so a fresh venv works without registering any kernel. The
    kernel process logs errors only (its start-up warnings would repeat for every run; the
    notebook's own output and warnings still go into the executed notebook).
    """

    @property
    def kernel_spec(self) -> KernelSpec:
        from ipykernel.kernelspec import RESOURCES, get_kernel_dict
        spec = get_kernel_dict(extra_arguments=["--IPKernelApp.log_level=ERROR"])
        return KernelSpec(resource_dir=RESOURCES, name=KERNEL_NAME, **spec)

    async def _async_interrupt_kernel(self) -> None:
        """No interrupt on the way to a shutdown: jupyter_client sends one before every shutdown
        request, and a kernel busy with any message then logs "KeyboardInterrupt caught in kernel."
        on the sweep's stderr. A kernel still running code is stopped by the shutdown itself (a
        terminate, then a kill, after ``shutdown_wait_time``)."""
        if not self.shutting_down:
            await super()._async_interrupt_kernel()


def run_notebook(template: str | Path, executed: str | Path, parameters: dict, cwd: str | Path,
                 reuse_kernel: bool = False) -> None:
    """Execute ``template`` with ``parameters`` into ``executed``, the kernel on this interpreter
    (a new one, or with ``reuse_kernel`` this process's warm one, its namespace cleared)."""
    km = warm_kernel(cwd) if reuse_kernel else None
    try:
        papermill.execute_notebook(str(template), str(executed), parameters=parameters, kernel_name=KERNEL_NAME,
                                   kernel_manager_class=ThisInterpreterKernelManager, progress_bar=False,
                                   cwd=str(cwd), start_timeout=120, **({"km": km} if km else {}))
    finally:
        if km:
            km.close_clients()


class WarmKernelManager(ThisInterpreterKernelManager):
    """A kernel that outlives the notebooks it runs. nbclient leaves the channels of a kernel it
    does not own open, so this manager remembers the clients it hands out and closes them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.open_clients = []

    def client(self, **kwargs):
        client = super().client(**kwargs)
        self.open_clients.append(client)
        return client

    def close_clients(self) -> None:
        while self.open_clients:
            self.open_clients.pop().stop_channels()


_WARM_KERNELS: dict[str, WarmKernelManager] = {}  # this process's kernel per directory


KERNEL_START_TRIES = 3


def _started_kernel(cwd: str) -> WarmKernelManager:
    """A kernel started in ``cwd`` that has answered. jupyter_client picks free ports by binding and
    releasing them, so another process may take one first; the kernel then dies before its first
    reply ("Address already in use"). A new start picks new ports; nothing had run yet."""
    for attempt in range(1, KERNEL_START_TRIES + 1):
        km = WarmKernelManager(kernel_name=KERNEL_NAME)
        run_sync(km.start_kernel)(cwd=cwd)
        client = km.client()
        client.start_channels()
        try:
            run_sync(client.wait_for_ready)(timeout=120)
            return km
        except RuntimeError as error:
            if attempt == KERNEL_START_TRIES:
                raise
            log.warning("kernel in %s died on start (%s); starting another (try %d of %d)",
                        cwd, first_line(error), attempt + 1, KERNEL_START_TRIES)
            if run_sync(km.is_alive)():
                run_sync(km.shutdown_kernel)(now=True)
        finally:
            km.close_clients()


def warm_kernel(cwd: str | Path) -> WarmKernelManager:
    """This process's kernel for notebooks run in ``cwd``, started if missing or dead, namespace cleared."""
    key = str(Path(cwd).absolute())
    km = _WARM_KERNELS.get(key)
    if km is None or not run_sync(km.is_alive)():
        km = _started_kernel(key)
        _WARM_KERNELS[key] = km
    client = km.client()
    client.start_channels()
    try:
        run_sync(client.wait_for_ready)(timeout=120)
        run_sync(client.execute_interactive)("%reset -f", store_history=False, allow_stdin=False)
    finally:
        km.close_clients()
    return km


@atexit.register
def _stop_warm_kernels() -> None:
    for km in _WARM_KERNELS.values():
        run_sync(km.shutdown_kernel)(now=True)
    _WARM_KERNELS.clear()


@dataclass
class RunResult:
    run_id: str
    status: str  # "done", "shared" (copied from another seed's run, see shared_results), "skipped" or "failed"
    seconds: float = 0.0
    error: str = ""  # first line of the error, for failed runs
    folder: str = ""  # the run folder, or the .failed folder to look into
    timing: dict = field(default_factory=dict)  # papermill's view of the run, see notebook_timing


def run_folder(output_root: Path, run: Run) -> Path:
    return Path(output_root) / run.run_id


def is_complete(folder: Path, config_hash: str, split_sha256: str | None = None) -> bool:
    """Whether ``folder`` holds a finished run of exactly this configuration and, where
    ``split_sha256`` is given, of these split lists (``Run.split_sha256``; a run recorded without
    one, made by an earlier version, is taken as it is)."""
    path = Path(folder) / METRICS_FILE
    if not path.exists():
        return False
    try:
        metrics = read_json(path, "the run will be run again")
    except FileContentError as err:
        log.warning("%s", err)
        return False
    if not isinstance(metrics, dict) or metrics.get("config_hash") != config_hash:
        return False
    if split_sha256 and metrics.get("split_sha256") not in (None, split_sha256):
        log.warning("%s: the dataset's split file changed since this run was made; it will be run again", folder)
        return False
    return True


def select_runs(runs: list[Run], patterns: Iterable[str] | None) -> list[Run]:
    """The runs whose id matches any of the shell patterns (all runs for no pattern)."""
    patterns = list(patterns or [])
    if not patterns:
        return runs
    chosen = [run for run in runs if any(fnmatch.fnmatchcase(run.run_id, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"--only {' '.join(patterns)} matches none of the {len(runs)} runs "
                         f"(run ids look like {runs[0].run_id})")
    return chosen


def execute_run(run: Run, notebook: str | Path, output_root: str | Path, cwd: str | Path,
                reuse_kernel: bool = False) -> RunResult:
    """Execute the notebook for one run in a private folder and rename it into place on success.

    Runs on a Dask worker (or in the calling process); all paths must be absolute or relative
    to ``cwd``, where the kernel runs.
    """
    start = time.perf_counter()
    final = run_folder(Path(cwd) / output_root, run)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(final)
    tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    executed = tmp / Path(notebook).name
    try:
        run_notebook(Path(cwd) / notebook, executed, {**run.params, "output_dir": str(tmp)}, cwd, reuse_kernel)
        total = time.perf_counter() - start
        timing = notebook_timing(nbformat.read(executed, as_version=4), total)
        _stamp_metrics(tmp / METRICS_FILE, run, timing)
    except Exception as err:  # one failed run must not stop the sweep: report it, keep its folder
        failed = final.with_name(f"{final.name}.failed")
        shutil.rmtree(failed, ignore_errors=True)
        os.replace(tmp, failed)
        return RunResult(run.run_id, "failed", time.perf_counter() - start,
                         first_line(err) + drop_truncated(failed / executed.name), str(failed))
    _publish(tmp, final)
    return RunResult(run.run_id, "done", total, folder=str(final), timing=timing)


def first_line(err: BaseException) -> str:
    """A one-line description of ``err`` (papermill's errors name the cell's exception)."""
    if isinstance(err, papermill.PapermillExecutionError):
        text = f"{err.ename}: {err.evalue} (cell {err.cell_index})"
    else:
        text = f"{type(err).__name__}: {err}"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)


def drop_truncated(notebook: Path) -> str:
    """Remove ``notebook`` if it was cut short (a full disk while papermill wrote it): no damaged
    file is left to open. Returns what to add to the error ("" when the notebook is whole or absent)."""
    try:
        nbformat.read(notebook, as_version=4)
        return ""
    except FileNotFoundError:
        return ""
    except Exception:  # noqa: BLE001 - any unreadable notebook is a damaged one
        notebook.unlink()
        return f"; its executed notebook {notebook} was cut short (is the disk full?) and was removed"


def notebook_timing(nb, total_s: float) -> dict:
    """Where a run's time went: papermill records each cell's duration; the rest of the wall
    time is kernel start-up, shutdown and notebook I/O (papermill's own overhead)."""
    cells = [{"cell": (cell.source.strip().splitlines() or [""])[0][:60],
              "s": cell.metadata.get("papermill", {}).get("duration") or 0.0}
             for cell in nb.cells if cell.cell_type == "code"]
    cells_s = sum(cell["s"] for cell in cells)
    return {"total_s": total_s, "cells_s": cells_s, "kernel_s": total_s - cells_s, "cells": cells}


def _stamp_metrics(path: Path, run: Run, timing: dict) -> None:
    """Add the run's identity and config hash to the notebook's metrics.json: the completion mark."""
    if not path.is_file():
        raise FileNotFoundError(f"the notebook finished without writing {METRICS_FILE} into output_dir")
    metrics = read_json(path, "the train notebook must write its metrics as JSON")
    metrics.update({"run_id": run.run_id, "dataset": run.dataset, "variant_name": run.variant_name,
                    "seed": run.seed, "config": hashed_config(run.params),
                    "config_hash": run.config_hash, "split_sha256": run.split_sha256, "papermill": timing})
    write_text_atomic(path, json.dumps(metrics, indent=2))


def _remove_leftovers(final: Path) -> None:
    """Folders of earlier attempts at this run that never completed (killed half-way)."""
    for pattern in (".tmp-*", ".old-*"):
        for stale in final.parent.glob(final.name + pattern):
            log.info("removing %s, left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Put the finished folder in place of any older one (stale config or incomplete)."""
    old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:12]}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(final.with_name(f"{final.name}.failed"), ignore_errors=True)


class OneGPUPerWorker(WorkerPlugin):
    """Dask worker plugin: worker k sees only GPU gpus[k % len(gpus)]; the notebook kernels it
    starts inherit the setting. For LocalCluster workers, whose names are 0, 1, 2, ..."""

    name = "one-gpu-per-worker"

    def __init__(self, gpus: list[str]):
        self.gpus = gpus

    def setup(self, worker) -> None:
        os.environ["CUDA_VISIBLE_DEVICES"] = self.gpus[int(worker.name) % len(self.gpus)]


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (its CUDA_VISIBLE_DEVICES entries, or 0..n-1)."""
    import torch  # only here: importing torch costs seconds and the sweep needs it for nothing else
    count = torch.cuda.device_count()
    listed = [gpu.strip() for gpu in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if gpu.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def run_sweep(runs: list[Run], notebook: str, output_root: str, workers: int = 1,
              scheduler: str | None = None, gpus: list[str] | None = None,
              reuse_kernels: bool = False) -> list[RunResult]:
    """Execute every run that is not complete; return one result per run, in the runs' order.

    workers=0 runs them one after another in this process (no Dask); otherwise a LocalCluster of
    ``workers`` processes, or the cluster at ``scheduler`` (then ``workers`` is ignored). gpus:
    ids to spread over LocalCluster workers (None or empty: leave CUDA_VISIBLE_DEVICES alone).
    reuse_kernels: one kernel per worker process for all its runs (see the module's docstring).
    """
    cwd = Path.cwd()
    with output_lock(cwd / output_root):
        return _run_unlocked(runs, notebook, output_root, cwd, workers, scheduler, gpus, reuse_kernels)


class SweepBusyError(RuntimeError):
    """Another command (a sweep, or the analyses) is writing into the same output folder."""


_HELD_LOCKS: dict[Path, int] = {}  # folders this process holds, and how deeply (output_lock nests)


@contextmanager
def output_lock(output_root: Path, command: str = "sweep"):
    """Hold ``<output_root>/.sweep.lock`` (an flock, released even if this process is killed), so
    that two commands (``command`` names this one for the other's error) never execute and
    publish into the same folder at once. A process that holds it may take it again."""
    output_root = Path(output_root).absolute()
    if _HELD_LOCKS.get(output_root):
        _HELD_LOCKS[output_root] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[output_root] -= 1
        return
    output_root.mkdir(parents=True, exist_ok=True)
    path = output_root / ".sweep.lock"
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise SweepBusyError(f"{holder} is writing into {output_root}; wait for it to finish, or give "
                                 f"this {command} another output folder") from None
        lock.truncate(0)
        lock.write(f"{command} (pid {os.getpid()})")
        lock.flush()
        _HELD_LOCKS[output_root] = 1
        try:
            yield
        finally:
            del _HELD_LOCKS[output_root]


def _run_unlocked(runs, notebook, output_root, cwd, workers, scheduler, gpus, reuse_kernels) -> list[RunResult]:
    results = {run.run_id: RunResult(run.run_id, "skipped", folder=str(run_folder(cwd / output_root, run)))
               for run in runs if is_complete(run_folder(cwd / output_root, run), run.config_hash, run.split_sha256)}
    todo = [run for run in runs if run.run_id not in results]
    copies = shared_results(runs, set(results))
    todo = [run for run in todo if run.run_id not in {copy.run_id for copy, _ in copies}]
    log.info("%d runs: %d complete, %d to execute, %d to copy from another seed's run",
             len(runs), len(results), len(todo), len(copies))
    progress = tqdm(total=len(todo), desc="runs", unit="run")
    if todo and workers == 0:
        for run in todo:
            results[run.run_id] = execute_run(run, notebook, output_root, cwd, reuse_kernels)
            progress.update()
    elif todo:
        with dask_client(workers, scheduler, gpus) as client:
            futures = {client.submit(execute_run, run, notebook, output_root, cwd, reuse_kernels, pure=False): run
                       for run in todo}
            for future in as_completed(futures):
                run = futures[future]
                try:
                    results[run.run_id] = future.result()
                except Exception as err:  # the worker died (killed, out of memory, ...)
                    results[run.run_id] = RunResult(run.run_id, "failed", error=first_line(err))
                progress.update()
    progress.close()
    for run, source in copies:
        results[run.run_id] = copy_shared_run(source, results[source.run_id], run, cwd / output_root)
    return [results[run.run_id] for run in runs]


def shared_results(runs: list[Run], complete: set[str]) -> list[tuple[Run, Run]]:
    """(run, source) for each incomplete seed-free run (``Run.seed_free_hash``): the run of the
    same configuration, another seed, whose result it takes (a complete one, else the first one
    to execute)."""
    sources: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.run_id not in complete):  # complete runs first
        if run.seed_free_hash is not None:
            sources.setdefault(run.seed_free_hash, run)
    return [(run, sources[run.seed_free_hash]) for run in runs
            if run.seed_free_hash is not None and run.run_id not in complete
            and sources[run.seed_free_hash] is not run]


def copy_shared_run(source: Run, source_result: RunResult, run: Run, output_root: Path) -> RunResult:
    """``run``'s folder as a copy of ``source``'s finished one, stamped with its own identity and
    config hash (and ``shared_from``), published like an executed run."""
    if source_result.status == "failed":
        return RunResult(run.run_id, "failed", error=f"shares the result of {source.run_id}, which failed",
                         folder=source_result.folder)
    final = run_folder(output_root, run)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(final)
    tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:12]}")
    shutil.copytree(run_folder(output_root, source), tmp)
    metrics = json.loads((tmp / METRICS_FILE).read_text())
    metrics.update({"run_id": run.run_id, "seed": run.seed, "config": hashed_config(run.params),
                    "config_hash": run.config_hash, "shared_from": source.run_id})
    write_text_atomic(tmp / METRICS_FILE, json.dumps(metrics, indent=2))
    _publish(tmp, final)
    return RunResult(run.run_id, "shared", folder=str(final))


@contextmanager
def dask_client(workers: int, scheduler: str | None, gpus: list[str] | None):
    """A Dask client: to the cluster at ``scheduler``, or to a LocalCluster closed on exit."""
    from distributed import Client, LocalCluster
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster, \
            Client(cluster) as client:
        log.info("Dask dashboard: %s", client.dashboard_link)
        if gpus:
            client.register_plugin(OneGPUPerWorker(gpus))
        yield client


def summary_table(results: list[RunResult]) -> str:
    """Counts, then one line per executed run (done or failed, with the error's first line)."""
    counts = {status: sum(r.status == status for r in results) for status in ("done", "shared", "skipped", "failed")}
    if not counts["shared"]:
        del counts["shared"]
    lines = [" · ".join(f"{status} {n}" for status, n in counts.items())]
    executed = [r for r in results if r.status != "skipped"]
    if executed:
        width = max(len(r.run_id) for r in executed)
        lines.append(f"{'run':<{width}}  status  {'time':>7}  error / folder")
        for r in executed:
            detail = f"{r.error}  [{r.folder}]" if r.status == "failed" else r.folder
            lines.append(f"{r.run_id:<{width}}  {r.status:<6}  {r.seconds:6.1f}s  {detail}")
    overheads = [r.timing["kernel_s"] for r in results if r.timing]
    if overheads:
        lines.append(f"papermill overhead (kernel start, shutdown, I/O): median "
                     f"{statistics.median(overheads):.2f} s per run over {len(overheads)} runs")
    return "\n".join(lines)
