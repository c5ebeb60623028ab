"""ImageNet ResNets and DenseNets written to torchvision's layout: the same module names, parameter shapes and
forward arithmetic as `torchvision.models`, so torchvision's published weight files load into them and give
the same outputs, on machines where torchvision itself cannot be installed (README: how this was checked).

The bottleneck block also serves the CIFAR ResNet-50 (`cifar_resnet50`), with the thesis's skip switch.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sizes import classifier_sizes


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus the input (or its `downsample`), ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, skip: bool = True, groups: int = 1,
                 base_width: int = 64) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock takes groups=1 and base_width=64 only (as torchvision's)")
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.skip = skip
        self.downsample = _downsample(cin, planes, stride) if skip else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(_add_skip(out, x, self.skip, self.downsample))


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride sits in the 3x3 conv): 1x1-3x3-1x1 with BN, 4x wider
    out; with `skip`, the input (or its `downsample`) is added before the last ReLU."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, skip: bool = True, groups: int = 1,
                 base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.skip = skip
        self.downsample = _downsample(cin, planes * self.expansion, stride) if skip else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(_add_skip(out, x, self.skip, self.downsample))


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut (1x1 conv + BN) where stride or width change; None where the identity fits."""
    return nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None


def _add_skip(out: Tensor, x: Tensor, skip: bool, downsample: nn.Module | None) -> Tensor:
    if not skip:
        return out
    return out + (x if downsample is None else downsample(x))


Block = type[BasicBlock] | type[Bottleneck]


def _stages(block: Block, layers: list[int], skip: bool, groups: int, base_width: int, cin: int = 64
            ) -> OrderedDict[str, nn.Module]:
    """layer1..layer4 at 64/128/256/512 planes, strides 1/2/2/2; only each stage's first block changes them."""
    out: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        stride = 1 if i == 0 else 2
        mods = [block(cin, planes, stride, skip, groups, base_width)]
        cin = planes * block.expansion
        mods += [block(cin, planes, 1, skip, groups, base_width) for _ in range(blocks - 1)]
        out[f"layer{i + 1}"] = nn.Sequential(*mods)
    return out


def _init(model: nn.Module) -> nn.Module:
    """torchvision's initialisation: He (fan_out) for convs, BN at identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


def _head(stages: OrderedDict[str, nn.Module], stem: OrderedDict[str, nn.Module], channels: int,
          num_classes: int) -> nn.Sequential:
    return _init(nn.Sequential(OrderedDict(
        **stem, **stages, avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(channels, num_classes))))


def _imagenet_stem(in_channels: int) -> OrderedDict[str, nn.Module]:
    """7x7/2 conv, BN, ReLU, 3x3/2 max pool: a quarter of the resolution before the first stage."""
    return OrderedDict(conv1=nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), bn1=nn.BatchNorm2d(64),
                       relu=nn.ReLU(), maxpool=nn.MaxPool2d(3, stride=2, padding=1))


def resnet(block: Block, layers: list[int], num_classes: int = 1000, in_channels: int = 3, groups: int = 1,
           width_per_group: int = 64) -> nn.Sequential:
    """torchvision's ResNet: 7x7/2 stem, BN, ReLU, 3x3/2 max pool, four stages, average pool, `fc`."""
    num_classes, in_channels = classifier_sizes(num_classes, in_channels)
    return _head(_stages(block, layers, True, groups, width_per_group), _imagenet_stem(in_channels),
                 512 * block.expansion, num_classes)


def cifar_resnet50(num_classes: int = 10, in_channels: int = 3, skip: bool = True, stem: str = "cifar"
                   ) -> nn.Sequential:
    """ResNet-50 (bottlenecks, [3, 4, 6, 3]) for 32x32 inputs, as the thesis trained it on CIFAR-10 (section 6.3):
    torchvision's network with a 3x3/1 stem and no max pool (`stem="imagenet"`: its 7x7/2 stem and max pool,
    as Keras' ResNet50 has at any input size); `skip=False` drops every shortcut (and its projection), as in
    Li et al.'s noshort networks."""
    num_classes, in_channels = classifier_sizes(num_classes, in_channels)
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem must be cifar or imagenet, got {stem!r}")
    stem_layers = OrderedDict(conv1=_conv3x3(in_channels, 64), bn1=nn.BatchNorm2d(64), relu=nn.ReLU())
    if stem == "imagenet":
        stem_layers = _imagenet_stem(in_channels)
    return _head(_stages(Bottleneck, [3, 4, 6, 3], skip, 1, 64), stem_layers, 2048, num_classes)


class DenseLayer(nn.Module):
    """torchvision's _DenseLayer: BN-ReLU-1x1 conv (bn_size*k) - BN-ReLU-3x3 conv (k) on the concatenated input."""

    def __init__(self, cin: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = _conv1x1(cin, bn_size * growth_rate)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = _conv3x3(bn_size * growth_rate, growth_rate)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    """denselayer1..N, each fed the concatenation of the block's input and every earlier layer's output."""

    def __init__(self, layers: int, cin: int, growth_rate: int, bn_size: int) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(cin + i * growth_rate, growth_rate, bn_size)
                          for i in range(layers)})

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """torchvision's DenseNet: `features` (7x7/2 stem, pool, dense blocks and transitions, norm5), then ReLU,
    average pool and `classifier`."""

    def __init__(self, growth_rate: int, blocks: tuple[int, ...], init_features: int, num_classes: int = 1000,
                 in_channels: int = 3, bn_size: int = 4) -> None:
        super().__init__()
        num_classes, in_channels = classifier_sizes(num_classes, in_channels)
        mods: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(in_channels, init_features, 7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(init_features), relu0=nn.ReLU(), pool0=nn.MaxPool2d(3, stride=2, padding=1))
        channels = init_features
        for i, layers in enumerate(blocks):
            mods[f"denseblock{i + 1}"] = DenseBlock(layers, channels, growth_rate, bn_size)
            channels += layers * growth_rate
            if i < len(blocks) - 1:
                mods[f"transition{i + 1}"] = nn.Sequential(OrderedDict(
                    norm=nn.BatchNorm2d(channels), relu=nn.ReLU(), conv=_conv1x1(channels, channels // 2),
                    pool=nn.AvgPool2d(2, stride=2)))
                channels //= 2
        mods["norm5"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(mods)
        self.classifier = nn.Linear(channels, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        out = F.adaptive_avg_pool2d(F.relu(self.features(x)), 1)
        return self.classifier(torch.flatten(out, 1))


# The builders torchvision names, with its arguments.
ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda **kw: resnet(BasicBlock, [2, 2, 2, 2], **kw),
    "resnet34": lambda **kw: resnet(BasicBlock, [3, 4, 6, 3], **kw),
    "resnet50": lambda **kw: resnet(Bottleneck, [3, 4, 6, 3], **kw),
    "resnet101": lambda **kw: resnet(Bottleneck, [3, 4, 23, 3], **kw),
    "resnet152": lambda **kw: resnet(Bottleneck, [3, 8, 36, 3], **kw),
    "resnext50_32x4d": lambda **kw: resnet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, **kw),
    "wide_resnet50_2": lambda **kw: resnet(Bottleneck, [3, 4, 6, 3], width_per_group=128, **kw),
    "densenet121": lambda **kw: DenseNet(32, (6, 12, 24, 16), 64, **kw),
    "densenet161": lambda **kw: DenseNet(48, (6, 12, 36, 24), 96, **kw),
    "densenet169": lambda **kw: DenseNet(32, (6, 12, 32, 32), 64, **kw),
    "densenet201": lambda **kw: DenseNet(32, (6, 12, 48, 32), 64, **kw),
}
