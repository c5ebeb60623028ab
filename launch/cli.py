"""What every command shares: argv handling and turning a UserError into one clear line."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable

import yaml

from landscape.errors import UserError

from .config import volatile


PATH_KEYS = ("checkpoint", "directions.start", "directions.checkpoints", "data.path", "data.root")


def user_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Print `error: ...` and exit 2 on bad input instead of a traceback."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return wrapper


def positional_run_dir(argv: list[str]) -> list[str]:
    """`landscape-plot RUN_DIR k=v ...` -> `run.dir=RUN_DIR k=v ...`."""
    if argv and "=" not in argv[0] and not argv[0].startswith("-"):
        return [f"run.dir={argv[0]}"] + argv[1:]
    return argv


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _absolute(value: str) -> str:
    """One path, or a `[a,b,...]` list of paths, made absolute (interpolations left alone)."""
    if value.startswith("[") and value.endswith("]"):
        return "[" + ",".join(_absolute(v.strip()) for v in value[1:-1].split(",") if v.strip()) + "]"
    if not value or "${" in value or value in ("null", "???"):
        return value
    return str(Path(value.strip("'\"")).expanduser().absolute())


def absolute_paths(argv: list[str]) -> list[str]:
    """Files typed relative to the current folder, made absolute: a resume from another folder, and a job
    that starts elsewhere (PBS starts in $HOME), then read the same files."""
    return [f"{o.split('=', 1)[0]}={_absolute(o.split('=', 1)[1])}" if "=" in o and _key(o) in PATH_KEYS else o
            for o in argv]


def with_saved_overrides(argv: list[str]) -> list[str]:
    """If `run.dir=D` names an existing run, its saved value-changing overrides come first and argv
    refines them; how it ran (launcher, device, plots) applies to the command that said it only.
    Paths in argv are made absolute first."""
    argv = absolute_paths(argv)
    run_dirs = [a.split("=", 1)[1] for a in argv if _key(a) == "run.dir"]
    saved_file = Path(run_dirs[-1]) / "run.yaml" if run_dirs else None
    if not saved_file or not saved_file.is_file():
        return argv
    saved = yaml.safe_load(saved_file.read_text()).get("overrides", [])
    merged = {_key(o): o for o in saved if not volatile(_key(o))}
    merged.update({_key(o): o for o in argv})
    return list(merged.values())
