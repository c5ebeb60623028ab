"""Shared fixtures: a digits CNN trained once per session through `landscape-train`'s main().

`cli` calls a console script's main() in-process (a fresh process costs seconds of imports); tests where a
real process is the point start one themselves, and `cli(..., process=True)` runs the script itself."""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from launch import plots, stats, status, surface, train

# One torch thread in every test process (this one, local workers, MPI ranks, Slurm tasks): on this 2-core
# machine shared with other test runs, two OpenMP threads wait for each other's core (measured: 30 digits-CNN
# points 0.5 s with one thread, 4.2 s with two, while one other process ran).
os.environ.setdefault("LANDSCAPE_THREADS", "1")
torch.set_num_threads(int(os.environ["LANDSCAPE_THREADS"]))

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCRIPTS = {"landscape-surface": surface.main, "landscape-train": train.main, "landscape-plot": plots.main,
           "landscape-status": status.main, "landscape-stats": stats.main}  # pyproject.toml's [project.scripts]


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: needs the local Slurm / Open MPI set up by cluster/up.sh")
    config.addinivalue_line("markers", "slow: takes more than ~20 s")


def require_cluster(reason: str) -> None:
    """Skip with a printed reason, except where LANDSCAPE_REQUIRE_CLUSTER=1 (CI) makes it a failure."""
    if os.environ.get("LANDSCAPE_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"cluster test required but cannot run: {reason}")
    pytest.skip(reason)


def cli(command: str, *args: str, check: bool = True, process: bool = False) -> subprocess.CompletedProcess:
    """Run a console script as a user would: its main() in this process (the environment and SIGTERM handler
    a local worker sets are put back), or with `process` the installed script in a process of its own."""
    argv = list(map(str, args))
    if process:
        proc = subprocess.run([str(BIN / command), *argv], capture_output=True, text=True, timeout=600)
    else:
        out, err, env, sigterm = io.StringIO(), io.StringIO(), dict(os.environ), signal.getsignal(signal.SIGTERM)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                rc = SCRIPTS[command](argv)
        finally:
            os.environ.clear()
            os.environ.update(env)
            signal.signal(signal.SIGTERM, sigterm)
        proc = subprocess.CompletedProcess([command, *argv], rc, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} {' '.join(argv)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def one_error_line(rc: int, err: str, fragment: str) -> str:
    """Bad input's contract: exit 2 and exactly one stderr line, `error: ...` holding `fragment`."""
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    return lines[0]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """R/checkpoints/epoch_000.pt .. epoch_008.pt and last.pt of a digits CNN."""
    root = tmp_path_factory.mktemp("train")
    cli("landscape-train", "model=digits_cnn", "data=digits", "train.epochs=8", f"run.dir={root}")
    return root / "checkpoints"


@pytest.fixture
def base_args(trained) -> list[str]:
    return ["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}"]


def read_surface(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r", locking=False) as f:
        return {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}  # groups: figures/, planes/


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def slurm():
    """A running single-node Slurm with accounting (cluster/up.sh is idempotent)."""
    avail = subprocess.run(["bash", str(REPO / "cluster" / "available.sh")], capture_output=True, text=True)
    if avail.returncode != 0:
        require_cluster(f"no local cluster: {avail.stdout.strip() or avail.stderr.strip()}")
    up = subprocess.run(["bash", str(REPO / "cluster" / "up.sh")], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        require_cluster(f"cluster/up.sh failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
    os.environ["LANDSCAPE_SINGLE_NODE"] = "1"  # run dirs under /tmp are shared here: one node
    return True


def wait_for(predicate, timeout: float = 120, poll: float = 0.2) -> bool:
    """Poll until predicate() is true; False on time-out (tests assert on it)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False
