"""Leaderboards as markdown (what ``robench run`` prints and ``robench publish`` writes as ``<suite>.md``)."""

from __future__ import annotations

import re

from ..metrics import SuiteResults
from .budgets import budget_table
from .certified import certified_markdown
from .tables import (
    WARN, Cell, Table, attack_ranking_table, attack_table, clean_only_table, eps_text, models_table, noise_table, norms_of, per_attack_rows,
    provenance_lines, ranking_table, summary_lines, transfer_table, values_note,
)


_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # what opens raw HTML (a tag, comment, declaration) or an autolink
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def md_text(s: object) -> str:
    """Text from a suite, a store or an error, made inert in markdown as :func:`html.escape` makes it
    in HTML: no raw HTML or autolink (``<`` before a letter, ``/``, ``!``, ``?``), no entity, no inline
    link or image (``](``), no reference definition (``]:``). Plain text such as ``C&W``, ``a <-> b``,
    ``[95% interval]`` or ``**bold**`` is left as written (emphasis is harmless)."""
    s = _TAG.sub("&lt;", _ENTITY.sub("&amp;", str(s)))
    return s.replace("](", "]\\(").replace("]:", "]\\:")


def md_table(t: Table) -> list[str]:
    def esc(s: str) -> str:
        return md_text(s).replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    out = ["| " + " | ".join(esc(h) for h in t.headers) + " |", "|" + "---|" * len(t.headers)]
    out += ["| " + " | ".join(esc(c.text) for c in row) + " |" for row in t.rows]
    return out


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
        from .reproduction import paper_lines  # it imports this module: not at the top

        lines += paper_lines(res)  # the paper's numbers beside ours and the claims' verdicts, where the suite has them
    lines += deviations_block(cfg)
    if res.warnings:
        lines += ["## Warnings", ""] + [f"- {WARN} {md_text(w)}" for w in res.warnings] + [""]
    lines += ["---", ""]
    for p in provenance_lines(res):
        lines += [f"<sub>{md_text(p)}</sub>", ""]
    return "\n".join(lines).rstrip() + "\n"


def deviations_block(cfg: dict) -> list[str]:
    """The suite's ``deviations:`` from its paper's protocol, as a markdown section (none: no lines)."""
    devs = [d for d in cfg.get("deviations") or [] if isinstance(d, dict)]
    if not devs:
        return []
    t = Table("deviations", ["what", "paper", "ours", "why"], [[Cell(str(d.get(k, ""))) for k in ("what", "paper", "ours", "why")] for d in devs])
    return ["## Deviations from the paper", ""] + md_table(t) + [""]


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
