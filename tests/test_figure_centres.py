"""The landscape figures are taken at the checkpoint, wherever each kind of directions places it, and say which
grid point stood in for it."""
import json
import math
import re

import h5py
import numpy as np
import pytest

from conftest import cli, read_surface
from jobs.settings import DEFAULT_RANGE
from landscape import checkpoint, data, figures
from landscape.figures import FigureOptions, plane_figures
from landscape.grid import make_grid
from landscape.models import digits_cnn
from landscape.train import evaluate_split


def _own_loss(path) -> float:
    model = digits_cnn()
    checkpoint.load_into(model, path)
    return evaluate_split(model, data.digits().train, "cross_entropy", True)[0]


def _stats(run) -> dict[str, dict]:
    return {r["figure"]: r for r in json.loads(cli("landscape-stats", run, "--json").stdout)
            if r["loss"] == "train_loss"}


@pytest.fixture(scope="module")
def line_run(trained, tmp_path_factory):
    """The line from epoch_000 (a=0) to last (a=1), as `make demo` draws it."""
    run = tmp_path_factory.mktemp("line") / "run"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
        "directions=line", f"directions.start={trained / 'epoch_000.pt'}", "grid.resolution=5", f"run.dir={run}")
    return run


def test_a_lines_figures_are_taken_at_the_checkpoint_a_1():
    a = np.linspace(0, 1, 11)
    f = plane_figures(a, None, 2.3 - 2.2 * a, FigureOptions(radii=(0.2,)), "line")
    assert f["centre_loss"] == pytest.approx(0.1)
    assert f["max_rise_r0.2"] == pytest.approx(0.44)  # towards the start, the only side the grid holds


def test_line_run_centre_loss_is_the_checkpoints_loss(line_run, trained):
    figs = _stats(line_run)
    assert figs["centre_loss"]["mean"] == pytest.approx(_own_loss(trained / "last.pt"), rel=1e-4)
    status = cli("landscape-status", line_run).stdout
    assert re.search(rf"train_loss centre_loss +{figs['centre_loss']['mean']:.4g}\n", status)


def _surface(path, x, y, z, kind="random"):
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["train_loss"], f["done"] = x, z, np.ones(z.shape, dtype=bool)
        if y is not None:
            f["ycoordinates"] = y
        f.attrs["directions"] = kind
    return path


def test_a_grid_without_the_checkpoint_says_which_point_stood_in(tmp_path):
    x = np.linspace(-1, 1, 10)  # an even resolution: no point at 0
    rows = figures.rows(_surface(tmp_path / "s.h5", x, x, np.add.outer(x**2, x**2)))
    assert rows[0]["checkpoint_at"] == [0, 0] and rows[0]["centre_at"] == pytest.approx([-1 / 9, -1 / 9])
    assert rows[0]["centre_offset"] == pytest.approx(np.sqrt(2) / 9)
    assert re.search(r"\ncentre point +\(-0.111, -0.111\) for the checkpoint \(0, 0\), 0.157 off\n",
                     figures.table(rows))
    on = figures.rows(_surface(tmp_path / "t.h5", x[:-1] + 1 / 9, None, x[:-1] ** 2))  # 0 is a grid point
    assert on[0]["centre_offset"] == 0 and re.search(r"\ncentre point +0\n", figures.table(on))


def test_a_line_grid_without_both_checkpoints_has_no_barrier():
    a = np.linspace(-0.5, 1.5, 10)  # neither 0 nor 1 on the grid
    assert math.isnan(plane_figures(a, None, np.sin(3 * a), FigureOptions(), "line")["barrier"])
    b = np.linspace(-0.5, 1.5, 9)
    barrier = plane_figures(b, None, np.sin(3 * b), FigureOptions(), "line")["barrier"]
    assert barrier == pytest.approx(np.sin(1.5) - np.sin(3))  # grid points 0, 0.25, ..., 1


def test_stats_and_status_report_an_off_grid_centre(base_args, tmp_path):
    run = tmp_path / "even"
    cli("landscape-surface", *base_args, "grid.resolution=4", "grid.tile=4", f"run.dir={run}")
    line = r"centre point +\(-?0.333, -?0.333\) for the checkpoint \(0, 0\), 0.471 off\n"
    assert re.search(line, cli("landscape-stats", run).stdout)
    assert re.search(line, cli("landscape-status", run).stdout)
    assert _stats(run)["centre_loss"]["centre_offset"] == pytest.approx(np.sqrt(2) / 3)


def test_the_default_plane_grid_holds_the_three_networks(trained, base_args, tmp_path):
    for n in (41, 5):
        grid = make_grid(2, n, DEFAULT_RANGE["plane"])
        assert {0.0, 1.0} <= set(grid.x) and {0.0, 1.0} <= set(grid.y)
    w1, w2 = trained / "epoch_000.pt", trained / "epoch_004.pt"
    run = tmp_path / "plane"
    cli("landscape-surface", *base_args, "directions=plane", f"directions.points=[{w1},{w2}]",
        "grid.resolution=5", f"run.dir={run}")
    s = read_surface(run / "surface.h5")
    x, y = list(s["xcoordinates"]), list(s["ycoordinates"])
    for (a, b), path in zip(((0, 0), (1, 0), (0, 1)), (trained / "last.pt", w1, w2)):
        assert s["train_loss"][y.index(b), x.index(a)] == pytest.approx(_own_loss(path), rel=1e-5)
    assert _stats(run)["centre_loss"]["centre_offset"] == 0
