"""The plain training loop the attack tests use for their tiny target networks (no shuffling, no
augmentation, so a test's target depends only on its seed)."""

from __future__ import annotations

import torch
from torch import nn


def adam_fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch: int, lr: float = 3e-3) -> None:
    """``epochs`` passes of Adam on cross-entropy over ``x`` in order, ``batch`` rows at a time."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            loss = nn.functional.cross_entropy(net(x[i : i + batch]), y[i : i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
