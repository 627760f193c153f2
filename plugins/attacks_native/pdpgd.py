"""Primal-dual (proximal) gradient descent attacks, PDGD and PDPGD (Matyasko's thesis, chapter 5).

The attack minimises ``||r||`` subject to ``x + r`` being misclassified, through the proxy
Lagrangian of the thesis (eq. 5.3, 5.8): the r-player minimises ``lambda ||r|| + softplus(m(x + r))``
with the margin ``m = f_y - max_{j != y} f_j`` (positive while x + r is still classified as y); the
lambda-player raises the weight of the constraint while the input is still correctly classified and
lowers it once it is adversarial (gradient ascent on the log of the weights, which is a
multiplicative update, smoothed by an exponential moving average).

* PDGD (L2): Adam on the whole Lagrangian (the L2 norm is differentiable away from 0).
* PDPGD (L0, L1, L2, Linf): Adam on the constraint term only, then the proximal operator of
  ``t * lambda * ||.||`` in Adam's metric (see :mod:`.prox`), then the [0, 1] box.

The primal learning rate decays linearly to ``lr_final`` times its start; every iterate is
checked and the smallest adversarial per sample (in the attack's norm; L0 counted in pixels, as the
harness does) is kept over iterations, restarts, the learning-rate grid and the finetuning runs.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from robench.adapters import unfocused
from robench.norms import lp_norm, per_sample

from .prox import prox, prox_l0

ScoresFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PDConfig:
    norm: str  # "L0" | "L1" | "L2" | "Linf"
    smooth: bool  # True: PDGD (norm in the gradient); False: PDPGD (norm through its prox)
    steps: int = 500
    lrs: tuple[float, ...] = (0.1,)
    lr_final: float = 0.01
    dual_lr: float = 0.1
    dual_lr_final: float = 1.0  # the dual step decays linearly to dual_lr * dual_lr_final (1: constant)
    dual_ema: float = 0.9
    lambda_init: float = 0.01
    lambda_bound: float = 1e6  # lambda is kept in [1 / bound, bound]
    restarts: int = 1
    init_range: float = 0.25
    grouped: bool = True
    precondition: bool = True
    metric_floor: float = 0.0  # Adam's metric is floored at this fraction of its per-sample maximum
    finetune_steps: int = 0
    finetune_lr: float = 0.1
    refine: bool = False
    refine_steps: int = 10  # linearise-and-project steps of the refinement (L1 / L2 / Linf)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8


def margin_and_adv(scores: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Margin ``f_y - max_{j != y} f_j`` and the harness' own test of success (argmax != y)."""
    true = scores.gather(1, y[:, None]).squeeze(1)
    other = scores.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other, scores.argmax(1) != y


class _Best:
    """The smallest adversarial found so far per sample (and the lambda and lr it was found at)."""

    def __init__(self, x: torch.Tensor, norm: str):
        n = len(x)
        self.norm = norm
        self.adv = x.clone()
        self.value = torch.full((n,), math.inf, device=x.device)
        self.tie = torch.full((n,), math.inf, device=x.device)  # L2, to break L0 ties
        self.lam = torch.full((n,), math.nan, device=x.device)
        self.lr = torch.full((n,), math.nan, device=x.device)

    @property
    def found(self) -> torch.Tensor:
        return torch.isfinite(self.value)

    def update(self, x: torch.Tensor, xa: torch.Tensor, adv: torch.Tensor, lam: torch.Tensor, lr: float) -> None:
        delta = xa - x
        value = lp_norm(delta, self.norm)
        tie = delta.flatten(1).norm(dim=1)
        better = adv & ((value < self.value) | ((value == self.value) & (tie < self.tie)))
        if not bool(better.any()):
            return
        self.adv[better] = xa[better]
        self.value[better] = value[better]
        self.tie[better] = tie[better]
        self.lam[better] = lam[better]
        self.lr[better] = lr


def _linear_decay(start: float, final_fraction: float, k: int, steps: int) -> float:
    """Step ``k`` of ``steps`` on a line from ``start`` down to ``start * final_fraction``."""
    return start * (1 - (1 - final_fraction) * k / max(steps - 1, 1))


def _run(
    f: ScoresFn,
    x: torch.Tensor,
    y: torch.Tensor,
    r0: torch.Tensor,
    lr: float,
    lam0: torch.Tensor,
    steps: int,
    cfg: PDConfig,
    best: _Best,
    tick: Callable[[], None],
) -> None:
    """One primal-dual run of ``steps`` iterations from perturbation ``r0`` and ratio ``lam0``."""
    lo, hi = -x, 1 - x
    r = torch.max(torch.min(r0, hi), lo)
    exp_avg = torch.zeros_like(x)
    exp_avg_sq = torch.zeros_like(x)
    b1, b2 = cfg.adam_betas
    log_bound = math.log(cfg.lambda_bound)
    # lambda = lambda_norm / lambda_constraint as a point of the 2-simplex: weights sigmoid(+-rho)
    rho = lam0.log().clamp(-log_bound, log_bound)
    w_norm, w_cons = torch.sigmoid(rho), torch.sigmoid(-rho)

    for k in range(steps + 1):
        last = k == steps
        r.requires_grad_(not last)
        xa = x + r
        with torch.set_grad_enabled(not last):
            scores = f(xa)
            m, adv = margin_and_adv(scores, y)
        lam = w_norm / w_cons
        best.update(x, xa.detach(), adv.detach(), lam, lr)
        if last:
            break
        cons = F.softplus(m)
        if cfg.smooth:  # PDGD: the L2 norm goes through the gradient
            loss = w_norm * r.flatten(1).norm(dim=1) + w_cons * cons
        else:
            loss = cons
        (g,) = torch.autograd.grad(loss.sum(), r)
        r = r.detach()
        # Adam on the primal variable, linearly decaying step size
        exp_avg.mul_(b1).add_(g, alpha=1 - b1)
        exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        bc1, bc2 = 1 - b1 ** (k + 1), 1 - b2 ** (k + 1)
        d = (exp_avg_sq / bc2).sqrt_().add_(cfg.adam_eps)
        t = _linear_decay(lr, cfg.lr_final, k, steps)
        z = r - t * (exp_avg / bc1) / d
        if cfg.smooth:
            r = torch.max(torch.min(z, hi), lo)
        else:
            tau = t * lam
            w = d if cfg.precondition else None
            if w is not None and cfg.metric_floor > 0:
                # bounds each coordinate's threshold at 1/floor times the smallest one
                # bounds each coordinate's threshold at 1/floor times the smallest one
                w = torch.maximum(w, cfg.metric_floor * per_sample(w.flatten(1).amax(1), w))
            if cfg.norm == "L0":
                r = prox_l0(z, tau, w, grouped=cfg.grouped and x.dim() >= 3, lo=lo, hi=hi)
            else:
                r = torch.max(torch.min(prox(cfg.norm, z, tau, w), hi), lo)
        # dual ascent in the log domain: more weight on the norm once adversarial, less before
        dual_step = _linear_decay(cfg.dual_lr, cfg.dual_lr_final, k, steps)
        rho = (rho + dual_step * torch.where(adv, 1.0, -1.0)).clamp(-log_bound, log_bound)
        w_norm = cfg.dual_ema * w_norm + (1 - cfg.dual_ema) * torch.sigmoid(rho)
        w_cons = cfg.dual_ema * w_cons + (1 - cfg.dual_ema) * torch.sigmoid(-rho)
        tick()


def _refine(f: ScoresFn, x: torch.Tensor, y: torch.Tensor, best: _Best, cfg: PDConfig, cost, n_attacked: int) -> None:
    """The ``refine`` variant: the best adversarials through the shared boundary-refinement stage
    (robench_plugins.exact.refine, exported by that package; the one the ``refine`` wrapper plugin runs): L1 / L2 / Linf
    linearise the classifier and project onto its boundary inside the box (FAB's projection),
    ``cfg.refine_steps`` times; L0 reverts changed pixels greedily, smallest change first, while
    the input stays adversarial. A row is replaced only by an adversarial of no larger norm.
    ``cost`` (a RefineCost, or None) accumulates what it did and the passes it took."""
    from robench import Norm
    from robench_plugins.exact import refine

    norm = Norm(best.norm)
    found = best.found
    adv = torch.where(per_sample(found, best.adv), best.adv, torch.full_like(best.adv, math.nan))
    out, count = refine(f, x, y, adv, norm, cfg.refine_steps)
    if cost is not None:
        cost.add(x, adv, out, norm, count, n=n_attacked)
    if not bool(found.any()):
        return
    refined = torch.where(per_sample(found, out), out, x)  # rows without an adversarial: the input
    with torch.no_grad():
        _, ok = margin_and_adv(f(refined), y)
    value = lp_norm(refined - x, best.norm)
    better = found & ok & (value <= best.value)
    best.adv[better] = out[better]
    best.value[better] = value[better]


def pd_attack(
    f: ScoresFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: PDConfig,
    gen: torch.Generator,
    progress: Callable[[int, int], None] | None = None,
    refine_cost=None,
    focus: Callable[[torch.Tensor], contextlib.AbstractContextManager] = unfocused,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run PDGD/PDPGD on a batch; returns (adversarials, their norms). With ``cfg.refine``,
    ``refine_cost`` (a robench_plugins.exact.refine.RefineCost) accumulates the refinement's cost.
    ``focus(rows)`` (robench.adapters.focus) tells the harness which batch samples the calls on a
    subset are for, so that its budgets and best-so-far tracking see them per sample.

    Samples the model already misclassifies are returned unchanged with norm 0 (no optimisation).
    Rows without an adversarial are returned equal to the input with norm inf.
    """
    if cfg.norm not in ("L0", "L1", "L2", "Linf"):
        raise ValueError(f"PDPGD: unknown norm {cfg.norm!r}; expected L0, L1, L2 or Linf")
    if cfg.smooth and cfg.norm != "L2":
        raise ValueError(f"PDGD minimises the L2 norm only (got {cfg.norm}); use PDPGD for other norms")
    x = x.detach()
    with torch.no_grad():
        _, wrong = margin_and_adv(f(x), y)
    out = x.clone()
    norms = torch.where(wrong, 0.0, math.inf).to(x.device)
    todo = (~wrong).nonzero().squeeze(1)
    if len(todo) == 0:
        if cfg.refine and refine_cost is not None:
            refine_cost.seen += len(x)
        return out, norms
    xs, ys = x[todo], y[todo]
    best = _Best(xs, cfg.norm)
    total = len(cfg.lrs) * cfg.restarts * cfg.steps + cfg.finetune_steps
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None and (done[0] % 10 == 0 or done[0] == total):
            progress(done[0], total)

    with focus(todo):  # the optimisation's calls are for the correctly classified samples
        lam0 = torch.full((len(xs),), cfg.lambda_init, device=x.device)
        for lr in cfg.lrs:
            for restart in range(cfg.restarts):
                if restart == 0:
                    r0 = torch.zeros_like(xs)
                else:  # uniform noise in [-init_range, init_range] (thesis: 0.5 MNIST, 0.25 CIFAR-10)
                    noise = torch.rand(xs.shape, generator=gen, dtype=xs.dtype)
                    r0 = ((2 * noise - 1) * cfg.init_range).to(xs.device)
                _run(f, xs, ys, r0, lr, lam0, cfg.steps, cfg, best, tick)

        if cfg.finetune_steps > 0:
            found = best.found.nonzero().squeeze(1)
            if len(found) > 0:
                sub = _Best(xs[found], cfg.norm)
                sub.adv, sub.value, sub.tie = best.adv[found].clone(), best.value[found].clone(), best.tie[found].clone()
                sub.lam, sub.lr = best.lam[found].clone(), best.lr[found].clone()
                # restart from the best adversarial, at the lambda it was found with and a smaller step
                lr = float(sub.lr.median()) * cfg.finetune_lr
                with focus(todo[found]):
                    _run(f, xs[found], ys[found], sub.adv - xs[found], lr, sub.lam.clamp_min(1e-12), cfg.finetune_steps, cfg, sub, tick)
                best.adv[found], best.value[found], best.tie[found] = sub.adv, sub.value, sub.tie
            else:
                for _ in range(cfg.finetune_steps):
                    tick()

        if cfg.refine:
            _refine(f, xs, ys, best, cfg, refine_cost, len(x))

    out[todo] = best.adv
    norms[todo] = best.value
    return out, norms
