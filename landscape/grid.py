"""Grid coordinates (1D or 2D) and their partition into rectangular tiles, each a unit of work."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import UserError


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


def _axis(resolution: int, lo: float, hi: float, name: str) -> np.ndarray:
    if int(resolution) < 1:
        raise UserError(f"grid.resolution along {name} is {resolution}: it must be 1 or more")
    if not hi > lo and int(resolution) > 1:
        raise UserError(f"grid.range along {name} is [{lo}, {hi}]: it is empty; give [min, max] with min < max")
    return np.linspace(float(lo), float(hi), int(resolution))


def _per_axis(value: int | float | Sequence, dims: int) -> list:
    """A scalar or [x, y] -> one value per axis."""
    if isinstance(value, (int, float)):
        return [value] * dims
    return list(value)[:dims] if len(value) >= dims else list(value) * dims


def make_grid(dims: int, resolution: int | Sequence[int], range_: Sequence) -> Grid:
    """`range_` is `[lo, hi]` for every axis (`R` alone means `[-R, R]`) or `[[xlo, xhi], [ylo, yhi]]`."""
    if dims not in (1, 2):
        raise UserError(f"grid.dims is {dims}: use 1 or 2")
    if isinstance(range_, (int, float)):
        range_ = [-abs(range_), abs(range_)]
    ranges = [list(range_)] * dims if isinstance(range_[0], (int, float)) else [list(r) for r in range_]
    res = _per_axis(resolution, dims)
    axes = [_axis(r, lo, hi, n) for r, (lo, hi), n in zip(res, ranges, "xy")]
    return Grid(axes[0], axes[1] if dims == 2 else None)


def make_tiles(grid: Grid, size: int | Sequence[int]) -> list[Tile]:
    """Cover the grid with tiles of `size` x `size` points (`size` points in 1D), row-major ids."""
    sx, sy = (_per_axis(size, 2) + [1])[:2]
    if sx < 1 or sy < 1:
        raise UserError(f"grid.tile is {size}: it must be 1 or more")
    ny = 1 if grid.y is None else len(grid.y)
    sy = 1 if grid.y is None else sy
    tiles = []
    for iy0 in range(0, ny, sy):
        for ix0 in range(0, len(grid.x), sx):
            tiles.append(Tile(len(tiles), ix0, min(ix0 + sx, len(grid.x)), iy0, min(iy0 + sy, ny)))
    return tiles
