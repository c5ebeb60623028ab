"""Architectures by name; any importable factory also works through a `_target_` spec."""
from .densenet import densenet_bc
from .digits_cnn import digits_cnn
from .imagenet import cifar_resnet50
from .mlp import mlp
from .resnet import cifar_resnet, resnet20, resnet56, resnet110
from .zoo import torchvision_classifier

__all__ = ["cifar_resnet", "cifar_resnet50", "densenet_bc", "digits_cnn", "mlp", "resnet20", "resnet56",
           "resnet110", "torchvision_classifier"]
