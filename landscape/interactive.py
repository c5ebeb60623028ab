"""An interactive 3D view of surfaces as one self-contained HTML page (plotly, its script embedded: it opens
offline): rotate, zoom, hover values, a menu choosing the run, map and plane, the trajectory drawn on it."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import UserError
from .plot import CMAP, PlotOptions, Surface, shared_scale, value_label


def _json(z: np.ndarray) -> list:
    """A 2D array as nested lists, gaps as null (plotly leaves a hole)."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(z, dtype=float)]


def _bilinear(x: np.ndarray, y: np.ndarray, z: np.ndarray, points: np.ndarray) -> np.ndarray:
    """z[iy, ix] interpolated at (x, y) points inside the grid (clamped to it), so a path lies on the surface."""
    px = np.clip(points[:, 0], x[0], x[-1])
    py = np.clip(points[:, 1], y[0], y[-1])
    i = np.clip(np.searchsorted(x, px) - 1, 0, len(x) - 2)
    j = np.clip(np.searchsorted(y, py) - 1, 0, len(y) - 2)
    u = (px - x[i]) / (x[i + 1] - x[i])
    v = (py - y[j]) / (y[j + 1] - y[j])
    return ((1 - u) * (1 - v) * z[j, i] + u * (1 - v) * z[j, i + 1] + (1 - u) * v * z[j + 1, i]
            + u * v * z[j + 1, i + 1])


def _base(name: str) -> str:
    """The map a view shows: `train_loss plane 3` -> `train_loss`."""
    return name.split(" plane ")[0]


def _views(surfaces: Mapping[str, Surface]) -> list[tuple[str, str, Surface, np.ndarray]]:
    """(run, map or `map plane k`, surface, values) for every 2D map and every plane of a stack."""
    out = []
    for run, surf in surfaces.items():
        out += [(run, name, surf, z) for name, z in surf.maps.items()]
        out += [(run, f"{name} plane {k}", surf, z) for name, stack in surf.stacks.items() for k, z in enumerate(stack)]
    return sorted(out, key=lambda view: "loss" not in _base(view[1]).split("_"))  # a loss shows first


def write_html(surfaces: Mapping[str, Surface], path: str | Path, opts: PlotOptions) -> Path:
    """One page for 2D `surfaces` (label -> surface): each map in `opts.metrics` (empty: all) of each run (and
    each plane) a 3D surface chosen from a menu; maps of one name share one colour scale across runs; losses follow the log/clip options."""
    import plotly.graph_objects as go

    views = [v for v in _views({k: s for k, s in surfaces.items() if s.y is not None})
             if not opts.metrics or _base(v[1]) in opts.metrics]
    if not views:
        raise UserError("no 2D map to draw in 3D: the interactive view is for 2D surfaces")
    scales = {base: shared_scale(base, [z for _, name, _, z in views if _base(name) == base], opts)
              for base in dict.fromkeys(_base(name) for _, name, _, _ in views)}
    fig, owner = go.Figure(), []
    for v, (run, name, surf, values) in enumerate(views):
        s = scales[_base(name)]
        z, label, (lo, hi) = s.apply(values).filled(np.nan), value_label(name, s), s.limits
        fig.add_trace(go.Surface(
            x=surf.x.tolist(), y=surf.y.tolist(), z=_json(z), colorscale=CMAP.capitalize(), cmin=lo, cmax=hi,
            colorbar={"title": {"text": label}}, name=f"{run}: {name}", visible=v == 0,
            hovertemplate=f"x %{{x:.4g}}<br>y %{{y:.4g}}<br>{label} %{{z:.5g}}<extra>{run}</extra>"))
        owner.append(v)
        points, text = _marks(surf)
        if points is not None:
            fig.add_trace(go.Scatter3d(
                x=points[:, 0].tolist(), y=points[:, 1].tolist(), z=_bilinear(surf.x, surf.y, z, points).tolist(),
                mode="lines+markers+text" if len(points) > 1 else "markers+text", text=text, visible=v == 0,
                line={"color": "red", "width": 4}, marker={"size": 4, "color": "red"}, name=f"{run}: marks",
                hovertemplate="%{text}<br>x %{x:.4g}<br>y %{y:.4g}<br>z %{z:.5g}<extra></extra>"))
            owner.append(v)
    layouts = [{"title.text": f"{run}: {surf.heading(name)}".replace("\n", "<br>"),
                "scene.xaxis.title.text": surf.meta["xlabel"], "scene.yaxis.title.text": surf.meta["ylabel"],
                "scene.zaxis.title.text": value_label(name, scales[_base(name)])}
               for run, name, surf, _ in views]
    buttons = [{"label": f"{run}: {name}", "method": "update", "args": [{"visible": [o == v for o in owner]}, layout]}
               for v, ((run, name, _, _), layout) in enumerate(zip(views, layouts))]
    fig.update_layout(
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "top"}],
        height=750, margin={"t": 110})
    fig.update_layout(layouts[0])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True, div_id="landscape-surface")
    return path


def _marks(surf: Surface) -> tuple[np.ndarray | None, list[str]]:
    """The points drawn on a surface: its trajectory (labelled by epoch), or the centre of random directions."""
    if surf.trajectory is not None:
        t = np.asarray(surf.trajectory, dtype=float)
        epochs = surf.labels if surf.labels is not None else range(len(t))
        return t, [f"epoch {e}" for e in epochs]
    if surf.centre is not None:
        return np.zeros((1, 2)), [surf.centre]
    return None, []
