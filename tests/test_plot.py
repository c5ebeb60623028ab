"""Tests for landscape.plot: files written, valid images, orientation, gaps, log/clip, VTK, trajectories."""
from pathlib import Path

import h5py
import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from landscape.plot import PlotOptions, plot_surface_file

X = np.linspace(-1.0, 1.0, 15)
Y = np.linspace(0.0, 3.0, 11)  # non-square grid with a different range, so transposes show
GX, GY = np.meshgrid(X, Y)
BOWL = 0.5 + GX**2 + (GY - 1.5) ** 2
FAST = dict(dpi=40, levels=8)
KINDS = ("contour", "contourf", "heatmap", "3d")


def write_surface(path: Path, arrays: dict, y: np.ndarray | None = Y, **extra) -> Path:
    """A surface file as the computing code writes it; `done` is all true unless given."""
    first = next(iter(arrays.values()))
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = X if y is not None else np.linspace(-1, 1, len(first))
        if y is not None:
            f["ycoordinates"] = y
        for name, value in {"done": np.ones(first.shape, bool), **arrays, **extra}.items():
            f[name] = value
        f.attrs.update(xlabel="PC1 (83.1%)", ylabel="PC2 (9.4%)", title="bowl")
    return path


def load_image(path: Path) -> np.ndarray:
    """RGB of a PNG, asserting it is a real, non-uniform picture."""
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 50
    assert image[..., :3].std() > 0.05, f"{path.name} looks blank"
    return image[..., :3]


def cmap_position(pixels: np.ndarray, tol: float = 0.04) -> np.ndarray:
    """Position in [0, 1] of each pixel on the viridis colormap, NaN for colours off the map."""
    lut = matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    dist = np.linalg.norm(pixels[:, None, :] - lut[None], axis=-1)
    return np.where(dist.min(axis=1) < tol, dist.argmin(axis=1) / 255, np.nan)


def longest_run(positions: np.ndarray) -> np.ndarray:
    """The longest stretch of on-map pixels: the heatmap, not the narrow colour bar."""
    runs, start = [], None
    for i, on in enumerate(np.append(np.isfinite(positions), False)):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append(positions[start:i])
            start = None
    return max(runs, key=len)


def read_vtk(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Header lines, points (n, 3), polygons (m, 5) and point scalars of our legacy POLYDATA file."""
    lines = path.read_text().splitlines()
    n = int(lines[4].split()[1])
    points = np.loadtxt(lines[5:5 + n], ndmin=2)
    m = int(lines[5 + n].split()[1])
    polys = np.loadtxt(lines[6 + n:6 + n + m], dtype=int, ndmin=2)
    scalars = np.loadtxt(lines[9 + n + m:])
    return lines[:5] + lines[5 + n:6 + n] + lines[6 + n + m:9 + n + m], points, polys, scalars


def test_2d_writes_every_kind_for_every_metric(tmp_path):
    arrays = {"train_loss": BOWL, "train_acc": 100 - 10 * BOWL, "test_loss": 1.1 * BOWL, "test_acc": 90 - 10 * BOWL}
    paths = plot_surface_file(write_surface(tmp_path / "s.h5", arrays), tmp_path / "out", PlotOptions(**FAST))
    assert sorted(p.name for p in paths) == sorted(f"{m}_{k}.png" for m in arrays for k in KINDS)
    for p in paths:
        load_image(p)


def test_only_requested_and_present_metrics_are_drawn(tmp_path):
    path = write_surface(tmp_path / "s.h5", {"train_loss": BOWL, "train_acc": 100 - BOWL})
    paths = plot_surface_file(path, tmp_path, PlotOptions(metrics=("train_loss", "test_loss"), **FAST))
    assert {p.name for p in paths} == {f"train_loss_{k}.png" for k in KINDS}


@pytest.mark.parametrize("axis", ["x", "y"])
def test_heatmap_orientation(tmp_path, axis):
    path = write_surface(tmp_path / "s.h5", {"train_loss": GX if axis == "x" else GY})
    plot_surface_file(path, tmp_path, PlotOptions(metrics=("train_loss",), **FAST))
    image = load_image(tmp_path / "train_loss_heatmap.png")
    h, w = image.shape[:2]
    # Along the middle row (x) or column (y), read from the left or from the top.
    line = image[h // 2] if axis == "x" else image[:, int(w * 0.45)]
    run = longest_run(cmap_position(line))
    assert len(run) > 0.4 * (w if axis == "x" else h)
    if axis == "y":
        run = run[::-1]  # image rows run down, y runs up
    assert run[0] < 0.1 and run[-1] > 0.9, (run[0], run[-1])
    assert np.all(np.diff(run) >= -0.02)


def test_log_and_clip_with_nonpositive_values(tmp_path):
    loss = 4.0 * GX + 2.0 * GY  # from -4 to 10: some values <= 0, some above the clip
    path = write_surface(tmp_path / "s.h5", {"train_loss": loss, "train_acc": 50 + 10 * GX})
    opts = PlotOptions(log_scale=True, clip=5, formats=("png", "svg"), vtk=True, **FAST)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep text as text in the SVG
        paths = plot_surface_file(path, tmp_path, opts)
    for kind in KINDS:
        load_image(tmp_path / f"train_loss_{kind}.png")
        assert "train_loss (log10, clipped at 5)" in (tmp_path / f"train_loss_{kind}.svg").read_text()
        assert "clipped" not in (tmp_path / f"train_acc_{kind}.svg").read_text()  # accuracy is left as is
    assert len(paths) == 2 * 2 * len(KINDS) + 2
    _, points, _, scalars = read_vtk(tmp_path / "train_loss.vtk")
    positive = loss > 0
    assert len(points) == positive.sum()
    np.testing.assert_allclose(points[:, 2], np.log10(np.minimum(loss[positive], 5)), rtol=1e-7)
    np.testing.assert_allclose(scalars, points[:, 2])
    _, acc_points, _, _ = read_vtk(tmp_path / "train_acc.vtk")
    np.testing.assert_allclose(acc_points[:, 2], (50 + 10 * GX).ravel(), rtol=1e-7)


def test_points_not_done_or_not_finite_are_gaps(tmp_path):
    done = np.ones(BOWL.shape, bool)
    done[2:5, 3:7] = False
    loss = BOWL.copy()
    loss[8, 10], loss[9, 2] = np.nan, np.inf
    loss[~done] = 123.0  # whatever sits in unfinished slots must not be drawn
    path = write_surface(tmp_path / "s.h5", {"train_loss": loss}, done=done)
    paths = plot_surface_file(path, tmp_path, PlotOptions(metrics=("train_loss",), vtk=True, clip=2.0, **FAST))
    for p in paths[:-1]:
        load_image(p)
    good = done & np.isfinite(loss)
    _, points, polys, _ = read_vtk(tmp_path / "train_loss.vtk")
    assert len(points) == good.sum() == X.size * Y.size - 14
    np.testing.assert_allclose(points[:, 2], np.minimum(loss[good], 2.0), rtol=1e-7)  # inf is a gap, not 2.0
    assert len(polys) == (good[:-1, :-1] & good[:-1, 1:] & good[1:, :-1] & good[1:, 1:]).sum()


def test_heatmap_leaves_gaps_uncoloured(tmp_path):
    done = np.ones(GX.shape, bool)
    done[:, :7] = False  # left half never computed
    path = write_surface(tmp_path / "s.h5", {"train_loss": GX}, done=done)
    plot_surface_file(path, tmp_path, PlotOptions(metrics=("train_loss",), **FAST))
    image = load_image(tmp_path / "train_loss_heatmap.png")
    run = longest_run(cmap_position(image[image.shape[0] // 2]))
    assert run[0] < 0.1 and run[-1] > 0.9  # colours span only the done half, from its own minimum


def test_1d_train_and_test(tmp_path):
    xs = np.linspace(-1, 1, 31)
    loss = 0.1 + xs**2
    loss[4] = np.nan
    arrays = {"train_loss": loss, "test_loss": loss + 0.3, "train_acc": 100 - 20 * xs**2, "test_acc": 90 - 20 * xs**2}
    path = write_surface(tmp_path / "s.h5", arrays, y=None)
    paths = plot_surface_file(path, tmp_path / "out", PlotOptions(log_scale=True, dpi=100))
    assert [p.name for p in paths] == ["1d_loss_acc.png"]
    image = load_image(paths[0])
    blue = (np.abs(image - [0, 0, 1]).sum(axis=-1) < 0.1).sum()
    red = (np.abs(image - [1, 0, 0]).sum(axis=-1) < 0.1).sum()
    assert blue > 50 and red > 50  # loss curves on the left axis, accuracy curves on the right


def test_vtk_header_and_points(tmp_path):
    path = write_surface(tmp_path / "s.h5", {"train_loss": BOWL})
    paths = plot_surface_file(path, tmp_path, PlotOptions(metrics=("train_loss",), vtk=True, **FAST))
    assert tmp_path / "train_loss.vtk" in paths
    header, points, polys, scalars = read_vtk(tmp_path / "train_loss.vtk")
    n, m = X.size * Y.size, (X.size - 1) * (Y.size - 1)
    assert header[0].startswith("# vtk DataFile Version") and header[2:4] == ["ASCII", "DATASET POLYDATA"]
    assert header[4] == f"POINTS {n} double" and header[5] == f"POLYGONS {m} {5 * m}"
    assert header[6:] == [f"POINT_DATA {n}", "SCALARS train_loss double 1", "LOOKUP_TABLE default"]
    np.testing.assert_allclose(points, np.c_[GX.ravel(), GY.ravel(), BOWL.ravel()], rtol=1e-7)
    np.testing.assert_allclose(scalars, BOWL.ravel(), rtol=1e-7)
    assert (polys[:, 0] == 4).all() and polys[:, 1:].max() == n - 1


def test_trajectory_overlay(tmp_path):
    trajectory = np.c_[np.linspace(-0.8, 0.0, 9), np.linspace(2.5, 1.5, 9)]
    tab_red = np.array(matplotlib.colors.to_rgb("tab:red"))
    counts = {}
    for name, extra in {"plain": {}, "path": {"trajectory": trajectory, "trajectory_labels": np.arange(9) * 10},
                        "unlabelled": {"trajectory": trajectory}}.items():
        path = write_surface(tmp_path / f"{name}.h5", {"train_loss": BOWL}, **extra)
        plot_surface_file(path, tmp_path / name, PlotOptions(metrics=("train_loss",), dpi=60, levels=8))
        for kind in ("contour", "contourf"):
            image = load_image(tmp_path / name / f"train_loss_{kind}.png")
            counts[name, kind] = (np.abs(image - tab_red).sum(axis=-1) < 0.15).sum()
    assert counts["plain", "contour"] == counts["plain", "contourf"] == 0
    assert min(counts[n, k] for n in ("path", "unlabelled") for k in ("contour", "contourf")) > 20
