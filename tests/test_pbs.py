"""launcher=pbs. No PBS server exists here: job scripts are checked line by line for PBS Pro and
Torque, run as PBS runs them (bare environment, umask 077, $HOME, PBS's ids), and run for real
through the `qsub` of Debian's slurm-wlm-torque over the test Slurm; the status parsers read
recorded `qstat` output (tests/data/README.md says which is recorded and which is built)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import submitit
import yaml

from conftest import REPO, cli, read_surface, require_cluster, wait_for
from jobs.reduce import reduce
from jobs.run import RunDir
from landscape.errors import UserError
from launch.backends import TaskPlan, arrays, pbs
from launch.backends.arrays import TileTask
from launch.backends.pbs_submitit import (PbsExecutor, PbsJobEnvironment, _make_qsub_string, normalise_job_id,
                                          parse_pro_json, parse_torque_full, pbs_job_id, sanitise_job_name)
from launch.status import summary

DATA = Path(__file__).parent / "data"
GRID = ["grid.resolution=9", "grid.tile=3"]  # 9 tiles of 3x3
DEFAULTS = yaml.safe_load((REPO / "conf" / "launcher" / "pbs.yaml").read_text())


@pytest.fixture(scope="module")
def args(trained) -> list[str]:
    return ["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *GRID]


@pytest.fixture(scope="module")
def local_run(args, tmp_path_factory) -> Path:
    """The reference: the same surface with launcher=local."""
    run = tmp_path_factory.mktemp("pbs_local") / "L"
    cli("landscape-surface", *args, "launcher=local", f"run.dir={run}")
    return run


@pytest.fixture(scope="module")
def qsub(slurm) -> str:
    """Debian's slurm-wlm-torque qsub over the running test Slurm (whose fixture sets
    LANDSCAPE_SINGLE_NODE=1: run directories under /tmp are shared on this one node)."""
    path = shutil.which("qsub")
    if not path:
        require_cluster("qsub not found (Debian's slurm-wlm-torque: make cluster-up)")
    return path


def assert_same_surface(run: Path, reference: Path) -> None:
    got, want = read_surface(run / "surface.h5"), read_surface(reference / "surface.h5")
    assert sorted(got) == sorted(want)
    for key in [k for k in want if k != "dir_file"]:  # dir_file: the run's own directions.h5 path
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)  # bitwise: fp32 is deterministic


def script(run: Path, round_no: int) -> list[str]:
    """The job script PBS was given in submission round `round_no`."""
    [path] = (run / "logs" / f"pbs-{round_no:03d}-00").glob("*_submission.sh")
    return path.read_text().splitlines()


def params(values: dict) -> dict:
    """The executor parameters of these launcher.* values, checked as the driver checks them."""
    return pbs.parameters(pbs.check(values))


def latest_entry(run: Path) -> dict:
    return arrays.records(RunDir(run))[-1]


# --- ids, names, parameters ---

def test_job_ids_normalise_both_ways():
    assert normalise_job_id("1234[5].pbs01.cluster") == "1234_5"
    assert normalise_job_id("1234[].pbs01") == "1234"
    assert normalise_job_id("1234.torque01") == "1234"
    assert normalise_job_id("25\n") == "25"  # Slurm's qsub wrapper
    assert normalise_job_id("25_3") == "25_3"
    assert pbs_job_id("1234_5") == "1234[5]" and pbs_job_id("1234") == "1234"
    with pytest.raises(ValueError):
        normalise_job_id("qsub: Unknown queue")
    read = PbsExecutor._get_job_id_from_submission_command
    assert read(b"4242[].pbs01\n") == "4242" and read("4250.pbs01") == "4250" and read("119\n") == "119"


def test_job_environment_id_equals_the_drivers(monkeypatch):
    env = PbsJobEnvironment()
    for var in ("PBS_JOBID", "PBS_ARRAY_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID"):
        monkeypatch.delenv(var, raising=False)
    cases = [({"PBS_JOBID": "4242[3].pbs01", "PBS_ARRAY_ID": "4242[].pbs01", "PBS_ARRAY_INDEX": "3"}, "4242_3"),
             ({"PBS_JOBID": "4243[3].torque01", "PBS_ARRAYID": "3"}, "4243_3"),
             ({"PBS_JOBID": "122", "PBS_ARRAY_ID": "119", "PBS_ARRAY_INDEX": "3"}, "119_3"),  # Slurm's spank_pbs
             ({"PBS_JOBID": "4250.pbs01"}, "4250")]
    for variables, job_id in cases:
        with monkeypatch.context() as m:
            for k, v in variables.items():
                m.setenv(k, v)
            assert env.job_id == job_id


def test_job_names_are_sanitised():
    assert sanitise_job_name("landscape") == "landscape"
    assert sanitise_job_name("r56 cifar/run#3") == "r56_cifar_run_3"
    assert sanitise_job_name("3rd-try+v1.2") == "j3rd-try+v1.2"  # must start with a letter
    assert sanitise_job_name("a" * 40) == "a" * 15
    assert sanitise_job_name("") == "job"


def test_launcher_config_maps_to_executor_parameters():
    cfg = {**DEFAULTS, "walltime": "1:30:20", "mem_gb": 0.5, "gpus_per_task": 1, "parallelism": 4}
    assert params(cfg) == {"flavor": "pro", "job_name": "landscape", "walltime": 90 + 20 / 60, "ncpus": 1, "ngpus": 1,
                           "mem": "512mb", "array_parallelism": 4, "setup": [], "env": {}, "directives": []}
    assert "#PBS -l walltime=01:30:20" in _make_qsub_string("x", "/f", **params(cfg))  # PBS keeps the seconds
    with pytest.raises(UserError, match="flavor"):
        params({**DEFAULTS, "flavor": "lsf"})


# --- job scripts, line by line ---

SETUP = ["module load cuda/12.1", "source /shared/venv/bin/activate"]
KNOBS = {**DEFAULTS, "queue": "gpu", "account": "proj42", "walltime": 90, "cpus_per_task": 8, "gpus_per_task": 1,
         "mem_gb": 32, "parallelism": 4, "setup": SETUP, "env": {"HDF5_USE_FILE_LOCKING": "FALSE"},
         "extra": ["-l place=excl", "-m ae"], "job_name": "r56 cifar"}


def tail(folder: str, command: str, gpu_line: list[str]) -> list[str]:
    """The part of every script after the directives."""
    return ["",
            "# this task's id as submitit names it: 1234[5].server -> 1234_5 (Torque: PBS_ARRAYID)",
            "_index=${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-}}",
            "_array=${PBS_ARRAY_ID:-$PBS_JOBID}",
            "_array=${_array%%.*}",
            "_array=${_array%%\\[*}",
            "SUBMITIT_JOB_ID=${_array}${_index:+_$_index}",
            f'exec >> {folder}/"${{SUBMITIT_JOB_ID}}_0_log.out" 2>> {folder}/"${{SUBMITIT_JOB_ID}}_0_log.err"',
            'cd "$PBS_O_WORKDIR" || exit 1',
            "export SUBMITIT_EXECUTOR=pbs",
            "export LANDSCAPE_THREADS=8",
            *gpu_line,
            "export HDF5_USE_FILE_LOCKING=FALSE",
            "",
            "# setup",
            *SETUP,
            "",
            "# command",
            f"exec {command}",
            ""]


def test_pbs_pro_script():
    cmd = "/shared/venv/bin/python -u -m submitit.core._submit /shared/runs/R/logs/pbs-000-00"
    text = _make_qsub_string(cmd, "/shared/runs/R/logs/pbs-000-00", map_count=10, **params(KNOBS))
    assert text.split("\n") == [
        "#!/bin/bash",
        "#PBS -N r56_cifar",
        "#PBS -q gpu",
        "#PBS -A proj42",
        "#PBS -l walltime=01:30:00",
        "#PBS -l select=1:ncpus=8:ngpus=1:mem=32gb",
        "#PBS -J 0-9%4",
        "#PBS -j oe",
        "#PBS -o /shared/runs/R/logs/pbs-000-00/pbs_scheduler.log",
        "#PBS -l place=excl",
        "#PBS -m ae",
        *tail("/shared/runs/R/logs/pbs-000-00", cmd, [])]
    one = _make_qsub_string(cmd, "/f", **params({**KNOBS, "parallelism": None, "select": "2:ncpus=4"}))
    assert "#PBS -l select=2:ncpus=4" in one.split("\n")  # a whole select statement, as given
    assert not [ln for ln in one.split("\n") if ln.startswith("#PBS -J")]  # one task: a plain job


def test_torque_script():
    cmd = "/shared/venv/bin/python -u -m submitit.core._submit /shared/runs/R/logs/pbs-000-00"
    text = _make_qsub_string(cmd, "/shared/runs/R/logs/pbs-000-00", map_count=10,
                             **params({**KNOBS, "flavor": "torque"}))
    assert text.split("\n") == [
        "#!/bin/bash",
        "#PBS -N r56_cifar",
        "#PBS -q gpu",
        "#PBS -A proj42",
        "#PBS -l walltime=01:30:00",
        "#PBS -l nodes=1:ppn=8:gpus=1",
        "#PBS -l mem=32gb",
        "#PBS -t 0-9%4",
        "#PBS -j oe",
        "#PBS -o /shared/runs/R/logs/pbs-000-00/pbs_scheduler.log",
        "#PBS -l place=excl",
        "#PBS -m ae",
        *tail("/shared/runs/R/logs/pbs-000-00", cmd,
              ['[ -n "${PBS_GPUFILE:-}" ] && export CUDA_VISIBLE_DEVICES=$(sed "s/.*-gpu//" "$PBS_GPUFILE" '
               "| paste -sd,)"])]


def test_scripts_run_as_pbs_runs_them(local_run, tmp_path):
    """No scheduler: the generated scripts and the jobs/examples scripts alone, in a bare environment (no
    -V), umask 077, started in $HOME, with the ids and variables a real PBS Pro and a real Torque give.
    Each task writes its tiles, and the surface equals the local one."""
    run = tmp_path / "run"
    shutil.copytree(local_run, run)
    (run / "surface.h5").unlink()
    for tile in (1, 7, 3, 5):
        (run / "tiles" / f"{tile:05d}.h5").unlink()
    folder = run / "logs" / "pbs-by-hand"
    folder.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    pro = {"PBS_JOBID": "4242[1].pbs01", "PBS_ARRAY_ID": "4242[].pbs01", "PBS_ARRAY_INDEX": "1"}
    torque = {"PBS_JOBID": "4243[0].torque01", "PBS_ARRAYID": "0"}
    generated = {"pro": ("4242_1", pro, [1]), "torque": ("4243_0", torque, [7])}
    scripts = {}
    for flavor, (job_id, ids, tiles) in generated.items():
        text = _make_qsub_string(f"{sys.executable} -u -m submitit.core._submit {folder}", folder, map_count=2,
                                 **params({**DEFAULTS, "flavor": flavor}))
        (folder / f"{flavor}.sh").write_text(text)
        submitit.core.utils.DelayedSubmission(TileTask(), str(run), tiles).dump(folder / f"{job_id}_submitted.pkl")
        scripts[flavor] = (folder / f"{flavor}.sh", {**ids, "PBS_O_WORKDIR": str(tmp_path)})
    given = {"RUN_DIR": str(run), "PER_TASK": "2", "VENV": str(Path(sys.executable).parent.parent),
             "PBS_O_WORKDIR": str(REPO)}  # -v RUN_DIR=...,PER_TASK=2,VENV=...: tiles 2,3 and 4,5
    scripts["pro example"] = (REPO / "jobs/examples/pbs_pro.sh", {**pro, **given})
    scripts["torque example"] = (REPO / "jobs/examples/torque.sh", {**torque, "PBS_ARRAYID": "2", **given})
    procs = {name: subprocess.Popen(["/bin/bash", "-c", f"umask 077; cd; exec /bin/bash {path}"],
                                    env={"HOME": str(home), "PATH": "/usr/bin:/bin", **env},
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, (path, env) in scripts.items()}
    outputs = {name: proc.communicate(timeout=180)[0] for name, proc in procs.items()}
    for flavor, (job_id, ids, tiles) in generated.items():
        log = "".join((folder / f"{job_id}_0_log.{ext}").read_text() for ext in ("out", "err"))
        assert procs[flavor].returncode == 0, f"{flavor}: {outputs[flavor]}\n{log}"
        assert f"job_id={job_id}" in log  # the id submitit reads on the node names the driver's files
        assert cloudpickle.loads((folder / f"{job_id}_0_result.pkl").read_bytes()) == ("success", tiles)
    for name, tile in (("pro example", 3), ("torque example", 5)):
        assert procs[name].returncode == 0 and f"computed 1 tiles: [{tile}]" in outputs[name], outputs[name]
    assert RunDir(run).missing() == []
    reduce(run)
    assert_same_surface(run, local_run)


# --- status parsers on recorded output ---

def test_pbs_pro_json_parser():
    states = parse_pro_json((DATA / "pbspro_qstat_f_F_json_x_t.json").read_text())
    assert states == {"4242": "RUNNING",  # the array parent, state B
                      "4242_0": "COMPLETED", "4242_1": "FAILED", "4242_2": "TIMEOUT", "4242_3": "CANCELLED",
                      "4242_4": "RUNNING", "4242_5": "RUNNING", "4242_6": "PENDING",
                      "4242_7": "PENDING",  # only in the parent's array_indices_remaining
                      "4250": "COMPLETED", "4251": "CANCELLED"}  # 4251 deleted before it ran
    assert pbs.task_view("4242", states) == {"4242": "RUNNING", **{k[5:]: v for k, v in states.items()
                                                                   if k.startswith("4242_")}}
    assert pbs.task_view("4250", states) == {"4250": "COMPLETED"}  # a one-task submission is a plain job
    assert parse_pro_json("") == {}


def test_torque_parser():
    states = parse_torque_full((DATA / "torque_qstat_f_t.txt").read_text())
    assert states == {"4243_0": "COMPLETED", "4243_1": "FAILED", "4243_2": "TIMEOUT", "4243_3": "RUNNING",
                      "4243_4": "PENDING", "4243_5": "PENDING"}


def test_torque_parser_on_the_slurm_wrappers_recording():
    """The wrapper shows raw Slurm ids (array 119 = jobs 120, 121, 119) and no exit status, so a
    finished job reads like one deleted before it ran: why task_states asks sacct there."""
    running = parse_torque_full((DATA / "wrapper_qstat_f_running.txt").read_text())
    finished = parse_torque_full((DATA / "wrapper_qstat_f_finished.txt").read_text())
    assert len(running) == len(finished) == 42
    assert {running[i] for i in ("119", "120", "121")} == {"RUNNING"}
    assert {finished[i] for i in ("119", "120", "121")} == {"CANCELLED"}
    raw = dict(line.split("|")[1:4:2] for line in (DATA / "wrapper_sacct.txt").read_text().splitlines()[1:])
    assert raw == {"120": "COMPLETED", "121": "COMPLETED", "119": "COMPLETED"}  # what sacct knows


# --- real runs through the qsub of slurm-wlm-torque ---

@pytest.mark.cluster
def test_surface_through_qsub_equals_local(qsub, args, local_run, tmp_path):
    """PBS Pro flavour (`#PBS -J`), then a resume with Torque's (`#PBS -t`): bitwise the local surface;
    tiles already done are never recomputed. (A one-task submission, a plain job: the next test.)"""
    run = tmp_path / "Q"
    out = cli("landscape-surface", *args, "launcher=pbs", "launcher.tiles_per_task=3", f"run.dir={run}")
    assert "submitted pbs array" in out.stdout and "3 tasks, 9 tiles" in out.stdout
    assert_same_surface(run, local_run)
    lines = script(run, 0)
    assert "#PBS -J 0-2" in lines and "#PBS -l select=1:ncpus=1" in lines and 'cd "$PBS_O_WORKDIR" || exit 1' in lines
    entry = latest_entry(run)
    assert entry["flavor"] == "pro" and sorted(entry["tasks"]) == ["0", "1", "2"]
    assert wait_for(lambda: pbs.task_states(entry) == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"},
                    timeout=30)
    status = summary(RunDir(run))  # what landscape-status prints
    assert "9 done" in status and "0 failed" in status

    done = {p.name: p.stat().st_mtime_ns for p in (run / "tiles").glob("*.h5")}
    for tile in (1, 7):
        (run / "tiles" / f"{tile:05d}.h5").unlink()
    out = cli("landscape-surface", f"run.dir={run}", "launcher=pbs", "launcher.flavor=torque", "launcher.tiles_per_task=1")
    assert "7/9 tiles done, 2 to compute" in out.stdout and "2 tasks, 2 tiles" in out.stdout
    assert "#PBS -t 0-1" in script(run, 1) and "#PBS -l nodes=1:ppn=1" in script(run, 1)
    assert latest_entry(run)["flavor"] == "torque"
    assert_same_surface(run, local_run)
    after = {p.name: p.stat().st_mtime_ns for p in (run / "tiles").glob("*.h5")}
    assert all(after[n] == t for n, t in done.items() if n not in ("00001.h5", "00007.h5"))


@pytest.mark.cluster
def test_refused_submission_says_why(qsub, local_run, tmp_path):
    """qsub's refusal (here: no such queue) is one clear line, and nothing is recorded."""
    run = RunDir(shutil.copytree(local_run, tmp_path / "R"))
    settings = pbs.check({**DEFAULTS, "queue": "nosuchqueue"})
    with pytest.raises(UserError, match="pbs refused the submission: sbatch: error: Batch job submission failed: "
                                        "Invalid partition"):
        arrays.submit(run, TaskPlan([[[0], [1]]], 1, None), "pbs", lambda folder: pbs.executor(folder, settings))
    assert arrays.records(run) == []


def _hold(marker: str) -> None:
    """Runs on the node: mark the start, sleep, and mark that `finally` ran."""
    Path(marker + ".started").touch()
    try:
        time.sleep(120)
    finally:
        Path(marker + ".cleaned").touch()


@pytest.mark.cluster
def test_sigterm_unwinds_the_task(qsub, tmp_path):
    """A one-task submission (a plain job, found by its plain id on the node), then qdel: SIGTERM (SIGKILL
    follows some seconds later) reaches Python as SystemExit, so `finally` blocks and the tile writer's
    clean-up run. submitit's default would ignore SIGTERM until the SIGKILL."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the node cannot import this test module
    ex = submitit.AutoExecutor(folder=tmp_path / "logs", cluster="pbs")  # through the plugin entry points
    ex.update_parameters(timeout_min=5, name="hold")
    marker = str(tmp_path / "m")
    job = ex.submit(_hold, marker)
    assert type(job).__name__ == "PbsJob" and "_" not in job.job_id
    assert wait_for(lambda: os.path.exists(marker + ".started"), timeout=60), job.stderr()
    job.cancel()
    assert wait_for(lambda: os.path.exists(marker + ".cleaned"), timeout=20), job.stderr()
    assert "caught SIGTERM" in (job.stderr() or "")
    entry = {"array": job.job_id, "tasks": {job.job_id: [0]}, "flavor": "pro"}  # as arrays.submit records it
    assert wait_for(lambda: pbs.task_states(entry) == {job.job_id: "CANCELLED"}, timeout=30)

