"""Leaderboard numbers from per-sample certificates (table ``certificates``, Context.certify).

Two kinds of cells carry them:

* a **solver** cell (e.g. plugin ``exact``): per sample ``optimal`` / ``bracket`` (certified lower
  bound, the verified norm of its point as upper end), ``robust``, ``failed``, ``unverified``
  (its point did not verify) or ``contradicted``. Every other minimal attack of the same model and
  norm gets its **optimality ratio** per sample: its verified norm / the exact minimum, over the
  samples the solver proved ``optimal`` and the attack broke (mean, median, worst, share within 1%
  and 5%, and the sorted ratios themselves for the plot), and the count of those samples it did
  not break at all.
* a **verifier** cell (records ``verifier = 1``; plugin ``verify``): per sample ``verified`` (no
  adversarial within the cell's eps) or ``unknown``. Its verified robust accuracy at eps is the
  share of samples correctly classified and verified: a sound lower bound; the attacked robust
  accuracy (the best over attacks) is an upper bound. A sample verified robust that an attack
  broke within eps is counted as a contradiction (a bug in one of them), shown as a warning.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from .api import Norm
from .store import Store
from .store_schema import NORM_COLUMN
from .verify import within_eps

SOLVER_STATUSES = frozenset({"optimal", "bracket", "robust", "failed", "unverified", "contradicted"})


def is_verifier(cell: dict) -> bool:
    return bool((cell.get("records") or {}).get("verifier"))


def _ratio_stats(ratios: list[float], missed: int) -> dict[str, Any]:
    if not ratios:
        return {"n": 0, "missed": missed}
    return {
        "n": len(ratios), "missed": missed, "mean": statistics.fmean(ratios), "median": statistics.median(ratios),
        "worst": max(ratios), "within_1pct": sum(r <= 1.01 for r in ratios) / len(ratios),
        "within_5pct": sum(r <= 1.05 for r in ratios) / len(ratios),
        "ratios": sorted(ratios),  # per sample, for the ratio-distribution plot (robench.report.plots.plot_ratios)
    }


def compute(store: Store, cells: list[dict], samples_by_cell: dict[str, list[dict]], best_ra: dict[tuple[str, str], dict[float, float]],
            clean: dict[str, dict[int, tuple]]) -> dict[str, Any]:
    """{"solver": [...], "verified": [...], "warnings": [...]} for the leaderboard (empty lists: none ran).

    ``best_ra``: (model, norm) -> {eps: attacked robust accuracy of the best over attacks}."""
    out: dict[str, Any] = {"solver": [], "verified": [], "warnings": []}
    certs = {c["key"]: store.certificates(c["key"]) for c in cells}
    for c in cells:
        if is_verifier(c) or not certs[c["key"]]:
            continue
        if not set(v["status"] for v in certs[c["key"]].values()) <= SOLVER_STATUSES:
            continue
        col = NORM_COLUMN[Norm(c["norm"])]
        exact = {i: v["upper"] for i, v in certs[c["key"]].items() if v["status"] == "optimal" and v["upper"] is not None}
        statuses = [v["status"] for v in certs[c["key"]].values()]
        entry = {"model": c["model"], "norm": c["norm"], "solver": c["attack"], "optimal": len(exact),
                 "counts": {s: statuses.count(s) for s in sorted(set(statuses))}, "attacks": {}}
        for other in cells:
            if (other["model"], other["norm"]) != (c["model"], c["norm"]) or other["key"] == c["key"] or other["kind"] != "minimal" \
                    or other["source"] is not None or is_verifier(other):
                continue
            ratios, missed = [], 0
            for s in samples_by_cell[other["key"]]:
                m = exact.get(s["idx"])
                if m is None or m <= 0 or s["clean_pred"] != s["label"]:
                    continue
                if not s["success"] or s[col] is None:
                    missed += 1
                else:
                    ratios.append(s[col] / m)
            entry["attacks"][other["attack"]] = _ratio_stats(ratios, missed)
        out["solver"].append(entry)

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for c in cells:
        if is_verifier(c) and c["eps"] is not None:
            groups.setdefault((c["model"], c["norm"], c["attack"]), []).append(c)
    for (model, norm, name), group in sorted(groups.items()):
        clean_m = clean.get(model, {})
        col = NORM_COLUMN[Norm(norm)]
        per_eps = {}
        for c in sorted(group, key=lambda c: c["eps"]):
            rows = [s for s in samples_by_cell[c["key"]] if s["idx"] in clean_m]
            verified = {i for i, v in certs[c["key"]].items() if v["status"] == "verified"
                        and i in clean_m and clean_m[i][0] == clean_m[i][1]}
            n = len(rows)
            attacked = best_ra.get((model, norm), {}).get(float(c["eps"]))
            per_eps[float(c["eps"])] = {"verified": len(verified) / n if n else math.nan, "attacked": attacked, "n": n}
            broken = _broken_within(cells, samples_by_cell, model, norm, col, float(c["eps"]))
            bad = sorted(verified & broken)
            if bad:
                out["warnings"].append(f"{name} verified {len(bad)} sample(s) of model {model} robust at {norm} eps {c['eps']:g} that an "
                                       f"attack broke within eps (sample {bad[0]}{', ...' if len(bad) > 1 else ''}): one of them is wrong")
        out["verified"].append({"model": model, "norm": norm, "verifier": name, "eps": per_eps})
    return out


def _broken_within(cells, samples_by_cell, model: str, norm: str, col: str, eps: float) -> set[int]:
    """Samples some attack (not a verifier) of ``model`` and ``norm`` broke with a verified adversarial within eps."""
    out: set[int] = set()
    for c in cells:
        if c["model"] != model or c["norm"] != norm or is_verifier(c) or c["source"] is not None:
            continue
        for s in samples_by_cell[c["key"]]:
            if s["success"] and s["clean_pred"] == s["label"] and s[col] is not None \
                    and bool(within_eps(torch.tensor(s[col]), eps, Norm(norm))):
                out.add(s["idx"])
    return out
