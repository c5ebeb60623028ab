"""LANDSCAPE_THREADS, when set, is each local CPU worker's torch thread count (as for MPI ranks); the test
processes set it to 1 (conftest.py)."""
from landscape.hardware import cpu_share
from launch.backends.local import worker_envs


def test_local_cpu_workers_take_landscape_threads_when_set(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_THREADS", "3")
    assert [env["LANDSCAPE_THREADS"] for env in worker_envs(2)] == ["3", "3"]
    monkeypatch.delenv("LANDSCAPE_THREADS")
    assert [env["LANDSCAPE_THREADS"] for env in worker_envs(2)] == [str(cpu_share(2))] * 2
