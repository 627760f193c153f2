"""What changed between two sets of results (``robench diff``): rows added or removed and every
value that moved, as markdown or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..metrics import Row, SuiteResults
from .export import clean_nan
from .tables import eps_text, is_missing, num, pct

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
                changes.append(Change(*key, f"robust_accuracy@{eps_text(eps)}", va, vb))
        for f in _DIFF_FIELDS:
            va, vb = getattr(ra, f), getattr(rb, f)
            if _differs(va, vb, tol):
                changes.append(Change(*key, f, va, vb))
    return changes


def _differs(a: Any, b: Any, tol: float) -> bool:
    if is_missing(a) or is_missing(b):
        return is_missing(a) != is_missing(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) > tol
    return a != b


def _fmt_value(what: str, v: Any, norm: str) -> str:
    if what.startswith("robust_accuracy") or what in ("clean_accuracy", "success_rate"):
        return pct(v)
    if what in ("mean_norm", "median_norm"):
        return num(v, norm)
    return "–" if is_missing(v) else str(v)


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
                lines.append(f"- {c.label()}: clean {pct(r.clean_accuracy)}"
                             + "".join(f", ε={eps_text(e)}: {pct(r.robust_accuracy[e])}" for e in head))
            lines.append("")
    if moved:
        lines += ["## Changed", "", "| Suite | Model | Attack | Norm | What | Old | New | Δ |", "|---|---|---|---|---|---|---|---|"]
        for c in moved:
            delta = ""
            if isinstance(c.old, (int, float)) and isinstance(c.new, (int, float)) and not is_missing(c.old) and not is_missing(c.new):
                d = c.new - c.old
                delta = f"{100 * d:+.1f}" if c.what.startswith("robust_accuracy") or c.what in ("clean_accuracy", "success_rate") else f"{d:+.4g}"
            lines.append(f"| {c.suite} | {c.model} | {c.attack} | {c.norm} | {c.what} | {_fmt_value(c.what, c.old, c.norm)} "
                         f"| {_fmt_value(c.what, c.new, c.norm)} | {delta} |")
        lines.append("")
    return "\n".join(lines)


def diff_json(changes: list[Change]) -> str:
    """Changes as a JSON list: one object per change (a whole row for added or removed rows, else old and new)."""
    out = []
    for c in changes:
        d = {"suite": c.suite, "model": c.model, "attack": c.attack, "norm": c.norm, "what": c.what}
        if c.what in ("added", "removed"):
            d["row"] = clean_nan((c.new or c.old).to_json())
        else:
            d["old"], d["new"] = clean_nan(c.old), clean_nan(c.new)
        out.append(d)
    return json.dumps(out, indent=2)
