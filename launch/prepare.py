"""Create or reopen a run directory: check every input, fix the directions and grid, plan the tiles.

Everything is validated before anything is written, so bad input never touches an existing run. Each input
is read once here: the checkpoint loaded and hashed once, the data loaded once (new runs only), every file
hashed once.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

import landscape
from landscape import checkpoint, data, directions
from landscape.digest import file_digest
from landscape.engine import check_data_fits, check_model, precision_note
from landscape.errors import UserError, first_line
from landscape.grid import Grid
from landscape.hardware import check_device, pick_device
from landscape.spec import instantiate

from jobs import inputs
from jobs.run import RunDir, checkpoint_epoch
from jobs.settings import RUN_FORMAT, ModelSettings, RunSettings, check_tiling, differences, parse
from .config import PATH_KEYS

Log = Callable[[str], None]
Guard = Callable[[RunDir], None]


def build_model(spec: ModelSettings) -> torch.nn.Module:
    """The network `model.*` describes; a factory that fails on these settings is bad input, not a crash."""
    try:
        return instantiate(spec.spec())
    except UserError:
        raise
    except Exception as err:  # a user's factory may raise anything (RuntimeError: negative dimension, ...)
        raise UserError(f"cannot build model {spec.name} from model.*: {first_line(err)}") from err


def _fitted_range(points: np.ndarray, counts: list[int], margin: float = 0.25) -> list[list[float]]:
    """Per-axis range covering the trajectory (and the origin) with a margin, widened by less than a grid step
    so that a grid point falls on the origin: the checkpoint's own loss is on the surface, and its figures."""
    lo, hi = np.minimum(points.min(0), 0), np.maximum(points.max(0), 0)
    pad = margin * np.maximum(hi - lo, 1e-8)
    return [_through_origin(float(a), float(b), n) for a, b, n in zip(lo - pad, hi + pad, counts)]


def _through_origin(lo: float, hi: float, n: int) -> list[float]:
    """[lo', hi'] holding [lo, hi] (lo < 0 < hi) whose n-point grid has the origin as its k-th point."""
    if n < 3:
        return [lo, hi]
    k = min(max(round((n - 1) * -lo / (hi - lo)), 1), n - 2)
    step = max(-lo / k, hi / (n - 1 - k))
    return [-k * step, (n - 1 - k) * step]


def _fit_to(dirs: directions.Directions) -> np.ndarray | None:
    """What an unset grid.range is fitted to: a PCA trajectory, or the marks of a plane that only nears its other
    checkpoints. A plane through the three networks at (0, 0), (1, 0), (0, 1) takes its kind's default range,
    whose grid holds them exactly."""
    kind = dirs.attrs.get("kind")
    if kind == "plane" and not np.allclose(dirs.marks, [[0, 0], [1, 0], [0, 1]], rtol=0, atol=1e-6):
        return dirs.marks
    return dirs.trajectory if kind == "pca" else None


def make_directions(s: RunSettings, model: torch.nn.Module, state: checkpoint.StateDict,
                    start: checkpoint.StateDict | None,
                    points: list[checkpoint.StateDict] | None = None) -> directions.Directions:
    """The run's directions: random (one plane per seed), the line from `start` to the checkpoint, the plane
    through three checkpoints, or PCA."""
    d = s.directions
    names = [n for n, _ in model.named_parameters()]
    buffers = [n for n, _ in model.named_buffers()]
    if d.kind == "random":
        return directions.random_planes(names, [state[n] for n in names], s.grid.dims, d.norm, d.ignore,
                                        d.seeds(s.seed))
    if d.kind == "line":
        return directions.line_direction(names, start, state, buffers)
    if d.kind == "plane":
        return directions.checkpoint_plane(names, state, points, buffers, d.orthogonalize, d.norm, d.ignore)
    paths = inputs.pca_checkpoints(d.checkpoints)
    dirs = directions.pca_directions(paths, state, names, d.ignore, layout=s.checkpoint.layout)
    dirs.trajectory_epochs = np.array([checkpoint_epoch(p) for p in paths])
    return dirs


def _warn_negative_variances(start: checkpoint.StateDict, dirs: directions.Directions, grid: Grid,
                             log: Log) -> None:
    """A line or plane extended past its checkpoints can extrapolate BatchNorm variances below 0: say where (NaN
    there)."""
    coords = grid.x[:, None] if grid.y is None else np.stack([a.ravel() for a in np.meshgrid(grid.x, grid.y)], 1)
    bad = coords[directions.negative_variances(start, [dirs.x_buffers, dirs.y_buffers], coords)]
    if not len(bad):
        return
    where = ", ".join(f"{n} from {lo:g} to {hi:g}" for n, lo, hi in zip("ab", bad.min(0), bad.max(0)))
    log(f"warning: {len(bad)} of {len(coords)} points ({where}) lie where the "
        f"{'line' if grid.y is None else 'plane'} extrapolates some BatchNorm running variance below 0: their "
        "loss will be NaN, not the network's")


def _write_run_yaml(run: RunDir, saved: dict[str, Any]) -> None:
    tmp = run.config_file.with_name("run.yaml.tmp")
    tmp.write_text(yaml.safe_dump(saved, sort_keys=False))
    tmp.replace(run.config_file)


def _files_of(value: Any) -> list[Path]:
    return [Path(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def same_files_as_saved(cfg: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """`cfg` with the saved spelling of each path setting that names the same files (`./R/x.pt` and
    `/abs/R/x.pt`): the same run, not another configuration."""
    out = copy.deepcopy(cfg)
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        new, old = out, saved
        for part in parents:
            new, old = new.get(part, {}), (old or {}).get(part, {})
        a, b = new.get(leaf), (old or {}).get(leaf)
        if a is None or b is None or a == b or isinstance(a, dict):  # `checkpoint`: its path is checked
            continue
        pa, pb = _files_of(a), _files_of(b)
        if len(pa) == len(pb) and all(x.exists() and y.exists() and os.path.samefile(x, y) for x, y in zip(pa, pb)):
            new[leaf] = b
    return out


def run_path(s: RunSettings, key: str) -> Path:
    """run.dir, or a name made of the model, the directions and the key; never a path through a file."""
    path = Path(str(s.run_dir or f"runs/{s.model.name}-{s.directions.kind}-{key[:8]}"))
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"run.dir {path}: {blocker} is a file, not a folder; choose another run.dir")
    return path


def check_device_here(s: RunSettings, workers_here: bool, log: Log) -> None:
    """What parsing cannot know: whether eval.device exists where workers run here, and what it costs there
    (bf16/fp16 on a CPU). On other nodes `auto` is theirs to resolve."""
    check_device(s.device, here=workers_here)
    if workers_here or s.device != "auto":
        note = precision_note(s.precision, pick_device(s.device).type)
        if note:
            log(f"warning: {note}")


def warn_if_node_local(path: Path, log: Log) -> None:
    """Tiles computed on other machines: a run directory under /tmp is very likely node-local."""
    path = path.resolve()
    if str(path).startswith(("/tmp/", "/var/tmp/", "/dev/shm/")) and not os.environ.get("LANDSCAPE_SINGLE_NODE"):
        log(f"warning: {path} looks node-local; compute nodes must see the run directory, the logs and the "
            "Python environment on a shared filesystem (set LANDSCAPE_SINGLE_NODE=1 to silence this)")


def reopen(run: RunDir, s: RunSettings, key: str, digests: dict[str, str], overrides: list[str], cfg: dict,
           dry_run: bool, guard: Guard) -> RunDir:
    """An existing run of the same values on the same inputs; run.yaml refreshed to the new way of running
    (nodes read it), except in a dry run, once `guard` (the driver's checks of the run's state) has passed."""
    if run.key != key:
        diffs, changed = differences(run.settings, s), inputs.changed(run.saved["inputs"], digests)
        if diffs:  # a size read from a data file that changed since (data.num_classes) names the file too
            raise UserError(f"{run.path} holds a run of another configuration ({'; '.join(diffs + changed)}); "
                            "use a new run.dir, or delete the old one to replace it")
        why = changed or ["the engine's arithmetic changed since this run was created (another landscape version)"]
        raise inputs.refusal(run.path, why)
    run.tiles  # noqa: B018 -- reads directions.h5: a broken run fails here, before run.yaml is touched
    changed = inputs.changed_now(run, [run.directions_file])
    if changed:
        raise inputs.refusal(run.path, changed)
    guard(run)
    if run.config != cfg and not dry_run:
        _write_run_yaml(run, {**run.saved, "overrides": overrides, "config": cfg})
        run = RunDir(run.path)
    return run


def _stale(s: RunSettings) -> list[str]:
    """The inputs of the run in run.dir (if one is there) that changed since it was created."""
    run = RunDir(Path(s.run_dir)) if s.run_dir else None
    return inputs.stale(run) if run is not None and run.config_file.is_file() else []


@dataclass(frozen=True)
class Read:
    """The driver's one read of the checkpoints a new run needs: the model at the centre, the line's start, the
    plane's two other checkpoints, and the digest of every input."""

    model: torch.nn.Module
    state: checkpoint.StateDict
    start: checkpoint.StateDict | None
    digests: dict[str, str]
    points: list[checkpoint.StateDict]


def read_inputs(s: RunSettings) -> Read:
    """Every input file found and hashed once, the checkpoint(s) loaded in that same read and fitted to the model."""
    data.ready(s.data.spec())  # an image folder is decoded into its cache here, once
    files = inputs.input_files(s)
    model = build_model(s.model)
    check_model(model)
    layout = s.checkpoint.layout
    state, digest = checkpoint.load_with_digest(s.checkpoint.path, layout)
    state = checkpoint.put_into(model, state, s.checkpoint.path, s.model.name)
    known = {s.checkpoint.path: digest}
    start = None
    if s.directions.kind == "line":
        start, known[s.directions.start] = checkpoint.load_with_digest(s.directions.start, layout)
        checkpoint.check_fits(model, start, s.directions.start, s.model.name)
    points = []
    for path in s.directions.points if s.directions.kind == "plane" else ():
        point, known[path] = checkpoint.load_with_digest(path, layout)
        checkpoint.check_fits(model, point, path, s.model.name)
        points.append(point)
    return Read(model, state, start, inputs.digests(files, {str(Path(k)): v for k, v in known.items()}), points)


def prepare(cfg: dict[str, Any], overrides: list[str], *, workers_here: bool = True, elsewhere: bool = False,
            log: Log = print, scratch: Path | None = None, guard: Guard = lambda run: None) -> RunDir:
    """The run directory for `cfg`: reopened if it holds the same key, else created. `workers_here`,
    `elsewhere`: the backend's capabilities (`launch.backends.Backend`); `guard`: what must hold of an existing
    run before anything is written into it (no other driver, no live array holding its tiles), a UserError if not.

    `scratch` (a dry run): nothing is written into run.dir; a new run is set up in `scratch` instead.
    """
    s = parse(cfg)
    check_device_here(s, workers_here, log)
    try:
        read = read_inputs(s)
    except UserError:  # an input changed under an existing run (a relabelled file): name it, not the symptom
        stale = _stale(s)
        if stale:
            raise inputs.refusal(Path(s.run_dir), stale) from None
        raise
    key = inputs.key(s, read.digests)
    run = RunDir(run_path(s, key))
    if elsewhere:
        warn_if_node_local(run.path, log)
    if run.config_file.is_file():
        cfg = same_files_as_saved(cfg, run.config)
        s = parse(cfg)
        return reopen(run, s, inputs.key(s, read.digests), read.digests, overrides, cfg, dry_run=scratch is not None,
                      guard=guard)
    target = RunDir(scratch) if scratch is not None else run
    t0 = time.perf_counter()
    grid = create(s, cfg, overrides, read, key, target, log)
    log(f"{'dry run of a ' if scratch is not None else ''}new run {run.path}: {s.directions.kind} directions "
        f"({time.perf_counter() - t0:.1f} s), grid {'x'.join(map(str, grid.shape[::-1]))}, "
        f"{len(target.tiles)} tiles")
    return target


def _samples_evaluated(s: RunSettings, name: str, size: int) -> str:
    """How many of a split's samples every value comes from: all, or a seeded subset (approximate values); and
    how many of those the curvature takes (hessian.samples)."""
    used = min(size, s.data.subset or size)
    text = f"{size} samples" if used == size else \
        f"{used} of {size} samples (data.subset={s.data.subset}, seeded: approximate values)"
    h = s.hessian
    if h and h.split == name and h.samples and h.samples < used:
        text += f", curvature over {h.samples} of them (hessian.samples={h.samples})"
    return text


def create(s: RunSettings, cfg: dict[str, Any], overrides: list[str], read: Read, key: str, target: RunDir,
           log: Log) -> Grid:
    """A new run in `target`: the data checked against the model, the directions and grid fixed, run.yaml
    written last (its presence means the run is fully set up); returns the grid."""
    dataset = data.load(s.data.spec())
    for name in s.data.splits:
        split = dataset.split(name)
        log(f"data: {name} split, {_samples_evaluated(s, name, len(split))} of "
            f"{'x'.join(map(str, split.x.shape[1:]))} {str(split.x.dtype).removeprefix('torch.')}, from {split.source}")
        check_data_fits(read.model, split, dataset.num_classes, s.loss, name)
        if s.hessian and s.hessian.split == name and (s.hessian.samples or 0) > len(split):
            raise UserError(f"hessian.samples is {s.hessian.samples} but the {name} split holds {len(split)} "
                            f"samples: give at most {len(split)}, or null for the whole split")
    dirs = make_directions(s, read.model, read.state, read.start, read.points)
    kind = s.directions.kind
    fitted = _fit_to(dirs)
    grid = s.grid.grid(s.grid.default_range(kind))  # every grid setting checked; the points per axis
    if fitted is not None and s.grid.range is None:
        grid = s.grid.grid(_fitted_range(fitted, [len(a) for a in (grid.x, grid.y) if a is not None]))
    if dirs.x_buffers:
        _warn_negative_variances(read.state if kind == "plane" else read.start, dirs, grid, log)
    check_tiling(grid, s.grid.tile, s.planes)
    target.path.mkdir(parents=True, exist_ok=True)
    extra = {"xcoordinates": grid.x} | ({"ycoordinates": grid.y} if grid.y is not None else {})
    directions.save(target.directions_file, dirs, extra)
    if dirs.trajectory is not None:  # Li et al.'s plot_contour_trajectory reads it beside their directions file
        directions.write_projection(target.directions_file, dirs.trajectory)
    direction_digest = file_digest(target.directions_file)
    saved = {"format": RUN_FORMAT, "fingerprint": inputs.fingerprint(key, direction_digest), "key": key,
             "directions": direction_digest, "inputs": read.digests, "overrides": overrides,
             "created": time.strftime("%Y-%m-%d %H:%M:%S"),
             "versions": {"landscape": landscape.__version__, "torch": str(torch.__version__)}, "config": cfg}
    _write_run_yaml(target, saved)
    return grid
