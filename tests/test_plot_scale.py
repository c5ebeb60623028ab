"""Plots that keep what the README says: an orthogonalized plane drawn to one scale on both axes, and a line's
checkpoint labels legible whatever the range."""
import numpy as np
import pytest
import torch

from conftest import cli
from landscape import directions, plot
from landscape.plot import PlotOptions, figure_1d, read_surface


def _states(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(6, 5, generator=g), "b": torch.randn(6, generator=g)}


@pytest.mark.parametrize("orthogonalize, norm, isometric", [(True, "none", True), (False, "none", False),
                                                            (True, "filter", False)])
def test_only_orthonormal_plane_directions_are_isometric(orthogonalize, norm, isometric):
    d = directions.checkpoint_plane(["w", "b"], _states(0), [_states(1), _states(2)], [], orthogonalize, norm)
    assert d.attrs["isometric"] is isometric


def test_an_orthogonalized_plane_is_drawn_to_one_scale(trained, base_args, tmp_path, monkeypatch):
    w1, w2 = trained / "epoch_002.pt", trained / "epoch_005.pt"
    run = tmp_path / "ortho"
    cli("landscape-surface", *base_args, "directions=plane", f"directions.points=[{w1},{w2}]",
        "directions.orthogonalize=true", "grid.resolution=3", "grid.range=[[-0.5,1.5],[-0.05,0.05]]",
        f"run.dir={run}")
    assert read_surface(run / "surface.h5").isometric
    drawn = []
    monkeypatch.setattr(plot, "save_figure", lambda fig, out, name, opts: drawn.append((name, fig)) or [])
    plot.plot_surface_file(run / "surface.h5", tmp_path / "plots", PlotOptions())
    flat = [(name, fig.axes[0]) for name, fig in drawn if not name.endswith("_3d")]
    assert flat and all(ax.get_aspect() == 1.0 for _, ax in flat)
    for _, ax in flat:  # a y range of 0.1 drawn a twentieth as tall as the x range of 2
        ax.figure.draw_without_rendering()
        box = ax.get_window_extent()
        assert box.height / box.width == pytest.approx(np.ptp(ax.get_ylim()) / np.ptp(ax.get_xlim()), rel=0.02)


@pytest.mark.parametrize("lo, hi", [(0, 1), (-0.5, 1.5), (-2, 3), (-10, 11)])
def test_a_lines_checkpoint_labels_do_not_overlap(lo, hi):
    x = np.linspace(lo, hi, 41)
    marks = {0.0: "a=0: epoch_000", 1.0: "a=1: last"}
    fig = figure_1d(x, {"train_loss": (x - 1) ** 2 + 0.1}, PlotOptions(), "a", "line", marks)
    fig.draw_without_rendering()
    boxes = [t.get_window_extent() for t in fig.axes[0].texts]
    assert len(boxes) == 2 and not boxes[0].overlaps(boxes[1])
    inside = fig.axes[0].get_window_extent()
    assert all(inside.contains(b.x0, b.y0) and inside.contains(b.x1, b.y1) for b in boxes)
