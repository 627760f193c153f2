"""Markdown building blocks that the leaderboard (:mod:`robench.report.markdown`) and the reproduction
pages (:mod:`robench.report.reproduction`) share: text made inert, a :class:`~robench.report.tables.Table`
as a markdown table, and a suite's deviations from its paper as a section."""

from __future__ import annotations

import re

from .tables import Cell, Table

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


def deviations_block(cfg: dict) -> list[str]:
    """The suite's ``deviations:`` from its paper's protocol, as a markdown section (none: no lines)."""
    devs = [d for d in cfg.get("deviations") or [] if isinstance(d, dict)]
    if not devs:
        return []
    t = Table("deviations", ["what", "paper", "ours", "why"], [[Cell(str(d.get(k, ""))) for k in ("what", "paper", "ours", "why")] for d in devs])
    return ["## Deviations from the paper", ""] + md_table(t) + [""]
