"""`landscape-train` continues a training: a finished run given more `train.epochs` (nothing else changed)
goes on from its last epoch with its optimizer state, keeps the numbering and updates last.pt; an
interrupted one goes on from its last complete epoch. With `train.anneal_epochs` fixed in advance, 2 then 4
epochs give the very bytes of 4 in one go (each epoch's batch order and learning rates depend on the seed
and the epoch alone; CPU, one process); with the default schedule (cosine ending at train.epochs) the rates
after epoch 2 change, so the weights differ, as the README says."""
import hashlib
import shutil

import pytest
import torch

from conftest import one_error_line
from jobs.inputs import pca_checkpoints
from landscape import train as training
from landscape.checkpoint import load_state
from launch import train
from test_train_cli import _run, _snapshot  # a refused or reused training touches no file

TINY = ["model=digits_cnn", "data=digits", "eval.device=cpu"]
FIXED = [*TINY, "train.anneal_epochs=6"]  # the schedule of a 6-epoch training, whatever train.epochs is
EPOCH_FILES = [f"epoch_{e:03d}.pt" for e in range(5)]


def _digests(ckpts, names):
    return {n: hashlib.sha256((ckpts / n).read_bytes()).hexdigest() for n in names}


@pytest.fixture(scope="module")
def in_one_go(tmp_path_factory):
    """4 epochs of the fixed schedule in one go: the reference."""
    run = tmp_path_factory.mktemp("resume") / "one_go"
    assert train.main([*FIXED, "train.epochs=4", f"run.dir={run}"]) == 0
    return run / "checkpoints"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """2 epochs, then 4 on the same run.dir, fixed schedule; also the first run's digests."""
    run = tmp_path_factory.mktemp("resume") / "two"
    assert train.main([*FIXED, "train.epochs=2", f"run.dir={run}"]) == 0
    first = _digests(run / "checkpoints", EPOCH_FILES[:3])
    assert train.main([*FIXED, "train.epochs=4", f"run.dir={run}"]) == 0
    return run, first


def test_two_then_four_epochs_equal_four_in_one_go(in_one_go, two_runs):
    """Bitwise: the same weights, metrics and file bytes (what the surfaces' fingerprints read)."""
    run, _ = two_runs
    names = [*EPOCH_FILES, "last.pt", "history.json"]
    assert _digests(run / "checkpoints", names) == _digests(in_one_go, names)
    a, b = (torch.load(d / "epoch_004.pt", weights_only=True)["state_dict"] for d in (run / "checkpoints", in_one_go))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_continuing_keeps_the_numbering_and_updates_last(two_runs):
    run, first = two_runs
    ckpts = run / "checkpoints"
    assert _digests(ckpts, EPOCH_FILES[:3]) == first  # the first training's epochs stay as they were
    last = torch.load(ckpts / "last.pt", weights_only=True)
    assert last["epoch"] == 4 and last["metrics"]["epoch"] == 4
    assert sorted(p.name for p in ckpts.iterdir()) == sorted([*EPOCH_FILES, "history.json", "last.pt", "resume.pt"])
    paths = pca_checkpoints(ckpts)  # one trajectory for PCA; resume.pt is not part of it
    assert [p.name for p in paths] == EPOCH_FILES
    final = load_state(ckpts / "last.pt")  # every file a plain state_dict for load_state
    assert all(load_state(p).keys() == final.keys() for p in paths)
    assert all(torch.equal(load_state(paths[-1])[k], final[k]) for k in final)


def test_the_default_schedule_continues_but_differs_from_one_go(in_one_go, tmp_path, capsys):
    """Without train.anneal_epochs the cosine ends at train.epochs: epochs 1-2 of a 2-epoch training ran at
    other rates than those of a 4-epoch one, and epochs 3-4 continue on the 4-epoch curve. Said, not hidden."""
    run = tmp_path / "R"
    assert _run(capsys, *TINY, "train.epochs=2", f"run.dir={run}")[0] == 0
    rc, out, _ = _run(capsys, *TINY, "train.epochs=4", f"run.dir={run}")
    assert rc == 0 and "note: the cosine schedule now ends at epoch 4" in out
    assert f"from {run / 'checkpoints' / 'epoch_002.pt'} to epoch 4" in out
    reference = tmp_path / "one_go"
    assert _run(capsys, *TINY, "train.epochs=4", f"run.dir={reference}")[0] == 0
    a, b = (load_state(r / "checkpoints" / "epoch_004.pt") for r in (run, reference))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(load_state(run / "checkpoints" / "epoch_000.pt").values(),
                                                 load_state(reference / "checkpoints" / "epoch_000.pt").values()))


def test_the_continued_training_is_reused(two_runs, capsys):
    run, _ = two_runs
    before = _snapshot(run)
    rc, out, _ = _run(capsys, *FIXED, "train.epochs=4", f"run.dir={run}")
    assert rc == 0 and out.startswith("already trained: ")
    assert _snapshot(run) == before


REFUSED = {
    "another lr": (["train.epochs=6", "train.anneal_epochs=6", "train.lr=0.01"],
                   "holds checkpoints of another training (train.epochs: 4 -> 6; train.lr: 0.05 -> 0.01); "
                   "only train.epochs may change to continue it"),
    "another schedule": (["train.epochs=6", "train.anneal_epochs=8"], "train.anneal_epochs: 6 -> 8"),
    "fewer epochs": (["train.epochs=3", "train.anneal_epochs=6"],
                     "holds 4 trained epochs, more than train.epochs=3: use train.epochs=4 or more"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_cannot_continue_is_refused_untouched(case, two_runs, capsys):
    run, _ = two_runs
    args, fragment = REFUSED[case]
    before = _snapshot(run)
    rc, _, err = _run(capsys, *TINY, *args, f"run.dir={run}")
    one_error_line(rc, err, fragment)
    assert _snapshot(run) == before


def test_a_schedule_ending_before_the_last_epoch_is_refused(tmp_path, capsys):
    rc, _, err = _run(capsys, *TINY, "train.epochs=4", "train.anneal_epochs=3", f"run.dir={tmp_path / 'R'}")
    one_error_line(rc, err, "train.anneal_epochs is 3, below train.epochs 4")
    assert not (tmp_path / "R").exists()


def test_an_interrupted_training_continues_from_its_last_complete_epoch(in_one_go, tmp_path, monkeypatch, capsys):
    """Interrupted after epoch_003.pt was written but before its optimizer state was: the training goes on
    from epoch 2, writes epoch 3 again and ends with the bytes of the training in one go."""
    save = training._save

    def interrupted(obj, path):
        if path.name == training.RESUME and obj["epoch"] == 3:
            raise KeyboardInterrupt
        save(obj, path)

    run = tmp_path / "R"
    monkeypatch.setattr(training, "_save", interrupted)
    rc, _, err = _run(capsys, *FIXED, "train.epochs=4", f"run.dir={run}")
    assert rc == 130 and err.strip() == "interrupted"
    assert not (run / "checkpoints" / "last.pt").exists() and (run / "checkpoints" / "epoch_003.pt").exists()
    monkeypatch.setattr(training, "_save", save)
    rc, out, _ = _run(capsys, *FIXED, "train.epochs=4", f"run.dir={run}")
    assert rc == 0 and f"from {run / 'checkpoints' / 'epoch_002.pt'} to epoch 4" in out and "note:" not in out
    names = [*EPOCH_FILES, "last.pt", "history.json"]
    assert _digests(run / "checkpoints", names) == _digests(in_one_go, names)


def test_a_finished_training_without_optimizer_state_is_not_continued(two_runs, tmp_path, capsys):
    """A run trained before resume.pt existed (or one that lost it) is still reused, but not continued."""
    run = shutil.copytree(two_runs[0], tmp_path / "R")
    (run / "checkpoints" / "resume.pt").unlink()
    before = _snapshot(run)
    rc, out, _ = _run(capsys, *FIXED, "train.epochs=4", f"run.dir={run}")
    assert rc == 0 and out.startswith("already trained: ")
    rc, _, err = _run(capsys, *FIXED, "train.epochs=5", f"run.dir={run}")
    one_error_line(rc, err, "another training (train.epochs: 4 -> 5) without the optimizer state (resume.pt)")
    assert _snapshot(run) == before
