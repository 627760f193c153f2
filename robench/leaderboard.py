"""Leaderboards from a results store: markdown, JSON, CSV, plots (PNG + SVG) and store diffs.

Every table is built once as a :class:`Table` of :class:`Cell` (display text + raw value) and then
rendered: as markdown here, as sortable HTML in :mod:`robench.site`. Both therefore show the same
numbers, and both are the JSON's numbers rounded for display.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import BEST, Row, SuiteResults, compute
from .store import Store, iter_stores

NORM_ORDER = ["L0", "L1", "L2", "Linf"]
WARN = "⚠"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _pct(v: float | None) -> str:
    return "–" if _missing(v) else f"{100 * v:.1f}"


def _num(v: float | None, norm: str | None = None) -> str:
    if _missing(v):
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
    return Cell(_pct(v) + suffix, None if _missing(v) else v, ref=ref)


def _num_cell(v: float | None, norm: str | None = None, suffix: str = "", ref: tuple[str, str] | None = None) -> Cell:
    return Cell(_num(v, norm) + suffix, None if _missing(v) else v, ref=ref)


def model_warnings(res: SuiteResults, model: str) -> list[str]:
    """Warnings (masking, rejections, failures) that concern ``model``."""
    return [w for w in res.warnings if w.startswith(f"{model} (") or w.startswith(f"{model} / ")]


def _attack_rows(res: SuiteResults, norm: str) -> list[Row]:
    return [r for r in res.rows if r.norm == norm and r.attack != BEST and r.source is None]


def ranking_table(res: SuiteResults, norm: str) -> Table:
    """RobustBench-style ranking of one norm: models by robust accuracy of *best* at the headline eps."""
    head = res.headline(norm)
    eps_list = sorted(float(e) for e in res.config.get("epsilons", {}).get(norm, []))
    attack_rows = _attack_rows(res, norm)
    attacks = list(dict.fromkeys(r.attack for r in attack_rows))
    head_txt = _eps(head) if head is not None else "?"
    headers = ["#", "Model", "Clean"] + [f"ε={_eps(e)}" for e in eps_list]
    for a in attacks:
        kinds = {r.kind for r in attack_rows if r.attack == a}
        headers.append(f"{a} mean {norm}" if kinds == {"minimal"} else f"{a} @{head_txt}")
    headers += [f"Strongest attack @{head_txt}", "Success", "Rejected", "s/sample (all attacks)"]
    note = (f"Ranked by robust accuracy of *best* at {norm} eps = {head_txt} [95% Wilson interval]."
            + (" L0 counts pixels." if norm == "L0" else ""))
    table = Table(f"ranking-{norm}", headers, note=note)
    for rank, best in enumerate(ranked_models(res, norm), 1):
        warns = model_warnings(res, best.model)
        cells = [Cell(str(rank), rank),
                 Cell(best.model + (f" {WARN}" if warns else ""), best.model, "\n".join(warns) or None),
                 _pct_cell(best.clean_accuracy, ref=(BEST, "clean_accuracy"))]
        for e in eps_list:
            lo, hi = best.robust_ci.get(e, (float("nan"), float("nan")))
            v = best.robust_accuracy.get(e)
            cells.append(Cell(f"{_pct(v)} [{_pct(lo)}, {_pct(hi)}]", None if _missing(v) else v, ref=(BEST, f"robust_accuracy/{_eps(e)}")))
        mine = {r.attack: r for r in attack_rows if r.model == best.model}
        for a in attacks:
            r = mine.get(a)
            if r is None:
                cells.append(Cell("n/a"))
            elif r.kind == "minimal":
                cells.append(_num_cell(r.mean_norm, norm, " †" if r.via_surrogate else "", ref=(a, "mean_norm")))
            else:
                cells.append(_pct_cell(r.robust_accuracy.get(head), " †" if r.via_surrogate else "", ref=(a, f"robust_accuracy/{head_txt}")))
        scored = [r for r in mine.values() if head is not None and not _missing(r.robust_accuracy.get(head))]
        if scored:
            s = min(scored, key=lambda r: (r.robust_accuracy[head], r.attack))
            cells.append(Cell(f"{s.attack} ({_pct(s.robust_accuracy[head])})", s.robust_accuracy[head], ref=(s.attack, f"robust_accuracy/{head_txt}")))
        else:
            cells.append(Cell("–"))
        # attack time per sample summed over every cell (a bounded attack runs once per eps)
        timed = [r.seconds_per_sample * (max(1, len(r.eps_list)) if r.kind == "bounded" else 1)
                 for r in mine.values() if r.seconds_per_sample is not None]
        cells += [_pct_cell(best.success_rate, ref=(BEST, "success_rate")), Cell(str(best.rejected), best.rejected, ref=(BEST, "rejected")),
                  _num_cell(sum(timed) if timed else None)]
        table.rows.append(cells)
        table.row_ids.append({"model": best.model, "norm": norm})
    return table


def attack_table(res: SuiteResults, norm: str) -> Table:
    """One line per model and attack of a norm: robust accuracy per eps, norms, success, cost."""
    eps_list = sorted(float(e) for e in res.config.get("epsilons", {}).get(norm, []))
    headers = ["Model", "Attack", "Kind"] + [f"ε={_eps(e)}" for e in eps_list] + [
        f"Mean {norm}", f"Median {norm}", "Success", "Rejected", "Fwd/sample", "Bwd/sample", "s/sample", "Status"]
    table = Table(f"attacks-{norm}", headers)
    for r in sorted(_attack_rows(res, norm), key=lambda r: (r.model, r.attack)):
        cells = [Cell(r.model, r.model), Cell(r.attack + (" †" if r.via_surrogate else ""), r.attack), Cell(r.kind, r.kind)]
        a = r.attack
        cells += [_pct_cell(r.robust_accuracy.get(e), ref=(a, f"robust_accuracy/{_eps(e)}")) for e in eps_list]
        cells += [_num_cell(r.mean_norm, norm, ref=(a, "mean_norm")), _num_cell(r.median_norm, norm, ref=(a, "median_norm")),
                  _pct_cell(r.success_rate, ref=(a, "success_rate")), Cell(str(r.rejected), r.rejected, ref=(a, "rejected")),
                  _num_cell(r.forward_per_sample, ref=(a, "forward_per_sample")),
                  _num_cell(r.backward_per_sample, ref=(a, "backward_per_sample")),
                  _num_cell(r.seconds_per_sample, ref=(a, "seconds_per_sample")), Cell(r.status, r.status, ref=(a, "status"))]
        table.rows.append(cells)
        table.row_ids.append({"model": r.model, "norm": norm})
    return table


def noise_table(res: SuiteResults) -> Table:
    sigmas = sorted({s for d in res.noise.values() for s in d})
    table = Table("noise", ["Model"] + [f"σ={_eps(s)}" for s in sigmas],
                  note="Accuracy (%) under x + N(0, σ²), clipped to [0, 1].")
    for model, d in sorted(res.noise.items()):
        table.rows.append([Cell(model, model)] + [_pct_cell(d[s][0] / d[s][1]) if s in d else Cell("–") for s in sigmas])
    return table


def transfer_table(m: dict) -> Table:
    table = Table(f"transfer-{m['norm']}-{_eps(m['eps'])}", ["source \\ target"] + list(m["targets"]),
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


def md_table(t: Table) -> list[str]:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in t.headers) + " |", "|" + "---|" * len(t.headers)]
    out += ["| " + " | ".join(esc(c.text) for c in row) + " |" for row in t.rows]
    return out


# -- markdown -----------------------------------------------------------------------------------


def summary_lines(res: SuiteResults) -> list[str]:
    """Dataset and method lines shown under a suite's title."""
    cfg = res.config
    ds = cfg.get("dataset", {})
    n = max((v[1] for v in res.clean.values()), default=0)
    cls = f", classes {ds.get('classes')}" if ds.get("classes") else ""
    return [
        f"Dataset **{ds.get('name')}** ({ds.get('split')} split{cls}, {n} samples from offset {ds.get('offset', 0)}); seed {cfg.get('seed')}.",
        "Robust accuracy (%) = correctly classified and no verified adversarial within eps (clean errors count as broken); "
        "[95% Wilson interval]. *best* = per sample, the smallest verified adversarial over all attacks of that norm. "
        f"*Strongest attack* = the single attack with the lowest robust accuracy. {WARN} = see the warnings below.",
    ]


def to_markdown(res: SuiteResults, norms: list[str] | None = None) -> str:
    """The leaderboard of one suite; ``norms`` restricts it to those norms (default: all)."""
    cfg = res.config
    lines = [f"# Leaderboard: {res.suite}", ""]
    if cfg.get("description"):
        lines += [cfg["description"].strip(), ""]
    lines += summary_lines(res) + [""]
    for norm in norms_of(res):
        if norms is None or norm in norms:
            lines += _norm_section(res, norm)
    if norms is None:
        if res.noise:
            lines += ["## Gaussian noise", ""] + _md_block(noise_table(res))
        for m in res.transfer:
            lines += [f"## Transfer: {m['norm']} eps = {_eps(m['eps'])}", ""] + _md_block(transfer_table(m))
        clean_only = clean_only_table(res)
        if clean_only is not None:
            lines += ["## Clean accuracy only", ""] + _md_block(clean_only)
    if res.warnings:
        lines += ["## Warnings", ""] + [f"- {WARN} {w}" for w in res.warnings] + [""]
    lines += ["---", ""]
    for p in provenance_lines(res):
        lines += [f"<sub>{p}</sub>", ""]
    return "\n".join(lines).rstrip() + "\n"


def _md_block(t: Table) -> list[str]:
    return ([t.note, ""] if t.note else []) + md_table(t) + [""]


def _norm_section(res: SuiteResults, norm: str) -> list[str]:
    out = [f"## {norm}", ""] + _md_block(ranking_table(res, norm))
    out += [f"### {norm}: per attack", ""] + _md_block(attack_table(res, norm))
    attack_rows = _attack_rows(res, norm)
    if any(r.via_surrogate for r in attack_rows):
        out += ["† via surrogate: the model is not differentiable; the attack used its differentiable surrogate, "
                "and every adversarial was verified on the real model.", ""]
    recs = [r for r in attack_rows if r.records]
    if recs:
        out += ["Attack-reported figures: " + "; ".join(
            f"{r.model}/{r.attack}: " + ", ".join(f"{k} = {v:.4g}" for k, v in sorted(r.records.items())) for r in recs), ""]
    return out


def provenance(res: SuiteResults) -> dict[str, Any]:
    """What produced these numbers: versions, device, seed, suite hash, samples digest, date (last run)."""
    if not res.runs:
        return {}
    last = res.runs[-1]
    p = last["provenance"]
    return {
        "versions": p.get("versions", {}), "device": p.get("device"), "seed": p.get("seed"),
        "suite_hash": p.get("suite_hash"), "samples_digest": res.sample_digest, "git_commit": p.get("git_commit"),
        "date": p.get("date") or time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started"])),
        "runs": len(res.runs), "plugins": p.get("plugins", {}), "platform": p.get("platform"),
    }


def provenance_lines(res: SuiteResults) -> list[str]:
    p = provenance(res)
    if not p:
        return []
    v = p["versions"]
    out = [f"robench {v.get('robench')} · torch {v.get('torch')} · numpy {v.get('numpy')} · python {v.get('python')}"
           + "".join(f" · {k} {v[k]}" for k in ("foolbox", "adversarial-robustness-toolbox", "tensorflow", "larq") if k in v)
           + f" · device {p['device']} · seed {p['seed']} · suite hash {p['suite_hash']}"
           + f" · samples digest {p['samples_digest']} · git {str(p['git_commit'])[:10]} · {p['runs']} run(s), last {p['date']}"]
    if p["plugins"]:
        out.append("plugins: " + ", ".join(f"{k} ({val})" for k, val in sorted(p["plugins"].items())))
    return out


# -- JSON and CSV -------------------------------------------------------------------------------


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


# -- plots --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "robench"  # stable element ids: republishing unchanged results changes no file
    return plt


def _save(fig, path: Path) -> Path:
    """``path`` (PNG) and the same figure as SVG beside it; no timestamps, so unchanged plots stay byte-identical."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    fig.savefig(path.with_suffix(".svg"), metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return path


def plot(res: SuiteResults, path: Path) -> Path | None:
    """Robust accuracy vs eps per model (best of attacks, with 95% bands), one panel per norm, plus noise.

    Writes ``path`` (PNG) and the SVG beside it; returns None when there is nothing to plot.
    """
    plt = _pyplot()
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
    return _save(fig, path)


def plot_norm_cdf(res: SuiteResults, path: Path) -> Path | None:
    """Per attack (and *best*), the CDF over initially correct samples of the smallest verified
    adversarial's norm, one line per model. A curve that stays low never found adversarials."""
    plt = _pyplot()
    panels = [(norm, attack) for norm in NORM_ORDER
              for attack in dict.fromkeys(a for (_, a, n) in sorted(res.norm_samples, key=lambda k: (k[1] == BEST, k[1])) if n == norm)]
    panels = [p for p in panels if any(res.norm_samples[k][1] for k in res.norm_samples if (k[2], k[1]) == p)]
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (norm, attack) in zip(axes.flat, panels):
        for (model, a, n), (values, n_correct) in sorted(res.norm_samples.items()):
            if (n, a) != (norm, attack) or not n_correct:
                continue
            ys = [(i + 1) / n_correct for i in range(len(values))]
            ax.step([0.0] + values, [0.0] + ys, where="post", label=f"{model} ({len(values)}/{n_correct})")
        for e in res.config.get("epsilons", {}).get(norm, []):
            ax.axvline(float(e), color="grey", lw=0.6, ls=":")
        ax.set_xlabel(f"{norm} of the smallest verified adversarial" + (" (pixels)" if norm == "L0" else ""))
        ax.set_ylabel("share of correct samples")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{attack} ({norm})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_transfer(res: SuiteResults, path: Path) -> Path | None:
    """Heat map of each transfer matrix (target accuracy per source x target), one panel per eps."""
    if not res.transfer:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(res.transfer), figsize=(1.2 + 1.1 * max(len(m["targets"]) for m in res.transfer) * len(res.transfer),
                                                              1.4 + 0.6 * max(len(m["sources"]) for m in res.transfer)), squeeze=False)
    for ax, m in zip(axes[0], res.transfer):
        grid = [[m["accuracy"].get(f"{s}->{t}", float("nan")) for t in m["targets"]] for s in m["sources"]]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(m["targets"])), m["targets"], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(m["sources"])), m["sources"], fontsize=8)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not _missing(v):
                    ax.text(j, i, _pct(v), ha="center", va="center", fontsize=8, color="white" if v < 0.5 else "black")
        ax.set_xlabel("target")
        ax.set_ylabel("source")
        ax.set_title(f"{m['norm']} eps = {_eps(m['eps'])}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="target accuracy")
    fig.tight_layout()
    return _save(fig, path)


def plots(res: SuiteResults, to: Path) -> dict[str, Path]:
    """Every plot of a suite as ``{kind: png path}`` (each with an SVG beside it)."""
    out = {}
    for kind, fn, name in (("eps", plot, f"{res.suite}.png"), ("cdf", plot_norm_cdf, f"{res.suite}-cdf.png"),
                           ("transfer", plot_transfer, f"{res.suite}-transfer.png")):
        p = fn(res, to / name)
        if p is not None:
            out[kind] = p
    return out


PLOT_CAPTIONS = {
    "eps": "robust accuracy vs eps (best of attacks, 95% bands)",
    "cdf": "norm of the smallest verified adversarial (CDF per attack)",
    "transfer": "transfer matrix (target accuracy)",
}


# -- publishing ---------------------------------------------------------------------------------


def publish(results: list[SuiteResults], to: Path, *, html: bool = False) -> list[Path]:
    """Write ``<suite>.md``, ``.json``, ``.csv`` and the plots (PNG + SVG) per suite, and the index
    ``README.md`` of every suite published in ``to``; with ``html``, also the static site in ``to/site``."""
    to.mkdir(parents=True, exist_ok=True)
    written = []
    for res in results:
        figs = plots(res, to)
        md = to_markdown(res)
        if figs:
            images = "\n".join(f"![{PLOT_CAPTIONS[k]}]({p.name})" for k, p in figs.items())
            md = md.replace("\n## ", f"\n{images}\n\n## ", 1)
        for suffix, text in ((".md", md), (".json", json.dumps(rows_json([res]), indent=2) + "\n"), (".csv", to_csv([res]))):
            p = to / f"{res.suite}{suffix}"
            p.write_text(text)
            written.append(p)
        for p in figs.values():
            written += [p, p.with_suffix(".svg")]
    written.append(_write_index(to))
    if html:
        from .site import build_site

        written += build_site(results, to / "site")
    return written


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
            head = _headline_from_rows(best)
            if best and head is not None:
                top = max(best, key=lambda r: (r["robust_accuracy"].get(head) or 0.0, r["clean_accuracy"] or 0.0))
                tops.append({"norm": norm, "model": top["model"], "eps": head, "robust_accuracy": top["robust_accuracy"].get(head)})
        entries.append({"suite": data.stem, "models": sorted({r["model"] for r in rows}), "norms": norms, "tops": tops})
    return entries


def _write_index(to: Path) -> Path:
    """``README.md`` listing every suite published in ``to``."""
    lines = ["# Leaderboards", "", "Published with `robench publish`. One page per suite; the top model per norm is ranked "
             "by robust accuracy (%) of *best* at the suite's headline eps.", "",
             "| Suite | Models | Norms | Top model per norm | Page | Data |", "|---|---|---|---|---|---|"]
    for e in index_entries(to):
        if not (to / f"{e['suite']}.md").exists():
            continue
        tops = "; ".join(f"{t['norm']}: {t['model']} ({_pct(t['robust_accuracy'])} @ {t['eps']})" for t in e["tops"])
        s = e["suite"]
        lines.append(f"| {s} | {len(e['models'])} | {', '.join(e['norms'])} | {tops or '–'} "
                     f"| [{s}.md]({s}.md) | [json]({s}.json), [csv]({s}.csv) |")
    index = to / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index


def _headline_from_rows(best_rows: list[dict]) -> str | None:
    """The headline eps key of published rows (recorded per row; older files: the middle eps)."""
    for r in best_rows:
        if r.get("headline") is not None:
            return _eps(float(r["headline"]))
    keys = sorted({k for r in best_rows for k in r["robust_accuracy"]}, key=float)
    return keys[len(keys) // 2] if keys else None


# -- diff ---------------------------------------------------------------------------------------

_DIFF_FIELDS = ("n", "clean_accuracy", "mean_norm", "median_norm", "success_rate", "rejected", "status")


@dataclass
class Change:
    suite: str
    model: str
    attack: str
    norm: str
    what: str  # "added", "removed" or the changed field ("robust_accuracy@0.03", "clean_accuracy", ...)
    old: Any = None
    new: Any = None

    def label(self) -> str:
        return f"{self.suite} / {self.model} / {self.attack} / {self.norm}"


def _row_key(r: Row) -> tuple:
    return (r.suite, r.model, r.attack + (f" (from {r.source})" if r.source else ""), r.norm)


def diff_results(old: list[SuiteResults], new: list[SuiteResults], *, tol: float = 1e-12) -> list[Change]:
    """What changed between two sets of results: rows added or removed, and every value that moved."""
    a = {_row_key(r): r for res in old for r in res.rows}
    b = {_row_key(r): r for res in new for r in res.rows}
    changes = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            changes.append(Change(*key, "added", None, b[key]))
            continue
        if key not in b:
            changes.append(Change(*key, "removed", a[key], None))
            continue
        ra, rb = a[key], b[key]
        for eps in sorted(set(ra.robust_accuracy) | set(rb.robust_accuracy)):
            va, vb = ra.robust_accuracy.get(eps), rb.robust_accuracy.get(eps)
            if _differs(va, vb, tol):
                changes.append(Change(*key, f"robust_accuracy@{_eps(eps)}", va, vb))
        for f in _DIFF_FIELDS:
            va, vb = getattr(ra, f), getattr(rb, f)
            if _differs(va, vb, tol):
                changes.append(Change(*key, f, va, vb))
    return changes


def _differs(a: Any, b: Any, tol: float) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) != _missing(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) > tol
    return a != b


def _fmt_value(what: str, v: Any, norm: str) -> str:
    if what.startswith("robust_accuracy") or what in ("clean_accuracy", "success_rate"):
        return _pct(v)
    if what in ("mean_norm", "median_norm"):
        return _num(v, norm)
    return "–" if _missing(v) else str(v)


def diff_markdown(changes: list[Change]) -> str:
    """Changes as markdown: rows added and removed, then a table of changed values (percentages in %)."""
    if not changes:
        return "No changes.\n"
    added = [c for c in changes if c.what == "added"]
    removed = [c for c in changes if c.what == "removed"]
    moved = [c for c in changes if c.what not in ("added", "removed")]
    lines = [f"{len(added)} row(s) added, {len(removed)} removed, {len(moved)} value(s) changed.", ""]
    for title, group in (("Added", added), ("Removed", removed)):
        if group:
            lines += [f"## {title}", ""]
            for c in group:
                r = c.new if c.what == "added" else c.old
                head = sorted(r.robust_accuracy)
                lines.append(f"- {c.label()}: clean {_pct(r.clean_accuracy)}"
                             + "".join(f", ε={_eps(e)}: {_pct(r.robust_accuracy[e])}" for e in head))
            lines.append("")
    if moved:
        lines += ["## Changed", "", "| Suite | Model | Attack | Norm | What | Old | New | Δ |", "|---|---|---|---|---|---|---|---|"]
        for c in moved:
            delta = ""
            if isinstance(c.old, (int, float)) and isinstance(c.new, (int, float)) and not _missing(c.old) and not _missing(c.new):
                d = c.new - c.old
                delta = f"{100 * d:+.1f}" if c.what.startswith("robust_accuracy") or c.what in ("clean_accuracy", "success_rate") else f"{d:+.4g}"
            lines.append(f"| {c.suite} | {c.model} | {c.attack} | {c.norm} | {c.what} | {_fmt_value(c.what, c.old, c.norm)} "
                         f"| {_fmt_value(c.what, c.new, c.norm)} | {delta} |")
        lines.append("")
    return "\n".join(lines)


def diff_json(changes: list[Change]) -> str:
    out = []
    for c in changes:
        d = {"suite": c.suite, "model": c.model, "attack": c.attack, "norm": c.norm, "what": c.what}
        if c.what in ("added", "removed"):
            d["row"] = _clean_nan((c.new or c.old).to_json())
        else:
            d["old"], d["new"] = _clean_nan(c.old), _clean_nan(c.new)
        out.append(d)
    return json.dumps(out, indent=2)
