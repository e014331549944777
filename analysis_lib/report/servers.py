"""`make lab` and `make explore`: JupyterLab on the repository, and the live explorer as a Voilà
app, both on 127.0.0.1, both offline, both printing the URL to open.

Both run the venv's kernel with the repository first on ``PYTHONPATH`` (its ``analysis_lib``),
started in the repository root (`RepositoryKernels`), where papermill runs the same notebooks, so
their relative paths (``runs/demo``, ``data/demo``, those inside run folders) mean the same.
Voilà serves ``notebooks/live_explorer.ipynb`` without its code cells and through the ``offline``
template (``jupyter/voila/templates/offline``: Voilà's lab template without its CDN stylesheets);
the explorer learns the runs' root and the first run from ``EXPLORE_RUNS_ROOT`` and ``EXPLORE_RUN``.
"""
from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

JUPYTER_DATA = Path(__file__).with_name("jupyter")     # holds voila/templates/offline
LIVE_NOTEBOOK = "notebooks/live_explorer.ipynb"
RUNS_ROOT_VARIABLE, RUN_VARIABLE = "EXPLORE_RUNS_ROOT", "EXPLORE_RUN"


class RepositoryKernels(AsyncMappingKernelManager):
    """Kernels started in ``root_dir`` (the repository, set on the command line) whatever the
    notebook's folder."""

    def cwd_for_path(self, path, **kwargs):
        return self.root_dir


KERNELS = "analysis_lib.report.servers.RepositoryKernels"   # as the servers import it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(root: Path, **variables: str) -> dict[str, str]:
    """The servers' (and so the kernels') environment: the repository's library first, the
    project's Jupyter data (the offline Voilà template) on the Jupyter path."""
    env = dict(os.environ, **variables)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(JUPYTER_DATA), env.get("JUPYTER_PATH")]))
    return env


def lab_command(root: Path, port: int, token: str) -> tuple[list[str], str]:
    """JupyterLab's command line and the URL (token included) that opens the notebooks folder."""
    command = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
               f"--IdentityProvider.token={token}",
               f"--ServerApp.kernel_manager_class={KERNELS}", f"--RepositoryKernels.root_dir={root}",
               "--LabApp.news_url=None",                       # nothing fetched from the internet:
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",    # no news, no update
               "--LabApp.extension_manager=readonly"]                                # checks, no PyPI search
    if os.geteuid() == 0:                                # containers and CI run as root; Jupyter refuses unless told
        command.append("--allow-root")
    return command, f"http://127.0.0.1:{port}/lab/tree/notebooks?token={token}"


def explore_command(root: Path, port: int) -> tuple[list[str], str]:
    """Voilà's command line for the live explorer and its URL."""
    command = [str(Path(sys.executable).with_name("voila")), str(root / LIVE_NOTEBOOK), "--no-browser",
               "--Voila.ip=127.0.0.1", f"--port={port}", "--Voila.port_retries=0", "--template=offline",
               "--strip_sources=True", f"--VoilaConfiguration.multi_kernel_manager_class={KERNELS}",
               f"--RepositoryKernels.root_dir={root}"]
    return command, f"http://127.0.0.1:{port}/"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis_lib.report.servers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=("lab", "explore"))
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--runs-root", default="runs", help="explore: where the finished runs are (default runs/)")
    parser.add_argument("--run", default="", help="explore: the run folder shown first (default: the first found)")
    args = parser.parse_args(argv)
    root = Path.cwd().resolve()
    if not (root / LIVE_NOTEBOOK).is_file():
        parser.error(f"run this from the repository's root (no {LIVE_NOTEBOOK} in {root})")
    port = args.port or free_port()
    if args.server == "lab":
        command, url = lab_command(root, port, secrets.token_hex(16))
        env = server_env(root)
    else:
        for name, value in (("--runs-root", args.runs_root), ("--run", args.run)):
            if value and not Path(value).is_dir():
                parser.error(f"{name} {value}: no such folder (runs are under <output_root>/<dataset>/<variant>/seed<k>)")
        command, url = explore_command(root, port)
        env = server_env(root, **{RUNS_ROOT_VARIABLE: str(Path(args.runs_root).resolve()),
                                  RUN_VARIABLE: str(Path(args.run).resolve()) if args.run else ""})
    print(f"\n    {'JupyterLab' if args.server == 'lab' else 'The live explorer'}: {url}\n", flush=True)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
