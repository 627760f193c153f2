"""Adversarial Robustness Toolbox (ART 1.20) attacks behind robench's Attack interface.

ART is imported inside ``run`` only. Every adapter:

* attacks only the samples the model classifies correctly (the others are already broken);
* wraps the model as an ART ``PyTorchClassifier`` over ``ScoresModule(model)`` (or over the
  counting :class:`Oracle` for decision-based attacks), with ``clip_values=(0, 1)``,
  ``channels_first=True`` and the number of classes read from the model's scores; ART gets numpy
  float32 NCHW arrays and one-hot labels, results come back as float32 tensors on ``ctx.device``;
* seeds ART's randomness (numpy's global generator; torch's too) from ``ctx.seed``;
* checks what ART returned (:func:`support.keep_adversarial`): rows that are not finite, in
  [0, 1] and misclassified become NaN; bounded attacks' results are also projected back onto the
  eps ball where float32 arithmetic overshoots it by a hair.

Library quirks handled here (tests in tests/test_adapters_art.py):

* ART's C&W, JSMA, HopSkipJump return the *input* where they fail: "equal to the input" is
  already "no adversarial" for robench, and keep_adversarial turns it into NaN.
* The Pixel attack rescales images to [0, 255] and back, which leaves ~1e-8 residue on every
  pixel it never touched; for L0 such changes are reset before counting.
* APGD's DLR loss needs at least 3 classes: a clear UserInputError instead of an IndexError.
* HopSkipJump loops over samples inside ART: the adapter drives it one sample at a time so the
  Oracle knows whose queries it counts, and can cap them.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field

import robench
from robench import Norm, ScoresModule
from robench.adapters import (DecisionParams, LibraryAttack, Oracle, OracleModule, QueryBudgetExhausted, keep_adversarial,
                              merge_best, oracle_budget, run_on_correct, seeded, starting_points)
from robench.errors import UserInputError
from robench.norms import per_sample

_ART_NORM = {Norm.L0: 0, Norm.L1: 1, Norm.L2: 2, Norm.Linf: np.inf}


def art_classifier(module: torch.nn.Module, x: torch.Tensor, nb_classes: int, device: torch.device):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=module.eval(),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=nb_classes,
        clip_values=(0.0, 1.0),
        channels_first=True,
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


def one_hot(y: torch.Tensor, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[y.cpu().numpy()]


def num_classes(model: robench.Model, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model.scores(x[:1]).shape[1])


def project_ball(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Pull rows whose perturbation exceeds eps (float32 round-off) back onto the ball."""
    d = x_adv - x
    if norm == Norm.Linf:
        d = d.clamp(-eps, eps)
    elif norm in (Norm.L2, Norm.L1):
        n = d.flatten(1).norm(p=2 if norm == Norm.L2 else 1, dim=1)
        scale = torch.where(n > eps, eps / n.clamp_min(1e-30), torch.ones_like(n))
        d = d * per_sample(scale, x)
    return (x + d).clamp(0, 1)


class ARTAttack(LibraryAttack):
    """Base of the ART adapters: subclasses implement :meth:`attack_subset` (numpy in, numpy out)."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        k = num_classes(model, x)
        self.check_classes(k)

        def attack(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
            with seeded(ctx.seed, ctx.device):
                raw = self.attack_subset(model, xs, ys, k, eps, ctx)
            raw = torch.as_tensor(raw).to(xs).reshape(xs.shape)
            if self.kind == "bounded":
                raw = torch.where(torch.isnan(raw), raw, project_ball(xs, raw.nan_to_num(), eps, self.norm))
            return keep_adversarial(model, xs, ys, raw, self.norm)

        return run_on_correct(model, x, y, attack, ctx, self.progress_chunk)

    def check_classes(self, k: int) -> None:
        """Refuse models this attack cannot handle (before any work)."""

    def classifier(self, model, x, k, ctx):
        return art_classifier(ScoresModule(model), x, k, ctx.device)

    def art_kwargs(self, eps: float | None) -> dict:
        """Keyword arguments of the ART attack besides the classifier: the parameters (ART's names),
        ``norm`` as ART writes it, and ``eps`` for bounded attacks."""
        kw = self.library_kwargs()
        if "norm" in type(self.params).model_fields:
            kw["norm"] = _ART_NORM[self.norm]
        if self.kind == "bounded":
            kw["eps"] = eps
        return kw

    def attack_subset(self, model, x, y, k, eps, ctx) -> np.ndarray | torch.Tensor:
        """One run of ``art.attacks.evasion.<library_class>`` over the subset (untargeted)."""
        import art.attacks.evasion

        cls = getattr(art.attacks.evasion, self.library_class_name())
        attack = cls(self.classifier(model, x, k, ctx), **self.art_kwargs(eps), verbose=False)
        return attack.generate(to_numpy(x), one_hot(y, k))


# -- Carlini & Wagner (three ART algorithms) ---------------------------------------------------


class CWL2Params(robench.Params):
    confidence: float = Field(0.0, ge=0, description="required logit margin of the adversarial")
    learning_rate: float = Field(0.01, gt=0, description="Adam learning rate")
    binary_search_steps: int = Field(10, ge=1, description="binary search steps over the constant c")
    max_iter: int = Field(10, ge=1, description="optimisation steps per constant")
    initial_const: float = Field(0.01, gt=0, description="initial trade-off constant c")
    max_halving: int = Field(5, ge=1, description="line-search halvings of the learning rate")
    max_doubling: int = Field(5, ge=1, description="line-search doublings of the learning rate")
    batch_size: int = Field(128, ge=1, description="samples optimised together (ART's default is 1; results do not depend on it)")


class ARTCWL2(ARTAttack):
    """Carlini & Wagner L2 (ART CarliniL2Method)."""

    Params = CWL2Params
    fixed_norm = Norm.L2
    library_class = "CarliniL2Method"


class CWLinfParams(robench.Params):
    confidence: float = Field(0.0, ge=0, description="required logit margin of the adversarial")
    learning_rate: float = Field(
        0.1, gt=0,
        description="Adam learning rate (ART's default 0.01 cannot move far enough in 10 steps: 0 of 16 digits broken)",
    )
    max_iter: int = Field(10, ge=1, description="optimisation steps per tau")
    decrease_factor: float = Field(0.9, gt=0, lt=1, description="factor by which the Linf bound tau shrinks")
    initial_const: float = Field(1e-5, gt=0, description="initial trade-off constant c")
    largest_const: float = Field(20.0, gt=0, description="largest constant c tried")
    const_factor: float = Field(2.0, gt=1, description="factor by which c grows")
    batch_size: int = Field(128, ge=1, description="samples optimised together (ART's default is 1)")


class ARTCWLinf(ARTAttack):
    """Carlini & Wagner Linf (ART CarliniLInfMethod)."""

    Params = CWLinfParams
    fixed_norm = Norm.Linf
    library_class = "CarliniLInfMethod"


class CWL0Params(CWL2Params):
    """C&W L2's parameters, plus how each L0 round starts."""

    warm_start: bool = Field(True, description="start each L0 round from the previous adversarial")


class ARTCWL0(ARTAttack):
    """Carlini & Wagner L0 (ART CarliniL0Method): C&W L2 rounds that freeze unimportant values."""

    Params = CWL0Params
    fixed_norm = Norm.L0
    library_class = "CarliniL0Method"


# -- HopSkipJump ------------------------------------------------------------------------------


class HSJParams(DecisionParams):
    norm: Literal["L2", "Linf"] = Field("L2", description="threat model")
    max_iter: int = Field(50, ge=1, description="iterations")
    max_eval: int = Field(10000, ge=1, description="cap on queries of one gradient estimate")
    init_eval: int = Field(100, ge=1, description="queries of the first gradient estimate")
    batch_size: int = Field(64, ge=1, description="rows per model call")


class ARTHSJ(ARTAttack):
    """HopSkipJump, L2 or Linf (ART HopSkipJump), from the same documented init as fb-hsj; decisions only."""

    Params = HSJParams
    needs = frozenset({"decisions"})
    randomized = True

    def attack_subset(self, model, x, y, k, eps, ctx):
        from art.attacks.evasion import HopSkipJump

        p = self.params
        oracle = Oracle(model, x, y, self.norm, oracle_budget(p.max_queries))
        out = torch.full_like(x, math.nan)
        try:
            starts, found = starting_points(
                oracle, ctx.generator(offset=7919), ctx.pool,
                pool_size=p.init_pool, noise_tries=p.init_noise_tries, search_steps=p.init_search_steps,
            )
            for i in found.nonzero().flatten().tolist():
                clf = art_classifier(OracleModule(oracle, sample=i), x, k, ctx.device)
                a = HopSkipJump(
                    clf, batch_size=p.batch_size, norm=2 if self.norm == Norm.L2 else np.inf,
                    max_iter=p.max_iter, max_eval=p.max_eval, init_eval=p.init_eval, verbose=False,
                )
                try:
                    res = a.generate(to_numpy(x[i : i + 1]), one_hot(y[i : i + 1], k), x_adv_init=to_numpy(starts[i : i + 1]))
                    out[i] = torch.from_numpy(res[0]).to(x)
                except QueryBudgetExhausted:
                    pass  # this sample's budget is spent: its best seen is in the oracle
                ctx.report(i + 1, len(x))
        except QueryBudgetExhausted:
            pass
        oracle.record(ctx)
        self.queries = oracle.queries.clone()
        return merge_best(x, out, oracle.best.to(x), self.norm)


# -- JSMA -------------------------------------------------------------------------------------


class JSMAParams(robench.Params):
    thetas: tuple[float, ...] = Field(
        (1.0, -1.0), min_length=1,
        description="perturbation per modified feature; one JSMA per theta and target (thesis: +1 and -1)",
    )
    gamma: float = Field(1.0, gt=0, le=1, description="largest fraction of features that may be modified")
    batch_size: int = Field(128, ge=1, description="samples attacked together")


class ARTJSMA(ARTAttack):
    """Jacobian saliency map attack (ART SaliencyMapMethod), L0: every target class and every theta,
    keeping per sample the adversarial with the fewest changed pixels (2 (k - 1) runs, as in the thesis)."""

    Params = JSMAParams
    fixed_norm = Norm.L0

    def attack_subset(self, model, x, y, k, eps, ctx):
        from art.attacks.evasion import SaliencyMapMethod

        p = self.params
        clf = self.classifier(model, x, k, ctx)
        best = torch.full_like(x, math.nan)
        runs = [(t, th) for t in range(1, k) for th in p.thetas]
        for n, (shift, theta) in enumerate(runs):
            target = (y + shift) % k  # every class other than the label, once per theta
            a = SaliencyMapMethod(clf, theta=theta, gamma=p.gamma, batch_size=p.batch_size, verbose=False)
            res = torch.from_numpy(a.generate(to_numpy(x), one_hot(target, k))).to(x)
            best = merge_best(x, best, keep_adversarial(model, x, y, res, Norm.L0), Norm.L0)
            ctx.report(n + 1, len(runs))
        return best


# -- Pixel ------------------------------------------------------------------------------------


class PixelParams(robench.Params):
    pixels: int | None = Field(1, ge=1, description="pixels changed (1: one-pixel attack); None: ART's search for the fewest (slow)")
    max_iter: int = Field(100, ge=1, description="differential-evolution generations (population 400, as in the thesis)")


class ARTPixel(ARTAttack):
    """Pixel attack (ART PixelAttack, differential evolution; Su et al. one-pixel attack by default), L0."""

    Params = PixelParams
    needs = frozenset({"scores"})
    fixed_norm = Norm.L0
    randomized = True

    library_class = "PixelAttack"
    adapter_params = frozenset({"pixels"})

    def art_kwargs(self, eps):
        return {**super().art_kwargs(eps), "th": self.params.pixels, "es": 1, "targeted": False}


# -- bounded attacks: APGD, Square, PGD ---------------------------------------------------------


class APGDParams(robench.Params):
    norm: Literal["Linf", "L2"] = Field("Linf", description="threat model")
    loss: Literal["ce", "dlr"] = Field("ce", description="cross-entropy (APGD-CE) or difference of logits ratio (APGD-DLR, >= 3 classes)")
    max_iter: int = Field(100, ge=1, description="iterations per restart")
    nb_random_init: int = Field(5, ge=1, description="random starts")
    rel_step_size: float = Field(1.0, gt=0, description="ART's eps_step as a fraction of eps (ART starts at 2 eps_step: 1.0 gives AutoAttack's 2 eps)")
    batch_size: int = Field(32, ge=1, description="samples attacked together")


class ARTAPGD(ARTAttack):
    """Auto-PGD with CE or DLR loss (ART AutoProjectedGradientDescent): a piece of AutoAttack."""

    Params = APGDParams
    kind = "bounded"
    randomized = True
    library_class = "AutoProjectedGradientDescent"
    adapter_params = frozenset({"norm", "loss", "rel_step_size"})

    def check_classes(self, k: int) -> None:
        if self.params.loss == "dlr" and k < 3:
            raise UserInputError(
                f"art-apgd with loss='dlr': the DLR loss divides by the gap between the largest and the "
                f"third-largest score, so it needs at least 3 classes; this model has {k}. "
                "Use loss='ce' for binary models."
            )

    def art_kwargs(self, eps):
        p = self.params
        return {**super().art_kwargs(eps), "eps_step": p.rel_step_size * eps, "targeted": False,
                "loss_type": "cross_entropy" if p.loss == "ce" else "difference_logits_ratio"}


class SquareParams(robench.Params):
    norm: Literal["Linf", "L2"] = Field("Linf", description="threat model")
    max_iter: int = Field(5000, ge=1, description="iterations, one query each (5000: AutoAttack's published protocol)")
    p_init: float = Field(0.8, gt=0, le=1, description="initial fraction of the image a square covers")
    nb_restarts: int = Field(1, ge=1, description="restarts")
    batch_size: int = Field(128, ge=1, description="samples attacked together")


class ARTSquare(ARTAttack):
    """Square attack (ART SquareAttack): score-based random search, a piece of AutoAttack."""

    Params = SquareParams
    kind = "bounded"
    needs = frozenset({"scores"})
    randomized = True

    library_class = "SquareAttack"


class PGDParams(robench.Params):
    norm: Literal["Linf", "L2"] = Field("Linf", description="threat model")
    max_iter: int = Field(100, ge=1, description="iterations")
    rel_step_size: float = Field(1 / 3, gt=0, description="step as a fraction of eps (ART's defaults: 0.1 at eps 0.3)")
    num_random_init: int = Field(0, ge=0, description="random starts (0: start at the input)")
    batch_size: int = Field(32, ge=1, description="samples attacked together")


class ARTPGD(ARTAttack):
    """Projected gradient descent (ART ProjectedGradientDescent): the twin of robench's `pgd`."""

    Params = PGDParams
    kind = "bounded"
    randomized = True
    library_class = "ProjectedGradientDescent"
    adapter_params = frozenset({"norm", "rel_step_size"})

    def art_kwargs(self, eps):
        return {**super().art_kwargs(eps), "eps_step": self.params.rel_step_size * eps, "targeted": False}
