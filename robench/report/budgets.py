"""Attacks at equal cost: strength versus passes spent, from the best-so-far curves (robench.curves).

Passes are forward + backward passes per sample (a gradient step costs two), the x-axis of every
figure and table here. For each (model, attack) of a norm whose cells kept curves (minimal attacks,
tracked: ``docs/budgets.md``), over the cell's samples (an already misclassified one counts as broken
at 0 passes):

* **robust accuracy at b passes**: the fraction of samples with no verified adversarial within the
  headline eps after b passes (the verifier's tolerance rule; :func:`robench.curves.strength_at`);
* **median best norm at b passes**: the median over samples of the best norm found after b passes
  (inf, shown as "–", while at most half are broken; a mean is inf as soon as one sample is unbroken);
* **AUC**: the mean of the robust accuracy at the headline eps over the 13 budget points
  ``10^(1 + k/4)``, k = 0..12 (10 to 10 000 passes, evenly spaced on a log axis). Lower is a stronger
  attack at equal cost; an attack that stops early keeps its final value at larger budgets.
"""

from __future__ import annotations

import math

from ..curves import strength_at
from ..metrics import SuiteResults
from .tables import Cell, Table, eps_text, pct

BUDGET_POINTS = (100, 1000, 10000)
AUC_POINTS = tuple(10 ** (1 + k / 4) for k in range(13))


def strength(curves: list[list[list[float]]], passes: float, norm: str, eps: float | None) -> tuple[float, float]:
    """(robust accuracy at ``eps`` or NaN, median best norm) over samples after ``passes`` forward + backward passes."""
    got = strength_at(curves, passes, norm, eps, total=True)
    return got.get("robust", math.nan), got["median_norm"]


def auc(curves: list[list[list[float]]], norm: str, eps: float | None) -> float:
    """Mean robust accuracy at ``eps`` over :data:`AUC_POINTS` (NaN without an eps or curves)."""
    if eps is None or not curves:
        return math.nan
    return sum(strength(curves, b, norm, eps)[0] for b in AUC_POINTS) / len(AUC_POINTS)


def curve_groups(res: SuiteResults, norm: str) -> list[tuple[str, str, list]]:
    """(model, attack, curves) of ``norm`` with curves, in model then attack order."""
    return [(m, a, c) for (m, a, n), c in sorted(getattr(res, "curves", {}).items()) if n == norm and c]


def budget_table(res: SuiteResults, norm: str) -> Table | None:
    """Per model, its attacks at 100 / 1000 / 10 000 passes and their AUC, strongest (lowest AUC) first; None: no curves."""
    groups = curve_groups(res, norm)
    if not groups:
        return None
    head = res.headline(norm)
    head_txt = eps_text(head) if head is not None else "?"
    pts = [f"{b:,}".replace(",", " ") for b in BUDGET_POINTS]
    headers = (["Model", "Attack"] + [f"ε={head_txt} @ {p}" for p in pts] + [f"median {norm} @ {p}" for p in pts]
               + [f"AUC ε={head_txt}"])
    rows = []
    for m, a, curves in sorted(groups, key=lambda g: (g[0], _nan_last(auc(g[2], norm, head)), g[1])):
        at = [strength(curves, b, norm, head) for b in BUDGET_POINTS]
        cells = [Cell(m, m), Cell(a, a)]
        cells += [Cell(pct(r) if r == r else "–", r if r == r else None) for r, _ in at]
        cells += [Cell(f"{v:.4g}" if math.isfinite(v) else "–", v if math.isfinite(v) else None) for _, v in at]
        s = auc(curves, norm, head)
        cells.append(Cell(pct(s) if s == s else "–", s if s == s else None))
        rows.append(cells)
    note = (f"Attacks at equal cost (passes = forward + backward per sample, from the best-so-far curves): robust accuracy at "
            f"ε={head_txt} and the median best {norm} norm after 100 / 1 000 / 10 000 passes; AUC = mean robust accuracy at "
            f"ε={head_txt} over 13 log-spaced budgets from 10 to 10 000 passes (lower = stronger at equal cost; docs/budgets.md).")
    return Table(f"budget-{norm}", headers, rows, note=note)


def _nan_last(v: float) -> float:
    return math.inf if v != v else v


__all__ = ["AUC_POINTS", "BUDGET_POINTS", "auc", "budget_table", "curve_groups", "strength"]
