"""An approximate or untrustworthy value is said where the user looks (driver output, landscape-status, plot
titles), and a run that cannot go on as advised is not advised to."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest

from conftest import BIN, cli, one_error_line, wait_for
from landscape import plot_curvature
from launch import lock
from landscape.plot import PlotOptions, read_surface

QUICK = ["grid.resolution=3", "launcher.workers=1"]


@pytest.fixture(scope="module")
def subset_run(trained, tmp_path_factory) -> tuple[Path, str]:
    """A 3x3 surface with curvature, its values over 100 training samples, its curvature over 64 of them."""
    run = tmp_path_factory.mktemp("subset") / "S"
    out = cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *QUICK,
              "data.subset=100", "metrics=[loss,hessian]", "hessian.samples=64", "hessian.max_iter=8",
              "hessian.trace_probes=0", f"run.dir={run}").stdout
    return run, out


def test_a_subset_is_said_by_the_driver_status_and_titles(subset_run):
    run, out = subset_run
    data_line = next(line for line in out.splitlines() if line.startswith("data: train split"))
    assert "100 of 1438 samples" in data_line and "data.subset=100" in data_line, data_line
    assert "curvature over 64 of them" in data_line, data_line
    status = cli("landscape-status", str(run)).stdout
    assert "data.subset=100" in status and "approximate" in status, status
    surf = read_surface(run / "surface.h5")
    assert "data.subset=100" in surf.heading("train_loss") and "data.subset=100" in surf.subject


def test_hessian_samples_are_said_in_status_and_curvature_titles(subset_run, monkeypatch, tmp_path):
    run, _ = subset_run
    hessian = next(line for line in cli("landscape-status", str(run)).stdout.splitlines()
                   if line.startswith("hessian:"))
    assert "64 samples of the train split (hessian.samples=64)" in hessian, hessian
    titles = []
    monkeypatch.setattr(plot_curvature, "plot_2d", lambda *a, **k: titles.append(a[8]) or [])
    plot_curvature.plot_curvature_file(run / "surface.h5", tmp_path, PlotOptions())
    assert titles and all("64 samples of the train split" in t and "data.subset=100" in t for t in titles), titles



def test_engine_settings_that_cannot_run_are_refused_before_anything_is_written(base_args, tmp_path):
    run = tmp_path / "XE"
    proc = cli("landscape-surface", *base_args, *QUICK, "eval.bn=recalibrate", "eval.mode=vmap", f"run.dir={run}",
               check=False)
    one_error_line(proc.returncode, proc.stderr, "eval.bn=recalibrate")
    assert "tiles done" not in proc.stdout and not run.exists()
    cli("landscape-surface", *base_args, *QUICK, "eval.bn=recalibrate", "eval.mode=loop", f"run.dir={run}")


def test_a_plot_dir_that_is_a_file_is_refused_before_computing(base_args, tmp_path):
    (tmp_path / "figs").write_text("")
    proc = cli("landscape-surface", *base_args, *QUICK, f"plot.dir={tmp_path / 'figs'}", f"run.dir={tmp_path / 'P'}",
               check=False)
    one_error_line(proc.returncode, proc.stderr, "is a file")
    assert not (tmp_path / "P").exists()


def test_a_second_driver_is_refused_before_run_yaml_is_rewritten(base_args, tmp_path):
    run = tmp_path / "D"
    cli("landscape-surface", *base_args, "grid.resolution=3", "launcher=none", f"run.dir={run}")
    saved = (run / "run.yaml").read_text()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (run / "driver.json").write_text(json.dumps({"host": os.uname().nodename, "pid": other.pid,
                                                     "launcher": "local", "started": time.time()}))
        proc = cli("landscape-surface", *base_args, *QUICK, "launcher.workers=2", f"run.dir={run}", check=False)
    finally:
        other.kill()
        other.wait()
    one_error_line(proc.returncode, proc.stderr, "another landscape-surface is computing")
    assert (run / "run.yaml").read_text() == saved and not list((run / "tiles").glob("*.h5"))


def test_a_line_of_length_zero_is_refused_like_a_plane(base_args, trained, tmp_path):
    shutil.copy(trained / "last.pt", tmp_path / "same.pt")  # another path, the same weights
    for start in (trained / "last.pt", tmp_path / "same.pt"):
        run = tmp_path / f"L-{start.stem}"
        proc = cli("landscape-surface", *base_args, "directions=line", f"directions.start={start}",
                   "grid.resolution=5", f"run.dir={run}", check=False)
        one_error_line(proc.returncode, proc.stderr, "directions.start has the centre checkpoint's weights")
        assert not run.exists()


def test_finished_tiles_not_merged_name_the_merging_command(base_args, tmp_path):
    run = tmp_path / "SW"
    cli("landscape-surface", *base_args, *QUICK, "grid.tile=2", f"run.dir={run}")
    assert "merge:" not in cli("landscape-status", str(run)).stdout
    (run / "surface.h5").unlink()  # as after launcher.wait=false: every tile done, none merged
    merge = f"landscape-surface run.dir={run} launcher=none"
    status = cli("landscape-status", str(run)).stdout
    assert f"merge: {run / 'surface.h5'} lacks 4 finished tiles: merge them with {merge}" in status, status
    proc = cli("landscape-plot", str(run), check=False)
    one_error_line(proc.returncode, proc.stderr, f"4 tile files are not merged yet; merge them with {merge}")
    cli("landscape-surface", f"run.dir={run}", "launcher=none")
    assert "merge:" not in cli("landscape-status", str(run)).stdout


def test_status_of_a_truncated_surface_shows_the_tiles_and_how_to_rebuild(base_args, tmp_path):
    run = tmp_path / "T"
    cli("landscape-surface", *base_args, *QUICK, f"run.dir={run}")
    with open(run / "surface.h5", "r+b") as f:
        f.truncate(2000)
    proc = cli("landscape-status", str(run), check=False)
    assert "tiles: 1 done" in proc.stdout, proc.stdout + proc.stderr
    assert f"is unreadable" in proc.stdout and f"landscape-surface run.dir={run} launcher=none" in proc.stdout


def test_a_killed_local_worker_is_reported_as_such(base_args, tmp_path):
    """kill -9 of one of two local workers mid-tile: the driver says which died and how, and that 1 tile is missing."""
    run = tmp_path / "K"
    driver = subprocess.Popen([str(BIN / "landscape-surface"), *base_args, "grid.resolution=13", "grid.tile=4",
                               "launcher.workers=2", f"run.dir={run}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(live for _, live in lock.writers(run)), timeout=120, poll=0.02)
        victim = next(p.pid for p, live in lock.writers(run) if live)
        os.kill(victim, signal.SIGKILL)
        out, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert f"warning: local worker pid {victim} was killed by signal 9 (SIGKILL)" in out, out
    assert driver.returncode == 2 and "error: 1 tile is missing: run the same command again" in err, err


def test_a_stopped_run_has_no_time_left_and_its_speed_leaves_out_idle_time(base_args, tmp_path):
    run = tmp_path / "I"
    cli("landscape-surface", *base_args, *QUICK, "grid.tile=2", f"run.dir={run}")  # one worker: 4 tiles in turn
    tiles = sorted((run / "tiles").glob("*.h5"))
    for path in tiles[2:]:  # computed in a second session, an hour later
        with h5py.File(path, "r+") as f:
            f.attrs["finished"] = float(f.attrs["finished"]) + 3600
    tiles[0].unlink()
    status = cli("landscape-status", str(run)).stdout
    speed = next(line for line in status.splitlines() if line.startswith("speed:"))
    per_worker, overall = re.findall(r"([\d.]+) points/s", speed)
    assert per_worker == overall, speed  # tiles one after another: computing time is the sum of theirs
    assert "time left" not in status and "to finish" in status, status


@pytest.mark.parametrize("split, cost", [("train", "160.0 GB for the train split)"),
                                         ("both", "320.0 GB for the train and test splits)")])
def test_a_grid_too_large_to_hold_names_the_splits_evaluated(base_args, tmp_path, split, cost):
    proc = cli("landscape-surface", *base_args, "grid.resolution=100000", f"data.split={split}",
               f"run.dir={tmp_path / 'G'}", check=False)
    one_error_line(proc.returncode, proc.stderr, f"(80.0 GB each, {cost}")
