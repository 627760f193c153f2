"""A supervised training loop for torch classifiers, shared by the built-in torch models (a public
module: a third-party model plugin trains through it the same way).

Adversarial training (PGD-AT in Linf or L2, and fast FGSM with a random start) is an option of
the same loop: set ``TrainParams.adversarial`` and every torch model plugin that trains through
:func:`train_classifier` becomes its adversarially-trained variant.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from .api import Context, Params
from .norms import lp_norm, per_sample


class AdversarialParams(Params):
    """Adversarial training: each minibatch is replaced by adversarial examples of the current net."""

    method: Literal["pgd", "fgsm-rs"] = Field(
        "pgd", description="pgd: PGD-AT (Madry et al.); fgsm-rs: one FGSM step from a random start (Wong et al. 2020)"
    )
    norm: Literal["Linf", "L2"] = Field("Linf", description="threat model of the training attack")
    eps: float = Field(..., gt=0, description="perturbation bound (in [0, 1] pixel units)")
    steps: int = Field(10, ge=1, description="PGD iterations (ignored by fgsm-rs, which takes one step)")
    step_size: float | None = Field(
        None, gt=0, description="step length; default 2.5*eps/steps for pgd, 1.25*eps for fgsm-rs"
    )
    random_start: bool = Field(True, description="start from a uniform point of the eps-ball (fgsm-rs always does)")
    mix: float = Field(
        1.0, ge=0, le=1, description="weight of the adversarial loss; 1 - mix goes to the clean loss (Goodfellow's AT uses 0.5)"
    )

    def inert(self) -> dict[str, str]:
        out = super().inert()
        if self.method == "fgsm-rs":
            out["steps"] = "method is fgsm-rs, which takes one step"
            out["random_start"] = "method is fgsm-rs, which always starts from a random point"
        return out

    @property
    def alpha(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 1.25 * self.eps if self.method == "fgsm-rs" else 2.5 * self.eps / self.steps


class TrainParams(Params):
    """Optimisation settings common to every torch model plugin."""

    epochs: int = Field(20, ge=1, le=10_000, description="passes over the training data")
    batch_size: int = Field(128, ge=1, description="examples per optimisation step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam, or sgd with momentum")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of sgd")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    schedule: Literal["constant", "cosine", "onecycle", "exp"] = Field(
        "constant", description="learning-rate schedule over all steps (exp: multiply by lr_decay after each epoch)"
    )
    lr_decay: float = Field(0.95, gt=0, le=1, description="per-epoch factor of the exp schedule")
    augment: Literal["none", "crop-flip", "crop"] = Field(
        "none", description="random 2-px-padded crops (4 px for 32 px images) and horizontal flips: for natural images only"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the default cross-entropy loss")
    bf16: bool = Field(False, description="train under bfloat16 autocast (faster on CPUs with AVX512-BF16/AMX and on GPUs)")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training examples")
    adversarial: AdversarialParams | None = Field(
        None, description="adversarial training (e.g. {method: pgd, norm: Linf, eps: 0.3, steps: 40}); None: plain training"
    )

    def inert(self) -> dict[str, str]:
        out = super().inert()
        if self.optimizer != "sgd":
            out["momentum"] = f"optimizer is {self.optimizer}; momentum is used only by sgd"
        elif self.schedule == "onecycle":
            out["momentum"] = "the onecycle schedule cycles the momentum itself"
        if self.schedule != "exp":
            out["lr_decay"] = f"schedule is {self.schedule}; lr_decay is used only by the exp schedule"
        return out


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


def make_optimizer(net: torch.nn.Module, p: TrainParams, total_steps: int, steps_per_epoch: int = 1):
    """The optimizer and learning-rate scheduler (None for constant) that ``p`` asks for, over ``total_steps`` steps."""
    params = [q for q in net.parameters() if q.requires_grad]
    if p.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, nesterov=True)
    if p.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    elif p.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=max(total_steps, 1))
    elif p.schedule == "exp":
        # stepped per batch like the others: decay by lr_decay once per epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: p.lr_decay ** (s // max(steps_per_epoch, 1)))
    else:
        sched = None
    return opt, sched


# -- adversarial examples for training -----------------------------------------------------------


def _per_sample_l2(t: torch.Tensor) -> torch.Tensor:
    return per_sample(lp_norm(t, "L2").clamp_min(1e-12), t)


def _random_in_ball(x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    if norm == "Linf":
        return (torch.rand_like(x) * 2 - 1) * eps
    # uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d)
    d = x[0].numel()
    g = torch.randn_like(x)
    r = per_sample(torch.rand(x.shape[0], device=x.device).pow(1.0 / d), x)
    return g / _per_sample_l2(g) * r * eps


def _project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_sample_l2(delta)).clamp(max=1.0)


def adversarial_batch(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, a: AdversarialParams) -> torch.Tensor:
    """Untargeted cross-entropy ascent inside the eps-ball and the [0, 1] box (detached result).

    ``pgd``: ``steps`` projected steps (sign steps for Linf, normalised-gradient steps for L2).
    ``fgsm-rs``: one such step of length 1.25 eps from a uniform random start (Wong et al. 2020).
    """
    steps = 1 if a.method == "fgsm-rs" else a.steps
    start = a.random_start or a.method == "fgsm-rs"
    delta = _random_in_ball(x, a.norm, a.eps) if start else torch.zeros_like(x)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    # parameter gradients are not needed while crafting
    grads_were = [q.requires_grad for q in net.parameters()]
    for q in net.parameters():
        q.requires_grad_(False)
    try:
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(net(x + delta), y)
            (g,) = torch.autograd.grad(loss, delta)
            step = g.sign() if a.norm == "Linf" else g / _per_sample_l2(g)
            delta = _project(delta.detach() + a.alpha * step, a.norm, a.eps)
            delta = ((x + delta).clamp(0, 1) - x).detach()
    finally:
        for q, r in zip(net.parameters(), grads_were):
            q.requires_grad_(r)
    return (x + delta).detach()


# -- the loop ------------------------------------------------------------------------------------


def train_classifier(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    p: TrainParams,
    ctx: Context,
    loss_fn=None,
) -> list[float]:
    """Minimise ``loss_fn(net, xb, yb)`` (default cross-entropy) over minibatches; returns the mean
    loss of each epoch. Deterministic for a given ``ctx.seed`` on one device.

    With ``p.adversarial`` set, ``xb`` is replaced by adversarial examples crafted against the
    current net (in train mode, as in Madry et al.) before ``loss_fn`` sees it; ``mix < 1``
    adds ``(1 - mix)`` times the loss on the clean batch.
    """
    if p.train_limit is not None:
        x, y = x[: p.train_limit], y[: p.train_limit]
    torch.manual_seed(ctx.seed)
    gen = ctx.generator(offset=1)
    net.to(ctx.device).train()
    steps_per_epoch = math.ceil(len(x) / p.batch_size)
    opt, sched = make_optimizer(net, p, steps_per_epoch * p.epochs, steps_per_epoch)
    if loss_fn is None:
        loss_fn = lambda m, xb, yb: F.cross_entropy(m(xb), yb, label_smoothing=p.label_smoothing)  # noqa: E731
    if p.bf16 and ctx.device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn("robench: training under bfloat16 autocast on a CPU without native bf16 (AVX512-BF16/AMX) "
                      "is several times slower than float32 (9x measured for the VGG recipe on an AVX2 EPYC; "
                      "docs/benchmarks/defenses.md); the recipe's bf16 is part of the model key, so it is kept",
                      stacklevel=2)
    autocast = (
        (lambda: torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16))
        if p.bf16
        else contextlib.nullcontext
    )
    adv = p.adversarial
    history = []
    for epoch in range(p.epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), p.batch_size):
            idx = order[start : start + p.batch_size]
            xb = augment_batch(x[idx].to(ctx.device), p.augment, gen)
            yb = y[idx].to(ctx.device)
            with autocast():
                if adv is None:
                    loss = loss_fn(net, xb, yb)
                else:
                    loss = adv.mix * loss_fn(net, adversarial_batch(net, xb, yb, adv), yb)
                    if adv.mix < 1:
                        loss = loss + (1 - adv.mix) * loss_fn(net, xb, yb)
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


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (without it, bf16 is emulated and slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@torch.no_grad()
def accuracy(model_scores, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Share of ``x`` that ``model_scores`` (a callable returning logits) classifies as ``y``."""
    hits = 0
    for s in range(0, len(x), batch_size):
        hits += int((model_scores(x[s : s + batch_size]).argmax(1).cpu() == y[s : s + batch_size].cpu()).sum())
    return hits / max(len(x), 1)
