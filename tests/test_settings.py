"""The typed run configuration and the fingerprint over every input: what changes a value is refused or named,
never mixed in. In-process (`surface.main`, the console script's function)."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import one_error_line
from jobs import inputs, settings
from jobs.run import RunDir
from jobs.tile import run_tiles
from landscape.errors import UserError
from launch import config, status, surface

NET = """import torch.nn as nn


def make(num_classes=10, bn_stats=True):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16, track_running_stats=bn_stats),
                         nn.{act}(), nn.Linear(16, num_classes))
"""


def _surface(capsys, *args) -> tuple[int, str, str]:
    rc = surface.main([*map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def custom(tmp_path, monkeypatch):
    """A user's factory module `mynet_<test>.py` on sys.path and a checkpoint of it."""
    name = f"mynet_{tmp_path.name.replace('-', '_')}"
    source = tmp_path / f"{name}.py"
    source.write_text(NET.format(act="ReLU"))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16),
                                 torch.nn.ReLU(), torch.nn.Linear(16, 10))
    torch.save(module.state_dict(), tmp_path / "net.pt")
    args = ["model=custom", f"model._target_={name}.make", "data=digits", f"checkpoint={tmp_path / 'net.pt'}",
            "grid.resolution=4", "grid.tile=2", "launcher=local"]
    return source, args


def test_settings_parse_checks_and_marks_what_changes_values(base_args):
    cfg = config.load("surface", [*base_args, "eval.stream=true", "launcher=none"])
    s = settings.parse(cfg)
    items = settings.value_items(s)
    assert s.grid.dims == 2 and items["grid.dims"] == 2 and items["eval.mode"] == "auto"
    assert not any(k.startswith(("launcher", "plot", "run")) or k in ("eval.device", "eval.stream") for k in items)
    other = settings.parse(config.load("surface", [*base_args, "eval.mode=loop", "seed=3"]))
    assert settings.differences(s, other) == ["eval.mode: auto -> loop", "seed: 0 -> 3"]
    with pytest.raises(UserError, match="unknown setting directions.start for directions=random"):
        settings.parse({**cfg, "directions": {**cfg["directions"], "start": "x.pt"}})
    with pytest.raises(UserError, match="unknown split 'all'"):
        settings.parse({**cfg, "data": {**cfg["data"], "split": "all"}})


def test_replaced_directions_file_is_refused_by_driver_and_worker(base_args, tmp_path, capsys):
    run = tmp_path / "run"
    args = [*base_args, "grid.resolution=4", "grid.tile=2", "launcher=local", f"run.dir={run}"]
    assert _surface(capsys, *args)[0] == 0
    with h5py.File(run / "directions.h5", "r+", locking=False) as f:  # a valid file of the same shapes
        f["xdirection/0"][...] = np.asarray(f["xdirection/0"]) * 1.5
    (run / "tiles" / "00001.h5").unlink()
    rc, _, err = _surface(capsys, *args)
    one_error_line(rc, err, "directions.h5 changed since this run was created (sha256 ")
    assert not (run / "tiles" / "00001.h5").exists()
    said = status.summary(RunDir(run))
    assert "inputs changed: " in said and "directions.h5 changed since" in said and "to finish" not in said
    with pytest.raises(UserError, match="directions.h5 changed since this run was created"):
        run_tiles(str(run), [1])  # a queued array task starts after the change: computes nothing
    assert not (run / "tiles" / "00001.h5").exists()


@pytest.mark.parametrize("edited", ["factory", "helper beside it"])
def test_edited_model_source_is_refused_and_named(custom, tmp_path, capsys, edited):
    source, args = custom
    helper = source.with_name("helper_mod.py")  # a module beside the factory's, a helper it imports
    helper.write_text("ACT = 'ReLU'\n")
    source.write_text(f"import helper_mod  # noqa: F401\n{source.read_text()}")
    run = tmp_path / "run"
    rc, out, err = _surface(capsys, *args, f"run.dir={run}")
    assert rc == 0, err
    assert {str(source), str(helper)} <= set(yaml.safe_load((run / "run.yaml").read_text())["inputs"])
    (run / "tiles" / "00000.h5").unlink()
    changed = source if edited == "factory" else helper
    changed.write_text(changed.read_text().replace("ReLU", "Tanh"))  # same shapes, other values
    rc, _, err = _surface(capsys, *args, f"run.dir={run}")
    one_error_line(rc, err, f"{changed} changed since this run was created")
    assert not (run / "tiles" / "00000.h5").exists()


def test_a_setting_added_with_plus_that_nothing_reads_is_refused(base_args, tmp_path, capsys):
    for typo, named in (("+seeed=5", "unknown setting seeed (did you mean seed?)"),
                        ("+grid.tiles=4", "unknown setting grid.tiles (did you mean grid.tile?)")):
        rc, _, err = _surface(capsys, *base_args, typo, f"run.dir={tmp_path / 'run'}")
        one_error_line(rc, err, named)
        assert not (tmp_path / "run").exists()


def test_batchnorm_without_running_statistics_is_refused_before_anything_is_written(custom, tmp_path, capsys):
    _, args = custom
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16),
                                 torch.nn.BatchNorm1d(16, track_running_stats=False), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 10))
    torch.save(module.state_dict(), tmp_path / "net.pt")  # a checkpoint that fits: only the statistics are wrong
    run = tmp_path / "run"
    rc, _, err = _surface(capsys, *args, "+model.bn_stats=false", f"run.dir={run}")
    one_error_line(rc, err, "track_running_stats")
    assert not run.exists()


def test_run_of_another_format_or_engine_is_refused_with_one_line(base_args, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    args = [*base_args, "grid.resolution=3", "grid.tile=3", "launcher=none", f"run.dir={run}"]
    assert _surface(capsys, *args)[0] == 0
    monkeypatch.setattr(inputs, "ENGINE_VERSION", inputs.ENGINE_VERSION + 1)
    rc, _, err = _surface(capsys, *args)
    one_error_line(rc, err, "the engine's arithmetic changed")
    monkeypatch.undo()
    saved = yaml.safe_load((run / "run.yaml").read_text())
    del saved["format"]  # as runs made before the format was recorded
    (run / "run.yaml").write_text(yaml.safe_dump(saved))
    rc, _, err = _surface(capsys, *args)
    one_error_line(rc, err, "was made by another version of landscape (run format 1")
    assert yaml.safe_load((run / "run.yaml").read_text()) == saved  # untouched


def test_inputs_are_recorded_once_each_with_their_digests(trained, tmp_path, capsys):
    ckpts = tmp_path / "ck"
    shutil.copytree(trained, ckpts)
    run = tmp_path / "pca"
    args = ["model=digits_cnn", "data=digits", f"checkpoint={ckpts / 'last.pt'}", "directions=pca",
            f"directions.checkpoints={ckpts}", "grid.resolution=3", "grid.tile=3", "launcher=none", f"run.dir={run}"]
    assert _surface(capsys, *args)[0] == 0
    saved = RunDir(run).saved
    assert list(saved["inputs"]) == [str(ckpts / "last.pt")] + [str(ckpts / f"epoch_{i:03d}.pt") for i in range(9)]
    assert saved["fingerprint"] == inputs.fingerprint(saved["key"], saved["directions"])
    assert saved["format"] == settings.RUN_FORMAT
    s = replace(RunDir(run).settings, seed=1)  # seed does not change PCA values but is a setting: another key
    assert inputs.key(s, saved["inputs"]) != saved["key"]


def test_bf16_on_a_cpu_is_said_by_the_driver(base_args, tmp_path, capsys):
    rc, out, err = _surface(capsys, *base_args, "precision=bf16", "grid.resolution=3", "grid.tile=3",
                            "launcher=local", f"run.dir={tmp_path / 'run'}")
    assert rc == 0, err
    warning = [line for line in out.splitlines() if line.startswith("warning: ") and "bf16" in line]
    assert len(warning) == 1 and "CPU" in warning[0], out


def test_a_group_choice_without_a_conf_file_lists_those_that_exist(base_args, capsys):
    rc, _, err = _surface(capsys, *base_args, "launcher=lsf")
    one_error_line(rc, err, "launcher 'lsf' is unknown: use one of local, mpi, none, pbs, slurm")
    rc, _, err = _surface(capsys, *base_args, "model=resnet")
    one_error_line(rc, err, "model 'resnet' is unknown (did you mean resnet56?)")


def test_training_a_model_the_surface_refuses_is_warned_first(custom, tmp_path, capsys):
    from launch import train
    _, args = custom
    model_args = [a for a in args if a.startswith(("model", "data"))]
    assert train.main([*model_args, "+model.bn_stats=false", "train.epochs=0", f"run.dir={tmp_path / 't'}"]) == 0
    out = capsys.readouterr().out
    assert "warning: layer 2 (BatchNorm1d) has track_running_stats=False" in out
    assert "landscape-surface refuses such a model" in out


def _digits_npz(path: Path, relabel: int = 10) -> Path:
    from sklearn.datasets import load_digits
    d = load_digits()
    np.savez(path, x=d.images[:300, None].astype(np.float32), y=d.target[:300] % relabel)
    return path


def test_continuing_a_training_on_changed_data_is_refused(tmp_path, capsys):
    from launch import train
    npz = _digits_npz(tmp_path / "d.npz")
    args = ["model=digits_cnn", "data=tensors", f"data.path={npz}", f"run.dir={tmp_path / 't'}"]
    assert train.main([*args, "train.epochs=1"]) == 0
    np.savez(npz, x=np.load(npz)["x"] + 1, y=np.load(npz)["y"])  # same shapes, other contents
    before = sorted((tmp_path / "t" / "checkpoints").iterdir())
    capsys.readouterr()
    rc = train.main([*args, "train.epochs=2"])
    one_error_line(rc, capsys.readouterr().err, f"{npz} changed since this run was created")
    assert sorted((tmp_path / "t" / "checkpoints").iterdir()) == before


def test_a_relabelled_data_file_is_named_not_blamed_on_the_checkpoint(tmp_path, capsys):
    from launch import train
    npz = _digits_npz(tmp_path / "d.npz")
    model = ["model=digits_cnn", "data=tensors", f"data.path={npz}"]
    assert train.main([*model, "train.epochs=1", f"run.dir={tmp_path / 't'}"]) == 0
    args = [*model, f"checkpoint={tmp_path / 't' / 'checkpoints' / 'last.pt'}", "grid.resolution=3",
            "grid.tile=3", "launcher=none", f"run.dir={tmp_path / 'run'}"]
    assert _surface(capsys, *args)[0] == 0
    _digits_npz(npz, relabel=7)  # 7 classes now: the inferred model no longer fits the checkpoint
    for again in (args, [f"run.dir={tmp_path / 'run'}"]):
        rc, _, err = _surface(capsys, *again)
        line = one_error_line(rc, err, f"{npz} changed since this run was created")
        assert "does not fit" not in line
