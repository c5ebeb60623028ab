"""A run whose Slurm array still holds tiles: status says to wait or cancel (naming scancel), and a driver of any
launcher refuses to compute those tiles beside it, before writing anything."""
import json
import subprocess

import pytest

from conftest import cli, one_error_line, wait_for

pytestmark = pytest.mark.cluster


def test_a_live_array_is_waited_for_or_cancelled_not_computed_twice(slurm, base_args, tmp_path):
    run = tmp_path / "SD"
    cli("landscape-surface", *base_args, "grid.resolution=5", "grid.tile=3", "launcher=slurm",
        "launcher.wait=false", "launcher.parallelism=1", "launcher.setup=['sleep 60']", f"run.dir={run}")
    array = json.loads((run / "submissions.jsonl").read_text().splitlines()[-1])["array"]
    try:
        status = cli("landscape-status", str(run)).stdout
        assert "to finish" not in status and f"or cancel with: scancel {array}" in status, status
        saved = (run / "run.yaml").read_text()
        proc = cli("landscape-surface", f"run.dir={run}", "launcher=local", check=False)
        one_error_line(proc.returncode, proc.stderr, f"queued or running in slurm array {array}: wait for it")
        assert not list((run / "tiles").glob("*.h5")) and (run / "run.yaml").read_text() == saved
    finally:
        subprocess.run(["scancel", array], check=True)
    assert wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", array], capture_output=True,
                                               text=True).stdout.strip(), timeout=120)
    assert "to finish: landscape-surface" in cli("landscape-status", str(run)).stdout
