"""Figures of loss surfaces: 1D curves, 2D contours, heatmaps, shaded 3D surfaces and VTK export."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LightSource
from matplotlib.figure import Figure

from .errors import UserError, is_number, whole_number

CMAP = "viridis"


@dataclass
class PlotOptions:
    """How surfaces are drawn and saved; `log_scale` and `clip` apply to losses, not accuracies."""

    log_scale: bool = False
    clip: float | None = None
    levels: int = 30
    formats: tuple[str, ...] = ("png",)
    dpi: int = 150
    metrics: tuple[str, ...] = ("train_loss", "train_acc", "test_loss", "test_acc")
    vtk: bool = False
    azim: float = -60.0
    elev: float = 30.0

    def __post_init__(self) -> None:
        """Refuse bad values here, naming the key, rather than deep inside numpy or matplotlib."""
        for key in ("log_scale", "vtk"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"plot.{key} is {getattr(self, key)!r}: use true or false")
        if self.clip is not None and not (is_number(self.clip) and self.clip > 0):
            raise UserError(f"plot.clip is {self.clip!r}: use a number above 0 (losses above it are cut), or null")
        whole_number(self.levels, "plot.levels", 1)
        whole_number(self.dpi, "plot.dpi", 1)


def _transform(values: np.ndarray, opts: PlotOptions) -> np.ma.MaskedArray:
    """Mask non-finite values, then clip at `opts.clip` and take log10 (masking values <= 0)."""
    z = np.array(values, dtype=float)
    z[~np.isfinite(z)] = np.nan
    if opts.clip is not None:
        z = np.minimum(z, opts.clip)
    if opts.log_scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log10(z), np.nan)
    return np.ma.masked_invalid(z)


def _note(opts: PlotOptions) -> str:
    """Label suffix naming the scale choices, e.g. ' (log10, clipped at 5)'."""
    parts = (["log10"] if opts.log_scale else []) + ([f"clipped at {opts.clip:g}"] if opts.clip is not None else [])
    return f" ({', '.join(parts)})" if parts else ""


def _save(fig: Figure, out_dir: Path, name: str, opts: PlotOptions) -> list[Path]:
    """Write `fig` as `out_dir/name.<fmt>` for each requested format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{fmt}" for fmt in opts.formats]
    for path in paths:
        fig.savefig(path, dpi=opts.dpi)
    return paths


def _axes(xlabel: str, ylabel: str, title: str) -> tuple[Figure, Axes]:
    """A fresh figure with one labelled axes."""
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return fig, ax


def plot_1d(x: np.ndarray, values: dict[str, np.ndarray], out_dir: str | Path, stem: str, opts: PlotOptions,
            xlabel: str = "", title: str = "") -> list[Path]:
    """Losses on the left axis, accuracies (percent) on a twin right axis; train solid, test dashed."""
    fig, ax = _axes(xlabel, "loss" + _note(opts), title)
    acc_ax, lines = None, []
    for name, v in values.items():
        style = "--" if name.startswith("test") else "-"
        if "acc" in name:
            if acc_ax is None:
                acc_ax = ax.twinx()
                acc_ax.set_ylabel("accuracy (%)")
            lines += acc_ax.plot(x, np.ma.masked_invalid(v), "r" + style, label=name)
        else:
            lines += ax.plot(x, _transform(v, opts), "b" + style, label=name)
    ax.legend(handles=lines, fontsize=8)
    return _save(fig, Path(out_dir), stem, opts)


def _overlay(ax: Axes, trajectory: np.ndarray, labels: np.ndarray | None) -> None:
    """Draw the optimiser path with dots, marked start and end, and a few epoch labels."""
    t = np.asarray(trajectory, dtype=float)
    ax.plot(t[:, 0], t[:, 1], "-o", color="tab:red", ms=3, lw=1)
    ax.plot(*t[0], "s", color="white", mec="black", ms=7, label="start")
    ax.plot(*t[-1], "*", color="gold", mec="black", ms=12, label="end")
    if labels is not None:
        for i in sorted({*range(0, len(t), max(1, len(t) // 6)), len(t) - 1}):
            ax.annotate(str(labels[i]), t[i], textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.legend(fontsize=8, loc="upper right")


def _surface_3d(x: np.ndarray, y: np.ndarray, z: np.ma.MaskedArray, label: str, opts: PlotOptions,
                xlabel: str, ylabel: str, title: str) -> Figure:
    """Surface shaded by a LightSource; masked points leave holes."""
    fig = Figure(figsize=(7.0, 5.6), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    lo, hi = z.min(), z.max()
    unit, cmap = ((z - lo) / (hi - lo or 1.0)).filled(np.nan), matplotlib.colormaps[CMAP]
    # Rows run up in y, while LightSource assumes image rows running down: hence the negative dy.
    rgb = LightSource(azdeg=315, altdeg=45).shade(unit, cmap, blend_mode="soft", vmin=0, vmax=1,
                                                  dx=1 / max(len(x) - 1, 1), dy=-1 / max(len(y) - 1, 1))
    rgb = np.where(np.isnan(rgb), cmap(unit), rgb)  # next to a gap there is no slope: colour unshaded
    X, Y = np.meshgrid(x, y)
    ax.plot_surface(X, Y, z.filled(np.nan), facecolors=rgb, rstride=1, cstride=1, linewidth=0,
                    antialiased=False, shade=False)
    ax.set(xlabel=xlabel, ylabel=ylabel, zlabel=label, title=title)
    ax.view_init(elev=opts.elev, azim=opts.azim)
    return fig


def _write_vtk(path: Path, x: np.ndarray, y: np.ndarray, z: np.ma.MaskedArray, name: str) -> Path:
    """Legacy ASCII POLYDATA: valid points (x, y, z), quads between four valid corners, z as point scalars."""
    ok = ~np.ma.getmaskarray(z)
    index = np.full(z.shape, -1)
    index[ok] = np.arange(ok.sum())
    X, Y = np.meshgrid(x, y)
    quads = np.stack([index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]], axis=-1).reshape(-1, 4)
    quads = quads[(quads >= 0).all(axis=1)]
    zs = z.compressed()
    lines = ["# vtk DataFile Version 3.0", name, "ASCII", "DATASET POLYDATA", f"POINTS {len(zs)} double"]
    lines += [f"{a:.9g} {b:.9g} {c:.9g}" for a, b, c in zip(X[ok], Y[ok], zs)]
    lines.append(f"POLYGONS {len(quads)} {5 * len(quads)}")
    lines += [f"4 {a} {b} {c} {d}" for a, b, c, d in quads]
    lines += [f"POINT_DATA {len(zs)}", f"SCALARS {name} double 1", "LOOKUP_TABLE default"]
    lines += [f"{c:.9g}" for c in zs]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_2d(x: np.ndarray, y: np.ndarray, Z: np.ndarray, out_dir: str | Path, stem: str, opts: PlotOptions,
            xlabel: str = "", ylabel: str = "", title: str = "", trajectory: np.ndarray | None = None,
            trajectory_labels: np.ndarray | None = None) -> list[Path]:
    """Contour, filled contour, heatmap and 3D figures of Z[iy, ix] = f(x[ix], y[iy]), plus VTK if asked."""
    out_dir, x, y = Path(out_dir), np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    z, label, title = _transform(Z, opts), stem + _note(opts), title + _note(opts)
    paths = []

    fig, ax = _axes(xlabel, ylabel, title)
    ax.clabel(ax.contour(x, y, z, levels=opts.levels, cmap=CMAP, linewidths=0.8), fontsize=6)
    if trajectory is not None:
        _overlay(ax, trajectory, trajectory_labels)
    paths += _save(fig, out_dir, f"{stem}_contour", opts)

    fig, ax = _axes(xlabel, ylabel, title)
    fig.colorbar(ax.contourf(x, y, z, levels=opts.levels, cmap=CMAP), ax=ax, label=label)
    if trajectory is not None:
        _overlay(ax, trajectory, trajectory_labels)
    paths += _save(fig, out_dir, f"{stem}_contourf", opts)

    fig, ax = _axes(xlabel, ylabel, title)
    fig.colorbar(ax.pcolormesh(x, y, z, shading="nearest", cmap=CMAP), ax=ax, label=label)
    paths += _save(fig, out_dir, f"{stem}_heatmap", opts)

    paths += _save(_surface_3d(x, y, z, label, opts, xlabel, ylabel, title), out_dir, f"{stem}_3d", opts)
    if opts.vtk:
        paths.append(_write_vtk(out_dir / f"{stem}.vtk", x, y, z, stem))
    return paths


def _attr(f: h5py.File, key: str) -> str:
    """A root string attribute, '' when absent."""
    value = f.attrs.get(key, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def plot_surface_file(path: str | Path, out_dir: str | Path, opts: PlotOptions) -> list[Path]:
    """Draw every metric in `opts.metrics` present in a surface file; points not done are gaps."""
    with h5py.File(path, "r", locking=False) as f:
        x = f["xcoordinates"][()]
        metrics = [m for m in opts.metrics if m in f]
        done = f["done"][()].astype(bool) if "done" in f else np.ones(f[metrics[0]].shape, dtype=bool)
        values = {m: np.where(done, f[m][()], np.nan) for m in metrics}
        y = f["ycoordinates"][()] if "ycoordinates" in f else None
        trajectory = f["trajectory"][()] if "trajectory" in f else None
        labels = f["trajectory_labels"][()] if "trajectory_labels" in f else None
        xlabel, ylabel, title = _attr(f, "xlabel"), _attr(f, "ylabel"), _attr(f, "title")
    if y is None:
        return plot_1d(x, values, out_dir, "1d_loss_acc", opts, xlabel, title)
    paths = []
    for m, z in values.items():
        metric_opts = replace(opts, log_scale=False, clip=None) if "acc" in m else opts
        heading = f"{title}\n{m}" if title else m
        paths += plot_2d(x, y, z, out_dir, m, metric_opts, xlabel, ylabel, heading, trajectory, labels)
    return paths
