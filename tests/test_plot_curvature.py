"""Curvature figures from a surface file: the convexity ratio, 2D maps, the 1D curves, nothing without max_eig."""
from __future__ import annotations

import h5py
import numpy as np

from landscape.plot import PlotOptions
from landscape.plot_curvature import convexity, plot_curvature_file


def _surface(path, two_d: bool, curvature: bool = True):
    x = np.linspace(-1, 1, 5)
    shape = (4, 5) if two_d else (5,)
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = x
        if two_d:
            f["ycoordinates"] = np.linspace(-1, 1, 4)
        f["train_loss"] = np.linspace(0.1, 2.0, 20)[:int(np.prod(shape))].reshape(shape)
        f["done"] = np.ones(shape, dtype=bool)
        if curvature:
            f["max_eig"] = np.full(shape, 10.0)
            f["min_eig"] = np.linspace(-5.0, 0.0, int(np.prod(shape))).reshape(shape)
    return path


def test_convexity_is_the_absolute_ratio_and_undefined_without_a_positive_maximum():
    r = convexity(np.array([10.0, 4.0, 0.0, -1.0]), np.array([-1.0, 2.0, -1.0, -2.0]))
    assert np.allclose(r[:2], [0.1, 0.5]) and np.isnan(r[2:]).all()


def test_maps_in_2d_curves_in_1d_and_nothing_without_curvature(tmp_path):
    names = {p.name for p in plot_curvature_file(_surface(tmp_path / "a.h5", True), tmp_path / "a", PlotOptions())}
    assert {"max_eig_heatmap.png", "min_eig_contourf.png", "convexity_heatmap.png"} <= names
    assert "trace_heatmap.png" not in names
    one = plot_curvature_file(_surface(tmp_path / "b.h5", False), tmp_path / "b", PlotOptions())
    assert [p.name for p in one] == ["1d_curvature.png"] and one[0].stat().st_size > 0
    assert plot_curvature_file(_surface(tmp_path / "c.h5", True, False), tmp_path / "c", PlotOptions()) == []
