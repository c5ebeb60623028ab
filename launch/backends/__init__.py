"""One module per way of running tiles. A backend only answers: run these tile ids of this run."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # submitit imports the pbs plugin from here: keep that import free of torch
    from jobs.run import RunDir

Backend = Callable[["RunDir", list[int], dict[str, Any]], None]


def get(name: str) -> Backend:
    """The backend's `run` function, imported only when chosen (submitit is needed by slurm/pbs only)."""
    from importlib import import_module

    from landscape.errors import UserError

    if name == "none":
        return lambda run, ids, cfg: None
    try:
        return import_module(f"launch.backends.{name}").run
    except ModuleNotFoundError as err:
        if err.name == f"launch.backends.{name}":
            raise UserError(f"launcher '{name}' is unknown: use local, slurm, pbs, mpi or none") from err
        raise
