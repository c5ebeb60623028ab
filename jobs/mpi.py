"""The MPI rank loop: `mpirun -n K python -m jobs.mpi RUN_DIR` on a prepared run directory.

Rank 0 hands out tile ids on request from one queue (a slow rank takes fewer tiles and never holds
the others back) and computes tiles itself while a server thread answers the requests; every rank
writes its own tile files, and rank 0 reduces. Waiting is a poll (Iprobe, then a short sleep), never a
blocking receive: Open MPI's blocking calls spin a core, which on a shared or oversubscribed node
is taken from the ranks that compute. `landscape-surface launcher=mpi` runs the same loop.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Iterator

import torch
from mpi4py import MPI

from landscape.errors import UserError
from landscape.hardware import cpu_share, device_for

from .reduce import reduce
from .run import RunDir
from .tile import run_tiles

START, ASK, TILE = 1, 2, 3  # tags: rank 0 -> run dir (None: nothing to do); worker -> ask; rank 0 -> tile id or None
POLL_S = 0.005              # the latency a request can wait; a tile takes far longer
LAUNCHER_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")  # SLURM_STEP_*: srun, not sbatch
LAUNCHER_RANK = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")
LOCAL_RANK = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")

OnDone = Callable[[int, float], None]


def _env_int(names: tuple[str, ...]) -> tuple[str, int] | None:
    """The first of `names` set to an integer in the environment, with its value."""
    return next(((n, int(os.environ[n])) for n in names if os.environ.get(n, "").isdigit()), None)


def world() -> MPI.Intracomm:
    """COMM_WORLD, refusing a launcher that started several processes that each see a world of one."""
    comm = MPI.COMM_WORLD
    size, rank = _env_int(LAUNCHER_SIZE) or ("", 1), _env_int(LAUNCHER_RANK) or ("", 0)
    if comm.size == 1 and (size[1] > 1 or rank[1] > 0):
        said = ", ".join(f"{n}={v}" for n, v in (size, rank) if n)
        library = " ".join(MPI.Get_library_version().split(",")[0].split())
        raise UserError(
            f"the launcher started several processes ({said}) but MPI here is one process of size 1: mpi4py "
            f"loaded another MPI library than the launcher's (it loaded {library}), so each process would "
            "compute the whole surface alone. Start with that library's mpirun, use `srun --mpi=pmix`, or "
            "point mpi4py at the launcher's library: MPI4PY_LIBMPI=/path/to/libmpi.so")
    return comm


@dataclass
class Rank:
    """This process's place in the job: the world communicator and its rank among the node's ranks."""

    comm: MPI.Intracomm
    local_rank: int
    local_size: int
    announced: bool = False  # rank 0: the other ranks have been told what to do

    def device(self, requested: str) -> torch.device:
        """This rank's device (`hardware.device_for`)."""
        return device_for(requested, self.local_rank)

    def cpu_threads(self) -> int:
        """The CPUs granted to this rank, at most an equal share of the node's cores."""
        granted = _env_int(("SLURM_CPUS_PER_TASK",))
        return cpu_share(self.local_size, granted[1] if granted else None)


@cache
def here() -> Rank:
    """This process's Rank; the first call is collective (every rank makes it at start-up, polled)."""
    comm = world()
    local_rank, local_size = _node_place(comm)
    env = _env_int(LOCAL_RANK)  # the launcher's own numbering where it gives one
    return Rank(comm, env[1] if env else local_rank, local_size)


def _node_place(comm: MPI.Intracomm) -> tuple[int, int]:
    """(rank among the ranks on this host, their count) from every rank's host name. A non-blocking
    allgather, polled: ranks that start early sleep instead of spinning while a slow one imports."""
    width = MPI.MAX_PROCESSOR_NAME
    hosts = bytearray(width * comm.size)
    request = comm.Iallgather([MPI.Get_processor_name().encode().ljust(width, b"\0"), MPI.BYTE], [hosts, MPI.BYTE])
    while not request.Test():
        time.sleep(POLL_S)
    names = [bytes(hosts[i * width:(i + 1) * width]) for i in range(comm.size)]
    mine = names[comm.rank]
    return names[:comm.rank].count(mine), names.count(mine)


def _receive(comm: MPI.Intracomm, tag: int) -> Any:
    """A message from rank 0, waited for by polling so that an idle rank sleeps instead of spinning."""
    while not comm.iprobe(source=0, tag=tag):
        time.sleep(POLL_S)
    return comm.recv(source=0, tag=tag)


def _announce(rank: Rank, run_dir: str | None) -> None:
    """Rank 0 tells every other rank the run directory to work on (None: nothing to do, stop)."""
    if not rank.announced:
        rank.announced = True
        for dest in range(1, rank.comm.size):
            rank.comm.send(run_dir, dest=dest, tag=START)  # a short path: sent eagerly, never blocks


def _answer(comm: MPI.Intracomm, queue: deque[int], on_done: OnDone | None) -> None:
    """Rank 0's server: answer each request with the next tile id, or None once the queue is empty,
    until every other rank has been told to stop or has left. Requests carry the tiles just finished."""
    active, status = set(range(1, comm.size)), MPI.Status()
    while active:
        if not comm.iprobe(source=MPI.ANY_SOURCE, tag=ASK, status=status):
            time.sleep(POLL_S)
            continue
        source = status.Get_source()
        finished, leaving = comm.recv(source=source, tag=ASK)
        for tile_id, seconds in finished:
            if on_done:
                on_done(tile_id, seconds)
        if leaving:
            active.discard(source)
            continue
        tile_id = _pop(queue)
        comm.send(tile_id, dest=source, tag=TILE)
        if tile_id is None:
            active.discard(source)


def _answer_or_abort(comm: MPI.Intracomm, queue: deque[int], on_done: OnDone | None) -> None:
    """The server thread: an MPI failure there would leave every waiting rank waiting, so end the job."""
    try:
        _answer(comm, queue, on_done)
    except BaseException:
        traceback.print_exc()
        comm.Abort(1)


def _pop(queue: deque[int]) -> int | None:
    try:
        return queue.popleft()  # atomic: rank 0's server thread and its own compute share the queue
    except IndexError:
        return None


def _drain(queue: deque[int]) -> Iterator[int]:
    while (tile_id := _pop(queue)) is not None:
        yield tile_id


def serve(rank: Rank, run_dir: str, tile_ids: list[int], on_done: OnDone | None = None) -> list[int]:
    """Rank 0: hand `tile_ids` out to the other ranks on request and compute tiles itself meanwhile;
    returns when every rank is done. Returns the ids rank 0 computed."""
    _announce(rank, run_dir)
    queue = deque(tile_ids)
    if rank.comm.size > 1 and MPI.Query_thread() < MPI.THREAD_SERIALIZED:  # MPI only on this thread: serve only
        _answer(rank.comm, queue, on_done)
        return []
    server = threading.Thread(target=_answer_or_abort, args=(rank.comm, queue, on_done), name="tile-server",
                              daemon=True)
    server.start()
    try:
        computed = run_tiles(run_dir, _drain(queue), rank.device(RunDir(run_dir).settings.device), on_done)
    except BaseException:
        queue.clear()  # the other ranks stop after their current tile
        raise
    finally:
        while server.is_alive():  # a timed join keeps Ctrl-C and SIGTERM working
            server.join(0.2)
    return computed


class TilesFromRoot:
    """A worker's tile ids: each asked of rank 0 once the previous one is written."""

    def __init__(self, comm: MPI.Intracomm) -> None:
        self.comm, self.finished, self.open = comm, [], True

    def done(self, tile_id: int, seconds: float) -> None:
        self.finished.append((tile_id, seconds))

    def _ask(self, leaving: bool) -> None:
        self.comm.send((self.finished, leaving), dest=0, tag=ASK)
        self.finished = []

    def __iter__(self) -> Iterator[int]:
        while self.open:
            self._ask(leaving=False)
            tile_id = _receive(self.comm, TILE)
            if tile_id is None:
                self.open = False
                return
            yield tile_id

    def close(self) -> None:
        """A rank that stops early (an error, SIGTERM) says so, so that rank 0 does not wait for it."""
        if self.open:
            self.open = False
            self._ask(leaving=True)


def work(rank: Rank) -> list[int]:
    """Ranks other than 0: wait for the run directory, then compute the tiles rank 0 hands out."""
    run_dir = _receive(rank.comm, START)
    if run_dir is None:
        return []
    tiles = TilesFromRoot(rank.comm)
    try:
        return run_tiles(run_dir, tiles, rank.device(RunDir(run_dir).settings.device), tiles.done)
    finally:
        tiles.close()


def ranks(root: Callable[[Rank], int]) -> int:
    """Every rank's entry: rank 0 runs `root` (which serves the tiles), the others work until dismissed."""
    rank = here()
    os.environ.setdefault("LANDSCAPE_THREADS", str(rank.cpu_threads()))  # read by run_tiles
    if rank.comm.rank:
        work(rank)
        return 0
    try:
        return root(rank)
    finally:
        _announce(rank, None)  # rank 0 failed or had nothing to compute: dismiss the waiting ranks


def _root(rank: Rank, run_dir: str) -> int:
    run = RunDir(run_dir)
    todo = [t.id for t in run.missing()]
    print(f"run {run.path}: {len(run.tiles) - len(todo)}/{len(run.tiles)} tiles done, {len(todo)} to compute "
          f"on {rank.comm.size} rank{'s' * (rank.comm.size > 1)}", flush=True)
    t0 = time.perf_counter()
    if todo:
        serve(rank, str(run.path), todo)
    result = reduce(run.path)
    print(f"{result.path}: {result.done}/{result.total} tiles ({time.perf_counter() - t0:.1f} s)", flush=True)
    if result.done < result.total:
        print(f"error: {result.total - result.done} tiles are missing: run again to compute only those",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory prepared by landscape-surface")
    args = parser.parse_args(argv)
    try:
        return ranks(lambda rank: _root(rank, args.run_dir))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
