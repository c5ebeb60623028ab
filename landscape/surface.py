"""On-disk formats: tile files (one writer each, written then renamed) and the merged surface file.

The surface file follows Li et al.'s layout (`xcoordinates`, `train_loss`, ... shaped (ny, nx)) so
their tools read it; a `done` mask says which points exist, never a sentinel value.
"""
from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from .errors import first_line
from .grid import Grid, Tile


def h5open(path: str | Path, mode: str = "r") -> h5py.File:
    """h5py without file locking: flock fails on many NFS/Lustre mounts, and we never share a writer."""
    return h5py.File(path, mode, locking=False)


@dataclass(frozen=True)
class Private:
    """A file one process keeps beside `target`: its temporary copy (`tmp`) or its in-progress mark (`run`)."""

    path: Path
    target: str
    host: str
    pid: int
    kind: str


def private_name(path: Path, kind: str) -> Path:
    """`.NAME.<host>.<pid>.<kind>` beside `path`: which process on which host made it."""
    return path.with_name(f".{path.name}.{os.uname().nodename}.{os.getpid()}.{kind}")


def private_files(folder: Path) -> list[Private]:
    """The temporary files and in-progress marks in `folder`, with the host and pid that made them."""
    found = []
    for p in folder.glob(".*.h5.*"):
        target, _, rest = p.name[1:].partition(".h5.")
        host, _, tail = rest.rpartition(".")
        host, _, pid = host.rpartition(".")
        if pid.isdigit() and tail in ("tmp", "run"):
            found.append(Private(p, target + ".h5", host, int(pid), tail))
    return found


@contextmanager
def in_progress(path: Path) -> Iterator[None]:
    """Mark `path` as being computed by this process (landscape-status counts it as running)."""
    mark = private_name(path, "run")
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    try:
        yield
    finally:
        mark.unlink(missing_ok=True)


def atomic_h5(path: Path):
    """Context manager: write an HDF5 file under a private temporary name, then rename it in place."""
    tmp = private_name(path, "tmp")

    class _Writer:
        def __enter__(self) -> h5py.File:
            self.f = h5open(tmp, "w")
            return self.f

        def __exit__(self, exc_type, *_):
            self.f.close()
            if exc_type is None:
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                tmp.replace(path)
            else:
                tmp.unlink(missing_ok=True)

    return _Writer()


def write_tile(path: Path, tile: Tile, fingerprint: str, values: Mapping[str, np.ndarray],
               meta: Mapping[str, Any]) -> None:
    """Values shaped like the tile, stamped with the run's fingerprint and the tile's index range."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_h5(path) as f:
        for key, v in values.items():
            f.create_dataset(key, data=np.asarray(v, dtype=np.float64).reshape(tile.shape))
        f.attrs.update({"fingerprint": fingerprint, "tile": tile.id, "ix0": tile.ix0, "ix1": tile.ix1,
                        "iy0": tile.iy0, "iy1": tile.iy1, **meta})


def read_tile(path: Path, tile: Tile, fingerprint: str) -> tuple[dict[str, np.ndarray] | None, str]:
    """(values, "") for a complete tile of this run; (None, why) for anything else."""
    if not path.exists():
        return None, "missing"
    try:
        with h5open(path) as f:
            a = f.attrs
            if a.get("fingerprint") != fingerprint:
                return None, "written by another configuration"
            if (a.get("ix0"), a.get("ix1"), a.get("iy0"), a.get("iy1")) != (tile.ix0, tile.ix1, tile.iy0, tile.iy1):
                return None, "index range differs"
            values = {k: f[k][()] for k in f.keys()}
            meta = {k: a[k] for k in a.keys()}
    except (OSError, KeyError, ValueError) as err:
        return None, f"unreadable ({first_line(err, 80)})"
    if not values or any(v.shape != tile.shape for v in values.values()):
        return None, "datasets missing or of the wrong shape"
    values["_meta"] = meta  # type: ignore[assignment]
    return values, ""


def merge(grid: Grid, tiles: list[Tile], tile_values: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Place tile values into full arrays (NaN where absent) plus the `done` mask."""
    shape2 = (1, len(grid.x)) if grid.y is None else grid.shape
    done = np.zeros(shape2, dtype=bool)
    arrays: dict[str, np.ndarray] = {}
    for tile in tiles:
        values = tile_values.get(tile.id)
        if values is None:
            continue
        box = (slice(tile.iy0, tile.iy1), slice(tile.ix0, tile.ix1))
        for key, v in values.items():
            if key.startswith("_"):
                continue
            arrays.setdefault(key, np.full(shape2, np.nan))[box] = v
        done[box] = True
    out = {k: v.reshape(grid.shape) for k, v in arrays.items()}
    out["done"] = done.reshape(grid.shape)
    return out


def write_surface(path: Path, grid: Grid, arrays: Mapping[str, np.ndarray], dir_file: str,
                  attrs: Mapping[str, Any], extra: Mapping[str, np.ndarray] | None = None) -> None:
    """The merged surface: Li et al.'s root datasets plus `done`, our metadata in attributes."""
    with atomic_h5(path) as f:
        f.create_dataset("xcoordinates", data=grid.x.astype(np.float64))
        if grid.y is not None:
            f.create_dataset("ycoordinates", data=grid.y.astype(np.float64))
        for key, v in arrays.items():
            f.create_dataset(key, data=v if key == "done" else v.astype(np.float64))
        for key, v in (extra or {}).items():
            f.create_dataset(key, data=v)
        f["dir_file"] = dir_file
        f.attrs["points_done"] = int(arrays["done"].sum())
        f.attrs["points_nonfinite"] = nonfinite_points(arrays)
        f.attrs.update(dict(attrs))


def nonfinite_points(arrays: Mapping[str, np.ndarray]) -> int:
    """Computed points where any split's loss (train or test) is inf or NaN: a diverged region, flagged."""
    finite = np.logical_and.reduce([np.isfinite(v) for k, v in arrays.items() if k.endswith("_loss")])
    return int((arrays["done"] & ~finite).sum())


def provenance(metas: list[Mapping[str, Any]]) -> dict[str, int]:
    """Tiles per `device (engine N)`: fp32 values are bitwise reproducible within one of these only."""
    return dict(sorted(Counter(
        f"{m.get('engine_device_name', m.get('device', '?'))} (engine {int(m.get('engine_version', 1))})"
        for m in metas).items()))


def tile_counts(counts: Mapping[str, int]) -> str:
    """`a: 3 tiles; b: 1 tiles`, as the surface's `computed_on` and landscape-status write it."""
    return "; ".join(f"{k}: {n} tiles" for k, n in counts.items())
