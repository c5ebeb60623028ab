"""`landscape-surface key=value ...`: plan a surface into tiles, run the missing ones, reduce, plot.

Running the same command again (or `landscape-surface run.dir=DIR` alone) resumes the run: only missing
tiles are computed. `launcher.dry_run=true` prints the plan and a calibration and writes nothing.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from typing import Any

from landscape.errors import UserError

from jobs.reduce import reduce
from jobs.run import RunDir
from . import backends, config, lock
from .cli import user_errors, with_saved_overrides
from .plan import dry_run
from .prepare import prepare
from .plots import draw
from jobs.settings import plot_options

SUBMITTING = ("slurm", "pbs")  # launchers that can return once the arrays are submitted (launcher.wait=false)


@user_errors
def main(argv: list[str]) -> int:
    overrides = with_saved_overrides(argv)
    cfg = config.load("surface", overrides)
    ranks_env = max(int(os.environ.get(v, "1") or 1) for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))
    if ranks_env > 1 and cfg["launcher"]["name"] != "mpi":
        raise UserError(f"started as {ranks_env} MPI ranks but launcher={cfg['launcher']['name']}: every rank "
                        "would compute the whole surface; add launcher=mpi")
    if cfg["launcher"]["name"] == "mpi":  # every rank runs this command: rank 0 drives, the others compute
        from .backends.mpi import ranks
        return ranks(lambda: drive(cfg, overrides))
    return drive(cfg, overrides)


def _compute(run: RunDir, todo: list[int], launcher: dict[str, Any]) -> None:
    """Run the backend; on Ctrl-C say what is kept and how to go on (finished tiles are complete files)."""
    try:
        backends.get(launcher["name"])(run, todo, launcher)
    except KeyboardInterrupt:
        done = len(run.tiles) - len(run.missing())
        raise KeyboardInterrupt(f"{done}/{len(run.tiles)} tiles done; run the same command again "
                                "to compute only the rest") from None


def drive(cfg: dict[str, Any], overrides: list[str]) -> int:
    """Prepare the run directory, compute its missing tiles with the chosen backend, reduce, plot."""
    launcher = cfg["launcher"]
    backends.check(launcher)
    opts = plot_options(cfg["plot"])
    workers_here = launcher["name"] in ("local", "mpi")
    if launcher.get("dry_run"):
        return dry_run(cfg, overrides, workers_here)
    run = prepare(cfg, overrides, workers_here=workers_here)
    todo = [t.id for t in run.missing()]
    total = len(run.tiles)
    print(f"run {run.path}: {total - len(todo)}/{total} tiles done, {len(todo)} to compute "
          f"({sum(run.tiles[i].npoints for i in todo)} points) with launcher={launcher['name']}")
    t0 = time.perf_counter()
    computing = todo and launcher["name"] != "none"
    with lock.hold(run.path, launcher["name"]) if computing else nullcontext():
        if todo:
            _compute(run, todo, launcher)
        if not launcher.get("wait", True) and launcher["name"] in SUBMITTING:
            print(f"submitted; follow with: landscape-status {run.path}")
            return 0
        result = reduce(run.path)
    plots = draw(run, opts)
    print(f"surface {result.path}: {result.done}/{result.total} tiles ({time.perf_counter() - t0:.1f} s)")
    if result.nonfinite:
        print(f"warning: {result.nonfinite}")
    print(f"plots   {run.path / 'plots'}: {', '.join(p.name for p in plots)}")
    if result.done < result.total and launcher["name"] == "none":
        print(f"{result.total - result.done} tiles missing; launcher=none computes nothing")
    elif result.done < result.total:
        raise UserError(f"{result.total - result.done} tiles are missing: run the same command again "
                        f"to compute only those (landscape-status {run.path} shows which)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
