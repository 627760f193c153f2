"""The command line of a benchmark script, declared as its defaults.

``parse_options(passes=1000, time_limit=30.0, json=(None, "write the figures here"))`` reads
``--passes N --time-limit S --json PATH``: each keyword is an option (``_`` written ``-``) whose type
is its default's (a string when the default is None), and a ``(default, help)`` pair gives it a help
text. Run from the benchmarks folder's scripts (``python benchmarks/bench_x.py``), which import it
as a sibling module.
"""

from __future__ import annotations

import argparse
from typing import Any


def parse_options(argv: list[str] | None = None, **defaults: Any) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    for name, spec in defaults.items():
        default, help_text = spec if isinstance(spec, tuple) else (spec, None)
        kind = str if default is None else type(default)
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=help_text)
    return ap.parse_args(argv)
