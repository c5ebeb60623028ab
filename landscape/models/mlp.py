"""Fully connected networks, optionally with TAAFs (Transformative Adaptive Activation Functions) per neuron."""
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .sizes import data_size

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (a key of ACTIVATIONS)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class TAAF(nn.Module):
    """alpha * f(beta * y + gamma) + delta, with alpha, beta, gamma, delta trainable per neuron.

    Initialised to alpha=beta=1, gamma=delta=0, so a fresh TAAF computes exactly f. Acts on the last dimension.
    """

    def __init__(self, width: int, activation: str = "relu") -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(width))
        self.beta = nn.Parameter(torch.ones(width))
        self.gamma = nn.Parameter(torch.zeros(width))
        self.delta = nn.Parameter(torch.zeros(width))
        self.f = make_activation(activation)

    def forward(self, y: Tensor) -> Tensor:
        return self.alpha * self.f(self.beta * y + self.gamma) + self.delta


def mlp(
    in_features: int,
    out_features: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "relu",
    taaf: bool = False,
) -> nn.Sequential:
    """Flatten, then per hidden width a Linear layer and the activation (a TAAF if `taaf`), then a Linear head."""
    in_features, out_features = data_size(in_features, "in_features"), data_size(out_features, "out_features")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), TAAF(h, activation) if taaf else make_activation(activation)]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
