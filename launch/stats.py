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


def run_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The figures of a run's surface as rows (`run`, `loss`, `figure`, `mean`, `std`, `planes`, `values`):
    as reduce stored them, else computed with the run's `figures.*`."""
    run = RunDir(Path(run_dir))
    settings = run.settings  # first: a clear error when this is no run directory
    if not run.surface_file.is_file():
        raise UserError(f"{run.surface_file} does not exist: run landscape-surface first")
    return figures.rows(run.surface_file, str(run.path), settings.figures)


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
