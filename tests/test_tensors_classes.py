"""`data=tensors` leaves the sizes to the file: `data.num_classes=0` (and null `in_channels`, `in_features`,
`out_features`) are read from it before the model is built, by every command, and the run records them.
In-process (`train.main`, `surface.main`)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import yaml
from sklearn.datasets import load_digits

from conftest import one_error_line, read_surface
from jobs.run import RunDir
from landscape import checkpoint, data
from landscape.models import mlp
from landscape.spec import instantiate
from launch import config, surface, train


def _digits(n: int | None = None, upsample: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as a user would store them: x (N, 1, 8, 8) floats in [0, 1] or, upsampled for a
    CIFAR ResNet, (N, 3, 32, 32); y integer labels 0..9."""
    raw = load_digits()
    x, y = (raw.images[:n, None] / 16).astype(np.float32), raw.target[:n]
    if upsample:
        x = np.repeat(x.repeat(4, axis=2).repeat(4, axis=3), 3, axis=1)
    return x, y


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tensors") / "digits.npz"
    x, y = _digits()
    np.savez(path, x=x, y=y)
    return path


def _main(main, capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([*map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _outputs(run_dir, name: str, path) -> int:
    """Outputs per sample of the trained network: the model train.yaml describes, with the checkpoint's weights."""
    model = instantiate(yaml.safe_load((run_dir / "train.yaml").read_text())["model"])
    checkpoint.load_into(model, run_dir / "checkpoints" / name)
    with torch.no_grad():
        return model.eval()(data.tensors(path).train.inputs(0, 1)).shape[1]


def test_default_settings_train_and_evaluate_ten_classes_and_resume(digits_file, tmp_path, capsys):
    common = ["model=digits_cnn", "data=tensors", f"data.path={digits_file}"]
    args = [*common, "train.epochs=1", f"run.dir={tmp_path / 'T'}"]
    rc, out, err = _main(train.main, capsys, *args)
    assert rc == 0 and "(test accuracy" in out and err == "", err
    saved = yaml.safe_load((tmp_path / "T" / "train.yaml").read_text())
    assert saved["data"]["num_classes"] == 10 and saved["model"]["num_classes"] == 10
    assert saved["model"]["in_channels"] == 1
    assert _outputs(tmp_path / "T", "last.pt", digits_file) == 10
    rc, out, _ = _main(train.main, capsys, *args)
    assert rc == 0 and out.startswith("already trained: ")  # the same command finds the same training

    args = [*common, f"checkpoint={tmp_path / 'T' / 'checkpoints' / 'last.pt'}", "grid.resolution=3",
            "grid.tile=2", "data.split=both", f"run.dir={tmp_path / 'S'}"]
    rc, out, err = _main(surface.main, capsys, *args)
    assert rc == 0, err
    run = RunDir(tmp_path / "S")
    assert run.config["data"]["num_classes"] == 10 and run.config["model"]["num_classes"] == 10
    s = read_surface(run.path / "surface.h5")
    assert s["test_acc"][1, 1] > 10.0  # a trained 10-class model: better than chance at the centre
    assert np.isfinite(s["train_loss"]).all()
    rc, out, err = _main(surface.main, capsys, *args)
    assert rc == 0 and "4/4 tiles done, 0 to compute" in out, out + err  # the same fingerprint: resumed


def test_resnet20_reads_channels_and_classes_from_images(tmp_path, capsys):
    x, y = _digits(120, upsample=True)
    np.savez(tmp_path / "d32.npz", x=x, y=y)
    rc, out, err = _main(train.main, capsys, "model=resnet20", "data=tensors", f"data.path={tmp_path / 'd32.npz'}",
                         "train.epochs=1", "train.batch_size=60", f"run.dir={tmp_path / 'T'}")
    assert rc == 0 and "(test accuracy" in out, err
    model = yaml.safe_load((tmp_path / "T" / "train.yaml").read_text())["model"]
    assert (model["num_classes"], model["in_channels"]) == (10, 3)


def test_regression_mlp_takes_its_sizes_from_the_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x=x, y=(x[:, :2] * 2.0).astype(np.float32))
    common = ["model=mlp", "model.hidden=[8]", "data=tensors", f"data.path={tmp_path / 'reg.npz'}", "loss=mae"]
    rc, out, err = _main(train.main, capsys, *common, "train.epochs=1", f"run.dir={tmp_path / 'T'}")
    assert rc == 0 and "(test loss" in out, err
    saved = yaml.safe_load((tmp_path / "T" / "train.yaml").read_text())
    assert {k: saved["data"][k] for k in data.SIZES} == {"num_classes": 0, "in_channels": None, "in_features": 6,
                                                         "out_features": 2}
    assert (saved["model"]["in_features"], saved["model"]["out_features"]) == (6, 2)
    rc, _, err = _main(surface.main, capsys, *common, f"checkpoint={tmp_path / 'T' / 'checkpoints' / 'last.pt'}",
                       "grid.resolution=3", f"run.dir={tmp_path / 'S'}")
    assert rc == 0, err
    assert "train_acc" not in read_surface(tmp_path / "S" / "surface.h5")  # regression: a loss, no accuracy


def test_explicit_sizes_are_honoured(digits_file, tmp_path, capsys):
    rc, _, err = _main(train.main, capsys, "model=digits_cnn", "data=tensors", f"data.path={digits_file}",
                       "data.num_classes=12", "train.epochs=0", f"run.dir={tmp_path / 'T'}")
    assert rc == 0, err
    assert yaml.safe_load((tmp_path / "T" / "train.yaml").read_text())["data"]["num_classes"] == 12
    assert _outputs(tmp_path / "T", "epoch_000.pt", digits_file) == 12
    cfg = config.load("surface", ["model=mlp", "data=tensors", f"data.path={digits_file}", "data.in_features=64",
                                  "data.out_features=11", "checkpoint=c.pt"])
    assert (cfg["model"]["in_features"], cfg["model"]["out_features"], cfg["data"]["num_classes"]) == (64, 11, 10)


@pytest.mark.parametrize("kind", ["npz", "npz compressed", "h5 with a test split"])
def test_sizes_from_the_headers_match_a_full_load(kind, tmp_path):
    x, y = _digits(50)
    arrays = dict(x=x.reshape(50, 64), y=y)
    if kind == "npz":
        path = tmp_path / "d.npz"
        np.savez(path, **arrays)
    elif kind == "npz compressed":
        path = tmp_path / "d.npz"
        np.savez_compressed(path, **arrays)
    else:
        path = tmp_path / "d.h5"
        with h5py.File(path, "w") as f:
            f["x"], f["y"], f["x_test"], f["y_test"] = x[:40], y[:40] % 7, x[40:], y[40:] % 7
    full = data.tensors(path)
    sizes = data.tensors_sizes(path)
    assert sizes["num_classes"] == full.num_classes == (7 if kind.startswith("h5") else 10)
    assert sizes["in_features"] == int(np.prod(full.input_shape)) and sizes["out_features"] == full.num_classes
    assert sizes["in_channels"] == (1 if kind.startswith("h5") else None)


def test_a_classifier_on_float_targets_is_one_line_and_writes_nothing(tmp_path, capsys):
    x, _ = _digits(40)
    np.savez(tmp_path / "reg.npz", x=x, y=x.reshape(40, -1)[:, :1])
    rc, _, err = _main(train.main, capsys, "model=digits_cnn", "data=tensors", f"data.path={tmp_path / 'reg.npz'}",
                       "loss=mse", f"run.dir={tmp_path / 'T'}")
    one_error_line(rc, err, "data.num_classes is 0 (regression: the targets y are floats), but this model is a "
                            "classifier")
    assert not (tmp_path / "T").exists()


def test_relabelled_file_is_refused_naming_the_count_and_the_file(tmp_path, capsys):
    x, y = _digits(60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    torch.save(mlp(64, 10, [8]).state_dict(), tmp_path / "c.pt")
    args = ["model=mlp", "model.hidden=[8]", "data=tensors", f"data.path={tmp_path / 'd.npz'}", "data.out_features=10",
            f"checkpoint={tmp_path / 'c.pt'}", "grid.resolution=2", "launcher=none", f"run.dir={tmp_path / 'S'}"]
    rc, _, err = _main(surface.main, capsys, *args)
    assert rc == 0, err
    np.savez(tmp_path / "d.npz", x=x, y=y % 9)  # 9 classes now (the model keeps its 10 outputs)
    rc, _, err = _main(surface.main, capsys, *args)
    line = one_error_line(rc, err, "holds a run of another configuration (data.num_classes: 10 -> 9")
    assert "d.npz changed since this run was created" in line
