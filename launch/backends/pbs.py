"""PBS backend: PBS Pro / OpenPBS (`#PBS -J`) or Torque (`#PBS -t`) job arrays, k tiles per task,
through the submitit executor in `pbs_submitit` (`AutoExecutor(cluster="pbs")`)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import submitit

from jobs.run import RunDir
from landscape.errors import UserError
from . import arrays
from .pbs_submitit import FLAVORS, mem_string, minutes, parse_status, pbs_targets, qstat_command, slurm_wrapper


def max_array_size(cfg: dict[str, Any]) -> int:
    """Tasks per array: the configured value, else the server's limit (PBS Pro `max_array_size`,
    Torque `max_job_array_size`), else 1000. Under Slurm's qsub wrapper, Slurm's MaxArraySize."""
    if cfg.get("max_array_size"):
        return int(cfg["max_array_size"])
    if slurm_wrapper():
        from . import slurm
        return slurm.max_array_size(cfg)
    attribute = "max_array_size" if cfg.get("flavor", "pro") == "pro" else "max_job_array_size"
    try:
        out = subprocess.run(["qmgr", "-c", f"list server {attribute}"], capture_output=True, text=True,
                             timeout=30).stdout
        match = re.search(rf"{attribute}\s*=\s*(\d+)", out)
        return int(match.group(1)) if match else 1000
    except (OSError, subprocess.TimeoutExpired):
        return 1000


def parameters(cfg: dict[str, Any]) -> dict[str, Any]:
    """The launcher config as PbsExecutor parameters (the job script's knobs)."""
    if cfg.get("flavor", "pro") not in FLAVORS:
        raise UserError(f"launcher.flavor must be one of {', '.join(FLAVORS)}, not {cfg.get('flavor')!r}")
    params = {"flavor": cfg.get("flavor", "pro"), "job_name": cfg.get("job_name") or "landscape",
              "queue": cfg.get("queue"), "account": cfg.get("account"), "walltime": minutes(cfg["walltime"]),
              "ncpus": int(cfg["cpus_per_task"]), "ngpus": int(cfg["gpus_per_task"]),
              "mem": mem_string(float(cfg["mem_gb"])) if cfg.get("mem_gb") else None, "select": cfg.get("select"),
              "array_parallelism": cfg.get("parallelism"), "setup": list(cfg.get("setup") or []),
              "env": dict(cfg.get("env") or {}), "directives": list(cfg.get("extra") or [])}
    return {k: v for k, v in params.items() if v is not None}


def executor(folder: Path, cfg: dict[str, Any]) -> submitit.Executor:
    """A submitit PBS executor, found through submitit's plugin entry points."""
    ex = submitit.AutoExecutor(folder=folder, cluster="pbs", pbs_python=cfg.get("python") or sys.executable)
    ex.update_parameters(**{f"pbs_{k}": v for k, v in parameters(cfg).items()})
    return ex


def run(run: RunDir, tile_ids: list[int], cfg: dict[str, Any]) -> None:
    jobs = arrays.submit(run, tile_ids, cfg, "pbs", lambda folder: executor(folder, cfg), max_array_size(cfg),
                         info={"flavor": cfg.get("flavor", "pro")})
    if cfg.get("wait", True):
        arrays.wait(run, jobs, tile_ids, float(cfg["poll_seconds"]), float(cfg["stall_minutes"]) * 60)


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
