"""End to end through the real commands, local launcher: layout, resume, kill, truncation, refusal."""
import json
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch

from conftest import BIN, cli, copy_run, read_surface
from landscape import checkpoint, data
from landscape.models import digits_cnn
from landscape.train import evaluate_split

GRID = ["grid.resolution=[9,7]", "grid.range=[[-1,1],[-0.5,0.5]]"]


@pytest.fixture(scope="module")
def one_tile(trained, tmp_path_factory):
    """The reference: the whole 9x7 grid as a single tile, one worker."""
    run = tmp_path_factory.mktemp("one") / "run"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
        *GRID, "grid.tile=16", f"run.dir={run}")
    return run


def test_surface_file_layout_opens_with_plain_h5py(one_tile):
    with h5py.File(one_tile / "surface.h5", "r") as f:
        x, y = f["xcoordinates"][()], f["ycoordinates"][()]
        assert x.dtype == np.float64 and y.dtype == np.float64
        np.testing.assert_allclose(x, np.linspace(-1, 1, 9))
        np.testing.assert_allclose(y, np.linspace(-0.5, 0.5, 7))
        for key in ("train_loss", "train_acc"):
            assert f[key].shape == (7, 9) and f[key].dtype == np.float64
        assert f["done"][()].all()
        assert str(f["dir_file"][()].decode()).endswith("directions.h5")
        assert len(f.attrs["fingerprint"]) == 64 and "model:" in f.attrs["config"]
        assert f.attrs["torch_version"] == torch.__version__ and f.attrs["ylabel"].startswith("direction 2")
        acc = f["train_acc"][()]
        assert 0 <= acc.min() and acc.max() <= 100
    with h5py.File(one_tile / "directions.h5", "r") as f:
        n_params = len(list(digits_cnn().parameters()))
        assert sorted(f["xdirection"].keys(), key=int) == [str(i) for i in range(n_params)]
        assert len(f["ydirection"]) == n_params and len(f["parameter_names"]) == n_params


def test_centre_equals_standalone_evaluation(one_tile, trained):
    s = read_surface(one_tile / "surface.h5")
    model = digits_cnn()
    checkpoint.load_into(model, trained / "last.pt")
    loss, acc = evaluate_split(model, data.digits().train, "cross_entropy", True)
    iy, ix = 3, 4  # x[4] = 0, y[3] = 0
    assert s["xcoordinates"][ix] == 0 and s["ycoordinates"][iy] == 0
    assert s["train_loss"][iy, ix] == pytest.approx(loss, rel=1e-6)
    assert s["train_acc"][iy, ix] == pytest.approx(acc)
    # the centre is a minimum of this slice: every corner is worse
    assert s["train_loss"][iy, ix] < s["train_loss"][[0, 0, -1, -1], [0, -1, 0, -1]].min()


def test_trained_cnn_is_sensible(trained):
    history = torch.load(trained / "last.pt", weights_only=True)["metrics"]
    assert history["test_acc"] > 90
    first = torch.load(trained / "epoch_000.pt", weights_only=True)["metrics"]
    assert first["test_acc"] < 30  # epoch_000 are the untrained initial weights


def test_many_tiles_and_two_workers_equal_one_tile_bitwise(one_tile, base_args, tmp_path):
    run = tmp_path / "many"
    out = cli("landscape-surface", *base_args, *GRID, "grid.tile=2", "launcher.workers=2", f"run.dir={run}")
    assert "20 to compute" in out.stdout  # ceil(9/2) * ceil(7/2) tiles
    a, b = read_surface(one_tile / "surface.h5"), read_surface(run / "surface.h5")
    np.testing.assert_array_equal(a["train_loss"], b["train_loss"])
    np.testing.assert_array_equal(a["train_acc"], b["train_acc"])
    pids = {h5py.File(p, "r").attrs["pid"] for p in (run / "tiles").glob("*.h5")}
    assert len(pids) == 2  # both workers computed tiles


def test_rerun_of_finished_run_computes_nothing(one_tile, base_args):
    before = {p: p.stat().st_mtime_ns for p in (one_tile / "tiles").glob("*.h5")}
    out = cli("landscape-surface", *base_args, *GRID, "grid.tile=16", f"run.dir={one_tile}")
    assert "0 to compute" in out.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (one_tile / "tiles").glob("*.h5")}
    # the saved config alone resumes too
    out = cli("landscape-surface", f"run.dir={one_tile}")
    assert "1/1 tiles done, 0 to compute" in out.stdout


def test_sigkill_mid_run_then_resume_is_identical(one_tile, base_args, tmp_path):
    run = tmp_path / "killed"
    args = [*base_args, *GRID, "grid.tile=1", f"run.dir={run}"]
    proc = subprocess.Popen([str(BIN / "landscape-surface"), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while len(list((run / "tiles").glob("*.h5"))) < 5 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in (run / "tiles").glob("*.h5")}
    assert 5 <= len(done_before) < 63, "the kill came too late to test anything"
    out = cli("landscape-surface", *args)
    assert f"{len(done_before)}/63 tiles done, {63 - len(done_before)} to compute" in out.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (run / "tiles").glob("*.h5")}
    assert all(after[n] == t for n, t in done_before.items())  # finished tiles were not recomputed
    np.testing.assert_array_equal(read_surface(one_tile / "surface.h5")["train_loss"],
                                  read_surface(run / "surface.h5")["train_loss"])


def test_truncated_tile_is_detected_and_recomputed(one_tile, base_args, tmp_path):
    run = copy_run(one_tile, tmp_path / "trunc")
    tile = run / "tiles" / "00000.h5"
    tile.write_bytes(tile.read_bytes()[:700])
    status = cli("landscape-status", run).stdout
    assert "0 done" in status and "unreadable" in status
    out = cli("landscape-surface", *base_args, *GRID, "grid.tile=16", f"run.dir={run}")
    assert "0/1 tiles done, 1 to compute" in out.stdout
    np.testing.assert_array_equal(read_surface(one_tile / "surface.h5")["train_loss"],
                                  read_surface(run / "surface.h5")["train_loss"])


def test_tile_missing_a_loss_is_recomputed(one_tile, base_args, tmp_path):
    run = copy_run(one_tile, tmp_path / "lossless")
    with h5py.File(run / "tiles" / "00000.h5", "r+") as f:
        del f["train_loss"]
    assert "dataset train_loss missing (will be recomputed)" in cli("landscape-status", run).stdout
    out = cli("landscape-surface", *base_args, *GRID, "grid.tile=16", f"run.dir={run}")
    assert "0/1 tiles done, 1 to compute" in out.stdout
    np.testing.assert_array_equal(read_surface(one_tile / "surface.h5")["train_loss"],
                                  read_surface(run / "surface.h5")["train_loss"])


def test_tile_of_another_run_is_not_mixed_in(one_tile, base_args, tmp_path):
    run = copy_run(one_tile, tmp_path / "foreign")
    with h5py.File(run / "tiles" / "00000.h5", "r+") as f:
        f.attrs["fingerprint"] = "0" * 64
    status = cli("landscape-status", run).stdout
    assert "another configuration" in status


def test_changed_config_is_refused_and_nothing_written(one_tile, base_args):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in one_tile.rglob("*") if p.is_file())
    out = cli("landscape-surface", *base_args, *GRID, "grid.tile=16", "seed=5", f"run.dir={one_tile}", check=False)
    assert out.returncode == 2
    assert "another configuration" in out.stderr and "seed: 0 -> 5" in out.stderr
    assert "Traceback" not in out.stderr
    assert before == sorted((p.name, p.stat().st_mtime_ns) for p in one_tile.rglob("*") if p.is_file())


def test_launcher_and_plot_settings_may_change_on_resume(one_tile, base_args):
    out = cli("landscape-surface", *base_args, *GRID, "grid.tile=16", "launcher.workers=2", "plot.clip=3", "eval.precision_check=0", "eval.points_per_batch=4",
              f"run.dir={one_tile}")
    assert "0 to compute" in out.stdout


def test_tiles_from_another_device_or_engine_are_named(base_args, tmp_path):
    """Tiles agree bitwise only within one device kind and engine version: a mix is shown, not hidden."""
    run = tmp_path / "mixed"
    cli("landscape-surface", *base_args, *GRID, "grid.tile=4", f"run.dir={run}")
    status = cli("landscape-status", run).stdout
    assert "computed on" not in status  # one device, one engine
    with h5py.File(run / "surface.h5", "r") as f:
        assert f.attrs["computed_on"] == "cpu (engine 2): 6 tiles"
    with h5py.File(sorted((run / "tiles").glob("*.h5"))[0], "a") as f:
        f.attrs["engine_device_name"], f.attrs["engine_version"] = "NVIDIA_H100_80GB_HBM3", 1
    status = cli("landscape-status", run).stdout
    assert "computed on: NVIDIA_H100_80GB_HBM3 (engine 1): 1 tiles; cpu (engine 2): 5 tiles" in status
    cli("landscape-surface", *base_args, *GRID, "grid.tile=4", f"run.dir={run}")  # nothing to compute: reduces
    with h5py.File(run / "surface.h5", "r") as f:
        assert f.attrs["computed_on"] == "NVIDIA_H100_80GB_HBM3 (engine 1): 1 tiles; cpu (engine 2): 5 tiles"


@pytest.mark.parametrize("resolution,hint", [(41, False), (801, True)])
def test_dry_run_hints_compile_for_long_cpu_runs(base_args, tmp_path, resolution, hint):
    """An 801x801 digits surface is hours of CPU-worker time, a 41x41 one a minute: only the first is told."""
    out = cli("landscape-surface", *base_args, f"grid.resolution={resolution}", "launcher.dry_run=true",
              f"run.dir={tmp_path / 'D'}")
    assert f"{resolution * resolution} points" in out.stdout
    assert ("eval.compile=true" in out.stdout) == hint
    out = cli("landscape-surface", *base_args, f"grid.resolution={resolution}", "launcher.dry_run=true",
              "eval.compile=false", f"run.dir={tmp_path / 'E'}")
    assert "eval.compile=true" not in out.stdout  # the user chose: no hint


def test_status_engine_line_names_gpu_choices():
    """The engine line as a GPU tile would record it (CPU tiles never pad or graph): every choice named."""
    from launch.status import _engine
    meta = {"engine_device_name": "NVIDIA_H100_80GB_HBM3", "engine_mode": "loop", "engine_batch_size": 1024,
            "engine_compile": True, "engine_cuda_graph": True, "engine_fold_bn": False, "engine_padded_linear": 2}
    assert _engine(meta) == "NVIDIA_H100_80GB_HBM3, loop, batch 1024, compiled, CUDA graph, 2 linear layers padded"
    assert "padded" not in _engine(meta | {"engine_padded_linear": 0})


def test_status_and_replot(one_tile):
    status = cli("landscape-status", one_tile).stdout
    assert "1 done" in status and "0 missing" in status and "points/s" in status
    # the engine's choices as the tile recorded them: CPU, digits CNN, 1438 training images
    assert "engine: cpu, loop, batch 1024, eager, BatchNorm folded, channels_last\n" in status
    before = (one_tile / "plots" / "train_loss_contour.png").read_bytes()
    cli("landscape-plot", one_tile, "plot.log_scale=true", "plot.clip=5")
    assert (one_tile / "plots" / "train_loss_contour.png").read_bytes() != before


def test_line_endpoints_reproduce_each_checkpoint(trained, base_args, tmp_path):
    run = tmp_path / "line"
    cli("landscape-surface", *base_args, "directions=line", f"directions.start={trained / 'epoch_000.pt'}",
        "grid.resolution=5", "data.split=both", f"run.dir={run}")
    s = read_surface(run / "surface.h5")
    assert s["train_loss"].shape == (5,) and "ycoordinates" not in s
    np.testing.assert_allclose(s["xcoordinates"], [0, 0.25, 0.5, 0.75, 1])
    d = data.digits()
    for a, name in ((0, "epoch_000.pt"), (-1, "last.pt")):
        model = digits_cnn()
        checkpoint.load_into(model, trained / name)  # includes its BatchNorm running statistics
        for split in ("train", "test"):
            loss, acc = evaluate_split(model, getattr(d, split), "cross_entropy", True)
            assert s[f"{split}_loss"][a] == pytest.approx(loss, rel=1e-5)
            assert s[f"{split}_acc"][a] == pytest.approx(acc)
    assert (run / "plots" / "1d_loss_acc.png").is_file()


def test_line_past_its_ends_warns_where_batchnorm_variances_go_negative(trained, base_args, tmp_path):
    run = tmp_path / "line-ext"
    out = cli("landscape-surface", *base_args, "directions=line", f"directions.start={trained / 'epoch_000.pt'}",
              "grid.resolution=9", "grid.range=[-1,3]", f"run.dir={run}").stdout
    s = read_surface(run / "surface.h5")
    nan = ~np.isfinite(s["train_loss"])
    assert nan.any() and not nan.all(), "the range no longer reaches negative variances: widen it"
    xs = s["xcoordinates"][nan]
    assert f"warning: {nan.sum()} of 9 points (a from {xs.min():g} to {xs.max():g})" in out
    assert not any(0 <= a <= 1 for a in xs)  # between the checkpoints variances interpolate, never below 0


def test_pca_surface_contains_its_trajectory(trained, base_args, tmp_path):
    run = tmp_path / "pca"
    cli("landscape-surface", *base_args, "directions=pca", f"directions.checkpoints={trained}",
        "grid.resolution=5", f"run.dir={run}")
    s = read_surface(run / "surface.h5")
    traj = s["trajectory"]
    assert traj.shape == (9, 2) and list(s["trajectory_labels"]) == list(range(9))
    for axis, coords in ((0, s["xcoordinates"]), (1, s["ycoordinates"])):
        assert coords.min() < traj[:, axis].min() and traj[:, axis].max() < coords.max()
        assert np.abs(coords).min() < 1e-12, coords  # the fitted range puts a grid point on the checkpoint
    centre = np.unravel_index(np.argmin(np.hypot(*np.meshgrid(s["xcoordinates"], s["ycoordinates"]))), (5, 5))
    assert np.isfinite(s["train_loss"][centre])
    figures = json.loads(cli("landscape-stats", str(run), "--json").stdout)
    assert figures[0]["centre_offset"] == 0, figures[0]
    with h5py.File(run / "surface.h5", "r") as f:
        assert f.attrs["xlabel"].startswith("PC1 (") and "%" in f.attrs["ylabel"]
    with h5py.File(run / "directions.h5", "r") as f:
        ratio = f["explained_variance_ratio_"][()]
        assert ratio.shape == (2,) and ratio[0] >= ratio[1] > 0 and ratio.sum() <= 1
