"""HTML: the static leaderboard site (``robench publish --html``): ``index.html`` plus one page per suite, opened from disk (no server).

Tables are rendered from the same :class:`robench.report.tables.Table` objects as the markdown; each
cell carries its raw value (``data-value``, the sort key) and, where it shows a JSON field, which
one (``data-attack`` + ``data-field``), so a reader or a test can check the page against
``<suite>.json``. A few lines of JavaScript (``robench.js``, no libraries) sort a table when its
header is clicked.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Iterable

from .. import __version__
from ..metrics import SuiteResults
from .plots import PLOT_CAPTIONS, plots
from .export import index_entries, rows_json, to_csv
from .certified import certified_html
from .tables import (
    WARN, Cell, Table, attack_ranking_table, attack_table, clean_only_table, eps_text, models_table, noise_table,
    norms_of, pct, provenance_lines, ranking_table, summary_lines, transfer_table, values_note,
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1320px; padding: 1rem 2rem; color: #222; }
header a { text-decoration: none; }
h1 { margin-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1.4rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; cursor: pointer; user-select: none; position: relative; padding-right: 1.2rem; }
th[aria-sort="ascending"]::after { content: "▲"; position: absolute; right: .25rem; font-size: .7em; }
th[aria-sort="descending"]::after { content: "▼"; position: absolute; right: .25rem; font-size: .7em; }
td.text, th.text { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
.scroll { overflow-x: auto; }
table.pinned { border-collapse: separate; border-spacing: 0; }
table.pinned th, table.pinned td { border-width: 0 1px 1px 0; }
table.pinned th { border-top-width: 1px; }
table.pinned th:first-child, table.pinned td:first-child { border-left-width: 1px; }
table.pinned th:nth-child(-n+2), table.pinned td:nth-child(-n+2) { position: sticky; z-index: 1; background: #fff; }
table.pinned th:nth-child(-n+2) { background: #f2f2f2; z-index: 2; }
table.pinned th:first-child, table.pinned td:first-child { left: 0; box-sizing: border-box; width: 2.6rem; min-width: 2.6rem; max-width: 2.6rem; }
table.pinned th:nth-child(2), table.pinned td:nth-child(2) { left: 2.6rem; box-shadow: 2px 0 0 #ccc; }
tbody tr:nth-child(even) td { background: #fafafa; }
.filter { margin: .4rem 0 .8rem; }
.filter input { font: inherit; padding: .2rem .4rem; width: 18rem; }
tr.hidden { display: none; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; }
.warn { color: #8a5300; }
footer { margin-top: 2rem; color: #666; font-size: .8rem; border-top: 1px solid #ddd; padding-top: .5rem; }
"""

# Sorting: click a header to sort by its column (numbers by data-value, missing values last); click
# again to reverse. Works from file:// (no modules, no fetch).
JS = """
"use strict";
function robenchSort(th) {
  const table = th.closest("table");
  const col = Array.prototype.indexOf.call(th.parentNode.children, th);
  const dir = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
  table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
  th.setAttribute("aria-sort", dir);
  const body = table.tBodies[0];
  const rows = Array.prototype.slice.call(body.rows);
  const key = function (row) {
    const cell = row.cells[col];
    const raw = cell.getAttribute("data-value");
    if (raw === null || raw === "") { return null; }
    const num = Number(raw);
    return isNaN(num) ? raw.toLowerCase() : num;
  };
  rows.sort(function (a, b) {
    const ka = key(a), kb = key(b);
    if (ka === kb) { return 0; }
    if (ka === null) { return 1; }
    if (kb === null) { return -1; }
    const less = typeof ka === typeof kb ? ka < kb : typeof ka === "number";
    return (less ? -1 : 1) * (dir === "ascending" ? 1 : -1);
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
// Filter: rows of every table whose text does not contain each of the typed words are hidden.
function robenchFilter(text) {
  const words = text.toLowerCase().split(/\\s+/).filter(function (w) { return w.length > 0; });
  document.querySelectorAll("table.sortable tbody tr").forEach(function (row) {
    const hay = row.innerText.toLowerCase();
    const keep = words.every(function (w) { return hay.indexOf(w) >= 0; });
    row.classList.toggle("hidden", !keep);
  });
}
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.addEventListener("click", function () { robenchSort(th); });
    th.title = "click to sort";
  });
  const box = document.getElementById("filter");
  if (box) {
    box.addEventListener("input", function () { robenchFilter(box.value); });
    if (box.value) { robenchFilter(box.value); }
  }
});
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _page(title: str, body: list[str], *, home: bool) -> str:
    nav = "" if home else '<header><a href="index.html">← all leaderboards</a></header>'
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request (a 404 would be a console error)
        f"<title>{_e(title)}</title>", '<link rel="stylesheet" href="robench.css">', '<script src="robench.js"></script>',
        "</head>", "<body>", nav, *body,
        f'<footer>Generated by robench {_e(__version__)} (<code>robench publish --html</code>).</footer>',
        "</body>", "</html>", "",
    ])


def _value_attr(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # exact: parses back to the same double as the JSON's
    return str(v)


def html_table(t: Table) -> str:
    """A sortable table; numeric columns right-aligned, cells with data-value / data-field."""
    numeric = [all(isinstance(row[i].value, (int, float)) or row[i].value is None for row in t.rows) for i in range(len(t.headers))]
    # the ranking tables keep their first two columns (rank, name) in view when scrolled sideways
    cls = "sortable pinned" if t.key.startswith(("ranking-", "attack-ranking-")) else "sortable"
    out = ['<div class="scroll">', f'<table class="{cls}" id="{_e(t.key)}">', "<thead><tr>"]
    out += [f'<th class="{"num" if numeric[i] else "text"}">{_e(h)}</th>' for i, h in enumerate(t.headers)]
    out.append("</tr></thead><tbody>")
    for k, row in enumerate(t.rows):
        rid = t.row_ids[k] if k < len(t.row_ids) else {}
        attrs = "".join(f' data-{name}="{_e(v)}"' for name, v in rid.items())
        out.append(f"<tr{attrs}>" + "".join(_td(c, numeric[i]) for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _td(c: Cell, numeric: bool) -> str:
    attrs = f' data-value="{_e(_value_attr(c.value))}"'
    if c.ref is not None:
        attrs += f' data-attack="{_e(c.ref[0])}" data-field="{_e(c.ref[1])}"'
    if c.title:
        attrs += f' title="{_e(c.title)}"'
    cls = "num" if numeric else "text"
    return f'<td class="{cls}"{attrs}>{_e(c.text)}</td>'


def _md_inline(s: str) -> str:
    """The two bits of markdown the summary lines use (**bold**, *italic*), escaped otherwise."""
    import re

    s = _e(s)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", s)


def _block(t: Table) -> list[str]:
    return ([f'<p class="note">{_md_inline(t.note)}</p>'] if t.note else []) + [html_table(t)]


def suite_page(res: SuiteResults, figures: dict[str, Path]) -> str:
    body = [f"<h1>Leaderboard: {_e(res.suite)}</h1>"]
    if res.config.get("description"):
        body.append(f"<p>{_e(res.config['description'].strip())}</p>")
    body += [f"<p>{_md_inline(line)}</p>" for line in summary_lines(res)]
    body.append(f'<p>Data: <a href="{_e(res.suite)}.json">{_e(res.suite)}.json</a> · '
                f'<a href="{_e(res.suite)}.csv">{_e(res.suite)}.csv</a></p>')
    body.append('<p class="filter"><label>Filter rows: <input id="filter" type="search" '
                'placeholder="model or attack name, e.g. pgd" autocomplete="off"></label></p>')
    for norm in norms_of(res):
        values = values_note(res, norm)
        values_p = [f'<p class="note values">{_md_inline(values)}</p>'] if values else []
        body.append(f'<h2 id="{_e(norm)}">{_e(norm)}</h2>')
        body += _block(ranking_table(res, norm)) + values_p
        ranked = attack_ranking_table(res, norm)
        if ranked is not None:
            body.append(f'<h3 id="attacks-ranked-{_e(norm)}">{_e(norm)}: attacks ranked</h3>')
            body += _block(ranked)
        body.append(f"<h3>{_e(norm)}: per attack</h3>")
        body += _block(attack_table(res, norm)) + values_p
    body += certified_html(res, _e, _block)  # exact minima and verified bounds, where they ran
    if figures:
        body.append('<h2 id="plots">Plots</h2>')
    for kind, png in figures.items():
        svg = png.with_suffix(".svg").name
        body.append(f'<figure><img src="{_e(svg)}" alt="{_e(PLOT_CAPTIONS[kind])}">'
                    f"<figcaption>{_e(PLOT_CAPTIONS[kind])} (<a href=\"{_e(png.name)}\">PNG</a>)</figcaption></figure>")
    if res.noise:
        body += ["<h2>Gaussian noise</h2>"] + _block(noise_table(res))
    for m in res.transfer:
        body += [f"<h2>Transfer: {_e(m['norm'])} eps = {_e(eps_text(m['eps']))}</h2>"] + _block(transfer_table(m))
    clean_only = clean_only_table(res)
    if clean_only is not None:
        body += ["<h2>Clean accuracy only</h2>"] + _block(clean_only)
    models = models_table(res)
    if models is not None:
        body += ['<h2 id="models">Models</h2>'] + _block(models)
    if res.warnings:
        body += ['<h2 id="warnings">Warnings</h2>', '<ul class="warn">']
        body += [f"<li>{WARN} {_e(w)}</li>" for w in res.warnings] + ["</ul>"]
    prov = provenance_lines(res)
    if prov:
        body += ['<h2 id="provenance">Provenance</h2>'] + [f'<p class="note">{_e(p)}</p>' for p in prov]
    return _page(f"robench: {res.suite}", body, home=False)


def index_page(folder: Path, markdown_dir: Path | None = None) -> str:
    """The index of every suite with a page in ``folder``; with ``markdown_dir`` (the leaderboard
    folder ``publish`` writes ``<suite>.md`` into), also the suites published there without a page
    (their results store was not at hand for ``--html``), linked to their markdown."""
    entries = [dict(e, href=f"{e['suite']}.html") for e in index_entries(folder) if (folder / f"{e['suite']}.html").exists()]
    if markdown_dir is not None:
        paged = {e["suite"] for e in entries}
        rel = os.path.relpath(markdown_dir, folder).replace(os.sep, "/")
        entries += [dict(e, href=f"{rel}/{e['suite']}.md", markdown=True) for e in index_entries(markdown_dir)
                    if e["suite"] not in paged and (markdown_dir / f"{e['suite']}.md").exists()]
        entries.sort(key=lambda e: e["suite"])
    t = Table("suites", ["Suite", "Models", "Norms", "Top model per norm", "Page"])
    for e in entries:
        tops = "; ".join(f"{x['norm']}: {x['model']} ({pct(x['robust_accuracy'])} @ {x['eps']})" for x in e["tops"])
        page = "markdown only" if e.get("markdown") else "HTML"
        t.rows.append([Cell(e["suite"], e["suite"]), Cell(str(len(e["models"])), len(e["models"])),
                       Cell(", ".join(e["norms"]), ", ".join(e["norms"])), Cell(tops or "–", tops), Cell(page, page)])
    table = html_table(t)
    for e in entries:  # suite names become links (escaped text in, same text out)
        s = _e(e["suite"])
        table = table.replace(f'data-value="{s}">{s}</td>', f'data-value="{s}"><a href="{_e(e["href"])}">{s}</a></td>', 1)
    body = ["<h1>robench leaderboards</h1>",
            '<p class="note">One page per suite. Top model per norm: robust accuracy (%) of <em>best</em> '
            "(per sample, the smallest verified adversarial over all attacks) at the suite's headline eps."
            + (" <em>markdown only</em>: published without its results store at hand, so it has no HTML page here; "
               "the link opens its markdown leaderboard." if any(e.get("markdown") for e in entries) else "") + "</p>", table]
    return _page("robench leaderboards", body, home=True)


def build_site(results: Iterable[SuiteResults], to: Path, *, markdown_dir: Path | None = None) -> list[Path]:
    """Write the site into ``to``: a page, JSON, CSV and plots per suite, the assets, and the index
    of every suite whose page is in ``to`` (so publishing suites one by one builds up one site) and,
    with ``markdown_dir``, of the suites published there as markdown only (see :func:`index_page`)."""
    to.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("robench.css", CSS.lstrip()), ("robench.js", JS.lstrip())):
        (to / name).write_text(text)
        written.append(to / name)
    for res in results:
        figures = plots(res, to)
        for p in figures.values():
            written += [p, p.with_suffix(".svg")]
        for suffix, text in ((".json", json.dumps(rows_json([res]), indent=2) + "\n"), (".csv", to_csv([res])),
                             (".html", suite_page(res, figures))):
            (to / f"{res.suite}{suffix}").write_text(text)
            written.append(to / f"{res.suite}{suffix}")
    (to / "index.html").write_text(index_page(to, markdown_dir))
    written.append(to / "index.html")
    return written
