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
from typing import Any, Iterable, Iterator, Mapping

import h5py
import numpy as np

from .errors import UserError, first_line
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
    """Values shaped like the tile, stamped with the run's fingerprint, the tile's index range and `nonfinite`
    (its points whose loss is not finite: landscape-status reports them from attributes alone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_h5(path) as f:
        for key, v in values.items():
            f.create_dataset(key, data=np.asarray(v, dtype=np.float64).reshape(tile.shape))
        f.attrs.update({"fingerprint": fingerprint, "tile": tile.id, "ix0": tile.ix0, "ix1": tile.ix1,
                        "iy0": tile.iy0, "iy1": tile.iy1, "plane": tile.plane,
                        "nonfinite": int(nonfinite(values).sum()), **meta})


@dataclass(frozen=True)
class TileState:
    """What a tile file's header says: `done` (a complete tile of this run) or `why` not; its attributes."""

    done: bool
    why: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class TileValues:
    """A tile's datasets (each shaped like the tile) and its attributes."""

    values: dict[str, np.ndarray]
    meta: dict[str, Any]


def _incomplete(meta: Mapping[str, Any], shapes: Mapping[str, tuple], tile: Tile, fingerprint: str,
                splits: Iterable[str]) -> str:
    """Why a file with these attributes and dataset shapes is no complete tile of this run ("" when it is)."""
    if meta.get("fingerprint") != fingerprint:
        return "written by another configuration"
    if tuple(meta.get(k) for k in ("ix0", "ix1", "iy0", "iy1")) != (tile.ix0, tile.ix1, tile.iy0, tile.iy1) \
            or meta.get("plane", 0) != tile.plane:
        return "index range differs"
    if "nonfinite" not in meta:
        return "no count of non-finite points (written by an older version)"
    if not shapes or any(shape != tile.shape for shape in shapes.values()):
        return "datasets missing or of the wrong shape"
    lost = [s for s in splits if f"{s}_loss" not in shapes]
    return f"dataset {lost[0]}_loss missing" if lost else ""


def tile_state(path: Path, tile: Tile, fingerprint: str, splits: Iterable[str]) -> TileState:
    """Whether `path` is a complete tile of this run, with a loss for each split: from its attributes and
    dataset headers alone (planning and landscape-status open every tile file, and read no values)."""
    if not path.exists():
        return TileState(False, "missing", {})
    try:
        with h5open(path) as f:
            meta = dict(f.attrs)
            shapes = {k: f[k].shape for k in f.keys()}
    except (OSError, KeyError, ValueError) as err:
        return TileState(False, f"unreadable ({first_line(err, 80)})", {})
    why = _incomplete(meta, shapes, tile, fingerprint, splits)
    return TileState(not why, why, meta)


def read_tile(path: Path) -> TileValues:
    """The values of a tile `tile_state` found done (the reducer's one read of them); a UserError naming the
    file where they cannot be read although its header can (a damaged file no resume would recompute)."""
    try:
        with h5open(path) as f:
            return TileValues({k: f[k][()] for k in f.keys()}, dict(f.attrs))
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"tile file {path} has a complete header but unreadable values ({first_line(err, 80)}): "
                        "delete it and run the same command again to recompute that tile") from err


def merge(grid: Grid, tiles: Iterable[Tile], tile_values: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Place tile values into full arrays (NaN where absent) plus the `done` mask; `tiles` of one plane."""
    shape2 = (1, len(grid.x)) if grid.y is None else grid.shape
    done = np.zeros(shape2, dtype=bool)
    arrays: dict[str, np.ndarray] = {}
    for tile in tiles:
        values = tile_values.get(tile.id)
        if values is None:
            continue
        box = (slice(tile.iy0, tile.iy1), slice(tile.ix0, tile.ix1))
        for key, v in values.items():
            arrays.setdefault(key, np.full(shape2, np.nan))[box] = v
        done[box] = True
    out = {k: v.reshape(grid.shape) for k, v in arrays.items()}
    out["done"] = done.reshape(grid.shape)
    return out


def write_surface(path: Path, grid: Grid, arrays: Mapping[str, np.ndarray], dir_file: str,
                  attrs: Mapping[str, Any], extra: Mapping[str, np.ndarray] | None = None,
                  extra_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """The merged surface: Li et al.'s root datasets plus `done`, our metadata in attributes; `extra` datasets
    (a `/` in a name makes groups) with `extra_attrs` on them."""
    with atomic_h5(path) as f:
        f.create_dataset("xcoordinates", data=grid.x.astype(np.float64))
        if grid.y is not None:
            f.create_dataset("ycoordinates", data=grid.y.astype(np.float64))
        for key, v in arrays.items():
            f.create_dataset(key, data=v if key == "done" else v.astype(np.float64))
        for key, v in (extra or {}).items():
            f.create_dataset(key, data=v)
        for key, a in (extra_attrs or {}).items():
            f[key].attrs.update(dict(a))
        f["dir_file"] = dir_file
        f.attrs["points_done"] = int(arrays["done"].sum())
        f.attrs["points_nonfinite"] = int((arrays["done"] & nonfinite(arrays)).sum())
        f.attrs.update(dict(attrs))


def nonfinite(values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Where any split's loss (train or test) is inf or NaN: a diverged region, flagged and reported."""
    return ~np.logical_and.reduce([np.isfinite(v) for k, v in values.items() if k.endswith("_loss")])


def provenance(metas: list[Mapping[str, Any]]) -> dict[str, int]:
    """Tiles per `device (engine N)`: fp32 values are bitwise reproducible within one of these only. On a CPU,
    curvature tiles also name their thread count: it splits the Hessian's backward reductions (not the loss's)."""
    def made_by(m: Mapping[str, Any]) -> str:
        threads = "hessian_points" in m and "threads" in m and str(m.get("device")) == "cpu"
        return (f"{m.get('engine_device_name', m.get('device', '?'))} (engine {int(m.get('engine_version', 1))}"
                + (f", {int(m['threads'])} threads)" if threads else ")"))
    return dict(sorted(Counter(made_by(m) for m in metas).items()))


def tile_counts(counts: Mapping[str, int]) -> str:
    """`a: 3 tiles; b: 1 tiles`, as the surface's `computed_on` and landscape-status write it."""
    return "; ".join(f"{k}: {n} tiles" for k, n in counts.items())
