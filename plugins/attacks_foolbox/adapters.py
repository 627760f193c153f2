"""foolbox 3.3.4 attacks behind robench's Attack interface.

foolbox is imported inside ``run`` only, so listing plugins stays fast. Every adapter:

* attacks only the samples the model classifies correctly (the others are already broken);
* hands foolbox the model as ``fb.PyTorchModel(ScoresModule(model), bounds=(0, 1))`` on
  ``ctx.device`` (torch tensors, NCHW, float32), so the harness's counting wrapper sees every pass;
* seeds foolbox's randomness (torch's global generator) from ``ctx.seed``;
* checks what foolbox returned (:func:`support.keep_adversarial`): rows that are not finite, in
  [0, 1] and misclassified become NaN, i.e. "no adversarial".

Library quirks handled here (each has a test in tests/test_adapters_foolbox.py):

* C&W and EAD start their best-adversarial buffer at ``zeros_like(x)`` and return it unchanged
  for samples where no step ever succeeded: an all-black image, which a model may well
  misclassify. Such rows are failures and become NaN before any check.
* Brendel-Bethge, HopSkipJump and Boundary must start from an adversarial and raise when their
  init fails for any sample of the batch; they get starting points from the documented
  :func:`support.starting_points` and run only on the samples that have one.
* HopSkipJump and Boundary query in lock-step (one row per sample per call), which lets the
  :class:`support.Oracle` count queries per sample, cap them (``max_queries``) and keep the best
  adversarial seen when the cap stops the attack.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

import robench
from robench import Norm, ScoresModule
from robench.adapters import (DecisionParams, LibraryAttack, Oracle, OracleModule, QueryBudgetExhausted, StartingPointParams,
                              keep_adversarial, merge_best, oracle_budget, run_on_correct, seeded, starting_points)
from robench.norms import per_sample


def _fmodel(fb, module: torch.nn.Module, device: torch.device):
    return fb.PyTorchModel(module.eval(), bounds=(0.0, 1.0), device=device)


class FoolboxAttack(LibraryAttack):
    """Base of the foolbox adapters: :meth:`make` builds ``fb.attacks.<library_class>`` from the
    parameters (foolbox's names)."""

    def make(self, fb) -> Any:
        return getattr(fb.attacks, self.library_class_name())(**self.library_kwargs())

    def run(self, model, x, y, *, eps, ctx, source=None):
        import foolbox as fb

        def attack(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
            with seeded(ctx.seed, ctx.device):
                raw = self.attack_subset(fb, model, xs, ys, ctx)
            return keep_adversarial(model, xs, ys, raw, self.norm)

        return run_on_correct(model, x, y, attack, ctx, self.progress_chunk)

    #: the library returns an all-zero image where it found nothing (C&W, EAD): make it NaN.
    zero_image_is_failure: ClassVar[bool] = False

    def attack_subset(self, fb, model, x, y, ctx) -> torch.Tensor:
        fmodel = _fmodel(fb, ScoresModule(model), ctx.device)
        raw = self.make(fb).run(fmodel, x, fb.criteria.Misclassification(y))
        return _zero_image_failures(raw, x) if self.zero_image_is_failure else raw


def _zero_image_failures(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """foolbox C&W / EAD return zeros_like(x) where they never found an adversarial: make it NaN.

    A real C&W / EAD adversarial is exactly all-zero only if the input is; so an all-zero row for
    a non-zero input is the failure sentinel, never a success.
    """
    zero = (raw.flatten(1) == 0).all(1) & (x.flatten(1) != 0).any(1)
    return torch.where(per_sample(zero, x), torch.full_like(raw, math.nan), raw)


# -- C&W L2 -----------------------------------------------------------------------------------


class CWCommonParams(robench.Params):
    """What C&W L2 and EAD share: the search over the trade-off constant and the stopping rule."""

    binary_search_steps: int = Field(9, ge=1, description="binary search steps over the trade-off constant c")
    confidence: float = Field(0.0, ge=0, description="required logit margin of the adversarial")
    initial_const: float = Field(1e-3, gt=0, description="initial trade-off constant c")
    abort_early: bool = Field(True, description="stop a constant's optimisation when the loss stalls")


class CWL2Params(CWCommonParams):
    steps: int = Field(
        1000, ge=1, description="optimisation steps per constant (foolbox: 10000; 1000 reach the same L2 at a third of the time, "
        "docs/attacks-library.md)")
    stepsize: float = Field(1e-2, gt=0, description="Adam step size")


class FoolboxCWL2(FoolboxAttack):
    """Carlini & Wagner L2 (foolbox L2CarliniWagnerAttack); the all-zero failure image becomes NaN."""

    Params = CWL2Params
    fixed_norm = Norm.L2
    library_class = "L2CarliniWagnerAttack"
    zero_image_is_failure = True


# -- EAD --------------------------------------------------------------------------------------


class EADParams(CWCommonParams):
    steps: int = Field(1000, ge=1, description="FISTA steps per constant (foolbox: 10000; no gain from more, docs/attacks-library.md)")
    initial_stepsize: float = Field(1e-2, gt=0, description="initial FISTA step size (decays polynomially)")
    regularization: float = Field(1e-2, ge=0, description="L1 weight beta of the elastic-net penalty")
    decision_rule: Literal["EN", "L1"] = Field(
        "L1", description="keep the best adversarial by elastic-net or by L1 distance (foolbox: EN; L1 finds smaller L1 "
        "adversarials, docs/attacks-library.md)")


class FoolboxEAD(FoolboxAttack):
    """Elastic-net attack (foolbox EADAttack, L1); the all-zero failure image becomes NaN."""

    Params = EADParams
    fixed_norm = Norm.L1
    library_class = "EADAttack"
    zero_image_is_failure = True


# -- DDN --------------------------------------------------------------------------------------


class DDNParams(robench.Params):
    init_epsilon: float = Field(1.0, gt=0, description="initial L2 radius")
    steps: int = Field(100, ge=1, description="iterations")
    gamma: float = Field(0.05, gt=0, lt=1, description="factor by which the radius grows or shrinks each step")


class FoolboxDDN(FoolboxAttack):
    """Decoupled Direction and Norm (foolbox DDNAttack, L2)."""

    Params = DDNParams
    fixed_norm = Norm.L2
    library_class = "DDNAttack"


# -- DeepFool ---------------------------------------------------------------------------------


class DeepFoolParams(robench.Params):
    norm: Literal["L2", "Linf"] = Field("L2", description="threat model")
    steps: int = Field(50, ge=1, description="maximum iterations")
    candidates: int | None = Field(10, ge=2, description="classes considered (the top ones by score); None: all")
    overshoot: float = Field(0.02, ge=0, description="relative overshoot past the linearised boundary")
    loss: Literal["logits", "crossentropy"] = Field("logits", description="function whose linearisation is followed")


class FoolboxDeepFool(FoolboxAttack):
    """DeepFool, L2 or Linf (foolbox L2DeepFoolAttack / LinfDeepFoolAttack)."""

    Params = DeepFoolParams
    library_class = {Norm.L2: "L2DeepFoolAttack", Norm.Linf: "LinfDeepFoolAttack"}


# -- FMN --------------------------------------------------------------------------------------


class FMNParams(robench.Params):
    norm: Literal["L0", "L1", "L2", "Linf"] = Field("L2", description="threat model (foolbox's L0 counts values, = pixels on grey images)")
    steps: int = Field(100, ge=1, description="iterations")
    max_stepsize: float = Field(1.0, gt=0, description="initial step size (cosine-annealed)")
    min_stepsize: float | None = Field(None, gt=0, description="final step size; None: max_stepsize / 100")
    gamma: float = Field(0.05, gt=0, lt=1, description="initial rate of change of the norm budget")
    binary_search_steps: int = Field(10, ge=1, description="boundary search steps (used only with a starting point)")


class FoolboxFMN(FoolboxAttack):
    """Fast Minimum-Norm attack, L0/L1/L2/Linf (foolbox *FMNAttack); starts from the input, as foolbox does."""

    Params = FMNParams
    library_class = {Norm.L0: "L0FMNAttack", Norm.L1: "L1FMNAttack", Norm.L2: "L2FMNAttack", Norm.Linf: "LInfFMNAttack"}


# -- attacks that need a starting adversarial -------------------------------------------------


class RestartParams(DecisionParams):
    restarts: int = Field(1, ge=1, le=1000, description="independent runs (each its own seed and starting points, max_queries each); "
                                                       "per sample the smallest adversarial is kept (the network paper: 10)")


class StartedFoolboxAttack(FoolboxAttack):
    """An attack that needs starting adversarials; decision-based ones also count and cap queries."""

    #: query the model through the capped, counting Oracle (decision-based attacks).
    through_oracle: ClassVar[bool] = False
    adapter_params = frozenset({"norm", *RestartParams.model_fields})

    def attack_subset(self, fb, model, x, y, ctx):
        p = self.params
        oracle = Oracle(model, x, y, self.norm, oracle_budget(getattr(p, "max_queries", None)))
        out = torch.full_like(x, math.nan)
        try:
            starts, found = starting_points(
                oracle, ctx.generator(offset=7919), ctx.pool,
                pool_size=p.init_pool, noise_tries=p.init_noise_tries, search_steps=p.init_search_steps,
            )
            f = found.to(x.device)
            if f.any():
                sub = oracle.subset(found)
                module = OracleModule(sub) if self.through_oracle else ScoresModule(model)
                try:
                    raw = self.make(fb).run(
                        _fmodel(fb, module, ctx.device), x[f], fb.criteria.Misclassification(y[f]),
                        starting_points=starts[f],
                    )
                except QueryBudgetExhausted:
                    raw = sub.best
                oracle.absorb(sub, found)
                out[f] = raw
        except QueryBudgetExhausted:
            pass  # the init alone used the whole budget: the best seen so far is all there is
        if self.through_oracle:
            oracle.record(ctx)
            self.queries = oracle.queries.clone()
        # a library result can only be improved by the best adversarial the oracle saw
        return merge_best(x, out, oracle.best.to(x), self.norm)


class BBParams(StartingPointParams):
    norm: Literal["L0", "L1", "L2", "Linf"] = Field("L2", description="threat model (foolbox's L0 counts values, = pixels on grey images)")
    steps: int = Field(1000, ge=1, description="optimisation steps")
    lr: float = Field(1e-3, gt=0, description="trust-region radius (learning rate)")
    lr_decay: float = Field(0.5, gt=0, le=1, description="factor applied to lr at each decay")
    lr_num_decay: int = Field(20, ge=1, description="number of lr decays over the steps")
    momentum: float = Field(0.8, ge=0, lt=1, description="momentum of the boundary-direction estimate")
    overshoot: float = Field(1.1, ge=1, description="overshoot of the boundary step")
    binary_search_steps: int = Field(10, ge=1, description="boundary search steps from the starting point")


class FoolboxBB(StartedFoolboxAttack):
    """Brendel & Bethge, L0/L1/L2/Linf (foolbox *BrendelBethgeAttack), from the documented init."""

    Params = BBParams
    library_class = {Norm.L0: "L0BrendelBethgeAttack", Norm.L1: "L1BrendelBethgeAttack",
                     Norm.L2: "L2BrendelBethgeAttack", Norm.Linf: "LinfinityBrendelBethgeAttack"}


class HSJParams(RestartParams):
    norm: Literal["L2", "Linf"] = Field("L2", description="threat model")
    steps: int = Field(64, ge=1, description="iterations (gradient estimate, step, boundary search)")
    initial_gradient_eval_steps: int = Field(100, ge=1, description="queries of the first gradient estimate")
    max_gradient_eval_steps: int = Field(10000, ge=1, description="cap on queries of one gradient estimate")
    stepsize_search: Literal["geometric_progression", "grid_search"] = Field("geometric_progression", description="step-size search")
    gamma: float = Field(1.0, gt=0, description="boundary-search threshold factor")


class DecisionFoolboxAttack(StartedFoolboxAttack):
    """A decision-based attack: it sees only decisions, through the capped, counting Oracle."""

    needs = frozenset({"decisions"})
    randomized = True
    through_oracle = True

    def run(self, model, x, y, *, eps, ctx, source=None):
        if self.params.restarts == 1:
            return super().run(model, x, y, eps=eps, ctx=ctx)
        best, queries = None, None
        for r in range(self.params.restarts):
            # a restart differs in its seed (foolbox's randomness and the starting points); its records are summed below
            sub = dataclasses.replace(ctx, seed=ctx.seed + 7727 * r, records={})
            self.queries = torch.zeros(0, dtype=torch.long)  # stays empty when no sample is classified correctly
            adv = super().run(model, x, y, eps=eps, ctx=sub)
            best = adv if best is None else merge_best(x, best, adv, self.norm)
            queries = self.queries if queries is None else queries + self.queries
        self.queries = queries
        q = queries.double()
        ctx.record("queries_mean", float(q.mean()) if len(q) else 0.0)
        ctx.record("queries_max", float(q.max()) if len(q) else 0.0)
        return best


class FoolboxHSJ(DecisionFoolboxAttack):
    """HopSkipJump, L2 or Linf (foolbox HopSkipJumpAttack): decisions only; queries counted and capped."""

    Params = HSJParams
    library_class = "HopSkipJumpAttack"

    def library_kwargs(self):
        return {**super().library_kwargs(), "constraint": "l2" if self.norm == Norm.L2 else "linf"}


class BoundaryParams(RestartParams):
    steps: int = Field(25000, ge=1, description="iterations")
    spherical_step: float = Field(1e-2, gt=0, description="initial relative size of the orthogonal step")
    source_step: float = Field(1e-2, gt=0, description="initial relative size of the step towards the input")
    source_step_convergance: float = Field(1e-7, gt=0, description="stop a sample when source_step falls below this")
    step_adaptation: float = Field(1.5, gt=1, description="factor by which the step sizes adapt")
    update_stats_every_k: int = Field(10, ge=1, description="iterations between step-size adaptations")


class FoolboxBoundary(DecisionFoolboxAttack):
    """Boundary attack (foolbox BoundaryAttack, L2): decisions only; queries counted and capped."""

    Params = BoundaryParams
    fixed_norm = Norm.L2
    library_class = "BoundaryAttack"
