"""A minimal attack for the budget-curve tests (tests/test_budget_report.py), loaded with --plugin budget_plugins."""

from __future__ import annotations

import torch
from pydantic import Field

import robench
from robench import Norm


class WalkParams(robench.Params):
    steps: int = Field(40, ge=1, le=1000, description="queries per sample")


class Walk(robench.Attack):
    """Minimal L2: walks each sample along one random direction, one query per step, returns the first
    adversarial it saw (so best-so-far and the returned result agree)."""

    Params = WalkParams
    kind = "minimal"
    randomized = True
    needs = frozenset({"scores"})
    fixed_norm = Norm.L2

    def run(self, model, x, y, *, eps, ctx, source=None):
        d = torch.randn_like(x)
        d = d / d.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        out = torch.full_like(x, float("nan"))
        found = torch.zeros(len(x), dtype=torch.bool)
        for k in range(1, self.params.steps + 1):
            cand = (x + 0.25 * k * d).clamp(0, 1)
            with torch.no_grad():
                hit = (model.scores(cand).argmax(1) != y) & ~found
            out[hit] = cand[hit]
            found |= hit
        return out


@robench.hookimpl
def robench_attacks():
    return [robench.AttackSpec("budget-walk", Walk, "random-direction walk (tests)", norms=(Norm.L2,))]
