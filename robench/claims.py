"""Verdicts of a suite's ``claims:`` (robench.suite_paper) from its results, with 95% intervals.

Each claim expands into instances (one per model and eps it names); each instance gets a verdict from
the intervals of the numbers it compares:

- *holds*: the whole interval is on the claimed side (or inside the claimed range);
- *does not hold*: the whole interval is on the other side (or outside the range);
- *not separable at this sample size*: the interval straddles the line;
- *not computed*: the results lack the cell, or the per-sample norms an interval of a norm needs
  (a JSON export keeps mean norms, not the norms themselves).

A claim holds when at least ``at_least`` instances hold (default: all), does not hold when fewer than
that can still hold, and is not separable otherwise.

Intervals: accuracies use the 95% Wilson interval of their count (robench.metrics.wilson); a
difference of two accuracies combines the two Wilson intervals (Newcombe's method, which treats the
two cells as independent samples: conservative for cells evaluated on the same images). Mean and
median norms, their differences and ratios use a percentile bootstrap (2000 resamples, seed 0) of the
per-sample norms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import wilson
from .suite_paper import ACCURACIES, BEST, CellRef, Claim, EpsRange, PaperValue, in_range

HOLDS, FAILS, OPEN, UNKNOWN = "holds", "does not hold", "not separable at this sample size", "not computed"
BOOTSTRAP = 2000


@dataclass
class Number:
    """One side of a comparison: the value, its 95% interval (None: not available) and, for norms,
    the per-sample values a bootstrap needs (in the metric's unit: accuracies as fractions)."""

    value: float
    ci: tuple[float, float] | None
    n: int
    samples: list[float] | None = None
    what: str = ""


@dataclass
class Instance:
    text: str
    verdict: str
    detail: str


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    instances: list[Instance] = field(default_factory=list)


class Results:
    """The numbers claims need, from a store's results (robench.metrics.SuiteResults) or from a
    published JSON export (the rows of ``<suite>.json``: aggregates and counts, no per-sample norms)."""

    def __init__(self, rows: list[dict[str, Any]], norm_samples: dict[tuple[str, str, str], list[float]] | None = None,
                 clean: dict[str, tuple[int, int]] | None = None, headline: dict[str, float] | None = None):
        self.rows = {(r["model"], r["attack"], r["norm"]): r for r in rows}
        self.norm_samples = norm_samples  # None: not available (an export)
        self.clean = dict(clean or {})
        for r in rows:  # a model's clean accuracy from any of its rows, where the store's count is not given
            if r.get("n"):
                self.clean.setdefault(r["model"], (round(r["clean_accuracy"] * r["n"]), r["n"]))
        self.headline = headline or {}

    @classmethod
    def from_suite_results(cls, res) -> "Results":
        rows = [r.to_json() for r in res.rows]
        samples = {k: list(v[0]) for k, v in res.norm_samples.items()}
        norms = {r["norm"] for r in rows}
        return cls(rows, samples, res.clean, {n: res.headline(n) for n in norms if res.headline(n) is not None})

    @classmethod
    def from_export(cls, rows: list[dict[str, Any]], config: dict[str, Any] | None = None) -> "Results":
        headline = {}
        for r in rows:
            if r.get("headline") is not None:
                headline[r["norm"]] = float(r["headline"])
        return cls(rows, None, None, headline)

    def row(self, model: str, attack: str, norm: str | None) -> dict | None:
        for (m, a, n), r in self.rows.items():
            if m == model and a == attack and (norm is None or n == norm):
                return r
        return None

    def number(self, metric: str, model: str, attack: str | None, norm: str | None, eps: float | None) -> Number | None:
        """The cell's number, or None where the results do not have it."""
        if metric == "clean" or attack is None:
            if model not in self.clean or not self.clean[model][1]:
                return None
            k, n = self.clean[model]
            return Number(k / n, wilson(k, n), n, what=f"{model} clean")
        r = self.row(model, attack, norm)
        if r is None:
            return None
        n = r["n"]
        name = f"{model} / {attack}"
        if metric == "robust":
            acc = None if eps is None else r["robust_accuracy"].get(f"{eps:g}")
            if acc is None or not n:
                return None
            return Number(acc, wilson(round(acc * n), n), n, what=f"{name} @ {eps:g}")
        value = r.get(metric)
        if value is None:
            return None
        found = None if self.norm_samples is None else self.norm_samples.get((model, attack, r["norm"]))
        ci = None
        if found:
            stat = np.mean if metric == "mean_norm" else np.median
            ci = _percentile(_resample(found, stat))
        return Number(float(value), ci, len(found) if found else n, found, what=name)


def _resample(values: list[float], stat, rng: np.random.Generator | None = None) -> np.ndarray:
    """``BOOTSTRAP`` resampled statistics; the two sides of a comparison share one generator, so that
    their resamples are independent (the norms are kept sorted, not paired by sample)."""
    rng = rng or np.random.default_rng(0)
    a = np.asarray(values, dtype=float)
    return stat(a[rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))], axis=1)


def _percentile(draws: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def difference(a: Number, b: Number, metric: str) -> tuple[float, tuple[float, float] | None]:
    """a - b with its 95% interval."""
    d = a.value - b.value
    if a.ci is None or b.ci is None:
        return d, None
    if metric in ACCURACIES:  # Newcombe: the two Wilson intervals combined
        lo = d - math.hypot(a.value - a.ci[0], b.ci[1] - b.value)
        hi = d + math.hypot(a.ci[1] - a.value, b.value - b.ci[0])
        return d, (lo, hi)
    if not (a.samples and b.samples):
        return d, None
    stat, rng = (np.mean if metric == "mean_norm" else np.median), np.random.default_rng(0)
    return d, _percentile(_resample(a.samples, stat, rng) - _resample(b.samples, stat, rng))


def ratio(a: Number, b: Number, metric: str) -> tuple[float, tuple[float, float] | None]:
    r = a.value / b.value if b.value else math.inf
    if not (a.samples and b.samples):
        return r, None
    stat, rng = (np.mean if metric == "mean_norm" else np.median), np.random.default_rng(0)
    return r, _percentile(_resample(a.samples, stat, rng) / np.maximum(_resample(b.samples, stat, rng), 1e-300))


def side(ci: tuple[float, float] | None, low: float, high: float) -> str:
    """The verdict of an interval against [low, high]: inside, outside, or straddling an end."""
    if ci is None:
        return UNKNOWN
    if ci[0] >= low and ci[1] <= high:
        return HOLDS
    if ci[1] < low or ci[0] > high:
        return FAILS
    return OPEN


def _above(ci, line: float) -> str:
    if ci is None:
        return UNKNOWN
    return HOLDS if ci[0] > line else FAILS if ci[1] < line else OPEN


def combine(verdicts: list[str], at_least: int | None) -> str:
    """A claim's verdict from its instances': ``at_least`` of them must hold (default: all)."""
    need = len(verdicts) if at_least is None else at_least
    if not verdicts:
        return UNKNOWN
    if sum(v == HOLDS for v in verdicts) >= need:
        return HOLDS
    if sum(v != FAILS for v in verdicts) < need:
        return FAILS
    return UNKNOWN if UNKNOWN in verdicts else OPEN


# -- formatting --------------------------------------------------------------------------------


def scale(metric: str) -> float:
    """Accuracies are claimed in % (points), stored as fractions."""
    return 100.0 if metric in ACCURACIES else 1.0


def show(v: float, metric: str) -> str:
    return f"{100 * v:.1f}" if metric in ACCURACIES else f"{v:.4g}"


def show_ci(ci: tuple[float, float] | None, metric: str) -> str:
    return "no interval" if ci is None else f"[{show(ci[0], metric)}, {show(ci[1], metric)}]"


def show_number(x: Number, metric: str) -> str:
    return f"{show(x.value, metric)} {show_ci(x.ci, metric)}"


# -- evaluation --------------------------------------------------------------------------------


def claim_eps(claim: Claim, norm: str | None, suite_eps: dict[str, list[float]], results: Results) -> list[float | None]:
    if claim.metric != "robust":
        return [None]
    values = suite_eps.get(str(norm), [])
    if isinstance(claim.eps, EpsRange):
        return [e for e in values if in_range(e, claim.eps)]
    if isinstance(claim.eps, list):
        return list(claim.eps)
    if isinstance(claim.eps, float):
        return [claim.eps]
    head = results.headline.get(str(norm))
    # no eps known (an attack the results lack): one instance, which reports the missing cell
    return [head] if head is not None else values[len(values) // 2:len(values) // 2 + 1] or [None]


def ref_norm(ref: CellRef, attack_norms: dict[str, str], suite_eps: dict[str, list[float]]) -> str | None:
    if ref.attack is None:
        return None
    if ref.attack == BEST:
        return ref.norm or (next(iter(suite_eps)) if len(suite_eps) == 1 else None)
    return attack_norms.get(ref.attack)


def evaluate(claim: Claim, results: Results, suite: dict[str, Any], paper: list[PaperValue]) -> Verdict:
    """The verdict of one claim; ``suite``: {"models": [...], "epsilons": {norm: [...]}, "attack_norms": {attack: norm}}."""
    if claim.left is None:
        return _within_paper(claim, results, suite, paper)
    attack_norms, suite_eps = suite["attack_norms"], suite["epsilons"]
    models = claim.models or suite["models"]
    norm = ref_norm(claim.left, attack_norms, suite_eps)
    instances = []
    refs = [r for r in (claim.left, claim.right) if r is not None]
    for m in (models if any(r.model is None for r in refs) else [None]):
        lm, r = claim.left.model or m, claim.right
        if r is not None and (r.model or m) == lm and r.attack == claim.left.attack:
            continue  # a cell against itself: the model the claim is about, among "every model"
        for eps in claim_eps(claim, norm, suite_eps, results):
            left = results.number(claim.metric, lm, claim.left.attack, norm, eps)
            right = None if r is None else results.number(claim.metric, r.model or m, r.attack, ref_norm(r, attack_norms, suite_eps), eps)
            if left is None or (r is not None and right is None):
                names = [_name(lm, claim.left.attack, eps)] + ([] if r is None else [_name(r.model or m, r.attack, eps)])
                instances.append(_missing(" vs ".join(names)))
                continue
            instances.append(_instance(claim, left, right, eps, paper))
    return Verdict(claim, combine([i.verdict for i in instances], claim.at_least), instances)


def _name(model: str | None, attack: str | None, eps: float | None) -> str:
    return f"{model} / {attack}" + (f" @ {eps:g}" if eps is not None else "") if attack else f"{model} clean"


def _missing(text: str) -> Instance:
    return Instance(text, UNKNOWN, "not in the results")


def _instance(claim: Claim, left: Number | None, right: Number | None, eps: float | None, paper: list[PaperValue]) -> Instance:
    metric, k = claim.metric, scale(claim.metric)
    if claim.op in (">", "<"):
        sign = 1 if claim.op == ">" else -1
        margin = claim.by_more_than / k
        by = (f" by more than {show(margin, metric)}{' points' if metric in ACCURACIES else ''}"
              if claim.by_more_than else "")  # the threshold the verdict is judged against
        if right is None:
            line = claim.value / k
            verdict = _above(left.ci, line + margin) if sign > 0 else _above(None if left.ci is None else (-left.ci[1], -left.ci[0]), -line + margin)
            return Instance(f"{left.what} {claim.op} {show(line, metric)}{by}", verdict, show_number(left, metric))
        d, ci = difference(left, right, metric)
        ci_s = None if ci is None else ((ci[0], ci[1]) if sign > 0 else (-ci[1], -ci[0]))
        return Instance(f"{left.what} {claim.op} {right.what}{by}", _above(ci_s, margin),
                        f"{show_number(left, metric)} vs {show_number(right, metric)}; difference {show(d, metric)} {show_ci(ci, metric)}")
    if claim.op == "between":
        lo, hi = claim.range
        if right is None:
            return Instance(f"{left.what} in [{lo:g}, {hi:g}]", side(left.ci, lo / k, hi / k), show_number(left, metric))
        r, ci = ratio(left, right, metric)
        return Instance(f"{left.what} / {right.what} in [{lo:g}, {hi:g}]", side(ci, lo, hi),
                        f"{show(left.value, metric)} / {show(right.value, metric)} = {r:.2f} {'no interval' if ci is None else f'[{ci[0]:.2f}, {ci[1]:.2f}]'}")
    pts = claim.points / k  # within
    if right is not None:
        d, ci = difference(left, right, metric)
        return Instance(f"{left.what} within {claim.points:g} of {right.what}", side(ci, -pts, pts),
                        f"difference {show(d, metric)} {show_ci(ci, metric)}")
    ref = _paper_for(paper, claim.left, claim.metric, eps)
    if ref is None:
        return _missing(f"{left.what}: no paper value")
    return _vs_paper(left, ref, pts, metric)


def _vs_paper(ours: Number, ref: PaperValue, pts: float, metric: str) -> Instance:
    target = ref.value / scale(metric)
    return Instance(f"{ours.what}: paper {ref.value:g} ({ref.where})", side(ours.ci, target - pts, target + pts),
                    f"ours {show_number(ours, metric)}, paper {ref.value:g}")


def paper_metric(p: PaperValue) -> str:
    return p.metric or ("robust" if p.attack else "clean")


def _paper_for(paper: list[PaperValue], ref: CellRef, metric: str, eps: float | None) -> PaperValue | None:
    for p in paper:
        if p.model == ref.model and p.attack == ref.attack and paper_metric(p) == metric and (eps is None or p.eps in (None, eps)):
            return p
    return None


def paper_number(p: PaperValue, results: Results, suite: dict[str, Any]) -> Number | None:
    """Ours for the cell of a ``paper:`` value."""
    metric = paper_metric(p)
    norm = ref_norm(p, suite["attack_norms"], suite["epsilons"])
    eps = p.eps
    if metric == "robust" and eps is None:
        eps = results.headline.get(str(norm))
    return results.number(metric, p.model, p.attack, norm, eps)


def _within_paper(claim: Claim, results: Results, suite: dict[str, Any], paper: list[PaperValue]) -> Verdict:
    instances = []
    for p in paper:
        if (claim.where is not None and p.where != claim.where) or paper_metric(p) != claim.metric:
            continue
        metric = paper_metric(p)
        ours = paper_number(p, results, suite)
        if ours is None:
            instances.append(_missing(f"{p.model} / {p.attack or 'clean'}"))
            continue
        instances.append(_vs_paper(ours, p, claim.points / scale(metric), metric))
    return Verdict(claim, combine([i.verdict for i in instances], claim.at_least), instances)


def suite_facts(suite, results: Results) -> dict[str, Any]:
    """What evaluation needs from a suite (robench.suite.Suite): its models and eps, and each attack's
    norm as the results have it."""
    return {"models": [m.name for m in suite.models], "attack_norms": {a: n for (_, a, n) in results.rows},
            "epsilons": {str(k): list(v) for k, v in suite.epsilons.items()}}


def evaluate_all(claims: list[Claim], results: Results, facts: dict[str, Any], paper: list[PaperValue]) -> list[Verdict]:
    return [evaluate(c, results, facts, paper) for c in claims]
