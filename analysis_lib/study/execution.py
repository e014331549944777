"""Running notebooks and Dask tasks: the tools the sweep (``sweep.py``) and the analyses command
(``stats/per_run.py``, ``report/notebooks.py``) share.

- Notebooks run with papermill on a kernel of this very interpreter, a new one per notebook or,
  with ``reuse_kernel``, one warm kernel per process whose namespace is cleared between notebooks.
- Dask: a client to the user's cluster or to a LocalCluster (one process per worker, one task at a
  time each); with GPUs, each LocalCluster worker sees one (``OneGPUPerWorker``).
- ``output_lock``: one writer at a time into an experiment's output folder.
"""
from __future__ import annotations

import atexit
import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import papermill
from distributed import WorkerPlugin
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec
from jupyter_core.utils import run_sync

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


def first_line(err: BaseException) -> str:
    """A one-line description of ``err`` (papermill's errors name the cell's exception)."""
    if isinstance(err, papermill.PapermillExecutionError):
        text = f"{err.ename}: {err.evalue} (cell {err.cell_index})"
    else:
        text = f"{type(err).__name__}: {err}"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)


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
