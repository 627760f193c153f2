"""What the `robench` command prints on a terminal: plugin listings, leaderboards as rich tables,
messages whose markup must not leak into pipes, and the run plan with its estimate (library warnings
are kept out of the output by :mod:`robench.library_warnings`).

Everything here renders to a :class:`rich.console.Console`; on a terminal it is styled, in a pipe or
a log it is the same text without escape codes. Nothing here is ever split inside a word: text wraps
at spaces, and a table too wide for the console is cut into several stacked tables (each repeating
the row's identity columns) instead of folding its cells.
"""

from __future__ import annotations

import io
import re
from typing import Any, Sequence

from rich import box
from rich.console import Console, RenderableType
from rich.cells import cell_len
from rich.table import Table as RichTable
from rich.text import Text

from .library_warnings import HiddenWarnings, quiet_library_warnings  # noqa: F401  (robench.terminal's names, as before the move)

# -- messages ------------------------------------------------------------------------------------

# The only markup robench's own messages use; anything else in brackets (robench[tf], x[0], a
# traceback's "[1, 2]") is literal text, so a message can never be eaten or raise a MarkupError.
_STYLE_TAG = re.compile(r"\[(/?)(red|yellow|green|dim|bold|cyan)\]")


def message(text: str, style: str | None = None) -> Text:
    """A :class:`Text` from a message that may carry robench's style tags ([red]...[/red])."""
    out = Text(style=style or "")
    stack: list[str] = []
    pos = 0
    for m in _STYLE_TAG.finditer(text):
        out.append(text[pos:m.start()], style=" ".join(stack) or None)
        closing, name = m.group(1), m.group(2)
        if closing:
            if name in stack:
                stack.remove(name)
        else:
            stack.append(name)
        pos = m.end()
    out.append(text[pos:], style=" ".join(stack) or None)
    return out


def plain(text: str) -> str:
    """A message without its style tags (for a log line)."""
    return message(text).plain


# -- plugins -------------------------------------------------------------------------------------

KIND_ORDER = ("model", "attack", "dataset")


def _capabilities(caps: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'/'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in caps.items())


def indented(console: Console, text: Text, indent: int, hang: int = 0) -> list[Text]:
    """``text`` wrapped at its spaces to the console's width less ``indent``, each line indented by
    ``indent`` and every line after the first by ``hang`` more (without the trailing padding rich's
    Padding adds)."""
    first = text.wrap(console, max(20, console.width - indent))
    if hang and len(first) > 1:  # wrap the rest again, narrower
        rest = Text(" ").join(first[1:])
        lines = [first[0], *rest.wrap(console, max(20, console.width - indent - hang))]
    else:
        lines = list(first)
    out = []
    for i, line in enumerate(lines):
        line.rstrip()
        out.append(Text(" " * (indent + (hang if i else 0))) + line)
    return out


def plugin_listing(console: Console, specs: Sequence[Any], *, verbose: bool = False) -> list[Text]:
    """One block per plugin, grouped by kind: name and origin, then the description and the
    capabilities indented under it (and with ``verbose`` every parameter with its default). Lines,
    each fitting the console: print them with ``soft_wrap=True``."""
    out: list[Text] = []
    kinds = sorted({s.kind for s in specs}, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else 99, k))
    for kind in kinds:
        group = [s for s in specs if s.kind == kind]
        out.append(Text(f"{kind} plugins ({len(group)})", style="bold underline"))
        for spec in group:
            out += indented(console, Text.assemble((spec.name, "bold"), "  ", (spec.origin, "dim")), 2)
            if spec.description:
                out += indented(console, Text(spec.description), 6)
            caps = spec.capabilities()
            if caps:
                out += indented(console, Text(_capabilities(caps), style="cyan"), 6)
            if verbose:
                for name, f in spec.params.model_fields.items():
                    line = Text.assemble((name, "bold"), f" = {f.default!r}", (f": {f.description}" if f.description else ""))
                    out += indented(console, line, 8, hang=4)
        out.append(Text(""))
    return out


# -- tables that fit -----------------------------------------------------------------------------


def _longest_word(x: RenderableType) -> int:
    text = x.plain if isinstance(x, Text) else str(x)
    return max((cell_len(w) for w in text.split()), default=0)


def _rich_table(title: str | None, headers: list[str], rows: list[list[RenderableType]], right: set[int]) -> RichTable:
    t = RichTable(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, collapse_padding=True)
    for i, h in enumerate(headers):
        # the longest word of the column is its floor: rich would otherwise squeeze a column below it
        # (folding a model name) when the table is too wide; fitted_tables keeps tables within the width
        floor = max(_longest_word(x) for x in [h, *(r[i] for r in rows)])
        t.add_column(h, justify="right" if i in right else "left", overflow="fold", min_width=floor)
    for r in rows:
        t.add_row(*r)
    return t


def fitted_tables(console: Console, title: str | None, headers: list[str], rows: list[list[RenderableType]], *,
                  keep: int = 1, right: set[int] | None = None) -> list[RichTable]:
    """``headers``/``rows`` as one rich table, or, when its narrowest layout (every cell wrapped at its
    spaces, no word split) is wider than the console, as several tables of consecutive columns, each
    repeating the first ``keep`` columns."""
    right = right or set()
    width = console.options.max_width

    def build(cols: list[int], part_title: str | None) -> RichTable:
        return _rich_table(part_title, [headers[c] for c in cols], [[r[c] for c in cols] for r in rows],
                           {j for j, c in enumerate(cols) if c in right})

    def fits(cols: list[int]) -> bool:
        """Rendered at the width, every word of every cell and header comes out whole (rich's own
        measurement does not account for its collapsing, so the table is rendered to check)."""
        probe = Console(width=width, file=io.StringIO(), color_system=None, record=True, legacy_windows=False)
        probe.print(build(cols, None))
        shown = set(probe.export_text().split())
        needed = set()
        for c in cols:
            needed |= set(headers[c].split())
            for r in rows:
                needed |= set((r[c].plain if isinstance(r[c], Text) else str(r[c])).split())
        return needed <= shown

    all_cols = list(range(len(headers)))
    if fits(all_cols) or len(headers) <= keep + 1:
        return [build(all_cols, title)]
    parts: list[list[int]] = []
    current = list(range(keep))
    for c in range(keep, len(headers)):
        if len(current) > keep and not fits(current + [c]):
            parts.append(current)
            current = list(range(keep))
        current.append(c)
    parts.append(current)
    return [build(cols, title if i == 0 else (f"{title} (continued)" if title else None)) for i, cols in enumerate(parts)]


# -- leaderboards --------------------------------------------------------------------------------


def _numeric(header: str) -> bool:
    return header not in ("Model", "Attack", "Kind", "Status", "source \\ target") and not header.startswith("Strongest")


def _cells(table: Any, cols: list[int], ci_col: int | None = None) -> list[list[RenderableType]]:
    """Rows of a leaderboard table (its display texts, as in the markdown); clean accuracy and the robust
    accuracy of the headline eps keep their interval on a second line, other eps columns show the value only."""
    rows = []
    for row in table.rows:
        out: list[RenderableType] = []
        for c in cols:
            text = row[c].text
            head = table.headers[c]
            if (head.startswith("ε=") or head == "Clean") and " [" in text:
                value, ci = text.split(" [", 1)
                lo, _, hi = ci.rstrip("]").partition(", ")
                out.append(Text.assemble(value, (f"\n{lo}–{hi}", "dim")) if c == ci_col or head == "Clean" else Text(value))
            else:
                out.append(Text(text))
        rows.append(out)
    return rows


def _para(console: Console, text: str, style: str | None = None) -> None:
    for line in indented(console, Text(text, style=style or ""), 0):
        console.print(line, soft_wrap=True)


def _short(header: str) -> str:
    """Terminal headers: the markdown's, shortened where a long one would widen its column."""
    if header.startswith("Strongest attack "):
        return "Strongest " + header[len("Strongest attack "):]
    return {"s/sample (all attacks)": "s/sample"}.get(header, header)


def _print_table(console: Console, title: str, table: Any, cols: list[int], keep: int, ci_col: int | None = None,
                 note: str | None = None) -> None:
    headers = [_short(table.headers[c]) for c in cols]
    right = {j for j, h in enumerate(headers) if _numeric(h)}
    console.print(Text(title, style="bold"))
    if note or table.note:
        _para(console, note or table.note, "dim")
    for i, t in enumerate(fitted_tables(console, None, headers, _cells(table, cols, ci_col), keep=keep, right=right)):
        if i:
            console.print()
        console.print(t)
    console.print()


def print_leaderboard(console: Console, res: Any, source: str | None = None) -> None:
    """One suite's leaderboard as terminal tables: per norm the ranking (model, clean accuracy, robust
    accuracy per eps, strongest attack, cost) and one line per model and attack; then noise, transfer,
    warnings and provenance. The numbers are the markdown's; columns only the markdown has (per-attack
    columns of the ranking, median, forward/backward passes) are left to ``--format md``."""
    from .report import tables as lb

    console.print(Text(f"Leaderboard: {res.suite}", style="bold"))
    if res.config.get("description"):
        _para(console, " ".join(str(res.config["description"]).split()), "dim")
    _para(console, lb.summary_lines(res)[0].replace("**", ""))
    console.print()
    for norm in lb.norms_of(res):
        ranking = lb.ranking_table(res, norm)
        head = res.headline(norm)
        h = ranking.headers
        drop_rejected = all(not row[h.index("Rejected")].value for row in ranking.rows)
        cols = [i for i, name in enumerate(h)
                if name in ("#", "Model", "Clean", "Success", "s/sample (all attacks)") or name.startswith(("ε=", "Strongest attack"))
                or (name == "Rejected" and not drop_rejected)]
        ci_col = h.index(f"ε={lb.eps_text(head)}") if head is not None and f"ε={lb.eps_text(head)}" in h else None
        head_txt = lb.eps_text(head) if head is not None else "?"
        note = (f"Models ranked by robust accuracy (%) of best (all attacks, per sample) at eps = {head_txt}, "
                f"with its 95% Wilson interval (as clean accuracy); s/sample sums every attack." + (" L0 counts pixels." if norm == "L0" else ""))
        _print_table(console, f"{norm}: ranking", ranking, cols, keep=2, ci_col=ci_col, note=note)

        attacks = lb.attack_table(res, norm)
        a = attacks.headers
        statuses = {row[a.index("Status")].text for row in attacks.rows}
        rejected = any(row[a.index("Rejected")].value for row in attacks.rows)
        minimal = any(row[a.index("Kind")].text == "minimal" for row in attacks.rows)
        cols = [i for i, name in enumerate(a)
                if name in ("Model", "Attack", "Success", "s/sample") or name.startswith("ε=")
                or (name == f"Mean {norm}" and minimal) or (name == "Rejected" and rejected)
                or (name == "Status" and statuses != {"done"})]
        _print_table(console, f"{norm}: per attack", attacks, cols, keep=2,
                     note="Robust accuracy (%) per eps" + (f", mean {norm} of the minimal attacks' adversarials" if minimal else "")
                     + ", success rate (%) and seconds per sample of each attack.")
        values = lb.values_note(res, norm)
        if values:  # L0 attacks that minimise changed values, not pixels (marked ‡ in the attack column)
            _para(console, values, "dim")
            console.print()
        if any(r.via_surrogate for r in lb.per_attack_rows(res, norm)):
            console.print(Text("† via surrogate: the attack used the model's differentiable surrogate; "
                               "every adversarial was verified on the real model.", style="dim"))
            console.print()
    if res.noise:
        t = lb.noise_table(res)
        _print_table(console, "Gaussian noise", t, list(range(len(t.headers))), keep=1)
    for m in res.transfer:
        t = lb.transfer_table(m)
        _print_table(console, f"Transfer: {m['norm']} eps = {lb.eps_text(m['eps'])}", t, list(range(len(t.headers))), keep=1)
    clean_only = lb.clean_only_table(res)
    if clean_only is not None:
        _print_table(console, "Clean accuracy only", clean_only, [0, 1], keep=1)
    if res.warnings:
        console.print(Text("Warnings", style="bold yellow"))
        for w in res.warnings:
            for line in indented(console, Text(f"{lb.WARN} {w}"), 2):
                console.print(line, soft_wrap=True)
        console.print()
    for line in lb.provenance_lines(res):
        _para(console, line, "dim")
    more = f"robench leaderboard {source} --format md" if source else "robench leaderboard <store> --format md"
    _para(console, f"All columns (passes per sample, medians, per-attack ranking columns): {more}", "dim")
    console.print()


# -- the run plan and its estimate ----------------------------------------------------------------


def seconds_text(seconds: float) -> str:
    """A cell's duration: 0.04s, 3.2s, 125.0s (a short cell does not read as 0.0s)."""
    return f"{seconds:.1f}s" if seconds >= 1 else f"{seconds:.2f}s"


def duration(seconds: float) -> str:
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def plan_lines(plan: Any) -> list[str]:
    """What ``robench run`` is about to do (a :class:`robench.run.RunPlan`), as lines of text."""
    n_cells = len(plan.cells)
    stored = plan.cells_stored
    lines = [f"plan: {n_cells} cell(s) x {plan.samples} sample(s)"
             + (f", {stored} cell(s) already stored" if stored else "")
             + (f"; {plan.samples_todo} sample-attack(s) to run" if plan.samples_todo else "; nothing left to attack")]
    if plan.models:
        lines.append("models: " + ", ".join(f"{name} {state}" for name, state in plan.models.items()))
    if plan.estimate:
        scope = f", for {plan.suite_samples} samples" if plan.suite_samples and plan.suite_samples != plan.samples else ""
        lines.append(f"estimate (the suite's{scope}): {plan.estimate}")
    seconds, unknown = plan.stored_estimate()
    left = sum(1 for c in plan.cells if c.todo)
    if left and left > unknown:
        lines.append(f"estimate: {duration(seconds)} of attacks for {left - unknown} cell(s), from the timing of stored samples"
                     + (f"; {unknown} cell(s) not timed yet" if unknown else ""))
    if unknown:
        lines.append("estimate: the time left is printed as cells finish, once each attack has run a batch")
    return lines


class RunEta:
    """The attack time left in a run: per (model, attack), the seconds per sample measured in this
    run (or stored by an earlier one) times the samples its unfinished cells still have."""

    def __init__(self) -> None:
        self.cells: dict[str, Any] = {}
        self.rates: dict[tuple[str, str], float] = {}
        self.attack_rates: dict[str, float] = {}
        self.finished: set[str] = set()

    def set_plan(self, plan: Any) -> None:
        self.cells = {c.label: c for c in plan.cells}
        for c in plan.cells:
            if c.seconds_per_sample is not None:
                self.rates[(c.model, c.attack)] = c.seconds_per_sample
                self.attack_rates.setdefault(c.attack, c.seconds_per_sample)
            if not c.todo:
                self.finished.add(c.label)

    def measured(self, label: str, samples: int, seconds: float) -> None:
        c = self.cells.get(label)
        if c is not None and samples > 0:
            self.rates[(c.model, c.attack)] = seconds / samples
            self.attack_rates[c.attack] = seconds / samples

    def finish(self, label: str) -> None:
        self.finished.add(label)

    def left(self, current: str | None = None, current_left: int = 0) -> tuple[float, int]:
        """(seconds, cells with no timing yet) for the unfinished cells."""
        seconds, unknown = 0.0, 0
        for label, c in self.cells.items():
            if label in self.finished:
                continue
            todo = current_left if label == current else c.todo
            rate = self.rates.get((c.model, c.attack), self.attack_rates.get(c.attack))
            if rate is None:
                unknown += 1
            else:
                seconds += todo * rate
        return seconds, unknown

    def text(self, current: str | None = None, current_left: int = 0) -> str | None:
        if not self.cells or all(lb in self.finished for lb in self.cells):
            return None
        seconds, unknown = self.left(current, current_left)
        if unknown == 0:
            return f"{duration(seconds)} left"
        timed = sum(1 for lb in self.cells if lb not in self.finished) - unknown
        return (f"{duration(seconds)} left for {timed} timed cell(s), {unknown} not timed yet" if timed
                else f"{unknown} cell(s) not timed yet")
