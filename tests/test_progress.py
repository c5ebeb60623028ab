"""Progress off a terminal is plain lines (a log holds no carriage return); on a terminal, a live bar."""
import io
import os
import signal

import pytest

from conftest import cli
from launch import surface
from launch.progress import Progress


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_come_per_tenth_or_after_the_interval_and_the_last_says_how_long():
    clock, out = Clock(), io.StringIO()
    with Progress(100, "surface", stream=out, every_s=30, clock=clock) as bar:
        for t, n in [(1, 5), (2, 6), (40, 1), (41, 1), (45, 87)]:
            clock.now = t
            bar.update(n)
        clock.now = 50
    assert out.getvalue().splitlines() == [
        "surface: 11/100 points (11%), 5.5 points/s, about 00:00:16 left",  # a tenth crossed
        "surface: 12/100 points (12%), 0.3 points/s, about 00:04:53 left",  # 38 s since the last line
        "surface: 100/100 points (100%), 2.0 points/s, 00:00:50 in all",    # the total, reached at t=45, is for close
    ]


def test_a_terminal_gets_the_live_bar():
    out = Terminal()
    with Progress(10, "surface", stream=out) as bar:
        bar.update(10)
    assert "\r" in out.getvalue() and "10/10" in out.getvalue()


@pytest.fixture
def restored(monkeypatch):
    """What an in-process local worker changes: its environment (monkeypatch puts it back) and SIGTERM handler."""
    for key in ("CUDA_VISIBLE_DEVICES", "LANDSCAPE_THREADS"):
        monkeypatch.setenv(key, os.environ.get(key, ""))
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, sigterm)


def progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("surface: ")]


def test_a_run_off_a_terminal_writes_plain_lines(base_args, tmp_path, capsys, restored):
    rc = surface.main([*base_args, "launcher=local", "grid.resolution=9", "grid.tile=3", f"run.dir={tmp_path / 'R'}"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == 0 and "\r" not in text
    lines = progress_lines(text)
    assert len(lines) >= 2 and "left" in lines[0]
    assert lines[-1].startswith("surface: 81/81 points (100%)") and lines[-1].endswith("in all")


@pytest.mark.cluster
def test_slurm_task_logs_and_the_driver_hold_no_carriage_return(slurm, base_args, tmp_path):
    run = tmp_path / "S"
    out = cli("landscape-surface", *base_args, "grid.resolution=5", "grid.tile=3", "launcher=slurm",
              "launcher.partition=debug", "launcher.tiles_per_task=2", f"run.dir={run}")
    assert "\r" not in out.stdout + out.stderr
    assert progress_lines(out.stderr)[-1].startswith("surface: 25/25 points (100%)")
    logs = sorted((run / "logs").glob("*/*_log.*"))
    assert len(logs) == 4  # two tasks, .out and .err each
    assert [p.name for p in logs if b"\r" in p.read_bytes()] == []
