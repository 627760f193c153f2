"""White-box attacks from the 01-loss transferability paper (01loss-convex-transferability.md, III.B).

- ``linear_sign``: for a linear classifier sign(w.x + b) and a label y in {-1, +1},
  ``x' = x + eps * (-y) * sign(w)`` (Linf, bounded). One-vs-all models move against the weight
  of the true class's ensemble. The weights come from the model's ``linear_weights()``
  ((problems, d); SCD01 and the convex ``svm`` offer it).
- ``mlp01_hidden``: for each hidden unit k of an MLP01 (votes in order, then units), try
  ``x' = x + eps * (-y'_k) * sign(w_k)`` with ``y'_k`` the unit's output on x, and keep the first
  x' that the whole model misclassifies. The paper then falls back to a random unit's distortion
  when none works; a distortion that does not fool the model is no adversarial, so we return the
  input for such samples (the harness counts them as "not found"); with ``keep_failed`` (the
  papers' transfer protocol) it falls back to a random unit's distortion as the paper does.

Both read the weights of the model they attack (white box: they declare the need ``weights``)
through what the model exposes (``Model.exposes``: ``linear_weights``; ``hidden_weights`` and
``hidden_signs``), which the harness's wrapper counts; they query only its decisions.
"""

from __future__ import annotations

import torch
from pydantic import Field

import robench
from robench.norms import per_sample



class _WeightSignAttack(robench.Attack):
    """What both attacks are: bounded Linf steps along the sign of weights the model exposes."""

    kind = "bounded"
    needs = frozenset({"decisions", "weights"})
    fixed_norm = robench.Norm.Linf


KEEP_FAILED = "return the distortion also where it does not fool the model (the papers' transfer protocol)"


class LinearSignParams(robench.Params):
    keep_failed: bool = Field(False, description=KEEP_FAILED)


class LinearSign(_WeightSignAttack):
    """x' = x + eps * (-y) * sign(w) for linear models (bounded, Linf)."""

    Params = LinearSignParams

    def run(self, model, x, y, *, eps, ctx, source=None):
        if "linear_weights" not in getattr(model, "exposes", {}):
            raise TypeError(f"linear_sign: model {type(model).__name__} exposes no linear_weights(); it attacks linear models (scd01, svm)")
        w = model.linear_weights().to(x.device)  # (problems, d)
        flat = x.flatten(1)
        if w.shape[0] == 1:  # binary: class 1 is the positive side
            direction = -(2 * y.float() - 1)[:, None] * torch.sign(w[0])[None, :]
        else:  # one-vs-all: push away from the true class
            direction = -torch.sign(w[y])
        adv = (flat + eps * direction).clamp(0, 1).view_as(x)
        if self.params.keep_failed:
            return adv
        fooled = model.predict(adv) != y
        return torch.where(per_sample(fooled, x), adv, x)


class MLP01HiddenParams(robench.Params):
    max_units: int | None = Field(None, ge=1, description="try at most this many hidden units (votes in order, then units; null: all)")
    keep_failed: bool = Field(False, description=KEEP_FAILED + ": where no unit fools it, a random unit's distortion, as the paper does")


class MLP01Hidden(_WeightSignAttack):
    """The MLP01 hidden-node heuristic (bounded, Linf)."""

    Params = MLP01HiddenParams

    def run(self, model, x, y, *, eps, ctx, source=None):
        exposed = getattr(model, "exposes", {})
        if "hidden_signs" not in exposed or "hidden_weights" not in exposed:
            raise TypeError(f"mlp01_hidden: attacks mlp01 models only (they expose hidden_weights and hidden_signs), got {type(model).__name__}")
        W = model.hidden_weights()  # (problems, V, h, d)
        prob = torch.zeros_like(y) if W.shape[0] == 1 else y  # the ensemble whose units we push
        with torch.no_grad():
            out = model.hidden_signs(x)  # (problems, N, V, h)
        out = out[prob, torch.arange(len(y), device=y.device)]  # (N, V, h)
        V, h = W.shape[1], W.shape[2]
        flat = x.flatten(1)
        result = x.clone()
        todo = torch.ones(len(y), dtype=torch.bool, device=x.device)
        units = [(v, u) for v in range(V) for u in range(h)][: self.params.max_units]
        for v, u in units:
            idx = torch.nonzero(todo).squeeze(1)
            if len(idx) == 0:
                break
            step = -out[idx, v, u][:, None] * torch.sign(W[prob[idx], v, u])
            adv = (flat[idx] + eps * step).clamp(0, 1).view(-1, *x.shape[1:])
            fooled = model.predict(adv) != y[idx]
            result[idx[fooled]] = adv[fooled]
            todo[idx[fooled]] = False
        idx = torch.nonzero(todo).squeeze(1)
        if self.params.keep_failed and len(idx):  # the paper's fallback: a random unit's distortion
            pick = torch.randint(0, len(units), (len(idx),), generator=ctx.generator(offset=17)).tolist()
            v, u = torch.tensor([units[k][0] for k in pick]), torch.tensor([units[k][1] for k in pick])
            step = -out[idx, v.to(x.device), u.to(x.device)][:, None] * torch.sign(W[prob[idx], v.to(x.device), u.to(x.device)])
            result[idx] = (flat[idx] + eps * step).clamp(0, 1).view(-1, *x.shape[1:])
        return result
