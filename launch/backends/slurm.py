"""Slurm backend: submitit job arrays (`sbatch --array=0-N%parallelism`), k tiles per task."""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import submitit

from . import arrays
from .settings import Reader


@dataclass(frozen=True)
class SlurmSettings(arrays.ArraySettings):
    partition: str | None
    qos: str | None
    time: int                    # minutes per array task
    max_requeue: int             # time-outs requeue the task this many times
    extra: dict[str, Any]        # more sbatch directives, e.g. {constraint: a100}


def check(values: Mapping[str, Any]) -> SlurmSettings:
    """Every launcher.* key of conf/launcher/slurm.yaml, checked."""
    read = Reader(values, SlurmSettings)
    return SlurmSettings(**arrays.read_settings(read), partition=read.text("partition"), qos=read.text("qos"),
                         time=read.minutes("time"), max_requeue=read.whole("max_requeue", 0),
                         extra=read.table("extra"))


def array_limit(settings: arrays.ArraySettings) -> int:
    """Tasks per array: the cluster's MaxArraySize - 1 (ids start at 0), else 1000."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"MaxArraySize\s*=\s*(\d+)", out)
        return max(1, int(match.group(1)) - 1) if match else 1000
    except (OSError, subprocess.TimeoutExpired):
        return 1000


def executor(folder: Path, settings: SlurmSettings) -> submitit.Executor:
    """A submitit Slurm executor with the launcher's knobs."""
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=settings.max_requeue,
                               slurm_python=settings.python or sys.executable)
    extra = {**settings.extra, **{k: v for k, v in (("account", settings.account), ("qos", settings.qos)) if v}}
    params = {"slurm_partition": settings.partition, "timeout_min": settings.time,
              "cpus_per_task": settings.cpus_per_task, "mem_gb": settings.mem_gb,
              "gpus_per_node": settings.gpus_per_task or None, "slurm_array_parallelism": settings.parallelism,
              "slurm_setup": list(settings.setup), "slurm_additional_parameters": extra, "name": settings.job_name}
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def _indices(spec: str) -> list[str]:
    """`3` or `[2-15%2]` or `[1,4-6]` -> the task indices."""
    out = []
    for part in spec.strip("[]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [str(i) for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _states(out: str) -> dict[str, str]:
    """`JobID|State` lines (sacct, squeue) -> {task index: state}; pending ranges expanded."""
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        if "_" not in job_id:  # a single task is submitted as a plain job, recorded under its id
            states[job_id] = state.split()[0]
        for index in _indices(job_id.split("_", 1)[1]) if "_" in job_id else ():
            states[index] = state.split()[0]
    return states


def task_states(entry: dict[str, Any]) -> dict[str, str]:
    """State of each task of a recorded array (`{index: state}`): sacct's, with squeue's word for the tasks still
    queued or running (sacct may not know an array submitted a moment ago)."""
    ask = [["sacct", "-n", "-P", "-X", "-j", entry["array"], "--format=JobID,State"],
           ["squeue", "-h", "-r", "-j", entry["array"], "-o", "%i|%T"]]
    return {k: v for cmd in ask for k, v in _states(subprocess.run(cmd, capture_output=True, text=True,
                                                                    timeout=60).stdout).items()}


def cancel(entry: dict[str, Any]) -> str:
    """The command that cancels a recorded array (every task of it)."""
    return f"scancel {entry['array']}"


BACKEND = arrays.backend("slurm", check, executor, array_limit, task_states, cancel)
