"""One driver per run: a second one is refused while the first computes; a dead one's leftovers are not
counted as running and are cleared by the next driver."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN, cli, wait_for
from launch import lock, status, surface
from landscape.errors import UserError


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(tmp_path):
    other = subprocess.Popen(["sleep", "60"])
    try:
        info = {"host": os.uname().nodename, "pid": other.pid, "launcher": "slurm", "started": time.time(),
                "start_ticks": lock._start_ticks(other.pid)}
        lock.driver_file(tmp_path).write_text(json.dumps(info))
        with pytest.raises(UserError, match=f"launcher=slurm, pid {other.pid} on"):
            with lock.hold(tmp_path, "local"):
                pass
        assert json.loads(lock.driver_file(tmp_path).read_text())["pid"] == other.pid  # not touched
    finally:
        other.kill()
        other.wait()
    with lock.hold(tmp_path, "local") as me:  # its process is gone: taken over
        assert lock.current_driver(tmp_path) == me
    assert not lock.driver_file(tmp_path).exists()


def test_another_hosts_lock_counts_until_it_goes_stale(tmp_path):
    info = {"host": "login-7.cluster", "pid": 1234, "launcher": "slurm", "started": time.time()}
    lock.driver_file(tmp_path).write_text(json.dumps(info))
    assert lock.current_driver(tmp_path).host == "login-7.cluster"
    old = time.time() - lock.STALE - 1
    os.utime(lock.driver_file(tmp_path), (old, old))
    assert lock.current_driver(tmp_path) is None


def test_second_driver_refused_status_shows_the_first(base_args, tmp_path):
    run = tmp_path / "run"
    args = [*base_args, "grid.resolution=41", "grid.tile=2", "launcher.workers=1", f"run.dir={run}"]
    first = subprocess.Popen([str(BIN / "landscape-surface"), *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: len(list((run / "tiles").glob("*.h5"))) >= 1 or first.poll() is not None)
        assert first.poll() is None, "the first driver finished too early to test anything"
        second = cli("landscape-surface", *args, check=False)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]
        assert f"another landscape-surface is computing {run}" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        status = cli("landscape-status", run).stdout
        assert f"driver: launcher=local, pid {first.pid}" in status
        assert "to finish:" not in status
        assert "1 running" in status  # the in-process worker's mark on its current tile
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a driver that dies without a word: its lock no longer counts
        first.wait()
    assert lock.driver_file(run).exists() and lock.current_driver(run) is None


def test_a_killed_workers_leftovers_are_not_running_and_are_cleared(base_args, tmp_path, capsys):
    run = tmp_path / "run"
    args = [*base_args, "grid.resolution=6", "grid.tile=3", f"run.dir={run}"]
    assert surface.main([*args, "launcher=none"]) == 0  # the run, no tile computed (in-process: fast)
    dead, host = _dead_pid(), os.uname().nodename
    leftovers = [run / "tiles" / f".00001.h5.{host}.{dead}.run", run / "tiles" / f".00002.h5.{host}.{dead}.tmp"]
    (run / "tiles").mkdir()
    for p in leftovers:
        p.write_bytes(b"")
    capsys.readouterr()
    assert status.main([str(run)]) == 0
    shown = capsys.readouterr().out
    assert "0 running" in shown and "4 missing" in shown and "to finish:" in shown
    assert surface.main(args) == 0
    assert "4/4 tiles" in capsys.readouterr().out
    assert not any(p.exists() for p in leftovers)
    assert not lock.driver_file(run).exists()  # released at the end
