"""Grid coordinates (1D or 2D) and their partition into rectangular tiles, each a unit of work."""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import UserError, whole_number


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
    """Points `ix0 <= ix < ix1`, `iy0 <= iy < iy1` (1D grids have iy0=0, iy1=1)."""

    id: int
    ix0: int
    ix1: int
    iy0: int = 0
    iy1: int = 1

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


def _axis(resolution: Any, lo: float, hi: float, name: str) -> np.ndarray:
    n = whole_number(resolution, f"grid.resolution along {name}", 1)
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
    raise UserError(f"grid.range is {range_!r}: give [lo, hi], R for [-R, R], or {per_axis} (finite numbers)")


def make_grid(dims: int, resolution: int | Sequence[int], range_: Any) -> Grid:
    """`range_` is `[lo, hi]` for every axis (`R` alone means `[-R, R]`) or `[[xlo, xhi], [ylo, yhi]]`.

    Every value is checked here (a UserError naming the key), so the library and the CLI refuse the same input.
    """
    if isinstance(dims, bool) or not isinstance(dims, numbers.Integral) or dims not in (1, 2):
        raise UserError(f"grid.dims is {dims!r}: use 1 or 2")
    ranges = _ranges(range_, dims)
    res = _per_axis(resolution, dims, "grid.resolution")
    axes = [_axis(r, lo, hi, n) for r, (lo, hi), n in zip(res, ranges, "xy")]
    if dims == 2 and min(map(len, axes)) < 2:
        raise UserError(f"grid.resolution is {resolution}: a 2D grid needs at least 2 points per axis; "
                        "use grid.dims=1 for a curve")
    return Grid(axes[0], axes[1] if dims == 2 else None)


def make_tiles(grid: Grid, size: int | Sequence[int]) -> list[Tile]:
    """Cover the grid with tiles of `size` x `size` points (`size` points in 1D), row-major ids."""
    sx, sy = (_per_axis(size, grid.dims, "grid.tile") + [1])[:2]
    sx, sy = whole_number(sx, "grid.tile", 1), whole_number(sy, "grid.tile", 1)
    ny = 1 if grid.y is None else len(grid.y)
    tiles = []
    for iy0 in range(0, ny, sy):
        for ix0 in range(0, len(grid.x), sx):
            tiles.append(Tile(len(tiles), ix0, min(ix0 + sx, len(grid.x)), iy0, min(iy0 + sy, ny)))
    return tiles
