"""`landscape-train` in-process: bad settings stop before anything is written, a run.dir holding another
training is refused (its checkpoints untouched), the same finished training is reused (what lets `make demo`
rerun), train.overwrite=true leaves no stale epoch behind."""
import hashlib
import shutil

import numpy as np
import pytest
import torch

from conftest import one_error_line
from launch import train

TINY = ["model=digits_cnn", "data=digits", "train.epochs=2"]


def _run(capsys, *args):
    rc = train.main([*map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _snapshot(run):
    """Every file's bytes and mtime: a refused or reused training must not touch any."""
    return {str(p.relative_to(run)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("train_cli") / "R"
    assert train.main([*TINY, f"run.dir={run}"]) == 0
    return run


BAD = {
    "unknown loss": (["loss=foo"], "loss 'foo' is unknown: use one of cross_entropy, mse, mae"),
    "negative epochs": (["train.epochs=-1"], "train.epochs is -1: use a whole number of 0 or more"),
    "epochs not a number": (["train.epochs=abc"], "train.epochs is 'abc'"),
    "lr not a number": (["train.lr=abc"], "train.lr is 'abc': use a number above 0"),
    "zero lr": (["train.lr=0"], "train.lr is 0"),
    "zero batch size": (["train.batch_size=0"], "train.batch_size is 0: use a whole number of 1 or more"),
    "seed not a number": (["seed=abc"], "seed is 'abc'"),
    "overwrite neither true nor false": (["train.overwrite=maybe"], "train.overwrite is 'maybe'"),
    "unknown train key": (["+train.warmup=3"], "unknown setting: train.warmup"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_setting_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    args, fragment = BAD[case]
    rc, _, err = _run(capsys, *TINY, *args, f"run.dir={tmp_path / 'R'}")
    one_error_line(rc, err, fragment)
    assert not (tmp_path / "R").exists()


def test_another_training_is_refused_and_the_first_kept(trained_run, capsys):
    before = _snapshot(trained_run)
    rc, _, err = _run(capsys, "model=digits_cnn", "data=digits", "train.epochs=1", "train.lr=0.01",
                      f"run.dir={trained_run}")
    one_error_line(rc, err, "holds checkpoints of another training (train.epochs: 2 -> 1; train.lr: 0.05 -> 0.01)")
    assert "train.overwrite=true" in err
    assert _snapshot(trained_run) == before


def test_the_same_finished_training_is_reused(trained_run, capsys):
    """The demo's second run: its training step trains nothing, so the surfaces' checkpoints stay the same."""
    before = _snapshot(trained_run)
    rc, out, err = _run(capsys, *TINY, f"run.dir={trained_run}")
    assert rc == 0 and not err
    assert out.strip() == f"already trained: {trained_run / 'checkpoints' / 'last.pt'}; train.overwrite=true to train again"
    assert _snapshot(trained_run) == before


def test_an_interrupted_training_without_a_complete_epoch_starts_again(trained_run, tmp_path, capsys):
    """Same configuration, no last.pt and no resume.pt (killed before an epoch's optimizer state was saved):
    trained again, every stale epoch file replaced; another configuration's unfinished training is still
    refused. (With resume.pt it continues: tests/test_train_resume.py.)"""
    run = shutil.copytree(trained_run, tmp_path / "R")
    for name in ("last.pt", "epoch_002.pt", "resume.pt"):
        (run / "checkpoints" / name).unlink()
    stale = (run / "checkpoints" / "epoch_001.pt").stat().st_mtime_ns
    before = _snapshot(run)
    rc, _, err = _run(capsys, "model=digits_cnn", "data=digits", "train.epochs=1", f"run.dir={run}")
    one_error_line(rc, err, "holds checkpoints of another training (train.epochs: 2 -> 1)")
    assert _snapshot(run) == before
    rc, out, _ = _run(capsys, *TINY, f"run.dir={run}")
    assert rc == 0 and "epoch_000.pt .. epoch_002.pt, last.pt" in out
    assert (run / "checkpoints" / "last.pt").is_file()
    assert (run / "checkpoints" / "epoch_001.pt").stat().st_mtime_ns != stale


def test_overwrite_leaves_no_stale_checkpoint(trained_run, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "R")
    rc, out, _ = _run(capsys, "model=digits_cnn", "data=digits", "train.epochs=1", "train.overwrite=true",
                      f"run.dir={run}")
    assert rc == 0 and "epoch_000.pt .. epoch_001.pt, last.pt (test accuracy" in out
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_000.pt", "epoch_001.pt", "history.json", "last.pt",
                                                      "resume.pt"]
    last = torch.load(ckpts / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and "seconds" not in last["metrics"]  # no wall clock: same training, same bytes
    rc, out, _ = _run(capsys, "model=digits_cnn", "data=digits", "train.epochs=1", f"run.dir={run}")
    assert rc == 0 and out.startswith("already trained: ")  # overwrite itself is not part of the configuration


def _regression_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x=x, y=(x[:, :2] * 2.0).astype(np.float32))
    return ["model=mlp", "model.hidden=[8]", "data=tensors", f"data.path={tmp_path / 'reg.npz'}",
            "data.in_features=6", "data.out_features=2", "train.epochs=1"]


def test_regression_reports_the_test_loss(tmp_path, capsys):
    rc, out, _ = _run(capsys, *_regression_file(tmp_path), "loss=mae", f"run.dir={tmp_path / 'R'}")
    assert rc == 0 and "(test loss " in out and "accuracy" not in out


def test_cross_entropy_on_regression_data_writes_nothing(tmp_path, capsys):
    rc, _, err = _run(capsys, *_regression_file(tmp_path), f"run.dir={tmp_path / 'R'}")
    one_error_line(rc, err, "loss cross_entropy needs class labels")
    assert not (tmp_path / "R").exists()
