"""CIFAR ResNets (He et al. 2016) as used by Li et al. 2018, including their "noshort" variant without skips.

Module names match Li et al.'s `ResNet_cifar` (conv1, bn1, layer1-3, shortcut, linear), so their checkpoints load.
"""
from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from .sizes import classifier_sizes


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a ReLU; with `skip`, the input is added before that ReLU.

    The added input is the identity, or a 1x1 conv + BN projection (option B) when stride or width changes.
    Without `skip` there is no shortcut module at all, as in Li et al.'s `BasicBlock_noshortcut`.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, skip: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module | None = None
        if skip:
            self.shortcut = nn.Identity()
            if stride != 1 or in_channels != channels:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
                )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


def _stage(in_channels: int, channels: int, blocks: int, stride: int, skip: bool) -> nn.Sequential:
    """`blocks` BasicBlocks; only the first one changes stride and width."""
    first = BasicBlock(in_channels, channels, stride, skip)
    return nn.Sequential(first, *(BasicBlock(channels, channels, 1, skip) for _ in range(blocks - 1)))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3, skip: bool = True) -> nn.Sequential:
    """A depth-(6n+2) CIFAR ResNet: 3x3 stem, three stages of n blocks at 16/32/64 channels, avg pool, linear head.

    `skip=False` gives Li et al.'s noshort network; it lacks the two projection shortcuts, so its parameters are
    the skip network's minus the `shortcut` entries (same names and shapes for everything else).
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    num_classes, in_channels = classifier_sizes(num_classes, in_channels)
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            bn1=nn.BatchNorm2d(16),
            relu=nn.ReLU(),
            layer1=_stage(16, 16, n, 1, skip),
            layer2=_stage(16, 32, n, 2, skip),
            layer3=_stage(32, 64, n, 2, skip),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            linear=nn.Linear(64, num_classes),
        )
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def resnet20(num_classes: int = 10, in_channels: int = 3, skip: bool = True) -> nn.Sequential:
    """ResNet-20 (n=3)."""
    return cifar_resnet(20, num_classes, in_channels, skip)


def resnet56(num_classes: int = 10, in_channels: int = 3, skip: bool = True) -> nn.Sequential:
    """ResNet-56 (n=9)."""
    return cifar_resnet(56, num_classes, in_channels, skip)


def resnet110(num_classes: int = 10, in_channels: int = 3, skip: bool = True) -> nn.Sequential:
    """ResNet-110 (n=18)."""
    return cifar_resnet(110, num_classes, in_channels, skip)
