"""Paths typed relative to where the command runs: saved absolute, so a resume from another folder (or a
job that starts in $HOME) reads the same files; another spelling of the same file is the same run."""
import shutil

import yaml

from conftest import cli
from launch import config


def _relative_setup(trained, tmp_path):
    (tmp_path / "ck").mkdir()
    shutil.copy(trained / "last.pt", tmp_path / "ck" / "last.pt")
    return ["model=digits_cnn", "data=digits", "grid.resolution=3", "grid.tile=3"]


def test_relative_checkpoint_is_saved_absolute_and_resumes_from_anywhere(trained, tmp_path):
    args = _relative_setup(trained, tmp_path)
    run = tmp_path / "run"
    cli("landscape-surface", *args, "checkpoint=ck/last.pt", "run.dir=run", cwd=tmp_path)
    saved = yaml.safe_load((run / "run.yaml").read_text())
    assert saved["config"]["checkpoint"] == str(tmp_path / "ck" / "last.pt")
    out = cli("landscape-surface", f"run.dir={run}", cwd="/")  # the saved command, from another folder
    assert "1/1 tiles done, 0 to compute" in out.stdout
    out = cli("landscape-surface", *args, "checkpoint=./ck/../ck/last.pt", f"run.dir={run}", cwd=tmp_path)
    assert "1/1 tiles done, 0 to compute" in out.stdout


def test_run_saved_with_relative_paths_by_an_older_version_still_resumes(trained, tmp_path):
    args = _relative_setup(trained, tmp_path)
    run = tmp_path / "old"
    cli("landscape-surface", *args, "checkpoint=ck/last.pt", "run.dir=old", "launcher=none", cwd=tmp_path)
    saved = yaml.safe_load((run / "run.yaml").read_text())
    saved["config"]["checkpoint"] = "ck/last.pt"  # as versions before absolute paths wrote it
    saved["overrides"] = [o if not o.startswith("checkpoint=") else "checkpoint=ck/last.pt" for o in saved["overrides"]]
    saved["fingerprint"] = config.fingerprint(saved["config"], [tmp_path / "ck" / "last.pt"])
    (run / "run.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    for spelling in ("ck/last.pt", "./ck/last.pt"):
        out = cli("landscape-surface", *args, f"checkpoint={spelling}", "run.dir=old", "launcher=none", cwd=tmp_path)
        assert "0/1 tiles done" in out.stdout, out.stderr
    assert yaml.safe_load((run / "run.yaml").read_text())["fingerprint"] == saved["fingerprint"]
    other = tmp_path / "ck" / "copy.pt"
    shutil.copy(tmp_path / "ck" / "last.pt", other)  # same bytes, another file: a different setting, refused
    out = cli("landscape-surface", *args, f"checkpoint={other}", "run.dir=old", "launcher=none", cwd=tmp_path,
              check=False)
    assert out.returncode == 2 and "checkpoint: ck/last.pt -> " in out.stderr


def test_a_changed_or_added_checkpoint_is_named(trained, tmp_path):
    ckpts = tmp_path / "ckpts"
    shutil.copytree(trained, ckpts)
    args = ["model=digits_cnn", "data=digits", f"checkpoint={ckpts / 'last.pt'}", "directions=pca",
            f"directions.checkpoints={ckpts}", "grid.resolution=3", f"run.dir={tmp_path / 'run'}", "launcher=none"]
    cli("landscape-surface", *args)
    shutil.copy(ckpts / "epoch_003.pt", ckpts / "epoch_099.pt")  # one more epoch in the trajectory's folder
    out = cli("landscape-surface", *args, check=False)
    assert out.returncode == 2 and f"{ckpts / 'epoch_099.pt'} is new" in out.stderr, out.stderr
    (ckpts / "epoch_099.pt").unlink()
    shutil.copy(ckpts / "epoch_000.pt", ckpts / "epoch_002.pt")  # a checkpoint overwritten
    out = cli("landscape-surface", *args, check=False)
    assert out.returncode == 2 and f"({ckpts / 'epoch_002.pt'} changed)" in out.stderr, out.stderr
