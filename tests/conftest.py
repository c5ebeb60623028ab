"""Shared fixtures: a digits CNN trained once per session through the real `landscape-train`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: needs the local Slurm / Open MPI set up by cluster/up.sh")
    config.addinivalue_line("markers", "slow: takes more than ~20 s")


def require_cluster(reason: str) -> None:
    """Skip with a printed reason, except where LANDSCAPE_REQUIRE_CLUSTER=1 (CI) makes it a failure."""
    if os.environ.get("LANDSCAPE_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"cluster test required but cannot run: {reason}")
    pytest.skip(reason)


def cli(command: str, *args: str, cwd: Path | None = None, check: bool = True, timeout: float = 600,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a console script of the venv the way a user would."""
    proc = subprocess.run([str(BIN / command), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} {' '.join(map(str, args))} exited {proc.returncode}:\n"
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
        return {k: f[k][()] for k in f.keys()}


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
