"""Create or reopen a run directory: check every input, fix the directions and grid, plan the tiles.

Everything is validated before anything is written, so bad input never touches an existing run.
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import landscape
from landscape import checkpoint, data, directions
from landscape.digest import file_digest
from landscape.errors import UserError, first_line, whole_number
from landscape.engine import check_data_fits, check_loss, check_precision
from landscape.grid import make_grid, make_tiles
from landscape.spec import instantiate

from jobs.run import RunDir, checkpoint_epoch
from jobs.tile import check_device, engine_options
from . import config
from .cli import PATH_KEYS

WORKERS_HERE = ("local", "mpi")  # launchers whose workers run on this machine: eval.device must exist here
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


def _warn_negative_variances(cfg: dict[str, Any], dirs: directions.Directions, xs: np.ndarray, log) -> None:
    """A line extended past its ends can extrapolate BatchNorm variances below 0: say where (NaN there)."""
    bad = directions.negative_variances(checkpoint.load_state(cfg["directions"]["start"]), dirs.x_buffers or {}, xs)
    if len(bad):
        log(f"warning: {len(bad)} of {len(xs)} points (a from {bad.min():g} to {bad.max():g}) lie where the line "
            "extrapolates some BatchNorm running variance below 0: their loss will be NaN, not the network's")


def _write_run_yaml(run: RunDir, saved: dict[str, Any]) -> None:
    tmp = run.config_file.with_name("run.yaml.tmp")
    tmp.write_text(yaml.safe_dump(saved, sort_keys=False))
    tmp.replace(run.config_file)


def data_digests(spec: dict[str, Any]) -> dict[str, str]:
    """sha256 of each file the data are read from (none for digits or synthetic): run.yaml's `data_files`.

    Kept out of the fingerprint, which tiles carry, so runs made before this record still resume."""
    absent = [str(p) for p in data.files(spec) if not p.is_file()]
    if absent:
        raise UserError(f"data file {absent[0]} does not exist")
    return {str(p): file_digest(p) for p in data.files(spec)}


def _short(digest: str) -> str:
    return digest if digest.startswith("size=") else f"sha256 {digest[:12]}"


def check_data_unchanged(run: RunDir, digests: dict[str, str]) -> None:
    """Refuse to add tiles computed on other data than the run's (one line naming the file)."""
    for path, old in (run.saved.get("data_files") or {}).items():
        new = digests.get(path, "<not read now>")
        if new != old:
            raise UserError(f"data file {path} changed since this run was created ({_short(old)} then, "
                            f"{_short(new)} now): its tiles were computed on the old contents; use a new run.dir, "
                            f"or delete {run.path} to replace it")


def check_data(cfg: dict[str, Any], model: torch.nn.Module) -> None:
    """Load the data and put two samples of every split the run evaluates through the model and the loss."""
    dataset = data.load(cfg["data"])
    for name in data.split_names(cfg["data"]["split"]):
        check_data_fits(model, dataset.split(name), dataset.num_classes, cfg["loss"], name)


def _files_of(value: Any) -> list[Path]:
    return [Path(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def same_files_as_saved(cfg: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """`cfg` with the saved spelling of each path setting that names the same files (`./R/x.pt`, `/abs/R/x.pt`
    or, for a run made before paths were saved absolute, `R/x.pt`): the same run, not another configuration."""
    out = copy.deepcopy(cfg)
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        new, old = out, saved
        for part in parents:
            new, old = new.get(part, {}), (old or {}).get(part, {})
        a, b = new.get(leaf), (old or {}).get(leaf)
        if a is None or b is None or a == b:
            continue
        pa, pb = _files_of(a), _files_of(b)
        if len(pa) == len(pb) and all(x.exists() and y.exists() and os.path.samefile(x, y) for x, y in zip(pa, pb)):
            new[leaf] = b
    return out


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    """The network `model.*` describes; a factory that fails on these settings is bad input, not a crash."""
    try:
        return instantiate(spec)
    except UserError:
        raise
    except Exception as err:  # a user's factory may raise anything (RuntimeError: negative dimension, ...)
        raise UserError(f"cannot build model {spec.get('name', spec.get('_target_'))} from model.*: "
                        f"{first_line(err)}") from err


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
    """The cheap checks, before any file is read: grid, seed, engine options, device, subset; returns the dims."""
    g, dims = cfg["grid"], grid_dims(cfg)
    range_ = DEFAULT_RANGE.get(cfg["directions"]["kind"], [-1.0, 1.0]) if g["range"] is None else g["range"]
    make_tiles(make_grid(dims, g["resolution"], range_), g["tile"])  # pca's fitted range comes later
    whole_number(cfg["seed"], "seed", 0)
    engine_options(cfg)
    check_loss(cfg["loss"])
    check_precision(cfg["precision"])
    check_device(cfg["eval"]["device"], here=cfg["launcher"]["name"] in WORKERS_HERE)
    data.check_subset(cfg["data"].get("subset"))
    return dims


def run_path(cfg: dict[str, Any], fingerprint: str) -> Path:
    """run.dir, or a name made of the model, the directions and the fingerprint; never a path through a file."""
    name = cfg["model"].get("name", "model")
    path = Path(str(cfg["run"]["dir"] or f"runs/{name}-{cfg['directions']['kind']}-{fingerprint[:8]}"))
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"run.dir {path}: {blocker} is a file, not a folder; choose another run.dir")
    return path


def changed_inputs(recorded: dict[str, str] | None, inputs: dict[str, str]) -> list[str]:
    """Which checkpoints differ from those a run recorded (compared as real paths), in words."""
    if recorded is None:  # a run made before inputs were recorded
        return ["the checkpoint files' contents changed"]
    real = lambda d: {os.path.realpath(p): (p, h) for p, h in d.items()}  # noqa: E731
    old, new = real(recorded), real(inputs)
    out = [f"{p} changed" for k, (p, h) in new.items() if k in old and old[k][1] != h]
    out += [f"{p} is new" for k, (p, _) in new.items() if k not in old]
    out += [f"{p} is no longer read" for k, (p, _) in old.items() if k not in new]
    return out or ["the checkpoint files' contents changed"]


def reopen(run: RunDir, cfg: dict[str, Any], fp: str, overrides: list[str], inputs: dict[str, str],
           dry_run: bool = False) -> RunDir:
    """An existing run of the same values on the same data; run.yaml refreshed to the new way of running
    (nodes read it), except in a dry run."""
    if run.fingerprint != fp:
        diffs = config.differences(run.config, cfg) or changed_inputs(run.saved.get("inputs"), inputs)
        raise UserError(f"{run.path} holds a run of another configuration ({'; '.join(diffs)}); "
                        "use a new run.dir, or delete the old one to replace it")
    run.tiles  # noqa: B018 -- reads directions.h5: a broken run fails here, before run.yaml is touched
    digests = data_digests(cfg["data"])
    check_data_unchanged(run, digests)
    update = {} if run.config == cfg else {"overrides": overrides, "config": cfg}
    if "data_files" not in run.saved:  # made by a version that did not record them: from now on checked
        update["data_files"] = digests
    if "inputs" not in run.saved:
        update["inputs"] = inputs
    if update and not dry_run:
        _write_run_yaml(run, {**run.saved, **update})
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
    hashes = [file_digest(p) for p in files]
    inputs = dict(zip(map(str, files), hashes))  # recorded: a later mismatch names the file
    fp = config.fingerprint(cfg, files, hashes)
    run = RunDir(run_path(cfg, fp))
    if run.config_file.is_file():
        cfg = same_files_as_saved(cfg, run.config)
        return reopen(run, cfg, config.fingerprint(cfg, files, hashes), overrides, inputs, dry_run=scratch is not None)
    check_data(cfg, model)
    digests = data_digests(cfg["data"])
    t0 = time.perf_counter()
    dirs = make_directions(cfg, model, state, dims)
    range_ = cfg["grid"]["range"]
    if range_ is None:
        range_ = _fitted_range(dirs.trajectory) if kind == "pca" else DEFAULT_RANGE.get(kind, [-1.0, 1.0])
    grid = make_grid(dims, cfg["grid"]["resolution"], range_)
    if kind == "line":
        _warn_negative_variances(cfg, dirs, grid.x, log)
    tiles = make_tiles(grid, cfg["grid"]["tile"])
    extra = {"xcoordinates": grid.x} | ({"ycoordinates": grid.y} if grid.y is not None else {})
    target = RunDir(scratch) if scratch is not None else run
    target.path.mkdir(parents=True, exist_ok=True)
    directions.save(target.directions_file, dirs, extra)
    saved = {"fingerprint": fp, "overrides": overrides, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
             "versions": {"landscape": landscape.__version__, "torch": str(torch.__version__)},
             "inputs": inputs, "data_files": digests, "config": cfg}
    _write_run_yaml(target, saved)  # last: its presence means the run is fully set up
    log(f"{'dry run of a ' if scratch is not None else ''}new run {run.path}: {kind} directions "
        f"({time.perf_counter() - t0:.1f} s), grid {'x'.join(map(str, grid.shape[::-1]))}, {len(tiles)} tiles")
    return target
