"""Several random planes in one run, the plane through three checkpoints, and the files Li et al.'s tools read."""
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import cli, one_error_line, read_surface
from jobs.run import RunDir
from jobs.tile import build_worker
from landscape import checkpoint, data, figures
from landscape.models import digits_cnn
from landscape.train import evaluate_split

GRID = ["grid.resolution=[5,4]", "grid.range=[[-1,1],[-0.5,0.5]]"]


@pytest.fixture(scope="module")
def singles(trained, tmp_path_factory):
    """Plain one-plane runs with seeds 3 and 5, each grid one tile: what every plane must reproduce."""
    out = {}
    for seed in (3, 5):
        run = tmp_path_factory.mktemp(f"seed{seed}") / "run"
        cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *GRID,
            "grid.tile=16", f"seed={seed}", f"run.dir={run}")
        out[seed] = read_surface(run / "surface.h5")
    return out


@pytest.fixture(scope="module")
def two_planes(trained, tmp_path_factory):
    """Planes of seeds 3 and 5 in one run: 2x2 tiles, six per plane, shared by two worker processes."""
    run = tmp_path_factory.mktemp("planes") / "run"
    out = cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *GRID,
              "directions.planes=[3,5]", "grid.tile=2", "launcher.workers=2", f"run.dir={run}").stdout
    assert "12 to compute" in out
    return run


def test_each_plane_equals_the_single_run_of_its_seed(two_planes, singles):
    with h5py.File(two_planes / "surface.h5", "r") as f:
        stack = f["planes/train_loss"][()]
        assert stack.shape == (2, 4, 5) and f["planes/done"][()].all()
        np.testing.assert_array_equal(f["train_loss"][()], stack[0])  # Li et al.'s tools read plane 0
        assert list(f.attrs["seeds"]) == [3, 5] and f.attrs["planes"] == 2
        for k, seed in enumerate((3, 5)):
            np.testing.assert_array_equal(stack[k], singles[seed]["train_loss"])
            np.testing.assert_array_equal(f["planes/train_acc"][k], singles[seed]["train_acc"])
    with h5py.File(two_planes / "directions.h5", "r") as f:
        assert "planes/1/xdirection" in f and "planes/1/ydirection" in f and "planes/0" not in f


def test_mean_and_std_maps_match_a_direct_computation(two_planes, singles):
    a, b = singles[3]["train_loss"], singles[5]["train_loss"]
    with h5py.File(two_planes / "surface.h5", "r") as f:
        np.testing.assert_allclose(f["planes_mean/train_loss"][()], (a + b) / 2, rtol=1e-12)
        np.testing.assert_allclose(f["planes_std/train_loss"][()], np.abs(a - b) / np.sqrt(2), rtol=1e-9)
        stored = f["figures/train_loss/max_rise_r0.5"]
        direct = [figures.plane_figures(f["xcoordinates"][()], f["ycoordinates"][()], z,
                                        figures.FigureOptions())["max_rise_r0.5"] for z in (a, b)]
        np.testing.assert_allclose(stored[()], direct)
        assert stored.attrs["mean"] == pytest.approx(np.mean(direct))
        assert stored.attrs["std"] == pytest.approx(np.std(direct, ddof=1))


def test_stats_and_status_print_the_figures(two_planes, singles):
    table = cli("landscape-stats", two_planes, two_planes).stdout
    assert "(2 planes)" in table.splitlines()[0]
    rows = json.loads(cli("landscape-stats", two_planes, "--json").stdout)
    centre = next(r for r in rows if r["figure"] == "centre_loss")
    assert centre["planes"] == 2 and centre["values"][0] == pytest.approx(singles[3]["train_loss"][2, 2])
    assert {r["figure"] for r in rows} >= {"mean_rise_r0.5", "sharpness_r0.5", "basin_fraction",
                                          "nonconvex_fraction"}
    status = cli("landscape-status", two_planes).stdout
    assert "figures:" in status and "train_loss centre_loss" in status


@pytest.mark.cluster
def test_planes_through_slurm_tasks_that_cross_planes(slurm, singles, trained, tmp_path):
    run = tmp_path / "slurm"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *GRID,
        "directions.planes=[3,5]", "grid.tile=2", "launcher=slurm", "launcher.partition=debug",
        "launcher.tiles_per_task=4", f"run.dir={run}")  # task 1: tiles 4, 5 of plane 0 and 0, 1 of plane 1
    with h5py.File(run / "surface.h5", "r") as f:
        for k, seed in enumerate((3, 5)):
            np.testing.assert_array_equal(f["planes/train_loss"][k], singles[seed]["train_loss"])


def test_new_figure_settings_recompute_the_figures_only(two_planes, tmp_path):
    run = tmp_path / "radii"
    shutil.copytree(two_planes, run)
    out = cli("landscape-surface", f"run.dir={run}", "figures.radii=[0.3,1]", "figures.delta=null",
              "figures.factor=2").stdout
    assert "0 to compute" in out
    with h5py.File(run / "surface.h5", "r") as f:
        assert sorted(f["figures/train_loss"]) == sorted([
            "centre_loss", "mean_rise_r0.3", "max_rise_r0.3", "sharpness_r0.3", "mean_rise_r1", "max_rise_r1",
            "sharpness_r1", "basin_fraction", "nonconvex_fraction", "centre_min_curvature", "centre_max_curvature"])
        assert f.attrs["figures_basin"] == "centre * 2"


def test_planes_resume_per_tile(two_planes, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(two_planes, run)
    (run / "tiles" / "00007.h5").unlink()  # tile 1 of plane 1
    out = cli("landscape-surface", f"run.dir={run}").stdout
    assert "11/12 tiles done, 1 to compute" in out
    np.testing.assert_array_equal(read_surface(run / "surface.h5")["train_loss"],
                                  read_surface(two_planes / "surface.h5")["train_loss"])
    with h5py.File(run / "surface.h5", "r") as f, h5py.File(two_planes / "surface.h5", "r") as g:
        np.testing.assert_array_equal(f["planes/train_loss"][()], g["planes/train_loss"][()])


def test_random_lines(trained, base_args, tmp_path):
    run = tmp_path / "lines"
    cli("landscape-surface", *base_args, "grid.dims=1", "grid.resolution=7", "directions.planes=3", "seed=1",
        f"run.dir={run}")
    single = tmp_path / "single"
    cli("landscape-surface", *base_args, "grid.dims=1", "grid.resolution=7", "seed=3", f"run.dir={single}")
    with h5py.File(run / "surface.h5", "r") as f:
        assert f["planes/train_loss"].shape == (3, 7) and list(f.attrs["seeds"]) == [1, 2, 3]
        np.testing.assert_array_equal(f["planes/train_loss"][2], read_surface(single / "surface.h5")["train_loss"])
        assert f["figures/train_loss/basin_width"].shape == (3,)


def _own_loss(path) -> float:
    model = digits_cnn()
    checkpoint.load_into(model, path)  # its weights and its BatchNorm running statistics
    return evaluate_split(model, data.digits().train, "cross_entropy", True)[0]


def test_plane_through_three_checkpoints_passes_through_each(trained, base_args, tmp_path):
    w1, w2 = trained / "epoch_000.pt", trained / "epoch_004.pt"
    run = tmp_path / "plane"
    cli("landscape-surface", *base_args, "directions=plane", f"directions.points=[{w1},{w2}]",
        "grid.resolution=5", "grid.range=[-0.5,1.5]", f"run.dir={run}")
    s = read_surface(run / "surface.h5")
    np.testing.assert_allclose(s["checkpoint_coordinates"], [[0, 0], [1, 0], [0, 1]], atol=1e-6)
    assert [n.decode() for n in s["checkpoint_labels"]] == ["last", "epoch_000", "epoch_004"]
    for (ix, iy), path in zip(((1, 1), (3, 1), (1, 3)), (trained / "last.pt", w1, w2)):  # x = -0.5, 0, 0.5, 1, 1.5
        assert s["train_loss"][iy, ix] == pytest.approx(_own_loss(path), rel=1e-5)


def test_orthogonalized_plane_passes_through_each_at_its_marks(trained, base_args, tmp_path):
    w1, w2 = trained / "epoch_002.pt", trained / "epoch_005.pt"
    run = tmp_path / "ortho"
    cli("landscape-surface", *base_args, "directions=plane", f"directions.points=[{w1},{w2}]",
        "directions.orthogonalize=true", "grid.resolution=3", f"run.dir={run}")
    marks = read_surface(run / "surface.h5")["checkpoint_coordinates"]
    assert marks[1] == pytest.approx([1, 0], abs=1e-6) and abs(marks[2, 1]) > 1e-3
    x, y = read_surface(run / "surface.h5")["xcoordinates"], read_surface(run / "surface.h5")["ycoordinates"]
    assert x.min() < marks[:, 0].min() and marks[:, 1].max() < y.max()  # the default range is fitted to them
    losses = build_worker(RunDir(run), cache_dir=tmp_path / "cache").evaluator.evaluate(marks)["train_loss"]
    for loss, path in zip(losses, (trained / "last.pt", w1, w2)):
        assert loss == pytest.approx(_own_loss(path), rel=1e-5)


def test_every_plane_checkpoint_is_fingerprinted(trained, base_args, tmp_path):
    w1, w2 = tmp_path / "w1.pt", tmp_path / "w2.pt"
    shutil.copy(trained / "epoch_001.pt", w1)
    shutil.copy(trained / "epoch_002.pt", w2)
    run = tmp_path / "fp"
    args = [*base_args, "directions=plane", f"directions.points=[{w1},{w2}]", "grid.resolution=2", f"run.dir={run}"]
    cli("landscape-surface", *args, "launcher=none")
    shutil.copy(trained / "epoch_003.pt", w2)
    proc = cli("landscape-surface", *args, check=False)
    one_error_line(proc.returncode, proc.stderr, f"{w2} changed since this run was created")


def test_pca_writes_li_et_al_projection_file(trained, base_args, tmp_path):
    run = tmp_path / "pca"
    cli("landscape-surface", *base_args, "directions=pca", f"directions.checkpoints={trained}",
        "grid.resolution=2", "launcher=none", f"run.dir={run}")
    with h5py.File(run / "directions.h5_proj_cos.h5", "r") as f, h5py.File(run / "directions.h5", "r") as d:
        np.testing.assert_array_equal(np.stack([f["proj_xcoord"][()], f["proj_ycoord"][()]], 1), d["trajectory"][()])
        # Li et al.'s `cos` projection: the dot product with each (unit) direction
        dx = np.concatenate([d["xdirection"][str(i)][()].ravel() for i in range(len(d["xdirection"]))])
        assert np.linalg.norm(dx) == pytest.approx(1, rel=1e-5)


@pytest.mark.parametrize("args, fragment", [
    (["directions.planes=0"], "directions.planes is 0"),
    (["directions.planes=[1,1]"], "a list of distinct seeds"),
    (["directions=pca", "directions.checkpoints=x", "+directions.planes=2"], "unknown setting directions.planes"),
    (["directions=plane", "directions.points=[a.pt]"], "give two checkpoint files"),
    (["directions=plane", "directions.points=[a.pt,b.pt]", "directions.orthogonalize=3"],
     "directions.orthogonalize is 3"),
    (["directions=plane", "directions.points=[a.pt,b.pt]", "grid.dims=1"], "directions=plane gives a 2D plane"),
    (["directions=plane", "directions.points=[/nonexistent/a.pt,/nonexistent/b.pt]"],
     "checkpoint /nonexistent/a.pt does not exist"),
    (["figures.delta=null"], "set exactly one"),
])
def test_bad_plane_settings_are_one_line(base_args, tmp_path, args, fragment):
    proc = cli("landscape-surface", *base_args, *args, f"run.dir={tmp_path / 'bad'}", check=False)
    one_error_line(proc.returncode, proc.stderr, fragment)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("points, fragment", [
    (("last.pt", "epoch_000.pt"), "the first checkpoint has the centre checkpoint's weights"),
    (("epoch_000.pt", "epoch_000.pt"), "the three checkpoints lie on one line"),
])
def test_degenerate_plane_is_refused(trained, base_args, tmp_path, points, fragment):
    w1, w2 = (trained / p for p in points)
    proc = cli("landscape-surface", *base_args, "directions=plane", f"directions.points=[{w1},{w2}]",
               f"run.dir={tmp_path / 'bad'}", check=False)
    one_error_line(proc.returncode, proc.stderr, fragment)
