"""Local backend: one worker process per visible GPU, or K CPU worker processes, pulling tile ids
from a shared queue (a slow worker never holds the others back); one worker runs in-process.

Ctrl-C reaches the driver only (workers start with SIGINT ignored); it stops the workers with SIGTERM, which
removes a half-written tile's temporary file, and finished tiles stay: the same command computes the rest."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch

from landscape.errors import whole_number
from landscape.hardware import cpu_share

from jobs.run import RunDir
from jobs.tile import run_tiles
from ..progress import Progress
from . import Backend
from .settings import Reader, Settings


def worker_count(value: Any) -> int | None:
    """launcher.workers: null or auto (one per visible GPU, else 1) as None, or a whole number of 1 or more."""
    return None if value in (None, "auto") else whole_number(value, "launcher.workers", 1, ", or auto")


@dataclass(frozen=True)
class LocalSettings(Settings):
    workers: int | None  # None: one per visible GPU, else 1


def check(values: Mapping[str, Any]) -> LocalSettings:
    """This backend's settings, checked before anything is written."""
    read = Reader(values, LocalSettings)
    return LocalSettings(**read.common(), workers=worker_count(read.value("workers")))


def _queue_iter(tasks: "mp.Queue", parent: int):
    """Tile ids from the queue until the sentinel, or until the driver has died."""
    while os.getppid() == parent:
        try:
            item = tasks.get(timeout=1.0)
        except queue.Empty:
            continue
        if item is None:
            return
        yield item


def _worker(run_dir: str, tasks: "mp.Queue", done: "mp.Queue", env: dict[str, str], parent: int) -> None:
    os.environ.update(env)
    run_tiles(run_dir, _queue_iter(tasks, parent), on_done=lambda tid, sec: done.put(tid))


def worker_envs(workers: int | None) -> list[dict[str, str]]:
    """One env per worker: a GPU each when GPUs are visible, else a share of the CPU cores (LANDSCAPE_THREADS,
    when set, is each CPU worker's thread count, as for MPI ranks)."""
    gpus = torch.cuda.device_count()
    if gpus and not workers:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(gpus)))).split(",")
        return [{"CUDA_VISIBLE_DEVICES": v.strip()} for v in visible[:gpus]]
    workers = workers or 1
    threads = os.environ.get("LANDSCAPE_THREADS") or cpu_share(workers)
    return [{"LANDSCAPE_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""} for _ in range(workers)]


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started inside inherit an ignored SIGINT (Python keeps it ignored), so Ctrl-C hits the driver only."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(procs: list[mp.Process], grace: float = 10.0) -> None:
    """SIGTERM (the tile writer removes its temporary file), then SIGKILL for a worker stuck in a long kernel."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(grace)
        if p.is_alive():
            p.kill()
            p.join()


def run(run: RunDir, tile_ids: list[int], settings: LocalSettings) -> None:
    """Compute the tiles here; progress is shown in points."""
    points = {t.id: t.npoints for t in run.tiles}
    envs = worker_envs(settings.workers)
    with Progress(sum(points[i] for i in tile_ids), "surface") as bar:
        if len(envs) == 1 and not torch.cuda.device_count():
            os.environ.update(envs[0])
            run_tiles(str(run.path), tile_ids, on_done=lambda tid, sec: bar.update(points[tid]))
        else:
            _run_workers(run, tile_ids, envs, lambda tid: bar.update(points[tid]))


def _report_deaths(procs: list[mp.Process], reported: set[int]) -> None:
    """Say once, as it happens, that a worker died (its exit code or signal): the tile it held stays missing."""
    for p in procs:
        if p.exitcode not in (None, 0) and p.pid not in reported:
            reported.add(p.pid)
            how = f"was killed by signal {-p.exitcode} ({signal.Signals(-p.exitcode).name})" if p.exitcode < 0 \
                else f"exited with code {p.exitcode}"
            print(f"warning: local worker pid {p.pid} {how}: the tile it was computing stays missing", flush=True)


def _run_workers(run: RunDir, tile_ids: list[int], envs: list[dict[str, str]], on_done: Callable[[int], None]) -> None:
    """One spawned process per env, pulling tile ids from a queue; `on_done(tile_id)` here as each finishes."""
    ctx = mp.get_context("spawn")
    tasks, done = ctx.Queue(), ctx.Queue()
    for tid in tile_ids:
        tasks.put(tid)
    for _ in envs:
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(str(run.path), tasks, done, env, os.getpid()), daemon=True)
             for env in envs]
    with _sigint_ignored():
        for p in procs:
            p.start()
    try:
        remaining, dead = len(tile_ids), set()
        while remaining and any(p.is_alive() for p in procs):
            _report_deaths(procs, dead)
            try:
                tid = done.get(timeout=0.5)
            except queue.Empty:
                continue
            on_done(tid)
            remaining -= 1
        _report_deaths(procs, dead)
    except BaseException:
        _stop(procs)
        raise
    finally:
        for p in procs:
            p.join()


BACKEND = Backend(name="local", submits=False, workers_here=True, every_rank=False, computes=True, check=check, run=run)
