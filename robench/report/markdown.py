"""Leaderboards as markdown (what ``robench run`` prints and ``robench publish`` writes as ``<suite>.md``)."""

from __future__ import annotations

from ..metrics import SuiteResults
from .budgets import budget_table
from .certified import certified_markdown
from .markdown_blocks import deviations_block, md_table, md_text  # noqa: F401  (robench.report.markdown.md_text, as before)
from .reproduction import paper_lines
from .tables import (
    WARN, Table, attack_ranking_table, attack_table, clean_only_table, eps_text, models_table, noise_table, norms_of, per_attack_rows,
    provenance_lines, ranking_table, summary_lines, transfer_table, values_note,
)


def to_markdown(res: SuiteResults, norms: list[str] | None = None) -> str:
    """The leaderboard of one suite; ``norms`` restricts it to those norms (default: all)."""
    cfg = res.config
    lines = [f"# Leaderboard: {md_text(res.suite)}", ""]
    if cfg.get("description"):
        lines += [md_text(str(cfg["description"]).strip()), ""]
    lines += [md_text(line) for line in summary_lines(res)] + [""]
    for norm in norms_of(res):
        if norms is None or norm in norms:
            lines += _norm_section(res, norm)
    if norms is None:
        lines += certified_markdown(res, md_text, _md_block)  # exact minima and verified bounds, where they ran
        if res.noise:
            lines += ["## Gaussian noise", ""] + _md_block(noise_table(res))
        for m in res.transfer:
            lines += [f"## Transfer: {md_text(m['norm'])} eps = {eps_text(m['eps'])}", ""] + _md_block(transfer_table(m))
        clean_only = clean_only_table(res)
        if clean_only is not None:
            lines += ["## Clean accuracy only", ""] + _md_block(clean_only)
        models = models_table(res)
        if models is not None:
            lines += ["## Models", ""] + _md_block(models)
        lines += paper_lines(res)  # the paper's numbers beside ours and the claims' verdicts, where the suite has them
    lines += deviations_block(cfg)
    if res.warnings:
        lines += ["## Warnings", ""] + [f"- {WARN} {md_text(w)}" for w in res.warnings] + [""]
    lines += ["---", ""]
    for p in provenance_lines(res):
        lines += [f"<sub>{md_text(p)}</sub>", ""]
    return "\n".join(lines).rstrip() + "\n"


def _md_block(t: Table) -> list[str]:
    return ([md_text(t.note), ""] if t.note else []) + md_table(t) + [""]


def _norm_section(res: SuiteResults, norm: str) -> list[str]:
    values = values_note(res, norm)
    values_lines = [md_text(values), ""] if values else []
    out = [f"## {md_text(norm)}", ""] + _md_block(ranking_table(res, norm)) + values_lines
    ranked = attack_ranking_table(res, norm)
    if ranked is not None:
        out += [f"### {md_text(norm)}: attacks ranked", ""] + _md_block(ranked)
    out += [f"### {md_text(norm)}: per attack", ""] + _md_block(attack_table(res, norm)) + values_lines
    attack_rows = per_attack_rows(res, norm)
    if any(r.via_surrogate for r in attack_rows):
        out += ["† via surrogate: the model is not differentiable; the attack used its differentiable surrogate, "
                "and every adversarial was verified on the real model.", ""]
    recs = [r for r in attack_rows if r.records]
    if recs:
        out += [md_text("Attack-reported figures: " + "; ".join(
            f"{r.model}/{r.attack}: " + ", ".join(f"{k} = {v:.4g}" for k, v in sorted(r.records.items())) for r in recs)), ""]
    budgets = budget_table(res, norm)
    if budgets is not None:  # attacks at equal cost, where the cells kept best-so-far curves
        out += [f"### {md_text(norm)}: attacks at equal cost", ""] + _md_block(budgets)
    return out
