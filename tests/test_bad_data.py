"""Bad data and device settings stop `landscape-surface` in the driver, before anything is written, with one
line (exit 2); a run's data files are checked on every resume. In-process (`surface.main`) for speed."""
import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import one_error_line
from jobs.tile import run_tiles
from launch import config, surface
from launch.prepare import prepare
from landscape import data
from landscape.digest import file_digest
from landscape.errors import UserError
from landscape.grid import make_grid
from landscape.models import mlp, resnet20
from landscape.surface import write_surface
from test_data import _cifar_folder

N, FEATURES = 40, 16


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """An untrained MLP for FEATURES inputs and 10 outputs: a checkpoint without a training run."""
    path = tmp_path_factory.mktemp("net") / "mlp.pt"
    torch.save(mlp(FEATURES, 10, [8]).state_dict(), path)
    return path


def _args(net, path, *more):
    return ["model=mlp", "model.hidden=[8]", "data=tensors", f"data.path={path}", f"data.in_features={FEATURES}",
            "data.out_features=10", "data.num_classes=10", f"checkpoint={net}", "grid.resolution=3", *more]


def _surface(capsys, *args) -> tuple[int, list[str]]:
    """Exit code and stderr lines of one in-process `landscape-surface` call."""
    capsys.readouterr()
    rc = surface.main([str(a) for a in args])
    return rc, capsys.readouterr().err.strip().splitlines()


def _snapshot(run):
    return sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*"))


def _x(n=N, width=FEATURES):
    return np.random.default_rng(0).normal(size=(n, width)).astype(np.float32)


def _labels(n=N):
    return np.arange(n) % 10


def _with_nan(rows):
    x = _x()
    x[:rows, 3] = np.nan
    return x


CASES = {  # name: (data file name, its arrays or raw bytes, extra overrides, message fragment)
    "empty arrays": ("d.npz", dict(x=_x(0), y=_labels(0)), [], "array x has no samples"),
    "string x": ("d.npz", dict(x=np.array(["a"] * N), y=_labels()), [], "array x holds <U1 values"),
    "x_test without y_test": ("d.npz", dict(x=_x(), y=_labels(), x_test=_x(5)), [], "has x_test without y_test"),
    "text named .npz": ("d.npz", b"x,y\n1,2\n", [], "cannot be read as an .npz archive"),
    "zero-byte .npz": ("d.npz", b"", [], "is empty (0 bytes)"),
    "csv file": ("d.csv", b"x,y\n1,2\n", [], "cannot be read as an HDF5 file"),
    "fewer rows in y": ("d.npz", dict(x=_x(30), y=_labels(10)), [], "x has 30 samples but y has 10"),
    "NaN in x": ("d.npz", dict(x=_with_nan(7), y=_labels()), [], "array x has NaN or inf in 7 of 40 samples"),
    "inf in y_test": ("d.h5", dict(x=_x(), y=_x(), x_test=_x(4), y_test=np.full((4, 16), np.inf, np.float32)),
                      ["data.num_classes=0", "loss=mse"], "array y_test has NaN or inf in 4 of 4 samples"),
    "negative labels": ("d.npz", dict(x=_x(), y=_labels() - 1), [], "class label -1 in y is negative"),
    "labels past num_classes": ("d.npz", dict(x=_x(), y=_labels() + 3), [],
                                "class label 12 in y is not below data.num_classes=10"),
    "float y with num_classes": ("d.npz", dict(x=_x(), y=_x()), [], "y holds floats (regression targets)"),
    "float labels with cross_entropy": ("d.npz", dict(x=_x(), y=_x(width=10)), ["data.num_classes=0"],
                                        "loss cross_entropy needs class labels but the train split's"),
    "labels shaped (N, 1)": ("d.npz", dict(x=_x(), y=_labels()[:, None]), [], "shape (N,), but the train split's"),
    "regression targets of another width": ("d.npz", dict(x=_x(), y=_x(width=3)), ["data.num_classes=0", "loss=mae"],
                                            "the model outputs 10 values per sample but the train split's"),
    "x_test of another width, split both": (
        "d.npz", dict(x=_x(), y=_labels(), x_test=_x(5, width=FEATURES + 1), y_test=_labels(5)),
        ["data.split=both"], "(the test split) does not fit the model"),
    "empty test split": ("d.npz", dict(x=_x(2), y=_labels(2)), ["data.split=test"], "the test split has no samples"),
    "subset not a number": ("d.npz", dict(x=_x(), y=_labels()), ["data.subset=abc"], "data.subset is 'abc'"),
    "device name": ("d.npz", dict(x=_x(), y=_labels()), ["eval.device=gpu"], "eval.device 'gpu' is not a device"),
}


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif path.suffix == ".npz":
        np.savez(path, **content)
    else:
        with h5py.File(path, "w") as f:
            for k, v in content.items():
                f[k] = v


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_one_line_before_anything_is_written(case, net, tmp_path, capsys):
    name, content, more, message = CASES[case]
    _write(tmp_path / name, content)
    rc, lines = _surface(capsys, *_args(net, tmp_path / name, *more), f"run.dir={tmp_path / 'run'}")
    one_error_line(rc, "\n".join(lines), message)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_device_this_machine_lacks_leaves_a_run_untouched(device, net, tmp_path, capsys):
    _write(tmp_path / "d.npz", dict(x=_x(), y=_labels()))
    args = _args(net, tmp_path / "d.npz", f"run.dir={tmp_path / 'run'}", "launcher=none")
    run = prepare(config.load("surface", args), args, log=lambda *_: None).path
    before = _snapshot(run)
    rc, lines = _surface(capsys, *args[:-1], f"eval.device={device}")
    assert rc == 2 and len(lines) == 1 and f"eval.device '{device}' is not available: this machine has cpu" in lines[0]
    assert _snapshot(run) == before


def test_explicit_num_classes_is_honoured(tmp_path):
    np.savez(tmp_path / "d.npz", x=_x(), y=_labels() % 5)  # classes 0..4 of a 10-class problem
    assert data.tensors(tmp_path / "d.npz", num_classes=10).num_classes == 10
    assert data.tensors(tmp_path / "d.npz").num_classes == 5
    with pytest.raises(UserError, match="data.num_classes is 'ten'"):
        data.tensors(tmp_path / "d.npz", num_classes="ten")


def test_changed_data_file_refuses_the_resume_and_leaves_tiles_alone(net, tmp_path, capsys):
    cur, run = tmp_path / "cur.npz", tmp_path / "run"
    np.savez(cur, x=_x(), y=_labels())
    args = _args(net, cur, "grid.tile=2", f"run.dir={run}")
    assert _surface(capsys, *args)[0] == 0
    digest = yaml.safe_load((run / "run.yaml").read_text())["inputs"][str(cur)]
    assert digest == file_digest(cur)
    (run / "tiles" / "00001.h5").unlink()
    np.savez(cur, x=_x() + 1, y=_labels())
    before = _snapshot(run)
    for again in (args, [f"run.dir={run}"]):  # the same command, and the run dir alone
        rc, lines = _surface(capsys, *again)
        assert rc == 2 and len(lines) == 1, lines
        assert f"{cur} changed since this run was created (sha256 {digest[:12]} then" in lines[0]
        assert "use a new run.dir, or delete" in lines[0]
    assert _snapshot(run) == before and not (run / "tiles" / "00001.h5").exists()


def test_a_worker_refuses_data_changed_after_the_driver_checked_it(net, tmp_path):
    """A queued array task that starts after the file changed computes nothing (the driver checked earlier)."""
    cur = tmp_path / "cur.npz"
    np.savez(cur, x=_x(), y=_labels())
    args = _args(net, cur, "grid.tile=2", f"run.dir={tmp_path / 'run'}", "launcher=none")
    run = prepare(config.load("surface", args), args, log=lambda *_: None)
    np.savez(cur, x=_x() + 1, y=_labels())
    with pytest.raises(UserError, match=f"{cur} changed since this run was created .*: this worker computes nothing"):
        run_tiles(str(run.path), [0])
    assert not list(run.path.glob("tiles/*.h5"))


def test_a_changed_cifar_batch_is_named(tmp_path):
    root = _cifar_folder(tmp_path / "cifar-10-batches-py", per_batch=2)
    torch.save(resnet20().state_dict(), tmp_path / "r20.pt")
    args = ["model=resnet20", "data=cifar10", f"data.root={root}", f"checkpoint={tmp_path / 'r20.pt'}",
            "grid.resolution=3", f"run.dir={tmp_path / 'run'}", "launcher=none"]
    prepare(config.load("surface", args), args, log=lambda *_: None)
    with open(root / "data_batch_3", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="data_batch_3 changed since this run was created"):
        prepare(config.load("surface", args), args, log=lambda *_: None)


def test_points_nonfinite_counts_a_diverged_test_loss(tmp_path):
    grid = make_grid(2, 3, [-1, 1])
    train, test = np.ones((3, 3)), np.ones((3, 3))
    test[0, 0], train[1, 1], test[2, 2] = np.nan, np.inf, np.nan
    done = np.ones((3, 3), bool)
    done[2, 2] = False  # a missing point is NaN too, but not counted
    write_surface(tmp_path / "s.h5", grid, {"test_loss": test, "train_loss": train, "done": done}, "d.h5", {})
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["points_nonfinite"] == 2
