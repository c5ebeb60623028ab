"""Views people share (issue 14): centre marks, % colour bars, titles naming checkpoint and split, the 1D legend
and line marks, constant surfaces, log VTK names; comparisons on one scale with difference maps; the HTML page's
data; the trajectory animation."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from conftest import cli
from landscape.compare import compare_surfaces, difference, side_by_side
from landscape.errors import UserError
from landscape.grid import Grid
from landscape.interactive import write_html
from landscape.plot import KINDS, PlotOptions, figure_1d, figures_2d, plot_surface_file, read_surface
from landscape.surface import write_surface

X = np.linspace(-1.0, 1.0, 11)
Y = np.linspace(-1.0, 1.0, 9)
GX, GY = np.meshgrid(X, Y)
BOWL = 0.5 + GX**2 + 2 * GY**2
FAST = dict(dpi=40, levels=7)
RANDOM = {"title": "custom on tensors, random directions", "checkpoint": "last", "start": "", "directions": "random"}


def surface_file(path: Path, arrays: dict, x=X, y=Y, attrs=RANDOM, **extra) -> Path:
    """A surface file as jobs.reduce writes it (every point done)."""
    shape = (len(x),) if y is None else (len(y), len(x))
    write_surface(path, Grid(x, y), {**arrays, "done": np.ones(shape, bool)}, "directions.h5",
                  {"xlabel": "direction 1", "ylabel": "direction 2", **attrs}, extra)
    return path


def labelled(ax, label: str):
    """The artists of `ax` carrying `label`."""
    return [a for a in (*ax.lines, *ax.collections) if a.get_label() == label]


def test_random_direction_plots_mark_the_centre_at_origin(tmp_path):
    surf = read_surface(surface_file(tmp_path / "s.h5", {"train_loss": BOWL}))
    assert surf.centre == "centre: last"
    figs = figures_2d(X, Y, BOWL + 0.3 * GX, "train_loss", PlotOptions(**FAST), centre=surf.centre)
    for kind in ("contour", "contourf", "heatmap"):
        (marker,) = labelled(figs[kind].axes[0], "centre: last")
        assert marker.get_xydata().tolist() == [[0.0, 0.0]]
    (marker,) = labelled(figs["3d"].axes[0], "centre: last")
    xs, ys, zs = marker._offsets3d
    assert (xs[0], ys[0]) == (0.0, 0.0) and zs[0] == pytest.approx(0.5)  # on the surface at the centre
    pca = {**RANDOM, "directions": "pca"}
    assert read_surface(surface_file(tmp_path / "p.h5", {"train_loss": BOWL}, attrs=pca)).centre is None


def test_accuracy_colour_bars_say_percent():
    figs = figures_2d(X, Y, 90 - BOWL, "test_acc", PlotOptions(**FAST))
    for kind in ("contourf", "heatmap"):
        bar = figs[kind].axes[0].collections[0].colorbar
        assert bar.ax.get_ylabel() == "test_acc (%)"
    loss_bar = figures_2d(X, Y, BOWL, "test_loss", PlotOptions(**FAST))["heatmap"].axes[0].collections[0].colorbar
    assert "%" not in loss_bar.ax.get_ylabel()


def test_titles_name_the_checkpoint_and_split(tmp_path):
    path = surface_file(tmp_path / "s.h5", {"train_loss": BOWL, "test_acc": 90 - BOWL})
    plot_surface_file(path, tmp_path, PlotOptions(formats=("svg",), **FAST))
    for name, split in (("train_loss", "train"), ("test_acc", "test")):
        text = (tmp_path / f"{name}_contour.svg").read_text()
        assert "last: custom on tensors, random directions" in text and f"{split} split: {name}" in text


def test_1d_legend_sits_below_the_curves_and_a_line_marks_its_ends():
    x = np.linspace(-0.5, 1.5, 41)
    values = {"train_loss": (x - 0.3) ** 2, "test_loss": (x - 0.3) ** 2 + 0.1, "train_acc": 90 - 10 * x**2,
              "test_acc": 85 - 10 * x**2}
    marks = {0.0: "a=0: epoch_000", 1.0: "a=1: last"}
    fig = figure_1d(x, values, PlotOptions(**FAST), "a", "line", marks)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))  # below the axes, covering no curve
    assert sorted(t.get_text() for t in legend.get_texts()) == sorted(values)
    ax = fig.axes[0]
    assert sorted(float(line.get_xdata()[0]) for line in ax.lines if line.get_linestyle() == ":") == [0.0, 1.0]
    assert {t.get_text() for t in ax.texts} == set(marks.values())


def test_line_surface_names_both_ends(tmp_path):
    x = np.linspace(0, 1, 11)
    line = {**RANDOM, "directions": "line", "start": "epoch_000"}
    surf = read_surface(surface_file(tmp_path / "l.h5", {"train_loss": 1 + x}, x=x, y=None, attrs=line))
    assert surf.marks_1d() == {0.0: "a=0: epoch_000", 1.0: "a=1: last"}
    assert surf.subject.startswith("epoch_000 -> last: ")


def test_a_constant_surface_gets_a_readable_colour_bar():
    figs = figures_2d(X, Y, np.full(GX.shape, 2.5), "train_loss", PlotOptions(**FAST))
    mesh = figs["heatmap"].axes[0].collections[0]
    lo, hi = mesh.get_clim()
    assert lo < 2.5 < hi and hi - lo > 0.1
    bar = mesh.colorbar
    FigureCanvasAgg(figs["heatmap"]).draw()
    ticks = [t.get_text() for t in bar.ax.get_yticklabels() if t.get_text()]
    assert len(ticks) >= 3 and 2.5 in map(float, ticks) and not bar.ax.yaxis.get_offset_text().get_text()
    levels = figs["contourf"].axes[0].collections[0].levels
    assert len(levels) == FAST["levels"] and levels[0] < 2.5 < levels[-1]


def test_log_scaled_vtk_values_are_named_log(tmp_path):
    path = surface_file(tmp_path / "s.h5", {"train_loss": 10.0 ** (6 * BOWL - 2)})
    plot_surface_file(path, tmp_path, PlotOptions(metrics=("train_loss",), vtk=True, **FAST))
    assert "SCALARS log10_train_loss double 1" in (tmp_path / "train_loss.vtk").read_text()
    plot_surface_file(path, tmp_path, PlotOptions(metrics=("train_loss",), vtk=True, log_scale=False, **FAST))
    assert "SCALARS train_loss double 1" in (tmp_path / "train_loss.vtk").read_text()


def test_every_2d_dataset_is_drawn_without_naming_it(tmp_path):
    """Maps other code adds (curvature, mean/std over planes) plot as they are; stacks (one map per plane) not."""
    extra = {"max_eig": 3 + GX, "train_loss_std": 0.1 * BOWL, "train_loss_planes": np.stack([BOWL, 2 * BOWL])}
    path = surface_file(tmp_path / "s.h5", {"train_loss": BOWL}, **extra)
    paths = plot_surface_file(path, tmp_path, PlotOptions(**FAST))
    assert {p.name for p in paths} == {f"{m}_{k}.png" for m in ("train_loss", "max_eig", "train_loss_std")
                                       for k in KINDS}
    assert list(read_surface(path).stacks) == ["train_loss_planes"]


def two_runs(tmp_path: Path, b_values=None, b_x=X) -> dict[str, Path]:
    """Two surfaces A (a bowl) and B (a steeper, shifted bowl) with train loss and accuracy."""
    b = 0.2 + 3 * (GX - 0.3) ** 2 + GY**2 if b_values is None else b_values
    return {"skip": surface_file(tmp_path / "a.h5", {"train_loss": BOWL, "train_acc": 95 - BOWL}),
            "noskip": surface_file(tmp_path / "b.h5", {"train_loss": b, "train_acc": 95 - b}, x=b_x)}


def test_comparison_shares_levels_and_colour_limits(tmp_path):
    files = two_runs(tmp_path)
    surfaces = {label: read_surface(p) for label, p in files.items()}
    figs = side_by_side(surfaces, "train_loss", PlotOptions(**FAST))
    a, b = surfaces["skip"].maps["train_loss"], surfaces["noskip"].maps["train_loss"]
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    for kind in ("contour", "contourf"):
        levels = [ax.collections[0].levels for ax in figs[kind].axes if ax.get_label() != "<colorbar>"]
        assert len(levels) == 2 and np.array_equal(levels[0], levels[1])
        assert levels[0][0] == pytest.approx(lo) and levels[0][-1] == pytest.approx(hi)
    meshes = [ax.collections[0] for ax in figs["heatmap"].axes if ax.get_label() != "<colorbar>"]
    assert [m.get_clim() for m in meshes] == [(lo, hi)] * 2
    panels = [ax for ax in figs["3d"].axes]
    assert [ax.get_zlim() for ax in panels] == [pytest.approx((lo, hi))] * 2
    titles = [ax.get_title() for ax in figs["contourf"].axes if ax.get_title()]
    assert titles[0].startswith("skip\nlast") and titles[1].startswith("noskip\nlast")


def test_difference_map_is_first_minus_second(tmp_path):
    surfaces = {label: read_surface(p) for label, p in two_runs(tmp_path).items()}
    fig = difference(surfaces, "train_loss", PlotOptions(**FAST))
    mesh = fig.axes[0].collections[0]
    expected = surfaces["skip"].maps["train_loss"] - surfaces["noskip"].maps["train_loss"]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(expected.shape), expected)
    assert fig.axes[0].get_title() == "skip - noskip"
    assert mesh.get_clim() == (-np.abs(expected).max(), np.abs(expected).max())


def test_comparison_files_and_grids_that_differ(tmp_path):
    done = compare_surfaces(two_runs(tmp_path), tmp_path / "out", PlotOptions(**FAST))
    assert {p.name for p in done.paths} == {f"{m}_{k}.png" for m in ("train_loss", "train_acc")
                                            for k in (*KINDS, "difference")}
    assert done.notes == []
    x = np.linspace(-2, 2, 11)
    (tmp_path / "o").mkdir()
    other = two_runs(tmp_path / "o", b_x=x)
    done = compare_surfaces(other, tmp_path / "out2", PlotOptions(**FAST))
    assert not any("difference" in p.name for p in done.paths)
    assert done.notes == ["no difference maps: the grids differ (skip: 11 points from -1 to 1 x 9 points from -1 "
                          "to 1; noskip: 11 points from -2 to 2 x 9 points from -1 to 1)"]


def test_1d_and_2d_are_not_compared(tmp_path):
    x = np.linspace(-1, 1, 5)
    files = {"a": surface_file(tmp_path / "a.h5", {"train_loss": BOWL}),
             "b": surface_file(tmp_path / "b.h5", {"train_loss": x**2}, x=x, y=None)}
    with pytest.raises(UserError, match="cannot compare 1D and 2D surfaces: a is 2D, b is 1D"):
        compare_surfaces(files, tmp_path / "out", PlotOptions(**FAST))


def run_dir(root: Path, name: str, loss: np.ndarray) -> Path:
    """A run directory holding only a merged surface, as landscape-plot needs it."""
    (root / name).mkdir(parents=True)
    surface_file(root / name / "surface.h5", {"train_loss": loss, "train_acc": 90 - loss})
    return root / name


def test_landscape_plot_with_several_runs_compares_them(tmp_path, monkeypatch):
    a, b = run_dir(tmp_path, "skip", BOWL), run_dir(tmp_path, "noskip", 2 * BOWL)
    monkeypatch.chdir(tmp_path)
    out = cli("landscape-plot", "skip", "noskip", "+plot.dpi=40").stdout
    assert out.startswith(f"comparison {tmp_path / 'compare-skip-vs-noskip'}: ") and "train_loss_difference.png" in out
    assert (tmp_path / "compare-skip-vs-noskip" / "train_acc_heatmap.png").is_file()
    table = (tmp_path / "compare-skip-vs-noskip" / "figures.txt").read_text()  # the figures beside the plots
    assert "skip" in table.splitlines()[0] and "noskip" in table.splitlines()[0] and "centre_loss" in table
    assert table.strip() in out  # and printed
    assert not (a / "plots").exists() and not (b / "plots").exists()
    out = cli("landscape-plot", a, b, "plot.dir=cmp", "+plot.dpi=40", "+plot.metrics=[train_loss]").stdout
    assert f"comparison {tmp_path / 'cmp'}: " in out and sorted(p.name for p in (tmp_path / "cmp").iterdir()) == \
        sorted([*(f"train_loss_{k}.png" for k in (*KINDS, "difference")), "figures.txt"])
    cli("landscape-plot", a, b, "plot.dir=page", "plot.html=true", "+plot.dpi=40", "+plot.metrics=[train_acc]")
    names = [t["name"] for t in html_traces(tmp_path / "page" / "surface.html") if t["type"] == "surface"]
    assert names == ["skip: train_acc", "noskip: train_acc"]
    proc = cli("landscape-plot", "skip", "missing", check=False)
    assert proc.returncode == 2 and "has no computed surface yet" in proc.stderr


def html_traces(path: Path) -> list[dict]:
    """The trace list plotly.newPlot receives in a written page."""
    text = path.read_text()
    start = re.search(r'Plotly\.newPlot\(\s*"landscape-surface",\s*', text).end()
    return json.JSONDecoder().raw_decode(text, start)[0]


def test_html_holds_every_run_map_and_plane_with_the_trajectory(tmp_path):
    trajectory = np.c_[np.linspace(-0.8, 0, 5), np.linspace(0.6, 0, 5)]
    pca = {**RANDOM, "directions": "pca"}
    a = read_surface(surface_file(tmp_path / "a.h5", {"train_loss": BOWL}, attrs=pca, trajectory=trajectory,
                                  trajectory_labels=np.arange(5) * 2, train_acc_planes=np.stack([GX, GY])))
    b = read_surface(surface_file(tmp_path / "b.h5", {"train_loss": 2 * BOWL}))
    path = write_html({"a": a, "b": b}, tmp_path / "v.html", PlotOptions(log_scale=False))
    text = path.read_text()
    assert "<script src=" not in text and len(text) > 1_000_000  # plotly.js inside: opens offline
    traces = html_traces(path)
    surfaces = {t["name"]: t for t in traces if t["type"] == "surface"}
    assert list(surfaces) == ["a: train_loss", "b: train_loss", "a: train_acc_planes plane 0",
                              "a: train_acc_planes plane 1"]  # losses first
    np.testing.assert_allclose(surfaces["a: train_loss"]["z"], BOWL)
    np.testing.assert_allclose(surfaces["a: train_acc_planes plane 1"]["z"], GY)
    assert surfaces["a: train_loss"]["cmin"] == surfaces["b: train_loss"]["cmin"] == BOWL.min()  # one scale
    assert surfaces["a: train_loss"]["cmax"] == surfaces["b: train_loss"]["cmax"] == 2 * BOWL.max()
    marks = [t for t in traces if t["type"] == "scatter3d"]
    assert [t["name"] for t in marks] == ["a: marks", "b: marks", "a: marks", "a: marks"]  # one per view
    path_trace, centre = marks[0], marks[1]
    np.testing.assert_allclose(np.c_[path_trace["x"], path_trace["y"]], trajectory)
    np.testing.assert_allclose(path_trace["z"], 0.5 + trajectory[:, 0] ** 2 + 2 * trajectory[:, 1] ** 2, atol=0.05)
    assert path_trace["text"][-1] == "epoch 8" and centre["text"] == ["centre: last"]
    assert [t.get("visible") for t in traces] == [True, True] + [False] * 6


def test_animation_has_one_frame_per_epoch(tmp_path):
    trajectory = np.c_[np.linspace(-0.8, 0, 7), np.linspace(0.6, 0, 7)]
    pca = {**RANDOM, "directions": "pca"}
    path = surface_file(tmp_path / "s.h5", {"train_loss": BOWL}, attrs=pca, trajectory=trajectory,
                        trajectory_labels=np.arange(7))
    paths = plot_surface_file(path, tmp_path, PlotOptions(**FAST))
    assert tmp_path / "trajectory.gif" in paths
    with Image.open(tmp_path / "trajectory.gif") as gif:
        assert gif.n_frames == len(trajectory)
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB"), dtype=int))
    assert all(np.abs(f1 - f0).sum() > 0 for f0, f1 in zip(frames, frames[1:]))  # the path moves each epoch
    assert "trajectory.gif" not in {p.name for p in plot_surface_file(path, tmp_path / "n",
                                                                     PlotOptions(animation=False, **FAST))}
