"""Honest test attacks that wrapper plugins (transfer) wrap, loaded with --plugin wrapped_plugins."""

from __future__ import annotations

import torch

import robench


class ExactLinfFgsm(robench.Attack):
    """FGSM on the margin of the true class (exact for a linear model): a known white-box attack."""

    class Params(robench.Params):
        norm: str = "Linf"
        scale: float = 1.0

    kind = "bounded"
    needs = frozenset({"gradients"})

    def run(self, model, x, y, *, eps, ctx, source=None):
        xg = x.clone().requires_grad_(True)
        s = model.scores(xg)
        true = s.gather(1, y[:, None]).sum()
        (g,) = torch.autograd.grad(true, xg)
        return (x - self.params.scale * eps * g.sign()).clamp(0, 1)


class MinimalDummy(robench.Attack):
    kind = "minimal"
    needs = frozenset({"gradients"})

    def __init__(self, params):
        super().__init__(params)
        self.norm = robench.Norm.L2

    def run(self, model, x, y, *, eps, ctx, source=None):
        return x


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec("test-fgsm", ExactLinfFgsm, "exact Linf FGSM for linear models", norms=(robench.Norm.Linf,)),
        robench.AttackSpec("test-minimal", MinimalDummy, "returns its input"),
    ]
