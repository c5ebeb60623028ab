"""Bad settings on the command line: one clear line naming what is wrong, and nothing written."""
from __future__ import annotations

from conftest import cli, one_error_line


def refused(tmp_path, command: str, *args: str, fragment: str) -> str:
    """Run `command` with `args` into a fresh run.dir: exit 2, one error line holding `fragment`, no run.dir."""
    run = tmp_path / "refused"
    r = cli(command, *args, f"run.dir={run}", check=False)
    assert not run.exists(), list(run.rglob("*"))
    return one_error_line(r.returncode, r.stderr, fragment)


def test_a_checkpoint_folder_is_named_a_folder(trained, tmp_path):
    refused(tmp_path, "landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained}",
            fragment=f"checkpoint {trained} is a directory, not a file")
