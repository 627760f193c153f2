"""Native FGSM and PGD (bounded, white-box) for any differentiable robench Model."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

import robench
from robench.norms import per_sample


def loss_grad(model: robench.Model, x: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the per-sample attack loss w.r.t. x, and whether each sample is misclassified."""
    x = x.detach().requires_grad_(True)
    scores = model.scores(x)
    if loss == "ce":
        value = F.cross_entropy(scores, y, reduction="sum")
    else:  # margin: best other score minus the true score (what a successful attack makes positive)
        true = scores.gather(1, y[:, None]).squeeze(1)
        other = scores.masked_fill(F.one_hot(y, scores.shape[1]).bool(), float("-inf")).amax(1)
        value = (other - true).sum()
    (grad,) = torch.autograd.grad(value, x)
    return grad, (scores.detach().argmax(1) != y)


def steepest_step(grad: torch.Tensor, norm: robench.Norm) -> torch.Tensor:
    """Unit-norm ascent direction for the threat model."""
    if norm == robench.Norm.Linf:
        return grad.sign()
    flat = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / per_sample(flat, grad)


def project(delta: torch.Tensor, eps: float, norm: robench.Norm) -> torch.Tensor:
    if norm == robench.Norm.Linf:
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1)
    factor = torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
    return delta * per_sample(factor, delta)


def random_init(x: torch.Tensor, eps: float, norm: robench.Norm) -> torch.Tensor:
    """Uniform in the Linf ball, or uniform in the L2 ball (direction Gaussian, radius eps * u^(1/d))."""
    if norm == robench.Norm.Linf:
        return (torch.rand_like(x) * 2 - 1) * eps
    d = torch.randn_like(x)
    d = d / per_sample(d.flatten(1).norm(dim=1).clamp_min(1e-12), d)
    r = torch.rand(len(x), device=x.device) ** (1.0 / x[0].numel())
    return d * per_sample(r * eps, d)


class FGSMParams(robench.Params):
    norm: Literal["Linf", "L2"] = Field("Linf", description="Linf: x + eps * sign(grad); L2: x + eps * grad / ||grad||")
    keep_failed: bool = Field(False, description="return the step also where it does not fool the model (the papers' transfer protocol)")


class FGSM(robench.Attack):
    Params = FGSMParams
    kind = "bounded"
    needs = frozenset({"gradients"})

    def run(self, model, x, y, *, eps, ctx, source=None):
        grad, _ = loss_grad(model, x, y, "ce")
        adv = (x + eps * steepest_step(grad, self.norm)).clamp(0, 1).detach()
        if self.params.keep_failed:
            return adv
        with torch.no_grad():
            fooled = model.predict(adv) != y
        # Only claim what fools the model: a non-adversarial step is "not found", not a rejection.
        return torch.where(per_sample(fooled, adv), adv, torch.full_like(adv, float("nan")))


class PGDParams(robench.Params):
    norm: Literal["Linf", "L2"] = Field("Linf", description="threat model")
    steps: int = Field(40, ge=1, description="gradient steps per restart")
    rel_step_size: float = Field(2.5 / 40, gt=0, description="step size as a fraction of eps (Madry: 2.5 * eps / steps)")
    random_start: bool = Field(True, description="start from a uniform point in the eps ball")
    restarts: int = Field(1, ge=1, description="independent random starts; any success counts")
    loss: Literal["ce", "margin"] = Field("ce", description="cross-entropy, or the logit margin (C&W-style)")


class PGD(robench.Attack):
    """Madry et al. PGD; keeps, per sample, the first iterate that is misclassified inside the ball."""

    Params = PGDParams
    kind = "bounded"
    needs = frozenset({"gradients"})
    randomized = True

    def run(self, model, x, y, *, eps, ctx, source=None):
        p = self.params
        alpha = p.rel_step_size * eps
        found = torch.full_like(x, float("nan"))
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(p.restarts):
            active = ~done
            if not active.any():
                break
            xa, ya = x[active], y[active]
            delta = random_init(xa, eps, self.norm) if p.random_start else torch.zeros_like(xa)
            delta = ((xa + delta).clamp(0, 1) - xa)
            best = torch.full_like(xa, float("nan"))
            hit = torch.zeros(len(xa), dtype=torch.bool, device=x.device)
            for _ in range(p.steps):
                grad, wrong = loss_grad(model, xa + delta, ya, p.loss)
                newly = wrong & ~hit
                best[newly] = (xa + delta)[newly].detach()
                hit |= wrong
                if hit.all():
                    break
                delta = project(delta + alpha * steepest_step(grad, self.norm), eps, self.norm)
                delta = ((xa + delta).clamp(0, 1) - xa).detach()
            with torch.no_grad():
                wrong = model.predict(xa + delta) != ya
            newly = wrong & ~hit
            best[newly] = (xa + delta)[newly]
            hit |= wrong
            idx = torch.nonzero(active).flatten()
            found[idx[hit]] = best[hit]
            done[idx[hit]] = True
        return found
