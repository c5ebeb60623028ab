"""DenseNet-BC for CIFAR (Huang et al. 2017): bottleneck dense layers and compressing transitions."""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sizes import classifier_sizes


class Bottleneck(nn.Module):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k); the k new feature maps are concatenated after the input's."""

    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


def _transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """BN-ReLU-Conv1x1-AvgPool2: compresses the channels and halves the resolution between dense blocks."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.AvgPool2d(2),
    )


def densenet_bc(
    depth: int = 100, growth_rate: int = 12, num_classes: int = 10, in_channels: int = 3, reduction: float = 0.5
) -> nn.Sequential:
    """DenseNet-BC: 3x3 conv to 2k channels, three dense blocks of (depth-4)/6 bottlenecks, BN-ReLU-pool-linear.

    Transitions keep floor(reduction * channels); the final pool is adaptive, so 8x8 inputs work as well as 32x32.
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n+4 with n >= 1, got {depth}")
    n = (depth - 4) // 6
    num_classes, in_channels = classifier_sizes(num_classes, in_channels)
    channels = 2 * growth_rate
    layers: dict[str, nn.Module] = {"conv1": nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)}
    for i in (1, 2, 3):
        layers[f"dense{i}"] = nn.Sequential(*(Bottleneck(channels + j * growth_rate, growth_rate) for j in range(n)))
        channels += n * growth_rate
        if i < 3:
            compressed = math.floor(channels * reduction)
            layers[f"trans{i}"] = _transition(channels, compressed)
            channels = compressed
    layers |= {
        "bn": nn.BatchNorm2d(channels),
        "relu": nn.ReLU(),
        "pool": nn.AdaptiveAvgPool2d(1),
        "flatten": nn.Flatten(),
        "linear": nn.Linear(channels, num_classes),
    }
    model = nn.Sequential(OrderedDict(layers))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
