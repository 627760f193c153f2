"""Independent verification of every adversarial an attack returns: the harness decides success.

Rules, applied to every attack alike:

1. A returned row that contains NaN, or equals the input exactly, is "no adversarial" (not a
   rejection). Samples the model already misclassifies are broken at norm 0 whatever the attack
   returns.
2. Float residue: every channel change of magnitude <= ``RESIDUE`` (1e-6) is reset to the original
   value; the cleaned image is kept when it is still misclassified, else the raw one is checked.
3. Rejected (and counted) when any value lies outside [0, 1], when the model does not misclassify
   it, or, for bounded attacks, when its norm exceeds eps by more than ``eps * REL_TOL + ABS_TOL``
   (L0: none — pixels are counted exactly).
4. Norms are recomputed here in float64 with :mod:`robench.norms`: L0 counts pixels (a pixel is
   changed if any channel is), L1 / L2 / Linf over all values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .api import Model, Norm
from .norms import per_sample, perturbation_norms

RESIDUE = 1e-6
REL_TOL = 1e-5
ABS_TOL = 1e-6

def within_eps(value: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """The tolerance rule shared by verification and metrics."""
    if norm == Norm.L0:
        return value <= eps
    return value <= eps * (1 + REL_TOL) + ABS_TOL


@dataclass
class Verdict:
    """Per-sample outcome of verification (tensors of length N)."""

    success: torch.Tensor  # bool: a verified adversarial (or a clean error)
    rejected: torch.Tensor  # bool: the attack claimed one that failed a check
    reasons: list[str | None]  # why each rejection happened
    norms: dict[Norm, torch.Tensor]  # float64; NaN where there is no success
    adversarial: torch.Tensor  # the kept image per sample (the input where no success)


def _predict(model: Model, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.predict(x[i : i + batch]).cpu() for i in range(0, len(x), batch)])


def verify(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    clean_pred: torch.Tensor,
    norm: Norm,
    eps: float | None = None,
) -> Verdict:
    """Check an attack's output against ``model`` (the real model, never a surrogate)."""
    x = x.detach().cpu().float()
    y = y.detach().cpu()
    clean_pred = clean_pred.detach().cpu()
    if x_adv.shape != x.shape:
        raise ValueError(f"the attack returned shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}")
    adv = x_adv.detach().cpu().float()
    n = len(x)
    clean_wrong = clean_pred != y
    nan_rows = torch.isnan(adv.flatten(1)).any(1)
    adv = torch.where(per_sample(nan_rows, x), x, adv)
    unchanged = (adv == x).flatten(1).all(1)
    claimed = ~nan_rows & ~unchanged & ~clean_wrong

    reasons: list[str | None] = [None] * n
    in_box = ((adv >= 0) & (adv <= 1)).flatten(1).all(1)
    rejected = torch.zeros(n, dtype=torch.bool)
    for i in torch.nonzero(claimed & ~in_box).flatten().tolist():
        rejected[i] = True
        lo, hi = float(adv[i].min()), float(adv[i].max())
        reasons[i] = f"outside [0, 1] (min {lo:.3g}, max {hi:.3g})"

    candidates = claimed & in_box
    kept = adv.clone()
    success = clean_wrong.clone()
    idx = torch.nonzero(candidates).flatten()
    if len(idx):
        raw = adv[idx]
        delta = raw - x[idx]
        cleaned = torch.where(delta.abs() <= RESIDUE, x[idx], raw)
        pred_clean = _predict(model, cleaned.to(model.device))
        pred_raw = _predict(model, raw.to(model.device))
        ok_clean = pred_clean != y[idx]
        ok_raw = pred_raw != y[idx]
        kept[idx] = torch.where(per_sample(ok_clean, x), cleaned, raw)
        ok = ok_clean | ok_raw
        success[idx] = ok
        for j, i in enumerate(idx.tolist()):
            if not ok[j]:
                rejected[i] = True
                reasons[i] = f"not misclassified (model predicts the true class {int(y[i])})"
    kept = torch.where(per_sample(success, x), kept, x)
    kept[clean_wrong] = x[clean_wrong]
    norms = perturbation_norms(kept - x)

    if eps is not None:
        too_far = success & ~clean_wrong & ~within_eps(norms[norm], eps, norm)
        for i in torch.nonzero(too_far).flatten().tolist():
            rejected[i] = True
            reasons[i] = f"{norm} norm {float(norms[norm][i]):.6g} exceeds eps {eps:g}"
        success &= ~too_far
        kept[too_far] = x[too_far]

    for k in norms:
        norms[k] = torch.where(success, norms[k], torch.full_like(norms[k], float("nan")))
        norms[k][clean_wrong] = 0.0
    return Verdict(success=success, rejected=rejected, reasons=reasons, norms=norms, adversarial=kept)
