"""Convolutional architectures, built for any (C, H, W) input and class count: the ``cnn`` plugin's
``arch`` choices (:data:`ARCHS`), and LeNet for the ``margin`` and ``critic`` defenses. A public module."""

from __future__ import annotations

import torch
from torch import nn


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).flatten(1).shape[1])


def small(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two 3x3 conv layers (16, 32) with max pooling and a 64-unit hidden layer: trains in seconds."""
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
    )
    n = _flat_size(features, input_shape)
    return nn.Sequential(features, nn.Flatten(), nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, num_classes))


def _lenet_features(input_shape: tuple[int, ...]) -> nn.Sequential:
    """LeNet-5's convolutions: 5x5 conv (6) - pool - 5x5 conv (16) - pool, with ReLU as in the thesis.

    The first conv pads by 2 (28 px MNIST keeps 28x28 as in LeCun's 32 px input); the second is
    unpadded when the map is large enough (MNIST: 14 -> 10 -> 5, 400 features) and padded on tiny
    inputs such as the 8x8 digits, where an unpadded 5x5 conv would not fit.
    """
    c, h = input_shape[0], input_shape[1]
    pad2 = 0 if h // 2 >= 10 else 2
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(6, 16, 5, padding=pad2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
    )


def lenet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5: LeNet convolutions, then 120 and 84 hidden units."""
    features = _lenet_features(input_shape)
    n = _flat_size(features, input_shape)
    return nn.Sequential(
        features, nn.Flatten(), nn.Linear(n, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
    )


def simplenet(width: int):
    """The 01-loss papers' SimpleNet<width>: LeNet's convolutions, then one hidden layer of ``width``."""

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        features = _lenet_features(input_shape)
        n = _flat_size(features, input_shape)
        return nn.Sequential(features, nn.Flatten(), nn.Linear(n, width), nn.ReLU(), nn.Linear(width, num_classes))

    build.__doc__ = f"SimpleNet{width}: LeNet convolutions and one hidden layer of {width} units."
    return build


def conv4(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The 01-loss papers' substitute: four blocks of 3x3 conv (32, 64, 128, 256) - ReLU - max pool -
    batch norm (the papers' order), then the output layer."""
    layers: list[nn.Module] = []
    c = input_shape[0]
    for width in (32, 64, 128, 256):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.BatchNorm2d(width)]
        c = width
    features = nn.Sequential(*layers)
    n = _flat_size(features.eval(), input_shape)
    return nn.Sequential(features, nn.Flatten(), nn.Linear(n, num_classes))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def vgg(input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> nn.Module:
    """A VGG-style CIFAR network: three stages of two 3x3 conv-BN-ReLU layers (width, 2w, 4w), each
    followed by 2x2 max pooling, then global max pooling and a linear layer scaled by 1/8 (keeps
    the initial logits small, which lets the one-cycle schedule start at a high learning rate).
    """
    c = input_shape[0]
    w1, w2, w3 = width, 2 * width, 4 * width
    features = nn.Sequential(
        *_conv_bn(c, w1), *_conv_bn(w1, w1), nn.MaxPool2d(2, ceil_mode=True),
        *_conv_bn(w1, w2), *_conv_bn(w2, w2), nn.MaxPool2d(2, ceil_mode=True),
        *_conv_bn(w2, w3), *_conv_bn(w3, w3), nn.MaxPool2d(2, ceil_mode=True),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
    )
    return nn.Sequential(features, nn.Linear(w3, num_classes, bias=False), _Scale(0.125))


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


ARCHS = {
    "small": small,
    "lenet": lenet,
    "simplenet80": simplenet(80),
    "simplenet500": simplenet(500),
    "conv4": conv4,
    "vgg": vgg,
}
