"""Several surfaces side by side on one colour scale with identical contour levels, and their differences
where the grids match: how papers compare skip and no skip, TAAF and plain."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .errors import UserError
from .plot import (KINDS, PlotOptions, Surface, colour_bar, draw, figure, is_accuracy, mark, options_for,
                   read_surface, save_figure, scale, shared_scale, value_label)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DIFF_CMAP = "RdBu_r"
PANEL = (4.4, 4.0)  # inches per panel


@dataclass(frozen=True)
class Comparison:
    """What a comparison wrote, and notes for the user (e.g. why there is no difference map)."""

    paths: list[Path]
    notes: list[str]


def compare_surfaces(files: Mapping[str, str | Path], out_dir: str | Path, opts: PlotOptions) -> Comparison:
    """Every map held by all of `files` (label -> surface file), one figure per plot kind with a panel per run
    on a shared scale, plus `<map>_difference` (first run minus each other) where the grids match, and with
    plot.html every run in one interactive page."""
    if len(files) < 2:
        raise UserError("a comparison needs two runs or more")
    surfaces = {label: read_surface(path) for label, path in files.items()}
    dims = {label: 1 if s.y is None else 2 for label, s in surfaces.items()}
    if len(set(dims.values())) > 1:
        raise UserError("cannot compare 1D and 2D surfaces: " + ", ".join(f"{k} is {d}D" for k, d in dims.items()))
    first = next(iter(surfaces.values()))
    names = [m for m in (opts.metrics or first.maps) if all(m in s.maps for s in surfaces.values())]
    if not names:
        raise UserError("the runs share no map to compare: " + "; ".join(
            f"{label} holds {', '.join(s.maps) or 'none'}" for label, s in surfaces.items()))
    mismatch = _grid_mismatch(surfaces)
    notes = [f"no difference maps: {mismatch}"] if mismatch else []
    out, paths = Path(out_dir), []
    for name in names:
        if first.y is None:
            paths += save_figure(_curves(surfaces, name, opts, not mismatch), out, f"{name}_1d", opts)
            continue
        for kind, fig in side_by_side(surfaces, name, opts).items():
            paths += save_figure(fig, out, f"{name}_{kind}", opts)
        if not mismatch:
            paths += save_figure(difference(surfaces, name, opts), out, f"{name}_difference", opts)
    if opts.html and first.y is not None:
        from .interactive import write_html  # plotly, imported only when asked for
        paths.append(write_html(surfaces, out / "surface.html", opts))
    return Comparison(paths, notes)


def _grid_mismatch(surfaces: Mapping[str, Surface]) -> str:
    """'' when every surface has the first one's coordinates, else a line saying how they differ."""
    def grid(s: Surface) -> str:
        axes = [s.x] if s.y is None else [s.x, s.y]
        return " x ".join(f"{len(a)} points from {a[0]:g} to {a[-1]:g}" for a in axes)

    (label0, s0), *rest = surfaces.items()
    for label, s in rest:
        same = [np.array_equal(a, b) for a, b in ((s0.x, s.x), (s0.y, s.y)) if a is not None]
        if not all(same):
            return f"the grids differ ({label0}: {grid(s0)}; {label}: {grid(s)})"
    return ""


def _title(label: str, s: Surface) -> str:
    """A panel's title: the run, then what its surface is of."""
    return f"{label}\n{s.subject}"


def side_by_side(surfaces: Mapping[str, Surface], name: str, opts: PlotOptions) -> dict[str, Figure]:
    """Per plot kind, one figure with a panel per run: one colour scale, the same contour levels, one colour
    bar; centres and trajectories marked as in single plots."""
    s = shared_scale(name, [v.maps[name] for v in surfaces.values()], opts)
    zs = {label: s.apply(v.maps[name]) for label, v in surfaces.items()}
    levels, label = s.levels(next(iter(zs.values())), opts.levels), value_label(name, s)
    figs = {}
    for kind in KINDS:
        fig = figs[kind] = figure((PANEL[0] * len(zs) + 1.2, PANEL[1] + 0.6))
        fig.suptitle(f"{name}{s.note}: one colour scale, the same levels")
        axes = []
        for i, (run, surf) in enumerate(surfaces.items()):
            ax = fig.add_subplot(1, len(zs), i + 1, projection="3d" if kind == "3d" else None)
            ax.set(xlabel=surf.meta["xlabel"], ylabel=surf.meta["ylabel"], title=_title(run, surf))
            mappable = draw(fig, ax, kind, surf.x, surf.y, zs[run], s, levels, surf.isometric)
            if kind == "3d":
                ax.view_init(elev=opts.elev, azim=opts.azim)
            else:
                mark(ax, surf.trajectory if kind != "heatmap" else None, surf.labels, surf.centre)
            axes.append(ax)
        if mappable is not None:
            colour_bar(fig, kind, mappable, axes, label, s)
    return figs


def difference(surfaces: Mapping[str, Surface], name: str, opts: PlotOptions) -> Figure:
    """Heatmaps of the first run's values minus each other run's (same grid), raw values (not log), on one
    symmetric diverging scale."""
    (label0, s0), *rest = surfaces.items()
    diffs = {label: s0.maps[name] - s.maps[name] for label, s in rest}
    finite = np.concatenate([d[np.isfinite(d)] for d in diffs.values()])
    bound = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    fig = figure((PANEL[0] * len(diffs) + 1.2, PANEL[1] + 0.6))
    unit = " (% points)" if is_accuracy(name) else ""
    fig.suptitle(f"{name}: difference of values{unit}")
    axes = []
    for i, (label, d) in enumerate(diffs.items()):
        ax = fig.add_subplot(1, len(diffs), i + 1)
        ax.set(xlabel=s0.meta["xlabel"], ylabel=s0.meta["ylabel"], title=f"{label0} - {label}")
        mesh = ax.pcolormesh(s0.x, s0.y, np.ma.masked_invalid(d), shading="nearest", cmap=DIFF_CMAP,
                             vmin=-bound, vmax=bound)
        if s0.isometric:
            ax.set_aspect("equal")
        axes.append(ax)
    other = rest[0][0] if len(rest) == 1 else "each other run"
    fig.colorbar(mesh, ax=axes, label=f"{label0} - {other}{unit}")
    return fig


def _curves(surfaces: Mapping[str, Surface], name: str, opts: PlotOptions, with_difference: bool) -> Figure:
    """1D: every run's curve on one axes (one scale by construction), and below it the first minus each other
    where the grids match."""
    s = scale(np.concatenate([v.maps[name] for v in surfaces.values()]), options_for(name, opts))
    fig = figure((6.4, 6.4 if with_difference else 4.6))
    ax = fig.add_subplot(2 if with_difference else 1, 1, 1)
    first = next(iter(surfaces.values()))
    ax.set(xlabel=first.meta["xlabel"], ylabel=value_label(name, s), title=f"{name}: {', '.join(surfaces)}")
    for label, surf in surfaces.items():
        ax.plot(surf.x, s.apply(surf.maps[name]), label=f"{label}: {surf.subject}")
    if s.limits is not None:
        ax.set_ylim(*s.limits)
    ax.legend(fontsize=7)
    if with_difference:
        (label0, s0), *rest = surfaces.items()
        diff_ax = fig.add_subplot(2, 1, 2, sharex=ax)
        for label, surf in rest:
            diff_ax.plot(s0.x, s0.maps[name] - surf.maps[name], label=f"{label0} - {label}")
        diff_ax.axhline(0, color="0.5", lw=0.8)
        diff_ax.set(xlabel=first.meta["xlabel"], ylabel=f"difference of {name}")
        diff_ax.legend(fontsize=7)
    return fig
