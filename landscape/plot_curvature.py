"""Figures of curvature maps (metrics=[loss, hessian]): lambda_max, lambda_min, the trace and Li et al.'s
convexity map |lambda_min / lambda_max| (small: locally convex; near 1 or above: strong negative curvature);
in 1D, the eigenvalues on an axis under the loss. Points where Lanczos' cap came before lambda_min's sign
(min_eig NaN, lambda_max known) are blank in the lambda_min and convexity maps and counted in their titles;
in 1D they are marked on the zero line."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .plot import PlotOptions, figure, plot_2d, read_surface, save_figure, scale

CONVEXITY = "convexity"  # the figure stem of |min_eig / max_eig|
# The maps this module draws, and the per-point diagnostics no one plots: plot_surface_file leaves them out.
OWN = ("max_eig", "min_eig", "trace", "max_eig_residual", "min_eig_residual", "lanczos_iterations", "trace_stderr")


def sign_unknown(max_eig: np.ndarray, min_eig: np.ndarray) -> np.ndarray:
    """Where lambda_min's sign is unknown: lambda_max measured, lambda_min not (the cap came first)."""
    return np.isfinite(max_eig) & np.isnan(min_eig)


def convexity(max_eig: np.ndarray, min_eig: np.ndarray) -> np.ndarray:
    """|lambda_min / lambda_max| (NaN where lambda_max is not positive: no ratio to read there)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(max_eig > 0, np.abs(min_eig / max_eig), np.nan)


def plot_curvature_file(path: str | Path, out_dir: str | Path, opts: PlotOptions) -> list[Path]:
    """Every curvature figure of a surface file that holds `max_eig` (none otherwise); points not done are gaps.
    lambda_max and the ratio follow plot.log_scale (auto: log10 over 3 decades), lambda_min (signed) and the
    trace stay linear; plot.clip/vmin/vmax are loss values and are not applied here."""
    surf = read_surface(path)
    if "max_eig" not in surf.maps:
        return []
    loss = next(k for k in ("train_loss", "test_loss") if k in surf.maps)
    values = {k: surf.maps[k] for k in ("max_eig", "min_eig", "trace", loss) if k in surf.maps}
    x, y = surf.x, surf.y
    xlabel, ylabel, title = surf.meta["xlabel"], surf.meta["ylabel"], f"{surf.subject}\ncurvature {surf.curvature_samples}"
    values[CONVEXITY] = convexity(values["max_eig"], values["min_eig"])
    free = replace(opts, clip=None, vmin=None, vmax=None)
    if y is None:
        return _plot_1d(x, values, loss, Path(out_dir), free, xlabel, title)
    unknown = int(sign_unknown(values["max_eig"], values["min_eig"]).sum())
    blank = f"; blank: sign unknown at {unknown} points" if unknown else ""
    headings = {"max_eig": "lambda_max", "min_eig": "lambda_min" + blank, "trace": "trace (Hutchinson)",
                CONVEXITY: "|lambda_min / lambda_max| (small: locally convex)" + blank}
    paths = []
    for key, heading in headings.items():
        if key not in values:
            continue
        o = free if key in ("max_eig", CONVEXITY) else replace(free, log_scale=False)
        heading = f"{title}\n{heading}"
        paths += plot_2d(x, y, values[key], out_dir, key, o, xlabel, ylabel, heading)
    return paths


def _plot_1d(x: np.ndarray, values: dict[str, np.ndarray], loss: str, out_dir: Path, opts: PlotOptions,
             xlabel: str, title: str) -> list[Path]:
    """The loss above; lambda_max and lambda_min (and the trace) below, on one shared x axis."""
    fig = figure((6.4, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True)
    s = scale(values[loss], opts)
    top.plot(x, s.apply(values[loss]), "b-", label=loss)
    top.set(ylabel="loss" + s.note, title=title)
    top.legend(fontsize=8)
    for key, style in (("max_eig", "r-"), ("min_eig", "g-"), ("trace", "k:")):
        if key in values:
            bottom.plot(x, np.ma.masked_invalid(np.ravel(values[key])), style, label=key)
    bottom.axhline(0.0, color="grey", lw=0.5)
    unknown = np.ravel(sign_unknown(values["max_eig"], values["min_eig"]))
    if unknown.any():
        bottom.plot(x[unknown], np.zeros(int(unknown.sum())), "gx", label="min_eig: sign unknown")
    bottom.set(xlabel=xlabel, ylabel="Hessian eigenvalue")
    bottom.legend(fontsize=8)
    return save_figure(fig, out_dir, "1d_curvature", opts)
