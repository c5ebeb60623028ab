"""One driver per run directory, and which tile files' writers are still alive.

A second `landscape-surface` on a run that is being computed would compute every missing tile again
beside the first (or submit the same arrays twice). The driver that computes holds `RUN/driver.json`
(host, pid, launcher), refreshed every HEARTBEAT seconds; another driver is refused while it lives.
A lock whose process is gone (same host), or not refreshed for STALE seconds (another host), is
taken over. Two drivers that start within the same instant on a stale lock may both win: rare, and
harmless to the values (each tile has one writer at a time and an atomic rename).
"""
from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from landscape.errors import UserError
from landscape.surface import Private, private_files

HEARTBEAT = 30.0
STALE = 150.0


@dataclass(frozen=True)
class Driver:
    """Who computes a run: what `driver.json` holds."""

    host: str
    pid: int
    launcher: str
    started: float
    start_ticks: int | None = None  # the process's start time (Linux): a reused pid is not this driver

    def describe(self) -> str:
        return (f"launcher={self.launcher}, pid {self.pid} on {self.host}, "
                f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}")


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks after boot); None where there is no /proc."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def alive(host: str, pid: int, start_ticks: int | None = None) -> bool | None:
    """Whether process `pid` on `host` still runs: True/False on this host, None (unknown) on another."""
    if host != os.uname().nodename:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start_ticks is None or _start_ticks(pid) in (None, start_ticks)


def driver_file(run_path: Path) -> Path:
    return Path(run_path) / "driver.json"


def current_driver(run_path: Path) -> Driver | None:
    """The driver computing this run now, or None (no lock, or a stale one)."""
    path = driver_file(run_path)
    try:
        driver = Driver(**json.loads(path.read_text()))
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError, TypeError):
        return None
    live = alive(driver.host, driver.pid, driver.start_ticks)
    return driver if live or (live is None and age < STALE) else None


def refuse_other(run_path: Path) -> None:
    """A UserError while another driver computes this run (checked again when the lock is taken)."""
    other = current_driver(run_path)
    if other is not None and other.pid != os.getpid():
        raise UserError(f"another landscape-surface is computing {run_path} ({other.describe()}): follow it "
                        f"with landscape-status {run_path}, or stop it first")


@contextmanager
def hold(run_path: Path, launcher: str) -> Iterator[Driver]:
    """Be the run's one driver while the block runs: refuse if another lives, refresh the lock meanwhile."""
    refuse_other(run_path)
    me = Driver(os.uname().nodename, os.getpid(), launcher, time.time(), _start_ticks(os.getpid()))
    path = driver_file(run_path)
    tmp = path.with_name(f".driver.json.{me.pid}.tmp")
    tmp.write_text(json.dumps(asdict(me)))
    tmp.replace(path)
    clear_stale(run_path)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT):
            try:
                os.utime(path)
            except OSError:
                return

    thread = threading.Thread(target=beat, name="driver-heartbeat", daemon=True)
    thread.start()
    try:
        yield me
    finally:
        stop.set()
        try:
            if json.loads(path.read_text()).get("pid") == me.pid:
                path.unlink()
        except (OSError, ValueError):
            pass


def writers(run_path: Path) -> list[tuple[Private, bool | None]]:
    """Every temporary tile file and in-progress mark, with whether its process lives (None: unknown)."""
    folder = Path(run_path) / "tiles"
    return [(p, alive(p.host, p.pid)) for p in private_files(folder)] if folder.is_dir() else []


def clear_stale(run_path: Path) -> int:
    """Remove the temporary files and marks of dead processes on this host (a killed worker's leftovers)."""
    stale = [p for p, live in writers(run_path) if live is False]
    for p in stale:
        p.path.unlink(missing_ok=True)
    return len(stale)
