"""MPI backend: `mpirun -n K landscape-surface launcher=mpi ...` (or `srun --mpi=pmix ...`).

Every rank runs the command and composes the config; rank 0 prepares the run directory, hands the
missing tiles out on request while computing its own share, then reduces and plots; the other ranks
only compute (jobs/mpi.py has the rank loop). Started without mpirun, the single rank computes
every tile itself, like `launcher=local` with one worker. mpi4py is imported only when this backend
runs: importing mpi4py starts MPI.
"""
from __future__ import annotations

from typing import Callable

from jobs.run import RunDir
from ..progress import Progress
from . import Backend
from .settings import Settings, plain


def ranks(drive: Callable[[], int]) -> int:
    """Every rank's entry: rank 0 drives (prepare, run, reduce, plot); the others compute until dismissed."""
    from jobs import mpi

    return mpi.ranks(lambda rank: drive())


def run(run: RunDir, tile_ids: list[int], settings: Settings) -> None:
    """Rank 0: serve the tiles to every rank, computing some itself; progress is shown in points."""
    from jobs import mpi

    points = {t.id: t.npoints for t in run.tiles}
    rank = mpi.here()
    with Progress(sum(points[i] for i in tile_ids), f"surface ({rank.comm.size} ranks)") as bar:
        mpi.serve(rank, str(run.path), tile_ids, on_done=lambda tid, sec: bar.update(points[tid]))


BACKEND = Backend(name="mpi", submits=False, workers_here=True, every_rank=True, computes=True, check=plain,
                  run=run, ranks=ranks)
