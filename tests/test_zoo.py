"""torchvision-layout ResNets and DenseNets (`model=torchvision`), and the CIFAR ResNet-50 with its skip switch.

Layout and outputs are checked against `tests/data/torchvision_layout.json`, written by real torchvision
(`tests/data/torchvision_fixture.py`), so these tests need no torchvision."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape import directions
from landscape.data import Split
from landscape.engine import Evaluator
from landscape.errors import UserError
from landscape.models import cifar_resnet50, torchvision_classifier
from landscape.models.imagenet import ARCHS, Bottleneck

DATA = Path(__file__).resolve().parent / "data"
LAYOUT = json.loads((DATA / "torchvision_layout.json").read_text())
_spec = importlib.util.spec_from_file_location("torchvision_fixture", DATA / "torchvision_fixture.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


@pytest.mark.parametrize("arch", fixture.ARCHS)
def test_keys_and_shapes_are_torchvisions(arch):
    state = ARCHS[arch]().state_dict()
    assert [[k, list(v.shape)] for k, v in state.items()] == LAYOUT["archs"][arch]["keys"]


@pytest.mark.parametrize("arch", fixture.ARCHS)
def test_outputs_are_torchvisions_for_the_same_weights(arch):
    model = ARCHS[arch]().eval()
    model.load_state_dict(fixture.fill(model.state_dict()))
    with torch.no_grad():
        logits = model(fixture.images())[:, :50]
    want = torch.tensor(LAYOUT["archs"][arch]["logits"])
    assert want.abs().max() > 0.1  # the fixture holds real values, not zeros
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "densenet121"])
def test_folded_engine_equals_plain_eval_on_random_images(arch):
    """The engine (BatchNorm folded) at the centre and one moved point against the plain model in eval mode."""
    torch.manual_seed(0)
    model = torchvision_classifier(arch, num_classes=5)
    for m in model.modules():  # non-trivial statistics, so folding has something to fold
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "biasbn", 0)
    split = Split(torch.randint(0, 256, (6, 3, 48, 48), dtype=torch.uint8), torch.randint(0, 5, (6,)), 1 / 255,
                  torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))
    coords = np.array([[0.0, 0.0], [0.2, -0.1]])
    ev = Evaluator(torchvision_classifier(arch, num_classes=5), state, dirs, {"train": split}, 5, fold_bn=True,
                   compile=False)
    assert ev.folder is not None and ev.folder.pairs > 0
    got = ev.evaluate(coords)
    for i, (a, b) in enumerate(coords):
        model.load_state_dict({**state, **{n: state[n] + a * dx + b * dy for n, dx, dy in zip(names, dirs.x, dirs.y)}})
        with torch.no_grad():
            loss = F.cross_entropy(model.eval()(split.inputs(0, len(split))), split.y).item()
        np.testing.assert_allclose(got["train_loss"][i], loss, rtol=1e-4)


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_local_weights_file_loads(tmp_path, arch):
    torch.manual_seed(1)
    source = ARCHS[arch](num_classes=3)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = torchvision_classifier(arch, weights=str(tmp_path / "w.pth"), num_classes=3)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_published_densenet_keys_load(tmp_path):
    """torchvision's published DenseNet files name `norm.1` what the model calls `norm1`, as its loader knows,
    and, saved before BatchNorm counted its batches, lack `num_batches_tracked` (unused in eval)."""
    source = ARCHS["densenet121"](num_classes=3).state_dict()
    legacy = {k.replace("norm1", "norm.1").replace("conv2", "conv.2") if ".denselayer" in k else k: v
              for k, v in source.items() if not k.endswith("num_batches_tracked")}
    assert legacy.keys() != source.keys()
    torch.save(legacy, tmp_path / "densenet121-a639ec97.pth")
    loaded = torchvision_classifier("densenet121", weights=str(tmp_path / "densenet121-a639ec97.pth"),
                                    num_classes=3)
    assert all(torch.equal(source[k], v) for k, v in loaded.state_dict().items())


def test_bad_arch_weights_and_channels_are_one_line():
    with pytest.raises(UserError, match="model.arch=resnet7"):
        torchvision_classifier("resnet7")
    with pytest.raises(UserError, match="3-channel"):
        torchvision_classifier("resnet18", in_channels=1)
    with pytest.raises(UserError, match="does not exist"):
        torchvision_classifier("resnet18", weights="/nonexistent/w.pth")


@pytest.mark.parametrize("skip", [True, False])
def test_cifar_resnet50_shapes_and_skip(skip):
    model = cifar_resnet50(num_classes=10, skip=skip).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) == 1 + 16
    assert any(".downsample." in k for k in model.state_dict()) == skip


def test_cifar_resnet50_noskip_is_skip_without_projections():
    skip, noskip = cifar_resnet50().state_dict(), cifar_resnet50(skip=False).state_dict()
    assert {k: v.shape for k, v in noskip.items()} == {k: v.shape for k, v in skip.items() if ".downsample." not in k}


def test_bottleneck_skip_adds_the_input_before_the_last_relu():
    torch.manual_seed(0)
    with_skip, without = Bottleneck(256, 64, skip=True).eval(), Bottleneck(256, 64, skip=False).eval()
    without.load_state_dict(with_skip.state_dict())
    x = torch.randn(2, 256, 8, 8)
    b = without
    with torch.no_grad():
        f = b.bn3(b.conv3(F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x))))))))
        torch.testing.assert_close(with_skip(x), F.relu(f + x))
        torch.testing.assert_close(without(x), F.relu(f))


def test_cifar_resnet50_imagenet_stem_quarters_the_resolution():
    model = cifar_resnet50(stem="imagenet").eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    assert cifar_resnet50(stem="imagenet").state_dict().keys() == cifar_resnet50().state_dict().keys()


def test_torchvision_surface_end_to_end_equals_plain_eval(tmp_path):
    """`landscape-surface model=torchvision model.arch=resnet18`: the centre of the surface is the plain model's
    loss and accuracy on the same images, normalised the same way."""
    from landscape import data

    from conftest import cli, read_surface

    torch.manual_seed(3)
    model = ARCHS["resnet18"](num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    spec = ["data=synthetic", "data.n_train=8", "data.n_test=4", "data.shape=[3,32,32]"]
    proc = cli("landscape-surface", "model=torchvision", "model.arch=resnet18", *spec,
               f"checkpoint={tmp_path / 'r18.pth'}", "grid.resolution=3", "grid.tile=3", f"run.dir={tmp_path / 'run'}")
    assert "resnet18" in (tmp_path / "run" / "run.yaml").read_text(), proc.stdout
    got = read_surface(tmp_path / "run" / "surface.h5")
    split = data.synthetic(shape=(3, 32, 32), n_train=8, n_test=4).train
    with torch.no_grad():
        out = model(split.inputs(0, len(split)))
    np.testing.assert_allclose(got["train_loss"][1, 1], F.cross_entropy(out, split.y).item(), rtol=1e-5)
    np.testing.assert_allclose(got["train_acc"][1, 1], 100.0 * (out.argmax(1) == split.y).float().mean().item())
