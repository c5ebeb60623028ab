"""`landscape-plot RUN_DIR plot.log_scale=true plot.clip=5`: redraw a run's plots, no recompute."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from landscape.errors import UserError
from landscape.surface import h5open
from landscape.plot import PlotOptions, plot_surface_file

from jobs.run import RunDir
from . import config
from .cli import positional_run_dir, user_errors


def draw(run: RunDir, opts: dict[str, Any]) -> list[Path]:
    """Every plot of the run's surface file into `RUN_DIR/plots/`."""
    with h5open(run.surface_file) as f:
        if not f["done"][()].any():
            return []  # nothing computed yet: nothing to draw
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items() if v is not None or k == "clip"}
    return plot_surface_file(run.surface_file, run.path / "plots", PlotOptions(**fields))


@user_errors
def main(argv: list[str] | None = None) -> int:
    overrides = positional_run_dir(list(sys.argv[1:] if argv is None else argv))
    cfg = config.load("plot", overrides)
    run = RunDir(Path(cfg["run"]["dir"]))
    if not run.surface_file.is_file():
        raise UserError(f"{run.surface_file} does not exist: run landscape-surface first")
    plots = draw(run, cfg["plot"])
    print(f"plots {run.path / 'plots'}: {', '.join(p.name for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
