"""The thesis's experiments as presets (conf/experiment/thesis/): each composes, parses into the settings the
thesis used, and is in the README's table; the ImageNet ResNet-50 preset's dry run prints plan and estimate."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jobs import settings
from launch import config
from launch.train import train_config
from conftest import REPO, cli
from test_imagefolder import make_folder

PRESETS = REPO / "conf" / "experiment" / "thesis"
SURFACES = sorted(p.stem for p in PRESETS.glob("*.yaml"))
TRAININGS = sorted(p.stem for p in (PRESETS / "train").glob("*.yaml"))
# The thesis's epochs (sections 6.1-6.10): 151 checkpoints for the TAAF preparation's PCA
EPOCHS = {"taaf_prep": 150, "taaf_3x6000": 500, "plain_3x6000": 500, "taaf_3x9000": 500, "plain_3x9000": 500,
          "resnet50": 150, "resnet50_noskip": 150, "resnet56": 200, "resnet56_noskip": 200, "resnet110": 200,
          "resnet110_noskip": 200, "densenet_cifar": 150}


def _data_args(name: str, tmp_path: Path) -> list[str]:
    data = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())["defaults"][1]["override /data"]
    if data == "tensors":  # the sizes are read from the file's headers: a GEO-shaped stand-in
        np.savez(tmp_path / "geo.npz", x=np.zeros((4, 942), np.float32), y=np.zeros((4, 4759), np.float32))
        return [f"data.path={tmp_path / 'geo.npz'}"]
    if data == "imagefolder":  # the sizes are read from the folder: a few generated images in class folders
        return [f"data.root={make_folder(tmp_path / 'images')}"]
    return [f"data.root={tmp_path}"]


@pytest.mark.parametrize("name", SURFACES)
def test_every_surface_preset_parses(name, tmp_path):
    pca = [f"directions.checkpoints={tmp_path}"] if "pca" in name else []
    cfg = config.load("surface", [f"+experiment=thesis/{name}", f"checkpoint={tmp_path / 'c.pt'}", *pca,
                                  *_data_args(name, tmp_path)])
    s = settings.parse(cfg)
    size = int(re.search(r"_(\d+)$", name)[1]) if re.search(r"_(271|811|300)$", name) else \
        60 if name.startswith("imagenet") else 200
    assert s.grid.resolution == size
    assert s.directions.kind == ("pca" if "pca" in name else "random")
    assert s.loss == ("mae" if name.startswith(("taaf", "plain")) else "mse" if name.startswith("resnet110")
                      else "cross_entropy")
    assert s.model.options.get("skip", True) == ("noskip" not in name)
    if name.startswith(("taaf", "plain")):
        assert s.model.options["taaf"] == name.startswith("taaf") and s.model.options["activation"] == "sigmoid"


@pytest.mark.parametrize("name", TRAININGS)
def test_every_training_preset_parses(name, tmp_path):
    data = yaml.safe_load((PRESETS / "train" / f"{name}.yaml").read_text())["defaults"][1]["override /data"]
    args = _data_args("taaf_3x6000" if data == "tensors" else "resnet56", tmp_path)
    cfg = config.load("train", [f"+experiment=thesis/train/{name}", *args])
    tc = train_config(cfg)
    assert tc.epochs == EPOCHS[name]
    assert cfg["run"]["dir"] == f"runs/thesis-{name}"


def test_each_surface_preset_trains_from_a_training_preset():
    """A surface's command names the checkpoints its training preset writes."""
    for name in SURFACES:
        if name.startswith("imagenet"):
            continue
        text = (PRESETS / f"{name}.yaml").read_text()
        trained = re.search(r"runs/thesis-(\w+)/checkpoints", text)[1]
        assert trained in TRAININGS, name


def test_the_readme_table_lists_every_preset():
    readme = (REPO / "README.md").read_text()
    for name in SURFACES:
        assert f"+experiment=thesis/{name} " in readme or f"thesis/{name}`" in readme, name


def test_imagenet_resnet50_preset_dry_run_prints_plan_and_estimate(tmp_path):
    from PIL import Image

    from landscape.models.imagenet import ARCHS

    rng = np.random.default_rng(0)
    for cls in ("n01440764", "n01443537"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 50, 3), dtype=np.uint8)).save(
                tmp_path / "val" / cls / f"{i}.JPEG")
    torch.save(ARCHS["resnet50"](num_classes=2).state_dict(), tmp_path / "resnet50.pth")
    proc = cli("landscape-surface", "+experiment=thesis/imagenet_resnet50", f"checkpoint={tmp_path / 'resnet50.pth'}",
               f"data.root={tmp_path / 'val'}", f"data.cache_dir={tmp_path / 'cache'}", "launcher.dry_run=true",
               f"run.dir={tmp_path / 'run'}")
    assert "grid 60x60" in proc.stdout and "plan: " in proc.stdout and "s per point" in proc.stdout, proc.stderr
    assert not (tmp_path / "run").exists()


def test_projected_times_cover_every_preset_and_match_the_readme(capsys):
    """`python -m bench.thesis` projects every preset, and the README's table holds what it prints."""
    from bench import thesis

    assert set(thesis.THESIS) <= set(SURFACES)
    thesis.main([])
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[1:-1]]
            for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "---" not in r}
    readme = (REPO / "README.md").read_text()
    for name in SURFACES:
        points, gflop, time, devices, fp32, bf16 = rows[name][1:]
        assert int(points) > 0 and float(gflop) > 0
        assert f"| `thesis/{name}` | {time} | {devices} | {fp32} | {bf16} |" in readme, name
