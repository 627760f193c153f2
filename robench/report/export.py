"""Results as data files: the JSON rows and the CSV of a leaderboard, and the entries of a
published folder's index (read back from its ``<suite>.json`` files). Pure: reads no store."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..metrics import BEST, SuiteResults
from .tables import NORM_ORDER, clean_ci, eps_text, is_missing


# -- JSON and CSV -------------------------------------------------------------------------------


def to_json(results: list[SuiteResults]) -> str:
    """A list of rows (NaN written as null)."""
    return json.dumps(rows_json(results), indent=2)


def clean_nan(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nan(v) for v in obj]
    return obj


def rows_json(results: list[SuiteResults]) -> list[dict]:
    """Every leaderboard row of ``results`` as a JSON-ready dict (NaN as None): the ``<suite>.json`` content."""
    return [clean_nan(r.to_json()) for res in results for r in res.rows]


def to_csv(results: list[SuiteResults]) -> str:
    """Every row as CSV: one line per model, attack and norm, robust accuracy in one column per (norm, eps)."""
    eps_cols = sorted({(r.norm, e) for res in results for r in res.rows for e in r.robust_accuracy}, key=lambda t: (NORM_ORDER.index(t[0]), t[1]))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["suite", "model", "attack", "norm", "kind", "n", "clean_accuracy", "clean_ci_low", "clean_ci_high"]
               + [f"robust_{n}_{eps_text(e)}{tail}" for n, e in eps_cols for tail in ("", "_ci_low", "_ci_high")]
               + ["mean_norm", "median_norm", "success_rate", "rejected", "forward_per_sample", "backward_per_sample", "seconds_per_sample", "via_surrogate", "status"])
    for res in results:
        for r in res.rows:
            w.writerow([r.suite, r.model, r.attack, r.norm, r.kind, r.n, r.clean_accuracy, *_csv_pair(clean_ci(r))]
                       + [v for n, e in eps_cols for v in ([r.robust_accuracy.get(e, ""), *_csv_pair(r.robust_ci.get(e))]
                                                             if r.norm == n else ["", "", ""])]
                       + [r.mean_norm, r.median_norm, r.success_rate, r.rejected, r.forward_per_sample, r.backward_per_sample,
                          r.seconds_per_sample, r.via_surrogate, r.status])
    return buf.getvalue()


def _csv_pair(ci: tuple[float, float] | None) -> list[float | str]:
    """An interval's two ends for the CSV (empty where missing)."""
    if ci is None:
        return ["", ""]
    return ["" if is_missing(v) else v for v in ci]


# -- the index of a published folder -----------------------------------------------------------


def index_entries(folder: Path) -> list[dict[str, Any]]:
    """One entry per suite published in ``folder`` (read back from its ``<suite>.json``, so suites
    published by earlier calls are listed too): suite, models, norms, top model per norm."""
    entries = []
    for data in sorted(folder.glob("*.json")):
        try:
            rows = json.loads(data.read_text())
        except json.JSONDecodeError:
            continue
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "model" in r and "norm" in r for r in rows):
            continue  # not a leaderboard file
        norms = [n for n in NORM_ORDER if any(r["norm"] == n for r in rows)]
        tops = []
        for norm in norms:
            best = [r for r in rows if r["norm"] == norm and r["attack"] == BEST]
            head = headline_from_rows(best)
            if best and head is not None:
                top = max(best, key=lambda r: (r["robust_accuracy"].get(head) or 0.0, r["clean_accuracy"] or 0.0))
                tops.append({"norm": norm, "model": top["model"], "eps": head, "robust_accuracy": top["robust_accuracy"].get(head)})
        entries.append({"suite": data.stem, "models": sorted({r["model"] for r in rows}), "norms": norms, "tops": tops})
    return entries


def headline_from_rows(best_rows: list[dict]) -> str | None:
    """The headline eps key of published rows (recorded per row; older files: the middle eps)."""
    for r in best_rows:
        if r.get("headline") is not None:
            return eps_text(float(r["headline"]))
    keys = sorted({k for r in best_rows for k in r["robust_accuracy"]}, key=float)
    return keys[len(keys) // 2] if keys else None
