"""What every command shares: argv handling, `--help`, and turning bad input or Ctrl-C into one clear line."""
from __future__ import annotations

import difflib
import functools
import os
import select
import sys
from pathlib import Path
from typing import Callable

import yaml

from landscape.errors import UserError

from landscape.models.zoo import WEIGHT_NAME

from jobs.run import RunDir
from .config import CONF_DIR, PATH_KEYS, full_key, hydra_value, key_of, values_of, volatile

HELP_FLAGS = ("-h", "--help")
Main = Callable[[list[str]], "int | None"]


# The conf/ file each command composes; landscape-status composes none (it takes a run directory only).
CONFIGS = {"launch.surface": "surface", "launch.plots": "plot", "launch.train": "train"}
# Options beside -h/--help, per command; any other argument starting with '-' is refused with the one meant.
OPTIONS = {"launch.stats": ("--json",)}


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
        module = sys.modules[main.__module__]  # `python -m launch.surface`: __main__, spec launch.surface
        name = module.__spec__.name if module.__spec__ else module.__name__
        try:
            if any(a in HELP_FLAGS for a in args):
                print(usage(module.__doc__ or "", CONFIGS.get(name)))
                return _flushed(0)
            check_options(args, (*OPTIONS.get(name, ()), *HELP_FLAGS))
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


def check_options(args: list[str], known: tuple[str, ...]) -> None:
    """A UserError for the first argument that looks like an option (`-x`, `--xyz`, no `=`) but is none of
    `known`, naming the closest one."""
    for arg in args:
        if arg.startswith("-") and "=" not in arg and arg not in known:
            close = difflib.get_close_matches(arg, known, n=1)
            raise UserError(f"unknown option {arg}" + (f" (did you mean {close[0]}?)" if close else "")
                            + f": the options are {', '.join(known)}")


def _flushed(rc: int) -> int:
    """`rc`, once stdout is flushed: a closed pipe shows here, not in the interpreter's own flush at exit."""
    sys.stdout.flush()
    return rc


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader closed it (`| head`): poll reports an error on its write end."""
    poll = select.poll()
    poll.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


def _absolute(value: str) -> str | list[str]:
    """One path, or a list of paths, made absolute (interpolations and torchvision weight names left alone)."""
    values = values_of(value)
    if isinstance(values, list):
        return [str(_absolute(v)) for v in values]
    if not values or values.startswith("${") or values in ("null", "???") or WEIGHT_NAME.fullmatch(values):
        return values
    return str(Path(values).expanduser().absolute())


def absolute_paths(argv: list[str]) -> list[str]:
    """Files typed relative to the current folder, made absolute: a resume from another folder, and a job
    that starts elsewhere (some schedulers start it in $HOME), then read the same files. A list is written
    back in Hydra's list syntax, each path quoted (config.load quotes single paths)."""
    out = []
    for o in argv:
        if "=" not in o or key_of(o) not in PATH_KEYS:
            out.append(o)
            continue
        value = _absolute(o.split("=", 1)[1])
        out.append(f"{o.split('=', 1)[0]}={hydra_value(value) if isinstance(value, list) else value}")
    return out


def _same_choice(run: RunDir, argv: list[str]) -> None:
    """A conf group's choice typed at a run (directions=plane at a line run) whose saved `group.*` keys it
    lacks: those keys would be refused as if typed, so the run's choice is named instead."""
    saved, typed = run.saved.get("overrides", []), {key_of(o) for o in argv}
    for override in argv:
        group, choice = key_of(override), str(values_of(override.split("=", 1)[1]))
        conf = CONF_DIR / group / f"{choice}.yaml"
        if "." in group or not conf.is_file():
            continue
        theirs = {key_of(o) for o in saved if key_of(o).startswith(f"{group}.") and not volatile(key_of(o))} - typed
        if theirs - {f"{group}.{k}" for k in yaml.safe_load(conf.read_text()) or {}}:
            was = (run.config.get(group) or {}).get("kind") or next(
                (str(values_of(o.split("=", 1)[1])) for o in saved if key_of(o) == group), "another")
            raise UserError(f"{run.path} holds a {group}={was} run, not {group}={choice}: give a new run.dir for "
                            f"this surface (or leave {group}= out to resume that one)")


def with_saved_overrides(argv: list[str]) -> list[str]:
    """If `run.dir=D` names an existing run, its saved value-changing overrides come first and argv
    refines them; how it ran (launcher, device, plots) applies to the command that said it only.
    Paths in argv are made absolute first."""
    argv = absolute_paths(argv)
    run_dirs = [values_of(a.split("=", 1)[1]) for a in argv if key_of(a) == "run.dir"]
    run = RunDir(str(run_dirs[-1])) if run_dirs else None
    if run is None or not run.config_file.is_file():
        return argv
    _same_choice(run, argv)
    # keyed by the full key: a resume's checkpoint.path=X replaces a saved checkpoint=Y
    merged = {full_key(key_of(o)): o for o in run.saved.get("overrides", []) if not volatile(key_of(o))}
    merged.update({full_key(key_of(o)): o for o in argv})
    return list(merged.values())
