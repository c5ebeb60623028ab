"""Grid coordinates (1D or 2D) and their partition into rectangular tiles, each a unit of work.

Tiles are computed on demand from their id (`Tiling`), so planning a grid costs nothing per point; grids too
large to merge into one surface, or cut into too many tile files, are refused before anything is written.
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import UserError, whole_number

MAX_POINTS = 10**8  # 10000x10000: the merged surface holds 0.8 GB per (ny, nx) float64 array in memory
MAX_TILES = 10**5  # one file each, opened by every resume and landscape-status


@dataclass(frozen=True)
class Grid:
    """Coordinates along each axis; `y is None` for a 1D grid. Values are `Z[iy, ix]`."""

    x: np.ndarray
    y: np.ndarray | None = None

    @property
    def dims(self) -> int:
        return 1 if self.y is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))

    @property
    def npoints(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Tile:
    """Points `ix0 <= ix < ix1`, `iy0 <= iy < iy1` (1D grids have iy0=0, iy1=1) of plane `plane`."""

    id: int
    ix0: int
    ix1: int
    iy0: int = 0
    iy1: int = 1
    plane: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.iy1 - self.iy0, self.ix1 - self.ix0)

    @property
    def npoints(self) -> int:
        return (self.iy1 - self.iy0) * (self.ix1 - self.ix0)

    def coords(self, grid: Grid) -> np.ndarray:
        """(npoints, dims) coordinates, row-major over (iy, ix) so values reshape to `shape`."""
        xs = grid.x[self.ix0:self.ix1]
        if grid.y is None:
            return xs[:, None].copy()
        yy, xx = np.meshgrid(grid.y[self.iy0:self.iy1], xs, indexing="ij")
        return np.stack([xx.ravel(), yy.ravel()], axis=1)


def _axis(n: int, lo: float, hi: float, name: str) -> np.ndarray:
    if not hi > lo and n > 1:
        raise UserError(f"grid.range along {name} is [{lo:g}, {hi:g}]: it is empty; give [min, max] with min < max")
    return np.linspace(lo, hi, n)


def _per_axis(value: Any, dims: int, key: str) -> list:
    """A scalar or a list of one value (both: every axis), or one value per axis."""
    if not isinstance(value, (list, tuple)):
        return [value] * dims
    if len(value) not in (1, dims):
        raise UserError(f"{key} is {list(value)}: a {dims}D grid takes one value, or {dims} (one per axis)")
    return list(value) * (dims // len(value))


def _ranges(range_: Any, dims: int) -> list[tuple[float, float]]:
    """`[lo, hi]` for every axis, `R` for `[-R, R]`, or one `[lo, hi]` per axis, as (lo, hi) per axis."""
    try:
        r = None if isinstance(range_, (str, bytes, bool)) else np.asarray(range_, dtype=float)
    except (TypeError, ValueError):
        r = None
    if r is not None and r.shape in ((), (2,), (dims, 2)) and np.isfinite(r).all():
        pairs = [(-abs(r), abs(r))] if r.ndim == 0 else [tuple(r)] if r.ndim == 1 else [tuple(p) for p in r]
        return [(float(lo), float(hi)) for lo, hi in pairs] * (dims // len(pairs))
    per_axis = "[[xlo, xhi], [ylo, yhi]]" if dims == 2 else "[[lo, hi]]"
    raise UserError(f"grid.range is {range_!r}: give [lo, hi], R for [-R, R], or {per_axis} (finite numbers), "
                    "or null for the default")


def _check_points(resolution: Any, counts: list[int], splits: Sequence[str]) -> None:
    """Refuse a grid whose merged surface cannot be held: each split's loss and accuracy is a (ny, nx) array."""
    npoints = math.prod(counts)
    if npoints > MAX_POINTS:
        gb = npoints * 8 / 1e9
        raise UserError(f"grid.resolution is {resolution}: {npoints:,} points ({'x'.join(map(str, counts))}) "
                        f"are too many to hold: the merged surface keeps each split's loss and accuracy as "
                        f"(ny, nx) float64 arrays in memory ({gb:,.1f} GB each, {2 * len(splits) * gb:,.1f} GB for "
                        f"the {' and '.join(splits)} split{'s' if len(splits) > 1 else ''}); at most {MAX_POINTS:,} points (e.g. 10000x10000, 0.8 GB per array): use a coarser "
                        "grid.resolution, or a narrower grid.range around the region you need")


def make_grid(dims: int, resolution: int | Sequence[int], range_: Any,
              splits: Sequence[str] = ("train", "test")) -> Grid:
    """`range_` is `[lo, hi]` for every axis (`R` alone means `[-R, R]`) or `[[xlo, xhi], [ylo, yhi]]`; `splits`:
    the splits whose maps the merged surface will hold (what a grid too large to hold is said to cost).

    Every value is checked here (a UserError naming the key), so the library and the CLI refuse the same input.
    """
    if isinstance(dims, bool) or not isinstance(dims, numbers.Integral) or dims not in (1, 2):
        raise UserError(f"grid.dims is {dims!r}: use 1 or 2, or null for the default")
    ranges = _ranges(range_, dims)
    counts = [whole_number(r, f"grid.resolution along {n}", 1)
              for r, n in zip(_per_axis(resolution, dims, "grid.resolution"), "xy")]
    if dims == 2 and min(counts) < 2:
        raise UserError(f"grid.resolution is {resolution}: a 2D grid needs at least 2 points per axis; "
                        "use grid.dims=1 for a curve")
    _check_points(resolution, counts, splits)
    axes = [_axis(c, lo, hi, n) for c, (lo, hi), n in zip(counts, ranges, "xy")]
    return Grid(axes[0], axes[1] if dims == 2 else None)


@dataclass(frozen=True)
class Tiling:
    """`planes` copies of an `nx` x `ny` grid, each cut into tiles of `sx` x `sy` points: one tile space, ids
    row-major within a plane and plane after plane; each Tile is made when asked for."""

    nx: int
    ny: int
    sx: int
    sy: int = 1
    planes: int = 1

    @property
    def columns(self) -> int:
        return -(-self.nx // self.sx)

    @property
    def per_plane(self) -> int:
        return self.columns * -(-self.ny // self.sy)

    def __len__(self) -> int:
        return self.per_plane * self.planes

    def __getitem__(self, id: int) -> Tile:
        id = operator.index(id)
        if not 0 <= id < len(self):
            raise IndexError(f"tile {id} is not in this tiling (ids 0 to {len(self) - 1})")
        plane, local = divmod(id, self.per_plane)
        row, col = divmod(local, self.columns)
        ix0, iy0 = col * self.sx, row * self.sy
        return Tile(id, ix0, min(ix0 + self.sx, self.nx), iy0, min(iy0 + self.sy, self.ny), plane)

    def __iter__(self) -> Iterator[Tile]:
        return map(self.__getitem__, range(len(self)))


def make_tiling(grid: Grid, size: int | Sequence[int], planes: int = 1) -> Tiling:
    """Tiles of `size` x `size` points (`size` points in 1D; or [sx, sy]) on each of `planes` planes; refused
    beyond MAX_TILES files, or beyond MAX_POINTS points over all planes (the merged surface holds them all)."""
    sx, sy = (_per_axis(size, grid.dims, "grid.tile") + [1])[:2]
    sx, sy = whole_number(sx, "grid.tile", 1), whole_number(sy, "grid.tile", 1)
    ny = 1 if grid.y is None else len(grid.y)
    if grid.npoints * planes > MAX_POINTS:
        raise UserError(f"directions.planes is {planes}: {planes} planes of {grid.npoints:,} points are too many to "
                        f"hold in the merged surface (at most {MAX_POINTS:,} points over all planes): use fewer "
                        "planes or a coarser grid.resolution")
    tiling = Tiling(len(grid.x), ny, sx, sy, planes)
    if len(tiling) > MAX_TILES:
        side = next((s for s in range(max(sx, sy), max(len(grid.x), ny) + 1)
                     if len(Tiling(len(grid.x), ny, s, s if grid.y is not None else 1, planes)) <= MAX_TILES), None)
        hint = f"use a larger grid.tile (grid.tile={side} or more)" if side else "use fewer planes"
        raise UserError(f"grid.tile is {size}: {grid.npoints * planes:,} points in tiles of {sx * sy} make "
                        f"{len(tiling):,} tile files, each opened by every resume and landscape-status; at most "
                        f"{MAX_TILES:,}: {hint}")
    return tiling
