"""`landscape-surface key=value ...`: plan a surface into tiles, run the missing ones, reduce, plot.

Running the same command again (or `landscape-surface run.dir=DIR` alone) resumes the run: only missing
tiles are computed. `launcher.dry_run=true` prints the plan and a calibration and writes nothing.
"""
from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from typing import Any

from landscape.errors import UserError

from jobs.reduce import reduce
from jobs.run import RunDir
from jobs.settings import parse, plot_options
from . import backends, config, lock
from .backends import arrays
from .cli import user_errors, with_saved_overrides
from .plan import dry_run
from .prepare import prepare
from .plots import check_dir, draw, drawable_after, html_on_1d, plots_dir


@user_errors
def main(argv: list[str]) -> int:
    overrides = with_saved_overrides(argv)
    cfg = config.load("surface", overrides)
    launcher = backends.check(cfg["launcher"])
    if launcher.backend.every_rank:  # every rank runs this command: rank 0 drives, the others compute
        return launcher.backend.ranks(lambda: drive(cfg, overrides, launcher))
    return drive(cfg, overrides, launcher)


def _compute(run: RunDir, todo: list[int], launcher: backends.Launcher) -> None:
    """Run the backend; on Ctrl-C say what is kept and how to go on (finished tiles are complete files)."""
    try:
        launcher.backend.run(run, todo, launcher.settings)
    except KeyboardInterrupt:
        done = len(run.tiles) - len(run.missing())
        raise KeyboardInterrupt(f"{done}/{len(run.tiles)} tiles done; run the same command again "
                                "to compute only the rest") from None


def free_to_compute(run: RunDir) -> None:
    """Refused before anything is written: another driver computes this run, or a live array of it still holds
    some of its missing tiles (computing them here too would compute them twice)."""
    lock.refuse_other(run.path)
    if arrays.records(run):
        held = arrays.held_line(run, arrays.task_view(run, {t.id for t in run.missing()}))
        if held:
            raise UserError(f"{held}; then run the same command again")


def drive(cfg: dict[str, Any], overrides: list[str], launcher: backends.Launcher) -> int:
    """Prepare the run directory, compute its missing tiles with the chosen backend, reduce, plot."""
    backend = launcher.backend
    opts = plot_options(cfg["plot"])
    check_dir(opts)
    if opts.html and parse(cfg).grid.dims == 1:
        raise html_on_1d("this run")
    if launcher.settings.dry_run:
        return dry_run(cfg, overrides, launcher)
    run = prepare(cfg, overrides, workers_here=backend.workers_here, elsewhere=backend.elsewhere,
                  guard=free_to_compute if backend.computes else lambda run: None)
    todo = [t.id for t in run.missing()]
    total = len(run.tiles)
    print(f"run {run.path}: {total - len(todo)}/{total} tiles done, {len(todo)} to compute "
          f"({sum(run.tiles[i].npoints for i in todo)} points) with launcher={backend.name}")
    t0 = time.perf_counter()
    with lock.hold(run.path, backend.name) if todo and backend.computes else nullcontext():
        if todo:
            _compute(run, todo, launcher)
        if backend.submits and not launcher.settings.wait:
            print(f"submitted; follow with: landscape-status {run.path}")
            return 0
        result = reduce(run.path)
    undrawable = drawable_after(run, opts)
    plots = draw(run, opts)
    print(f"surface {result.path}: {result.done}/{result.total} tiles ({time.perf_counter() - t0:.1f} s)")
    for line in (*result.warnings, *filter(None, [undrawable])):
        print(f"warning: {line}")
    print(f"plots   {plots_dir(run, opts)}: {', '.join(p.name for p in plots)}")
    if result.done < result.total and not backend.computes:
        print(f"{result.total - result.done} tiles missing; launcher={backend.name} computes nothing")
    elif result.done < result.total:
        missing = result.total - result.done
        raise UserError(f"{missing} {'tile is' if missing == 1 else 'tiles are'} missing: run the same command "
                        f"again to compute only {'it' if missing == 1 else 'those'} (landscape-status {run.path} "
                        "shows which)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
