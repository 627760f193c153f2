"""Substitute networks of the substitute (Papernot) attack, as the 01-loss papers describe them."""

from __future__ import annotations

import torch
from torch import nn


def substitute_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int, activation: str) -> nn.Module:
    """Two hidden layers of ``hidden`` units ("a three layer network ... 200 nodes in each hidden
    layer"); sigmoid as in the papers' text, ReLU as in the authors' code."""
    act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]
    d = 1
    for s in input_shape:
        d *= s
    return nn.Sequential(
        nn.Flatten(), nn.Linear(d, hidden), act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, num_classes)
    )


def substitute_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Four blocks of 3x3 convolution (32, 64, 128, 256 kernels), max pooling and batch norm, then a
    linear output layer (the substitute of the papers' CNN comparisons). Pooling is skipped once the
    feature map is a single pixel, so small inputs (8x8 digits) work too."""
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for width in (32, 64, 128, 256):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        layers.append(nn.BatchNorm2d(width))
        c = width
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
    return nn.Sequential(*layers)


def predict_in_chunks(fn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn`` (inputs -> labels) applied chunk by chunk, without autograd; labels on x's device."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + chunk]).to(x.device) for i in range(0, len(x), chunk)])
