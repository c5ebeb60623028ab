"""Grids and tiles: every point exactly once, any shape."""
import numpy as np
import pytest

from landscape.errors import UserError
from landscape.grid import make_grid, make_tiling


@pytest.mark.parametrize("resolution,tile", [(21, 4), ([17, 9], 5), ([7, 30], 8), (5, 1), (3, 10)])
def test_tiles_cover_2d_grid_exactly_once(resolution, tile):
    grid = make_grid(2, resolution, [-1, 1])
    count = np.zeros(grid.shape, dtype=int)
    seen = []
    for t in make_tiling(grid, tile):
        count[t.iy0:t.iy1, t.ix0:t.ix1] += 1
        coords = t.coords(grid)
        assert coords.shape == (t.npoints, 2)
        # row-major over (iy, ix): the values reshape to the tile's (rows, cols)
        np.testing.assert_array_equal(coords[:, 0].reshape(t.shape), np.broadcast_to(grid.x[t.ix0:t.ix1], t.shape))
        np.testing.assert_array_equal(coords[:, 1].reshape(t.shape).T, np.broadcast_to(grid.y[t.iy0:t.iy1], t.shape[::-1]))
        seen += [tuple(c) for c in coords]
    assert (count == 1).all()
    assert len(set(seen)) == grid.npoints == len(seen)


def test_tiles_cover_1d_grid_and_ids_are_positions():
    grid = make_grid(1, 41, [0, 1])
    tiles = make_tiling(grid, 8)
    assert [t.id for t in tiles] == list(range(len(tiles)))
    pts = np.concatenate([t.coords(grid)[:, 0] for t in tiles])
    np.testing.assert_array_equal(pts, grid.x)


def test_ranges():
    g = make_grid(2, [3, 5], [[0, 2], [-4, 4]])
    np.testing.assert_array_equal(g.x, [0, 1, 2])
    np.testing.assert_array_equal(g.y, [-4, -2, 0, 2, 4])
    assert g.shape == (5, 3)
    np.testing.assert_array_equal(make_grid(1, 3, 2).x, [-2, 0, 2])  # scale R means [-R, R]


@pytest.mark.parametrize("resolution,range_,msg", [
    (0, [-1, 1], "grid.resolution along x is 0: use a whole number of 1 or more"),
    (-3, [-1, 1], "whole number of 1 or more"), ("abc", [-1, 1], "grid.resolution along x is 'abc'"),
    (2.5, [-1, 1], "grid.resolution along x is 2.5"), ([5, 5, 5], [-1, 1], "takes one value, or 2"),
    (5, [1, 1], "empty"), (5, [2, -2], "empty"), (5, "abc", "grid.range is 'abc'"),
    (5, [1, 2, 3], r"grid.range is \[1, 2, 3\]"), (5, [[0, 1]], r"grid.range is \[\[0, 1\]\]"),
    (5, [[0, 1]] * 3, "grid.range is"), (5, [0, float("inf")], "finite"),
    ([1, 5], [-1, 1], "a 2D grid needs at least 2 points per axis; use grid.dims=1 for a curve"),
    ([5, 1], [-1, 1], "at least 2 points per axis"), (1, [-1, 1], "at least 2 points per axis")])
def test_bad_grids(resolution, range_, msg):
    with pytest.raises(UserError, match=msg):
        make_grid(2, resolution, range_)


@pytest.mark.parametrize("tile", ["abc", 2.5, 0, True, [2, 3, 4]])
def test_bad_tiles(tile):
    with pytest.raises(UserError, match="grid.tile is"):
        make_tiling(make_grid(2, 5, 1), tile)


def test_one_point_and_one_range_per_axis_in_1d():
    np.testing.assert_array_equal(make_grid(1, 1, [0, 1]).x, [0])
    np.testing.assert_array_equal(make_grid(1, 3, [[0, 1]]).x, [0, 0.5, 1])
    with pytest.raises(UserError, match="grid.dims is 3"):
        make_grid(3, 5, 1)
