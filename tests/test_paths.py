"""Paths typed relative to where the command runs: saved absolute, so a resume from another folder (or a
job that starts in $HOME) reads the same files; another spelling of the same file is the same run.
In-process (`surface.main`, the console script's function) with the working folder changed: fast."""
import shutil

import yaml

from launch import surface


def _surface(capsys, *args) -> tuple[int, str, str]:
    rc = surface.main([*map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _relative_setup(trained, tmp_path, monkeypatch):
    (tmp_path / "ck").mkdir()
    shutil.copy(trained / "last.pt", tmp_path / "ck" / "last.pt")
    monkeypatch.chdir(tmp_path)
    return ["model=digits_cnn", "data=digits", "grid.resolution=3", "grid.tile=3"]


def test_relative_checkpoint_is_saved_absolute_and_resumes_from_anywhere(trained, tmp_path, monkeypatch, capsys):
    args = _relative_setup(trained, tmp_path, monkeypatch)
    run = tmp_path / "run"
    assert _surface(capsys, *args, "checkpoint=ck/last.pt", "run.dir=run")[0] == 0
    saved = yaml.safe_load((run / "run.yaml").read_text())
    assert saved["config"]["checkpoint"]["path"] == str(tmp_path / "ck" / "last.pt")
    monkeypatch.chdir("/")
    rc, out, err = _surface(capsys, f"run.dir={run}")  # the saved command, from another folder
    assert rc == 0 and "1/1 tiles done, 0 to compute" in out, err
    monkeypatch.chdir(tmp_path)
    rc, out, err = _surface(capsys, *args, "checkpoint=./ck/../ck/last.pt", f"run.dir={run}")
    assert rc == 0 and "1/1 tiles done, 0 to compute" in out, err


def test_a_changed_or_added_checkpoint_is_named(trained, tmp_path, capsys):
    ckpts = tmp_path / "ckpts"
    shutil.copytree(trained, ckpts)
    args = ["model=digits_cnn", "data=digits", f"checkpoint={ckpts / 'last.pt'}", "directions=pca",
            f"directions.checkpoints={ckpts}", "grid.resolution=3", f"run.dir={tmp_path / 'run'}", "launcher=none"]
    assert _surface(capsys, *args)[0] == 0
    shutil.copy(ckpts / "epoch_003.pt", ckpts / "epoch_099.pt")  # one more epoch in the trajectory's folder
    rc, _, err = _surface(capsys, *args)
    assert rc == 2 and f"{ckpts / 'epoch_099.pt'} is new" in err, err
    (ckpts / "epoch_099.pt").unlink()
    shutil.copy(ckpts / "epoch_000.pt", ckpts / "epoch_002.pt")  # a checkpoint overwritten
    rc, _, err = _surface(capsys, *args)
    assert rc == 2 and f"{ckpts / 'epoch_002.pt'} changed since this run was created" in err, err
