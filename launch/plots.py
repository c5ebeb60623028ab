"""`landscape-plot RUN_DIR plot.log_scale=true plot.clip=5 plot.dir=RUN_DIR/plots-log`: redraw a run's plots,
no recompute; every setting and its default is in conf/plot.yaml."""
from __future__ import annotations

import sys
from pathlib import Path

from landscape.errors import UserError, first_line
from landscape.surface import h5open
from landscape.plot import PlotOptions, plot_surface_file
from landscape.plot_curvature import plot_curvature_file

from jobs.run import RunDir
from jobs.settings import plot_options
from . import config
from .cli import absolute_paths, positional_run_dir, user_errors


def _anything_done(run: RunDir) -> bool:
    """Whether surface.h5 holds any computed point; a truncated file says how to rebuild it."""
    try:
        with h5open(run.surface_file) as f:
            return bool(f["done"][()].any()) and "xcoordinates" in f
    except (OSError, KeyError) as err:
        raise UserError(f"{run.surface_file} is unreadable ({first_line(err)}): rebuild it from the tiles "
                        f"with landscape-surface run.dir={run.path} launcher=none") from err


def plots_dir(run: RunDir, opts: PlotOptions) -> Path:
    """Where the run's figures go: plot.dir (absolute by now), else RUN_DIR/plots."""
    return Path(opts.dir) if opts.dir else run.path / "plots"


def draw(run: RunDir, opts: PlotOptions) -> list[Path]:
    """Every plot of the run's surface file into plots_dir; files of other names there are left alone."""
    out = plots_dir(run, opts)
    if out.exists() and not out.is_dir():
        raise UserError(f"plot.dir {out} is a file: name a folder (created if missing)")
    if not _anything_done(run):
        return []  # nothing computed yet: nothing to draw
    return plot_surface_file(run.surface_file, out, opts) + plot_curvature_file(run.surface_file, out, opts)


@user_errors
def main(argv: list[str]) -> int:
    cfg = config.load("plot", absolute_paths(positional_run_dir(argv)))
    opts = plot_options(cfg["plot"])
    run = RunDir(Path(str(cfg["run"]["dir"])))
    if not run.surface_file.is_file():
        raise UserError(f"{run.surface_file} does not exist: run landscape-surface first")
    plots = draw(run, opts)
    print(f"plots {plots_dir(run, opts)}: {', '.join(p.name for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
