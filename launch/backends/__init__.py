"""One module per way of running tiles. A backend only answers: run these tile ids of this run."""
from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # submitit imports the pbs plugin from here: keep that import free of torch
    from jobs.run import RunDir

Backend = Callable[["RunDir", list[int], dict[str, Any]], None]


def _module(name: str) -> ModuleType:
    """The backend's module, imported only when chosen (submitit is needed by slurm/pbs only)."""
    from importlib import import_module

    from landscape.errors import UserError

    try:
        return import_module(f"launch.backends.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"launch.backends.{name}":
            raise UserError(f"launcher '{name}' is unknown: use local, slurm, pbs, mpi or none") from err
        raise


def get(name: str) -> Backend:
    """The backend's `run` function."""
    if name == "none":
        return lambda run, ids, cfg: None
    return _module(name).run


def check(cfg: dict[str, Any]) -> None:
    """launcher.* checked before anything is written: the switches every launcher has, then the backend's own
    settings where it defines `check(cfg)`."""
    from landscape.errors import UserError

    for key in ("wait", "dry_run"):
        if not isinstance(cfg.get(key, False), bool):
            raise UserError(f"launcher.{key} is {cfg[key]!r}: use true or false")
    if cfg["name"] != "none":
        getattr(_module(cfg["name"]), "check", lambda cfg: None)(cfg)
