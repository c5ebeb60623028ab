"""Every file whose contents decide a run's values, and the fingerprint over them and the settings.

The driver hashes each input once when it creates or reopens a run; `run.yaml` records the digests
(`inputs`, path -> digest) and the digest of `directions.h5`. The fingerprint, which every tile carries, covers
the value-changing settings, those digests, the directions' digest and the engine's arithmetic version, so
nothing that changes a value can slip in unseen. Workers check the files they read against the record.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from landscape import data, directions
from landscape.digest import file_digest
from landscape.engine import ENGINE_VERSION
from landscape.errors import UserError

from .run import RunDir
from .settings import RUN_FORMAT, RunSettings, value_items


def pca_checkpoints(spec: object) -> list[Path]:
    """An explicit list of files, or a pattern (`traj/step_*.pt`; a folder means its `epoch_*.pt`) whose
    files are taken in natural order (step_2 before step_10); at least 3 of them."""
    if isinstance(spec, (list, tuple)):
        paths = [Path(p) for p in spec]
        source: object = spec
    else:
        folder = Path(str(spec)).is_dir()
        pattern = str(Path(glob.escape(str(spec))) / "epoch_*.pt") if folder else str(spec)
        if not glob.has_magic(pattern):
            raise UserError(f"directions.checkpoints {spec} is neither a folder nor a pattern such as "
                            "'traj/step_*.pt' (nor a list of files)")
        paths = sorted((Path(p) for p in glob.glob(pattern)), key=natural_order)
        source = f"the pattern {pattern}"
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise UserError(not_a_file("checkpoint", absent[0]))
    directions.check_trajectory(paths, source)
    return paths


def natural_order(path: Path) -> list:
    """A path's digits compared as numbers: `ckpt-900.pt` before `ckpt-1000.pt`."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(path))]


def input_files(settings: RunSettings) -> list[Path]:
    """The checkpoints, data files and model source a run's values depend on, in a fixed order."""
    d = settings.directions
    files = [Path(settings.checkpoint.path)]
    if d.kind == "line":
        files.append(Path(d.start))
    elif d.kind == "pca":
        files += pca_checkpoints(d.checkpoints)
    elif d.kind == "plane":
        files += [Path(p) for p in d.points]
    data_files = data.files(settings.data.spec())
    files += data_files + settings.model.source_files()
    absent = [p for p in files if not p.is_file()]
    if absent:
        raise UserError(not_a_file("data file" if absent[0] in data_files else "checkpoint", absent[0]))
    return files


def not_a_file(what: str, path: Path) -> str:
    """`checkpoint P is a directory, not a file` or `... does not exist`: what is wrong with a given path."""
    return f"{what} {path} " + ("is a directory, not a file" if path.is_dir() else "does not exist")


def digests(files: list[Path], known: Mapping[str, str]) -> dict[str, str]:
    """path -> content digest, in the order of `files`; each file read once, none of those `known` already."""
    return {str(p): known[str(p)] if str(p) in known else file_digest(p) for p in files}


def key(settings: RunSettings, inputs: Mapping[str, str]) -> str:
    """The settings, the inputs' contents (not their spelling), the engine and the run format: what a run
    directory is found by, before its directions exist."""
    payload = {"settings": value_items(settings), "inputs": list(inputs.values()), "engine": ENGINE_VERSION,
               "format": RUN_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(run_key: str, directions_digest: str) -> str:
    """What every tile carries: the run's key and the contents of its directions file."""
    return hashlib.sha256(f"{run_key}:{directions_digest}".encode()).hexdigest()


def changed(recorded: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """Which inputs differ from those a run recorded (compared as real paths), in words."""
    real = lambda d: {os.path.realpath(p): (p, h) for p, h in d.items()}  # noqa: E731
    old, new = real(recorded), real(now)
    out = [_changed(p, old[k][1], h) for k, (p, h) in new.items() if k in old and old[k][1] != h]
    out += [f"{p} is new" for k, (p, _) in new.items() if k not in old]
    out += [f"{p} is no longer read" for k, (p, _) in old.items() if k not in new]
    return out


def refusal(run_path: Path, changes: list[str]) -> UserError:
    """The one line that refuses to add tiles to a run whose inputs changed."""
    return UserError(f"{'; '.join(changes)}: the run's tiles were computed on the old contents; use a new run.dir, "
                     f"or delete {run_path} to replace it")


def changed_now(run: RunDir, files: list[Path], known: Mapping[str, str] | None = None,
                data_files: Sequence[Path] = ()) -> list[str]:
    """Which of `files` differ now from the digests the run recorded (`known`: digests already computed while
    reading), in words; files the run did not record are not compared, but for `data_files`: an image folder's
    cache is named by its images, so a changed image means a cache the run never read."""
    recorded = {**run.saved["inputs"], str(run.directions_file): run.saved["directions"]}
    now = {str(p): (known or {}).get(str(p)) or (file_digest(p) if p.is_file() else "<missing>")
           for p in files if str(p) in recorded}
    new = [f"{p} is new (the data changed since this run was created)" for p in data_files if str(p) not in recorded]
    return changed({p: recorded[p] for p in now}, now) + new


def _worker_changes(run: RunDir, known: Mapping[str, str] | None = None) -> list[str]:
    """changed_now over the inputs a worker reads: the checkpoint at the origin, the data files (listed once: an
    image folder's are found by listing its images), the model's sources and the directions file (not a PCA
    trajectory: the directions hold it)."""
    s = run.settings
    data_files = data.files(s.data.spec())
    reads = [Path(s.origin), *data_files, *s.model.source_files(), run.directions_file]
    return changed_now(run, reads, known, data_files)


def stale(run: RunDir) -> list[str]:
    """What `landscape-status` says of a run whose inputs changed: the files a worker would read (the PCA
    trajectory is not hashed again here, at every status; the driver checks it on resume)."""
    return _worker_changes(run)


def check_unchanged(run: RunDir, known: Mapping[str, str]) -> None:
    """A worker computes nothing on inputs that changed since the run recorded them (a queued array task)."""
    changes = _worker_changes(run, known)
    if changes:
        raise UserError(f"{changes[0]}: this worker computes nothing (tiles of other inputs would mix into the "
                        "run); restore it, or start a new run.dir")


def _changed(path: str | Path, old: str, new: str) -> str:
    return f"{path} changed since this run was created ({_short(old)} then, {_short(new)} now)"


def _short(digest: str) -> str:
    return digest if digest.startswith(("size=", "<")) else f"sha256 {digest[:12]}"
