"""Build objects from `{_target_: "pkg.mod.factory", **kwargs}` specs without Hydra (compute nodes)."""
import importlib
from typing import Any, Mapping

from .errors import UserError

META_KEYS = ("_target_", "name")


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
    try:
        return locate(spec["_target_"])(**kwargs, **extra)
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot build {spec['_target_']} with {kwargs}: {err}") from err
