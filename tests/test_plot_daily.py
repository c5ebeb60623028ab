"""Plots for daily use (issue 16): an automatic log scale for wide loss ranges, shared colour limits, and
variants of one run's plots side by side (plot.dir)."""
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, one_error_line
from landscape.grid import Grid
from landscape.plot import PlotOptions, figures_2d, plot_surface_file, scale
from landscape.surface import write_surface

X = np.linspace(-1.0, 1.0, 9)
Y = np.linspace(-1.0, 1.0, 7)
GX, GY = np.meshgrid(X, Y)
R = np.hypot(GX, GY) / np.sqrt(2)  # 0 at the centre, 1 in the corners
WIDE = 10.0 ** (13 * R - 4)  # 1e-4 .. 1e9: a no-skip ResNet-56 at range 1
BOWL = 0.5 + 4 * R**2  # 0.5 .. 4.5: well under three decades
FAST = dict(dpi=40, levels=8)


def surface_run(root: Path, loss: np.ndarray) -> Path:
    """A run directory holding only a merged surface, as landscape-plot needs it."""
    run = root / "run"
    run.mkdir()
    arrays = {"train_loss": loss, "train_acc": 100 - 10 * R, "done": np.ones(loss.shape, bool)}
    write_surface(run / "surface.h5", Grid(X, Y), arrays, dir_file="directions.h5", attrs={"title": "t"})
    return run


def heatmap_and_contourf(figs: dict) -> tuple:
    """The heatmap's QuadMesh and the filled contour set, whose colour bars carry the label."""
    return figs["heatmap"].axes[0].collections[0], figs["contourf"].axes[0].collections[0]


@pytest.mark.parametrize("values,opts,log,note", [
    (WIDE, {}, True, " (log10, auto)"),
    (BOWL, {}, False, ""),
    (WIDE, {"log_scale": False}, False, ""),
    (BOWL, {"log_scale": True}, True, " (log10)"),
    (np.append(WIDE, [0.0, -1.0, np.inf, np.nan]), {}, True, " (log10, auto)"),  # ignored: not finite, not > 0
    (WIDE, {"clip": 0.1}, False, " (clipped at 0.1)"),  # drawn: 1e-4 .. 0.1, three decades, not more
    (WIDE, {"vmin": 1, "vmax": 100}, False, ""),  # the given limits are what is drawn
    (BOWL, {"vmin": 1e-3, "vmax": 10}, True, " (log10, auto)"),
])
def test_auto_log_decides_on_the_range_drawn(values, opts, log, note):
    s = scale(values, PlotOptions(**opts))
    assert (s.log, s.note) == (log, note)


def test_wide_surface_drawn_on_log_scale_by_default(tmp_path):
    mesh, filled = heatmap_and_contourf(figures_2d(X, Y, WIDE, "train_loss", PlotOptions(**FAST)))
    assert mesh.colorbar.ax.get_ylabel() == filled.colorbar.ax.get_ylabel() == "train_loss (log10, auto)"
    np.testing.assert_allclose(mesh.get_clim(), [-4, 9], atol=1e-9)  # log10 values, not 1e-4 .. 1e9
    assert filled.levels.max() < 20
    figs = figures_2d(X, Y, WIDE, "train_loss", PlotOptions(log_scale=False, **FAST), title="wide")
    mesh, filled = heatmap_and_contourf(figs)
    assert mesh.colorbar.ax.get_ylabel() == "train_loss" and figs["contour"].axes[0].get_title() == "wide"
    assert filled.levels.max() >= 1e9


def test_1d_losses_share_one_auto_scale(tmp_path):
    x = np.linspace(-1, 1, 21)
    arrays = {"train_loss": 10.0 ** (13 * np.abs(x) - 4), "test_loss": 1 + x**2, "train_acc": 90 - x**2,
              "done": np.ones(x.shape, bool)}
    write_surface(tmp_path / "s.h5", Grid(x), arrays, dir_file="", attrs={})
    plot_surface_file(tmp_path / "s.h5", tmp_path, PlotOptions(formats=("svg",), dpi=40))
    text = (tmp_path / "1d_loss_acc.svg").read_text()
    assert "loss (log10, auto)" in text and "accuracy (%)" in text


def test_vmin_vmax_shared_by_figures(tmp_path):
    opts = PlotOptions(vmin=1e-2, vmax=1e3, **FAST)  # five decades: auto draws log10
    drawn = [heatmap_and_contourf(figures_2d(X, Y, z, "train_loss", opts)) for z in (WIDE, BOWL)]
    for mesh, filled in drawn:
        np.testing.assert_allclose(mesh.get_clim(), [-2, 3])
        np.testing.assert_allclose(filled.levels, np.linspace(-2, 3, 8))
        assert filled.extend == "both"  # values beyond the limits take the end colours
    mesh, filled = heatmap_and_contourf(figures_2d(X, Y, BOWL, "train_loss", PlotOptions(vmin=1, vmax=3, **FAST)))
    assert mesh.get_clim() == (1, 3) and filled.levels[[0, -1]].tolist() == [1, 3]


def test_two_variants_of_one_run_coexist(tmp_path, monkeypatch):
    run = surface_run(tmp_path, BOWL)
    monkeypatch.chdir(tmp_path)
    out = cli("landscape-plot", run, "+plot.formats=[png,svg]").stdout
    assert f"plots {run / 'plots'}:" in out
    default = {p.name: p.read_bytes() for p in (run / "plots").iterdir()}
    out = cli("landscape-plot", "run", "plot.dir=run/plots-log", "plot.log_scale=true", "+plot.formats=[png,svg]").stdout
    assert f"plots {run / 'plots-log'}:" in out  # relative to where the command ran, printed absolute
    variant = {p.name: p.read_bytes() for p in (run / "plots-log").iterdir()}
    assert {p.name: p.read_bytes() for p in (run / "plots").iterdir()} == default  # untouched
    assert sorted(variant) == sorted(default) and "train_loss_heatmap.png" in variant
    assert b"(log10)" in variant["train_loss_heatmap.svg"] and b"(log10" not in default["train_loss_heatmap.svg"]
    assert b"(log10" not in variant["train_acc_heatmap.svg"]  # accuracies stay linear
    assert variant["train_loss_contourf.png"] != default["train_loss_contourf.png"]


@pytest.mark.parametrize("args,fragment", [
    (["plot.vmin=abc", "plot.vmax=1"], "plot.vmin='abc' plot.vmax=1: give both"),
    (["plot.vmin=5", "plot.vmax=1"], "vmin < vmax"),
    (["plot.vmin=1"], "plot.vmin=1 plot.vmax=null: give both"),
    (["plot.vmin=0", "plot.vmax=1", "plot.log_scale=true"], "plot.vmin is 0: with plot.log_scale=true"),
    (["plot.log_scale=sometimes"], "plot.log_scale is 'sometimes': use true or false, or auto"),
    (["plot.dir=run/surface.h5"], "is a file: name a folder"),
])
def test_bad_plot_settings_are_one_line(tmp_path, monkeypatch, args, fragment):
    surface_run(tmp_path, WIDE)
    monkeypatch.chdir(tmp_path)
    proc = cli("landscape-plot", "run", *args, check=False)
    one_error_line(proc.returncode, proc.stderr, fragment)
    assert not (tmp_path / "run" / "plots").exists()


def test_surface_writes_its_plots_into_plot_dir(tmp_path, monkeypatch, base_args):
    monkeypatch.chdir(tmp_path)
    out = cli("landscape-surface", *base_args, "launcher=local", "grid.resolution=5", "run.dir=run",
              "plot.dir=figs", "eval.precision_check=0").stdout
    assert f"plots   {tmp_path / 'figs'}:" in out
    assert (tmp_path / "figs" / "train_loss_contour.png").is_file() and not (tmp_path / "run" / "plots").exists()
