"""Datasets as tensors resident on the evaluation device, normalised on the fly batch by batch."""
from __future__ import annotations

import math
import pickle
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch

from . import imagefolder as folders
from .errors import UserError, first_line
from .images import CIFAR_MEAN, CIFAR_STD


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
    """One split: raw `x` (uint8 images or floats), targets `y`, the normalisation to apply, and where the
    samples came from (the driver prints it)."""

    x: torch.Tensor
    y: torch.Tensor
    scale: float = 1.0
    mean: torch.Tensor | None = None  # per channel, applied after scale
    std: torch.Tensor | None = None
    source: str = ""

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

    train: Split | None  # None: a split the data do not have, or that was not asked for (an image folder)
    test: Split | None
    num_classes: int  # 0 for regression

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple((self.train or self.test).x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "test"):
            raise UserError(f"unknown split '{name}': use train, test or both")
        if getattr(self, name) is None:
            raise UserError(f"the data have no {name} split")
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
    cut = f"scikit-learn's 8x8 digits ({len(y)} images), {_cut_words(test_fraction, seed)}"

    def split(idx: np.ndarray, part: str) -> Split:
        return Split(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), 1 / 16, mean, std, f"{part} of {cut}")

    return Data(split(tr, "the rest"), split(te, "the test cut"), num_classes=10)


def _cut_words(test_fraction: float, seed: int) -> str:
    return f"a seeded test cut of {test_fraction:g} (data.test_fraction, seed {seed})"


CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def cifar_files(root: str | Path) -> list[Path]:
    """The CIFAR-10 python folder's six files, or one UserError naming those it lacks."""
    absent = [n for n in CIFAR_FILES if not (Path(root) / n).is_file()]
    if absent:
        raise UserError(f"CIFAR-10 folder {root} lacks {', '.join(absent)}: point data.root at the "
                        "extracted 'cifar-10-batches-py' folder (python version of the dataset)")
    return [Path(root) / n for n in CIFAR_FILES]


def cifar10(root: str | Path) -> Data:
    """CIFAR-10 from the standard python folder (`data_batch_1..5`, `test_batch`), kept as uint8."""
    root = Path(root)
    names = list(CIFAR_FILES)
    cifar_files(root)

    def read(files: list[str], source: str) -> Split:
        xs, ys = [], []
        for name in files:
            with open(root / name, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), 1 / 255,
                     torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD), f"{root}/{source}")

    return Data(read(names[:5], "data_batch_1..5"), read(names[5:], "test_batch"), num_classes=10)


Header = tuple[tuple[int, ...], np.dtype]  # an array's shape and dtype, read without its values


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a file that cannot be read as `.npz` or HDF5 into a UserError naming it."""
    kind = "an .npz archive (numpy.savez)" if path.suffix == ".npz" else "an HDF5 file (h5py)"
    if path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty (0 bytes): it should be {kind} with arrays x and y")
    try:
        yield
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise UserError(f"data file {path} cannot be read as {kind}: {first_line(err)}") from err


def _check_zip(path: Path) -> None:
    """A ValueError for anything but the zip numpy.savez writes (a lone .npy, text)."""
    if not zipfile.is_zipfile(path):
        raise ValueError("it is not a zip archive of arrays (what numpy.savez writes)")


def _read_arrays(path: Path, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` or HDF5 file (only `keys`, where given): an HDF5 dataset stored contiguously
    (h5py's default: no chunks, no compression) memory-mapped, so a file larger than memory is read as used;
    any other array read whole."""
    with _reading(path):
        if path.suffix == ".npz":
            _check_zip(path)
            with np.load(path) as f:  # allow_pickle=False: object arrays raise ValueError
                return {k: f[k] for k in f.files if keys is None or k in keys}
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            return {k: _h5_values(path, f[k]) for k in f.keys()
                    if isinstance(f[k], h5py.Dataset) and (keys is None or k in keys)}


def _h5_values(path: Path, ds: Any) -> np.ndarray:
    """A dataset's values: a copy-on-write memory map of a contiguous one (nothing read until used), else read."""
    offset = ds.id.get_offset() if ds.chunks is None and ds.ndim and ds.size else None
    if offset is None or ds.dtype.kind not in "biuf":
        return ds[()]
    return np.memmap(path, dtype=ds.dtype, mode="c", offset=offset, shape=ds.shape)


NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _headers(path: Path) -> dict[str, Header]:
    """The shape and dtype of every array of an `.npz` or HDF5 file, from its headers: no values are read."""
    with _reading(path):
        if path.suffix == ".npz":
            _check_zip(path)
            out = {}
            with zipfile.ZipFile(path) as z:
                for name in (n for n in z.namelist() if n.endswith(".npy")):
                    with z.open(name) as f:
                        version = np.lib.format.read_magic(f)
                        if version not in NPY_HEADERS:
                            raise ValueError(f"array {name[:-4]} is in .npy format {version}, not 1.0 or 2.0")
                        shape, _, dtype = NPY_HEADERS[version](f)
                        out[name[:-4]] = (shape, dtype)
            return out
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            return {k: (f[k].shape, f[k].dtype) for k in f.keys() if isinstance(f[k], h5py.Dataset)}


def _pairs(path: Path, headers: Mapping[str, Header]) -> list[tuple[str, str]]:
    """The (inputs, targets) pairs of a tensors file, checked from the headers alone: present, numbers, one row
    per sample, as many rows in x as in y; else a UserError naming the array."""
    if "x" not in headers or "y" not in headers:
        raise UserError(f"data file {path} needs arrays 'x' and 'y' (has {sorted(headers)})")
    if ("x_test" in headers) != ("y_test" in headers):
        raise UserError(f"data file {path} has {'x_test' if 'x_test' in headers else 'y_test'} without "
                        f"{'y_test' if 'x_test' in headers else 'x_test'}: give both, or neither (test_fraction)")
    pairs = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in headers else [])
    for xk, yk in pairs:
        for key in (xk, yk):
            shape, dtype = headers[key]
            if dtype.kind not in "biuf":
                raise UserError(f"data file {path}: array {key} holds {dtype} values; x and y must be numbers")
            if not shape or math.prod(shape) == 0:
                raise UserError(f"data file {path}: array {key} has no samples (shape {shape})")
        if headers[xk][0][0] != headers[yk][0][0]:
            raise UserError(f"data file {path}: {xk} has {headers[xk][0][0]} samples but {yk} has "
                            f"{headers[yk][0][0]}; give one target per sample")
    return pairs


def _check_finite(path: Path, arrays: Mapping[str, np.ndarray], rows: int = 4096) -> None:
    """No NaN or inf in any of `arrays` (read `rows` samples at a time: a memory-mapped file is not loaded
    whole): else a UserError naming the array and how many samples."""
    for key, a in arrays.items():
        bad = sum(int((~np.isfinite(a[i:i + rows].reshape(len(a[i:i + rows]), -1))).any(1).sum())
                  for i in range(0, len(a), rows)) if a.dtype.kind == "f" else 0
        if bad:
            raise UserError(f"data file {path}: array {key} has NaN or inf in {bad} of {len(a)} samples; "
                            "remove or fill them (every point's loss would be NaN)")


def _class_count(path: Path, ys: list[np.ndarray], num_classes: int) -> int:
    """The number of classes: `num_classes` if given (labels must lie below it), else the largest label + 1."""
    labels = [np.issubdtype(y.dtype, np.integer) for y in ys]
    if len(set(labels)) > 1:
        raise UserError(f"data file {path}: y and y_test must both hold integer class labels or both float targets")
    if not labels[0]:
        if num_classes:
            raise UserError(f"data file {path}: y holds floats (regression targets) but data.num_classes is "
                            f"{num_classes}: store integer class labels, or set data.num_classes=0 for regression")
        return 0
    lo, hi = min(int(y.min()) for y in ys), max(int(y.max()) for y in ys)
    if lo < 0:
        raise UserError(f"data file {path}: class label {lo} in y is negative; labels are 0 .. classes-1")
    if num_classes and hi >= num_classes:
        raise UserError(f"data file {path}: class label {hi} in y is not below data.num_classes={num_classes}; "
                        "labels must lie in [0, num_classes)")
    return num_classes or hi + 1


def _tensors_file(path: str | Path, num_classes: Any) -> Path:
    """The path of an existing tensors file, with `num_classes` checked (0, or a number of classes)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise UserError(f"data.num_classes is {num_classes!r}: use 0 (classes from the labels, or regression "
                        "for float y) or the number of classes")
    return path


def tensors(path: str | Path, test_fraction: float = 0.2, seed: int = 0, num_classes: int = 0) -> Data:
    """Arrays `x`, `y` (optionally `x_test`, `y_test`) from `.npz` or `.h5`; integer `y` means classes.

    `num_classes` 0 infers the classes from the labels (0 .. max); every array is checked on load so that
    a bad file stops the driver with one line instead of a worker with a traceback. uint8 inputs stay uint8
    (a quarter of float32's memory; the model sees the same values, converted per batch), other inputs become
    float32; an HDF5 file's contiguous arrays are memory-mapped. Without `x_test` the test split is a seeded
    cut of `x` (`test_fraction`), and each split's `source` says so.
    """
    path = _tensors_file(path, num_classes)
    pairs = _pairs(path, _headers(path))
    arrays = _read_arrays(path, [k for pair in pairs for k in pair])
    _check_finite(path, {k: arrays[k] for pair in pairs for k in pair})
    num_classes = _class_count(path, [arrays[yk] for _, yk in pairs], num_classes)
    ytype = np.int64 if num_classes else np.float32

    def split(xk: str, yk: str, idx: np.ndarray | None, source: str) -> Split:
        x, y = (arrays[k] if idx is None else arrays[k][idx] for k in (xk, yk))
        x = x if x.dtype == np.uint8 else np.asarray(x, dtype=np.float32)
        return Split(torch.from_numpy(x), torch.from_numpy(y.astype(ytype)), source=source)

    if "x_test" in arrays:
        return Data(split("x", "y", None, f"x, y of {path}"), split("x_test", "y_test", None, f"x_test, y_test of {path}"),
                    num_classes)
    tr, te = _seeded_split(len(arrays["y"]), test_fraction, seed)
    cut = f"x, y of {path} ({len(arrays['y'])} samples; the file has no x_test), {_cut_words(test_fraction, seed)}"
    return Data(split("x", "y", tr, f"the rest of {cut}"), split("x", "y", te, f"the test cut of {cut}"), num_classes)


def tensors_sizes(path: str | Path, num_classes: int = 0) -> dict[str, int | None]:
    """What a model needs to know about a tensors file, from its targets and the headers of its inputs (x is not
    read, so a big file is not loaded twice): `num_classes` as `tensors` counts it (0: regression),
    `in_channels` (C of images shaped (N, C, ...), None for vectors), `in_features` (values per sample) and
    `out_features` (the classes, or the values of each float target)."""
    path = _tensors_file(path, num_classes)
    headers = _headers(path)
    pairs = _pairs(path, headers)
    ys = _read_arrays(path, [yk for _, yk in pairs])
    _check_finite(path, ys)
    classes = _class_count(path, [ys[yk] for _, yk in pairs], num_classes)
    x = headers["x"][0]
    return {"num_classes": classes, "in_channels": x[1] if len(x) >= 3 else None,
            "in_features": math.prod(x[1:]), "out_features": classes or math.prod(ys["y"].shape[1:])}


SIZES = ("num_classes", "in_channels", "in_features", "out_features")  # data.* keys the models take


def _left_to_data(key: str, value: Any) -> bool:
    """`num_classes` 0 (not `false`), any other size null: what the data decide."""
    return value == 0 and type(value) is int if key == "num_classes" else value is None


def _folder_cache(spec: Mapping[str, Any]) -> tuple[folders.Options, dict[str, folders.Listing], dict[str, Path]]:
    """An image folder's options, its evaluated splits' listings and their cache files."""
    return folders.cached(_options(spec), split_names(spec.get("split", "train")))


def imagefolder_sizes(spec: Mapping[str, Any]) -> dict[str, int | None]:
    """An image folder's sizes from its listing and the transform (one image's header where there is no crop)."""
    opts, lsts, _ = _folder_cache(spec)
    lst = next(iter(lsts.values()))
    _, c, h, w = folders.shape(lst, opts.transform)
    classes = max(s.num_classes for s in lsts.values())
    return {"num_classes": classes, "in_channels": c, "in_features": c * h * w, "out_features": classes}


def inferred_sizes(spec: Mapping[str, Any]) -> dict[str, int]:
    """The `data.*` sizes a spec leaves to the data (`num_classes` 0, the others null), as its files give them:
    a tensors file or an image folder (the other loaders state theirs in conf/data/)."""
    if spec.get("name") not in ("tensors", "imagefolder"):
        return {}
    unset = [k for k in SIZES if k in spec and _left_to_data(k, spec[k])]
    if not unset:
        return {}
    sizes = tensors_sizes(spec["path"], spec.get("num_classes") or 0) if spec["name"] == "tensors" \
        else imagefolder_sizes(spec)
    return {k: sizes[k] for k in unset if sizes[k] is not None}


def synthetic(shape: tuple[int, ...] = (3, 32, 32), n_train: int = 512, n_test: int = 128,
              num_classes: int = 10, seed: int = 0, images: bool = True) -> Data:
    """Random data of any shape, for benchmarks: uint8 images (normalised on the fly) or float vectors."""
    g = torch.Generator().manual_seed(seed)

    source = f"random synthetic data (seed {seed})"

    def split(n: int) -> Split:
        y = torch.randint(0, max(num_classes, 1), (n,), generator=g) if num_classes else \
            torch.randn(n, 1, generator=g)
        if images:
            x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
            return Split(x, y, 1 / 255, torch.full((shape[0],), 0.5), torch.full((shape[0],), 0.25), source)
        return Split(torch.randn(n, *shape, generator=g), y, source=source)
    return Data(split(n_train), split(n_test), num_classes)


def imagefolder(splits: tuple[str, ...] = ("train",), **options: Any) -> Data:
    """Image folders (`landscape/imagefolder.py`): each split a uint8 memory map of its decoded cache (built here
    if absent), normalised per batch by the transform's mean/std like CIFAR; only the `splits` asked for."""
    opts, lsts, _ = folders.cached(options, splits)
    t = opts.transform
    mean, std = (None, None) if t.mean is None else (torch.tensor(t.mean), torch.tensor(t.std))
    out: dict[str, Split] = {}
    for name, lst in lsts.items():
        path = folders.build(lst, opts)
        source = f"{lst.folder} ({lst.layout}, every image; {t.describe()}) via the cache {path}"
        out[name] = Split(torch.from_numpy(folders.array(path)), torch.tensor(lst.labels, dtype=torch.int64),
                          1 / 255, mean, std, source)
    return Data(out.get("train"), out.get("test"), max(lst.num_classes for lst in lsts.values()))


def check_subset(n: Any) -> None:
    """`data.subset`: null, or a whole number of samples of 1 or more (checked before a run is created)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UserError(f"data.subset is {n!r}: use a number of samples of 1 or more, or null")


def subset(split: Split, n: int, seed: int = 0) -> Split:
    """`n` samples drawn without replacement by a seeded generator, kept in their order (quick looks); the
    split itself where `n` covers it, so that its values are the full split's, bitwise."""
    check_subset(n)
    if n >= len(split):
        return split
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(split), generator=g)[:int(n)].sort().values
    return replace(split, x=split.x[idx.to(split.x.device)], y=split.y[idx.to(split.y.device)])


def split_names(split: str) -> tuple[str, ...]:
    """The splits a run evaluates: `both` is train and test."""
    return ("train", "test") if split == "both" else (split,)


def subset_leaves_out(splits: Mapping[str, Split], n: int | None) -> bool:
    """Whether a subset of `n` samples drops samples of any of `splits` (approximate values); at or above every
    split's size it keeps them all, and the values are exact."""
    return bool(n) and any(n < len(s) for s in splits.values())


LOADERS = {"digits": digits, "cifar10": cifar10, "tensors": tensors, "synthetic": synthetic,
           "imagefolder": imagefolder}
SPEC_ONLY = ("name", "split", "subset", *SIZES)
NEUTRAL = ("workers",)  # data.* keys that say how to decode, never what: not in a fingerprint (the cache folder is:
# another folder holds another file, which the run did not read)


def _options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec's loader arguments: what describes the data to the model is left out."""
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k not in SPEC_ONLY}


def load(spec: Mapping[str, Any]) -> Data:
    """Load by `spec['name']`; keys that describe the data to the model are not loader arguments."""
    name = spec.get("name")
    if name not in LOADERS:
        raise UserError(f"unknown data '{name}': choose one of {', '.join(LOADERS)}")
    kwargs = _options(spec)
    if name == "tensors":  # the only loader whose labels can disagree with the model (synthetic keeps 10)
        kwargs["num_classes"] = spec.get("num_classes") or 0
    if name == "imagefolder":  # only the splits evaluated are decoded
        kwargs["splits"] = split_names(spec.get("split", "train"))
    try:
        return LOADERS[name](**kwargs)
    except TypeError as err:
        raise UserError(f"bad options for data '{name}': {err}") from err


def files(spec: Mapping[str, Any]) -> list[Path]:
    """The files a dataset is read from, whose contents decide the values: none for digits and synthetic; an
    image folder's cache of each split evaluated (it may not exist yet: `ready` makes it) and its labels file."""
    if spec.get("name") == "tensors":
        return [Path(spec["path"])]
    if spec.get("name") == "cifar10":
        return cifar_files(spec["root"])
    if spec.get("name") == "imagefolder":
        opts, _, caches = _folder_cache(spec)
        return [*caches.values(), *([opts.labels] if opts.labels else [])]
    return []


def ready(spec: Mapping[str, Any]) -> None:
    """Make the files `files` names that are made, not given: an image folder's caches (decoded once, here)."""
    if spec.get("name") == "imagefolder":
        opts, lsts, _ = _folder_cache(spec)
        for lst in lsts.values():
            folders.build(lst, opts)
