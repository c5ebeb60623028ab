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


def test_a_wrong_cifar_folder_reads_the_same_for_surface_and_train(trained, tmp_path):
    for command, extra in (("landscape-surface", [f"checkpoint={trained / 'last.pt'}"]), ("landscape-train", [])):
        refused(tmp_path, command, "model=resnet20", "data=cifar10", f"data.root={tmp_path}", *extra,
                fragment=f"CIFAR-10 folder {tmp_path} lacks data_batch_1")
