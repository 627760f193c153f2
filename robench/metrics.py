"""Leaderboard numbers, computed from the store's per-sample rows only.

- Robust accuracy at eps: the share of samples that are correctly classified *and* have no
  verified adversarial (of the table's norm, from the attack or attacks considered) with norm
  <= eps (the verifier's tolerance rule). Clean errors count as broken. 95% Wilson interval.
- "best" row per model and norm: per sample, the smallest verified adversarial over all attacks of
  that norm.
- Mean / median norm: over successful *minimal* attacks on initially-correct samples.
- Success rate: successes / initially-correct samples attacked.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import certified
from .api import Norm
from .curves import suite_curves
from .store import Store
from .store_schema import NORM_COLUMN  # noqa: F401  (robench.metrics.NORM_COLUMN, as before)
from .verify import within_eps

BEST = "best"


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # exact ends: the interval of k = 0 starts at 0 and that of k = n ends at 1 (no rounding residue)
    return (0.0 if k == 0 else lo, 1.0 if k == n else hi)


@dataclass
class Row:
    """One leaderboard line: a model against one attack (or the best of all attacks) in one norm."""

    suite: str
    model: str
    attack: str
    norm: str
    kind: str
    n: int
    clean_accuracy: float
    robust_accuracy: dict[float, float]
    robust_ci: dict[float, tuple[float, float]]
    mean_norm: float | None
    median_norm: float | None
    success_rate: float | None
    rejected: int
    forward_per_sample: float | None = None
    backward_per_sample: float | None = None
    seconds_per_sample: float | None = None
    via_surrogate: bool = False
    needs: list[str] = field(default_factory=list)
    status: str = "done"
    errors: list[str] = field(default_factory=list)
    records: dict[str, float] = field(default_factory=dict)
    cell_success: dict[float, float] = field(default_factory=dict)  # bounded: success rate per eps cell
    attacks: list[str] = field(default_factory=list)  # for "best": the attacks it combines
    source: str | None = None
    eps_list: list[float] = field(default_factory=list)
    headline: float | None = None  # the suite's headline eps of this norm (ranks the leaderboard)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["robust_accuracy"] = {_eps_key(e): v for e, v in self.robust_accuracy.items()}
        d["robust_ci"] = {_eps_key(e): list(v) for e, v in self.robust_ci.items()}
        d["cell_success"] = {_eps_key(e): v for e, v in self.cell_success.items()}
        return d


def _eps_key(e: float) -> str:
    return f"{e:g}"


@dataclass
class SuiteResults:
    suite: str
    config: dict[str, Any]
    rows: list[Row]
    clean: dict[str, tuple[int, int]]  # model -> (correct, n)
    noise: dict[str, dict[float, tuple[int, int]]]
    transfer: list[dict[str, Any]]  # one matrix per (eps)
    warnings: list[str]
    runs: list[dict[str, Any]]
    sample_digest: str
    # (model, attack, norm) -> (sorted norms of the smallest verified adversarial per initially
    # correct sample that has one, number of initially correct samples): the norm CDF plots.
    norm_samples: dict[tuple[str, str, str], tuple[list[float], int]] = field(default_factory=dict)
    #: where the rows came from: the store file, or the export folder (robench.store_export) it was imported from
    source: Any = None
    #: from per-sample certificates (robench.certified): {"solver": [...], "verified": [...]}
    certified: dict[str, Any] = field(default_factory=dict)
    #: (model, attack, norm) -> best-so-far curve per sample of its minimal-attack cell (robench.curves.suite_curves)
    curves: dict[tuple[str, str, str], list] = field(default_factory=dict)

    def headline(self, norm: str) -> float | None:
        eps = self.config.get("epsilons", {}).get(norm) or []
        if norm in (self.config.get("headline") or {}):
            return float(self.config["headline"][norm])
        return float(sorted(eps)[len(eps) // 2]) if eps else None


def _current_cells(store: Store, suite: str) -> list[dict]:
    """Cells of the current model versions; for a repeated (model, attack, eps), the newest."""
    clean_keys = store.clean_model_keys(suite)
    latest: dict[tuple, dict] = {}
    for c in store.cells(suite):
        if clean_keys.get(c["model"]) not in (None, c["config"].get("model_key")):
            continue
        k = (c["model"], c["attack"], c["eps"])
        if k not in latest or c["updated"] >= latest[k]["updated"]:
            latest[k] = c
    return list(latest.values())


def _stale_cells(store: Store, suite: str) -> dict[str, int]:
    """model -> number of its stored cells left out because they belong to an earlier model key."""
    clean_keys = store.clean_model_keys(suite)
    out: dict[str, int] = {}
    for c in store.cells(suite):
        if clean_keys.get(c["model"]) not in (None, c["config"].get("model_key")):
            out[c["model"]] = out.get(c["model"], 0) + 1
    return out


def _in_current_suite(cells: list[dict], config: dict) -> tuple[list[dict], dict[str, int]]:
    """The cells of models, attacks (on the models they run against) and eps values that the suite as
    last saved still has, and a count of the others by what they belong to. A store keeps every cell
    ever run, so an attack removed from a suite that resumed into the same store must not show as an
    incomplete result. A config without a models list (a hand-made store) keeps every cell."""
    models = {m.get("name") for m in config.get("models") or [] if isinstance(m, dict)}
    if not models:
        return cells, {}
    attacks = {a.get("name"): a for a in config.get("attacks") or [] if isinstance(a, dict)}
    eps_cfg = {k: {float(e) for e in v} for k, v in (config.get("epsilons") or {}).items()}
    keep, dropped = [], {}
    for c in cells:
        entry = attacks.get(c["attack"])
        if c["model"] not in models:
            what = f"model {c['model']}"
        elif entry is None:
            what = f"attack {c['attack']}"
        elif entry.get("models") and c["model"] not in entry["models"]:
            what = f"attack {c['attack']} on model {c['model']}"
        elif c["eps"] is not None and c["norm"] in eps_cfg and float(c["eps"]) not in eps_cfg[c["norm"]]:
            what = f"{c['norm']} eps {c['eps']:g}"
        else:
            keep.append(c)
            continue
        dropped[what] = dropped.get(what, 0) + 1
    return keep, dropped


def compute(store: Store, suite: str) -> SuiteResults:
    config = store.suites().get(suite, {})
    eps_cfg: dict[str, list[float]] = {k: sorted(float(e) for e in v) for k, v in (config.get("epsilons") or {}).items()}
    clean = store.clean(suite)
    cells, dropped = _in_current_suite(_current_cells(store, suite), config)
    current_models = {m.get("name") for m in config.get("models") or [] if isinstance(m, dict)}
    if current_models:
        clean = {m: v for m, v in clean.items() if m in current_models}
    rows: list[Row] = []
    warnings: list[str] = []
    for what, n in sorted(dropped.items()):
        warnings.append(f"{n} stored cell{'s' if n != 1 else ''} of {what}: not in the current suite (removed from it since "
                        "they ran), so not shown")
    for model, n in sorted(_stale_cells(store, suite).items()):
        warnings.append(f"{n} stored cell{'s' if n != 1 else ''} of model {model} belong to an earlier version of it "
                        "(its weights, files or configuration changed since) and are not shown")
    norm_samples: dict[tuple[str, str, str], tuple[list[float], int]] = {}
    samples_by_cell = {c["key"]: store.samples(c["key"]) for c in cells}
    all_cells = cells
    cells = [c for c in cells if not certified.is_verifier(c)]  # a verifier breaks nothing: not an attack row

    # group cells by (model, attack)
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["model"], c["attack"]), []).append(c)

    # per-sample smallest adversarial, per (model, norm), over all attacks: for the "best" rows
    best: dict[tuple[str, str], dict[int, float]] = {}
    best_attacks: dict[tuple[str, str], set[str]] = {}
    for (model, attack), group in groups.items():
        norm = group[0]["norm"]
        col = NORM_COLUMN[Norm(norm)]
        clean_m = clean.get(model, {})
        eps_list = eps_cfg.get(norm, [])
        status = "done" if all(c["status"] == "done" for c in group) else ("failed" if any(c["status"] == "failed" for c in group) else "incomplete")
        errors = [c["error"] for c in group if c["error"]]
        # samples attacked in every cell of the group
        idx_sets = [{s["idx"] for s in samples_by_cell[c["key"]]} for c in group]
        idx = set.intersection(*idx_sets) if idx_sets else set()
        idx &= set(clean_m)
        smallest: dict[int, float] = {}
        rejected = 0
        fwd, bwd, sec = [], [], []
        attacked = 0  # correctly classified rows over the cells: the samples an attack has to break
        cell_success: dict[float, float] = {}
        for c in group:
            rows_c = [s for s in samples_by_cell[c["key"]] if s["idx"] in idx]
            rejected += sum(s["rejected"] for s in rows_c)
            fwd += [s["forward"] for s in rows_c]
            bwd += [s["backward"] for s in rows_c]
            sec += [s["seconds"] for s in rows_c]
            correct_rows = [s for s in rows_c if s["clean_pred"] == s["label"]]
            attacked += len(correct_rows)
            if c["eps"] is not None and correct_rows:
                cell_success[c["eps"]] = sum(s["success"] for s in correct_rows) / len(correct_rows)
            for s in rows_c:
                if s["success"] and s[col] is not None:
                    smallest[s["idx"]] = min(smallest.get(s["idx"], math.inf), s[col])
        n = len(idx)
        correct = [i for i in idx if clean_m[i][0] == clean_m[i][1]]
        ra, ci = _robust(idx, clean_m, smallest, eps_list, norm)
        kind = group[0]["kind"]
        mean_norm = median_norm = None
        succ_rate = None
        if correct:
            found = [smallest[i] for i in correct if i in smallest]
            if kind == "minimal":
                succ_rate = len(found) / len(correct)
                if found:
                    mean_norm, median_norm = statistics.fmean(found), statistics.median(found)
            else:
                succ_rate = len(found) / len(correct)
        records: dict[str, float] = {}
        for c in group:
            records.update({f"{k}" + (f"@{c['eps']:g}" if len(group) > 1 and c["eps"] is not None else ""): v for k, v in c["records"].items()})
        row = Row(
            suite=suite, model=model, attack=attack, norm=norm, kind=kind, n=n,
            clean_accuracy=(len(correct) / n) if n else float("nan"),
            robust_accuracy=ra, robust_ci=ci, mean_norm=mean_norm, median_norm=median_norm, success_rate=succ_rate,
            rejected=rejected,
            # costs per sample attacked: a batch's passes and seconds over its correctly classified
            # samples (a misclassified one is already broken), not over every sample of the batch
            forward_per_sample=math.fsum(fwd) / attacked if fwd and attacked else None,
            backward_per_sample=math.fsum(bwd) / attacked if bwd and attacked else None,
            seconds_per_sample=math.fsum(sec) / attacked if sec and attacked else None,
            via_surrogate=any(c["via_surrogate"] for c in group), needs=group[0]["needs"], status=status,
            errors=errors, records=records, cell_success=cell_success, source=group[0]["source"], eps_list=eps_list,
        )
        rows.append(row)
        if group[0]["source"] is None:
            norm_samples[(model, attack, norm)] = (sorted(smallest[i] for i in correct if i in smallest), len(correct))
            b = best.setdefault((model, norm), {})
            best_attacks.setdefault((model, norm), set()).add(attack)
            for i, v in smallest.items():
                b[i] = min(b.get(i, math.inf), v)

    for (model, norm), smallest in best.items():
        clean_m = clean.get(model, {})
        idx = set(clean_m)
        ra, ci = _robust(idx, clean_m, smallest, eps_cfg.get(norm, []), norm)
        correct = [i for i in idx if clean_m[i][0] == clean_m[i][1]]
        found = [smallest[i] for i in correct if i in smallest]
        member_rows = [r for r in rows if r.model == model and r.norm == norm and r.source is None]
        norm_samples[(model, BEST, norm)] = (sorted(found), len(correct))
        minimal_found = [r for r in member_rows if r.kind == "minimal"]
        rows.append(Row(
            suite=suite, model=model, attack=BEST, norm=norm, kind="best", n=len(idx),
            clean_accuracy=len(correct) / len(idx) if idx else float("nan"), robust_accuracy=ra, robust_ci=ci,
            mean_norm=statistics.fmean(found) if found and minimal_found else None,
            median_norm=statistics.median(found) if found and minimal_found else None,
            success_rate=len(found) / len(correct) if correct else None,
            rejected=sum(r.rejected for r in member_rows),
            attacks=sorted(best_attacks[(model, norm)]), eps_list=eps_cfg.get(norm, []),
            status="done" if all(r.status == "done" for r in member_rows) else "incomplete",
        ))

    clean_summary = {m: (sum(1 for v in d.values() if v[0] == v[1]), len(d)) for m, d in clean.items()}
    warnings += masking_warnings(rows, config)
    cert = certified.compute(store, all_cells, samples_by_cell, {(r.model, r.norm): r.robust_accuracy for r in rows if r.attack == BEST}, clean)
    warnings += cert.pop("warnings")
    digest_src = "".join(sha for d in clean.values() for _, (_, _, sha) in sorted(d.items()))
    import hashlib

    res = SuiteResults(
        suite=suite, config=config, rows=rows, clean=clean_summary,
        noise={m: v for m, v in store.noise(suite).items() if not current_models or m in current_models},
        transfer=_transfer_matrices(rows), warnings=warnings, runs=store.runs(suite),
        sample_digest=hashlib.sha256(digest_src.encode()).hexdigest()[:16], norm_samples=norm_samples, certified=cert,
        source=store.path,
    )
    for r in rows:
        r.headline = res.headline(r.norm)
    res.curves = suite_curves(store, [c for c in cells if c["source"] is None])
    return res


def _robust(idx, clean_m, smallest, eps_list, norm):
    n = len(idx)
    ra, ci = {}, {}
    for eps in eps_list:
        broken = 0
        for i in idx:
            label, pred, _ = clean_m[i]
            if label != pred:
                broken += 1
            elif i in smallest and bool(within_eps(torch.tensor(smallest[i]), eps, Norm(norm))):
                broken += 1
        k = n - broken
        ra[eps] = k / n if n else float("nan")
        ci[eps] = wilson(k, n)
    return ra, ci


def _transfer_matrices(rows: list[Row]) -> list[dict[str, Any]]:
    """Source x target accuracy per eps, from transfer cells (and, on the diagonal, direct runs)."""
    out: dict[float, dict[str, Any]] = {}
    for r in rows:
        if r.source is None:
            continue
        for eps, acc in r.robust_accuracy.items():
            m = out.setdefault(eps, {"norm": r.norm, "eps": eps, "sources": [], "targets": [], "accuracy": {}})
            if r.source not in m["sources"]:
                m["sources"].append(r.source)
            if r.model not in m["targets"]:
                m["targets"].append(r.model)
            m["accuracy"][f"{r.source}->{r.model}"] = acc
    return [out[e] for e in sorted(out)]


def masking_warnings(rows: list[Row], config: dict[str, Any]) -> list[str]:
    """Signs that gradients may be masked or an attack is too weak (shown under the tables)."""
    warnings = []
    by_model_norm: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.attack != BEST and r.source is None:
            by_model_norm.setdefault((r.model, r.norm), []).append(r)
    for (model, norm), group in by_model_norm.items():
        eps_list = sorted(group[0].eps_list)
        head = None
        if eps_list:
            head = float((config.get("headline") or {}).get(norm, eps_list[len(eps_list) // 2]))
        grad = [r for r in group if "gradients" in r.needs and not r.via_surrogate]
        blind = [r for r in group if not {"gradients", "transfer", "weights"} & set(r.needs)]  # black-box: no weights read
        if head is not None and grad and blind:
            g_best = min(r.robust_accuracy.get(head, 1.0) for r in grad)
            for r in blind:
                if r.robust_accuracy.get(head, 1.0) < g_best - 1e-12:
                    warnings.append(
                        f"{model} ({norm}): the gradient-free attack {r.attack} beats every gradient attack at eps {head:g} "
                        f"({r.robust_accuracy[head]:.3f} vs {g_best:.3f}): gradients may be masked"
                    )
        for r in group:
            if r.kind == "bounded" and len(r.cell_success) > 1:
                es = sorted(r.cell_success)
                for lo, hi in zip(es, es[1:]):
                    if r.cell_success[hi] < r.cell_success[lo] - 1e-12:
                        warnings.append(
                            f"{model} / {r.attack}: success rate drops from {r.cell_success[lo]:.3f} at eps {lo:g} "
                            f"to {r.cell_success[hi]:.3f} at eps {hi:g}: the attack is not monotone in eps (masking or too few steps)"
                        )
            if r.kind == "minimal" and r.success_rate is not None and r.success_rate < 0.9:
                warnings.append(
                    f"{model} / {r.attack}: the minimal attack failed on {1 - r.success_rate:.0%} of correctly classified samples "
                    "(an unbounded attack should almost always succeed: masking, or too small a budget)"
                )
            if r.rejected:
                blanked = any(v > 0 for k, v in r.records.items() if k.split("@")[0] == "budget_blanked_rows")
                warnings.append(f"{model} / {r.attack}: {r.rejected} adversarial(s) returned by the attack were rejected by verification"
                                + (" (the budget bound it: past a sample's budget the attack sees constant scores, argmax class 0, "
                                   "and can take a point for adversarial that is not; its verified best within budget is kept)"
                                   if blanked else ""))
            if r.status != "done":
                warnings.append(f"{model} / {r.attack}: cell status {r.status}" + (f" ({r.errors[0].strip().splitlines()[-1]})" if r.errors else ""))
    return warnings
