"""Evaluate tiles of a run and write one file per tile: `python -m jobs.tile RUN_DIR --tiles 0,1,2`.

A worker loads the model, checkpoint, directions and data once, then takes tile ids from any
iterable (a fixed list for array tasks, a queue for local workers, rank 0 for MPI).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from landscape import checkpoint, data, digest, surface
from landscape.errors import UserError
from landscape.engine import EngineOptions, Evaluator
from landscape.hardware import tune_cpu_malloc
from landscape.spec import instantiate

from .run import RunDir


def pick_device(requested: str = "auto") -> torch.device:
    """`auto`: the first visible GPU (the launcher sets CUDA_VISIBLE_DEVICES per worker), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def devices_here() -> list[str]:
    """The devices this machine offers torch: cpu, then each visible GPU (and mps on a Mac)."""
    mps = getattr(torch.backends, "mps", None)
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] + (
        ["mps"] if mps is not None and mps.is_available() else [])


def check_device(requested: str, here: bool = True) -> None:
    """`eval.device` names a torch device and, where workers run on this machine (`here`), one it has.

    Checked by the driver before a run is written: a worker would otherwise fail with a traceback.
    """
    if requested == "auto":
        return
    try:
        device = torch.device(str(requested))
    except (RuntimeError, TypeError) as err:
        raise UserError(f"eval.device '{requested}' is not a device: use auto, cpu, cuda or cuda:N "
                        f"(this machine has {', '.join(devices_here())})") from err
    have = devices_here()
    name = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
    if here and name not in have:
        raise UserError(f"eval.device '{requested}' is not available: this machine has {', '.join(have)}; "
                        "use eval.device=auto or one of those")


def set_cpu_threads() -> int:
    """Use the CPUs the scheduler granted (Slurm/PBS/launcher), not every core of the node.

    Also keeps freed memory in the process (glibc mallopt): large activations are otherwise
    unmapped and page-faulted back on every batch (2x on a ResNet-20 CPU forward, BENCHMARKS.md).
    """
    tune_cpu_malloc()
    for var in ("LANDSCAPE_THREADS", "SLURM_CPUS_PER_TASK", "NCPUS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            torch.set_num_threads(max(1, int(os.environ[var])))
            break
    return torch.get_num_threads()


def build_evaluator(run: RunDir, device: torch.device | None = None, cache_dir: Path | None = None) -> Evaluator:
    """Everything a worker needs, loaded once: model at the origin, directions, data on the device.

    The engine's choices are cached in `cache_dir` (default RUN_DIR/cache; a dry run keeps them out of the run)."""
    cfg = run.config
    device = device or pick_device(cfg["eval"]["device"])
    model = instantiate(cfg["model"])
    origin_file = cfg["directions"]["start"] if cfg["directions"]["kind"] == "line" else cfg["checkpoint"]
    origin = checkpoint.load_into(model, origin_file, cfg["model"].get("name", "model"))
    names = [n for n, _ in model.named_parameters()]
    gone = digest.changed(run.saved.get("data_files") or {})
    if gone:  # changed after the driver checked it (a queued array task): never mix other data into the run
        raise UserError(f"data file {gone[0]} changed since this run was created: this worker computes nothing; "
                        f"restore it, or start a new run.dir")
    dataset = data.load(cfg["data"])
    split = cfg["data"]["split"]
    splits = {s: dataset.split(s) for s in data.split_names(split)}
    if cfg["data"].get("subset"):  # quick look: a fixed seeded subset, marked approximate by the reducer
        splits = {s: data.subset(v, int(cfg["data"]["subset"]), cfg.get("seed", 0)) for s, v in splits.items()}
    return Evaluator(model, origin, run.load_directions(names), splits, dataset.num_classes, cfg["loss"],
                     cfg["precision"], device=device, cache_dir=cache_dir or run.path / "cache",
                     options=engine_options(cfg))


def engine_options(cfg: dict) -> EngineOptions:
    """The engine's settings from a run's config: `eval.*` less the device."""
    return EngineOptions.parse({k: v for k, v in cfg["eval"].items() if k != "device"})


def _terminate_cleanly(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the tile writer, which deletes its temporary file


def run_tiles(run_dir: str, tile_ids: Iterable[int], device: torch.device | None = None,
              on_done: Callable[[int, float], None] | None = None) -> list[int]:
    """Evaluate each tile not yet done and write its file; returns the ids computed here."""
    signal.signal(signal.SIGTERM, _terminate_cleanly)
    set_cpu_threads()
    run = RunDir(run_dir)
    evaluator = None
    computed = []
    for tile_id in tile_ids:
        tile = run.tiles[tile_id]
        if run.read_tile(tile)[0] is not None:  # a requeued or duplicate task: already done
            continue
        evaluator = evaluator or build_evaluator(run, device)
        with surface.in_progress(run.tile_file(tile)):  # landscape-status: running, whatever the backend
            t0 = time.perf_counter()
            values = evaluator.evaluate(tile.coords(run.grid))
            elapsed = time.perf_counter() - t0
            meta = {"seconds": elapsed, "host": socket.gethostname(), "pid": os.getpid(),
                    "torch": str(torch.__version__), "device": str(evaluator.device), "points": tile.npoints,
                    "finished": time.time(),
                    **evaluator.meta()}  # engine choices; precision_check for bf16/fp16
            surface.write_tile(run.tile_file(tile), tile, run.fingerprint, values, meta)
        computed.append(tile_id)
        if on_done:
            on_done(tile_id, elapsed)
    return computed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--tiles", required=True, help="comma-separated tile ids")
    args = parser.parse_args(argv)
    done = run_tiles(args.run_dir, [int(t) for t in args.tiles.split(",") if t])
    print(f"computed {len(done)} tiles: {done}")


if __name__ == "__main__":
    main()
