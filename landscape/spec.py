"""Build objects from `{_target_: "pkg.mod.factory", **kwargs}` specs without Hydra (compute nodes)."""
import ast
import importlib
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

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


def local_imports(module: Path, package: str) -> list[Path]:
    """The `.py` files beside `module` (of `package`, "" at the top level) that it imports, and those that they
    import, read from their import statements: what its values may depend on in its folder, not the folder's
    other files. An import by `importlib` or `exec` is not seen; nor are packages and modules elsewhere."""
    found: set[Path] = set()
    todo = [module]
    while todo:
        for name in _imported_names(todo.pop(), package):
            path = module.parent / f"{name}.py"
            if path != module and path not in found and path.is_file():
                found.add(path)
                todo.append(path)
    return sorted(found)


def _imported_names(path: Path, package: str) -> Iterator[str]:
    """The names a module's imports may give to modules of its own folder (its package, or the top level)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (SyntaxError, ValueError):  # importing it fails, with Python's own message
        return
    own = f"{package}." if package else ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level <= 1:  # absolute, or relative to its own folder
            base = ".".join(filter(None, [package, node.module])) if node.level else node.module or ""
            names = [base] if node.module else []
            names += [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith(own):
                yield name[len(own):].partition(".")[0]
