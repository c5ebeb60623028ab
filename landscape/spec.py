"""Build objects from `{_target_: "pkg.mod.factory", **kwargs}` specs without Hydra (compute nodes)."""
import importlib
import sys
from typing import Any, Iterable, Mapping

from .errors import UserError

META_KEYS = ("_target_", "name", "path")


def importable(folders: Iterable[str] | str | None) -> None:
    """Put `folders` (a spec's `path`: the user's own code) on sys.path, after what is installed (never
    shadowing it), so that its `_target_` imports in this process whoever started it (a console script, a
    scheduler, mpirun)."""
    for folder in [folders] if isinstance(folders, str) else list(folders or []):
        if folder not in sys.path:
            sys.path.append(folder)


def locate(target: str) -> Any:
    """Import `pkg.mod.attr`; a clear error names the part that failed."""
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(f"cannot import '{target}' ({err}); check the _target_ of your config") from err


def instantiate(spec: Mapping[str, Any], **extra: Any) -> Any:
    """Call `spec['_target_']` with the other keys of the spec (meta keys dropped) and `extra`."""
    if "_target_" not in spec:
        raise UserError(f"config {dict(spec)} has no _target_ to build")
    kwargs = {k: v for k, v in spec.items() if k not in META_KEYS}
    importable(spec.get("path"))
    try:
        return locate(spec["_target_"])(**kwargs, **extra)
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot build {spec['_target_']} with {kwargs}: {err}") from err
