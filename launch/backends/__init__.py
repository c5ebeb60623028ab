"""One module per way of running tiles, each with a module-level `BACKEND` that says what it can do.

The driver asks these capabilities, never a backend's name: a new backend is one new module here plus its
`conf/launcher/<name>.yaml`. Kept free of torch and submitit (the PBS submitit plugin imports this package).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Callable, Mapping

from landscape.errors import UserError
from .settings import Settings

if TYPE_CHECKING:
    from jobs.run import RunDir


@dataclass(frozen=True)
class TaskPlan:
    """How a submitting backend groups tiles: arrays of tasks, each task a list of tile ids."""
    arrays: list[list[list[int]]]
    tiles_per_task: int
    parallelism: int | None  # at most this many tasks running at once; None: the scheduler's own limit


@dataclass(frozen=True)
class Backend:
    """A way of running tiles: its capabilities, its settings check, and the hooks its capabilities need."""
    name: str
    submits: bool       # submits to a scheduler and may return before tiles exist (launcher.wait=false; status follows)
    workers_here: bool  # workers run on this machine: eval.device must exist here
    every_rank: bool    # every MPI rank runs the command; `ranks` lets rank 0 drive and the others compute
    computes: bool      # false: only reduce and plot what the tiles hold
    check: Callable[[Mapping[str, Any]], Settings]          # every launcher.* key parsed and checked
    run: Callable[[RunDir, list[int], Any], None]           # compute (or submit) these tiles with the checked settings
    plan: Callable[[list[int], Any], TaskPlan] | None = None  # submits: the grouping the dry run shows
    task_states: Callable[[dict[str, Any]], dict[str, str]] | None = None  # submits: {task index: state} of a record
    cancel: Callable[[dict[str, Any]], str] | None = None  # submits: the scheduler's command cancelling a record's array
    ranks: Callable[[Callable[[], int]], int] | None = None  # every_rank: each rank's entry around the driver

    @property
    def elsewhere(self) -> bool:
        """Tiles are computed on other machines (compute nodes), which must see the run directory."""
        return self.computes and not self.workers_here

    def __post_init__(self) -> None:
        needs = {"plan": self.submits, "task_states": self.submits, "cancel": self.submits, "ranks": self.every_rank}
        missing = [hook for hook, needed in needs.items() if needed and getattr(self, hook) is None]
        if missing:
            raise TypeError(f"backend {self.name} lacks {', '.join(missing)}, which its capabilities need")


@dataclass(frozen=True)
class Launcher:
    """The chosen backend and its checked settings."""
    backend: Backend
    settings: Settings


def names() -> list[str]:
    """The launchers a user can choose: one conf/launcher/<name>.yaml each."""
    from launch.config import choices  # Hydra and torch, only when asked

    return choices("launcher")


def get(name: str) -> Backend:
    """`launch.backends.<name>.BACKEND`, imported only when chosen (submitit is needed by some only)."""
    module = None
    if name.isidentifier():
        try:
            module = import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    backend = getattr(module, "BACKEND", None)
    if not isinstance(backend, Backend):
        raise UserError(f"launcher '{name}' is unknown: use one of {', '.join(names())}")
    return backend


def check(launcher: Mapping[str, Any]) -> Launcher:
    """launcher.* parsed and checked, every key, before anything is written or started (MPI included); refused
    where the command was started as several MPI ranks but the backend runs once per command (every rank
    would compute the whole surface)."""
    backend = get(str(launcher.get("name")))
    ranks = max(int(os.environ.get(v, "1") or 1) for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))
    if ranks > 1 and not backend.every_rank:
        every_rank = [f"launcher={n}" for n in names() if get(n).every_rank]
        raise UserError(f"started as {ranks} MPI ranks but launcher={backend.name} runs once per command: every "
                        f"rank would compute the whole surface; use {' or '.join(every_rank)}")
    return Launcher(backend, backend.check(launcher))
