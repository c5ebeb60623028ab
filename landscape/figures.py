"""Landscape figures from a surface: the numbers papers compare, per plane and as mean +- std over planes.

The centre is the checkpoint (`checkpoint.path`): the origin of random, PCA and plane directions, a=1 on a line
from `directions.start` (a=0). Centre loss; mean and max loss rise within radii r (in the grid's coordinate units);
epsilon-sharpness (max rise within r relative to 1 + centre loss, Keskar et al. 2017); basin: the connected
region around the centre where the loss stays under a threshold (centre + delta, or centre * factor), as a
fraction of the grid (and, on a line, its width); non-convexity: the fraction of interior points whose
discrete Hessian has a negative eigenvalue; the discrete curvature at the centre; on a line between two
checkpoints, the barrier height (max over 0 <= a <= 1 minus the larger endpoint). Statistics over planes use
the sample standard deviation (ddof=1; 0 for one plane).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from .errors import UserError, first_line, real_number
from .surface import h5open

GROUP = "figures"  # surface file: figures/<split>_loss/<figure> datasets (K,), attributes mean and std


@dataclass(frozen=True)
class FigureOptions:
    """figures.*: the radii (grid coordinate units) and the basin threshold: centre + delta or centre * factor
    (exactly one of the two set)."""

    radii: tuple[float, ...] = (0.1, 0.25, 0.5)
    delta: float | None = 0.1
    factor: float | None = None

    def __post_init__(self) -> None:
        for r in self.radii:
            real_number(r, "figures.radii", 0, above=True)
        if (self.delta is None) == (self.factor is None):
            raise UserError("figures.delta and figures.factor: set exactly one (basin threshold centre + delta, "
                            "or centre * factor), the other null")
        if self.delta is not None:
            real_number(self.delta, "figures.delta", 0, above=True)
        if self.factor is not None:
            real_number(self.factor, "figures.factor", 1, above=True)

    def threshold(self, centre: float) -> float:
        return centre + self.delta if self.delta is not None else centre * self.factor

    @property
    def rule(self) -> str:
        return f"centre + {self.delta:g}" if self.delta is not None else f"centre * {self.factor:g}"


def figure_options(settings: Mapping[str, Any]) -> FigureOptions:
    """`figures.*` checked and converted; a UserError names an unknown key."""
    known = [f.name for f in fields(FigureOptions)]
    unknown = [k for k in settings if k not in known]
    if unknown:
        raise UserError(f"figures.{unknown[0]} is unknown: use one of {', '.join(known)}")
    radii = settings.get("radii", FigureOptions.radii)
    return FigureOptions(**{**settings, "radii": tuple(radii if isinstance(radii, (list, tuple)) else [radii])})


CHECKPOINT_AT = {"line": 1.0}  # theta(a) = start + a (checkpoint - start); every other kind: the origin


def checkpoint_at(kind: str, dims: int) -> tuple[float, ...]:
    """The checkpoint's grid coordinates, (x,) or (x, y), for directions of `kind`."""
    return (CHECKPOINT_AT.get(kind, 0.0), *(0.0,) * (dims - 1))


@dataclass(frozen=True)
class Centre:
    """Where the figures are taken: the grid point nearest the checkpoint's coordinates `at`. A grid need not
    hold the checkpoint (an even resolution, a fitted PCA range): the figures then are of the grid point
    `point`, `offset` away, and every table says so."""

    at: tuple[float, ...]  # (x,) or (x, y)
    index: tuple[int, ...]  # into the values: (ix,) or (iy, ix)
    point: tuple[float, ...]  # the grid point's coordinates, as `at`
    spacing: float  # the grid's largest spacing: offsets below its rounding are none

    @property
    def offset(self) -> float:
        """The distance from the checkpoint to the grid point standing in for it; 0 when the grid holds it."""
        d = math.dist(self.at, self.point)
        return 0.0 if d <= 1e-9 * self.spacing else d

    def describe(self) -> str:
        """`(0, 0)` on the grid, else `(-0.111, -0.111) for the checkpoint (0, 0), 0.157 off`."""
        text = lambda p: f"{p[0]:.3g}" if len(p) == 1 else f"({', '.join(f'{v:.3g}' for v in p)})"  # noqa: E731
        return text(self.at) if not self.offset else \
            f"{text(self.point)} for the checkpoint {text(self.at)}, {self.offset:.3g} off"


def on_grid(axis: np.ndarray, a: float) -> int | None:
    """The index of the point of `axis` at `a` (to rounding), None where the axis has none there."""
    i = int(np.argmin(np.abs(axis - a)))
    return i if abs(axis[i] - a) <= 1e-9 * _spacing(axis) else None


def _spacing(axis: np.ndarray) -> float:
    return float(np.max(np.diff(axis))) if len(axis) > 1 else 1.0


def centre_of(x: np.ndarray, y: np.ndarray | None, kind: str) -> Centre:
    """The centre of a grid of directions of `kind`."""
    at = checkpoint_at(kind, 1 if y is None else 2)
    axes = [axis for axis in (x, y) if axis is not None]
    near = [int(np.argmin(np.abs(axis - a))) for axis, a in zip(axes, at)]
    point = tuple(float(axis[i]) for axis, i in zip(axes, near))
    return Centre(at, tuple(near[::-1]), point, max(_spacing(axis) for axis in axes))


def _hessian_eigs(z: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) eigenvalue of the central-difference Hessian at every interior point (uniform spacing)."""
    hx = x[1] - x[0]
    if y is None:
        d2 = (z[2:] - 2 * z[1:-1] + z[:-2]) / hx**2
        return d2, d2
    hy = y[1] - y[0]
    c = z[1:-1, 1:-1]
    fxx = (z[1:-1, 2:] - 2 * c + z[1:-1, :-2]) / hx**2
    fyy = (z[2:, 1:-1] - 2 * c + z[:-2, 1:-1]) / hy**2
    fxy = (z[2:, 2:] - z[2:, :-2] - z[:-2, 2:] + z[:-2, :-2]) / (4 * hx * hy)
    mid, rad = (fxx + fyy) / 2, np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
    return mid - rad, mid + rad


def _basin(z: np.ndarray, centre: tuple[int, ...], threshold: float) -> np.ndarray:
    """The connected region (4-neighbours) around the centre where the loss is at most `threshold`."""
    from scipy import ndimage  # here: a worker imports this module for its settings, and never labels
    labels, _ = ndimage.label(np.nan_to_num(z, nan=np.inf) <= threshold)
    return labels == labels[centre] if labels[centre] else np.zeros(z.shape, dtype=bool)


def plane_figures(x: np.ndarray, y: np.ndarray | None, z: np.ndarray, opts: FigureOptions,
                  kind: str = "random") -> dict[str, float]:
    """The figures of one plane (or line) `z` shaped (ny, nx) (or (nx,)) of directions of `kind` (a line: a path
    between checkpoints). Points not computed are NaN and left out (a figure of none is NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of a surface still being computed
        return _plane_figures(x, y, np.asarray(z, dtype=np.float64), opts, kind)


def _plane_figures(x: np.ndarray, y: np.ndarray | None, z: np.ndarray, opts: FigureOptions,
                   kind: str) -> dict[str, float]:
    c = centre_of(x, y, kind)
    centre = c.index
    z0 = float(z[centre])
    cx = c.point[0]
    dist = np.abs(x - cx) if y is None else np.hypot(*np.meshgrid(x - cx, y - c.point[1]))  # from the centre point
    out = {"centre_loss": z0}
    for r in opts.radii:
        inside = z[dist <= r * (1 + 1e-9)]
        rise = inside - z0
        seen = np.isfinite(z0) and inside.size > 1  # a radius under the grid spacing holds the centre alone
        out[f"mean_rise_r{r:g}"] = float(np.nanmean(rise)) if seen else math.nan
        out[f"max_rise_r{r:g}"] = float(np.nanmax(rise)) if seen else math.nan
        out[f"sharpness_r{r:g}"] = out[f"max_rise_r{r:g}"] / (1 + abs(z0))
    basin = _basin(z, centre, opts.threshold(z0))
    out["basin_fraction"] = float(basin.mean())
    if y is None:
        inside = np.flatnonzero(basin)
        out["basin_width"] = float(x[inside[-1]] - x[inside[0]]) if len(inside) else 0.0
    if min(z.shape) >= 3:
        low, high = _hessian_eigs(z, x, y)
        known = np.isfinite(low)
        out["nonconvex_fraction"] = float((low[known] < 0).mean()) if known.any() else math.nan
        inner = tuple(i - 1 for i in centre)
        if all(0 <= i < n for i, n in zip(inner, low.shape)):
            out["centre_min_curvature"], out["centre_max_curvature"] = float(low[inner]), float(high[inner])
    if kind == "line" and y is None:
        ends = [on_grid(x, a) for a in (0.0, 1.0)]  # a grid without both checkpoints has no barrier
        path = (x >= -1e-9) & (x <= 1 + 1e-9)
        out["barrier"] = math.nan if None in ends else float(np.nanmax(z[path])) - max(float(z[i]) for i in ends)
    return out


def over_planes(x: np.ndarray, y: np.ndarray | None, planes: np.ndarray, opts: FigureOptions,
                kind: str = "random") -> dict[str, np.ndarray]:
    """Each figure of each plane of `planes` (K, ...): figure name -> (K,) values."""
    per = [plane_figures(x, y, z, opts, kind) for z in planes]
    return {name: np.array([p.get(name, math.nan) for p in per]) for name in dict.fromkeys(n for p in per for n in p)}


def mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation over axis 0 (the planes), of the values less the first plane's (no
    round-off spread for identical values, such as the centre loss); the std of one plane is NaN, undefined."""
    values = np.asarray(values, dtype=np.float64)
    shifted = values - values[0]
    std = shifted.std(axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1:], np.nan)
    return values[0] + shifted.mean(axis=0), std


def surface_figures(x: np.ndarray, y: np.ndarray | None, losses: Mapping[str, np.ndarray], opts: FigureOptions,
                    kind: str = "random") -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """For each loss (name -> (K, ...) planes): the datasets `figures/<loss>/<figure>` and their attributes;
    the group's `checkpoint_at` and `centre_at` say where the figures are taken."""
    c = centre_of(x, y, kind)
    data: dict[str, np.ndarray] = {}
    attrs = {GROUP: {"checkpoint_at": np.array(c.at), "centre_at": np.array(c.point)}} if losses else {}
    for key, planes in losses.items():
        figs = over_planes(x, y, planes, opts, kind)
        for name, values in figs.items():
            mean, std = mean_std(values)
            data[f"{GROUP}/{key}/{name}"] = values
            attrs[f"{GROUP}/{key}/{name}"] = {"mean": float(mean), "std": float(std)}
        attrs[f"{GROUP}/{key}"] = {"order": list(figs)}  # HDF5 lists names alphabetically
    return data, attrs


def loss_planes(f: h5py.File) -> dict[str, np.ndarray]:
    """Each loss of a surface file as (K, ...) planes: the `planes/` stack where there is one, else the root."""
    out = {}
    done = f["done"][()].astype(bool) if "done" in f else True
    for key in f:
        if key.endswith("_loss") and isinstance(f[key], h5py.Dataset):
            out[key] = f[f"planes/{key}"][()] if f"planes/{key}" in f else np.where(done, f[key][()], np.nan)[None]
    return out


def missing_points(path: str | Path) -> tuple[int, int]:
    """(points not computed, points) of a surface file, over all its planes."""
    try:
        with h5open(path) as f:
            done = f["planes/done"][()] if "planes/done" in f else f["done"][()]
    except (OSError, KeyError) as err:
        raise UserError(f"{path} is no readable surface file ({first_line(err)})") from err
    return int(done.size - np.count_nonzero(done)), int(done.size)


def read(path: str | Path, opts: FigureOptions | None = None) -> tuple[dict[str, dict[str, np.ndarray]], Centre]:
    """loss -> figure -> (K,) values: as stored in the surface file, else (none stored, or stored without saying
    where they were taken: a line's were taken at its start) computed from its values with `opts` (default
    FigureOptions()); and where they are taken."""
    try:
        with h5open(path) as f:
            x, y = f["xcoordinates"][()], f["ycoordinates"][()] if "ycoordinates" in f else None
            kind = str(f.attrs.get("directions", ""))
            if GROUP in f and "checkpoint_at" in f[GROUP].attrs:
                stored = {k: {str(n): g[n][()] for n in g.attrs["order"]} for k, g in f[GROUP].items()}
                return stored, centre_of(x, y, kind)
            losses = loss_planes(f)
    except (OSError, KeyError) as err:
        raise UserError(f"{path} is no readable surface file ({first_line(err)})") from err
    data, _ = surface_figures(x, y, losses, opts or FigureOptions(), kind)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, values in data.items():
        _, key, figure = name.split("/")
        out.setdefault(key, {})[figure] = values
    return out, centre_of(x, y, kind)


def rows(path: str | Path, label: str = "", opts: FigureOptions | None = None) -> list[dict[str, Any]]:
    """One row per loss and figure: `run`, `loss`, `figure`, `mean`, `std` (None for one plane), `planes`,
    `values` (per plane), and where they are taken: `checkpoint_at`, the grid point `centre_at` standing in for
    it, `centre_offset` (0 on the grid); the table `landscape-stats` prints and a comparison shows beside its
    plots."""
    figs, c = read(path, opts)
    where = {"checkpoint_at": list(c.at), "centre_at": list(c.point), "centre_offset": c.offset,
             "centre": c.describe()}
    out = []
    for key, named in figs.items():
        for name, values in named.items():
            mean, std = mean_std(values)
            out.append({"run": label or str(path), "loss": key, "figure": name, "mean": float(mean),
                        "std": float(std) if len(values) > 1 else None, "planes": len(values),
                        "values": [float(v) for v in values], **where})
    return out


def table(all_rows: list[dict[str, Any]]) -> str:
    """Figures down, runs across: `mean +- std` (K planes) per cell, so two runs compare line by line."""
    runs = list(dict.fromkeys(r["run"] for r in all_rows))
    keys = list(dict.fromkeys((r["loss"], r["figure"]) for r in all_rows))
    cell = {(r["run"], r["loss"], r["figure"]): r for r in all_rows}
    def fmt(r: dict[str, Any] | None) -> str:
        return "-" if r is None else f"{r['mean']:.4g}" + (f" +- {r['std']:.2g}" if r["planes"] > 1 else "")
    body = [[f"{loss} {figure}", *(fmt(cell.get((run, loss, figure))) for run in runs)] for loss, figure in keys]
    centres = {r["run"]: r["centre"] for r in all_rows if "centre" in r}
    if centres:  # where the figures are taken: the checkpoint, or the grid point standing in for it
        body.insert(0, ["centre point", *(centres.get(run, "-") for run in runs)])
    planes = {run: max(r["planes"] for r in all_rows if r["run"] == run) for run in runs}
    head = ["figure", *(f"{run} ({planes[run]} plane{'s' * (planes[run] > 1)})" for run in runs)]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body])
