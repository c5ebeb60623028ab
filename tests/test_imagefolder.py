"""data=imagefolder: folders of generated JPEG/PNG images (odd sizes, grayscale, CMYK, RGBA, a corrupt file),
the transform, the uint8 cache (reuse, resume, two real processes building it at once), the flat layouts with
a labels file, and a surface whose centre equals plain PyTorch evaluation of the same images."""
from __future__ import annotations

import copy
import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, cli, one_error_line, read_surface
from jobs.run import RunDir
from jobs.tile import build_worker
from landscape import data, directions, imagefolder
from landscape.engine import Evaluator
from landscape.errors import UserError
from landscape.images import IMAGENET_MEAN, Transform, decode
from landscape.models import digits_cnn, mlp

SMALL = {"transform": "cifar", "resize": 12, "crop": 10, "workers": 1}  # tiny images decode in milliseconds
SIZES = [(37, 29), (50, 41), (23, 31), (64, 17), (29, 29), (41, 55)]  # (w, h): landscape, portrait, square


def _image(seed: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def make_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "emu"), per_class: int = 4) -> Path:
    """Class folders of JPEGs and PNGs of odd sizes; dog holds a grayscale, a CMYK and an RGBA image and a
    README that is not an image; cat a nested folder (torchvision walks class folders recursively)."""
    k = 0
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = SIZES[(ci + i) % len(SIZES)]
            _image(k, size).save(root / name / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
            k += 1
    _image(100, (33, 27), "L").save(root / "dog" / "gray.png")
    _image(101, (45, 30), "CMYK").save(root / "dog" / "cmyk.jpg")
    _image(102, (30, 45), "RGBA").save(root / "dog" / "rgba.png")
    (root / "dog" / "README.txt").write_text("not an image")
    (root / "cat" / "more").mkdir()
    _image(103, (26, 39)).save(root / "cat" / "more" / "nested.JPEG")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "images")


def load(root: Path, **options) -> data.Data:
    return data.load({"name": "imagefolder", "root": str(root), "split": "train", **SMALL, **options})


def test_resize_and_crop_follow_torchvision_and_antialias_like_torch(tmp_path):
    """torchvision's Resize(256) of a 300x200 image is 384x256 (long side int(256 * 300 / 200)) and its
    CenterCrop(224) starts at (80, 16); the bilinear shrink is antialiased: it agrees with torch's own
    antialiased bilinear interpolation (an independent implementation) to a rounding step."""
    t = Transform.parse("imagenet")
    assert t.resized(300, 200) == (384, 256) and t.resized(200, 301) == (256, 385)
    img = _image(0, (600, 400))  # shrunk by 1.5625 to 384x256
    img.save(tmp_path / "a.png")
    out = decode(str(tmp_path / "a.png"), t)
    assert out.shape == (3, 224, 224) and out.dtype == np.uint8
    src = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].double()
    for antialias, close in ((True, True), (False, False)):  # the check can tell the two apart
        ref = torch.nn.functional.interpolate(src, size=(256, 384), mode="bilinear", antialias=antialias,
                                              align_corners=False)
        ref = ref[0, :, 16:16 + 224, 80:80 + 224].round().clamp(0, 255).numpy()
        assert (np.abs(ref - out).max() <= 2) == close


def test_presets_and_bad_transform_settings():
    assert Transform.parse("imagenet").mean == IMAGENET_MEAN and Transform.parse("imagenet").crop == 224
    assert Transform.parse("asis") == Transform(None, None, None, None)
    assert Transform.parse("cifar", crop=28).crop == 28
    for bad, fragment in ((dict(preset="vgg"), "data.transform 'vgg'"), (dict(preset="asis", crop=0), "data.crop"),
                          (dict(preset="asis", mean=[0.5, 0.5, 0.5]), "give both"),
                          (dict(preset="imagenet", std=[1, 1]), "three numbers")):
        with pytest.raises(UserError, match=fragment):
            Transform.parse(**bad)


def _mapped_from(t: torch.Tensor, path: Path) -> bool:
    """Whether the tensor's memory is a mapping of the file (Linux: /proc/self/maps), not a copy of it."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == str(path.resolve()):
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= t.data_ptr() < hi:
                return True
    return False


def test_folder_loads_in_imagefolder_order_as_uint8_memory_map(folder):
    d = load(folder)
    s = d.train
    files = imagefolder.cached({"root": str(folder), **SMALL}, ("train",))[1]["train"].files
    assert files[0] == "cat/00.png" and files[4] == "cat/more/nested.JPEG"  # sorted walk, nested folders included
    assert "dog/README.txt" not in files and len(files) == 3 * 4 + 4
    assert d.test is None and d.num_classes == 3
    assert s.y.tolist() == [0] * 5 + [1] * 7 + [2] * 4
    assert s.x.dtype == torch.uint8 and tuple(s.x.shape) == (16, 3, 10, 10)
    assert _mapped_from(s.x, imagefolder.cached({"root": str(folder), **SMALL}, ("train",))[2]["train"])
    t = Transform.parse("cifar", 12, 10)
    for i in (0, 7, 15):
        assert np.array_equal(s.x[i].numpy(), decode(str(folder / files[i]), t))
    gray, rgba = files.index("dog/gray.png"), files.index("dog/rgba.png")
    assert torch.equal(s.x[gray][0], s.x[gray][1]) and torch.equal(s.x[gray][1], s.x[gray][2])
    rgb = Transform.parse("cifar", 12, 10).apply(Image.open(folder / "dog/rgba.png").convert("RGB"))
    assert np.array_equal(s.x[rgba].numpy(), rgb)  # alpha dropped, as ImageFolder's convert("RGB")
    assert s.scale == 1 / 255 and torch.allclose(s.mean, torch.tensor((0.4914, 0.4822, 0.4465)))
    assert str(folder) in s.source and "3 class folders" in s.source and "centre crop 10" in s.source


def test_sizes_for_the_model_come_from_the_folder_and_the_transform(folder):
    spec = {"name": "imagefolder", "root": str(folder), "split": "train", **SMALL, "num_classes": 0,
            "in_channels": 3, "in_features": None, "out_features": None}
    assert data.inferred_sizes(spec) == {"num_classes": 3, "in_features": 300, "out_features": 3}
    assert data.inferred_sizes({**spec, "transform": "asis", "resize": None, "crop": None})["in_features"] == \
        3 * 29 * 37  # no crop: the first image's size (cat/00.png is 37x29)
    assert not (folder / ".landscape-cache").exists()  # sizes are read without decoding


def test_corrupt_and_too_small_images_are_one_line_naming_the_file(folder):
    bad = folder / "emu" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match=f"image {bad} cannot be decoded") as err:
        load(folder)
    assert "\n" not in str(err.value)
    bad.unlink()
    _image(5, (9, 8)).save(folder / "emu" / "tiny.png")
    with pytest.raises(UserError, match="tiny.png cannot be decoded .*smaller than the 10x10 crop"):
        load(folder, transform="asis", resize=None)


def test_cache_is_reused_and_a_changed_image_makes_a_new_one(folder, monkeypatch):
    first = load(folder)
    cache = imagefolder.cached({"root": str(folder), **SMALL}, ("train",))[2]["train"]
    assert cache.is_file() and cache.parent == folder / ".landscape-cache"
    assert cache.with_suffix(".json").is_file() and not list(cache.parent.glob("*.partial"))
    monkeypatch.setattr(imagefolder, "decode_many", lambda job: pytest.fail("decoded again"))
    again = load(folder, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])  # the mean/std are applied on the device
    assert torch.equal(again.train.x, first.train.x) and again.train.mean.tolist() == [0.5] * 3
    monkeypatch.undo()
    os.utime(folder / "cat" / "00.png", ns=(1, 1))
    changed = imagefolder.cached({"root": str(folder), **SMALL}, ("train",))[2]["train"]
    assert changed != cache and not changed.is_file()
    assert data.files({"name": "imagefolder", "root": str(folder), "split": "train", **SMALL}) == [changed]


def test_an_interrupted_build_resumes_where_it_stopped(folder, monkeypatch):
    monkeypatch.setattr(imagefolder, "CHUNK", 3)
    monkeypatch.setattr(imagefolder, "FLUSH_SECONDS", 0.0)  # every chunk flushed and counted
    opts, lsts, caches = imagefolder.cached({"root": str(folder), **SMALL}, ("train",))
    real, calls = imagefolder.decode_many, []

    def dies_on_the_third(job):
        calls.append(job[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(imagefolder, "decode_many", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        imagefolder.build(lsts["train"], opts)
    cache = caches["train"]
    assert not cache.is_file() and cache.with_name(cache.name + ".partial").is_file()
    assert cache.with_name(cache.name + ".progress").read_text() == "6"
    calls.clear()
    monkeypatch.setattr(imagefolder, "decode_many", lambda job: calls.append(job[0]) or real(job))
    imagefolder.build(lsts["train"], opts)
    assert calls[0][0].endswith(lsts["train"].files[6]) and len(sum(calls, [])) == 16 - 6
    fresh = np.stack([decode(str(folder / f), opts.transform) for f in lsts["train"].files])
    assert np.array_equal(np.load(cache), fresh)
    assert not cache.with_name(cache.name + ".progress").exists()


BUILDER = textwrap.dedent("""
    import sys
    from landscape import data
    data.ready({"name": "imagefolder", "root": sys.argv[1], "split": "train", "transform": "cifar",
                "resize": 12, "crop": 10, "workers": 2})
""")


def test_two_processes_building_one_cache_at_once_build_it_once(tmp_path):
    """Both builders start while a lock holder keeps them waiting; then one decodes and the other reuses."""
    folder = make_folder(tmp_path / "images", per_class=20)
    opts, lsts, caches = imagefolder.cached({"root": str(folder), **SMALL}, ("train",))
    cache = caches["train"]
    cache.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(cache.with_name(cache.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(folder)], env=env, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        for p in procs:  # each says it waits before the lock is given up
            line = p.stderr.readline()
            assert "waiting for another process decoding" in line, line
        fcntl.flock(lock, fcntl.LOCK_UN)
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert sum("decoding" in e for e in errs) == 1  # one decoded, the other found the cache done
    fresh = np.stack([decode(str(folder / f), opts.transform) for f in lsts["train"].files])
    assert np.array_equal(np.load(cache), fresh)
    assert sorted(p.name for p in cache.parent.iterdir()) == sorted([cache.name, cache.with_suffix(".json").name])


def test_flat_folder_with_a_csv_of_names_and_pinned_classes(tmp_path):
    flat = tmp_path / "val"
    flat.mkdir()
    for i in range(5):
        _image(i, SIZES[i]).save(flat / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    rows = ["ImageId,PredictionString"] + [f"ILSVRC2012_val_{i + 1:08d},{w} 1 2 3 4"
                                           for i, w in enumerate(["n02", "n01", "n03", "n01", "n02"])]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    d = load(flat, labels=str(tmp_path / "labels.csv"))
    assert d.train.y.tolist() == [1, 0, 2, 0, 1] and d.num_classes == 3 and "labels from" in d.train.source
    pinned = load(flat, labels=str(tmp_path / "labels.csv"), classes=["n03", "n02", "n01", "n04"])
    assert pinned.train.y.tolist() == [1, 2, 0, 2, 1] and pinned.num_classes == 4
    (tmp_path / "labels.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(UserError, match="has no row for image ILSVRC2012_val_00000005.JPEG"):
        load(flat, labels=str(tmp_path / "labels.csv"))


def test_flat_folder_with_ilsvrc_ground_truth_text(tmp_path):
    flat = tmp_path / "val"
    flat.mkdir()
    for i in range(4):
        _image(i, SIZES[i]).save(flat / f"v{i}.png")
    (tmp_path / "gt.txt").write_text("3\n1\n2\n3\n")
    assert load(flat, labels=str(tmp_path / "gt.txt"), label_base=1).train.y.tolist() == [2, 0, 1, 2]
    assert load(flat, labels=str(tmp_path / "gt.txt")).num_classes == 4
    (tmp_path / "gt.txt").write_text("3\n1\n2\n")
    with pytest.raises(UserError, match="holds 3 labels but the folder has 4 images"):
        load(flat, labels=str(tmp_path / "gt.txt"))
    with pytest.raises(UserError, match="outside class folders"):
        load(flat)


def test_train_and_val_folders_give_both_splits_with_train_classes(tmp_path):
    root = tmp_path / "imagenet"
    make_folder(root / "train", per_class=2)
    shutil.rmtree(make_folder(root / "val", per_class=2) / "cat")  # val lacks cat: indices still follow train's
    d = data.load({"name": "imagefolder", "root": str(root), "split": "both", **SMALL})
    assert len(d.train) == 3 * 2 + 4 and len(d.test) == 2 * 2 + 3
    assert set(d.test.y.tolist()) == {1, 2} and str(root / "val") in d.test.source
    with pytest.raises(UserError, match="one split .* data.split=train"):
        data.load({"name": "imagefolder", "root": str(root / "val"), "split": "test", **SMALL})
    with pytest.raises(UserError, match="class folder cat is not in data.classes"):
        load(root / "train", classes=["dog", "emu"])


def test_training_on_train_and_val_folders(tmp_path):
    root = tmp_path / "imagenet"
    make_folder(root / "train", per_class=3)
    make_folder(root / "val", per_class=1)
    args = ["model=digits_cnn", "model.width=4", "data=imagefolder", "data.transform=cifar", "data.resize=12",
            "data.crop=10", "train.epochs=1", "data.workers=1"]
    proc = cli("landscape-train", *args, f"data.root={root / 'train'}", f"run.dir={tmp_path / 'one'}", check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1].endswith("training needs a root with train/ and val/")
    cli("landscape-train", *args, f"data.root={root}", f"run.dir={tmp_path / 'both'}")  # both splits by default
    assert (tmp_path / "both" / "checkpoints" / "last.pt").is_file()


def _ce(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mean, std) -> float:
    """Plain PyTorch: ToTensor's x / 255, Normalize's (x - mean) / std, the mean cross-entropy."""
    xb = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model.eval()(xb), y).item()


def test_surface_on_an_image_folder_centres_on_plain_pytorch_evaluation(folder, tmp_path):
    torch.manual_seed(0)
    model = digits_cnn(num_classes=3, in_channels=3, width=4)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    proc = cli("landscape-surface", "model=digits_cnn", "model.width=4", "data=imagefolder", f"data.root={folder}",
               "data.transform=cifar", "data.resize=12", "data.crop=10", "data.workers=2",
               f"checkpoint={tmp_path / 'w.pt'}", "grid.resolution=3", f"run.dir={tmp_path / 'run'}")
    assert f"data: train split, 16 samples of 3x10x10 uint8, from {folder} (3 class folders" in proc.stdout
    surf = read_surface(tmp_path / "run" / "surface.h5")
    lst = imagefolder.cached({"root": str(folder), **SMALL}, ("train",))[1]["train"]
    x = torch.from_numpy(np.stack([decode(str(folder / f), Transform.parse("cifar", 12, 10)) for f in lst.files]))
    want = _ce(model, x, torch.tensor(lst.labels), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert surf["train_loss"][1, 1] == pytest.approx(want, rel=1e-6)
    with h5py.File(tmp_path / "run" / "surface.h5", "r") as f:
        assert f["train_loss"].shape == (3, 3)
    inputs = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())["inputs"]
    assert any(p.endswith(".npy") and ".landscape-cache" in p for p in inputs)  # the cache's digest is recorded
    again = cli("landscape-surface", "model=digits_cnn", "model.width=4", "data=imagefolder", f"data.root={folder}",
                "data.transform=cifar", "data.resize=12", "data.crop=10", "data.workers=1",
                f"checkpoint={tmp_path / 'w.pt'}", "grid.resolution=3", f"run.dir={tmp_path / 'run'}")
    assert "0 to compute" in again.stdout  # data.workers is how to decode, not what: the same run
    assert "changed" not in cli("landscape-status", str(tmp_path / "run")).stdout
    os.utime(folder / "emu" / "01.jpg", ns=(1, 1))  # an image changed since: the run's cache is no longer the data
    status = cli("landscape-status", str(tmp_path / "run"), check=False)
    assert "is new (the data changed since this run was created)" in status.stdout + status.stderr
    with pytest.raises(UserError, match="this worker computes nothing"):  # a queued task decodes nothing either
        build_worker(RunDir(tmp_path / "run"))
    assert len(list((folder / ".landscape-cache").glob("*.npy"))) == 1


def test_streamed_from_the_memory_mapped_cache_gives_the_resident_values(folder):
    """eval.stream=true: batches copied from the mapped cache (a split that does not fit the device) change
    nothing."""
    split = load(folder).train
    torch.manual_seed(0)
    model = digits_cnn(num_classes=3, in_channels=3, width=4)
    state = model.state_dict()
    names = [n for n, _ in model.named_parameters()]
    dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "biasbn", 0)
    coords = np.array([[0.0, 0.0], [0.5, -0.25]])
    evs = [Evaluator(copy.deepcopy(model), state, dirs, {"train": split}, 3, batch_size=5, stream=s)
           for s in ("true", "false")]  # an Evaluator moves its model's weights: one model each
    assert [ev.info["stream"] for ev in evs] == [True, False]
    assert evs[0].evaluate(coords)["train_loss"].tolist() == evs[1].evaluate(coords)["train_loss"].tolist()


def test_bad_imagefolder_settings_are_one_line(tmp_path, folder):
    proc = cli("landscape-surface", "data=imagefolder", f"data.root={tmp_path / 'absent'}", "checkpoint=x.pt",
               check=False)
    one_error_line(proc.returncode, proc.stderr, "is not a folder of images")
    proc = cli("landscape-surface", "data=imagefolder", f"data.root={folder}", "data.transform=vgg",
               "checkpoint=x.pt", check=False)
    one_error_line(proc.returncode, proc.stderr, "data.transform 'vgg' is unknown")


def test_tensors_keep_uint8_and_map_contiguous_hdf5(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 3, 6, 6), dtype=np.uint8)
    y = rng.integers(0, 4, 40)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"], f["y"] = x, y
        f.create_dataset("x_test", data=x[:10].astype(np.float32), chunks=(5, 3, 6, 6), compression="gzip")
        f["y_test"] = y[:10]
    d = data.load({"name": "tensors", "path": str(tmp_path / "d.h5"), "split": "both", "test_fraction": 0.2,
                   "seed": 0})
    assert d.train.x.dtype == torch.uint8 and _mapped_from(d.train.x, tmp_path / "d.h5")
    assert torch.equal(d.train.inputs(0, 40), torch.from_numpy(x).float())  # the values a float32 copy had
    assert d.test.x.dtype == torch.float32 and torch.equal(d.test.x, torch.from_numpy(x[:10]).float())
    assert d.train.source == f"x, y of {tmp_path / 'd.h5'}" and d.test.source.startswith("x_test, y_test")


def test_driver_says_when_the_test_split_is_cut_from_the_training_data(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(50, 6)).astype(np.float32), y=rng.integers(0, 3, 50))
    torch.save(mlp(6, 3, [4]).state_dict(), tmp_path / "m.pt")
    proc = cli("landscape-surface", "model=mlp", "model.hidden=[4]", "data=tensors", f"data.path={tmp_path / 'd.npz'}",
               "data.split=both", f"checkpoint={tmp_path / 'm.pt'}", "grid.resolution=2",
               f"run.dir={tmp_path / 'run'}")
    assert "data: train split, 40 samples of 6 float32, from the rest of x, y of" in proc.stdout
    assert "data: test split, 10 samples" in proc.stdout and "the file has no x_test" in proc.stdout
