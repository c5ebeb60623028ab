"""The training trajectory over its PCA surface, epoch by epoch: a GIF (matplotlib's PillowWriter)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.figure import Figure

from .plot import CMAP, PlotOptions, Surface, colour_bar, options_for, scale, value_label

FPS = 3
MAX_DPI = 80  # a GIF stores every frame: keep each small


def animate_trajectory(surface: Surface, name: str, path: str | Path, opts: PlotOptions) -> Path:
    """One frame per trajectory point over the filled contour of map `name`: the path so far, the current
    point, and its epoch in the title."""
    t = np.asarray(surface.trajectory, dtype=float)
    epochs = surface.labels if surface.labels is not None else np.arange(len(t))
    s = scale(surface.maps[name], options_for(name, opts))
    z = s.apply(surface.maps[name])
    fig = Figure(figsize=(5.6, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlabel=surface.meta["xlabel"], ylabel=surface.meta["ylabel"])
    filled = ax.contourf(surface.x, surface.y, z, levels=s.levels(z, opts.levels), cmap=CMAP, extend=s.extend)
    colour_bar(fig, "contourf", filled, ax, value_label(name, s), s)
    (path_line,) = ax.plot([], [], "-o", color="tab:red", ms=3, lw=1)
    (point,) = ax.plot([], [], "*", color="gold", mec="black", ms=14)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = PillowWriter(fps=FPS)
    with writer.saving(fig, str(path), dpi=min(opts.dpi, MAX_DPI)):
        for i in range(len(t)):
            path_line.set_data(t[: i + 1, 0], t[: i + 1, 1])
            point.set_data(t[i : i + 1, 0], t[i : i + 1, 1])
            ax.set_title(f"{surface.subject}\n{name}: epoch {epochs[i]} ({i + 1} of {len(t)})")
            writer.grab_frame()
    return path
