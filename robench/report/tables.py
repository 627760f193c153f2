"""Results to tables, as data: every leaderboard table is built once here as a :class:`Table` of
:class:`Cell` (display text + raw value) and then rendered as markdown (:mod:`robench.report.markdown`)
or sortable HTML (:mod:`robench.report.html`), so both show the same numbers: the JSON's numbers
rounded for display. The JSON and CSV exports are :mod:`robench.report.export`; the provenance lines under a
leaderboard and the model cards, :mod:`robench.report.provenance`. Pure: reads no store and writes no file except what it is given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..metrics import BEST, Row, SuiteResults, wilson
from .provenance import model_cards, provenance, provenance_lines  # noqa: F401  (robench.report.tables.provenance_lines, as before)

NORM_ORDER = ["L0", "L1", "L2", "Linf"]
WARN = "⚠"
#: Marks an L0 attack that minimises changed channel values while the board counts changed pixels.
VALUES_MARK = "‡"
#: Attack plugins whose L0 search changes single channel values (a pixel of a colour image has 3),
#: so what they minimise is the number of changed values, not the changed pixels the board counts
#: (pdpgd's grouped threshold, pixel and art-pixel change whole pixels).
L0_VALUE_PLUGINS = frozenset({"fb-bb", "fb-fmn", "art-jsma", "jsma", "art-cw-l0"})


def is_missing(v: Any) -> bool:
    """None or NaN: shown as a dash, sorted last."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def pct(v: float | None) -> str:
    """A share as a percentage with one decimal."""
    return "–" if is_missing(v) else f"{100 * v:.1f}"


def num(v: float | None, norm: str | None = None) -> str:
    """A norm or a count per sample: 4 significant digits (L0 pixel counts: 2 decimals)."""
    if is_missing(v):
        return "–"
    if norm == "L0":
        return f"{v:.2f}"
    return f"{v:.4g}"


def eps_text(e: float) -> str:
    """An eps as the suite writes it (0.03, 1, 2.5): also the JSON's key."""
    return f"{e:g}"


def ranked_models(res: SuiteResults, norm: str) -> list[Row]:
    """The "best" rows of a norm, most robust first (at the headline eps), then by clean accuracy."""
    head = res.headline(norm)
    best = [r for r in res.rows if r.norm == norm and r.attack == BEST]
    return sorted(best, key=lambda r: (-(r.robust_accuracy.get(head, 0.0) if head is not None else 0.0),
                                       -(r.mean_norm or 0.0), -r.clean_accuracy, r.model))


def norms_of(res: SuiteResults) -> list[str]:
    return [nm for nm in NORM_ORDER if any(r.norm == nm for r in res.rows)]


# -- tables as data ------------------------------------------------------------------------------


@dataclass
class Cell:
    """One table cell: what is shown, and the raw value behind it (sort key; None when missing).

    ``ref`` = (attack, JSON path) names the JSON row field the value comes from (the row's model
    and norm are the table row's), e.g. ``("best", "robust_accuracy/0.03")``.
    """

    text: str
    value: float | int | str | None = None
    title: str | None = None  # tooltip in HTML (e.g. the warnings behind a ⚠)
    ref: tuple[str, str] | None = None


@dataclass
class Table:
    key: str  # stable id, e.g. "ranking-Linf"
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""  # one line shown above the table
    row_ids: list[dict[str, str]] = field(default_factory=list)  # per row: model, norm (for cell refs)


def _pct_cell(v: float | None, suffix: str = "", ref: tuple[str, str] | None = None) -> Cell:
    return Cell(pct(v) + suffix, None if is_missing(v) else v, ref=ref)


def _num_cell(v: float | None, norm: str | None = None, suffix: str = "", ref: tuple[str, str] | None = None) -> Cell:
    return Cell(num(v, norm) + suffix, None if is_missing(v) else v, ref=ref)


def model_warnings(res: SuiteResults, model: str) -> list[str]:
    """Warnings (masking, rejections, failures) that concern ``model``."""
    return [w for w in res.warnings if w.startswith(f"{model} (") or w.startswith(f"{model} / ")]


def per_attack_rows(res: SuiteResults, norm: str) -> list[Row]:
    return [r for r in res.rows if r.norm == norm and r.attack != BEST and r.source is None]


def attack_plugins(res: SuiteResults) -> dict[str, str]:
    """Attack name -> plugin name, from the suite's config (empty for a store without one)."""
    out = {}
    for a in res.config.get("attacks") or []:
        if isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("plugin"), str):
            out[a["name"]] = a["plugin"]
    return out


def value_l0_attacks(res: SuiteResults, norm: str) -> list[str]:
    """The attacks of ``norm`` (L0 only) that minimise changed values rather than pixels, in suite order."""
    if norm != "L0":
        return []
    plugins = attack_plugins(res)
    names = dict.fromkeys(r.attack for r in per_attack_rows(res, norm))
    return [a for a in names if plugins.get(a) in L0_VALUE_PLUGINS]


def values_note(res: SuiteResults, norm: str) -> str:
    """The line under an L0 table that has attacks marked with :data:`VALUES_MARK` ("" when none)."""
    marked = value_l0_attacks(res, norm)
    if not marked:
        return ""
    plugins = attack_plugins(res)
    return (f"{VALUES_MARK} " + ", ".join(f"{a} ({plugins[a]})" for a in marked)
            + (" minimises" if len(marked) == 1 else " minimise")
            + " the number of changed channel values, not of changed pixels; the board counts every adversarial "
            "in changed pixels (a pixel is changed if any channel is), so "
            + ("it is" if len(marked) == 1 else "they are") + " scored on a count "
            + ("it does" if len(marked) == 1 else "they do") + " not optimise.")


def clean_ci(r: Row) -> tuple[float, float]:
    """95% Wilson interval of a row's clean accuracy (over the row's ``n`` samples)."""
    if is_missing(r.clean_accuracy) or not r.n:
        return (float("nan"), float("nan"))
    return wilson(round(r.clean_accuracy * r.n), r.n)


def ci_text(v: float | None, ci: tuple[float, float]) -> str:
    """A share with its interval: ``92.5 [88.0, 95.4]``."""
    return f"{pct(v)} [{pct(ci[0])}, {pct(ci[1])}]"


def ranking_table(res: SuiteResults, norm: str) -> Table:
    """RobustBench-style ranking of one norm: models by robust accuracy of *best* at the headline eps.

    Columns, key ones first (so a narrow window shows them without scrolling): rank, model, clean
    accuracy, robust accuracy at the headline eps, the strongest attack, success; then the other
    eps, each attack's score, rejections and time.
    """
    head = res.headline(norm)
    eps_list = sorted(float(e) for e in res.config.get("epsilons", {}).get(norm, []))
    others = [e for e in eps_list if e != head]
    attack_rows = per_attack_rows(res, norm)
    attacks = list(dict.fromkeys(r.attack for r in attack_rows))
    marked = set(value_l0_attacks(res, norm))
    head_txt = eps_text(head) if head is not None else "?"
    headers = ["#", "Model", "Clean"] + ([f"ε={head_txt}"] if head in eps_list else [])
    headers += [f"Strongest attack @{head_txt}", "Success"] + [f"ε={eps_text(e)}" for e in others]
    for a in attacks:
        kinds = {r.kind for r in attack_rows if r.attack == a}
        mark = f" {VALUES_MARK}" if a in marked else ""
        headers.append(f"{a}{mark} mean {norm}" if kinds == {"minimal"} else f"{a}{mark} @{head_txt}")
    headers += ["Rejected", "s/sample (all attacks)"]
    note = (f"Ranked by robust accuracy of *best* at {norm} eps = {head_txt}; clean and robust accuracy (%) [95% Wilson interval]."
            + (" L0 counts pixels." if norm == "L0" else ""))
    table = Table(f"ranking-{norm}", headers, note=note)

    def robust(best: Row, e: float) -> Cell:
        v = best.robust_accuracy.get(e)
        ci = best.robust_ci.get(e, (float("nan"), float("nan")))
        return Cell(ci_text(v, ci), None if is_missing(v) else v, ref=(BEST, f"robust_accuracy/{eps_text(e)}"))

    for rank, best in enumerate(ranked_models(res, norm), 1):
        warns = model_warnings(res, best.model)
        cells = [Cell(str(rank), rank),
                 Cell(best.model + (f" {WARN}" if warns else ""), best.model, "\n".join(warns) or None),
                 Cell(ci_text(best.clean_accuracy, clean_ci(best)), None if is_missing(best.clean_accuracy) else best.clean_accuracy,
                      ref=(BEST, "clean_accuracy"))]
        if head in eps_list:
            cells.append(robust(best, head))
        mine = {r.attack: r for r in attack_rows if r.model == best.model}
        scored = [r for r in mine.values() if head is not None and not is_missing(r.robust_accuracy.get(head))]
        if scored:
            low = min(r.robust_accuracy[head] for r in scored)
            # on a tie every attack at the lowest robust accuracy is named, in the suite's order
            tied = [a for a in attacks if a in mine and mine[a] in scored and mine[a].robust_accuracy[head] == low]
            # more than three: the first three and a count (the tooltip names them all)
            shown = ", ".join(tied[:3]) + (f" +{len(tied) - 3} more" if len(tied) > 3 else "")
            cells.append(Cell(f"{shown} ({pct(low)})", low, ", ".join(tied) if len(tied) > 3 else None,
                              ref=(tied[0], f"robust_accuracy/{head_txt}")))
        else:
            cells.append(Cell("–"))
        cells.append(_pct_cell(best.success_rate, ref=(BEST, "success_rate")))
        cells += [robust(best, e) for e in others]
        for a in attacks:
            r = mine.get(a)
            if r is None:
                cells.append(Cell("n/a"))
            elif r.kind == "minimal":
                cells.append(_num_cell(r.mean_norm, norm, " †" if r.via_surrogate else "", ref=(a, "mean_norm")))
            else:
                cells.append(_pct_cell(r.robust_accuracy.get(head), " †" if r.via_surrogate else "", ref=(a, f"robust_accuracy/{head_txt}")))
        # attack time per sample summed over every cell (a bounded attack runs once per eps)
        timed = [r.seconds_per_sample * (max(1, len(r.eps_list)) if r.kind == "bounded" else 1)
                 for r in mine.values() if r.seconds_per_sample is not None]
        cells += [Cell(str(best.rejected), best.rejected, ref=(BEST, "rejected")), _num_cell(sum(timed) if timed else None)]
        table.rows.append(cells)
        table.row_ids.append({"model": best.model, "norm": norm})
    return table


def attack_table(res: SuiteResults, norm: str) -> Table:
    """One line per model and attack of a norm: robust accuracy per eps, norms, success, cost."""
    eps_list = sorted(float(e) for e in res.config.get("epsilons", {}).get(norm, []))
    headers = ["Model", "Attack", "Kind"] + [f"ε={eps_text(e)}" for e in eps_list] + [
        f"Mean {norm}", f"Median {norm}", "Success", "Rejected", "Fwd/sample", "Bwd/sample", "s/sample", "Status"]
    table = Table(f"attacks-{norm}", headers)
    marked = set(value_l0_attacks(res, norm))
    for r in sorted(per_attack_rows(res, norm), key=lambda r: (r.model, r.attack)):
        # an attack that read the model's weights (declared need "weights") is white box: say so with its kind
        kind = r.kind + (", reads weights" if "weights" in r.needs else "")
        cells = [Cell(r.model, r.model), Cell(r.attack + (f" {VALUES_MARK}" if r.attack in marked else "") + (" †" if r.via_surrogate else ""), r.attack), Cell(kind, r.kind)]
        a = r.attack
        cells += [_pct_cell(r.robust_accuracy.get(e), ref=(a, f"robust_accuracy/{eps_text(e)}")) for e in eps_list]
        cells += [_num_cell(r.mean_norm, norm, ref=(a, "mean_norm")), _num_cell(r.median_norm, norm, ref=(a, "median_norm")),
                  _pct_cell(r.success_rate, ref=(a, "success_rate")), Cell(str(r.rejected), r.rejected, ref=(a, "rejected")),
                  _num_cell(r.forward_per_sample, ref=(a, "forward_per_sample")),
                  _num_cell(r.backward_per_sample, ref=(a, "backward_per_sample")),
                  _num_cell(r.seconds_per_sample, ref=(a, "seconds_per_sample")), Cell(r.status, r.status, ref=(a, "status"))]
        table.rows.append(cells)
        table.row_ids.append({"model": r.model, "norm": norm})
    return table


def _mean(vals: list[float]) -> float | None:
    vals = [v for v in vals if not is_missing(v)]
    return sum(vals) / len(vals) if vals else None


def attack_ranking_table(res: SuiteResults, norm: str) -> Table | None:
    """The attacks of one norm ranked across models, as AttackBench does: by robust accuracy at the
    headline eps averaged over the models each attack ran on (lower = stronger), then by mean norm
    (minimal attacks). None when the norm has fewer than two attacks."""
    head = res.headline(norm)
    rows = per_attack_rows(res, norm)
    attacks = list(dict.fromkeys(r.attack for r in rows))
    if len(attacks) < 2:
        return None
    head_txt = eps_text(head) if head is not None else "?"
    plugins = attack_plugins(res)
    marked = set(value_l0_attacks(res, norm))
    strongest: dict[str, int] = {a: 0 for a in attacks}
    for model in dict.fromkeys(r.model for r in rows):
        scored = {r.attack: r.robust_accuracy[head] for r in rows if r.model == model and head is not None
                  and not is_missing(r.robust_accuracy.get(head))}
        if scored:
            low = min(scored.values())
            for a, v in scored.items():
                strongest[a] += v == low
    # averaged over the models every attack ran on, so that each attack is scored on the same models
    # (a suite where no model has them all: each attack over its own models, and the note says so)
    common = set.intersection(*({r.model for r in rows if r.attack == a} for a in attacks))
    stats = []
    for a in attacks:
        mine = [r for r in rows if r.attack == a and (r.model in common or not common)]
        stats.append((a, mine, _mean([r.robust_accuracy.get(head) for r in mine]) if head is not None else None,
                      _mean([r.mean_norm for r in mine if r.kind == "minimal"])))
    stats.sort(key=lambda t: (t[2] if t[2] is not None else math.inf, t[3] if t[3] is not None else math.inf, t[0]))
    headers = ["#", "Attack", "Plugin", "Kind", "Models", f"Mean robust @{head_txt}", f"Mean {norm}", "Strongest on",
               "Mean success", "Mean s/sample"]
    table = Table(f"attack-ranking-{norm}", headers, note=(
        f"Attacks ranked by robust accuracy (%) at {norm} eps = {head_txt} (lower = stronger), then by mean {norm} of their "
        "adversarials (minimal attacks), each averaged over "
        + ("the models every attack ran on" if common else "the models each attack ran on (no model has them all)")
        + ". *Strongest on* = on how many models (of all) it is or ties for the strongest attack."))
    for rank, (a, mine, mean_ra, mean_norm) in enumerate(stats, 1):
        kinds = ", ".join(sorted({r.kind for r in mine}))
        n_models = len({r.model for r in mine})
        table.rows.append([
            Cell(str(rank), rank), Cell(a + (f" {VALUES_MARK}" if a in marked else ""), a),
            Cell(plugins.get(a, "–"), plugins.get(a)), Cell(kinds, kinds), Cell(str(n_models), n_models),
            _pct_cell(mean_ra), _num_cell(mean_norm, norm), Cell(str(strongest[a]), strongest[a]),
            _pct_cell(_mean([r.success_rate for r in mine])), _num_cell(_mean([r.seconds_per_sample for r in mine]))])
    return table


def models_table(res: SuiteResults) -> Table | None:
    """One line per model of the suite (a card, compactly): plugin and its version, parameters as the
    suite gives them, samples, clean accuracy with its interval, and its rank per norm. None when the
    suite config lists no models (a hand-made store)."""
    models = [m for m in res.config.get("models") or [] if isinstance(m, dict) and isinstance(m.get("name"), str)]
    if not models:
        return None
    versions = provenance(res).get("plugins", {})
    norms = norms_of(res)
    ranks = {nm: {r.model: i for i, r in enumerate(ranked_models(res, nm), 1)} for nm in norms}
    cards = model_cards(res)
    table = Table("models", ["Model", "Plugin", "Parameters", "Samples", "Clean"] + [f"Rank {nm}" for nm in norms]
                  + ["Weights SHA-256", "Weights from", "Training", "Description"],
                  note="Each model as the suite defines it (plugin, parameters) with the plugin's version from the last run. "
                       "Weights SHA-256 (first 12 hex digits; hover for all), where they came from, the training time "
                       "and the plugin's description are those the last run that loaded the model recorded (– when none did).")
    for m in models:
        name, plugin = m["name"], str(m.get("plugin", "–"))
        params = json.dumps(m.get("params") or {}, sort_keys=True, separators=(", ", ": "))
        version = versions.get(f"model:{plugin}")
        k, n = res.clean.get(name, (0, 0))
        clean = k / n if n else None
        row = [Cell(name, name), Cell(plugin + (f" ({version})" if version else ""), plugin), Cell(params, params),
               Cell(str(n), n), Cell(ci_text(clean, wilson(k, n)) if n else "–", clean)]
        row += [Cell(str(ranks[nm][name]), ranks[nm][name]) if name in ranks[nm] else Cell("–") for nm in norms]
        card = cards.get(name, {})
        sha, origin, secs, desc = (card.get(k) for k in ("weights_sha256", "weights_origin", "train_seconds", "description"))
        row += [Cell(sha[:12], sha, sha) if isinstance(sha, str) and sha else Cell("–"),
                Cell(origin, origin) if isinstance(origin, str) and origin else Cell("–"),
                Cell(train_time_text(secs), float(secs)) if isinstance(secs, (int, float)) else Cell("–"),
                Cell(desc, desc) if isinstance(desc, str) and desc else Cell("–")]
        table.rows.append(row)
    return table


def train_time_text(seconds: float) -> str:
    """A training time for people: 0.4 s, 42 s, 3.5 min, 1.2 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def noise_table(res: SuiteResults) -> Table:
    sigmas = sorted({s for d in res.noise.values() for s in d})
    table = Table("noise", ["Model"] + [f"σ={eps_text(s)}" for s in sigmas],
                  note="Accuracy (%) under x + N(0, σ²), clipped to [0, 1].")
    for model, d in sorted(res.noise.items()):
        table.rows.append([Cell(model, model)] + [_pct_cell(d[s][0] / d[s][1]) if s in d else Cell("–") for s in sigmas])
    return table


def transfer_table(m: dict) -> Table:
    table = Table(f"transfer-{m['norm']}-{eps_text(m['eps'])}", ["source \\ target"] + list(m["targets"]),
                  note="Accuracy (%) of each target (column) on adversarials crafted white-box on each source (row).")
    for s in m["sources"]:
        table.rows.append([Cell(s, s)] + [_pct_cell(m["accuracy"].get(f"{s}->{t}")) for t in m["targets"]])
    return table


def clean_only_table(res: SuiteResults) -> Table | None:
    models = sorted(set(res.clean) - {r.model for r in res.rows})
    if not models:
        return None
    table = Table("clean-only", ["Model", "Clean"])
    for m in models:
        table.rows.append([Cell(m, m), _pct_cell(res.clean[m][0] / res.clean[m][1])])
    return table


def summary_lines(res: SuiteResults) -> list[str]:
    """Dataset and method lines shown under a suite's title."""
    cfg = res.config
    ds = cfg.get("dataset", {})
    n = max((v[1] for v in res.clean.values()), default=0)
    cls = f", classes {ds.get('classes')}" if ds.get("classes") else ""
    limit = ds.get("limit")
    # a run with --limit: the suite's prose (the description) may describe its full run; the data says which this is
    short = (f" This run has {n} of the suite's {limit} samples (a run with --limit): where the description above "
             f"speaks of {limit}, the numbers here are for the first {n}.") if isinstance(limit, int) and 0 < n < limit else ""
    return [
        f"Dataset **{ds.get('name')}** ({ds.get('split')} split{cls}, {n} samples from offset {ds.get('offset', 0)}); seed {cfg.get('seed')}."
        + short,
        "Robust accuracy (%) = correctly classified and no verified adversarial within eps (clean errors count as broken); "
        "[95% Wilson interval] on clean and robust accuracy. *best* = per sample, the smallest verified adversarial over all attacks of that norm. "
        f"*Strongest attack* = the single attack with the lowest robust accuracy (every one of them on a tie). "
        f"Costs (passes, s/sample) are per sample attacked: over the correctly classified samples. {WARN} = see the warnings below.",
    ]
