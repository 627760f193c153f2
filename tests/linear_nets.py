"""One affine classifier in the two forms the exact solver and verifier tests compare:
:class:`robench.testing.LinearModel` (closed-form minimal perturbations) and the ``nn.Sequential``
of a Flatten and a Linear with the same weights (what ``robench_plugins.exact.lower`` reads)."""

from __future__ import annotations

import torch
from torch import nn

from robench.testing import LinearModel


def linear_pair(w: torch.Tensor, b: torch.Tensor, shape: tuple[int, ...] = (1, 2, 3)) -> tuple[LinearModel, nn.Sequential]:
    """``(LinearModel, net)`` computing ``x.flatten() @ w.T + b`` for inputs of ``shape``."""
    lin = LinearModel(w, b, shape)
    net = nn.Sequential(nn.Flatten(), nn.Linear(w.shape[1], w.shape[0]))
    with torch.no_grad():
        net[1].weight.copy_(w)
        net[1].bias.copy_(b)
    return lin, net
