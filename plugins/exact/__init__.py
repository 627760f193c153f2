"""Built-in robench plugin ``exact``: the minimal adversarial perturbation of small ReLU networks,
computed by mixed-integer programming (HiGHS MILP for L0 / L1 / Linf; SCIP with a cone constraint
for L2, or a branch and bound over HiGHS QPs).

It is a ``minimal`` attack like any other: it returns one adversarial per sample and the harness
verifies it. What the others cannot offer is the certificate: per sample the solver proves its
point optimal, or (after ``time_limit``) returns a bracket [lower bound, norm of its point]. The
per-cell counts are kept with the cell (``ctx.record``): ``exact_optimal``, ``exact_bracket``,
``exact_robust`` (no adversarial exists in the [0, 1] box), ``exact_failed``, ``exact_mean_gap``
(mean relative gap of the bracketed samples), ``exact_mean_lower`` (mean certified lower bound
over the attacked samples) and ``exact_mean_seconds``. See docs/exact.md.

Requires the ``exact`` extra (``pip install 'robench[exact]'``: highspy, pyscipopt).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationError

import robench
from robench import Norm
from robench.adapters import merge_best, predict
from robench.errors import RobenchError

from .network import UnsupportedNetwork, forward, lower
from .refine import RefineCost, refine  # noqa: F401  (public: PDPGD's refine stage is this one)
from .solver import Result, solve_sample

__all__ = ["Exact", "ExactParams", "Refine", "RefineParams", "Verify", "VerifyParams", "torch_network", "lower", "solve_sample", "Result", "UnsupportedNetwork"]


def torch_network(model: robench.Model) -> torch.nn.Module:
    """The ``nn.Module`` behind a model, through the white-box capability a model declares:
    ``exposes = {"layers": "weights"}`` with a ``layers()`` method returning it (every
    :class:`robench.TorchModel` does). The harness's wrapper lets only attacks that declare the
    need ``"weights"`` call it."""
    if "layers" not in (getattr(model, "exposes", None) or {}):
        raise RobenchError(
            f"the exact solver needs the model's layers: {type(model).__name__} does not expose layers() "
            '(a robench.TorchModel does; other models declare exposes = {"layers": "weights"})'
        )
    net = model.layers()
    if not isinstance(net, torch.nn.Module):
        raise RobenchError(f"{type(model).__name__}.layers() returned {type(net).__name__}, expected a torch.nn.Module")
    return net


class ExactParams(robench.Params):
    norm: Literal["L0", "L1", "L2", "Linf"] = Field("L2", description="threat model (L0 counts pixels)")
    time_limit: float = Field(60.0, gt=0, description="seconds per sample (bounds + solve); then a bracket is returned")
    margin: float = Field(1e-4, ge=0, description="a wrong logit must exceed the true one by this much (keeps float32 verification safe)")
    gap: float = Field(1e-6, ge=0, description="relative optimality gap at which the solver stops")
    bounds: Literal["interval", "lp"] = Field("lp", description="pre-activation bounds: interval arithmetic, or tightened by LP per neuron")
    bound_time: float = Field(10.0, ge=0, description="seconds per sample for LP bound tightening (at most half the time limit)")
    solver: Literal["auto", "highs", "scip", "qp-bb"] = Field("auto", description="auto: HiGHS MILP for L0/L1/Linf; for L2 (HiGHS has no MIQP) SCIP (cone constraint); qp-bb: branch and bound over HiGHS QPs (L2 only)")
    init_iter: int = Field(100, ge=0, description="iterations of the fab plugin for the starting adversarial (0: none, search the whole box)")
    init_attacks: tuple[str, ...] = Field((), description="more minimal attack plugins (defaults, this norm if they take one) whose smaller adversarial per sample replaces fab's as the start")
    threads: int = Field(1, ge=1, description="solver threads (HiGHS)")


class Exact(robench.Attack):
    """Exact minimal perturbation by MILP / MIQCP; white-box (reads the network's weights)."""

    Params = ExactParams
    kind = "minimal"
    # White box: reads the network through the model's layers() (see torch_network). Its starting
    # point comes from FAB, which needs gradients.
    needs = frozenset({"weights", "gradients"})
    randomized = False

    def __init__(self, params: ExactParams):
        super().__init__(params)
        self._ops = None
        self.results: list[Result] = []  # per attacked sample, in order (kept for benchmarks and tests)

    def _lowered(self, model: robench.Model):
        # One attack instance serves one cell (one model): lower its network once.
        if self._ops is None:
            self._ops = lower(torch_network(model), tuple(model.info.input_shape))
        return self._ops

    def run(self, model, x, y, *, eps, ctx, source=None):
        p = self.params
        ops = self._lowered(model)
        out = x.clone()
        with torch.no_grad():
            scores = model.scores(x).double().cpu().numpy()
        flat = x.detach().double().cpu().flatten(1).numpy()
        mine = forward(ops, flat)
        if not np.allclose(mine, scores, rtol=1e-4, atol=1e-4 * (1 + np.abs(scores).max())):
            raise RobenchError(
                "the exact solver's lowered network does not reproduce the model's scores "
                f"(max difference {np.abs(mine - scores).max():.3g}): the model's scores() is not its net's output"
            )
        todo = np.nonzero(scores.argmax(1) == y.cpu().numpy())[0]
        starts = self._starts(model, x, y, todo, ctx, ops)
        channels = x.shape[1] if x.dim() == 4 else 1
        for n, i in enumerate(todo):
            label = int(y[i])
            xi = x[i : i + 1]

            def adversarial(v: np.ndarray, xi=xi, label=label) -> bool:
                t = torch.from_numpy(v.astype(np.float32)).view_as(xi).to(xi.device)
                return bool(predict(model, t)[0] != label)

            res = solve_sample(
                ops, flat[i], label, str(self.norm), start=starts[n], channels=channels, margin=p.margin,
                time_limit=p.time_limit, gap=p.gap, bounds=p.bounds, bound_time=p.bound_time, solver=p.solver,
                threads=p.threads, seed=ctx.seed, is_adversarial=adversarial,
            )
            self.results.append(res)
            # Kept per sample (table certificates); the harness checks it against its verdict on the point.
            ctx.certify(int(i), res.status, res.lower if math.isfinite(res.lower) else None,
                        res.upper if math.isfinite(res.upper) else None)
            if res.x is not None:
                out[i] = torch.from_numpy(res.x.astype(np.float32)).view_as(xi[0]).to(out)
            else:
                out[i] = math.nan
            ctx.report(n + 1, len(todo))
        self._record(ctx)
        return out

    def _starts(self, model, x, y, todo, ctx, ops) -> list[np.ndarray | None]:
        p = self.params
        if (p.init_iter == 0 and not p.init_attacks) or not len(todo):
            return [None] * len(todo)
        idx = torch.as_tensor(todo, device=x.device)
        xs, ys = x[idx], y[idx]
        channels = x.shape[1] if x.dim() == 4 else 1
        adv = torch.full_like(xs, math.nan)
        if p.init_iter > 0:
            norm = Norm.L1 if self.norm == Norm.L0 else self.norm
            fab = ctx.attack("fab", {"norm": str(norm), "n_iter": p.init_iter})  # the run's FAB plugin
            adv = fab.run(model, xs, ys, eps=None, ctx=ctx).detach().clone()
            if self.norm == Norm.L0:
                for n in range(len(xs)):
                    if torch.isfinite(adv[n]).all():
                        a = _revert_pixels(ops, xs[n].double().cpu().flatten().numpy(), adv[n].double().cpu().flatten().numpy(),
                                           int(ys[n]), channels)
                        adv[n] = torch.from_numpy(a).view_as(adv[n]).to(adv)
        for name in p.init_attacks:
            try:
                other = ctx.attack(name, {"norm": str(self.norm)})
            except ValidationError:  # an attack with one fixed norm takes no norm parameter
                other = ctx.attack(name, {})
            found = other.run(model, xs, ys, eps=None, ctx=ctx).detach()
            unchanged = (found == xs).flatten(1).all(1).view(-1, *[1] * (xs.dim() - 1))  # a row equal to the input: none found
            found = torch.where(unchanged, torch.full_like(found, math.nan), found)
            adv = merge_best(xs, adv, found, self.norm)
        starts: list[np.ndarray | None] = []
        for n in range(len(xs)):
            a = adv[n].detach().double().cpu().flatten().numpy()
            ok = np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()
            starts.append(a if ok and bool(predict(model, adv[n : n + 1].float())[0] != ys[n]) else None)
        return starts

    def _record(self, ctx) -> None:
        rs = self.results
        status = [r.status for r in rs]
        for s in ("optimal", "bracket", "robust", "failed"):
            ctx.record(f"exact_{s}", status.count(s))
        gaps = [r.gap for r in rs if r.status == "bracket" and math.isfinite(r.gap)]
        ctx.record("exact_mean_gap", float(np.mean(gaps)) if gaps else 0.0)
        lows = [r.lower for r in rs if math.isfinite(r.lower)]
        if lows:
            ctx.record("exact_mean_lower", float(np.mean(lows)))
        ctx.record("exact_mean_seconds", float(np.mean([r.seconds for r in rs])) if rs else 0.0)


class VerifyParams(robench.Params):
    norm: Literal["L0", "L1", "L2", "Linf"] = Field("Linf", description="threat model (L0 counts pixels)")
    bounds: Literal["interval", "lp"] = Field("lp", description="interval arithmetic only, or tightened by LP per neuron and a final LP per class")
    bound_time: float = Field(10.0, gt=0, description="seconds per sample for the LP bounds (then the bounds reached so far decide)")
    margin: float = Field(1e-4, ge=0, description="verified only if every wrong logit stays this far below the true one (covers float32)")
    threads: int = Field(1, ge=1, description="solver threads (HiGHS)")


class Verify(robench.Attack):
    """Not an attack: per sample, a proof that no adversarial lies within eps (bound propagation).

    It returns no adversarials (every row NaN), so it never breaks a sample; what it reports is the
    certificate per sample (``verified`` or ``unknown``, the certified margin as ``lower``). The
    cell's records carry ``verifier = 1``: the leaderboard leaves such cells out of the attack
    tables and shows the verified robust accuracy beside the attacked one (robench.certified)."""

    Params = VerifyParams
    kind = "bounded"
    needs = frozenset({"weights"})
    randomized = False

    def __init__(self, params: VerifyParams):
        super().__init__(params)
        self._ops = None

    def run(self, model, x, y, *, eps, ctx, source=None):
        from .verifier import verify_sample

        p = self.params
        if self._ops is None:
            self._ops = lower(torch_network(model), tuple(model.info.input_shape))
        ctx.record("verifier", 1)
        with torch.no_grad():
            pred = model.scores(x).argmax(1)
        flat = x.detach().double().cpu().flatten(1).numpy()
        channels = x.shape[1] if x.dim() == 4 else 1
        for i in range(len(x)):
            if int(pred[i]) != int(y[i]):
                continue  # misclassified: broken at any eps
            v = verify_sample(self._ops, flat[i], int(y[i]), str(self.norm), float(eps), channels=channels, margin=p.margin,
                              lp=p.bounds == "lp", bound_time=p.bound_time, threads=p.threads)
            ctx.certify(i, "verified" if v.verified else "unknown", lower=v.margin)
            ctx.records["verified"] = ctx.records.get("verified", 0) + int(v.verified)
            ctx.report(i + 1, len(x))
        return torch.full_like(x, math.nan)


class RefineParams(robench.Params):
    attack: str = Field(description="the minimal attack plugin whose adversarials are refined (e.g. pdpgd)")
    attack_params: dict = Field(default_factory=dict, description="its parameters (norm added when it takes one)")
    norm: Literal["L0", "L1", "L2", "Linf"] = Field("L2", description="threat model (L0 counts pixels)")
    steps: int = Field(10, ge=0, le=1000, description="linearise-and-project steps (L1/L2/Linf; L0 reverts pixels greedily)")


class Refine(robench.Attack):
    """Any minimal attack, then boundary refinement of each adversarial it found (robench_plugins.exact.refine):
    never a larger norm, always still adversarial. Records ``refine_improved`` (samples made smaller),
    ``refine_mean_ratio`` (refined / found norm over those) and the refinement's own passes per
    sample (``refine_forward``, ``refine_backward``); the harness counts all passes as usual."""

    Params = RefineParams
    kind = "minimal"
    needs = frozenset({"gradients"})
    randomized = False

    def __init__(self, params: RefineParams, ctx: robench.Context):
        super().__init__(params)
        extra = {"norm": params.norm} | dict(params.attack_params)
        try:
            self.inner = ctx.attack(params.attack, extra)
        except ValidationError:  # an attack with one fixed norm takes no norm parameter
            self.inner = ctx.attack(params.attack, dict(params.attack_params))
        if self.inner.kind != "minimal":
            raise RobenchError(f"refine: {params.attack} is a {self.inner.kind} attack; refinement needs a minimal one")
        self._cost = RefineCost()  # over the cell's batches

    def run(self, model, x, y, *, eps, ctx, source=None):
        adv = self.inner.run(model, x, y, eps=None, ctx=ctx, source=source).detach()
        out, count = refine(model, x, y, adv, self.norm, self.params.steps)
        self._cost.add(x, adv, out, self.norm, count)
        self._cost.record(ctx)
        return out


def _revert_pixels(ops, x0: np.ndarray, a: np.ndarray, label: int, channels: int) -> np.ndarray:
    """Greedy L0 shrink of a starting adversarial: reset changed pixels, smallest change first,
    while the point stays adversarial (by the float64 network)."""
    d = (a - x0).reshape(channels, -1)
    size = np.abs(d).sum(0)
    cur = a.reshape(channels, -1).copy()
    base = x0.reshape(channels, -1)
    for j in np.argsort(size):
        if size[j] == 0:
            continue
        old = cur[:, j].copy()
        cur[:, j] = base[:, j]
        out = forward(ops, cur.ravel()[None])[0]
        if np.delete(out, label).max() <= out[label]:
            cur[:, j] = old
    return cur.ravel()


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec(
            "exact", Exact,
            "Exact minimal perturbation of ReLU networks by MILP (HiGHS; L2: SCIP or QP branch and bound), certified bracket on time-out; "
            "white box, needs the exact extra",
            norms=(Norm.L0, Norm.L1, Norm.L2, Norm.Linf),
        ),
        robench.AttackSpec(
            "verify", Verify,
            "Verifier, not an attack: proves per sample that no adversarial lies within eps (interval and LP bound "
            "propagation, HiGHS); a sound lower bound on robust accuracy; white box, needs the exact extra",
            norms=(Norm.L0, Norm.L1, Norm.L2, Norm.Linf),
        ),
        robench.AttackSpec(
            "refine", Refine,
            "Any minimal attack followed by boundary refinement (linearise and project within the box, as FAB; "
            "L0: greedy pixel reverts): never a larger norm; its own cost recorded",
            norms=(Norm.L0, Norm.L1, Norm.L2, Norm.Linf),
        ),
    ]
