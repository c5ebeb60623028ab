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
from matplotlib.ticker import MaxNLocator

from .errors import UserError, is_number, whole_number

CMAP = "viridis"
AUTO_DECADES = 3.0  # log_scale='auto' draws log10 when the losses drawn span more decades than this


@dataclass(frozen=True)
class PlotOptions:
    """How surfaces are drawn and saved; `log_scale`, `clip`, `vmin` and `vmax` apply to losses, not accuracies.
    `vmin`/`vmax` are loss values on either scale; `dir` is where the commands write (None: RUN_DIR/plots),
    the library functions take their folder as an argument."""

    log_scale: bool | str = "auto"
    clip: float | None = None
    vmin: float | None = None
    vmax: float | None = None
    levels: int = 30
    dir: str | None = None
    formats: tuple[str, ...] = ("png",)
    dpi: int = 150
    metrics: tuple[str, ...] = ("train_loss", "train_acc", "test_loss", "test_acc")
    vtk: bool = False
    azim: float = -60.0
    elev: float = 30.0

    def __post_init__(self) -> None:
        """Refuse bad values here, naming the key, rather than deep inside numpy or matplotlib."""
        if not (isinstance(self.log_scale, bool) or self.log_scale == "auto"):
            raise UserError(f"plot.log_scale is {self.log_scale!r}: use true or false, or auto (log10 when the "
                            f"losses span more than {AUTO_DECADES:g} decades)")
        if not isinstance(self.vtk, bool):
            raise UserError(f"plot.vtk is {self.vtk!r}: use true or false")
        if self.clip is not None and not (is_number(self.clip) and self.clip > 0):
            raise UserError(f"plot.clip is {self.clip!r}: use a number above 0 (losses above it are cut), or null")
        self._check_limits()
        if self.dir is not None and not (isinstance(self.dir, str) and self.dir):
            raise UserError(f"plot.dir is {self.dir!r}: use a folder, or null for RUN_DIR/plots")
        whole_number(self.levels, "plot.levels", 1)
        whole_number(self.dpi, "plot.dpi", 1)

    def _check_limits(self) -> None:
        """vmin and vmax: both or neither, numbers, vmin < vmax, and above 0 for a forced log scale."""
        if self.vmin is None and self.vmax is None:
            return
        if not (is_number(self.vmin) and is_number(self.vmax) and self.vmin < self.vmax):
            vmin, vmax = ("null" if v is None else repr(v) for v in (self.vmin, self.vmax))
            raise UserError(f"plot.vmin={vmin} plot.vmax={vmax}: give both, as loss values with vmin < vmax "
                            "(also on a log scale), or neither")
        if self.log_scale is True and self.vmin <= 0:
            raise UserError(f"plot.vmin is {self.vmin!r}: with plot.log_scale=true use a loss above 0")


@dataclass(frozen=True)
class Scale:
    """One figure's value axis, decided once: log10 or not, the cut, the colour limits on the drawn scale
    (None: the data's own) and a label suffix naming the choices, e.g. ' (log10, auto)'."""

    log: bool
    clip: float | None
    limits: tuple[float, float] | None
    note: str

    def apply(self, values: np.ndarray) -> np.ma.MaskedArray:
        """Mask non-finite values, then clip and take log10 (masking values <= 0)."""
        z = np.array(values, dtype=float)
        z[~np.isfinite(z)] = np.nan
        if self.clip is not None:
            z = np.minimum(z, self.clip)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(z > 0, np.log10(z), np.nan)
        return np.ma.masked_invalid(z)

    def range(self, z: np.ma.MaskedArray) -> tuple[float, float]:
        """The colour limits: the given ones, else the drawn values' extremes ((0, 1) when nothing is drawn)."""
        if self.limits is None and not z.count():
            return 0.0, 1.0
        return self.limits or (float(z.min()), float(z.max()))

    def levels(self, z: np.ma.MaskedArray, count: int) -> int | np.ndarray:
        """`count` contour levels: evenly between given limits (figures then share them), else matplotlib's."""
        return count if self.limits is None else np.linspace(*self.range(z), count)


def scale(values: np.ndarray, opts: PlotOptions) -> Scale:
    """How `values` are drawn. log_scale='auto' takes log10 when the range drawn (the finite positive values,
    cut at `clip`, or vmin..vmax where given) spans more than AUTO_DECADES decades."""
    log = opts.log_scale
    if log == "auto":
        z = np.asarray(values, dtype=float)
        z = np.minimum(z[np.isfinite(z) & (z > 0)], np.inf if opts.clip is None else opts.clip)
        lo, hi = (opts.vmin, opts.vmax) if opts.vmin is not None else (z.min(initial=np.inf), z.max(initial=0.0))
        log = bool(0 < lo < hi and np.log10(hi / lo) > AUTO_DECADES)
    parts = (["log10"] if log else []) + (["auto"] if log and opts.log_scale == "auto" else [])
    parts += [f"clipped at {opts.clip:g}"] if opts.clip is not None else []
    limits = None if opts.vmin is None else ((np.log10(opts.vmin), np.log10(opts.vmax)) if log
                                             else (float(opts.vmin), float(opts.vmax)))
    return Scale(log, opts.clip, limits, f" ({', '.join(parts)})" if parts else "")


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
    """Losses on the left axis (one scale for all), accuracies (percent) on a twin right axis; train solid,
    test dashed."""
    losses = [np.ravel(v) for name, v in values.items() if "acc" not in name]
    s = scale(np.concatenate(losses or [np.empty(0)]), opts)
    fig, ax = _axes(xlabel, "loss" + s.note, title)
    acc_ax, lines = None, []
    for name, v in values.items():
        style = "--" if name.startswith("test") else "-"
        if "acc" in name:
            if acc_ax is None:
                acc_ax = ax.twinx()
                acc_ax.set_ylabel("accuracy (%)")
            lines += acc_ax.plot(x, np.ma.masked_invalid(v), "r" + style, label=name)
        else:
            lines += ax.plot(x, s.apply(v), "b" + style, label=name)
    if s.limits is not None:
        ax.set_ylim(*s.limits)
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


def _surface_3d(x: np.ndarray, y: np.ndarray, z: np.ma.MaskedArray, s: Scale, label: str, opts: PlotOptions,
                xlabel: str, ylabel: str, title: str) -> Figure:
    """Surface shaded by a LightSource; masked points leave holes; given limits cut the heights too."""
    fig = Figure(figsize=(7.0, 5.6), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    lo, hi = s.range(z)
    z = np.ma.clip(z, lo, hi)
    unit, cmap = ((z - lo) / (hi - lo or 1.0)).filled(np.nan), matplotlib.colormaps[CMAP]
    # Rows run up in y, while LightSource assumes image rows running down: hence the negative dy.
    rgb = LightSource(azdeg=315, altdeg=45).shade(unit, cmap, blend_mode="soft", vmin=0, vmax=1,
                                                  dx=1 / max(len(x) - 1, 1), dy=-1 / max(len(y) - 1, 1))
    rgb = np.where(np.isnan(rgb), cmap(unit), rgb)  # next to a gap there is no slope: colour unshaded
    X, Y = np.meshgrid(x, y)
    ax.plot_surface(X, Y, z.filled(np.nan), facecolors=rgb, rstride=1, cstride=1, linewidth=0,
                    antialiased=False, shade=False)
    ax.set(xlabel=xlabel, ylabel=ylabel, zlabel=label, title=title)
    if s.limits is not None:
        ax.set_zlim(*s.limits)
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


def figures_2d(x: np.ndarray, y: np.ndarray, Z: np.ndarray, stem: str, opts: PlotOptions, xlabel: str = "",
               ylabel: str = "", title: str = "", trajectory: np.ndarray | None = None,
               trajectory_labels: np.ndarray | None = None) -> dict[str, Figure]:
    """The contour, filled contour ('contourf'), heatmap and 3D ('3d') figures of Z[iy, ix] = f(x[ix], y[iy]),
    unsaved: plot_2d writes them, a notebook can show them."""
    x, y, s = np.asarray(x, dtype=float), np.asarray(y, dtype=float), scale(Z, opts)
    z, label, title = s.apply(Z), stem + s.note, title + s.note
    levels, extend = s.levels(z, opts.levels), "neither" if s.limits is None else "both"
    figs = {}

    figs["contour"], ax = _axes(xlabel, ylabel, title)
    ax.clabel(ax.contour(x, y, z, levels=levels, cmap=CMAP, linewidths=0.8), fontsize=6)
    if trajectory is not None:
        _overlay(ax, trajectory, trajectory_labels)

    figs["contourf"], ax = _axes(xlabel, ylabel, title)
    filled = ax.contourf(x, y, z, levels=levels, cmap=CMAP, extend=extend)
    figs["contourf"].colorbar(filled, ax=ax, label=label, ticks=MaxNLocator())  # round ticks, even between levels
    if trajectory is not None:
        _overlay(ax, trajectory, trajectory_labels)

    figs["heatmap"], ax = _axes(xlabel, ylabel, title)
    vmin, vmax = s.limits or (None, None)
    mesh = ax.pcolormesh(x, y, z, shading="nearest", cmap=CMAP, vmin=vmin, vmax=vmax)
    figs["heatmap"].colorbar(mesh, ax=ax, label=label, extend=extend)

    figs["3d"] = _surface_3d(x, y, z, s, label, opts, xlabel, ylabel, title)
    return figs


def plot_2d(x: np.ndarray, y: np.ndarray, Z: np.ndarray, out_dir: str | Path, stem: str, opts: PlotOptions,
            xlabel: str = "", ylabel: str = "", title: str = "", trajectory: np.ndarray | None = None,
            trajectory_labels: np.ndarray | None = None) -> list[Path]:
    """figures_2d written as `out_dir/<stem>_<kind>.<fmt>`, plus `<stem>.vtk` if asked."""
    out_dir = Path(out_dir)
    figs = figures_2d(x, y, Z, stem, opts, xlabel, ylabel, title, trajectory, trajectory_labels)
    paths = [p for kind, fig in figs.items() for p in _save(fig, out_dir, f"{stem}_{kind}", opts)]
    if opts.vtk:
        paths.append(_write_vtk(out_dir / f"{stem}.vtk", x, y, scale(Z, opts).apply(Z), stem))
    return paths


def _attr(f: h5py.File, key: str) -> str:
    """A root string attribute, '' when absent."""
    value = f.attrs.get(key, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def plot_surface_file(path: str | Path, out_dir: str | Path, opts: PlotOptions) -> list[Path]:
    """Draw every metric in `opts.metrics` present in a surface file; points not done are gaps. Accuracies
    are drawn linear, uncut, on their own colour scale."""
    with h5py.File(path, "r", locking=False) as f:
        x = f["xcoordinates"][()]
        metrics = [m for m in opts.metrics if m in f]
        done = f["done"][()].astype(bool) if "done" in f else np.ones(f[metrics[0]].shape, dtype=bool)
        values = {m: np.where(done, f[m][()], np.nan) for m in metrics}
        y = f["ycoordinates"][()] if "ycoordinates" in f else None
        trajectory = f["trajectory"][()] if "trajectory" in f else None
        labels = f["trajectory_labels"][()] if "trajectory_labels" in f else None
        if trajectory is None and "checkpoint_coordinates" in f:  # a plane through checkpoints: mark each one
            trajectory = f["checkpoint_coordinates"][()]
            labels = np.array([s.decode() for s in f["checkpoint_labels"][()]])
        xlabel, ylabel, title = _attr(f, "xlabel"), _attr(f, "ylabel"), _attr(f, "title")
    if y is None:
        return plot_1d(x, values, out_dir, "1d_loss_acc", opts, xlabel, title)
    paths = []
    for m, z in values.items():
        metric_opts = replace(opts, log_scale=False, clip=None, vmin=None, vmax=None) if "acc" in m else opts
        heading = f"{title}\n{m}" if title else m
        paths += plot_2d(x, y, z, out_dir, m, metric_opts, xlabel, ylabel, heading, trajectory, labels)
    return paths
