"""``robench publish``: the files of a leaderboard folder (markdown, JSON, CSV, plots, the index
``README.md``) and, on request, the static site (:mod:`robench.report.html`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..metrics import SuiteResults
from .html import build_site
from .markdown import to_markdown
from .plots import PLOT_CAPTIONS, plots
from .tables import index_entries, pct, rows_json, to_csv


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
        written += build_site(results, to / "site")
    return written


def _write_index(to: Path) -> Path:
    """``README.md`` listing every suite published in ``to``."""
    lines = ["# Leaderboards", "", "Published with `robench publish`. One page per suite; the top model per norm is ranked "
             "by robust accuracy (%) of *best* at the suite's headline eps.", "",
             "| Suite | Models | Norms | Top model per norm | Page | Data |", "|---|---|---|---|---|---|"]
    for e in index_entries(to):
        if not (to / f"{e['suite']}.md").exists():
            continue
        tops = "; ".join(f"{t['norm']}: {t['model']} ({pct(t['robust_accuracy'])} @ {t['eps']})" for t in e["tops"])
        s = e["suite"]
        lines.append(f"| {s} | {len(e['models'])} | {', '.join(e['norms'])} | {tops or '–'} "
                     f"| [{s}.md]({s}.md) | [json]({s}.json), [csv]({s}.csv) |")
    index = to / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index
