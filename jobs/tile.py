"""Evaluate tiles of a run and write one file per tile: `python -m jobs.tile RUN_DIR --tiles 0,1,2`.

A worker loads the model, checkpoint, directions and data once, then takes tile ids from any
iterable (a fixed list for array tasks, a queue for local workers, rank 0 for MPI).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from landscape import checkpoint, data, surface
from landscape.engine import Evaluator
from landscape.engine.curvature import Hessian, chosen_params
from landscape.errors import UserError
from landscape.hardware import pick_device, set_cpu_threads
from landscape.spec import instantiate

from . import inputs
from .run import RunDir


@dataclass
class Worker:
    """A worker's engine, what every tile it writes records about its inputs, and the plane it is on."""

    evaluator: Evaluator
    meta: dict[str, Any]
    run: RunDir
    names: list[str]
    plane: int = 0

    def on_plane(self, plane: int) -> Evaluator:
        """The engine, moved to random plane `plane` (directions.planes) if it is on another one."""
        if plane != self.plane:
            self.evaluator.set_directions(self.run.load_directions(self.names, plane=plane))
            self.plane = plane
        return self.evaluator


def build_worker(run: RunDir, device: torch.device | None = None, cache_dir: Path | None = None) -> Worker:
    """Everything a worker needs, each read once: model at the origin, directions, data on the device.

    The files read are first checked against the digests the run recorded: a task that starts after an input
    changed (a queued array task) computes nothing. The engine's choices are cached in `cache_dir` (default
    RUN_DIR/cache; a dry run keeps them out of the run)."""
    s = run.settings
    model = instantiate(s.model.spec())
    origin, digest = checkpoint.load_with_digest(s.origin, s.checkpoint.layout)  # loaded and hashed in one read
    inputs.check_unchanged(run, known={str(Path(s.origin)): digest})
    origin = checkpoint.put_into(model, origin, s.origin, s.model.name)
    names = [n for n, _ in model.named_parameters()]
    dataset = data.load(s.data.spec())
    splits = {name: dataset.split(name) for name in s.data.splits}
    meta = {"subset_leaves_out": data.subset_leaves_out(splits, s.data.subset)}  # the reducer marks it approximate
    if s.data.subset:  # quick look: a fixed seeded subset
        splits = {name: data.subset(v, s.data.subset, s.seed) for name, v in splits.items()}
    dirs = run.load_directions(names)
    metrics = [Hessian(s.hessian, s.loss, dataset.num_classes > 0, chosen_params(s.hessian, names, dirs), s.seed)] \
        if s.hessian else []
    evaluator = Evaluator(model, origin, dirs, splits, dataset.num_classes, loss=s.loss,
                          precision=s.precision, device=device or pick_device(s.device),
                          cache_dir=cache_dir or run.path / "cache", options=s.engine, metrics=metrics,
                          bn_split=dataset.split("train") if s.engine.bn == "recalibrate" else None)
    return Worker(evaluator, meta, run, names)


def _terminate_cleanly(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the tile writer, which deletes its temporary file


def run_tiles(run_dir: str, tile_ids: Iterable[int], device: torch.device | None = None,
              on_done: Callable[[int, float], None] | None = None) -> list[int]:
    """Evaluate each tile not yet done and write its file; returns the ids computed here."""
    signal.signal(signal.SIGTERM, _terminate_cleanly)
    set_cpu_threads()
    run = RunDir(run_dir)
    worker = None
    computed = []
    for tile_id in tile_ids:
        tile = run.tiles[tile_id]
        if run.tile_state(tile).done:  # a requeued or duplicate task: already done
            continue
        worker = worker or build_worker(run, device)
        with surface.in_progress(run.tile_file(tile)):  # landscape-status: running, whatever the backend
            t0 = time.perf_counter()
            values = worker.on_plane(tile.plane).evaluate(tile.coords(run.grid))
            elapsed = time.perf_counter() - t0
            meta = {"seconds": elapsed, "host": socket.gethostname(), "pid": os.getpid(),
                    "torch": str(torch.__version__), "device": str(worker.evaluator.device), "points": tile.npoints,
                    "threads": torch.get_num_threads(), "finished": time.time(), **worker.meta,
                    **worker.evaluator.meta()}  # engine choices; precision_check for bf16/fp16
            surface.write_tile(run.tile_file(tile), tile, run.fingerprint, values, meta)
        computed.append(tile_id)
        if on_done:
            on_done(tile_id, elapsed)
    return computed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--tiles", required=True, help="comma-separated tile ids")
    args = parser.parse_args(argv)
    try:
        done = run_tiles(args.run_dir, [int(t) for t in args.tiles.split(",") if t])
    except UserError as err:  # a refusal (changed inputs, a broken run) is one line in the job's log
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"computed {len(done)} tiles: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
