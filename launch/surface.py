"""`landscape-surface key=value ...`: plan a surface into tiles, run the missing ones, reduce, plot.

Running the same command again (or `landscape-surface run.dir=DIR` alone) resumes the run.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from typing import Any

from landscape.errors import UserError

from jobs.reduce import reduce
from . import backends, config, lock
from .cli import user_errors, with_saved_overrides
from .plan import describe
from .prepare import prepare
from .plots import draw


@user_errors
def main(argv: list[str] | None = None) -> int:
    overrides = with_saved_overrides(list(sys.argv[1:] if argv is None else argv))
    cfg = config.load("surface", overrides)
    ranks_env = max(int(os.environ.get(v, "1") or 1) for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))
    if ranks_env > 1 and cfg["launcher"]["name"] != "mpi":
        raise UserError(f"started as {ranks_env} MPI ranks but launcher={cfg['launcher']['name']}: every rank "
                        "would compute the whole surface; add launcher=mpi")
    if cfg["launcher"]["name"] == "mpi":  # every rank runs this command: rank 0 drives, the others compute
        from .backends.mpi import ranks
        return ranks(lambda: drive(cfg, overrides))
    return drive(cfg, overrides)


def drive(cfg: dict[str, Any], overrides: list[str]) -> int:
    """Prepare the run directory, compute its missing tiles with the chosen backend, reduce, plot."""
    launcher = cfg["launcher"]
    run_backend = backends.get(launcher["name"])
    run = prepare(cfg, overrides)
    todo = [t.id for t in run.missing()]
    total = len(run.tiles)
    print(f"run {run.path}: {total - len(todo)}/{total} tiles done, {len(todo)} to compute "
          f"({sum(run.tiles[i].npoints for i in todo)} points) with launcher={launcher['name']}")
    if launcher.get("dry_run"):
        print(describe(run, todo, launcher))
        return 0
    t0 = time.perf_counter()
    computing = todo and launcher["name"] != "none"
    with lock.hold(run.path, launcher["name"]) if computing else nullcontext():
        if todo:
            run_backend(run, todo, launcher)
        if not launcher.get("wait", True):
            print(f"submitted; follow with: landscape-status {run.path}")
            return 0
        result = reduce(run.path)
    plots = draw(run, cfg["plot"])
    print(f"surface {result.path}: {result.done}/{result.total} tiles ({time.perf_counter() - t0:.1f} s)")
    print(f"plots   {run.path / 'plots'}: {', '.join(p.name for p in plots)}")
    if result.done < result.total and launcher["name"] == "none":
        print(f"{result.total - result.done} tiles missing; launcher=none computes nothing")
    elif result.done < result.total:
        raise UserError(f"{result.total - result.done} tiles are missing: run the same command again "
                        f"to compute only those (landscape-status {run.path} shows which)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
