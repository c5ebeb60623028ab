"""Image folders (torchvision's `ImageFolder` layout, or one flat folder with a labels file) decoded once, in
parallel worker processes, into a uint8 N x 3 x H x W `.npy` cache that every worker memory-maps.

A folder is one split and every image in it is evaluated; a root holding `train/` and `val/` gives the train
and test splits. The cache is named by the folder's file list, sizes and mtimes and the resize/crop (not the
mean/std, applied on the device), so a changed image means a new cache, never a stale one. One process builds
it under a file lock while others wait; rows are flushed with a progress count, so a killed build resumes;
the finished array is renamed into place last. A bad image leaves no partial array behind.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import multiprocessing
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import PIL
from PIL import Image

from .errors import UserError
from .images import Transform, decode_many

SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
SPLIT_FOLDERS = {"train": "train", "test": "val"}
CACHE_FORMAT = 1
CHUNK = 32  # images per decode task
FLUSH_SECONDS = 1.0  # decoded rows are flushed, and the count a resumed build starts from written, this often


@dataclass(frozen=True)
class Options:
    """data.* of `data=imagefolder`, checked."""

    root: Path
    labels: Path | None
    label_base: int
    classes: tuple[str, ...] | None
    transform: Transform
    cache_dir: Path | None
    workers: int

    @classmethod
    def parse(cls, root: Any, labels: Any = None, label_base: Any = 0, classes: Any = None, transform: Any = "imagenet",
              resize: Any = None, crop: Any = None, mean: Any = None, std: Any = None, cache_dir: Any = None,
              workers: Any = None) -> Options:
        root = Path(str(root))
        if not root.is_dir():
            raise UserError(f"data.root {root} is not a folder of images")
        if labels is not None and not Path(str(labels)).is_file():
            raise UserError(f"data.labels {labels} does not exist")
        if label_base not in (0, 1) or isinstance(label_base, bool):
            raise UserError(f"data.label_base is {label_base!r}: the number of the first class in integer labels, 0 or 1")
        if classes is not None and (isinstance(classes, str) or len(set(map(str, classes))) != len(classes)):
            raise UserError(f"data.classes is {classes!r}: give a list of distinct class names, e.g. [cat, dog]")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise UserError(f"data.workers is {workers!r}: use a number of decode processes of 1 or more, or null")
        return cls(root, None if labels is None else Path(str(labels)), label_base,
                   None if classes is None else tuple(map(str, classes)),
                   Transform.parse(transform, resize, crop, mean, std),
                   None if cache_dir is None else Path(str(cache_dir)),
                   workers or len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Listing:
    """One split folder: its images in evaluation order, their labels and the classes."""

    folder: Path
    files: tuple[str, ...]  # relative to `folder`
    labels: tuple[int, ...]
    num_classes: int
    layout: str

    def key(self, transform: Transform) -> str:
        """What the decoded pixels depend on: the files (names, sizes, mtimes) and the resize and crop."""
        stamps = [(f, st.st_size, st.st_mtime_ns) for f in self.files for st in [os.stat(self.folder / f)]]
        payload = [CACHE_FORMAT, stamps, transform.resize, transform.crop]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def split_folders(root: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """split -> folder: `root/train` and `root/val` where root holds either, else root itself as the one split."""
    if not any((root / f).is_dir() for f in SPLIT_FOLDERS.values()):
        if names != ("train",):
            raise UserError(f"data.root {root} is one split (it has no train/ or val/ folder): a surface evaluates "
                            "it with data.split=train; training needs a root with train/ and val/")
        return {"train": root}
    out = {name: root / SPLIT_FOLDERS[name] for name in names}
    absent = [str(p) for p in out.values() if not p.is_dir()]
    if absent:
        raise UserError(f"data.root {root} has no {absent[0]} folder for data.split="
                        f"{'both' if len(names) > 1 else names[0]}")
    return out


def _visible(entries: Iterator[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _is_image(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


def _class_folders(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return [e.name for e in _visible(it) if e.is_dir()]


def _class_images(folder: Path, name: str) -> list[str]:
    """The images under one class folder, as torchvision walks it (recursively, sorted, links followed)."""
    return [os.path.relpath(os.path.join(here, f), folder)
            for here, _, files in sorted(os.walk(folder / name, followlinks=True)) for f in sorted(files)
            if _is_image(f)]


def _index(value: str, classes: list[str] | None, base: int, where: str) -> int:
    """A label as a class index: an integer (numbered from `base`) or a class name."""
    try:
        index = int(value) - base
    except ValueError:
        if classes is None or value not in classes:
            raise UserError(f"{where}: label {value!r} is not a class name of data.classes or the class folders"
                            ) from None
        return classes.index(value)
    if index < 0 or (classes is not None and index >= len(classes)):
        among = f"one of the {len(classes)} classes" if classes else "a class"
        raise UserError(f"{where}: label {value} is not {among} numbered from data.label_base={base}")
    return index


def _read_labels(path: Path, images: list[str]) -> list[str]:
    """The label of each image: a CSV of `file,label` rows (a header row, names without their suffix and a
    label field whose first word is the label, as Kaggle's LOC_val_solution.csv has, are understood), or a text
    file of one label per line in sorted file-name order (ILSVRC2012's validation ground truth)."""
    if path.suffix.lower() != ".csv":
        values = path.read_text().split()
        if len(values) != len(images):
            raise UserError(f"data.labels {path} holds {len(values)} labels but the folder has {len(images)} images "
                            "(one label per line, in sorted file-name order)")
        return values
    by_name: dict[str, str] = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[1].split():
                by_name[row[0].strip()] = row[1].split()[0]
    stems = {os.path.splitext(name)[0]: name for name in images}
    found = {stems.get(k, k): v for k, v in by_name.items()}
    missing = [name for name in images if name not in found]
    if missing:
        raise UserError(f"data.labels {path} has no row for image {missing[0]} ({len(missing)} of {len(images)} "
                        "images lack one): rows are file,label")
    return [found[name] for name in images]


def listing(folder: Path, opts: Options, class_names: list[str] | None) -> Listing:
    """The images of one split folder with their labels: class folders, or flat with `data.labels`."""
    with os.scandir(folder) as it:
        entries = _visible(it)
    flat = [e.name for e in entries if e.is_file() and _is_image(e.name)]
    if opts.labels is not None and flat:
        values = _read_labels(opts.labels, flat)
        names = class_names or sorted({v for v in values if not v.lstrip("-").isdigit()}) or None
        labels = [_index(v, names, opts.label_base, f"data.labels {opts.labels}") for v in values]
        return Listing(folder, tuple(flat), tuple(labels), len(names) if names else max(labels) + 1,
                       f"flat, labels from {opts.labels}")
    if flat:
        raise UserError(f"{folder} holds images ({flat[0]}, ...) outside class folders: put each class in a "
                        "folder of its own, or give data.labels (a CSV of file,label or one label per line)")
    folders = [e.name for e in entries if e.is_dir()]
    names = class_names or folders
    unknown = [f for f in folders if f not in names]
    if unknown:
        raise UserError(f"{folder}: class folder {unknown[0]} is not in data.classes")
    files, labels = [], []
    for name in folders:
        images = _class_images(folder, name)
        files += images
        labels += [names.index(name)] * len(images)
    if not files:
        raise UserError(f"{folder} holds no images ({', '.join(SUFFIXES)}) in class folders")
    return Listing(folder, tuple(files), tuple(labels), len(names), f"{len(folders)} class folders")


def listings(opts: Options, names: tuple[str, ...]) -> dict[str, Listing]:
    """Each split's listing; the classes are data.classes, else the train folder's class folders (so the val
    folder's indices agree with train's), else each folder's own."""
    folders = split_folders(opts.root, names)
    classes = list(opts.classes) if opts.classes else None
    train = opts.root / SPLIT_FOLDERS["train"]
    if classes is None and folders.get("train") != opts.root and train.is_dir():
        classes = _class_folders(train) or None
    return {name: listing(folder, opts, classes) for name, folder in folders.items()}


def cache_dir(opts: Options) -> Path:
    """data.cache_dir, else `.landscape-cache` in data.root where it is writable, else ~/.cache/landscape."""
    if opts.cache_dir is not None:
        return opts.cache_dir
    if os.access(opts.root, os.W_OK):
        return opts.root / ".landscape-cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "landscape"


def cache_file(lst: Listing, opts: Options) -> Path:
    return cache_dir(opts) / f"{lst.folder.name or 'images'}-{lst.key(opts.transform)[:24]}.npy"


def shape(lst: Listing, transform: Transform) -> tuple[int, int, int, int]:
    """N x 3 x H x W of a listing's cache: the crop, or the first image's size after the resize."""
    if transform.crop:
        return len(lst.files), 3, transform.crop, transform.crop
    with Image.open(lst.folder / lst.files[0]) as img:
        w, h = transform.output_size(*img.size)
    return len(lst.files), 3, h, w


class Progress:
    """One line on stderr: rewritten in place on a terminal, else printed at every tenth."""

    def __init__(self, what: str, total: int, start: int):
        self.what, self.total, self.start, self.t0 = what, total, start, time.perf_counter()
        self.tty, self.shown = sys.stderr.isatty(), start * 10 // max(total, 1)

    def __call__(self, done: int) -> None:
        rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        line = f"{self.what}: {done}/{self.total} images ({rate:.0f}/s)"
        if self.tty:
            print(f"\r{line}", end="\n" if done == self.total else "", file=sys.stderr, flush=True)
        elif done * 10 // self.total > self.shown or done == self.total:
            self.shown = done * 10 // self.total
            print(line, file=sys.stderr, flush=True)


def _jobs(lst: Listing, transform: Transform, size: tuple[int, int], start: int) -> Iterator[tuple]:
    paths = [str(lst.folder / f) for f in lst.files]
    for i in range(start, len(paths), CHUNK):
        yield paths[i:i + CHUNK], transform, size


def _write_progress(path: Path, done: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(done))
    tmp.replace(path)


def _resumed(partial: Path, progress: Path, shp: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """The partial array and how many of its rows are done: an interrupted build of this cache, or a new one."""
    if partial.is_file() and progress.is_file():
        try:
            arr = np.lib.format.open_memmap(partial, mode="r+")
            done = int(progress.read_text())
            if arr.shape == shp and arr.dtype == np.uint8 and 0 <= done <= shp[0]:
                return arr, done
        except (OSError, ValueError):
            pass
    return np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shp), 0


def _decode_into(arr: np.ndarray, lst: Listing, opts: Options, done: int, progress: Path, pool: Any) -> None:
    """Fill the rows from `done` on, in order, flushing them with the progress count every FLUSH_SECONDS."""
    workers = opts.workers if pool else 1
    show = Progress(f"decoding {lst.folder} ({workers} process{'es' if workers > 1 else ''})", len(arr), done)
    jobs = _jobs(lst, opts.transform, (arr.shape[3], arr.shape[2]), done)
    flushed = time.monotonic()
    for chunk in (pool.imap(decode_many, jobs) if pool else map(decode_many, jobs)):
        if isinstance(chunk, str):
            raise UserError(chunk)
        arr[done:done + len(chunk)] = chunk
        done += len(chunk)
        if time.monotonic() - flushed >= FLUSH_SECONDS or done == len(arr):
            arr.flush()
            _write_progress(progress, done)
            flushed = time.monotonic()
        show(done)


@contextmanager
def _lock(path: Path, what: str) -> Iterator[None]:
    """Hold the file lock `path` (the kernel's: a killed holder's file blocks nothing), removing the file on the
    way out. A waiter may then hold the lock of a removed file, which nobody else sees: it takes the path's
    lock again."""
    while True:
        lock = open(path, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process {what}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        lock.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while held: a waiter on it sees it gone
        lock.close()


def build(lst: Listing, opts: Options) -> Path:
    """The cache of one listing, decoded here unless it exists; concurrent builders wait on a file lock, and one
    killed mid-way leaves rows and a count that the next build resumes from. A bad image leaves nothing: the
    cache of a listing with it can never be finished (mending it makes another listing)."""
    path = cache_file(lst, opts)
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create data.cache_dir {path.parent} ({err.strerror}): set data.cache_dir to a "
                        "writable folder that every node sees") from None
    shp = shape(lst, opts.transform)
    # decode workers are forked before the lock is taken, so none of them ever holds it
    pool = multiprocessing.get_context("fork").Pool(opts.workers) if opts.workers > 1 and len(lst.files) > CHUNK \
        else None
    try:
        with _lock(path.with_name(path.name + ".lock"), f"decoding {lst.folder} into {path}"):
            if path.is_file():  # the other process finished it
                return path
            partial, progress = path.with_name(path.name + ".partial"), path.with_name(path.name + ".progress")
            arr, done = _resumed(partial, progress, shp)
            try:
                _decode_into(arr, lst, opts, done, progress, pool)
            except UserError:
                partial.unlink()
                progress.unlink(missing_ok=True)
                raise
            del arr
            _write_meta(path, lst, opts)
            partial.replace(path)
            progress.unlink()
    finally:
        if pool is not None:
            pool.terminate()
    return path


def _write_meta(path: Path, lst: Listing, opts: Options) -> None:
    """Beside the array, for people: which file each row holds and how it was made."""
    t = opts.transform
    meta = {"format": CACHE_FORMAT, "folder": str(lst.folder), "resize": t.resize, "crop": t.crop,
            "pillow": PIL.__version__, "files": list(lst.files)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(path.with_suffix(".json"))


def cached(spec: Mapping[str, Any], names: tuple[str, ...]) -> tuple[Options, dict[str, Listing], dict[str, Path]]:
    """The options, each split's listing and its cache file (which may not exist yet)."""
    try:
        opts = Options.parse(**spec)
    except TypeError as err:
        raise UserError(f"bad options for data 'imagefolder': {err}") from None
    lsts = listings(opts, names)
    return opts, lsts, {name: cache_file(lst, opts) for name, lst in lsts.items()}


def array(path: Path) -> np.ndarray:
    """A cache as a copy-on-write memory map: nothing is read until used, and torch may wrap it."""
    return np.load(path, mmap_mode="c")

