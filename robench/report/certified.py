"""Leaderboard tables from per-sample certificates (robench.certified): how close each attack came
to the exact minimum, and robust accuracy as a bracket between verified and attacked."""

from __future__ import annotations

from ..metrics import SuiteResults
from .tables import Cell, Table, eps_text, is_missing, pct


def _ratio(v) -> str:
    return "–" if is_missing(v) else f"{v:.4f}"


def optimality_tables(res: SuiteResults) -> list[tuple[str, Table]]:
    """Per model and norm where a solver ran: each minimal attack's ratio to the exact minimum."""
    out = []
    for e in (res.certified or {}).get("solver", []):
        counts = ", ".join(f"{k} {v}" for k, v in e["counts"].items())
        rows = []
        for attack, s in sorted(e["attacks"].items(), key=lambda kv: (kv[1].get("mean", float("inf")), kv[0])):
            rows.append([Cell(attack), Cell(str(s["n"]), s["n"]), Cell(_ratio(s.get("mean")), s.get("mean")),
                         Cell(_ratio(s.get("median")), s.get("median")), Cell(_ratio(s.get("worst")), s.get("worst")),
                         Cell(pct(s.get("within_1pct")), s.get("within_1pct")), Cell(pct(s.get("within_5pct")), s.get("within_5pct")),
                         Cell(str(s["missed"]), s["missed"])])
        note = (f"found norm / exact minimum, over the samples {e['solver']} proved optimal ({e['optimal']}) and the attack broke; "
                f"missed: optimal samples the attack did not break. Solver status per sample: {counts}.")
        t = Table(f"optimality-{e['model']}-{e['norm']}", ["attack", "samples", "mean", "median", "worst", "within 1% (%)",
                                                           "within 5% (%)", "missed"], rows, note=note)
        out.append((f"{e['model']}, {e['norm']}: attacks against the exact minimum", t))
    return out


def verified_lines(res: SuiteResults) -> list[str]:
    """'robust accuracy at eps 0.1: between 61.0 (verified) and 64.5 (attacked)' per model, norm and eps."""
    lines = []
    for v in (res.certified or {}).get("verified", []):
        for eps, b in sorted(v["eps"].items()):
            gap = None if is_missing(b["attacked"]) or is_missing(b["verified"]) else b["attacked"] - b["verified"]
            lines.append(f"{v['model']}, {v['norm']}: robust accuracy at eps {eps_text(eps)}: between {pct(b['verified'])} "
                         f"(verified, {v['verifier']}) and {pct(b['attacked'])} (attacked); gap {pct(gap)} points, {b['n']} samples")
    return lines


#: The verified-bounds heading, and its anchor on the site.
VERIFIED_TITLE, VERIFIED_ID = "Verified vs attacked robust accuracy", "verified"


def certified_section(res: SuiteResults, heading, bullets, block) -> list[str]:
    """The section's lines ([] when no solver or verifier ran) in one format: ``heading(title, anchor)``
    (anchor None but for the verified bounds), ``bullets(lines)`` for the verified bounds, then
    ``block(table)`` per optimality table. The rows are built here once for both formats."""
    out: list[str] = []
    lines = verified_lines(res)
    if lines:
        out += heading(VERIFIED_TITLE, VERIFIED_ID) + bullets(lines)
    for title, t in optimality_tables(res):
        out += heading(title, None) + block(t)
    return out


def certified_markdown(res: SuiteResults, md_text, md_block) -> list[str]:
    """The markdown section ([] when no solver or verifier ran)."""
    return certified_section(res, lambda title, _anchor: [f"## {md_text(title)}", ""],
                             lambda lines: [f"- {md_text(x)}" for x in lines] + [""], md_block)


def certified_html(res: SuiteResults, esc, block) -> list[str]:
    """The same section for the site ([] when no solver or verifier ran)."""
    def heading(title, anchor):
        return [f'<h2 id="{anchor}">{esc(title)}</h2>' if anchor else f"<h2>{esc(title)}</h2>"]

    return certified_section(res, heading, lambda lines: ["<ul>"] + [f"<li>{esc(x)}</li>" for x in lines] + ["</ul>"], block)
