"""launcher=mpi with real `mpirun` (Debian's Open MPI): 3 ranks on 2 cores equal a local run bitwise,
a rank killed mid-run costs only its tiles, a launcher/library mismatch stops with a clear message."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import BIN, cli, copy_run, read_surface, require_cluster
from jobs.run import RunDir

GRID = ["grid.resolution=7", "grid.tile=1"]  # 49 tiles of one point: a rank can be killed with many left
TILES = 49
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "3"]


def _env() -> dict[str, str]:
    """os.environ as Python sees it, given to mpirun explicitly: once an in-process `launcher=mpi` call has
    started MPI in this test process, its C environment holds PMIx variables that make mpirun exit 1 silently."""
    return dict(os.environ)


def _missing() -> str | None:
    if not shutil.which("mpirun"):
        return "mpirun not found (Open MPI: make cluster-up, or apt-get install openmpi-bin libopenmpi-dev)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    return None


MISSING = _missing()
# Skipped before the (session) training fixture runs; with LANDSCAPE_REQUIRE_CLUSTER=1 the fixture fails instead.
pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(bool(MISSING) and os.environ.get("LANDSCAPE_REQUIRE_CLUSTER") != "1",
                                 reason=str(MISSING))]


@pytest.fixture(autouse=True)
def _mpi_available():
    if MISSING:
        require_cluster(MISSING)


@pytest.fixture(scope="module")
def args(trained) -> list[str]:
    return ["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *GRID]


@pytest.fixture(scope="module")
def reference(args, tmp_path_factory) -> dict[str, np.ndarray]:
    """The surface of a one-worker local run."""
    run = tmp_path_factory.mktemp("local") / "run"
    cli("landscape-surface", *args, "launcher=local", "launcher.workers=1", f"run.dir={run}")
    return read_surface(run / "surface.h5")


@pytest.fixture(scope="module")
def mpi_run(args, tmp_path_factory) -> Path:
    """The contract command: 3 ranks on this 2-core machine."""
    run = tmp_path_factory.mktemp("mpi") / "run"
    proc = subprocess.run([*MPIRUN, str(BIN / "landscape-surface"), *args, "launcher=mpi", f"run.dir={run}"],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, f"mpirun exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert f"{TILES} to compute" in proc.stdout and f"{TILES}/{TILES} tiles" in proc.stdout
    return run


def tile_meta(run: Path) -> dict[int, tuple[int, float]]:
    """(pid, finished) of every complete tile, by tile id."""
    r = RunDir(run)
    states = {t.id: r.tile_state(t) for t in r.tiles}
    return {tid: (int(s.meta["pid"]), float(s.meta["finished"])) for tid, s in states.items() if s.done}


def assert_same_surface(reference: dict, run: Path) -> None:
    got = read_surface(run / "surface.h5")
    for key in ("train_loss", "train_acc", "done"):
        np.testing.assert_array_equal(reference[key], got[key], err_msg=key)


def test_three_ranks_on_two_cores_equal_local_bitwise(mpi_run, reference):
    assert_same_surface(reference, mpi_run)
    writers = {pid for pid, _ in tile_meta(mpi_run).values()}
    assert len(writers) > 1, "every tile was written by one rank"
    with h5py.File(mpi_run / "surface.h5", "r", locking=False) as f:
        assert f["done"][()].all()
    assert sorted(p.name for p in (mpi_run / "plots").glob("train_loss_*.png"))  # rank 0 plotted


def _ranks(mpirun_pid: int) -> dict[int, int]:
    """{MPI rank: pid} of mpirun's children (Open MPI starts local ranks directly)."""
    ranks = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != mpirun_pid:
                continue
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "OMPI_COMM_WORLD_RANK" in env:
            ranks[int(env["OMPI_COMM_WORLD_RANK"])] = int(proc.name)
    return ranks


def test_rank_killed_mid_run_then_local_rerun_computes_only_missing(mpi_run, reference, tmp_path):
    """Through the batch-file entry (`mpirun python -m jobs.mpi RUN_DIR`) on a prepared run directory."""
    run = copy_run(mpi_run, tmp_path / "killed")
    for tile in (run / "tiles").glob("*.h5"):  # a prepared run: run.yaml and directions, no tiles
        tile.unlink()
    log = tmp_path / "mpirun.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*MPIRUN, str(BIN / "python"), "-m", "jobs.mpi", str(run)], stdout=out,
                                stderr=subprocess.STDOUT, env=_env())
    victim, deadline = None, time.time() + 120
    try:
        while victim is None and proc.poll() is None and time.time() < deadline:
            workers = {pid for rank, pid in _ranks(proc.pid).items() if rank > 0}
            victim = next((pid for pid, _ in tile_meta(run).values() if pid in workers), None)
            time.sleep(0.02)
        assert victim, "no worker rank wrote a tile: " + log.read_text()[-2000:]
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=60) != 0  # Open MPI ends the job when a rank dies
    finally:
        if proc.poll() is None:
            proc.kill()
    before = tile_meta(run)
    named = {int(p.stem) for p in (run / "tiles").glob("[0-9]*.h5")}
    assert named == set(before), "a tile file exists but is not complete"
    missing = set(range(TILES)) - set(before)
    assert missing, "the kill came too late: every tile was done"
    print(f"killed worker pid {victim}: {len(before)}/{TILES} tiles done, {len(missing)} missing; mpirun said:\n"
          + log.read_text()[-1500:])
    out = cli("landscape-surface", f"run.dir={run}", "launcher=local")
    assert f"{TILES - len(missing)}/{TILES} tiles done, {len(missing)} to compute" in out.stdout
    after = tile_meta(run)
    assert {tid: after[tid] for tid in before} == before  # finished tiles were left alone
    rerun_pids = {after[tid][0] for tid in missing}
    assert len(rerun_pids) == 1 and rerun_pids.isdisjoint(pid for pid, _ in before.values())
    assert_same_surface(reference, run)


def test_launcher_size_without_mpi_world_is_refused(mpi_run):
    """A launcher that promised 3 processes while MPI reports a world of one: stop, do not compute 3 times."""
    before = (mpi_run / "surface.h5").stat().st_mtime_ns
    proc = subprocess.run([str(BIN / "python"), "-m", "jobs.mpi", str(mpi_run)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMPI_COMM_WORLD_SIZE": "3"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "OMPI_COMM_WORLD_SIZE=3" in proc.stderr and "size 1" in proc.stderr and "MPI4PY_LIBMPI" in proc.stderr
    assert (mpi_run / "surface.h5").stat().st_mtime_ns == before


def test_launcher_mpi_without_mpirun_computes_on_the_single_rank(mpi_run, reference, tmp_path):
    run = copy_run(mpi_run, tmp_path / "single")
    for tid in (4, 17):
        RunDir(run).tile_file(RunDir(run).tiles[tid]).unlink()
    out = cli("landscape-surface", f"run.dir={run}", "launcher=mpi")
    assert f"{TILES - 2}/{TILES} tiles done, 2 to compute" in out.stdout
    assert_same_surface(reference, run)
