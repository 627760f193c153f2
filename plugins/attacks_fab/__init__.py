"""Built-in robench plugins: ``fab``, our implementation of the Fast Adaptive Boundary attack."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import robench
from robench import Norm
from robench.adapters import keep_adversarial, run_on_correct

from .fab import fab, project_hyperplane  # noqa: F401  (public: the exact package's refine stage projects with it)

#: Restart radius by norm when eps is not given (the authors' defaults).
DEFAULT_EPS = {Norm.Linf: 0.3, Norm.L2: 1.0, Norm.L1: 5.0}


class FABParams(robench.Params):
    norm: Literal["L1", "L2", "Linf"] = Field("Linf", description="threat model")
    n_iter: int = Field(100, ge=1, description="iterations per restart")
    n_restarts: int = Field(1, ge=1, description="runs: the first from the input, the others from random points around it")
    eps: float | None = Field(None, gt=0, description="cap on the random-restart radius; None: 0.3 (Linf), 1.0 (L2), 5.0 (L1)")
    alpha_max: float = Field(0.1, ge=0, le=1, description="largest weight of the step from the original input")
    eta: float = Field(1.05, ge=1, description="overshoot of the projection onto the linearised boundary")
    beta: float = Field(0.9, gt=0, le=1, description="backward step: an adversarial iterate is pulled to x0 + beta (x - x0)")


class FAB(robench.Attack):
    """Fast Adaptive Boundary attack (Croce & Hein 2020), untargeted; minimal, needs gradients."""

    Params = FABParams
    kind = "minimal"
    needs = frozenset({"gradients"})
    randomized = True

    def run(self, model, x, y, *, eps, ctx, source=None):
        p = self.params
        restart_eps = p.eps if p.eps is not None else DEFAULT_EPS[self.norm]

        def attack(xs, ys):
            adv = fab(
                model, xs, ys, self.norm, n_iter=p.n_iter, n_restarts=p.n_restarts, eps=restart_eps,
                alpha_max=p.alpha_max, eta=p.eta, beta=p.beta, gen=ctx.generator(offset=104729), progress=ctx.report,
            )
            return keep_adversarial(model, xs, ys, adv, self.norm)

        return run_on_correct(model, x, y, attack)


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec(
            "fab", FAB, "Fast Adaptive Boundary attack (Croce & Hein 2020), norm L1/L2/Linf; minimal, gradients",
            norms=(Norm.L1, Norm.L2, Norm.Linf),
        )
    ]
