"""Plots of a suite's results (matplotlib, Agg): PNG + SVG, with no timestamps so that republishing
unchanged results changes no file."""

from __future__ import annotations

import math
from pathlib import Path

from ..metrics import BEST, SuiteResults
from .tables import NORM_ORDER, eps_text, is_missing, pct, ranked_models


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
    # the panels of one norm share their x axis (0 to the largest norm or eps of any of them)
    xmax: dict[str, float] = {}
    for (_, a, n), (values, _) in res.norm_samples.items():
        if values:
            xmax[n] = max(xmax.get(n, 0.0), max(values))
    for n, eps in res.config.get("epsilons", {}).items():
        if eps:
            xmax[str(n)] = max(xmax.get(str(n), 0.0), max(float(e) for e in eps))
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
        if xmax.get(norm):
            ax.set_xlim(0, 1.05 * xmax[norm])
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
                if not is_missing(v):
                    ax.text(j, i, pct(v), ha="center", va="center", fontsize=8, color="white" if v < 0.5 else "black")
        ax.set_xlabel("target")
        ax.set_ylabel("source")
        ax.set_title(f"{m['norm']} eps = {eps_text(m['eps'])}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="target accuracy")
    fig.tight_layout()
    return _save(fig, path)


def plot_budget(res: SuiteResults, path: Path) -> Path | None:
    """Per norm with best-so-far curves: robust accuracy at the headline eps and the median best norm
    versus passes spent (forward + backward per sample, log axis), one line per model/attack (robench.report.budgets)."""
    from .budgets import curve_groups, strength

    norms = [n for n in NORM_ORDER if curve_groups(res, n)]
    if not norms:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(norms), 2, figsize=(9, 3.4 * len(norms)), squeeze=False)
    for (ax_ra, ax_n), norm in zip(axes, norms):
        head = res.headline(norm)
        groups = curve_groups(res, norm)
        multi = len({m for m, _, _ in groups}) > 1
        top = max((p[0] + p[1] for _, _, cs in groups for c in cs for p in c), default=1)
        xs = [10 ** (k * math.log10(max(top, 10)) / 80) for k in range(81)]
        for m, a, curves in groups:
            at = [strength(curves, b, norm, head) for b in xs]
            label = f"{m}/{a}" if multi else a
            if head is not None:
                ax_ra.plot(xs, [r for r, _ in at], label=label, drawstyle="steps-post")
            ax_n.plot(xs, [v if math.isfinite(v) else math.nan for _, v in at], label=label, drawstyle="steps-post")
        for ax in (ax_ra, ax_n):
            ax.set_xscale("log")
            ax.set_xlabel("passes per sample (forward + backward)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax_ra.set_ylim(0, 1.02)
        ax_ra.set_ylabel(f"robust accuracy at eps {eps_text(head)}" if head is not None else "robust accuracy (no eps)")
        ax_ra.set_title(f"{res.suite}: {norm}, robust accuracy vs passes")
        ax_n.set_ylabel(f"median best {norm}")
        ax_n.set_title(f"{norm}: median best norm vs passes")
    fig.tight_layout()
    return _save(fig, path)


def plot_ratios(res: SuiteResults, path: Path) -> Path | None:
    """Per model and norm where an exact solver ran (robench.certified): each minimal attack's
    distribution of found norm / exact minimum over the samples the solver proved optimal and the
    attack broke, as an ECDF on a log x axis from 1; None when no solver cell has such ratios."""
    panels = [e for e in (res.certified or {}).get("solver", []) if any(s.get("ratios") for s in e["attacks"].values())]
    if not panels:
        return None
    plt = _pyplot()
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, e in zip(axes.flat, panels):
        worst = 1.0
        # the closest attack (by mean) first, so that the legend reads as the table
        for attack, s in sorted(e["attacks"].items(), key=lambda kv: (kv[1].get("mean", math.inf), kv[0])):
            ratios = s.get("ratios") or []
            if not ratios:
                continue
            n = len(ratios) + s.get("missed", 0)  # the missed samples keep the curve below 1
            xs = [max(r, 1.0) for r in ratios]  # a ratio within the solver's tolerance under 1 is drawn at 1
            worst = max(worst, xs[-1])
            ax.step([1.0] + xs, [0.0] + [(i + 1) / n for i in range(len(xs))], where="post",
                    label=f"{attack} ({len(ratios)}/{n})")
        ax.set_xscale("log")
        right = max(1.1, worst * 1.05)
        ax.set_xlim(1.0, right)
        ticks: list[float] = []
        for t in (1.0, 1.01, 1.02, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0):
            # labels at least 9% of the axis apart (log scale), so that none overlap
            if t <= right and (not ticks or math.log(t / ticks[-1]) >= 0.09 * math.log(right)):
                ticks.append(t)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        for t in (1.01, 1.05):
            ax.axvline(t, color="grey", lw=0.6, ls=":")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("found norm / exact minimum")
        ax.set_ylabel(f"share of the {e['optimal']} optimal samples")
        ax.set_title(f"{e['model']}, {e['norm']}: attacks vs exact ({e['solver']})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plots(res: SuiteResults, to: Path) -> dict[str, Path]:
    """Every plot of a suite as ``{kind: png path}`` (each with an SVG beside it)."""
    out = {}
    for kind, fn, name in (("eps", plot, f"{res.suite}.png"), ("cdf", plot_norm_cdf, f"{res.suite}-cdf.png"),
                           ("transfer", plot_transfer, f"{res.suite}-transfer.png"),
                           ("budget", plot_budget, f"{res.suite}-budget.png"),
                           ("ratios", plot_ratios, f"{res.suite}-ratios.png")):
        p = fn(res, to / name)
        if p is not None:
            out[kind] = p
    return out


PLOT_CAPTIONS = {
    "eps": "robust accuracy vs eps (best of attacks, 95% bands)",
    "cdf": "norm of the smallest verified adversarial (CDF per attack)",
    "transfer": "transfer matrix (target accuracy)",
    "budget": "robust accuracy and median best norm vs passes spent (best-so-far curves)",
    "ratios": "found norm / exact minimum per attack (ECDF over the samples the solver proved optimal)",
}
