"""Merge the tile files of a run into `surface.h5`: `python -m jobs.reduce RUN_DIR`. Safe to rerun."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

import landscape
from landscape import data, surface

from .run import RunDir


@dataclass
class Reduced:
    """What a reduce found: the surface file and how complete it is."""

    path: Path
    done: int
    total: int


def _axis_labels(run: RunDir) -> dict[str, str]:
    d = run.load_directions()
    kind = d.attrs.get("kind", "")
    if kind == "pca" and d.explained_variance_ratio is not None:
        r = d.explained_variance_ratio
        return {"xlabel": f"PC1 ({100 * r[0]:.1f}% of variance)", "ylabel": f"PC2 ({100 * r[1]:.1f}% of variance)"}
    if kind == "line":
        return {"xlabel": "interpolation a: (1-a) start + a checkpoint", "ylabel": ""}
    return {"xlabel": f"direction 1 ({d.attrs.get('norm', '')}-normalized)",
            "ylabel": f"direction 2 ({d.attrs.get('norm', '')}-normalized)" if run.grid.y is not None else ""}


def reduce(run_dir: str | Path) -> Reduced:
    """Read every complete tile, write the surface with NaN and done=False where tiles are missing."""
    run = RunDir(Path(run_dir))
    values = {}
    for tile in run.tiles:
        v, _ = run.read_tile(tile)
        if v is not None:
            values[tile.id] = v
    arrays = surface.merge(run.grid, run.tiles, values)
    d = run.load_directions()
    extra = {}
    if d.trajectory is not None:
        extra["trajectory"] = d.trajectory
        if d.trajectory_epochs is not None:
            extra["trajectory_labels"] = d.trajectory_epochs
    cfg = run.config
    attrs = {"fingerprint": run.fingerprint, "config": yaml.safe_dump(cfg, sort_keys=False),
             "landscape_version": landscape.__version__, "seed": cfg["seed"],
             "torch_version": ", ".join(sorted({str(v["_meta"].get("torch", "?")) for v in values.values()}))
             or run.saved.get("versions", {}).get("torch", ""),
             "title": f"{cfg['model'].get('name', 'model')} on {cfg['data']['name']}, "
                      f"{cfg['directions']['kind']} directions", **_axis_labels(run)}
    checks = [float(v["_meta"]["precision_check"]) for v in values.values() if "precision_check" in v["_meta"]]
    if checks:  # bf16/fp16: the largest relative loss difference from fp32 over the checked points
        attrs["precision_check"] = float(np.nanmax(checks)) if not np.isnan(checks).all() else float("nan")
        attrs["precision_check_tiles"] = len(checks)
    made_by = surface.provenance([v["_meta"] for v in values.values()])
    if made_by:  # more than one entry: values agree to fp32 rounding across them, not bitwise
        attrs["computed_on"] = surface.tile_counts(made_by)
    if data.subset_leaves_out(cfg["data"]):
        attrs["approximate_subset"] = int(cfg["data"]["subset"])
    if not any(k.endswith("_loss") for k in arrays):  # nothing computed yet: still a valid, empty file
        arrays["train_loss"] = np.full(run.grid.shape, np.nan)
    surface.write_surface(run.surface_file, run.grid, arrays, str(run.directions_file.resolve()), attrs, extra)
    return Reduced(run.surface_file, len(values), len(run.tiles))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    r = reduce(parser.parse_args(argv).run_dir)
    print(f"{r.path}: {r.done}/{r.total} tiles")


if __name__ == "__main__":
    main()
