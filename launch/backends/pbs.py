"""PBS backend: PBS Pro / OpenPBS (`#PBS -J`) or Torque (`#PBS -t`) job arrays, k tiles per task,
through the submitit executor in `pbs_submitit` (`AutoExecutor(cluster="pbs")`)."""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import submitit

from landscape.errors import UserError
from . import arrays, slurm
from .pbs_submitit import FLAVORS, mem_string, parse_status, pbs_targets, qstat_command, slurm_wrapper
from .settings import Reader


@dataclass(frozen=True)
class PbsSettings(arrays.ArraySettings):
    flavor: str                  # pro (PBS Pro / OpenPBS) or torque
    queue: str | None
    walltime: float              # minutes per array task (H:MM:SS kept to the second)
    select: str | None           # pro only: the whole select statement
    env: dict[str, Any]          # variables exported in the job script
    extra: tuple[str, ...]       # more directives, each written as "#PBS <entry>"


def check(values: Mapping[str, Any]) -> PbsSettings:
    """Every launcher.* key of conf/launcher/pbs.yaml, checked."""
    read = Reader(values, PbsSettings)
    settings = PbsSettings(**arrays.read_settings(read), flavor=read.choice("flavor", FLAVORS),
                           queue=read.text("queue"), walltime=read.minutes("walltime", seconds=True), select=read.text("select"),
                           env=read.table("env"), extra=read.lines("extra"))
    if settings.select and settings.flavor != "pro":
        raise UserError(f"launcher.select is for flavor=pro only: Torque has no select statement; use "
                        f"launcher.cpus_per_task, gpus_per_task, mem_gb or launcher.extra")
    return settings


def array_limit(settings: PbsSettings) -> int:
    """Tasks per array: the server's limit (PBS Pro `max_array_size`, Torque `max_job_array_size`), else 1000.
    Under Slurm's qsub wrapper, Slurm's MaxArraySize."""
    if slurm_wrapper():
        return slurm.array_limit(settings)
    attribute = "max_array_size" if settings.flavor == "pro" else "max_job_array_size"
    try:
        out = subprocess.run(["qmgr", "-c", f"list server {attribute}"], capture_output=True, text=True,
                             timeout=30).stdout
        match = re.search(rf"{attribute}\s*=\s*(\d+)", out)
        return int(match.group(1)) if match else 1000
    except (OSError, subprocess.TimeoutExpired):
        return 1000


def parameters(settings: PbsSettings) -> dict[str, Any]:
    """The launcher settings as PbsExecutor parameters (the job script's knobs)."""
    params = {"flavor": settings.flavor, "job_name": settings.job_name, "queue": settings.queue,
              "account": settings.account, "walltime": settings.walltime, "ncpus": settings.cpus_per_task,
              "ngpus": settings.gpus_per_task, "mem": mem_string(settings.mem_gb) if settings.mem_gb else None,
              "select": settings.select, "array_parallelism": settings.parallelism, "setup": list(settings.setup),
              "env": dict(settings.env), "directives": list(settings.extra)}
    return {k: v for k, v in params.items() if v is not None}


def executor(folder: Path, settings: PbsSettings) -> submitit.Executor:
    """A submitit PBS executor, found through submitit's plugin entry points."""
    ex = submitit.AutoExecutor(folder=folder, cluster="pbs", pbs_python=settings.python or sys.executable)
    ex.update_parameters(**{f"pbs_{k}": v for k, v in parameters(settings).items()})
    return ex


def task_states(entry: dict[str, Any]) -> dict[str, str]:
    """State of each task of a recorded submission, from `qstat -f -F json -x -t` (PBS Pro) or
    `qstat -f -t` (Torque); under Slurm's qsub wrapper, from sacct."""
    plain = list(entry["tasks"]) == [entry["array"]]
    targets = [entry["array"]] if plain else pbs_targets([f"{entry['array']}_0"])
    out = subprocess.run(qstat_command(entry.get("flavor", "pro"), targets), capture_output=True, text=True,
                         timeout=60).stdout
    return task_view(entry["array"], parse_status(entry.get("flavor", "pro"), out))


def task_view(array: str, states: dict[str, str]) -> dict[str, str]:
    """{job id: state} -> {index: state} for this array's tasks (a one-task submission is a plain job,
    recorded under its own id, since PBS Pro refuses a one-element array)."""
    out = {}
    for job_id, state in states.items():
        base, _, index = job_id.partition("_")
        if base == array:
            out[index or base] = state
    return out


def cancel(entry: dict[str, Any]) -> str:
    """The command that cancels a recorded submission: `qdel '1234[]'` (an array), `qdel 1234` (one task); under
    Slurm's qsub wrapper, scancel."""
    if slurm_wrapper():
        return f"scancel {entry['array']}"
    return f"qdel {entry['array']}" if list(entry["tasks"]) == [entry["array"]] else f"qdel '{entry['array']}[]'"


BACKEND = arrays.backend("pbs", check, executor, array_limit, task_states, cancel,
                         info=lambda settings: {"flavor": settings.flavor})
