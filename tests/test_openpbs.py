"""launcher=pbs against the real OpenPBS 23.06.06 server that cluster/pbs.sh builds and starts in its own
network namespace, reached through the cluster/pbs-bin wrappers (qsub, qstat, qdel, qmgr enter that
namespace): the driver runs unchanged, as on a PBS login node. Each surface is compared bitwise (fp32) with
the one `launcher=local` computes."""
from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from conftest import REPO, cli, require_cluster, wait_for
from jobs.run import RunDir
from launch.backends import arrays
from test_pbs import assert_same_surface

PBS_BIN = REPO / "cluster" / "pbs-bin"
pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def openpbs(slurm) -> Path:
    """The server (cluster/pbs.sh up: idempotent, a fraction of a second when it runs), else a skip with
    the reason (a failure where LANDSCAPE_REQUIRE_CLUSTER=1)."""
    up = subprocess.run(["bash", str(REPO / "cluster" / "pbs.sh"), "up"], capture_output=True, text=True,
                        timeout=1200)
    if up.returncode != 0:
        require_cluster(f"no OpenPBS server: {(up.stdout + up.stderr).strip()[-1500:]}")
    return PBS_BIN


@pytest.fixture
def on_pbs(openpbs, monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{openpbs}:{os.environ['PATH']}")  # before slurm-wlm-torque's qsub


def args(trained: Path) -> list[str]:
    return ["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", "grid.resolution=5",
            "grid.tile=2", "launcher.flavor=pro"]


@pytest.fixture(scope="module")
def local(trained, tmp_path_factory) -> Path:
    """The reference: the same 5x5 surface (9 tiles) computed here."""
    run = tmp_path_factory.mktemp("openpbs_local") / "L"
    cli("landscape-surface", *args(trained)[:-1], "launcher=local", f"run.dir={run}")
    return run


def qstat(*ids: str) -> dict:
    """`qstat -x -f -F json -t` of these ids from the real server: {job id: attributes}."""
    out = subprocess.run([str(PBS_BIN / "qstat"), "-x", "-f", "-F", "json", "-t", *ids], capture_output=True,
                         text=True, timeout=60).stdout
    return json.loads(out).get("Jobs", {})


def when(stamp: str) -> datetime:
    """qstat's `Mon Nov 30 03:06:30 2026`."""
    return datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y")


def submissions(run: Path) -> list[dict]:
    return arrays.records(RunDir(run))


def ids(entry: dict) -> list[str]:
    """The PBS ids of a recorded submission: `N[]` for an array, `N` for a one-task plain job."""
    return [entry["array"]] if list(entry["tasks"]) == [entry["array"]] else [f"{entry['array']}[]"]


def test_array_equals_local_with_resources_parallelism_and_status(on_pbs, trained, local, tmp_path, monkeypatch):
    """9 tiles, 2 per subjob: `qsub -J 0-4%2` with `select=1:ncpus=2:ngpus=1`. The server holds what was
    asked, no more than 2 subjobs ran at once, each saw its 2 CPUs, and status says all is done. Submitted
    from another folder with another $HOME: jobs start in root's $HOME with nothing exported."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = tmp_path / "P"
    out = cli("landscape-surface", *args(trained), "launcher=pbs", "launcher.tiles_per_task=2",
              "launcher.parallelism=2", "launcher.cpus_per_task=2", "launcher.gpus_per_task=1",
              "launcher.setup=['echo saw NCPUS=$NCPUS in $PWD']", f"run.dir={run}")
    assert "submitted pbs array" in out.stdout and "5 tasks, 9 tiles" in out.stdout
    assert_same_surface(run, local)
    [entry] = submissions(run)
    jobs = qstat(*ids(entry))
    parent, subjobs = jobs.pop(f"{entry['array']}[].pbshost"), jobs
    assert parent["max_run_subjobs"] == 2 and parent["array_indices_submitted"] == "0-4"
    assert len(subjobs) == 5 and {j["Exit_status"] for j in subjobs.values()} == {0}
    for job in subjobs.values():
        assert job["Resource_List"]["ncpus"] == 2 and job["Resource_List"]["ngpus"] == 1
        assert "ncpus=2:ngpus=1" in job["exec_vnode"]
    spans = [(when(j["stime"]), when(j["obittime"])) for j in subjobs.values()]
    assert max(sum(s <= start < e for s, e in spans) for start, _ in spans) == 2  # running at each start
    logs = [p.read_text() for p in Path(entry["folder"]).glob("*_log.out")]
    assert len(logs) == 5 and all(f"saw NCPUS=2 in {elsewhere}\n" in text for text in logs)  # $PBS_O_WORKDIR
    status = cli("landscape-status", str(run)).stdout
    assert "tiles: 9 done, 0 running, 0 queued, 0 failed, 0 missing" in status


def test_one_task_is_a_plain_job_and_a_large_plan_splits_at_the_servers_max_array_size(on_pbs, trained, local,
                                                                                        tmp_path):
    """The server's max_array_size 4 (read with qmgr) splits 9 tasks into arrays of 4, 4 and 1; the one-task
    rest is a plain job (OpenPBS refuses `-J 0-0`)."""
    qmgr = [str(PBS_BIN / "qmgr"), "-c"]
    subprocess.run([*qmgr, "set server max_array_size = 4"], check=True, timeout=30)
    try:
        run = tmp_path / "P"
        out = cli("landscape-surface", *args(trained), "launcher=pbs", f"run.dir={run}")
    finally:
        subprocess.run([*qmgr, "unset server max_array_size"], check=True, timeout=30)
    assert [len(e["tasks"]) for e in submissions(run)] == [4, 4, 1]
    assert out.stdout.count("submitted pbs array") == 3
    plain = submissions(run)[-1]
    assert list(plain["tasks"]) == [plain["array"]]  # recorded under its own id
    [job] = qstat(plain["array"]).values()
    assert "array" not in job and job["job_state"] == "F" and job["Exit_status"] == 0
    assert_same_surface(run, local)


def test_qdel_of_a_running_and_a_queued_subjob_then_the_same_command_again(on_pbs, trained, local, tmp_path):
    """Three subjobs of 3 tiles, one at a time (each sleeps 5 s first): qdel the running one (once its log says
    it started) and the queued last one. Status shows them cancelled while the middle one is queued or running, then done; the same
    command runs only their tiles; the result equals local."""
    run = tmp_path / "P"
    common = [*args(trained), "launcher=pbs", "launcher.tiles_per_task=3", f"run.dir={run}"]
    cli("landscape-surface", *common, "launcher.wait=false", "launcher.parallelism=1",
        "launcher.setup=['echo task started', 'sleep 5']")
    [entry] = submissions(run)
    array = entry["array"]
    log = Path(entry["folder"]) / f"{array}_0_0_log.out"  # the server says R before the mom has started it
    assert wait_for(lambda: log.is_file() and "task started" in log.read_text(), 60)
    subprocess.run([str(PBS_BIN / "qdel"), f"{array}[0]", f"{array}[2]"], check=True, timeout=30)
    seen = []

    def cancelled_while_the_middle_one_goes_on() -> bool:
        seen.append(cli("landscape-status", str(run)).stdout)
        return ", 6 failed," in seen[-1] and ("3 running" in seen[-1] or "3 queued" in seen[-1])

    assert wait_for(cancelled_while_the_middle_one_goes_on, 30, poll=1), seen[-1]
    assert wait_for(lambda: qstat(f"{array}[]")[f"{array}[].pbshost"]["job_state"] == "F", 120)
    status = cli("landscape-status", str(run)).stdout
    lost = sorted(entry["tasks"]["0"] + entry["tasks"]["2"])
    assert f"tiles: 3 done, 0 running, 0 queued, {len(lost)} failed, 0 missing" in status, status
    assert all(f"tile {t}: cancelled" in status for t in lost), status
    out = cli("landscape-surface", *common)
    again = submissions(run)[-1]
    assert sorted(t for tiles in again["tasks"].values() for t in tiles) == lost, out.stdout
    assert_same_surface(run, local)


def test_walltime_kill_is_reported_as_such_and_a_rerun_finishes(on_pbs, trained, local, tmp_path):
    """Subjobs that outlive their walltime (6 s, kept to the second; PBS sends SIGTERM, then SIGKILL 10 s
    later) leave no tile and no partial file; the driver and status say they were killed at the time limit,
    not that the code failed; the same command with the default walltime finishes the surface. The kill
    lands in the task's setup here, so that it is certain to land; a SIGTERM inside the task unwinding a tile
    write is test_pbs.py::test_sigterm_unwinds_the_task."""
    run = tmp_path / "P"
    common = [*args(trained), "launcher=pbs", "launcher.tiles_per_task=5", f"run.dir={run}"]
    out = cli("landscape-surface", *common, "launcher.walltime=0:00:06", "launcher.setup=['sleep 60']", check=False)
    assert out.returncode == 2 and "9 tiles are missing" in out.stderr
    assert "2 array tasks failed (" in out.stdout and "killed at their time limit" in out.stdout, out.stdout
    entry = submissions(run)[0]
    assert {j["Exit_status"] for j in qstat(f"{entry['array']}[]").values() if "array_index" in j} == {-29}
    assert list(run.glob("tiles/*")) == []  # killed before its first tile: nothing written, nothing half-written
    status = cli("landscape-status", str(run)).stdout
    assert "9 failed" in status and "tile 0: killed at its time limit" in status, status
    cli("landscape-surface", *common)
    assert_same_surface(run, local)
