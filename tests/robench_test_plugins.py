"""Misbehaving plugins for tests, loaded with --plugin robench_test_plugins (never installed)."""

from __future__ import annotations

import torch
from pydantic import Field

import robench
from robench import Norm


class _MinimalL2(robench.Attack):
    kind = "minimal"
    needs = frozenset({"scores"})
    fixed_norm = Norm.L2


class OutOfBox(_MinimalL2):
    """Returns images outside [0, 1]: every one must be rejected."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        return x + 2.0


class Unchanged(_MinimalL2):
    """Claims each input is its own adversarial: 'no adversarial', never a success."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        return x.clone()


class NotAdversarialParams(robench.Params):
    shift: float = Field(1e-3, description="tiny shift that does not change the prediction")


class NotAdversarial(_MinimalL2):
    """Returns in-box images that are still correctly classified: rejected as not misclassified."""

    Params = NotAdversarialParams

    def run(self, model, x, y, *, eps, ctx, source=None):
        return (x + self.params.shift).clamp(0, 1)


class Crash(_MinimalL2):
    needs = frozenset({"gradients"})

    def run(self, model, x, y, *, eps, ctx, source=None):
        raise RuntimeError("this attack always crashes")


class CrashModel(robench.Model):
    def fit(self, x, y, ctx):
        raise RuntimeError("training this model always crashes")


#: the misbehaving attacks: three whose every output the harness must reject, one that raises
ATTACKS = (
    robench.AttackSpec("test-out-of-box", OutOfBox, "returns images outside [0, 1]"),
    robench.AttackSpec("test-unchanged", Unchanged, "returns the input unchanged"),
    robench.AttackSpec("test-not-adversarial", NotAdversarial, "returns correctly classified images"),
    robench.AttackSpec("test-crash", Crash, "raises in run()"),
)


@robench.hookimpl
def robench_attacks():
    return list(ATTACKS)


@robench.hookimpl
def robench_models():
    return [robench.ModelSpec("test-crash-model", CrashModel, "raises in fit()")]
