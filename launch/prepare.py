"""Create or reopen a run directory: check every input, fix the directions and grid, plan the tiles.

Everything is validated before anything is written, so bad input never touches an existing run.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import landscape
from landscape import checkpoint, data, directions
from landscape.errors import UserError, whole_number
from landscape.evaluate import check_options
from landscape.grid import make_grid, make_tiles
from landscape.spec import instantiate
from landscape.sums import check_fits

from jobs.run import RunDir, checkpoint_epoch
from jobs.tile import engine_options
from . import config

DEFAULT_RANGE = {"random": [-1.0, 1.0], "line": [0.0, 1.0]}  # line: past a=1 BN variances extrapolate below 0


def pca_checkpoints(spec: Any) -> list[Path]:
    """A folder of `epoch_*.pt` files in epoch order, or an explicit list."""
    if isinstance(spec, (list, tuple)):
        paths = [Path(p) for p in spec]
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise UserError(f"directions.checkpoints {folder} is not a folder of epoch_*.pt checkpoints")
        paths = sorted(folder.glob("epoch_*.pt"), key=checkpoint_epoch)
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise UserError(f"checkpoint {absent[0]} does not exist")
    if len(paths) < 3:
        raise UserError(f"PCA directions need at least 3 checkpoints, got {len(paths)} from {spec}: save one "
                        "per epoch (landscape-train does) and point directions.checkpoints at that folder")
    return paths


def input_files(cfg: dict[str, Any]) -> list[Path]:
    """Every checkpoint whose contents decide the surface's values."""
    d = cfg["directions"]
    files = [Path(cfg["checkpoint"])]
    if d["kind"] == "line":
        files.append(Path(d["start"]))
    elif d["kind"] == "pca":
        files += pca_checkpoints(d["checkpoints"])
    elif d["kind"] != "random":
        raise UserError(f"directions '{d['kind']}' is unknown: use random, pca or line")
    return files


def _fitted_range(points: np.ndarray, margin: float = 0.25) -> list[list[float]]:
    """Per-axis range covering the trajectory (and the origin) with a margin."""
    lo, hi = np.minimum(points.min(0), 0), np.maximum(points.max(0), 0)
    pad = margin * np.maximum(hi - lo, 1e-8)
    return [[float(a), float(b)] for a, b in zip(lo - pad, hi + pad)]


def make_directions(cfg: dict[str, Any], model: torch.nn.Module, state: checkpoint.StateDict,
                    dims: int) -> directions.Directions:
    """The run's directions from `directions.*`: random (seeded), the line between two checkpoints, or PCA."""
    d = cfg["directions"]
    names = [n for n, _ in model.named_parameters()]
    weights = [state[n] for n in names]
    if d["kind"] == "random":
        return directions.random_directions(names, weights, dims, d["norm"], d["ignore"], cfg["seed"])
    if d["kind"] == "line":
        start_model = build_model(cfg["model"])
        start = checkpoint.load_into(start_model, d["start"], cfg["model"].get("name", "model"))
        buffers = [n for n, _ in model.named_buffers()]
        return directions.line_direction(names, start, state, buffers)
    paths = pca_checkpoints(d["checkpoints"])
    dirs = directions.pca_directions(paths, state, names, d["ignore"])
    dirs.trajectory_epochs = np.array([checkpoint_epoch(p) for p in paths])
    return dirs


def _write_run_yaml(run: RunDir, saved: dict[str, Any]) -> None:
    tmp = run.config_file.with_name("run.yaml.tmp")
    tmp.write_text(yaml.safe_dump(saved, sort_keys=False))
    tmp.replace(run.config_file)


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    """The network `model.*` describes; a factory that fails on these settings is bad input, not a crash."""
    try:
        return instantiate(spec)
    except UserError:
        raise
    except Exception as err:  # a user's factory may raise anything (RuntimeError: negative dimension, ...)
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot build model {spec.get('name', spec.get('_target_'))} from model.*: {first}") from err


def grid_dims(cfg: dict[str, Any]) -> int:
    """grid.dims, or the directions' own: a line is a 1D curve, the others a 2D plane."""
    kind, dims = cfg["directions"]["kind"], cfg["grid"]["dims"]
    dims = (1 if kind == "line" else 2) if dims is None else dims
    if kind == "line" and dims != 1:
        raise UserError("directions=line gives a 1D curve: leave grid.dims unset or set it to 1")
    if kind == "pca" and dims != 2:
        raise UserError("directions=pca gives a 2D plane: leave grid.dims unset or set it to 2")
    return dims


def check_settings(cfg: dict[str, Any]) -> int:
    """The cheap checks, before any file is read: grid, seed, engine options; returns the grid's dims."""
    g, dims = cfg["grid"], grid_dims(cfg)
    range_ = DEFAULT_RANGE.get(cfg["directions"]["kind"], [-1.0, 1.0]) if g["range"] is None else g["range"]
    make_tiles(make_grid(dims, g["resolution"], range_), g["tile"])  # pca's fitted range comes later
    whole_number(cfg["seed"], "seed", 0)
    check_options(**engine_options(cfg))
    return dims


def run_path(cfg: dict[str, Any], fingerprint: str) -> Path:
    """run.dir, or a name made of the model, the directions and the fingerprint; never a path through a file."""
    name = cfg["model"].get("name", "model")
    path = Path(str(cfg["run"]["dir"] or f"runs/{name}-{cfg['directions']['kind']}-{fingerprint[:8]}"))
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"run.dir {path}: {blocker} is a file, not a folder; choose another run.dir")
    return path


def _reopen(run: RunDir, cfg: dict[str, Any], fp: str, overrides: list[str], dry_run: bool) -> RunDir:
    """An existing run of the same values; its run.yaml is refreshed to the new way of running, except in a dry run."""
    if run.fingerprint != fp:
        diffs = config.differences(run.config, cfg) or ["the checkpoint files' contents changed"]
        raise UserError(f"{run.path} holds a run of another configuration ({'; '.join(diffs)}); "
                        "use a new run.dir, or delete the old one to replace it")
    run.tiles  # noqa: B018 -- reads directions.h5: a broken run fails here, before run.yaml is touched
    if run.config != cfg and not dry_run:  # same values, new way of running (device, launcher): nodes read run.yaml
        _write_run_yaml(run, {**run.saved, "overrides": overrides, "config": cfg})
        run = RunDir(run.path)
    return run


def prepare(cfg: dict[str, Any], overrides: list[str], log=print, scratch: Path | None = None) -> RunDir:
    """The run directory for `cfg`: reopened if it holds the same fingerprint, else created.

    `scratch` (a dry run): nothing is written into run.dir; a new run is set up in `scratch` instead.
    """
    kind = cfg["directions"]["kind"]
    dims = check_settings(cfg)
    files = input_files(cfg)
    model = build_model(cfg["model"])
    state = checkpoint.load_into(model, cfg["checkpoint"], cfg["model"].get("name", "model"))
    fp = config.fingerprint(cfg, files)
    run = RunDir(run_path(cfg, fp))
    if run.config_file.is_file():
        return _reopen(run, cfg, fp, overrides, dry_run=scratch is not None)
    dataset = data.load(cfg["data"])
    split = cfg["data"]["split"]
    check_fits(model, dataset.split("train" if split == "both" else split), dataset.num_classes)
    t0 = time.perf_counter()
    dirs = make_directions(cfg, model, state, dims)
    range_ = cfg["grid"]["range"]
    if range_ is None:
        range_ = _fitted_range(dirs.trajectory) if kind == "pca" else DEFAULT_RANGE.get(kind, [-1.0, 1.0])
    grid = make_grid(dims, cfg["grid"]["resolution"], range_)
    tiles = make_tiles(grid, cfg["grid"]["tile"])
    extra = {"xcoordinates": grid.x} | ({"ycoordinates": grid.y} if grid.y is not None else {})
    target = RunDir(scratch) if scratch is not None else run
    target.path.mkdir(parents=True, exist_ok=True)
    directions.save(target.directions_file, dirs, extra)
    saved = {"fingerprint": fp, "overrides": overrides, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
             "versions": {"landscape": landscape.__version__, "torch": str(torch.__version__)},
             "config": cfg}
    _write_run_yaml(target, saved)  # last: its presence means the run is fully set up
    log(f"{'dry run of a ' if scratch is not None else ''}new run {run.path}: {kind} directions "
        f"({time.perf_counter() - t0:.1f} s), grid {'x'.join(map(str, grid.shape[::-1]))}, {len(tiles)} tiles")
    return target
