"""Small trust fixes: non-finite weights refused, a subset covering the data is exact, a closed pipe ends
quietly, a model missing a size names the setting, and `pip install .` (not editable) finds conf/."""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from conftest import BIN, REPO, one_error_line, read_surface
from landscape import data
from landscape.checkpoint import load_state
from landscape.errors import UserError
from landscape.models import densenet_bc, digits_cnn, mlp, resnet20
from launch import surface, train


def _poisoned(src, dst, value=float("nan")):
    """A copy of checkpoint `src` whose first conv weight holds one `value`."""
    state = load_state(src)
    state["0.weight"].view(-1)[3] = value
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return dst


def _pca_folder(trained, tmp_path):
    folder = tmp_path / "trajectory"
    folder.mkdir()
    for p in sorted(trained.glob("epoch_*.pt"))[:4]:
        shutil.copy(p, folder / p.name)
    return folder


POISONED = {  # where the bad checkpoint goes: the centre, a line's start, one file of a PCA trajectory
    "centre": lambda good, bad, _: [f"checkpoint={bad}"],
    "line start": lambda good, bad, _: [f"checkpoint={good}", "directions=line", f"directions.start={bad}"],
    "pca trajectory": lambda good, bad, folder: [f"checkpoint={good}", "directions=pca",
                                                 f"directions.checkpoints={folder}"],
}


@pytest.mark.parametrize("where", list(POISONED))
def test_non_finite_checkpoint_is_refused_before_anything_is_written(where, trained, tmp_path, capsys):
    folder = _pca_folder(trained, tmp_path)
    bad = _poisoned(trained / "last.pt", folder / "epoch_001.pt" if where == "pca trajectory" else tmp_path / "b.pt")
    rc = surface.main(["model=digits_cnn", "data=digits", "grid.resolution=3", f"run.dir={tmp_path / 'run'}",
                       *POISONED[where](trained / "last.pt", bad, folder)])
    one_error_line(rc, capsys.readouterr().err, f"checkpoint {bad}: tensor 0.weight holds 1 NaN value(s) of 144")
    assert not (tmp_path / "run").exists()


def test_inf_is_named_and_integer_buffers_pass(trained, tmp_path):
    bad = _poisoned(trained / "last.pt", tmp_path / "inf.pt", float("-inf"))
    with pytest.raises(UserError, match=r"tensor 0\.weight holds 1 inf value\(s\) of 144: every loss"):
        load_state(bad)
    assert load_state(trained / "last.pt")["1.num_batches_tracked"].dtype == torch.int64  # not checked, loaded


def _surface(base_args, run_dir, *more):
    assert surface.main([*base_args, "grid.resolution=3", "data.split=both", f"run.dir={run_dir}", *more]) == 0
    with h5py.File(run_dir / "surface.h5", "r", locking=False) as f:
        return read_surface(run_dir / "surface.h5"), dict(f.attrs)


@pytest.fixture(scope="module")
def full_run(trained, tmp_path_factory):
    """A 3x3 surface of both digits splits, no subset: (run dir, arrays, attributes)."""
    run = tmp_path_factory.mktemp("full") / "run"
    return run, *_surface(["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}"], run)


def test_subset_covering_every_split_is_exact(full_run, base_args, tmp_path):
    _, full, full_attrs = full_run
    covering, attrs = _surface(base_args, tmp_path / "covering", "data.subset=100000")
    assert "approximate_subset" not in attrs and "approximate_subset" not in full_attrs
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert np.array_equal(full[key], covering[key]), key  # bitwise: the whole splits, in their order
    _, partial = _surface(base_args, tmp_path / "partial", "data.subset=1000")  # covers test (359), not train
    assert partial["approximate_subset"] == 1000
    digits = data.digits()
    assert data.subset_leaves_out({"train": digits.train, "test": digits.test}, 1000)
    assert not data.subset_leaves_out({"test": digits.test}, 1000)
    assert not data.subset_leaves_out({"train": digits.train}, None)


def test_closed_pipe_ends_quietly(full_run):
    """`landscape-status RUN | head -1`, with the reader gone before the first write (no race with head)."""
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([str(BIN / "landscape-status"), str(full_run[0])], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=120)
    os.close(write)
    assert proc.stderr == "" and proc.returncode == 1


MISSING = {  # model settings wired to data.* left unset (where no tensors file gives them): one line naming the
    # setting, from both commands
    "mlp without data.out_features": (["model=mlp", "data=digits", "data.out_features=null"],
                                      "data.out_features is not set"),
    "mlp without data.in_features": (["model=mlp", "data=digits", "data.in_features=null"],
                                     "data.in_features is not set"),
    "cnn without classes": (["model=digits_cnn", "data=tensors", "data.num_classes=null"],
                            "data.num_classes is not set"),
}


@pytest.mark.parametrize("case", list(MISSING))
def test_model_missing_a_size_names_the_setting(case, tmp_path, capsys):
    args, fragment = MISSING[case]
    x, y = np.random.default_rng(0).normal(size=(40, 6)), np.arange(40) % 3
    np.savez(tmp_path / "d.npz", x=x.reshape(40, 1, 6, 1).astype(np.float32) if "cnn" in case else x, y=y)
    common = [*args, *([f"data.path={tmp_path / 'd.npz'}"] if "data=tensors" in args else [])]
    rc = train.main([*common, "train.epochs=1", f"run.dir={tmp_path / 'train'}"])
    one_error_line(rc, capsys.readouterr().err, fragment)
    torch.save(torch.nn.Linear(1, 1).state_dict(), tmp_path / "c.pt")
    rc = surface.main([*common, f"checkpoint={tmp_path / 'c.pt'}", "grid.resolution=3", f"run.dir={tmp_path / 'r'}"])
    one_error_line(rc, capsys.readouterr().err, fragment)
    assert not (tmp_path / "train").exists() and not (tmp_path / "r").exists()


def test_every_builtin_model_checks_its_data_sizes():
    for build in (lambda: mlp(None, 10), lambda: digits_cnn(num_classes=None), lambda: resnet20(in_channels=None),
                  lambda: densenet_bc(depth=16, num_classes=None)):
        with pytest.raises(UserError, match=r"data\.\w+ is not set"):
            build()
    with pytest.raises(UserError, match="data.out_features is 'ten': use a whole number of 1 or more"):
        mlp(64, "ten")


PROBE = """
import launch, launch.config as c
cfg = c.load("surface", ["checkpoint=x.pt"])
print(launch.__file__); print(c.CONF_DIR); print(cfg["grid"]["resolution"], cfg["model"]["_target_"])
"""


@pytest.mark.slow
def test_pip_install_not_editable_finds_conf(tmp_path):
    """`pip install .` into a folder (from a copy: pip writes build/ into the source tree), then used from
    elsewhere: every module and every conf file is installed, and the configs compose from there."""
    src, target = tmp_path / "src", tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("landscape", "jobs", "launch", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", src)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=120)
    shipped = {p.relative_to(REPO).as_posix() for d in ("landscape", "jobs", "launch")
               for p in (REPO / d).rglob("*.py")}
    shipped |= {"launch/" + p.relative_to(REPO).as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    installed = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.suffix in (".py", ".yaml")}
    assert shipped <= installed, sorted(shipped - installed)  # a new subpackage missing from pyproject's list
    env = {**os.environ, "PYTHONPATH": str(target)}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=120, check=True)
    module, conf, default = probe.stdout.splitlines()
    assert module == str(target / "launch" / "__init__.py") and conf == str(target / "launch" / "conf")
    assert default == "41 landscape.models.digits_cnn"
    helped = subprocess.run([sys.executable, "-m", "launch.surface", "--help"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    assert str(target / "launch" / "conf" / "surface.yaml") in helped.stdout
