"""Datasets as tensors resident on the evaluation device, normalised on the fly batch by batch."""
from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import UserError


def normalize(x: torch.Tensor, scale: float, mean: torch.Tensor | None, std: torch.Tensor | None,
              channels_last: bool = False) -> torch.Tensor:
    """Float32 inputs `(x * scale - mean) / std` per channel, in one explicit memory format.

    The format is forced because strides decide the kernel: a (N, 1, H, W) tensor from numpy can
    carry channels-last strides while `is_contiguous()`, and then gives other low bits than a copy.
    """
    fmt = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    xb = x.to(torch.float32, memory_format=fmt)
    if scale != 1.0:
        xb = xb * scale
    if mean is not None:
        shape = (1, -1) + (1,) * (xb.dim() - 2)
        xb = (xb - mean.view(shape)) / std.view(shape)
    return xb


@dataclass
class Split:
    """One split: raw `x` (uint8 images or floats), targets `y`, and the normalisation to apply."""

    x: torch.Tensor
    y: torch.Tensor
    scale: float = 1.0
    mean: torch.Tensor | None = None  # per channel, applied after scale
    std: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> "Split":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, x=move(self.x), y=move(self.y), mean=move(self.mean), std=move(self.std))

    def inputs(self, start: int, stop: int) -> torch.Tensor:
        """Float32 inputs of samples [start, stop), normalised."""
        return normalize(self.x[start:stop], self.scale, self.mean, self.std)


@dataclass
class Data:
    """The splits of a dataset plus what a model needs to know about it."""

    train: Split
    test: Split
    num_classes: int  # 0 for regression

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "test"):
            raise UserError(f"unknown split '{name}': use train, test or both")
        return getattr(self, name)


def _seeded_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _channel_stats(x: np.ndarray, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    axes = (0,) + tuple(range(2, x.ndim))
    xs = x.astype(np.float64) * scale
    return torch.tensor(xs.mean(axes), dtype=torch.float32), torch.tensor(xs.std(axes), dtype=torch.float32)


def digits(test_fraction: float = 0.2, seed: int = 0) -> Data:
    """scikit-learn's 8x8 digits (1797 images, values 0..16), shipped with the package."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = raw.images.astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    y = raw.target.astype(np.int64)
    tr, te = _seeded_split(len(y), test_fraction, seed)
    mean, std = _channel_stats(x[tr], 1 / 16)
    split = lambda idx: Split(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), 1 / 16, mean, std)  # noqa: E731
    return Data(split(tr), split(te), num_classes=10)


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def cifar10(root: str | Path) -> Data:
    """CIFAR-10 from the standard python folder (`data_batch_1..5`, `test_batch`), kept as uint8."""
    root = Path(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    absent = [n for n in names if not (root / n).is_file()]
    if absent:
        raise UserError(f"CIFAR-10 folder {root} lacks {', '.join(absent)}: point data.root at the "
                        "extracted 'cifar-10-batches-py' folder (python version of the dataset)")

    def read(files: list[str]) -> Split:
        xs, ys = [], []
        for name in files:
            with open(root / name, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), 1 / 255,
                     torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD))

    return Data(read(names[:5]), read(names[5:]), num_classes=10)


def tensors(path: str | Path, test_fraction: float = 0.2, seed: int = 0) -> Data:
    """Arrays `x`, `y` (optionally `x_test`, `y_test`) from `.npz` or `.h5`; integer `y` means classes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    else:
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            arrays = {k: f[k][()] for k in f.keys()}
    if "x" not in arrays or "y" not in arrays:
        raise UserError(f"data file {path} needs arrays 'x' and 'y' (has {sorted(arrays)})")
    classify = np.issubdtype(arrays["y"].dtype, np.integer)
    ytype = np.int64 if classify else np.float32

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(ytype)))

    if "x_test" in arrays:
        tr_split, te_split = split(arrays["x"], arrays["y"]), split(arrays["x_test"], arrays["y_test"])
    else:
        tr, te = _seeded_split(len(arrays["y"]), test_fraction, seed)
        tr_split, te_split = split(arrays["x"][tr], arrays["y"][tr]), split(arrays["x"][te], arrays["y"][te])
    num_classes = int(arrays["y"].max()) + 1 if classify else 0
    return Data(tr_split, te_split, num_classes)


def synthetic(shape: tuple[int, ...] = (3, 32, 32), n_train: int = 512, n_test: int = 128,
              num_classes: int = 10, seed: int = 0, images: bool = True) -> Data:
    """Random data of any shape, for benchmarks: uint8 images (normalised on the fly) or float vectors."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        y = torch.randint(0, max(num_classes, 1), (n,), generator=g) if num_classes else \
            torch.randn(n, 1, generator=g)
        if images:
            x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
            return Split(x, y, 1 / 255, torch.full((shape[0],), 0.5), torch.full((shape[0],), 0.25))
        return Split(torch.randn(n, *shape, generator=g), y)

    return Data(split(n_train), split(n_test), num_classes)


def subset(split: Split, n: int, seed: int = 0) -> Split:
    """`n` samples drawn without replacement by a seeded generator, kept in their order (quick looks)."""
    if int(n) < 1:
        raise UserError(f"data.subset is {n}: use a number of samples of 1 or more, or null")
    if n >= len(split):
        return split
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(split), generator=g)[:int(n)].sort().values
    return replace(split, x=split.x[idx.to(split.x.device)], y=split.y[idx.to(split.y.device)])


LOADERS = {"digits": digits, "cifar10": cifar10, "tensors": tensors, "synthetic": synthetic}
SPEC_ONLY = ("name", "split", "num_classes", "in_channels", "in_features", "out_features", "subset")


def load(spec: Mapping[str, Any]) -> Data:
    """Load by `spec['name']`; keys that describe the data to the model are not loader arguments."""
    name = spec.get("name")
    if name not in LOADERS:
        raise UserError(f"unknown data '{name}': choose one of {', '.join(LOADERS)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k not in SPEC_ONLY}
    try:
        return LOADERS[name](**kwargs)
    except TypeError as err:
        raise UserError(f"bad options for data '{name}': {err}") from err
