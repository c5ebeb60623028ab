"""Figures of loss surfaces: 1D curves, 2D contours, heatmaps, shaded 3D surfaces and VTK export."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Collection

import h5py
import numpy as np

from .errors import UserError, is_number, whole_number

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: a worker reads PlotOptions, draws nothing
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CMAP = "viridis"
AUTO_DECADES = 3.0  # log_scale='auto' draws log10 when the losses drawn span more decades than this
KINDS = ("contour", "contourf", "heatmap", "3d")


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
    metrics: tuple[str, ...] = ()  # the maps drawn; empty: every map the surface holds
    vtk: bool = False
    html: bool = False
    animation: bool = True
    azim: float = -60.0
    elev: float = 30.0

    def __post_init__(self) -> None:
        """Refuse bad values here, naming the key, rather than deep inside numpy or matplotlib."""
        if not (isinstance(self.log_scale, bool) or self.log_scale == "auto"):
            raise UserError(f"plot.log_scale is {self.log_scale!r}: use true or false, or auto (log10 when the "
                            f"losses span more than {AUTO_DECADES:g} decades)")
        for key in ("vtk", "html", "animation"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"plot.{key} is {getattr(self, key)!r}: use true or false")
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
    (None: the data's own), a label suffix naming the choices, e.g. ' (log10, auto)', and whether values
    beyond the limits take the end colours ('both': the user's limits)."""

    log: bool
    clip: float | None
    limits: tuple[float, float] | None
    note: str
    extend: str = "neither"

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
        """The colour limits: the given ones, else the drawn values' extremes ((0, 1) when nothing is drawn); a
        constant surface gets a band of 5% (at least 0.05) either side, so its colour bar has readable ticks."""
        if self.limits is not None:
            return self.limits
        if not z.count():
            return 0.0, 1.0
        lo, hi = float(z.min()), float(z.max())
        if hi - lo > 1e-12 * max(1.0, abs(lo), abs(hi)):
            return lo, hi
        pad = max(0.05 * abs(lo), 0.05)
        return lo - pad, hi + pad

    def levels(self, z: np.ma.MaskedArray, count: int) -> int | np.ndarray:
        """`count` contour levels: evenly between fixed limits (figures then share them) or around a constant,
        else matplotlib's round ones."""
        lo, hi = self.range(z)
        if self.limits is None and z.count() and (lo, hi) == (z.min(), z.max()):
            return count
        return np.linspace(lo, hi, count)

    def shared(self, zs: list[np.ma.MaskedArray]) -> Scale:
        """This scale with limits fixed to cover every one of `zs` (kept if given): one colour scale and the
        same contour levels for several figures."""
        return replace(self, limits=self.range(np.ma.concatenate([z.ravel() for z in zs])))


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
    return Scale(log, opts.clip, limits, f" ({', '.join(parts)})" if parts else "",
                 "neither" if limits is None else "both")


def is_accuracy(name: str) -> bool:
    """Accuracy maps (percent): train_acc, test_acc_mean, ..."""
    return "acc" in name.split("_")


def options_for(name: str, opts: PlotOptions) -> PlotOptions:
    """The options a map is drawn with: log scale, cut and limits are for losses (and their means over planes);
    accuracies, spreads and curvatures are drawn linear, uncut, on their own colour scale."""
    if "loss" in name.split("_") and not name.endswith("_std"):
        return opts
    return replace(opts, log_scale=False, clip=None, vmin=None, vmax=None)


def shared_scale(name: str, maps: list[np.ndarray], opts: PlotOptions) -> Scale:
    """One scale for several maps of `name` (runs, planes), its limits covering them all: one colour scale."""
    s = scale(np.concatenate([m.ravel() for m in maps]), options_for(name, opts))
    return s.shared([s.apply(m) for m in maps])


def value_label(name: str, s: Scale) -> str:
    """A colour bar's label: the map's name, its unit (accuracies: %) and the scale's note."""
    return name + (" (%)" if is_accuracy(name) else "") + s.note


@dataclass(frozen=True)
class Surface:
    """A surface file read for drawing: coordinates, every dataset shaped like the grid (`maps`, NaN where not
    done), datasets holding one such map per plane (`stacks`, shaped (planes, *grid)), the trajectory, and the
    names a figure shows (`meta`: title, xlabel, ylabel, checkpoint and start file stems, directions kind)."""

    x: np.ndarray
    y: np.ndarray | None
    maps: dict[str, np.ndarray]
    stacks: dict[str, np.ndarray]
    trajectory: np.ndarray | None
    labels: np.ndarray | None
    meta: dict[str, str]

    @property
    def subject(self) -> str:
        """What the surface is of: the checkpoint's file stem, `start -> checkpoint` for a line, then the title."""
        m = self.meta
        who = f"{m['start']} -> {m['checkpoint']}" if m["directions"] == "line" else m["checkpoint"]
        subset = m["approximate_subset"]
        return ": ".join(part for part in (who, m["title"]) if part) + \
            (f"\napproximate: {subset} samples per split (data.subset={subset})" if subset else "")

    @property
    def curvature_samples(self) -> str:
        """Over which samples the curvature maps are measured (hessian.samples, data.subset)."""
        m = self.meta
        used = [int(n) for n in (m["hessian_samples"], m["approximate_subset"]) if n.isdigit()]
        return f"over {min(used)} samples of the {m['hessian_split']} split" if used else \
            f"over the whole {m['hessian_split']} split"

    def heading(self, name: str) -> str:
        """A figure title: the subject, then the map and its split."""
        split = name.split("_")[0]
        return f"{self.subject}\n" + (f"{split} split: " if split in ("train", "test") else "") + name

    @property
    def centre(self) -> str | None:
        """The label of the plot's centre, for random directions (the centre is the checkpoint), else None."""
        return f"centre: {self.meta['checkpoint'] or 'checkpoint'}" if self.meta["directions"] == "random" else None

    def marks_1d(self) -> dict[float, str]:
        """Where a 1D plot marks checkpoints: a=0 and a=1 on a line between two, the centre of a random line."""
        m = self.meta
        if m["directions"] == "line":
            return {0.0: f"a=0: {m['start'] or 'start'}", 1.0: f"a=1: {m['checkpoint'] or 'checkpoint'}"}
        return {0.0: self.centre} if self.centre else {}

    @property
    def isometric(self) -> bool:
        """Whether the directions are orthogonal and of one length: drawn to equal scale, lengths and angles are
        true (an orthogonalized plane)."""
        return self.meta["isometric"] == "True"


META = ("title", "xlabel", "ylabel", "checkpoint", "start", "directions", "isometric", "approximate_subset",
        "hessian_samples", "hessian_split")


def read_surface(path: str | Path) -> Surface:
    """Every map of a surface file (datasets shaped like `done`), points not done as NaN."""
    with h5py.File(path, "r", locking=False) as f:
        x = f["xcoordinates"][()]
        y = f["ycoordinates"][()] if "ycoordinates" in f else None
        shape = (len(x),) if y is None else (len(y), len(x))
        done = f["done"][()].astype(bool) if "done" in f else np.ones(shape, dtype=bool)
        data = {k: f[k] for k in f if isinstance(f[k], h5py.Dataset) and f[k].dtype.kind == "f"
                and k not in ("xcoordinates", "ycoordinates")}
        maps = {k: np.where(done, d[()], np.nan) for k, d in data.items() if d.shape == shape}
        stacks = {k: np.where(done, d[()], np.nan) for k, d in data.items() if d.ndim == len(shape) + 1
                  and d.shape[1:] == shape}
        for group, suffix in (("planes_mean", "_mean"), ("planes_std", "_std")):  # several planes' statistics
            maps |= {k + suffix: f[group][k][()] for k in f.get(group, {})}
        if "planes" in f:  # each plane's maps, (K, *grid), as stacks
            planes_done = f["planes/done"][()].astype(bool)
            stacks |= {k: np.where(planes_done, f["planes"][k][()], np.nan) for k in f["planes"] if k != "done"}
        trajectory = f["trajectory"][()] if "trajectory" in f else None
        labels = f["trajectory_labels"][()] if "trajectory_labels" in f else None
        if trajectory is None and "checkpoint_coordinates" in f:  # a plane through checkpoints: mark each one
            trajectory = f["checkpoint_coordinates"][()]
            labels = np.array([v.decode() if isinstance(v, bytes) else v for v in f["checkpoint_labels"][()]])
        meta = {key: _attr(f, key) for key in META}
    return Surface(x, y, maps, stacks, trajectory, labels, meta)


def _attr(f: h5py.File, key: str) -> str:
    """A root string attribute, '' when absent."""
    value = f.attrs.get(key, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def save_figure(fig: Figure, out_dir: Path, name: str, opts: PlotOptions) -> list[Path]:
    """Write `fig` as `out_dir/name.<fmt>` for each requested format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{fmt}" for fmt in opts.formats]
    for path in paths:
        fig.savefig(path, dpi=opts.dpi)
    return paths


def figure(size: tuple[float, float]) -> Figure:
    """A constrained-layout figure; matplotlib is imported here, where drawing starts."""
    from matplotlib.figure import Figure
    return Figure(figsize=size, layout="constrained")


def _axes(xlabel: str, ylabel: str, title: str) -> tuple[Figure, Axes]:
    """A fresh figure with one labelled axes."""
    fig = figure((6.4, 5.0))
    ax = fig.add_subplot()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return fig, ax


def figure_1d(x: np.ndarray, values: dict[str, np.ndarray], opts: PlotOptions, xlabel: str = "", title: str = "",
              marks: dict[float, str] | None = None) -> Figure:
    """Losses (and other maps) on the left axis, one scale for all, accuracies (percent) on a twin right axis;
    train solid, test dashed; `marks` (x -> label) as dotted vertical lines; the legend below the axes."""
    losses = [np.ravel(v) for name, v in values.items() if not is_accuracy(name)]
    s = scale(np.concatenate(losses or [np.empty(0)]), opts)
    fig, ax = _axes(xlabel, "loss" + s.note, title)
    acc_ax, lines = None, []
    colours = iter(["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:gray", "tab:olive"])
    quantity_colour = {"loss": "b", "acc": "r"}
    for name, v in values.items():
        style = "--" if name.startswith("test") else "-"
        quantity = "_".join(name.split("_")[1:]) if name.split("_")[0] in ("train", "test") else name
        colour = quantity_colour.setdefault(quantity, next(colours, "k"))
        if is_accuracy(name):
            if acc_ax is None:
                acc_ax = ax.twinx()
                acc_ax.set_ylabel("accuracy (%)")
            lines += acc_ax.plot(x, np.ma.masked_invalid(v), style, color=colour, label=name)
        else:
            lines += ax.plot(x, s.apply(v), style, color=colour, label=name)
    if s.limits is not None:
        ax.set_ylim(*s.limits)
    for row, (at, label) in enumerate(sorted((marks or {}).items())):  # a row each: close marks stay legible
        right = at > (np.min(x) + np.max(x)) / 2  # a label right of the middle reads leftwards, inside the axes
        ax.axvline(at, color="0.3", ls=":", lw=1.2)
        ax.annotate(label, (at, 1), xycoords=("data", "axes fraction"), xytext=(-3 if right else 3, -10 - 10 * row),
                    textcoords="offset points", fontsize=7, color="0.3", ha="right" if right else "left")
    fig.legend(handles=lines, loc="outside lower center", ncols=min(len(lines), 4), fontsize=8)
    return fig


def plot_1d(x: np.ndarray, values: dict[str, np.ndarray], out_dir: str | Path, stem: str, opts: PlotOptions,
            xlabel: str = "", title: str = "", marks: dict[float, str] | None = None) -> list[Path]:
    """figure_1d written as `out_dir/<stem>.<fmt>`."""
    return save_figure(figure_1d(x, values, opts, xlabel, title, marks), Path(out_dir), stem, opts)


def mark(ax: Axes, trajectory: np.ndarray | None, labels: np.ndarray | None, centre: str | None) -> None:
    """What a 2D panel marks: the optimiser path (dots, start, end, a few epoch labels), or the checkpoints a
    plane goes through (labelled by name, not joined), and the centre."""
    if trajectory is not None and labels is not None and np.asarray(labels).dtype.kind in "US":
        for (px, py), name in zip(np.asarray(trajectory, dtype=float), labels):
            ax.plot(px, py, "o", color="white", mec="black", ms=8)
            ax.annotate(str(name), (px, py), textcoords="offset points", xytext=(5, 5), fontsize=8)
        trajectory = None
    if trajectory is not None:
        t = np.asarray(trajectory, dtype=float)
        ax.plot(t[:, 0], t[:, 1], "-o", color="tab:red", ms=3, lw=1)
        ax.plot(*t[0], "s", color="white", mec="black", ms=7, label="start")
        ax.plot(*t[-1], "*", color="gold", mec="black", ms=12, label="end")
        if labels is not None:
            for i in sorted({*range(0, len(t), max(1, len(t) // 6)), len(t) - 1}):
                ax.annotate(str(labels[i]), t[i], textcoords="offset points", xytext=(4, 4), fontsize=7)
    if centre is not None:
        ax.plot(0.0, 0.0, "P", color="white", mec="black", ms=10, label=centre)
    if trajectory is not None or centre is not None:
        ax.legend(fontsize=8, loc="upper right")


def draw(fig: Figure, ax: Axes, kind: str, x: np.ndarray, y: np.ndarray, z: np.ma.MaskedArray, s: Scale,
         levels: int | np.ndarray, isometric: bool = False) -> object:
    """One panel of `kind` (contour, contourf, heatmap, 3d: `ax` must then be a 3D axes); returns what a colour
    bar reads (the 3D surface has none). `isometric`: flat panels drawn to one scale on both axes."""
    if isometric and kind != "3d":
        ax.set_aspect("equal")
    if kind == "contour":
        lines = ax.contour(x, y, z, levels=levels, cmap=CMAP, linewidths=0.8)
        ax.clabel(lines, fontsize=6)
        return lines
    if kind == "contourf":
        return ax.contourf(x, y, z, levels=levels, cmap=CMAP, extend=s.extend)
    if kind == "heatmap":
        lo, hi = s.range(z)
        return ax.pcolormesh(x, y, z, shading="nearest", cmap=CMAP, vmin=lo, vmax=hi)
    _surface_3d(ax, x, y, z, s)
    return None


def colour_bar(fig: Figure, kind: str, mappable: object, ax: Axes | list[Axes], label: str, s: Scale) -> None:
    """The colour bar of a filled contour or heatmap: round ticks even between levels, no offset notation."""
    from matplotlib.ticker import MaxNLocator
    ticks = MaxNLocator() if kind == "contourf" else None
    bar = fig.colorbar(mappable, ax=ax, label=label, ticks=ticks, extend=s.extend)
    bar.formatter.set_useOffset(False)


def _surface_3d(ax: Axes, x: np.ndarray, y: np.ndarray, z: np.ma.MaskedArray, s: Scale) -> None:
    """Surface shaded by a LightSource; masked points leave holes; the heights are cut to the colour limits."""
    lo, hi = s.range(z)
    z = np.ma.clip(z, lo, hi)
    import matplotlib
    from matplotlib.colors import LightSource
    unit, cmap = ((z - lo) / (hi - lo)).filled(np.nan), matplotlib.colormaps[CMAP]
    # Rows run up in y, while LightSource assumes image rows running down: hence the negative dy.
    rgb = LightSource(azdeg=315, altdeg=45).shade(unit, cmap, blend_mode="soft", vmin=0, vmax=1,
                                                  dx=1 / max(len(x) - 1, 1), dy=-1 / max(len(y) - 1, 1))
    rgb = np.where(np.isnan(rgb), cmap(unit), rgb)  # next to a gap there is no slope: colour unshaded
    X, Y = np.meshgrid(x, y)
    ax.plot_surface(X, Y, z.filled(np.nan), facecolors=rgb, rstride=1, cstride=1, linewidth=0,
                    antialiased=False, shade=False)
    ax.set_zlim(lo, hi)


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
               trajectory_labels: np.ndarray | None = None, centre: str | None = None,
               value_scale: Scale | None = None, isometric: bool = False) -> dict[str, Figure]:
    """The contour, filled contour ('contourf'), heatmap and 3D ('3d') figures of Z[iy, ix] = f(x[ix], y[iy]),
    unsaved: plot_2d writes them, a notebook can show them. `centre` labels a mark at (0, 0) (None: no mark);
    `value_scale` is scale(Z, opts) where the caller has it already; `isometric`: drawn to one scale (`draw`)."""
    x, y, s = np.asarray(x, dtype=float), np.asarray(y, dtype=float), value_scale or scale(Z, opts)
    z, label, title = s.apply(Z), value_label(stem, s), title + s.note
    levels, figs = s.levels(z, opts.levels), {}
    for kind in KINDS:
        if kind == "3d":
            figs[kind] = fig = figure((7.0, 5.6))
            ax = fig.add_subplot(projection="3d")
            ax.set(xlabel=xlabel, ylabel=ylabel, zlabel=label, title=title)
            ax.view_init(elev=opts.elev, azim=opts.azim)
        else:
            figs[kind], ax = _axes(xlabel, ylabel, title)
        mappable = draw(figs[kind], ax, kind, x, y, z, s, levels, isometric)
        if kind in ("contourf", "heatmap"):
            colour_bar(figs[kind], kind, mappable, ax, label, s)
        if kind != "3d":
            mark(ax, trajectory if kind != "heatmap" else None, trajectory_labels, centre)
        elif centre is not None:
            ax.scatter([0.0], [0.0], [centre_height(x, y, z, s)], marker="P", s=80, c="white", edgecolors="black",
                       depthshade=False, label=centre)
            ax.legend(fontsize=8, loc="upper right")
    return figs


def centre_height(x: np.ndarray, y: np.ndarray, z: np.ma.MaskedArray, s: Scale) -> float:
    """The drawn value at the grid point nearest (0, 0), within the colour limits (their middle for a gap)."""
    lo, hi = s.range(z)
    value = z[np.abs(y).argmin(), np.abs(x).argmin()]
    return (lo + hi) / 2 if value is np.ma.masked else float(np.clip(value, lo, hi))



def plot_2d(x: np.ndarray, y: np.ndarray, Z: np.ndarray, out_dir: str | Path, stem: str, opts: PlotOptions,
            xlabel: str = "", ylabel: str = "", title: str = "", trajectory: np.ndarray | None = None,
            trajectory_labels: np.ndarray | None = None, centre: str | None = None,
            isometric: bool = False) -> list[Path]:
    """figures_2d written as `out_dir/<stem>_<kind>.<fmt>`, plus `<stem>.vtk` if asked (its values named
    `log10_<stem>` when drawn on a log scale)."""
    out_dir, s = Path(out_dir), scale(Z, opts)
    figs = figures_2d(x, y, Z, stem, opts, xlabel, ylabel, title, trajectory, trajectory_labels, centre, s,
                      isometric)
    paths = [p for kind, fig in figs.items() for p in save_figure(fig, out_dir, f"{stem}_{kind}", opts)]
    if opts.vtk:
        paths.append(_write_vtk(out_dir / f"{stem}.vtk", x, y, s.apply(Z), f"log10_{stem}" if s.log else stem))
    return paths


def plot_surface_file(path: str | Path, out_dir: str | Path, opts: PlotOptions,
                      leave_out: Collection[str] = ()) -> list[Path]:
    """Draw every map in `opts.metrics` (empty: every map, less `leave_out`: maps another module draws, and
    their means and spreads over planes) a surface file holds; points not done are gaps. Losses follow the
    log/clip/limit options, other maps are drawn linear on their own scale. With a trajectory, also its
    animation (plot.animation); with plot.html, the interactive 3D page."""
    surf = read_surface(path)
    names = [m for m in (opts.metrics or surf.maps)
             if m in surf.maps and m.removesuffix("_mean").removesuffix("_std") not in leave_out]
    out_dir = Path(out_dir)
    if surf.y is None:
        return plot_1d(surf.x, {m: surf.maps[m] for m in names}, out_dir, "1d_loss_acc", opts,
                       surf.meta["xlabel"], surf.subject, surf.marks_1d())
    paths = []
    for m in names:
        paths += plot_2d(surf.x, surf.y, surf.maps[m], out_dir, m, options_for(m, opts), surf.meta["xlabel"],
                         surf.meta["ylabel"], surf.heading(m), surf.trajectory, surf.labels, surf.centre,
                         surf.isometric)
    if opts.animation and surf.meta["directions"] == "pca" and surf.trajectory is not None and names:
        from .animation import animate_trajectory  # imports this module
        loss = next((m for m in names if "loss" in m.split("_")), names[0])
        paths.append(animate_trajectory(surf, loss, out_dir / "trajectory.gif", opts))
    if opts.html:
        from .interactive import write_html  # plotly, imported only when asked for
        paths.append(write_html({Path(path).parent.name: surf}, out_dir / "surface.html", opts))
    return paths
