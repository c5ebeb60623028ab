"""`landscape-plot RUN_DIR [RUN_DIR ...] plot.log_scale=true plot.clip=5 plot.dir=DIR`: redraw a run's plots, no
recompute; with several runs, compare them: the same plot kinds side by side on one colour scale with the same
contour levels, difference maps where the grids match, and the runs' landscape figures side by side (figures.txt;
into plot.dir, else ./compare-A-vs-B-...).
Every setting and its default is in conf/plot.yaml and conf/plot/default.yaml (plot.*)."""
from __future__ import annotations

import sys
from pathlib import Path

from landscape import figures
from landscape.compare import compare_surfaces
from landscape.errors import UserError, first_line
from landscape.plot import PlotOptions, plot_surface_file, read_surface
from landscape.surface import h5open
from landscape.plot_curvature import OWN, plot_curvature_file

from jobs.run import RunDir
from jobs.settings import plot_options
from . import config
from .cli import absolute_paths, user_errors
from .stats import Unfinished, finished_rows


MERGE = "landscape-surface run.dir={run} launcher=none"  # merges the tiles into surface.h5 and plots, computes nothing


def anything_done(run: RunDir) -> bool:
    """Whether surface.h5 holds any computed point; a truncated file says how to rebuild it."""
    try:
        with h5open(run.surface_file) as f:
            return bool(f["done"][()].any()) and "xcoordinates" in f
    except (OSError, KeyError) as err:
        raise UserError(f"{run.surface_file} is unreadable ({first_line(err)}): rebuild it from the tiles "
                        f"with {MERGE.format(run=run.path)}") from err


def _no_surface(run: RunDir) -> UserError:
    """landscape-plot without surface.h5: merge the tiles of a run that has some, else compute."""
    tiles = list((run.path / "tiles").glob("*.h5")) if run.config_file.is_file() else []
    merge = f"{len(tiles)} tile files are not merged yet; merge them with {MERGE.format(run=run.path)}"
    return UserError(f"{run.surface_file} does not exist: " + (merge if tiles else "run landscape-surface first"))


def plots_dir(run: RunDir, opts: PlotOptions) -> Path:
    """Where the run's figures go: plot.dir (absolute by now), else RUN_DIR/plots."""
    return Path(opts.dir) if opts.dir else run.path / "plots"


def _output_folder(out: Path) -> Path:
    """`out`, refused when it is a file."""
    if out.exists() and not out.is_dir():
        raise UserError(f"plot.dir {out} is a file: name a folder (created if missing)")
    return out


def check_dir(opts: PlotOptions) -> None:
    """plot.dir checked before anything is computed: a file there is refused now, not after the surface."""
    if opts.dir:
        _output_folder(Path(opts.dir))


def draw(run: RunDir, opts: PlotOptions) -> list[Path]:
    """Every plot of the run's surface file into plots_dir; files of other names there are left alone."""
    out = _output_folder(plots_dir(run, opts))
    if not anything_done(run):
        return []  # nothing computed yet: nothing to draw
    return (plot_surface_file(run.surface_file, out, opts, leave_out=OWN)
            + plot_curvature_file(run.surface_file, out, opts))


def compare_dir(runs: list[RunDir], opts: PlotOptions) -> Path:
    """Where a comparison goes: plot.dir, else ./compare-<first run>-vs-<second>[-...] where the command runs."""
    return Path(opts.dir) if opts.dir else Path.cwd() / ("compare-" + "-vs-".join(r.path.name for r in runs))


def compare(runs: list[RunDir], opts: PlotOptions) -> tuple[list[Path], list[str]]:
    """Figures of several runs on shared scales into compare_dir: (files written, notes for the user). Tables of
    numbers over the same runs belong in the same folder, their files added to what this returns."""
    for run in runs:
        if not run.surface_file.is_file() or not anything_done(run):
            raise UserError(f"{run.path} has no computed surface yet: run landscape-surface for it first")
    labels = [r.path.name for r in runs]
    labels = labels if len(set(labels)) == len(labels) else [str(r.path) for r in runs]
    out = _output_folder(compare_dir(runs, opts))
    done = compare_surfaces({label: r.surface_file for label, r in zip(labels, runs)}, out, opts)
    table = out / "figures.txt"  # every finished run's landscape figures, side by side; why the others have none
    rows, held = [], []
    for label, r in zip(labels, runs):
        try:
            rows += finished_rows(r, label)
        except Unfinished as err:
            held.append(str(err))
    table.write_text("\n".join([figures.table(rows)] * bool(rows) + held) + "\n")
    return [*done.paths, table], done.notes


def _distinct_runs(dirs: list[str]) -> list[RunDir]:
    """The runs of a comparison, refused where one is given twice (however spelled): a slip, not a comparison."""
    first: dict[Path, str] = {}
    for d in dirs:
        real = Path(d).resolve()
        if real in first:
            raise UserError(f"run {Path(first[real]).absolute()} is given twice: a comparison needs different runs "
                            f"(landscape-plot {first[real]} alone redraws its plots)")
        first[real] = d
    return [RunDir(Path(d).absolute()) for d in dirs]


def _drawable(runs: list[RunDir], opts: PlotOptions) -> None:
    """Refused before anything is drawn: plot.metrics names a run's surface does not hold (with the names it
    holds), and plot.html where every surface is 1D (the interactive page is a 3D view of 2D maps)."""
    if not (opts.metrics or opts.html):
        return
    surfs = {run.path: read_surface(run.surface_file) for run in runs if run.surface_file.is_file()}
    for path, surf in surfs.items():
        if unknown := [m for m in opts.metrics if m not in surf.maps]:
            raise UserError(f"plot.metrics: {path / 'surface.h5'} holds no {', '.join(unknown)}; it holds "
                            f"{', '.join(surf.maps)}")
    if opts.html and surfs and all(s.y is None for s in surfs.values()):
        raise html_on_1d(", ".join(map(str, surfs)))


def html_on_1d(what: str) -> UserError:
    """plot.html=true where there is only a 1D surface to draw."""
    return UserError(f"plot.html=true: {what} is a 1D surface and the interactive page is a 3D view of 2D maps; "
                     "leave plot.html out (the 1D figure is a PNG)")


def drawable_after(run: RunDir, opts: PlotOptions) -> str:
    """`_drawable` once a surface is computed: '' or why something asked for cannot be drawn (a warning; the
    surface is kept)."""
    try:
        _drawable([run], opts)
    except UserError as err:
        return str(err)
    return ""


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Leading run directories, then the key=value overrides."""
    n = next((i for i, a in enumerate(argv) if "=" in a or a.startswith("-")), len(argv))
    return argv[:n], argv[n:]


@user_errors
def main(argv: list[str]) -> int:
    dirs, overrides = _split(argv)
    run_dir = [f"run.dir={dirs[0]}"] if dirs else []
    cfg = config.load("plot", absolute_paths(run_dir + overrides))
    opts = plot_options(cfg["plot"])
    if len(dirs) > 1:
        runs = _distinct_runs(dirs)
        _drawable(runs, opts)
        paths, notes = compare(runs, opts)
        print(f"comparison {compare_dir(runs, opts)}: {', '.join(p.name for p in paths)}")
        print(paths[-1].read_text().rstrip())
        for note in notes:
            print(note)
        return 0
    run = RunDir(Path(str(cfg["run"]["dir"])))
    if not run.surface_file.is_file():
        raise _no_surface(run)
    _drawable([run], opts)
    plots = draw(run, opts)
    print(f"plots {plots_dir(run, opts)}: {', '.join(p.name for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
