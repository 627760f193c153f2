"""A plain supervised training loop for torch classifiers, shared by the built-in torch models."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

import robench


class TrainParams(robench.Params):
    """Optimisation settings common to every torch model plugin."""

    epochs: int = Field(20, ge=1, description="passes over the training data")
    batch_size: int = Field(128, ge=1, description="examples per optimisation step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam, or sgd with momentum")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of sgd")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    schedule: Literal["constant", "cosine", "onecycle"] = Field("constant", description="learning-rate schedule over all steps")
    augment: Literal["none", "crop-flip", "crop"] = Field(
        "none", description="random 2-px-padded crops (and horizontal flips): for natural images only"
    )
    train_limit: int | None = Field(None, ge=1, description="use only the first N training examples")


def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Random-shift crops (padding 2 for small images, 4 for 32 px) and optional horizontal flips."""
    if mode == "none":
        return x
    n, _, h, w = x.shape
    pad = 4 if h >= 32 else 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if mode == "crop-flip":
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()


def make_optimizer(net: torch.nn.Module, p: TrainParams, total_steps: int):
    if p.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, nesterov=True)
    if p.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    elif p.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=max(total_steps, 1))
    else:
        sched = None
    return opt, sched


def train_classifier(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    p: TrainParams,
    ctx: robench.Context,
    loss_fn=None,
) -> list[float]:
    """Minimise ``loss_fn(net, xb, yb)`` (default cross-entropy) over minibatches; returns the mean
    loss of each epoch. Deterministic for a given ``ctx.seed`` on one device.
    """
    if p.train_limit is not None:
        x, y = x[: p.train_limit], y[: p.train_limit]
    torch.manual_seed(ctx.seed)
    gen = ctx.generator(offset=1)
    net.to(ctx.device).train()
    steps_per_epoch = math.ceil(len(x) / p.batch_size)
    opt, sched = make_optimizer(net, p, steps_per_epoch * p.epochs)
    loss_fn = loss_fn or (lambda m, xb, yb: F.cross_entropy(m(xb), yb))
    history = []
    for epoch in range(p.epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), p.batch_size):
            idx = order[start : start + p.batch_size]
            xb = augment_batch(x[idx].to(ctx.device), p.augment, gen)
            yb = y[idx].to(ctx.device)
            loss = loss_fn(net, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x))
        ctx.report(epoch + 1, p.epochs)
    net.eval()
    return history
