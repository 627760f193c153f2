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
    fixed_norm = robench.Norm.L2

    def run(self, model, x, y, *, eps, ctx, source=None):
        return x


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec("test-fgsm", ExactLinfFgsm, "exact Linf FGSM for linear models", norms=(robench.Norm.Linf,)),
        robench.AttackSpec("test-minimal", MinimalDummy, "returns its input"),
    ]


#: one network object shared by every instance of the model below (as robench.evaluate shares the
#: caller's module): rebuilding the model reuses it, so a restore must put its weights back
SHARED_NET = torch.nn.Linear(64, 10)


class SharedNet(robench.Model):
    """Complete at construction, holding SHARED_NET (digits-sized: 64 inputs, 10 classes)."""

    trainable = False

    def __init__(self, params, info):
        super().__init__(params, info)
        self.net = SHARED_NET

    def scores(self, x):
        return self.net(x.flatten(1).to(self.device))

    def state_dict(self):
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state)


@robench.hookimpl
def robench_models():
    return [robench.ModelSpec("test-shared-net", SharedNet, "a pretrained model whose network object outlives it")]
