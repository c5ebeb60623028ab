"""Slurm backend: submitit job arrays (`sbatch --array=0-N%parallelism`), k tiles per task."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import submitit

from jobs.run import RunDir
from . import arrays


def max_array_size(cfg: dict[str, Any]) -> int:
    """Tasks per array: the configured value, else the cluster's MaxArraySize - 1 (ids start at 0)."""
    if cfg.get("max_array_size"):
        return int(cfg["max_array_size"])
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"MaxArraySize\s*=\s*(\d+)", out)
        return int(match.group(1)) - 1 if match else 1000
    except (OSError, subprocess.TimeoutExpired):
        return 1000


def executor(folder: Path, cfg: dict[str, Any]) -> submitit.Executor:
    """A submitit Slurm executor with the launcher's knobs."""
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=int(cfg["max_requeue"]),
                               slurm_python=cfg.get("python") or sys.executable)
    extra = dict(cfg.get("extra") or {})
    for key in ("account", "qos"):
        if cfg.get(key):
            extra[key] = cfg[key]
    params = {"slurm_partition": cfg.get("partition"), "timeout_min": int(cfg["time"]),
              "cpus_per_task": int(cfg["cpus_per_task"]), "mem_gb": cfg["mem_gb"],
              "gpus_per_node": int(cfg["gpus_per_task"]) or None, "slurm_array_parallelism": int(cfg["parallelism"]),
              "slurm_setup": list(cfg.get("setup") or []), "slurm_additional_parameters": extra,
              "name": cfg.get("job_name") or "landscape"}
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def run(run: RunDir, tile_ids: list[int], cfg: dict[str, Any]) -> None:
    jobs = arrays.submit(run, tile_ids, cfg, "slurm", lambda folder: executor(folder, cfg), max_array_size(cfg))
    if cfg.get("wait", True):
        arrays.wait(run, jobs, tile_ids, float(cfg["poll_seconds"]), float(cfg["stall_minutes"]) * 60)


def _indices(spec: str) -> list[str]:
    """`3` or `[2-15%2]` or `[1,4-6]` -> the task indices."""
    out = []
    for part in spec.strip("[]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [str(i) for i in range(int(lo), int(hi or lo) + 1)]
    return out


def task_states(entry: dict[str, Any]) -> dict[str, str]:
    """State of each task of a recorded array, from sacct (`{index: state}`); pending ranges expanded."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", entry["array"], "--format=JobID,State"],
                         capture_output=True, text=True, timeout=60).stdout
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        if "_" not in job_id:  # a single task is submitted as a plain job, recorded under its id
            states[job_id] = state.split()[0]
        for index in _indices(job_id.split("_", 1)[1]) if "_" in job_id else ():
            states[index] = state.split()[0]
    return states
