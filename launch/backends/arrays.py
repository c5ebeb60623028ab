"""Job arrays through submitit, shared by the backends that submit to a scheduler: their common settings, and
`backend(...)`, which makes a submitting backend of what differs (the settings check, the executor, the
array size limit, the status query).

Each array task runs `jobs.tile.run_tiles` on its k tiles; tile files, not scheduler state, say
what is done, so the driver never waits forever on a job the scheduler lost.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import submitit

from jobs.run import RunDir
from jobs.tile import run_tiles
from landscape.errors import UserError
from ..progress import Progress
from . import Backend, TaskPlan, get
from .settings import Reader, Settings

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "READY", "CONFIGURING", "SUSPENDED", "QUEUED"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
RECORDS = "submissions.jsonl"
MEANING = {"TIMEOUT": "killed at its time limit", "CANCELLED": "cancelled (qdel, scancel)",
           "OUT_OF_MEMORY": "killed: out of memory", "NODE_FAIL": "lost with its node", "PREEMPTED": "preempted",
           "FAILED": "failed"}


def meaning(state: str) -> str:
    """A scheduler's state word as a researcher reads it: `TIMEOUT` -> `killed at its time limit (TIMEOUT)`."""
    return f"{MEANING[state]} ({state})" if state in MEANING else state


@dataclass(frozen=True)
class ArraySettings(Settings):
    """What every submitting backend asks for, per array task."""
    account: str | None
    cpus_per_task: int
    gpus_per_task: int
    mem_gb: float | None          # None: the queue's default
    tiles_per_task: int
    parallelism: int | None       # at most this many tasks running at once; None: the scheduler's own limit
    max_array_size: int | None    # None: ask the scheduler
    setup: tuple[str, ...]        # shell lines run first in each task
    python: str | None            # the interpreter on the nodes; None: the driver's
    job_name: str
    poll_seconds: float
    stall_minutes: float


A = TypeVar("A", bound=ArraySettings)


def read_settings(read: Reader) -> dict[str, Any]:
    """The `ArraySettings` fields, checked, as keyword arguments for a backend's settings."""
    return {**read.common(), "account": read.text("account"), "cpus_per_task": read.whole("cpus_per_task"),
            "gpus_per_task": read.whole("gpus_per_task", 0), "mem_gb": read.number("mem_gb", null=True),
            "tiles_per_task": read.whole("tiles_per_task"), "parallelism": read.whole("parallelism", null=True),
            "max_array_size": read.whole("max_array_size", null=True), "setup": read.lines("setup"),
            "python": read.text("python"), "job_name": read.text("job_name") or "landscape",
            "poll_seconds": read.number("poll_seconds"), "stall_minutes": read.number("stall_minutes")}


class TileTask(submitit.helpers.Checkpointable):
    """An array task: evaluate these tiles. On time-out submitit requeues it; done tiles are skipped."""

    def __call__(self, run_dir: str, tile_ids: list[int]) -> list[int]:
        return run_tiles(run_dir, tile_ids)


def task_groups(tile_ids: list[int], per_task: int, max_array: int) -> list[list[list[int]]]:
    """Tiles -> tasks of `per_task` tiles -> arrays of at most `max_array` tasks."""
    tasks = [tile_ids[i:i + per_task] for i in range(0, len(tile_ids), per_task)]
    return [tasks[i:i + max_array] for i in range(0, len(tasks), max_array)]


def record(run: RunDir, entry: dict[str, Any]) -> None:
    """Append one submission to RUN_DIR/submissions.jsonl, which landscape-status reads."""
    with open(run.path / RECORDS, "a") as f:
        f.write(json.dumps(entry) + "\n")


def records(run: RunDir) -> list[dict[str, Any]]:
    path = run.path / RECORDS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def submit(run: RunDir, plan: TaskPlan, backend: str, make_executor: Callable[[Path], submitit.Executor],
           info: dict[str, Any] | None = None) -> list[submitit.Job]:
    """Submit the planned arrays; record which task holds which tiles (and `info`, what the backend's
    `task_states` needs to read the record back, e.g. the PBS flavour)."""
    round_no = len(records(run))
    jobs: list[submitit.Job] = []
    for chunk_no, tasks in enumerate(plan.arrays):
        folder = run.path / "logs" / f"{backend}-{round_no:03d}-{chunk_no:02d}"
        executor = make_executor(folder)
        try:
            chunk_jobs = executor.map_array(TileTask(), [str(run.path.resolve())] * len(tasks), tasks)
        except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as err:
            raise UserError(f"{backend} refused the submission: {_reason(err)}") from err
        array_id = chunk_jobs[0].job_id.split("_")[0]
        record(run, {"round": round_no, "chunk": chunk_no, "backend": backend, "array": array_id,
                     "folder": str(folder), "submitted": time.time(),
                     "tasks": {j.job_id.split("_")[-1]: t for j, t in zip(chunk_jobs, tasks)}, **(info or {})})
        print(f"submitted {backend} array {array_id}: {len(tasks)} tasks, {sum(map(len, tasks))} tiles, "
              f"logs in {folder}")
        jobs += chunk_jobs
    return jobs


def _reason(err: Exception) -> str:
    """The scheduler's own words: the last error line of what the submit command printed (stderr, else
    stdout: Slurm's qsub wrapper prints sbatch's error there)."""
    text = "\n".join(filter(None, [str(err), getattr(err.__cause__, "output", None)]))
    lines = [ln.strip(" '") for ln in text.splitlines() if ln.strip(" '")]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [type(err).__name__])[-1][:300]


def wait(run: RunDir, jobs: list[submitit.Job], tile_ids: list[int], poll_s: float = 2.0,
         stall_s: float = 600.0) -> None:
    """Progress from tile files; stop when every tile exists, every task is finished, or nothing has
    moved for `stall_s` while the scheduler reports no task queued or running (a lost job)."""
    points = {t.id: t.npoints for t in run.tiles}
    pending = set(tile_ids)

    def arrived() -> list[int]:
        """The pending tiles whose files exist now, counted as done."""
        tids = [t for t in pending if run.tile_file(run.tiles[t]).exists()]
        pending.difference_update(tids)
        bar.update(sum(points[t] for t in tids))
        return tids

    with Progress(sum(points[i] for i in tile_ids), "surface") as bar:
        last_move = time.time()
        while pending:
            moved = arrived()
            states = [j.state.split()[0].upper() for j in jobs]
            if moved or any(s in ACTIVE for s in states):
                last_move = time.time()
            if not pending or all(j.done() for j in jobs) or time.time() - last_move > stall_s:
                break
            time.sleep(poll_s)
        if pending:  # the scheduler's last word can precede the last tile file on a shared filesystem
            time.sleep(poll_s)
            arrived()
    failed = [f"{j.job_id} {'raised' if failure == 'error' else failure}" for j in jobs
              for failure in [_failure(j)] if failure]
    if failed:
        print(f"{len(failed)} array tasks failed ({', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}); "
              f"landscape-status {run.path} shows their logs")
        if any(f.endswith("TIMEOUT") for f in failed):
            print("tasks killed at their time limit lost only their unfinished tiles: give the launcher a longer "
                  "time limit (or fewer tiles_per_task) and run the same command again")
    elif pending:
        print(f"{len(pending)} tiles were not written and no task reports a failure; "
              f"landscape-status {run.path} shows what the scheduler says")


def _failure(job: submitit.Job) -> str:
    """'error' if the task raised (its own result file says so), a scheduler state that means it was
    killed (CANCELLED, TIMEOUT, ...), else ''. sacct may lag the result file by a second or two."""
    path = job.paths.result_pickle
    if path.exists():
        try:
            return "error" if submitit.core.utils.pickle_load(path)[0] == "error" else ""
        except Exception:  # noqa: BLE001 - a half-written result: the scheduler's word instead
            pass
    state = job.state.split()[0].upper()
    return state if state in FAILED else ""


def task_view(run: RunDir, tile_ids: set[int]) -> dict[int, tuple[dict[str, Any], str, str]]:
    """For those of `tile_ids` a recorded array holds: (the record, task index, scheduler state) of the latest task
    holding each; the scheduler asked once per array, through the backend that submitted it (UNKNOWN where it
    cannot be asked)."""
    latest: dict[int, tuple[dict[str, Any], str]] = {}
    for entry in records(run):
        for index, tids in entry["tasks"].items():
            for tid in tids:
                latest[tid] = (entry, index)
    states: dict[tuple[str, str], dict[str, str]] = {}
    view = {}
    for tid in sorted(tile_ids & set(latest)):
        entry, index = latest[tid]
        key = (entry["backend"], entry["array"])
        if key not in states:
            try:
                states[key] = get(entry["backend"]).task_states(entry)
            except (OSError, subprocess.SubprocessError):
                states[key] = {}
        view[tid] = (entry, index, states[key].get(index, "UNKNOWN"))
    return view


def held_line(run: RunDir, view: dict[int, tuple[dict[str, Any], str, str]]) -> str:
    """'' unless tiles of `view` are queued or running in an array: how many, and how to wait or to cancel it."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    held = 0
    for entry, _, state in view.values():
        if state in ACTIVE:
            live[(entry["backend"], entry["array"])] = entry
            held += 1
    if not held:
        return ""
    names = ", ".join(f"{backend} array {array}" for backend, array in live)
    cancel = "; ".join(get(entry["backend"]).cancel(entry) for entry in live.values())
    return (f"{held} {'tile is' if held == 1 else 'tiles are'} queued or running in {names}: wait for "
            f"{'it' if len(live) == 1 else 'them'} (landscape-status {run.path}), or cancel with: {cancel}")


def log_tail(entry: dict[str, Any], index: str, lines: int = 3) -> str:
    """The last lines of a task's stderr (submitit's `<array>_<index>_0_log.err`)."""
    path = Path(entry["folder"]) / f"{entry['array']}_{index}_0_log.err"
    if not path.is_file():
        return ""
    text = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(text[-lines:])


def backend(name: str, check: Callable[[Mapping[str, Any]], A], executor: Callable[[Path, A], submitit.Executor],
            array_limit: Callable[[A], int], task_states: Callable[[dict[str, Any]], dict[str, str]],
            cancel: Callable[[dict[str, Any]], str], info: Callable[[A], dict[str, Any]] = lambda settings: {}
            ) -> Backend:
    """A backend that submits job arrays. `array_limit`: the scheduler's tasks per array, asked only where
    launcher.max_array_size is null; `cancel`: the command that cancels a recorded array; `info`: what to record
    with each submission for `task_states`."""
    def plan(tile_ids: list[int], settings: A) -> TaskPlan:
        limit = (settings.max_array_size or array_limit(settings)) if tile_ids else 1  # no query for nothing
        return TaskPlan(task_groups(tile_ids, settings.tiles_per_task, limit), settings.tiles_per_task,
                        settings.parallelism)

    def run(run_dir: RunDir, tile_ids: list[int], settings: A) -> None:
        jobs = submit(run_dir, plan(tile_ids, settings), name, lambda folder: executor(folder, settings),
                      info(settings))
        if settings.wait:
            wait(run_dir, jobs, tile_ids, settings.poll_seconds, settings.stall_minutes * 60)

    return Backend(name=name, submits=True, workers_here=False, every_rank=False, computes=True, check=check,
                   run=run, plan=plan, task_states=task_states, cancel=cancel)
