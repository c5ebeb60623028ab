"""What every command shares: argv handling, `--help`, and turning bad input or Ctrl-C into one clear line."""
from __future__ import annotations

import functools
import os
import select
import sys
from pathlib import Path
from typing import Callable

from landscape.errors import UserError

from jobs.run import RunDir
from .config import CONF_DIR, volatile

HELP_FLAGS = ("-h", "--help")
Main = Callable[[list[str]], "int | None"]


PATH_KEYS = ("checkpoint", "directions.start", "directions.checkpoints", "directions.points", "data.path",
             "data.root", "plot.dir")
# The conf/ file each command composes; landscape-status composes none (it takes a run directory only).
CONFIGS = {"launch.surface": "surface", "launch.plots": "plot", "launch.train": "train"}


def usage(doc: str, conf: str | None) -> str:
    """The command's docstring, then how settings are given and where their defaults live."""
    text = (doc or "").strip()
    if conf:
        text += ("\n\nSettings are key=value overrides (Hydra syntax: 'key=[1,2]' for a list, "
                 "+key=value adds a key);\n"
                 f"every default, with a comment, lives in {CONF_DIR / (conf + '.yaml')}\n"
                 f"and in the groups beside it (model/, data/, ...).")
    return text + "\nREADME.md explains the workflow, the run directory and every backend."


def user_errors(main: Main) -> Callable[[list[str] | None], int]:
    """A console script's main(argv): `-h`/`--help` prints its usage (exit 0); bad input (UserError) prints one
    `error: ...` line (exit 2), Ctrl-C one `interrupted` line (exit 130), and a reader that closed the pipe
    (`| head`) nothing (exit 1); never a traceback."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            if any(a in HELP_FLAGS for a in args):
                module = sys.modules[main.__module__]  # `python -m launch.surface`: __main__, spec launch.surface
                name = module.__spec__.name if module.__spec__ else module.__name__
                print(usage(module.__doc__ or "", CONFIGS.get(name)))
                return _flushed(0)
            return _flushed(main(args) or 0)
        except BrokenPipeError:
            if not _stdout_reader_gone():  # another pipe (a worker's): a real error
                raise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the Python docs' recipe: quiet exit
            return 1
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as err:
            print("interrupted" + (f": {err}" if str(err) else ""), file=sys.stderr)
            return 130
    return wrapper


def _flushed(rc: int) -> int:
    """`rc`, once stdout is flushed: a closed pipe shows here, not in the interpreter's own flush at exit."""
    sys.stdout.flush()
    return rc


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader closed it (`| head`): poll reports an error on its write end."""
    poll = select.poll()
    poll.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


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
    that starts elsewhere (some schedulers start it in $HOME), then read the same files."""
    return [f"{o.split('=', 1)[0]}={_absolute(o.split('=', 1)[1])}" if "=" in o and _key(o) in PATH_KEYS else o
            for o in argv]


def with_saved_overrides(argv: list[str]) -> list[str]:
    """If `run.dir=D` names an existing run, its saved value-changing overrides come first and argv
    refines them; how it ran (launcher, device, plots) applies to the command that said it only.
    Paths in argv are made absolute first."""
    argv = absolute_paths(argv)
    run_dirs = [a.split("=", 1)[1] for a in argv if _key(a) == "run.dir"]
    run = RunDir(run_dirs[-1]) if run_dirs else None
    if run is None or not run.config_file.is_file():
        return argv
    merged = {_key(o): o for o in run.saved.get("overrides", []) if not volatile(_key(o))}
    merged.update({_key(o): o for o in argv})
    return list(merged.values())
