"""Researchers' own code and files: a model module in the folder the command starts in (or model.path),
checkpoints as other tools save them (checkpoint.key, checkpoint.strip_prefix), trajectories named by a
pattern, and paths holding any character."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from landscape import checkpoint
from landscape.checkpoint import Layout
from landscape.errors import UserError
from landscape.models import digits_cnn

from jobs import inputs
from conftest import cli, read_surface

NET = '''from torch import nn


def make_net(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, num_classes))
'''
SMALL = ["data=digits", "grid.resolution=3", "grid.tile=2"]


def _own_module(folder: Path, name: str) -> Path:
    """`name.py` holding make_net, and a checkpoint of it, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(NET)
    ns: dict = {}
    exec(NET, ns)  # noqa: S102 - the test's own module text
    torch.manual_seed(0)
    torch.save(ns["make_net"]().state_dict(), folder / "net.pt")
    return folder / "net.pt"


def test_a_module_in_the_starting_folder_imports_in_every_worker_process(tmp_path, monkeypatch):
    """A real console script and two local worker processes: none has the folder on its path but by the run."""
    ckpt = _own_module(tmp_path / "proj", "zoo_own_net_a")
    monkeypatch.chdir(tmp_path / "proj")
    proc = cli("landscape-surface", "model=custom", "model._target_=zoo_own_net_a.make_net", f"checkpoint={ckpt}",
               *SMALL, "launcher.workers=2", "run.dir=run", process=True)
    assert "surface" in proc.stdout, proc.stderr
    saved = yaml.safe_load((tmp_path / "proj" / "run" / "run.yaml").read_text())
    assert saved["config"]["model"]["path"] == [str(tmp_path / "proj")]
    assert str(tmp_path / "proj" / "zoo_own_net_a.py") in saved["inputs"]  # its source is in the fingerprint
    assert np.isfinite(read_surface(tmp_path / "proj" / "run" / "surface.h5")["train_loss"]).all()


def test_model_path_names_another_folder(tmp_path, monkeypatch, capsys):
    ckpt = _own_module(tmp_path / "code", "zoo_own_net_b")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    args = ["model=custom", "model._target_=zoo_own_net_b.make_net", f"checkpoint={ckpt}", *SMALL, "run.dir=r"]
    proc = cli("landscape-surface", *args, check=False, process=True)
    assert proc.returncode == 2 and "model.path=FOLDER" in proc.stderr, proc.stderr
    proc = cli("landscape-surface", *args, "model.path=../code", process=True)
    saved = yaml.safe_load((tmp_path / "elsewhere" / "r" / "run.yaml").read_text())
    assert [Path(p).resolve() for p in saved["config"]["model"]["path"]] == [tmp_path / "code", tmp_path / "elsewhere"]


def _lightning(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A Lightning-style file (keys prefixed `model.`, an EMA copy beside the weights) and the EMA weights alone."""
    torch.manual_seed(1)
    plain, ema = digits_cnn().state_dict(), digits_cnn().state_dict()
    wrapped = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in plain.items()},
               "ema": {f"model.{k}": v for k, v in ema.items()}}
    torch.save(wrapped, tmp_path / "lightning.ckpt")
    torch.save(ema, tmp_path / "ema.pt")
    return tmp_path / "lightning.ckpt", tmp_path / "ema.pt", ema


def test_checkpoint_key_and_prefix_pick_the_state_dict(tmp_path):
    lightning, _, ema = _lightning(tmp_path)
    state = checkpoint.load_state(lightning, layout=Layout(key="ema", strip_prefix="model."))
    assert state.keys() == ema.keys() and all(torch.equal(state[k], v) for k, v in ema.items())
    with pytest.raises(UserError, match="holds no state_dict under checkpoint.key=emma; its state_dicts: ema, "
                                        "state_dict"):
        checkpoint.load_state(lightning, layout=Layout(key="emma"))
    with pytest.raises(UserError, match=r"starts with 'model.': checkpoint.strip_prefix=model. removes it"):
        checkpoint.load_into(digits_cnn(), lightning)


def test_checkpoint_settings_on_the_command_line(tmp_path, capsys):
    """`checkpoint=PATH` with checkpoint.key / strip_prefix gives the surface of those weights, bitwise."""
    lightning, ema_file, _ = _lightning(tmp_path)
    proc = cli("landscape-surface", "model=digits_cnn", *SMALL, f"checkpoint={lightning}", check=False)
    assert proc.returncode == 2 and "checkpoint.strip_prefix=model." in proc.stderr, proc.stderr
    cli("landscape-surface", "model=digits_cnn", *SMALL, f"checkpoint={lightning}", "checkpoint.key=ema",
        "checkpoint.strip_prefix=model.", f"run.dir={tmp_path / 'a'}")
    cli("landscape-surface", "model=digits_cnn", *SMALL, f"checkpoint.path={ema_file}", f"run.dir={tmp_path / 'b'}")
    a, b = read_surface(tmp_path / "a" / "surface.h5"), read_surface(tmp_path / "b" / "surface.h5")
    assert np.array_equal(a["train_loss"], b["train_loss"])


def test_a_trajectory_pattern_in_natural_order(tmp_path):
    for step in (0, 2, 10, 100, 1000):
        torch.save({}, tmp_path / f"ckpt-{step}.pt")
    got = inputs.pca_checkpoints(str(tmp_path / "ckpt-*.pt"))
    assert [p.name for p in got] == ["ckpt-0.pt", "ckpt-2.pt", "ckpt-10.pt", "ckpt-100.pt", "ckpt-1000.pt"]
    with pytest.raises(UserError, match=r"got 0 from the pattern .*/step_\*\.pt"):
        inputs.pca_checkpoints(str(tmp_path / "step_*.pt"))
    with pytest.raises(UserError, match=r"got 0 from the pattern .*/epoch_\*\.pt.*'traj/step_\*\.pt'"):
        inputs.pca_checkpoints(str(tmp_path))  # a folder means its epoch_*.pt


ODD = "é ü=1,2 'q\" [x] ${y}"


def test_paths_with_any_character_and_a_quoted_resume(tmp_path, trained, monkeypatch, capsys):
    """checkpoint, data.path, directions.checkpoints and run.dir under a folder named with =, commas, quotes,
    brackets, `${` and non-ASCII letters; the run resumes from `run.dir='...'` alone, typed quoted."""
    odd = tmp_path / ODD
    traj = odd / "traj ü"
    shutil.copytree(trained, traj)
    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    np.savez(odd / "data=1,2.npz", x=x, y=np.arange(40) % 10)
    run = odd / "run é"
    args = ["model=digits_cnn", "data=tensors", f"data.path={odd / 'data=1,2.npz'}", "data.num_classes=10",
            f"checkpoint={traj / 'last.pt'}", "directions=pca", f"directions.checkpoints={traj}",
            "grid.resolution=3", "grid.tile=3", f"run.dir={run}"]
    proc = cli("landscape-surface", *args)
    assert (run / "surface.h5").is_file(), proc.stderr
    monkeypatch.chdir("/")
    escaped = str(run).replace("\\", "\\\\").replace("'", "\\'")
    proc = cli("landscape-surface", f"run.dir='{escaped}'")
    assert "1/1 tiles done, 0 to compute" in proc.stdout, proc.stderr


def test_a_non_ascii_working_folder_with_relative_paths(tmp_path, trained, monkeypatch):
    here = tmp_path / "données, été=1"
    here.mkdir()
    shutil.copy(trained / "last.pt", here / "dernier.pt")
    monkeypatch.chdir(here)
    proc = cli("landscape-surface", "model=digits_cnn", *SMALL, "checkpoint=dernier.pt", "run.dir=essai")
    assert (here / "essai" / "surface.h5").is_file(), proc.stderr
    proc = cli("landscape-surface", "run.dir=essai")
    assert "4/4 tiles done, 0 to compute" in proc.stdout, proc.stderr
