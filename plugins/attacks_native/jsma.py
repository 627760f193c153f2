"""Jacobian saliency map attack (JSMA, Papernot et al. 2016) in batched torch, as ART implements it.

ART's ``SaliencyMapMethod`` (the one robench's ``art-jsma`` adapter runs) is the simplified JSMA:
at every step it takes the gradient of the *target* class's score, picks the two features (channel
values) with the largest gradient (``theta > 0``; the smallest for ``theta < 0``) among those not
yet at the box edge, adds ``theta`` to both, clipped to [0, 1], and stops when the model predicts
the target, when more than ``gamma`` of the features were modified, or when no feature can move.
``art-jsma`` runs it for every target class other than the label and for theta +1 and -1
(2 (k - 1) runs per sample, as in the thesis) and keeps per sample the adversarial with the fewest
changed pixels.

This module follows the same paths, all of a batch's runs (samples x targets x thetas) together,
with three differences that only ever make the result smaller or the run shorter:

* a run stops at its first *misclassified* point (untargeted success), not at the target: the
  path up to there is ART's, and the number of changed pixels only grows along a path, so the
  first adversarial point has the fewest changed pixels of the whole path;
* a run stops as soon as it has changed as many pixels as the best adversarial already found for
  its sample (it cannot beat it any more);
* one forward pass per step gives both the stopping check and the next gradient (ART runs a
  separate prediction).

The scores are the model's raw scores (ART's ``class_gradient`` differentiates the same outputs).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, ClassVar

import torch
from pydantic import Field, field_validator

import robench
from robench import Norm
from robench.adapters import focus, unfocused
from robench.norms import changed_pixels

Scores = Callable[[torch.Tensor], torch.Tensor]


def jsma(
    scores: Scores,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    thetas: tuple[float, ...] = (1.0, -1.0),
    gamma: float = 1.0,
    batch_size: int = 256,
    report: Callable[[int, int], None] | None = None,
    focus: Callable[[torch.Tensor], contextlib.AbstractContextManager] = unfocused,
) -> tuple[torch.Tensor, torch.Tensor]:
    """JSMA over every target class and theta for a batch ``x`` (N, C, H, W) with labels ``y``.

    Returns ``(adv, steps)``: ``adv`` holds per sample the adversarial with the fewest changed
    pixels (NaN rows where no run found one; the input itself where the model already misclassifies
    it) and ``steps`` the number of forward passes made per run (for bookkeeping). ``batch_size`` is
    the number of runs evaluated in one forward/backward call. ``focus(samples)`` (robench.adapters.focus)
    names the batch sample of each row of a call, so the harness charges and tracks every run's pass
    as its own sample's.
    """
    n = len(x)
    shape = x.shape[1:]
    d = int(math.prod(shape))
    with torch.no_grad():
        k = int(scores(x[:1]).shape[1])
    dev, dt = x.device, x.dtype
    # one run per (sample, target shift, theta); target = (y + shift) % k as in the art-jsma adapter
    shifts = torch.arange(1, k, device=dev)
    th = torch.tensor(thetas, device=dev, dtype=dt)
    sample = torch.arange(n, device=dev).repeat_interleave((k - 1) * len(thetas))
    shift = shifts.repeat_interleave(len(thetas)).repeat(n)
    theta = th.repeat(n * (k - 1))
    target = (y.to(dev)[sample] + shift) % k
    label = y.to(dev)[sample]
    r = len(sample)
    x0 = x.reshape(n, d)[sample]
    batch = x0.clone()
    pos = theta > 0
    # ART's search space: features that can still move in theta's direction
    search = torch.where(pos[:, None], batch < 1, batch > 0)
    used = torch.zeros(r, d, dtype=torch.bool, device=dev)
    active = torch.ones(r, dtype=torch.bool, device=dev)
    best = torch.full((n, d), math.nan, device=dev, dtype=dt)
    best_l0 = torch.full((n,), d + 1, dtype=torch.long, device=dev)
    steps = torch.zeros(r, dtype=torch.long, device=dev)
    done_before = 0

    while bool(active.any()):
        idx = active.nonzero().flatten()
        grads = torch.empty(len(idx), d, device=dev, dtype=dt)
        adv_now = torch.zeros(len(idx), dtype=torch.bool, device=dev)
        for lo in range(0, len(idx), batch_size):
            part = idx[lo : lo + batch_size]
            xb = batch[part].view(-1, *shape).clone().requires_grad_(True)
            with torch.enable_grad(), focus(sample[part]):
                s = scores(xb)
                (g,) = torch.autograd.grad(s.gather(1, target[part, None]).sum(), xb)
            grads[lo : lo + len(part)] = g.reshape(len(part), d)
            adv_now[lo : lo + len(part)] = s.detach().argmax(1) != label[part]
        steps[idx] += 1

        # record untargeted successes: the first adversarial point of each run
        l0 = changed_pixels((batch[idx] - x0[idx]).view(-1, *shape)).sum(1)
        for j in adv_now.nonzero().flatten().tolist():
            run, i = int(idx[j]), int(sample[idx[j]])
            if l0[j] < best_l0[i]:
                best_l0[i] = l0[j]
                best[i] = batch[run]
        # ART's stopping rules (checked after each update), then: success, or no better than the best
        frac_ok = used[idx].sum(1).to(dt) / d <= gamma
        movable = search[idx].any(1)
        keep = ~adv_now & frac_ok & movable & (l0 < best_l0[sample[idx]])
        active[idx[~keep]] = False
        idx, grads = idx[keep], grads[keep]
        if len(idx):
            # saliency: the two features with the largest gradient in theta's direction
            sal = torch.where(search[idx], grads * torch.where(pos[idx], 1.0, -1.0)[:, None], -math.inf)
            feat = sal.topk(2, dim=1).indices
            rows = idx[:, None].expand_as(feat)
            new = batch[rows, feat] + theta[idx, None]
            new = torch.where(pos[idx, None], new.clamp_max(1.0), new.clamp_min(0.0))
            batch[rows, feat] = new
            used[rows, feat] = True
            edge = torch.where(pos[idx, None], new >= 1.0, new <= 0.0)
            search[rows, feat] &= ~edge
        if report is not None:
            done = r - int(active.sum())
            if done != done_before:
                report(done, r)
                done_before = done

    return best.view(n, *shape), steps


# -- the robench plugin -------------------------------------------------------------------------


class JSMAParams(robench.Params):
    thetas: tuple[float, ...] = Field(
        (1.0, -1.0), min_length=1,
        description="perturbation per modified feature; one run per theta and target class (thesis: +1 and -1)",
    )
    gamma: float = Field(1.0, gt=0, le=1, description="largest fraction of features (channel values) a run may modify")
    batch_size: int = Field(256, ge=1, description="runs (sample x target x theta) per forward/backward call")

    @field_validator("thetas")
    @classmethod
    def _nonzero(cls, v):
        if any(t == 0 for t in v):
            raise ValueError(f"thetas must be non-zero, got {v}")
        return v


class JSMA(robench.Attack):
    """JSMA (ART's simplified saliency map) over all target classes and thetas, batched; minimal L0."""

    Params = JSMAParams
    kind: ClassVar[str] = "minimal"
    needs: ClassVar[frozenset[str]] = frozenset({"gradients"})
    fixed_norm = Norm.L0

    def run(self, model, x, y, *, eps, ctx, source=None):
        if not getattr(model, "differentiable", True):
            raise ValueError(f"jsma needs gradients but model {type(model).__name__} is not differentiable")
        p = self.params
        adv, steps = jsma(
            model.scores, x.to(ctx.device), y.to(ctx.device),
            thetas=p.thetas, gamma=p.gamma, batch_size=p.batch_size, report=ctx.report,
            focus=functools.partial(focus, model),
        )
        ctx.record("steps_per_run_mean", float(steps.double().mean()) if len(steps) else 0.0)
        return adv
