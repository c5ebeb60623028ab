"""`landscape-stats RUN [RUN ...] [--json]`: the landscape figures of runs side by side, mean +- std over planes
(centre loss, loss rise and sharpness within radii, basin, non-convexity, barrier; landscape/figures.py)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from jobs.run import RunDir
from landscape import figures
from landscape.errors import UserError

from .cli import user_errors


class Unfinished(UserError):
    """A run whose surface still lacks points: figures of the points computed so far would be other numbers (a
    basin cut off by a hole, a rise missing its steepest point), so none are shown."""


def run_rows(run_dir: str | Path, label: str = "") -> list[dict[str, Any]]:
    """The figures of a finished run's surface as rows (`run`: `label` or the run directory, `loss`, `figure`,
    `mean`, `std`, `planes`, `values`, where they are taken): as reduce stored them, else computed with the run's
    `figures.*`."""
    run = RunDir(Path(run_dir))
    settings = run.settings  # first: a clear error when this is no run directory
    if not run.surface_file.is_file():
        raise UserError(f"{run.surface_file} does not exist: run landscape-surface first")
    return finished_rows(run, label, settings.figures)


def finished_rows(run: RunDir, label: str = "", opts: figures.FigureOptions | None = None) -> list[dict[str, Any]]:
    """figures.rows of the run's surface file; refused (Unfinished) while points are still to compute, here as
    in landscape-status and a comparison's figures.txt."""
    missing, total = figures.missing_points(run.surface_file)
    if missing:
        raise Unfinished(f"{run.path} is not finished, {missing} of {total} points are not computed: its figures "
                         f"are held back (a partial surface gives other numbers); landscape-surface "
                         f"run.dir={run.path} computes the rest")
    return figures.rows(run.surface_file, label or str(run.path), opts)


def figure_lines(run_dir: str | Path) -> list[str]:
    """The figures table as landscape-status shows it, or the one line saying why it is held back."""
    try:
        table = figures.table(run_rows(run_dir))
    except Unfinished as held:
        return [f"figures: {held}"]
    return ["figures:", *("  " + line for line in table.splitlines())]


def _defined(value: Any) -> Any:
    """`value` with every number that is not finite (a figure undefined on a plane: NaN) as None: JSON has no
    NaN, and null says undefined."""
    if isinstance(value, dict):
        return {k: _defined(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_defined(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


@user_errors
def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    runs = [a for a in argv if a != "--json"]
    if not runs:
        raise UserError("landscape-stats takes one or more run directories (landscape-stats RUN [RUN ...] [--json])")
    rows = [row for run in runs for row in run_rows(run)]
    print(json.dumps(_defined(rows), indent=1, allow_nan=False) if as_json else figures.table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
