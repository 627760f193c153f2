"""``robench publish``: the files of a leaderboard folder (markdown, JSON, CSV, plots, the index
``README.md``) and, on request, the static site (:mod:`robench.report.html`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UserInputError
from ..metrics import SuiteResults
from .html import build_site
from .markdown import md_text, to_markdown
from .plots import PLOT_CAPTIONS, plots
from .export import index_entries, rows_json, to_csv
from .tables import pct


def publish(results: list[SuiteResults], to: Path, *, html: bool = False) -> list[Path]:
    """Write ``<suite>.md``, ``.json``, ``.csv`` and the plots (PNG + SVG) per suite, and the index
    ``README.md`` of every suite published in ``to``; with ``html``, also the static site in ``to/site``."""
    for res in results:  # everything checked before the first byte is written
        check_publish_name(res.suite)
        for name in publish_names(res.suite):
            check_target(to / name, to)
        if html:
            for name in publish_names(res.suite, html=True):
                check_target(to / "site" / name, to / "site")
        if res.source is not None:
            check_runs_folder(to / "runs" / res.suite, to)
    check_target(to / "README.md", to)
    for folder in [to] + ([to / "site"] if html else []):
        if folder.exists() and not folder.is_dir():
            raise UserInputError(f"{folder} exists and is not a folder; publish into another --to")
    if html and (to / "site").is_symlink():
        raise UserInputError(f"{to / 'site'} is a symbolic link; publish writes only inside {to} (remove the link first)")
    try:
        return _write_all(results, to, html)
    except OSError as exc:  # a read-only or full file system: one line, not a traceback
        raise UserInputError(f"cannot write into {to}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")) from None


def _write_all(results: list[SuiteResults], to: Path, html: bool) -> list[Path]:
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
        if res.source is not None:  # the per-sample rows beside the leaderboard (robench.store_export)
            written += write_runs(res, to / "runs" / res.suite)
    written.append(_write_index(to))
    if html:
        written += build_site(results, to / "site", markdown_dir=to)
    return written


#: What a suite name may be (as in a suite file), so that every file named after it stays inside ``--to``.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
#: Names of the files ``publish`` writes that are not per suite.
_RESERVED = {"readme", "index", "robench"}


def check_publish_name(name: object) -> None:
    """A suite name read from a results store is validated like one in a suite file before files are
    named after it: a crafted store cannot make ``publish`` write outside ``--to`` or over its index."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.lower() in _RESERVED:
        raise UserInputError(
            f"the results store names a suite {str(name)[:80]!r}, which is not a valid suite name (up to 100 letters, digits and "
            "_.+-, starting with a letter or digit; not README, index or robench); refusing to write files named after it")


def publish_names(suite: str, *, html: bool = False) -> list[str]:
    """Every file name ``publish`` may write for ``suite`` (in ``--to``, or with ``html`` in ``--to/site``)."""
    plots_ = [f"{suite}{tail}{ext}" for tail in ("", "-cdf", "-transfer", "-budget", "-ratios") for ext in (".png", ".svg")]
    if html:
        return [f"{suite}.html", f"{suite}.json", f"{suite}.csv", "index.html", "robench.css", "robench.js"] + plots_
    return [f"{suite}.md", f"{suite}.json", f"{suite}.csv"] + plots_


def _ours(path: Path) -> bool:
    """Whether an existing file looks like one ``publish`` wrote (so overwriting it is an update)."""
    try:
        if path.suffix == ".md":
            with path.open(encoding="utf-8", errors="replace") as f:
                first = f.readline()
            return first.startswith("# Leaderboard: ") or (path.name == "README.md" and first.startswith("# Leaderboards"))
        if path.suffix == ".json":
            rows = json.loads(path.read_text())
            if path.name == "manifest.json" and isinstance(rows, dict):
                return rows.get("format") == "robench-store-export"
            return isinstance(rows, list) and all(isinstance(r, dict) and "model" in r and "norm" in r for r in rows)
    except (OSError, ValueError):
        return False
    return True  # csv, plots, site assets: robench's names, rewritten


def check_target(path: Path, to: Path) -> None:
    """Refuse to write ``path`` when it would leave ``to`` (through a symbolic link, or a folder in its
    place) or replace a markdown / JSON file that ``publish`` did not write (e.g. a project's README)."""
    if path.is_symlink():
        raise UserInputError(f"{path} is a symbolic link; publish writes only plain files inside {to} (remove the link first)")
    if path.exists() and not path.is_file():
        raise UserInputError(f"{path} exists and is not a file; publish into another --to")
    if path.exists() and not _ours(path):
        raise UserInputError(f"{path} exists and was not written by robench publish; publish into another --to "
                             "(or remove the file) rather than overwrite it")


def check_runs_folder(folder: Path, to: Path) -> None:
    """``runs/<suite>/`` may hold only what an earlier publish wrote there (its manifest and tables)."""
    for part in (folder.parent, folder):
        if part.is_symlink() or (part.exists() and not part.is_dir()):
            raise UserInputError(f"{part} is a symbolic link or not a folder; publish writes only plain files inside {to}")
    if folder.is_dir():
        for p in folder.iterdir():
            check_target(p, to)
            if p.name != "manifest.json" and p.suffix != ".jsonl":
                raise UserInputError(f"{p} was not written by robench publish; publish into another --to (or remove it)")


def write_runs(res: SuiteResults, folder: Path) -> list[Path]:
    """Export ``res``'s suite from the store (or the export) it was computed from into ``folder``."""
    from ..store import Store
    from ..store_export import export_suite, imported, is_export

    source = Path(res.source)
    if is_export(source):
        if source.resolve() == folder.resolve():
            return []  # republished from its own export: the files are already these
        with imported(source) as path, Store(path, create=False) as store:
            return export_suite(store, res.suite, folder)
    with Store(source, create=False, read_only=True) as store:
        return export_suite(store, res.suite, folder)


def _write_index(to: Path) -> Path:
    """``README.md`` listing every suite published in ``to``."""
    lines = ["# Leaderboards", "", "Published with `robench publish`. One page per suite; the top model per norm is ranked "
             "by robust accuracy (%) of *best* at the suite's headline eps.", "",
             "| Suite | Models | Norms | Top model per norm | Page | Data |", "|---|---|---|---|---|---|"]
    for e in index_entries(to):
        if not (to / f"{e['suite']}.md").exists():
            continue
        if not _NAME.fullmatch(e["suite"]):
            continue  # a .json dropped into the folder under a name no suite can have
        tops = md_text("; ".join(f"{t['norm']}: {t['model']} ({pct(t['robust_accuracy'])} @ {t['eps']})" for t in e["tops"]))
        tops = tops.replace("|", "\\|")
        s = e["suite"]
        norms = md_text(", ".join(map(str, e["norms"]))).replace("|", "\\|")
        lines.append(f"| {s} | {len(e['models'])} | {norms} | {tops or '–'} "
                     f"| [{s}.md]({s}.md) | [json]({s}.json), [csv]({s}.csv) |")
    index = to / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index
