"""mkdocs hook: ``<!-- include: GLOB -->`` on a line of its own is replaced by the files matching
GLOB (relative to docs/), in name order, their headings demoted one level and their relative
links rewritten to work from the including page. The benchmarks and reproductions pages use it to
gather the per-area files other engineers write, so adding a file needs no edit here.

Top-level pages that ``nav`` in mkdocs.yml does not list (per-plugin notes such as
``models-zero-one.md``) are added to the nav under "Plugin notes", titled by their first heading,
so a new page is never left unreachable."""

from __future__ import annotations

import os
import re
from pathlib import Path

INCLUDE = re.compile(r"^<!-- include: (?P<glob>\S+) -->[ \t]*$", re.M)
LINK = re.compile(r"(!?\[[^\]]*\]\()(?P<target>[^)\s]+)(\))")
FENCE = re.compile(r"^(```|~~~)")


def _rewrite(text: str, source: Path, page_dir: Path) -> str:
    """Demote headings and re-anchor relative links, outside fenced code."""
    out, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            in_code = not in_code
        elif not in_code:
            if line.startswith("#"):
                line = "#" + line
            line = LINK.sub(lambda m: m.group(1) + _relink(m.group("target"), source, page_dir) + m.group(3), line)
        out.append(line)
    return "\n".join(out)


def _relink(target: str, source: Path, page_dir: Path) -> str:
    if re.match(r"^([a-z][a-z0-9+.-]*:|/|#)", target):
        return target  # URL, absolute path or in-page anchor
    path, _, anchor = target.partition("#")
    rel = os.path.relpath(source.parent / path, page_dir).replace(os.sep, "/")
    return rel + (f"#{anchor}" if anchor else "")


def include(markdown: str, page_path: Path, docs_dir: Path) -> str:
    def expand(m: re.Match) -> str:
        files = sorted(p for p in docs_dir.glob(m["glob"]) if p.resolve() != page_path.resolve())
        if not files:
            return "*Nothing published here yet.*"
        return "\n\n".join(_rewrite(p.read_text(), p, page_path.parent) for p in files)

    return INCLUDE.sub(expand, markdown)


def on_page_markdown(markdown, page, config, files):
    docs_dir = Path(config["docs_dir"])
    return include(markdown, docs_dir / page.file.src_path, docs_dir)


EXTRA_SECTION = "Plugin notes"


def _listed(nav) -> set[str]:
    out: set[str] = set()
    for item in nav or []:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            out |= _listed(value)
        elif isinstance(value, str):
            out.add(value)
    return out


def unlisted_pages(docs_dir: Path, nav) -> list[dict[str, str]]:
    """Top-level pages missing from nav (included fragments excepted), as nav entries."""
    listed = _listed(nav)
    entries = []
    for p in sorted(docs_dir.glob("*.md")):
        if p.name in listed or p.name.startswith("reproductions-"):
            continue
        heading = next((line.lstrip("#").strip() for line in p.read_text().splitlines() if line.startswith("# ")), p.stem)
        entries.append({heading: p.name})
    return entries


def on_config(config):
    extra = unlisted_pages(Path(config["docs_dir"]), config["nav"])
    if extra and config["nav"] is not None:
        names = [next(iter(i)) if isinstance(i, dict) else i for i in config["nav"]]
        at = names.index("Reference") if "Reference" in names else len(names)
        config["nav"].insert(at, {EXTRA_SECTION: extra})
    return config
