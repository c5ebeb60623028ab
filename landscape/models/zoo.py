"""torchvision classifiers by name (`model=torchvision model.arch=resnet50`), with local weight files.

Where torchvision imports, any of its classification builders is used; where it does not (a node with
another torch build), the architectures in `imagenet.py`, written to torchvision's layout, serve the same
names with the same weights and outputs.
"""
from __future__ import annotations

import re
from typing import Any

from torch import nn

from ..checkpoint import load_into
from ..errors import UserError
from .imagenet import ARCHS
from .sizes import classifier_sizes


WEIGHT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # DEFAULT, IMAGENET1K_V2: torchvision's names; anything else is a file


def _torchvision() -> Any | None:
    try:
        import torchvision.models  # noqa: PLC0415 - optional: absent, or broken beside another torch build
    except Exception:  # noqa: BLE001 - a torchvision built for another torch raises RuntimeError on import
        return None
    return torchvision.models


def torchvision_classifier(arch: str, weights: str | None = None, num_classes: Any = 1000,
                           in_channels: Any = 3) -> nn.Module:
    """torchvision's classifier `arch`, untrained, or with `weights`: a local state_dict file (compute nodes
    often have no internet), or DEFAULT / a torchvision weights name, downloaded by torchvision."""
    num_classes, in_channels = classifier_sizes(num_classes, in_channels)
    if in_channels != 3:
        raise UserError(f"model.arch={arch} takes 3-channel images; the data has {in_channels} channel(s)")
    tv = _torchvision()
    model = _build(tv, arch, num_classes)
    if weights is None:
        return model
    if not WEIGHT_NAME.fullmatch(weights):
        load_into(model, weights, f"model.arch={arch}", strip=None)  # model.weights: a plain state_dict
        return model
    if tv is None:
        raise UserError(f"model.weights={weights} asks torchvision to download weights, but torchvision does not "
                        "import here: download the file elsewhere and give model.weights=PATH")
    try:
        model.load_state_dict(tv.get_weight(f"{_weights_enum(tv, arch)}.{weights}").get_state_dict(progress=True))
    except Exception as err:  # unknown name, no network, 1000 classes expected
        raise UserError(f"model.weights={weights} for {arch}: {err}") from err
    return model


def _build(tv: Any | None, arch: str, num_classes: int) -> nn.Module:
    if tv is not None:
        try:
            return tv.get_model(arch, weights=None, num_classes=num_classes)
        except ValueError as err:
            raise UserError(f"model.arch={arch} is not a torchvision model ({err})") from err
    if arch not in ARCHS:
        raise UserError(f"model.arch={arch}: torchvision does not import here, and its built-in stand-ins are "
                        f"{', '.join(ARCHS)}")
    return ARCHS[arch](num_classes=num_classes)


def _weights_enum(tv: Any, arch: str) -> str:
    """torchvision's weights enum of `arch` (`ResNet50_Weights`), by its registry."""
    return tv.get_model_weights(arch).__name__
