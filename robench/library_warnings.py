"""Warnings that libraries (eagerpy, foolbox, torch, ...) raise while a command runs: counted and
summarised in one line, not printed; robench's own warnings (its package and its built-in plugins) still print."""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


@dataclass
class HiddenWarnings:
    """Warnings raised by libraries (not by robench) while a command ran: counted, not printed."""

    seen: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (category, module, message) -> count

    @property
    def count(self) -> int:
        return sum(self.seen.values())

    def summary(self) -> str | None:
        if not self.seen:
            return None
        cats = sorted({c for c, _, _ in self.seen})
        return (f"{self.count} library warning(s) hidden ({', '.join(cats)}; {len(self.seen)} distinct); "
                "run with PYTHONWARNINGS=default to see them")


@functools.lru_cache(maxsize=1)
def _own_dirs() -> tuple[Path, ...]:
    """robench's package and its built-in plugins' package (robench_plugins), wherever installed."""
    dirs = [Path(__file__).resolve().parent]
    try:
        spec = importlib.util.find_spec("robench_plugins")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p).resolve() for p in spec.submodule_search_locations]
    return tuple(dirs)


def _from_robench(filename: str) -> bool:
    """Whether a warning is attributed to robench's own code (its package or its built-in plugins)."""
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return any(path.is_relative_to(own) for own in _own_dirs())


@contextmanager
def quiet_library_warnings() -> Iterator[HiddenWarnings]:
    """Keep warnings that libraries (eagerpy, foolbox, torch, ...) raise out of the output; robench's
    own warnings still print. A user's explicit ``-W`` / ``PYTHONWARNINGS`` choice is respected."""
    hidden = HiddenWarnings()
    if sys.warnoptions:
        yield hidden
        return
    original = warnings.showwarning

    def show(msg, category, filename, lineno, file=None, line=None):
        if _from_robench(str(filename)):
            return original(msg, category, filename, lineno, file, line)
        key = (category.__name__, str(filename).rsplit("site-packages/", 1)[-1], str(msg).splitlines()[0][:200])
        hidden.seen[key] = hidden.seen.get(key, 0) + 1

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield hidden
