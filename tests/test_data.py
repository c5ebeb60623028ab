"""Data sources in their real formats: a tiny CIFAR-10 python folder, tensors files, synthetic data."""
import pickle

import h5py
import numpy as np
import pytest
import torch

from conftest import cli, read_surface
from landscape import data
from landscape.errors import UserError


def _cifar_folder(root, per_batch=8):
    """The exact layout of cifar-10-batches-py: pickled dicts with b'data' (N, 3072) uint8, b'labels'."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def test_cifar10_folder_loads_as_uint8_and_normalises(tmp_path):
    root = _cifar_folder(tmp_path / "cifar-10-batches-py")
    d = data.cifar10(root)
    assert d.train.x.shape == (40, 3, 32, 32) and d.train.x.dtype == torch.uint8 and len(d.test) == 8
    with open(root / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    # channel-major rows of 3072: the red plane first, as CIFAR stores it
    assert torch.equal(d.train.x[0, 0].flatten(), torch.from_numpy(first[b"data"][0, :1024]))
    assert d.train.y[:8].tolist() == first[b"labels"]
    xb = d.train.inputs(0, 2)
    expected = (first[b"data"][0, 1024:2048].reshape(32, 32) / 255 - data.CIFAR_MEAN[1]) / data.CIFAR_STD[1]
    np.testing.assert_allclose(xb[0, 1].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_cifar10_missing_batches_is_a_clear_error(tmp_path):
    root = _cifar_folder(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(UserError, match="lacks data_batch_3"):
        data.cifar10(root)


def test_resnet20_surface_on_a_cifar_folder(tmp_path):
    root = _cifar_folder(tmp_path / "cifar-10-batches-py")
    from landscape.models import resnet20

    torch.save({"model": resnet20().state_dict()}, tmp_path / "r20.pt")  # stored under "model"
    run = tmp_path / "run"
    cli("landscape-surface", "model=resnet20", "data=cifar10", f"data.root={root}", "data.split=both",
        f"checkpoint={tmp_path / 'r20.pt'}", "grid.resolution=3", f"run.dir={run}")
    s = read_surface(run / "surface.h5")
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert s[key].shape == (3, 3) and np.isfinite(s[key]).all()


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_tensors_file_regression_with_mlp_and_mae(tmp_path, suffix):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 12)).astype(np.float32)
    y = (x[:, :3] * 2.0).astype(np.float32)  # float targets: regression
    path = tmp_path / f"genes{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x, y=y)
    else:
        with h5py.File(path, "w") as f:
            f["x"], f["y"] = x, y
    d = data.tensors(path)
    assert d.num_classes == 0 and len(d.train) == 48 and len(d.test) == 12
    args = ["model=mlp", "model.hidden=[16]", "model.taaf=true", "data=tensors", f"data.path={path}",
            "data.in_features=12", "data.out_features=3", "loss=mae"]
    cli("landscape-train", *args, "train.epochs=2", f"run.dir={tmp_path / 'R'}")
    cli("landscape-surface", *args, f"checkpoint={tmp_path / 'R' / 'checkpoints' / 'last.pt'}",
        "grid.resolution=5", f"run.dir={tmp_path / 'S'}")
    s = read_surface(tmp_path / "S" / "surface.h5")
    assert s["train_loss"].shape == (5, 5) and "train_acc" not in s  # no accuracy for regression
    from landscape import checkpoint
    from landscape.models import mlp
    from landscape.train import evaluate_split

    model = mlp(12, 3, [16], taaf=True)
    checkpoint.load_into(model, tmp_path / "R" / "checkpoints" / "last.pt")
    mae, _ = evaluate_split(model, d.train, "mae", classify=False)  # mean |f(x) - y| over samples and outputs
    assert s["train_loss"][2, 2] == pytest.approx(mae, rel=1e-6)
    assert mae == pytest.approx(float((model(d.train.x) - d.train.y).abs().mean().detach()), rel=1e-5)


def test_tensors_file_without_y_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 2)))
    with pytest.raises(UserError, match="needs arrays 'x' and 'y'"):
        data.tensors(tmp_path / "bad.npz")


def test_synthetic_is_seeded_and_shaped():
    a, b = data.synthetic((3, 8, 8), n_train=10, seed=4), data.synthetic((3, 8, 8), n_train=10, seed=4)
    assert torch.equal(a.train.x, b.train.x) and a.train.x.shape == (10, 3, 8, 8)
    assert a.input_shape == (3, 8, 8)
