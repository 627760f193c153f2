"""The adversary-critic defense (thesis chapter 4, section 4.4) and its evaluation attack."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import robench
from robench.norms import per_sample
from robench.nets import lenet

from .adversary import closest_boundary_target, high_confidence_attack

THESIS_LAMBDA = {"mlp": 0.5, "lenet": 0.1}


class CriticParams(robench.Params):
    """Defaults are the thesis' MNIST hyperparameters (section 4.5) unless marked otherwise."""

    arch: Literal["mlp", "lenet"] = Field("mlp", description="classifier: mlp (3 x 1200 ReLU) or lenet (LeNet-5)")
    hidden: tuple[int, ...] = Field((1200, 1200, 1200), min_length=1, description="mlp only: hidden widths")
    lmbd: float | None = Field(None, ge=0, description="weight of the critic term; default 0.5 for mlp, 0.1 for lenet")
    lmbd_rec: float = Field(1e-2, ge=0, description="weight of the adversarial cycle-consistency term")
    lmbd_grad: float = Field(10.0, ge=0, description="weight of the critic's gradient-norm penalty (real and adversarial)")
    attack_steps: int = Field(5, ge=1, description="steps of the differentiable high-confidence attack")
    attack_overshoot: float = Field(0.05, ge=0, description="overshoot of the training attack (the author's code; not in the text)")
    critic_hidden: tuple[int, ...] = Field((1200, 1200), min_length=1, description="critic MLP widths (leaky ReLU)")
    critic_noise: float = Field(0.3, ge=0, description="std of the Gaussian noise added to every critic layer's input (our choice: the thesis gives none)")
    epochs: int = Field(100, ge=1, le=10_000, description="epochs of adversarial-critic training")
    pretrain_epochs: int = Field(1, ge=0, le=10_000, description="epochs of plain NLL training first (initialises the class confidences)")
    batch_size: int = Field(100, ge=1, description="examples per step")
    lr: float = Field(5e-4, gt=0, description="classifier Adam learning rate")
    critic_lr: float = Field(1e-3, gt=0, description="critic Adam learning rate")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 of both optimisers")
    lr_decay_every: int = Field(40, ge=1, description="halve both learning rates every this many epochs")
    conf_momentum: float = Field(0.5, ge=0, lt=1, description="running mean of per-class confidence: new = m * old + (1 - m) * batch")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training examples")

    @property
    def weight(self) -> float:
        return THESIS_LAMBDA[self.arch] if self.lmbd is None else self.lmbd


class _Noise(nn.Module):
    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


def critic_net(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...], noise: float) -> nn.Module:
    """K-output critic: output k scores "natural example of class k" (label used only at the output)."""
    dims = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims, dims[1:]):
        layers += [_Noise(noise), nn.Linear(a, b), nn.LeakyReLU(0.2)]
    layers += [_Noise(noise), nn.Linear(dims[-1], num_classes)]
    return nn.Sequential(*layers)


def _mlp(input_shape, num_classes, hidden) -> nn.Module:
    dims = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], num_classes))
    return nn.Sequential(*layers)


def _pick(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, idx[:, None]).squeeze(1)


def critic_loss(critic: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, t_adv: torch.Tensor, lmbd_grad: float):
    """Critic objective (eq. 4.3) with the gradient-norm penalty at real and adversarial inputs.

    Output y of a natural (x, y) should say "natural" (1); output t of an adversarial aimed at t
    "adversarial" (0). Penalty: mean squared L2 norm of the input gradient of the chosen logit,
    at the real and at the adversarial data separately (no interpolation, as in the thesis).
    """
    xr = x.detach().requires_grad_(True)
    xa = x_adv.detach().requires_grad_(True)
    z_real = _pick(critic(xr), y)
    z_adv = _pick(critic(xa), t_adv)
    loss = F.binary_cross_entropy_with_logits(z_real, torch.ones_like(z_real))
    if len(xa):
        loss = loss + F.binary_cross_entropy_with_logits(z_adv, torch.zeros_like(z_adv))
    if lmbd_grad > 0:
        (g_real,) = torch.autograd.grad(z_real.sum(), xr, create_graph=True)
        penalty = g_real.flatten(1).pow(2).sum(1).mean()
        if len(xa):
            (g_adv,) = torch.autograd.grad(z_adv.sum(), xa, create_graph=True)
            penalty = penalty + g_adv.flatten(1).pow(2).sum(1).mean()
        loss = loss + lmbd_grad * penalty
    return loss


class Critic(robench.TorchModel):
    """Classifier trained with NLL + lambda * (its adversarials fool the critic) + cycle consistency."""

    Params = CriticParams

    def build(self) -> nn.Module:
        p: CriticParams = self.params
        if p.arch == "lenet":
            return lenet(self.info.input_shape, self.info.num_classes).eval()
        return _mlp(self.info.input_shape, self.info.num_classes, p.hidden).eval()

    # -- training ----------------------------------------------------------------------------
    def classifier_loss(self, critic: nn.Module, x: torch.Tensor, y: torch.Tensor, class_conf: torch.Tensor):
        """One batch of eq. 4.4 + 4.5. Returns (loss, dict of parts, adversarials, their classes)."""
        p: CriticParams = self.params
        k = self.info.num_classes
        logits = self.net(x)
        nll = F.cross_entropy(logits, y)
        prob = logits.softmax(1)
        conf, pred = prob.max(1)
        pred, conf = pred.detach(), conf.detach()
        target = closest_boundary_target(self.net, x, pred, k)
        x_hat = high_confidence_attack(
            self.net, x, target, class_conf[target], steps=p.attack_steps, overshoot=p.attack_overshoot, create_graph=True
        )
        pred_hat = self.net(x_hat).argmax(1).detach()
        ok = pred_hat != pred  # only adversarials that changed the prediction feed the critic
        loss = nll
        parts = {"nll": float(nll.detach()), "adv_success": float(ok.float().mean())}
        if ok.any():
            z_adv = _pick(critic(x_hat[ok]), pred_hat[ok])
            gan = F.binary_cross_entropy_with_logits(z_adv, torch.ones_like(z_adv))  # fool the critic
            loss = loss + p.weight * gan
            parts["gan"] = float(gan.detach())
            if p.lmbd_rec > 0:
                x_rec = high_confidence_attack(
                    self.net, x_hat.detach()[ok], pred[ok], conf[ok],
                    steps=p.attack_steps, overshoot=p.attack_overshoot, create_graph=True,
                )
                rec = (x_rec - x[ok]).flatten(1).norm(dim=1).mean()  # eq. 4.5 (L2 norm)
                loss = loss + p.lmbd_rec * rec
                parts["rec"] = float(rec.detach())
        return loss, parts, x_hat.detach()[ok], pred_hat[ok]

    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: robench.Context) -> None:
        p: CriticParams = self.params
        dev = ctx.device
        if p.train_limit is not None:
            x, y = x[: p.train_limit], y[: p.train_limit]
        torch.manual_seed(ctx.seed)
        gen = ctx.generator(offset=1)
        k = self.info.num_classes
        self.net = self.build().to(dev).train()
        critic = critic_net(self.info.input_shape, k, p.critic_hidden, p.critic_noise).to(dev).train()
        opt_f = torch.optim.Adam(self.net.parameters(), lr=p.lr, betas=(p.beta1, 0.999))
        opt_d = torch.optim.Adam(critic.parameters(), lr=p.critic_lr, betas=(p.beta1, 0.999))
        scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=p.lr_decay_every, gamma=0.5) for o in (opt_f, opt_d)]
        class_conf = torch.ones(k, device=dev)
        self.history: list[dict[str, float]] = []
        total_epochs = p.pretrain_epochs + p.epochs

        def update_conf(logits: torch.Tensor) -> None:
            conf, pred = logits.detach().softmax(1).max(1)
            sums = torch.zeros(k, device=dev).index_add_(0, pred, conf)
            counts = torch.zeros(k, device=dev).index_add_(0, pred, torch.ones_like(conf))
            batch = torch.where(counts > 0, sums / counts.clamp_min(1), class_conf)
            class_conf.mul_(p.conf_momentum).add_((1 - p.conf_momentum) * batch)

        for epoch in range(total_epochs):
            pretrain = epoch < p.pretrain_epochs
            order = torch.randperm(len(x), generator=gen)
            sums: dict[str, float] = {}
            for start in range(0, len(x), p.batch_size):
                idx = order[start : start + p.batch_size]
                xb, yb = x[idx].to(dev), y[idx].to(dev)
                if pretrain:
                    logits = self.net(xb)
                    loss, parts = F.cross_entropy(logits, yb), {}
                    parts["nll"] = float(loss.detach())
                    update_conf(logits)
                else:
                    with torch.no_grad():
                        update_conf(self.net(xb))
                    loss, parts, x_adv, t_adv = self.classifier_loss(critic, xb, yb, class_conf)
                opt_f.zero_grad(set_to_none=True)
                loss.backward()
                opt_f.step()
                if not pretrain:
                    d_loss = critic_loss(critic, xb, yb, x_adv, t_adv, p.lmbd_grad)
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                    parts["critic"] = float(d_loss.detach())
                for name, v in parts.items():
                    sums[name] = sums.get(name, 0.0) + v * len(idx)
            self.history.append({name: v / len(x) for name, v in sums.items()})
            if not pretrain:
                for s in scheds:
                    s.step()
            ctx.report(epoch + 1, total_epochs)
        self.net.eval()
        self.critic = critic.eval()  # kept for inspection; not part of the model's state


class HighConfidenceParams(robench.Params):
    steps: int = Field(500, ge=1, description="maximum iterations (thesis: 500)")
    step_clip: float = Field(0.1, gt=0, description="cap on the L2 norm of each step (thesis: 0.1)")
    overshoot: float = Field(0.02, ge=0, description="overshoot factor of the final perturbation")


class HighConfidenceAttack(robench.Attack):
    """Thesis ch. 4 evaluation attack: target = class of the closest (linearised) boundary, confidence
    = the clean prediction's confidence; steps of eq. 4.8 clipped to ``step_clip``, projected to the box."""

    Params = HighConfidenceParams
    kind = "minimal"
    needs = frozenset({"gradients"})
    fixed_norm = robench.Norm.L2

    def run(self, model, x, y, *, eps, ctx, source=None):
        p: HighConfidenceParams = self.params
        net = robench.ScoresModule(model)
        with torch.no_grad():
            logits = model.scores(x)
        k = logits.shape[1]
        conf, pred = logits.softmax(1).max(1)
        target = closest_boundary_target(net, x, pred, k)
        x_adv = high_confidence_attack(net, x, target, conf, steps=p.steps, overshoot=p.overshoot, step_clip=p.step_clip)
        with torch.no_grad():
            fooled = model.scores(x_adv).argmax(1) != y
        return torch.where(per_sample(fooled, x), x_adv, torch.full_like(x, float("nan")))
