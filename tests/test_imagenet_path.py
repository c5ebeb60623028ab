"""The ImageNet path end to end: a torchvision-layout ResNet-18 (`model=torchvision`) on an image folder
(`data=imagefolder`, ImageNet's mean/std), its surface centred on plain PyTorch evaluation of the same weights
on the same preprocessed images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import cli, read_surface
from landscape import imagefolder
from landscape.images import IMAGENET_MEAN, IMAGENET_STD, Transform, decode
from landscape.models.imagenet import ARCHS
from test_imagefolder import make_folder


def test_torchvision_resnet18_on_an_image_folder_equals_plain_pytorch(tmp_path):
    folder = make_folder(tmp_path / "images")
    torch.manual_seed(0)
    model = ARCHS["resnet18"](num_classes=3).eval()
    with torch.no_grad():  # running statistics that are not the identity, so that eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    sizes = ["data.resize=40", "data.crop=32"]  # the imagenet preset's mean/std and resize-then-crop, smaller
    proc = cli("landscape-surface", "model=torchvision", "model.arch=resnet18", "data=imagefolder",
               f"data.root={folder}", *sizes, "data.workers=1", f"checkpoint={tmp_path / 'r18.pth'}",
               "grid.resolution=3", f"run.dir={tmp_path / 'run'}")
    assert "16 samples of 3x32x32 uint8" in proc.stdout, proc.stdout
    listing = imagefolder.cached({"root": str(folder), "transform": "imagenet", "resize": 40, "crop": 32,
                                  "workers": 1}, ("train",))[1]["train"]
    x = np.stack([decode(str(folder / f), Transform.parse("imagenet", 40, 32)) for f in listing.files])
    xb = (torch.from_numpy(x).float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    y = torch.tensor(listing.labels)
    with torch.no_grad():
        out = model(xb)
    surf = read_surface(tmp_path / "run" / "surface.h5")
    assert surf["train_loss"][1, 1] == pytest.approx(torch.nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert surf["train_acc"][1, 1] == pytest.approx(100.0 * (out.argmax(1) == y).float().mean().item())
