"""Merge the tile files of a run into `surface.h5`: `python -m jobs.reduce RUN_DIR`. Safe to rerun."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

import landscape
from landscape import directions, figures, surface
from landscape.engine import curvature
from landscape.errors import UserError
from landscape.grid import Grid, Tile

from .run import RunDir


@dataclass(frozen=True)
class Reduced:
    """What a reduce found: the surface file, how complete it is, and its warning lines (non-finite losses,
    lambda_min's sign unknown, tiles of more than one device kind or thread count)."""

    path: Path
    done: int
    total: int
    warnings: tuple[str, ...]


def nonfinite_line(run: RunDir, metas: Mapping[int, Mapping[str, Any]]) -> str:
    """`non-finite loss: N of M points, in tiles ... (x from .. to .., y ...)` from the done tiles' attributes
    (tile id -> attributes); "" when every computed loss is finite."""
    counts = {tid: int(m["nonfinite"]) for tid, m in metas.items() if int(m["nonfinite"])}
    if not counts:
        return ""
    tiles = [run.tiles[tid] for tid in sorted(counts)]
    ids = ", ".join(str(t.id) for t in tiles[:10]) + (f", ... ({len(tiles)} tiles)" if len(tiles) > 10 else "")
    x = run.grid.x[[min(t.ix0 for t in tiles), max(t.ix1 for t in tiles) - 1]]
    where = f"x from {x[0]:g} to {x[1]:g}"
    if run.grid.y is not None:
        y = run.grid.y[[min(t.iy0 for t in tiles), max(t.iy1 for t in tiles) - 1]]
        where += f", y from {y[0]:g} to {y[1]:g}"
    points = sum(run.tiles[tid].npoints for tid in metas)
    return f"non-finite loss: {sum(counts.values())} of {points} points, in tiles {ids} ({where})"


def _plane_stems(run: RunDir) -> list[str]:
    """File stems of the checkpoints a plane goes through: the centre, then directions.points."""
    return [Path(p).stem for p in (run.settings.checkpoint.path, *run.settings.directions.points)]


def _axis_labels(run: RunDir, d: directions.Directions, grid: Grid) -> dict[str, str]:
    kind = d.attrs.get("kind", "")
    if kind == "pca" and d.explained_variance_ratio is not None:
        r = d.explained_variance_ratio
        return {"xlabel": f"PC1 ({100 * r[0]:.1f}% of variance)", "ylabel": f"PC2 ({100 * r[1]:.1f}% of variance)"}
    if kind == "line":
        return {"xlabel": "interpolation a: (1-a) start + a checkpoint", "ylabel": ""}
    if kind == "plane":
        w0, w1, w2 = _plane_stems(run)
        ortho = ", orthogonalized" if d.attrs.get("orthogonalize") else ""
        return {"xlabel": f"a: {w1} - {w0}", "ylabel": f"b: {w2} - {w0}{ortho}"}
    return {"xlabel": f"direction 1 ({d.attrs.get('norm', '')}-normalized)",
            "ylabel": f"direction 2 ({d.attrs.get('norm', '')}-normalized)" if grid.y is not None else ""}


def plane_stacks(planes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several planes' arrays as `planes/<key>` (K, ...) stacks plus `planes_mean/<key>` and `planes_std/<key>`
    maps (over the planes: NaN where a plane lacks the point); `done` is stacked only."""
    shape = planes[0]["done"].shape
    out = {}
    for key in dict.fromkeys(k for p in planes for k in p):
        stack = np.stack([p.get(key, np.full(shape, np.nan)) for p in planes])
        out[f"planes/{key}"] = stack
        if key != "done":
            out[f"planes_mean/{key}"], out[f"planes_std/{key}"] = figures.mean_std(stack)
    return out


def _marks(run: RunDir, d: directions.Directions) -> dict[str, np.ndarray]:
    """The checkpoints a plane passes through (centre, then directions.points), to mark on plots."""
    if d.marks is None:
        return {}
    return {"checkpoint_coordinates": d.marks, "checkpoint_labels": np.array(_plane_stems(run), dtype="S")}


def reduce(run_dir: str | Path) -> Reduced:
    """Read every complete tile, write the surface with NaN and done=False where tiles are missing; several
    random planes: plane 0 at the root (Li et al.'s tools read it) and every plane, mean and std in groups."""
    run = RunDir(Path(run_dir))
    s = run.settings
    read = {t.id: run.read_tile(t) for t in run.tiles if run.tile_state(t).done}
    metas = [r.meta for r in read.values()]
    by_plane: list[list[Tile]] = [[] for _ in range(s.planes)]
    for t in run.tiles:
        by_plane[t.plane].append(t)
    planes = [surface.merge(run.grid, tiles, {tid: r.values for tid, r in read.items()}) for tiles in by_plane]
    arrays = planes[0]
    d = run.load_directions(tensors=False)  # labels and trajectory: no direction tensors read
    extra = plane_stacks(planes) if s.planes > 1 else {}
    if d.trajectory is not None:
        extra["trajectory"] = d.trajectory
        if d.trajectory_epochs is not None:
            extra["trajectory_labels"] = d.trajectory_epochs
    extra |= _marks(run, d)
    losses = {k: np.stack([p.get(k, np.full(run.grid.shape, np.nan)) for p in planes])
              for k in dict.fromkeys(k for p in planes for k in p if k.endswith("_loss"))}
    figs, fig_attrs = figures.surface_figures(run.grid.x, run.grid.y, losses, s.figures, s.directions.kind)
    extra |= figs
    attrs = {"fingerprint": run.fingerprint, "config": yaml.safe_dump(run.config, sort_keys=False),
             "landscape_version": landscape.__version__, "seed": s.seed,
             "torch_version": ", ".join(sorted({str(m.get("torch", "?")) for m in metas}))
             or run.saved.get("versions", {}).get("torch", ""),
             "title": f"{s.model.name} on {s.data.name}, {s.directions.kind} directions",
             **_axis_labels(run, d, run.grid),
             # what plots name: the checkpoint's file stem (and a line's start), the kind of directions
             "checkpoint": Path(s.checkpoint.path).stem, "start": Path(s.directions.start or "").stem,
             "directions": s.directions.kind, "planes": s.planes, "seeds": np.array(s.directions.seeds(s.seed)),
             "isometric": bool(d.attrs.get("isometric", False)),  # plots draw both axes to one scale
             "figures_radii": np.array(s.figures.radii), "figures_basin": s.figures.rule}
    checks = [float(m["precision_check"]) for m in metas if "precision_check" in m]
    if checks:  # bf16/fp16: the largest relative loss difference from fp32 over the checked points
        attrs["precision_check"] = float(np.nanmax(checks)) if not np.isnan(checks).all() else float("nan")
        attrs["precision_check_tiles"] = len(checks)
    made_by = surface.provenance(metas)
    if made_by:  # more than one entry: values agree to fp32 rounding across them, not bitwise
        attrs["computed_on"] = surface.tile_counts(made_by)
    if any(m.get("subset_leaves_out") for m in metas):  # each worker knew its splits' sizes
        attrs["approximate_subset"] = s.data.subset
    attrs["bn"] = s.engine.bn if s.engine.bn == "frozen" else f"recalibrate ({s.engine.bn_batches} batches of " \
        f"{s.engine.bn_batch_size})"
    if s.hessian:  # Li et al.'s max_eig / min_eig; a subset of the split is said, as for the loss
        attrs |= {f"hessian_{k}": "null" if v is None else v for k, v in vars(s.hessian).items()}
    if not any(k.endswith("_loss") for k in arrays):  # nothing computed yet: still a valid, empty file
        arrays["train_loss"] = np.full(run.grid.shape, np.nan)
    surface.write_surface(run.surface_file, run.grid, arrays, str(run.directions_file.resolve()), attrs, extra,
                          fig_attrs)
    mixed = f"tiles computed on {surface.tile_counts(made_by)}: values agree to rounding across these, not " \
        "bitwise" if len(made_by) > 1 else ""
    lines = (nonfinite_line(run, {tid: r.meta for tid, r in read.items()}), curvature.sign_line(metas), mixed)
    return Reduced(run.surface_file, len(read), len(run.tiles), tuple(filter(None, lines)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    try:
        r = reduce(parser.parse_args(argv).run_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{r.path}: {r.done}/{r.total} tiles")
    for line in r.warnings:
        print(f"warning: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
