"""Leaderboards from a results store: markdown, JSON, CSV and PNG plots."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

from .metrics import BEST, Row, SuiteResults, compute
from .store import Store, iter_stores

NORM_ORDER = ["L0", "L1", "L2", "Linf"]


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _num(v: float | None, norm: str | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if norm == "L0":
        return f"{v:.2f}"
    return f"{v:.4g}"


def _eps(e: float) -> str:
    return f"{e:g}"


def load_results(path: str | Path) -> list[SuiteResults]:
    """Every suite of every store under ``path`` (a store file or a folder of runs)."""
    out = []
    stores = list(iter_stores(path))
    if not stores:
        from .errors import UserInputError

        raise UserInputError(f"no results store found at {path} (expected a results.sqlite file or a folder holding one)")
    for p in stores:
        with Store(p, create=False) as store:
            for suite in store.suites():
                out.append(compute(store, suite))
    return out


def ranked_models(res: SuiteResults, norm: str) -> list[Row]:
    """The "best" rows of a norm, most robust first (at the headline eps), then by clean accuracy."""
    head = res.headline(norm)
    best = [r for r in res.rows if r.norm == norm and r.attack == BEST]
    return sorted(best, key=lambda r: (-(r.robust_accuracy.get(head, 0.0) if head is not None else 0.0),
                                       -(r.mean_norm or 0.0), -r.clean_accuracy, r.model))


def to_markdown(res: SuiteResults) -> str:
    cfg = res.config
    ds = cfg.get("dataset", {})
    n = max((v[1] for v in res.clean.values()), default=0)
    lines = [f"# Leaderboard: {res.suite}", ""]
    if cfg.get("description"):
        lines += [cfg["description"].strip(), ""]
    cls = f", classes {ds.get('classes')}" if ds.get("classes") else ""
    lines += [
        f"Dataset **{ds.get('name')}** ({ds.get('split')} split{cls}, {n} samples from offset {ds.get('offset', 0)}); seed {cfg.get('seed')}.",
        "Robust accuracy (%) = correctly classified and no verified adversarial within eps (clean errors count as broken); "
        "[95% Wilson interval]. *best* = per sample, the smallest verified adversarial over all attacks of that norm.",
        "",
    ]
    norms = [nm for nm in NORM_ORDER if any(r.norm == nm for r in res.rows)]
    for norm in norms:
        lines += _norm_section(res, norm)
    if res.noise:
        lines += _noise_section(res)
    for m in res.transfer:
        lines += _transfer_section(m)
    models_without_rows = sorted(set(res.clean) - {r.model for r in res.rows})
    if models_without_rows:
        lines += ["## Clean accuracy only", "", "| Model | Clean |", "|---|---|"]
        lines += [f"| {m} | {_pct(res.clean[m][0] / res.clean[m][1])} |" for m in models_without_rows] + [""]
    if res.warnings:
        lines += ["## Warnings", ""] + [f"- ⚠ {w}" for w in res.warnings] + [""]
    lines += _provenance(res)
    return "\n".join(lines).rstrip() + "\n"


def _norm_section(res: SuiteResults, norm: str) -> list[str]:
    head = res.headline(norm)
    eps_list = sorted(float(e) for e in res.config.get("epsilons", {}).get(norm, []))
    attack_rows = [r for r in res.rows if r.norm == norm and r.attack != BEST and r.source is None]
    attacks = list(dict.fromkeys(r.attack for r in attack_rows))
    out = [f"## {norm}", ""]
    if head is not None:
        out += [f"Ranked by robust accuracy of *best* at {norm} eps = {_eps(head)}." + (" L0 counts pixels." if norm == "L0" else ""), ""]
    header = ["#", "Model", "Clean"] + [f"ε={_eps(e)}" for e in eps_list]
    for a in attacks:
        kinds = {r.kind for r in attack_rows if r.attack == a}
        header.append(f"{a} mean {norm}" if kinds == {"minimal"} else f"{a} @{_eps(head) if head is not None else '?'}")
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, best in enumerate(ranked_models(res, norm), 1):
        cells = [str(rank), best.model, _pct(best.clean_accuracy)]
        for e in eps_list:
            lo, hi = best.robust_ci.get(e, (float("nan"), float("nan")))
            cells.append(f"{_pct(best.robust_accuracy.get(e))} [{_pct(lo)}, {_pct(hi)}]")
        for a in attacks:
            r = next((r for r in attack_rows if r.attack == a and r.model == best.model), None)
            if r is None:
                cells.append("n/a")
            elif r.kind == "minimal":
                cells.append(_num(r.mean_norm, norm) + (" †" if r.via_surrogate else ""))
            else:
                cells.append(_pct(r.robust_accuracy.get(head)) + (" †" if r.via_surrogate else ""))
        out.append("| " + " | ".join(cells) + " |")
    out += ["", f"### {norm}: per attack", ""]
    header = ["Model", "Attack", "Kind"] + [f"ε={_eps(e)}" for e in eps_list] + [
        f"Mean {norm}", f"Median {norm}", "Success", "Rejected", "Fwd/sample", "Bwd/sample", "s/sample", "Status"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(attack_rows, key=lambda r: (r.model, r.attack)):
        cells = [r.model, r.attack + (" †" if r.via_surrogate else ""), r.kind]
        cells += [_pct(r.robust_accuracy.get(e)) for e in eps_list]
        cells += [_num(r.mean_norm, norm), _num(r.median_norm, norm), _pct(r.success_rate), str(r.rejected),
                  _num(r.forward_per_sample), _num(r.backward_per_sample), _num(r.seconds_per_sample), r.status]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if any(r.via_surrogate for r in attack_rows):
        out += ["† via surrogate: the model is not differentiable; the attack used its differentiable surrogate, "
                "and every adversarial was verified on the real model.", ""]
    recs = [r for r in attack_rows if r.records]
    if recs:
        out += ["Attack-reported figures: " + "; ".join(
            f"{r.model}/{r.attack}: " + ", ".join(f"{k} = {v:.4g}" for k, v in sorted(r.records.items())) for r in recs), ""]
    return out


def _noise_section(res: SuiteResults) -> list[str]:
    sigmas = sorted({s for d in res.noise.values() for s in d})
    out = ["## Gaussian noise", "", "Accuracy (%) under x + N(0, σ²), clipped to [0, 1].", "",
           "| Model | " + " | ".join(f"σ={_eps(s)}" for s in sigmas) + " |", "|---|" + "---|" * len(sigmas)]
    for model, d in sorted(res.noise.items()):
        out.append(f"| {model} | " + " | ".join(_pct(d[s][0] / d[s][1]) if s in d else "–" for s in sigmas) + " |")
    return out + [""]


def _transfer_section(m: dict) -> list[str]:
    out = [f"## Transfer: {m['norm']} eps = {_eps(m['eps'])}", "",
           "Accuracy (%) of each target (column) on adversarials crafted white-box on each source (row).", "",
           "| source \\ target | " + " | ".join(m["targets"]) + " |", "|---|" + "---|" * len(m["targets"])]
    for s in m["sources"]:
        out.append(f"| {s} | " + " | ".join(_pct(m["accuracy"].get(f"{s}->{t}")) for t in m["targets"]) + " |")
    return out + [""]


def _provenance(res: SuiteResults) -> list[str]:
    if not res.runs:
        return []
    last = res.runs[-1]
    p = last["provenance"]
    v = p.get("versions", {})
    when = time.strftime("%Y-%m-%d", time.localtime(last["started"]))
    out = ["---", "",
           f"<sub>robench {v.get('robench')} · torch {v.get('torch')} · numpy {v.get('numpy')}"
           + "".join(f" · {k} {v[k]}" for k in ("foolbox", "adversarial-robustness-toolbox", "tensorflow", "larq") if k in v)
           + f" · device {p.get('device')} · seed {p.get('seed')} · suite hash {p.get('suite_hash')}"
           + f" · samples digest {res.sample_digest} · git {str(p.get('git_commit'))[:10]} · {len(res.runs)} run(s), last {when}</sub>"]
    plugins = p.get("plugins", {})
    if plugins:
        out.append("")
        out.append("<sub>plugins: " + ", ".join(f"{k} ({val})" for k, val in sorted(plugins.items())) + "</sub>")
    return out


def to_json(results: list[SuiteResults]) -> str:
    """A list of rows (NaN written as null)."""
    return json.dumps(rows_json(results), indent=2)


def _clean_nan(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nan(v) for v in obj]
    return obj


def rows_json(results: list[SuiteResults]) -> list[dict]:
    return [_clean_nan(r.to_json()) for res in results for r in res.rows]


def to_csv(results: list[SuiteResults]) -> str:
    eps_cols = sorted({(r.norm, e) for res in results for r in res.rows for e in r.robust_accuracy}, key=lambda t: (NORM_ORDER.index(t[0]), t[1]))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["suite", "model", "attack", "norm", "kind", "n", "clean_accuracy"] + [f"robust_{n}_{_eps(e)}" for n, e in eps_cols]
               + ["mean_norm", "median_norm", "success_rate", "rejected", "forward_per_sample", "backward_per_sample", "seconds_per_sample", "via_surrogate", "status"])
    for res in results:
        for r in res.rows:
            w.writerow([r.suite, r.model, r.attack, r.norm, r.kind, r.n, r.clean_accuracy]
                       + [r.robust_accuracy.get(e, "") if r.norm == n else "" for n, e in eps_cols]
                       + [r.mean_norm, r.median_norm, r.success_rate, r.rejected, r.forward_per_sample, r.backward_per_sample,
                          r.seconds_per_sample, r.via_surrogate, r.status])
    return buf.getvalue()


def plot(res: SuiteResults, path: Path) -> Path | None:
    """Robust accuracy vs eps per model (best of attacks, with 95% bands), one panel per norm, plus noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = [n for n in NORM_ORDER if any(r.norm == n and r.attack == BEST and r.robust_accuracy for r in res.rows)]
    panels = norms + (["noise"] if res.noise else [])
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "noise":
            for model, d in sorted(res.noise.items()):
                s = sorted(d)
                ax.plot(s, [d[k][0] / d[k][1] for k in s], marker="o", label=model)
            ax.set_xscale("log")
            ax.set_xlabel("Gaussian noise σ")
            ax.set_title("accuracy under noise")
        else:
            for r in ranked_models(res, panel):
                e = sorted(r.robust_accuracy)
                xs = [0.0] + e
                ys = [r.clean_accuracy] + [r.robust_accuracy[k] for k in e]
                lo = [r.clean_accuracy] + [r.robust_ci[k][0] for k in e]
                hi = [r.clean_accuracy] + [r.robust_ci[k][1] for k in e]
                (line,) = ax.plot(xs, ys, marker="o", label=r.model)
                ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
            ax.set_xlabel(f"{panel} eps" + (" (pixels)" if panel == "L0" else ""))
            ax.set_title(f"{res.suite}: {panel} (best of attacks)")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("robust accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def publish(results: list[SuiteResults], to: Path) -> list[Path]:
    """Write ``<suite>.md``, ``<suite>.json``, ``<suite>.csv`` and ``<suite>.png`` per suite, and an index."""
    to.mkdir(parents=True, exist_ok=True)
    written = []
    for res in results:
        png = plot(res, to / f"{res.suite}.png")
        md = to_markdown(res)
        if png is not None:
            md = md.replace("\n## ", f"\n![robust accuracy vs eps]({png.name})\n\n## ", 1)
        for suffix, text in ((".md", md), (".json", json.dumps(rows_json([res]), indent=2)), (".csv", to_csv([res]))):
            p = to / f"{res.suite}{suffix}"
            p.write_text(text)
            written.append(p)
        if png is not None:
            written.append(png)
    written.append(_write_index(to))
    return written


def _write_index(to: Path) -> Path:
    lines = ["# Leaderboards", "", "Published with `robench publish`. One page per suite.", "", "| Suite | Models | Page |", "|---|---|---|"]
    for md in sorted(to.glob("*.md")):
        if md.name == "README.md":
            continue
        data = to / f"{md.stem}.json"
        models = len({r["model"] for r in json.loads(data.read_text())}) if data.exists() else "?"
        lines.append(f"| {md.stem} | {models} | [{md.name}]({md.name}) |")
    index = to / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index
