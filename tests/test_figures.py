"""Landscape figures on analytic surfaces, and statistics over planes against a direct computation."""
import numpy as np
import pytest

from landscape.errors import UserError
from landscape.figures import FigureOptions, figure_options, mean_std, over_planes, plane_figures, table

X = np.linspace(-1, 1, 41)  # spacing 0.05: radii 0.25 and 0.5 are grid distances


def bowl(a: float, b: float, c: float = 1.0) -> np.ndarray:
    """c + (a x^2 + b y^2) / 2 on X x X: Hessian diag(a, b) everywhere."""
    xx, yy = np.meshgrid(X, X)
    return c + 0.5 * (a * xx**2 + b * yy**2)


def test_quadratic_bowl_has_its_curvature_rises_and_basin():
    a, b, delta = 2.0, 8.0, 0.1
    f = plane_figures(X, X, bowl(a, b), FigureOptions(radii=(0.25, 0.5), delta=delta))
    assert f["centre_loss"] == pytest.approx(1.0)
    assert f["centre_min_curvature"] == pytest.approx(a) and f["centre_max_curvature"] == pytest.approx(b)
    assert f["nonconvex_fraction"] == 0
    for r in (0.25, 0.5):  # the steepest point within r lies on the y axis, a grid point
        assert f[f"max_rise_r{r:g}"] == pytest.approx(0.5 * b * r**2)
        assert f[f"sharpness_r{r:g}"] == pytest.approx(0.5 * b * r**2 / 2)
        # the mean of the rise over the disc: (a + b) r^2 / 8 in the continuum; the grid's disc is close
        assert f[f"mean_rise_r{r:g}"] == pytest.approx((a + b) * r**2 / 8, rel=0.05)
    # basin: the ellipse (a x^2 + b y^2) / 2 <= delta, area 2 pi delta / sqrt(ab), over the grid's area 4
    assert f["basin_fraction"] == pytest.approx(2 * np.pi * delta / np.sqrt(a * b) / 4, rel=0.1)


def test_saddle_is_nonconvex_everywhere():
    xx, yy = np.meshgrid(X, X)
    f = plane_figures(X, X, xx**2 - yy**2, FigureOptions())
    assert f["nonconvex_fraction"] == 1
    assert f["centre_min_curvature"] == pytest.approx(-2) and f["centre_max_curvature"] == pytest.approx(2)


def test_double_well_barrier_and_nonconvex_band():
    """(x^2 - 1)^2 on the line a in [-0.5, 1.5] through x = 2a - 1: minima at a = 0 and 1, barrier 1 at a = 0.5."""
    a = np.linspace(-0.5, 1.5, 81)
    z = ((2 * a - 1) ** 2 - 1) ** 2
    f = plane_figures(a, None, z, FigureOptions(delta=0.25), "line")
    assert f["barrier"] == pytest.approx(1.0)
    assert f["centre_loss"] == pytest.approx(0.0)
    # second derivative 4 (12 x^2 - 4) < 0 where |2a - 1| < 1/sqrt(3); share of the 79 interior points
    interior = a[1:-1]
    assert f["nonconvex_fraction"] == pytest.approx(np.mean(np.abs(2 * interior - 1) < 1 / np.sqrt(3)), abs=2 / 79)
    # basin around a = 0: (x^2 - 1)^2 <= 0.25  <=>  x^2 in [0.5, 1.5]: x from -sqrt(1.5) to -sqrt(0.5)
    width = (np.sqrt(1.5) - np.sqrt(0.5)) / 2
    assert f["basin_width"] == pytest.approx(width, abs=2 * (a[1] - a[0]))
    assert "barrier" not in plane_figures(a, None, z, FigureOptions())  # a random line has no endpoints


def test_double_well_surface_nonconvex_fraction():
    """(x^2 - 1)^2 + y^2: the Hessian's small eigenvalue 12 x^2 - 4 is negative for |x| < 1/sqrt(3)."""
    xs = np.linspace(-2, 2, 81)
    xx, yy = np.meshgrid(xs, xs)
    f = plane_figures(xs, xs, (xx**2 - 1) ** 2 + yy**2, FigureOptions())
    assert f["nonconvex_fraction"] == pytest.approx(np.mean(np.abs(xs[1:-1]) < 1 / np.sqrt(3)), abs=2 / 79)


def test_statistics_over_planes_match_a_direct_computation():
    rng = np.random.default_rng(0)
    planes = np.stack([bowl(a, b) + rng.normal(0, 0.01, (41, 41)) for a, b in ((1, 2), (3, 1), (2, 5))])
    mean, std = mean_std(planes)
    np.testing.assert_allclose(mean, planes.sum(0) / 3)
    np.testing.assert_allclose(std, np.sqrt(((planes - planes.sum(0) / 3) ** 2).sum(0) / 2))
    figs = over_planes(X, X, planes, FigureOptions())
    direct = [plane_figures(X, X, p, FigureOptions())["max_rise_r0.5"] for p in planes]
    np.testing.assert_array_equal(figs["max_rise_r0.5"], direct)
    assert np.isnan(mean_std(planes[:1])[1]).all()  # one plane: a spread is undefined


def test_missing_points_are_left_out():
    z = bowl(1, 1)
    z[:5] = np.nan
    f = plane_figures(X, X, z, FigureOptions(radii=(0.5,)))
    assert np.isfinite(f["max_rise_r0.5"]) and f["max_rise_r0.5"] == pytest.approx(0.125)


@pytest.mark.parametrize("settings, fragment", [
    ({"radii": [0]}, "figures.radii is 0"),
    ({"delta": None}, "set exactly one"),
    ({"delta": 0.1, "factor": 2}, "set exactly one"),
    ({"delta": None, "factor": 0.5}, "figures.factor is 0.5"),
    ({"radius": 1}, "figures.radius is unknown"),
])
def test_bad_figure_settings_name_the_key(settings, fragment):
    with pytest.raises(UserError, match=fragment):
        figure_options(settings)


def test_table_puts_runs_side_by_side():
    rows = [{"run": run, "loss": "train_loss", "figure": "centre_loss", "mean": m, "std": 0.5, "planes": k,
             "values": []} for run, m, k in (("skip", 1.0, 4), ("noskip", 2.0, 1))]
    head, line = table(rows).splitlines()
    assert "skip (4 planes)" in head and "noskip (1 plane)" in head
    assert "1 +- 0.5" in line and line.rstrip().endswith("2")
