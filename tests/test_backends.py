"""Backends say what they are: every launcher setting is checked before anything is written, and the driver
asks capabilities, never names (a backend it has never heard of works through them alone)."""
from __future__ import annotations

import re
import sys
import types

import pytest
import yaml

from conftest import REPO, one_error_line
from jobs.run import RunDir
from landscape.errors import UserError
from launch import backends, status, surface
from launch.backends import Backend, TaskPlan, arrays
from launch.backends.settings import plain

BAD = {  # launcher overrides -> what the one error line says
    "slurm time not a time": (["launcher=slurm", "launcher.time=abc"], "launcher.time is 'abc': use minutes"),
    "slurm time zero": (["launcher=slurm", "launcher.time=0"], "launcher.time is 0"),
    "slurm time of 75 minutes past the hour": (["launcher=slurm", "launcher.time='1:75:00'"], "launcher.time is"),
    "pbs flavor": (["launcher=pbs", "launcher.flavor=xyz"], "launcher.flavor is 'xyz': use one of pro, torque"),
    "pbs walltime": (["launcher=pbs", "launcher.walltime=1h"], "launcher.walltime is '1h'"),
    "pbs select on torque": (["launcher=pbs", "launcher.flavor=torque", "launcher.select='2:ncpus=4'"],
                             "launcher.select is for flavor=pro only"),
    "memory below zero": (["launcher=slurm", "launcher.mem_gb=-4"], "launcher.mem_gb is -4: use a number above 0"),
    "no tiles per task": (["launcher=pbs", "launcher.tiles_per_task=0"], "launcher.tiles_per_task is 0"),
    "fractional parallelism": (["launcher=slurm", "launcher.parallelism=2.5"], "launcher.parallelism is 2.5"),
    "array size zero": (["launcher=slurm", "launcher.max_array_size=0"], "launcher.max_array_size is 0"),
    "cpus not a number": (["launcher=pbs", "launcher.cpus_per_task=many"], "launcher.cpus_per_task is 'many'"),
    "negative gpus": (["launcher=slurm", "launcher.gpus_per_task=-1"], "launcher.gpus_per_task is -1"),
    "negative requeues": (["launcher=slurm", "launcher.max_requeue=-1"], "launcher.max_requeue is -1"),
    "setup a string": (["launcher=slurm", "launcher.setup='module load cuda'"], "launcher.setup is 'module load cuda'"
                                                                                ": use a list of strings"),
    "slurm extra nested": (["launcher=slurm", "launcher.extra={a: [1]}"], "launcher.extra is {'a': [1]}: use a "
                                                                          "mapping of names to plain values"),
    "pbs extra of numbers": (["launcher=pbs", "launcher.extra=[1,2]"], "launcher.extra is [1, 2]: use a list"),
    "pbs env nested": (["launcher=pbs", "launcher.env={A: {b: 1}}"], "launcher.env is {'A': {'b': 1}}"),
    "job name a list": (["launcher=slurm", "launcher.job_name=[a]"], "launcher.job_name is ['a']: use a name"),
    "poll every 0 s": (["launcher=pbs", "launcher.poll_seconds=0"], "launcher.poll_seconds is 0"),
    "stall not a number": (["launcher=slurm", "launcher.stall_minutes=soon"], "launcher.stall_minutes is 'soon'"),
    "wait neither true nor false": (["launcher=slurm", "launcher.wait=later"], "launcher.wait is 'later': use true"),
    "dry run neither": (["launcher=mpi", "launcher.dry_run=1"], "launcher.dry_run is 1: use true or false"),
    "unknown key": (["launcher=slurm", "+launcher.tme=5"], "launcher.tme is unknown to launcher=slurm (did you "
                                                          "mean launcher.time?)"),
    "another backend's key": (["launcher=local", "+launcher.walltime=5"], "launcher.walltime is unknown to "
                                                                          "launcher=local"),
    "unknown launcher": (["launcher.name=lsf"], "launcher 'lsf' is unknown: use one of local, mpi, none, pbs, slurm"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_launcher_setting_is_one_line_and_writes_nothing(case, base_args, tmp_path, capsys):
    args, fragment = BAD[case]
    rc = surface.main([*base_args, "grid.resolution=3", *args, f"run.dir={tmp_path / 'D'}"])
    one_error_line(rc, capsys.readouterr().err, fragment)
    assert not (tmp_path / "D").exists()


def conf(name: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "launcher" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", backends.names())
def test_each_conf_key_is_a_checked_setting(name):
    """The conf file and the backend's settings name the same keys, and the defaults pass the checks."""
    launcher = backends.check(conf(name))
    assert launcher.backend.name == name
    assert set(vars(launcher.settings)) == set(conf(name)) - {"name"}


def test_time_limits_read_as_minutes_rounded_up_except_pbs_seconds():
    def minutes(name: str, key: str, value) -> float:
        return getattr(backends.check({**conf(name), key: value}).settings, key)

    assert minutes("slurm", "time", 90) == minutes("slurm", "time", "90") == minutes("slurm", "time", "1:30") == 90
    assert minutes("slurm", "time", "1:30:01") == 91 and minutes("slurm", "time", "0:00:30") == 1
    assert minutes("pbs", "walltime", "1:30:30") == 90.5 and minutes("pbs", "walltime", "0:00:30") == 0.5
    assert minutes("pbs", "walltime", 90) == 90


CAPABILITIES = {  # name: (submits, workers_here, every_rank, computes)
    "local": (False, True, False, True),
    "mpi": (False, True, True, True),
    "none": (False, False, False, False),
    "slurm": (True, False, False, True),
    "pbs": (True, False, False, True),
}


def test_capabilities_of_the_real_backends():
    assert sorted(backends.names()) == sorted(CAPABILITIES)
    for name, expected in CAPABILITIES.items():
        b = backends.get(name)
        assert (b.submits, b.workers_here, b.every_rank, b.computes) == expected, name
        assert (b.plan is not None, b.task_states is not None, b.cancel is not None, b.ranks is not None) == \
            (b.submits, b.submits, b.submits, b.every_rank), name


def test_a_capability_needs_its_hooks():
    with pytest.raises(TypeError, match="lacks plan, task_states"):
        Backend(name="half", submits=True, workers_here=False, every_rank=False, computes=True, check=plain,
                run=lambda run, tile_ids, settings: None)


def test_the_driver_names_no_backend():
    """Outside launch/backends/ the code asks capabilities: no backend's name appears, docstrings included."""
    name = re.compile(r'\b(slurm|pbs|mpi)\b|"(local|none)"')
    hits = [f"{p.name}:{n}: {line.strip()}" for p in (REPO / "launch").glob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if name.search(line)]
    assert not hits, hits


def test_ranks_under_mpirun_need_a_backend_that_runs_on_every_rank(base_args, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    rc = surface.main([*base_args, "grid.resolution=3", "launcher=local", f"run.dir={tmp_path / 'D'}"])
    one_error_line(rc, capsys.readouterr().err, "started as 3 MPI ranks but launcher=local runs once per command: "
                                                "every rank would compute the whole surface; use launcher=mpi")


@pytest.fixture
def fake(monkeypatch) -> list[list[int]]:
    """`launch.backends.fake`, a submitting backend the driver has never heard of: it records a submission of
    one task holding every tile (which then stays running) and computes nothing. Returns the tile ids it got."""
    got: list[list[int]] = []

    def run(run_dir: RunDir, tile_ids: list[int], settings) -> None:
        got.append(tile_ids)
        arrays.record(run_dir, {"round": 0, "chunk": 0, "backend": "fake", "array": "7", "submitted": 0.0,
                                "folder": str(run_dir.path / "logs"), "tasks": {"0": tile_ids}})

    module = types.ModuleType("launch.backends.fake")
    module.BACKEND = Backend(name="fake", submits=True, workers_here=False, every_rank=False, computes=True,
                             check=plain, run=run, plan=lambda tile_ids, settings: TaskPlan([[tile_ids]], 9, None),
                             task_states=lambda entry: {"0": "RUNNING"}, cancel=lambda entry: "fakecancel 7")
    monkeypatch.setitem(sys.modules, "launch.backends.fake", module)
    return got


FAKE = ["launcher=none", "launcher.name=fake"]  # a conf of the common keys only, renamed


def test_a_new_submitting_backend_may_return_and_status_follows_it(fake, base_args, tmp_path, capsys):
    run = tmp_path / "D"
    args = [*base_args, "grid.resolution=5", "grid.tile=3", *FAKE, f"run.dir={run}"]
    assert surface.main([*args, "launcher.wait=false"]) == 0
    out = capsys.readouterr().out
    assert f"submitted; follow with: landscape-status {run}" in out and "launcher=fake" in out, out
    assert fake == [[0, 1, 2, 3]] and not (run / "surface.h5").exists()
    summary = status.summary(RunDir(run))
    assert "tiles: 0 done, 4 running, 0 queued, 0 failed, 0 missing" in summary and "to finish" not in summary
    assert "array: 4 tiles are queued or running in fake array 7: wait for it" in summary, summary
    assert "or cancel with: fakecancel 7" in summary, summary
    saved = (run / "run.yaml").read_text()
    for again in (args, [f"run.dir={run}", "launcher=local"]):  # the array holds every tile: none computed twice
        rc = surface.main(again)
        one_error_line(rc, capsys.readouterr().err, "4 tiles are queued or running in fake array 7")
    assert fake == [[0, 1, 2, 3]] and (run / "run.yaml").read_text() == saved


def test_the_dry_run_shows_a_new_backends_plan(fake, base_args, tmp_path, capsys):
    rc = surface.main([*base_args, "grid.resolution=5", "grid.tile=3", *FAKE, "launcher.dry_run=true",
                       f"run.dir={tmp_path / 'D'}"])
    out = capsys.readouterr().out
    assert rc == 0 and "fake: 1 array tasks of 9 tile(s) in 1 array(s) (1 tasks)" in out, out
    assert fake == [] and not (tmp_path / "D").exists()


def test_a_backend_module_without_a_backend_is_unknown():
    with pytest.raises(UserError, match="launcher 'arrays' is unknown"):
        backends.get("arrays")
