"""Built-in robench plugins: our own minimal-norm attacks, PDGD (L2) and PDPGD (L0, L1, L2, Linf).

Both follow chapter 5 of Matyasko's thesis (see :mod:`.pdpgd` for the algorithm and :mod:`.prox` for
the proximal operators); docs/attacks-pdpgd.md describes the parameters and the measured defaults.
Also the L0 baselines JSMA (:mod:`.jsma`) and the pixel attack (:mod:`.pixel`), batched-torch versions
of ART's (which stay available as ``art-jsma`` / ``art-pixel``).
"""

from __future__ import annotations

import functools
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

import robench
from robench import Norm
from robench.adapters import focus

from .pdpgd import PDConfig, pd_attack
from .jsma import JSMA
from .pixel import Pixel

# Primal learning rates used when ``lr`` is not given, per norm (picked on a CIFAR-10 CNN from the
# thesis grid [0.01, 0.05, 0.1, 0.5, 1.0]; see docs/attacks-pdpgd.md).
DEFAULT_LR = {"L0": 1.0, "L1": 0.5, "L2": 0.1, "Linf": 0.1}


class _CommonParams(robench.Params):
    steps: int = Field(500, ge=1, description="iterations per run (one forward and one backward pass each)")
    lr: float | list[float] | None = Field(
        None,
        description="primal (Adam) learning rate, or a grid of them: every value gets its own runs and the "
        "smallest adversarial per sample over all of them is kept (thesis grid: [0.01, 0.05, 0.1, 0.5, 1.0]); "
        f"default per norm: {DEFAULT_LR}",
    )
    lr_final: float = Field(0.01, gt=0, le=1, description="the learning rate decays linearly to lr * lr_final")
    dual_lr: float = Field(0.1, gt=0, description="step of the gradient ascent on log(lambda)")
    dual_lr_final: float = Field(
        1.0, gt=0, le=1,
        description="the dual step decays linearly to dual_lr * dual_lr_final (1: constant, as in the thesis; "
        "adv-lib's port decays it to 0.1)",
    )
    dual_ema: float = Field(0.9, ge=0, lt=1, description="exponential moving average of the dual variables")
    lambda_init: float = Field(0.01, gt=0, description="initial weight of the norm relative to the constraint")
    restarts: int = Field(
        1, ge=1, description="runs per learning rate: the first starts at the input, the others from uniform noise"
    )
    init_range: float = Field(
        0.25, gt=0, le=1, description="half-width of the uniform noise of random restarts (thesis: 0.5 MNIST, 0.25 CIFAR-10)"
    )
    finetune_steps: int = Field(
        0, ge=0, description="iterations of one extra run that restarts from the best adversarial found (0: none)"
    )
    finetune_lr: float = Field(0.1, gt=0, le=1, description="learning rate of the finetuning run, relative to the best run's")
    refine: bool = Field(
        False,
        description="end with the shared boundary-refinement stage (as plugin refine; a separately reported variant): "
        "L0 restores changed pixels, smallest change first, while the input stays adversarial; other norms "
        "project onto the linearised boundary inside the box (FAB's projection, 10 steps); never a larger norm; its cost is "
        "recorded (refine_forward, refine_backward, refine_improved, refine_mean_ratio)",
    )

    def inert(self) -> dict[str, str]:
        out = super().inert()
        if self.restarts == 1:
            out["init_range"] = "restarts is 1, and the random start is used only from the second restart on"
        if self.finetune_steps == 0:
            out["finetune_lr"] = "finetune_steps is 0 (no finetuning run)"
        return out

    @field_validator("lr")
    @classmethod
    def _positive_lrs(cls, v):
        values = v if isinstance(v, list) else [v] if v is not None else []
        if isinstance(v, list) and not v:
            raise ValueError("lr grid is empty")
        if any(x <= 0 for x in values):
            raise ValueError(f"learning rates must be > 0, got {v}")
        return v


class PDPGDParams(_CommonParams):
    norm: Literal["L0", "L1", "L2", "Linf"] = Field("L0", description="norm to minimise (L0 counts changed pixels)")
    grouped: bool = Field(
        True, description="L0 only: grouped hard threshold that counts a pixel once whatever its channels do"
    )
    precondition: bool = Field(True, description="apply the prox in Adam's second-moment metric")
    metric_floor: float = Field(
        0.0, ge=0, le=1,
        description="floor Adam's metric at this fraction of its per-sample maximum before the prox, so no "
        "coordinate's threshold exceeds 1/floor times the smallest (0: the exact metric; 0.2 is close to "
        "adv-lib's 5 proximal sub-iterations)",
    )


class PDGDParams(_CommonParams):
    pass


class _PDBase(robench.Attack):
    kind: ClassVar[str] = "minimal"
    needs: ClassVar[frozenset[str]] = frozenset({"gradients"})
    randomized: ClassVar[bool] = True  # random restarts (seeded from ctx.seed)
    smooth: ClassVar[bool]

    def __init__(self, params):
        super().__init__(params)
        self._refine_cost = None  # refine: true: the refinement's passes and time, summed over the cell's batches

    def config(self) -> PDConfig:
        p = self.params
        norm = str(self.norm)
        lrs = p.lr if isinstance(p.lr, list) else [p.lr if p.lr is not None else DEFAULT_LR[norm]]
        return PDConfig(
            norm=norm,
            smooth=self.smooth,
            steps=p.steps,
            lrs=tuple(float(v) for v in lrs),
            lr_final=p.lr_final,
            dual_lr=p.dual_lr,
            dual_lr_final=p.dual_lr_final,
            dual_ema=p.dual_ema,
            lambda_init=p.lambda_init,
            restarts=p.restarts,
            init_range=p.init_range,
            grouped=getattr(p, "grouped", True),
            precondition=getattr(p, "precondition", True),
            metric_floor=getattr(p, "metric_floor", 0.0),
            finetune_steps=p.finetune_steps,
            finetune_lr=p.finetune_lr,
            refine=p.refine,
        )

    def run(self, model, x, y, *, eps, ctx, source=None):
        if not getattr(model, "differentiable", True):
            raise ValueError(
                f"{type(self).__name__} needs gradients but model {type(model).__name__} is not differentiable"
            )
        x = x.to(ctx.device)
        y = y.to(ctx.device)
        if self.params.refine and self._refine_cost is None:
            from robench_plugins.exact import RefineCost

            self._refine_cost = RefineCost()
        cost = self._refine_cost if self.params.refine else None
        adv, _ = pd_attack(model.scores, x, y, self.config(), ctx.generator(offset=7), ctx.report, refine_cost=cost,
                           focus=functools.partial(focus, model))
        if cost is not None:
            cost.record(ctx)
        return adv


class PDPGD(_PDBase):
    """Primal-dual proximal gradient descent (L0 per pixel, L1, L2, Linf)."""

    Params = PDPGDParams
    smooth = False


class PDGD(_PDBase):
    """Primal-dual gradient descent (L2): Adam on the whole Lagrangian."""

    Params = PDGDParams
    smooth = True
    fixed_norm = Norm.L2


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec(
            "pdpgd",
            PDPGD,
            "Primal-dual proximal gradient descent, minimal L0 (pixels) / L1 / L2 / Linf (Matyasko thesis ch. 5)",
            norms=(Norm.L0, Norm.L1, Norm.L2, Norm.Linf),
        ),
        robench.AttackSpec(
            "pdgd",
            PDGD,
            "Primal-dual gradient descent, minimal L2 (Matyasko thesis ch. 5)",
            norms=(Norm.L2,),
        ),
        robench.AttackSpec(
            "jsma",
            JSMA,
            "Jacobian saliency map attack (ART's variant, batched torch) over all targets and theta +-1, "
            "smallest kept; minimal L0, gradients",
            norms=(Norm.L0,),
        ),
        robench.AttackSpec(
            "pixel",
            Pixel,
            "One-pixel / pixel attack by differential evolution (ART's DE, batched torch); minimal L0, scores only",
            norms=(Norm.L0,),
        ),
    ]
