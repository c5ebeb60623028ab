"""Real Slurm (with slurmdbd) through real sbatch arrays: equality with local, cancel and rerun, failures."""
import json
import subprocess

import h5py
import numpy as np
import pytest

from conftest import cli, read_surface, wait_for

pytestmark = pytest.mark.cluster
GRID = ["grid.resolution=[9,7]", "grid.range=[[-1,1],[-0.5,0.5]]", "grid.tile=3"]


@pytest.fixture(scope="module")
def local_ref(trained, tmp_path_factory):
    run = tmp_path_factory.mktemp("slurm_ref") / "run"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *GRID,
        f"run.dir={run}")
    return read_surface(run / "surface.h5")


def _array_id(run):
    return json.loads((run / "submissions.jsonl").read_text().splitlines()[-1])["array"]


def _array_gone(array_id):
    out = subprocess.run(["squeue", "-h", "-j", array_id], capture_output=True, text=True).stdout
    return out.strip() == ""


def test_slurm_surface_equals_local(slurm, local_ref, base_args, tmp_path):
    run = tmp_path / "S"
    out = cli("landscape-surface", *base_args, *GRID, "launcher=slurm", "launcher.partition=debug",
              "launcher.tiles_per_task=2", f"run.dir={run}")
    assert "submitted slurm array" in out.stdout and "5 tasks, 9 tiles" in out.stdout
    got = read_surface(run / "surface.h5")
    np.testing.assert_array_equal(got["train_loss"], local_ref["train_loss"])
    np.testing.assert_array_equal(got["train_acc"], local_ref["train_acc"])
    hosts = {h5py.File(p, "r").attrs["pid"] for p in (run / "tiles").glob("*.h5")}
    assert len(hosts) == 5  # one process per array task
    sacct = subprocess.run(["sacct", "-n", "-P", "-X", "-j", _array_id(run), "--format=State"],
                           capture_output=True, text=True).stdout.split()
    assert sacct.count("COMPLETED") == 5
    status = cli("landscape-status", run).stdout
    assert "9 done" in status and "0 failed" in status


def test_cancelled_tasks_are_the_only_ones_rerun(slurm, local_ref, base_args, tmp_path):
    run = tmp_path / "C"
    args = [*base_args, *GRID, "launcher=slurm", f"run.dir={run}"]
    cli("landscape-surface", *args, "launcher.wait=false", "launcher.parallelism=2")
    array_id = _array_id(run)
    assert wait_for(lambda: any((run / "tiles").glob("*.h5")), timeout=120)
    subprocess.run(["scancel", f"{array_id}_[4-8]"], check=True)
    assert wait_for(lambda: _array_gone(array_id), timeout=120)
    done = {p.name: p.stat().st_mtime_ns for p in (run / "tiles").glob("*.h5")}
    assert 0 < len(done) < 9, "the cancel came too late (or too early) to test anything"
    status = cli("landscape-status", run).stdout
    assert f"{len(done)} done" in status and "to finish: landscape-surface" in status
    out = cli("landscape-surface", *args)
    assert f"{len(done)}/9 tiles done, {9 - len(done)} to compute" in out.stdout
    assert f"{9 - len(done)} tasks, {9 - len(done)} tiles" in out.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (run / "tiles").glob("*.h5")}
    assert len(after) == 9 and all(after[n] == t for n, t in done.items())
    np.testing.assert_array_equal(read_surface(run / "surface.h5")["train_loss"], local_ref["train_loss"])


def test_failing_tasks_show_in_status_then_rerun_finishes(slurm, local_ref, base_args, tmp_path):
    run = tmp_path / "F"
    args = [*base_args, *GRID, "launcher=slurm", f"run.dir={run}"]
    # a bad setting on the nodes: every task raises (eval.device may change between attempts)
    out = cli("landscape-surface", *args, "eval.device=cuda:7", "launcher.tiles_per_task=3", check=False)
    assert out.returncode == 2 and "9 tiles are missing" in out.stderr
    assert "3 array tasks failed" in out.stdout
    status = cli("landscape-status", run).stdout
    assert "9 failed" in status and "FAILED" in status
    assert "CUDA" in status or "cuda" in status  # the task's own error, from its log
    cli("landscape-surface", *args, "launcher.tiles_per_task=3")  # 3 tasks: fewer Python start-ups
    np.testing.assert_array_equal(read_surface(run / "surface.h5")["train_loss"], local_ref["train_loss"])


def test_dry_run_plans_arrays_and_estimates(slurm, base_args, tmp_path):
    out = cli("landscape-surface", *base_args, "grid.resolution=41", "grid.tile=4", "launcher=slurm",
              "launcher.dry_run=true", "launcher.tiles_per_task=3", "launcher.max_array_size=10",
              f"run.dir={tmp_path / 'D'}")
    assert "121 of 121 tiles to compute, 1681 points" in out.stdout
    assert "41 array tasks of 3 tile(s) in 5 array(s) (10, 10, 10, 10, 1 tasks)" in out.stdout
    assert "s per point" in out.stdout and "-hours" in out.stdout
    assert not (tmp_path / "D" / "submissions.jsonl").exists()
    assert not list((tmp_path / "D").glob("tiles/*.h5"))
