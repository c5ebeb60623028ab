"""launcher=pbs against a real OpenPBS 23.06.06 server (cluster/pbs.sh up), reached through the
cluster/pbs-bin wrappers that enter the server's network namespace. Skips unless that server answers:
nothing starts or builds it here yet (cluster/README.md, "OpenPBS")."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, cli
from test_pbs import assert_same_surface

PBS_BIN = REPO / "cluster" / "pbs-bin"


@pytest.fixture(scope="module")
def openpbs() -> Path:
    """The wrappers' folder, if the server answers `qstat -B` within a few seconds."""
    try:
        probe = subprocess.run([str(PBS_BIN / "qstat"), "-B"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"no OpenPBS server: {e}")
    if probe.returncode != 0:
        pytest.skip(f"no OpenPBS server (start it with cluster/pbs.sh up): {(probe.stderr or probe.stdout).strip()}")
    return PBS_BIN


@pytest.mark.cluster
def test_surface_through_real_openpbs_equals_local(openpbs, trained, tmp_path, monkeypatch):
    """A `qsub -J` array on the real server (tiles_per_task=2: 9 tiles, 5 subjobs) gives bitwise the
    local surface."""
    monkeypatch.setenv("PATH", f"{openpbs}:{os.environ['PATH']}")  # before slurm-wlm-torque's qsub
    monkeypatch.setenv("LANDSCAPE_SINGLE_NODE", "1")  # /tmp is shared: one node
    args = ["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", "grid.resolution=5", "grid.tile=2"]
    cli("landscape-surface", *args, "launcher=local", f"run.dir={tmp_path / 'L'}")
    out = cli("landscape-surface", *args, "launcher=pbs", "launcher.flavor=pro", "launcher.tiles_per_task=2",
              f"run.dir={tmp_path / 'P'}")
    assert "submitted pbs array" in out.stdout
    assert_same_surface(tmp_path / "P", tmp_path / "L")
