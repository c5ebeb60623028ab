"""The PBS status parser on `qstat -f -F json -x -t` output recorded from the real OpenPBS 23.06.06 server
of cluster/pbs.sh (cluster/README.md says what each file holds and what the jobs did)."""
from __future__ import annotations

import subprocess

import pytest

from conftest import REPO
from launch.backends import pbs
from launch.backends.pbs_submitit import parse_pro_json, pbs_targets, qstat_command

RECORDED = REPO / "cluster" / "recorded"


def states(name: str) -> dict[str, str]:
    return parse_pro_json((RECORDED / f"openpbs_qstat_{name}.json").read_text())


def test_finished_failed_and_walltime_subjobs():
    """Exit 0, exit 3 and the walltime kill (-29) are three different words; the array is finished."""
    assert states("walltime_exit") == {"7": "FAILED", "7_0": "COMPLETED", "7_1": "FAILED", "7_2": "TIMEOUT"}


def test_deleted_subjobs_are_cancelled_though_their_exit_status_is_zero():
    """qdel of a running subjob and of a queued one: Exit_status 0 both, told apart by the comment only."""
    during = states("qdel_during")
    assert during == {"8": "RUNNING", "8_0": "CANCELLED", "8_1": "RUNNING", "8_2": "RUNNING", "8_3": "CANCELLED",
                      "8_4": "PENDING"}
    assert states("qdel_after") == {"8": "CANCELLED", "8_0": "CANCELLED", "8_1": "COMPLETED", "8_2": "COMPLETED",
                                    "8_3": "CANCELLED", "8_4": "COMPLETED"}
    assert states("fxt_running_after_qdel")["2_10"] == states("fxt_finished_after_qdel")["2_10"] == "CANCELLED"
    assert states("fxt_running_after_qdel")["2_9"] == "PENDING"  # queued, though it carries Exit_status 0


def test_subjobs_that_end_while_the_array_runs_show_x_and_count_as_done():
    partly = states("fxt_partly_finished_after_qdel")
    assert partly["2_0"] == "COMPLETED" and partly["2_1"] == "CANCELLED" and partly["2_9"] == "RUNNING"
    assert set(states("fxt_finished").values()) == {"COMPLETED"} and len(states("fxt_finished")) == 10


def test_plain_job_numeric_name_and_unknown_ids():
    assert states("plain_running") == {"9": "RUNNING"}
    assert states("plain_and_unknown_rc153") == {"9": "RUNNING"}
    assert states("fxt_unknown_rc153") == {}
    assert pbs.task_view("9", states("plain_running")) == {"9": "RUNNING"}  # a one-task submission


def test_the_array_is_asked_once_for_its_own_id_and_its_subjobs():
    """submitit registers the array's own id next to its subjobs: asking for both made qstat exit 153."""
    assert pbs_targets(["8", "8_0", "8_4", "9"]) == ["8[]", "9"]


@pytest.mark.parametrize("rc, ok", [(0, True), (153, True), (1, False), (2, False)])
def test_unknown_id_exit_status_is_not_a_failure(tmp_path, monkeypatch, rc, ok):
    """The status command keeps qstat's output where it exits 153 (an unknown id among several)."""
    fake = tmp_path / "qstat"
    fake.write_text(f"#!/bin/sh\necho '{{\"Jobs\": {{}}}}'\nexit {rc}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    proc = subprocess.run(qstat_command("pro", ["9", "9[]"]), capture_output=True, text=True)
    assert (proc.returncode == 0) is ok and '"Jobs"' in proc.stdout
