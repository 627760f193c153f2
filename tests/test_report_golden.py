"""Behaviour pinned: publishing, printing and diffing a fixed store give exactly the committed output.

``tests/golden/publish_toy.json`` holds every text file ``robench publish --html`` wrote for the
hand-written store of :mod:`test_publish_leaderboard` (plots: their names only, since their bytes
depend on the matplotlib version; the export under ``runs/``: names only), the ``leaderboard`` command's md / json / csv, and ``diff``'s
md / json against a store where model B's norms moved. It was written by the code before the
report package existed (``robench/leaderboard.py`` + ``site.py``), so this test is the
byte-identical check of that move. Regenerate on purpose only:
``python tests/test_report_golden.py tests/golden/publish_toy.json``.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

from robench.report import diff_json, diff_markdown, diff_results, load_results, publish, to_csv, to_json, to_markdown
from test_publish_leaderboard import build_store

GOLDEN = Path(__file__).parent / "golden" / "publish_toy.json"


def _texts(folder: Path) -> dict[str, str | None]:
    # the per-sample export under runs/: names only too (it holds the hand-made store's timestamps;
    # tests/test_store_export.py checks that it re-publishes byte for byte)
    return {p.relative_to(folder).as_posix(): None if p.suffix in (".png", ".svg") or p.parts[-3] == "runs" else p.read_text()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def produce(tmp: Path) -> dict:
    old = load_results(build_store(tmp / "old" / "results.sqlite"))
    new = load_results(build_store(tmp / "new" / "results.sqlite", b_norm=0.7))
    publish(old, tmp / "pub", html=True)
    changes = diff_results(old, new)
    return {"publish": _texts(tmp / "pub"),
            "leaderboard": {"md": "\n".join(to_markdown(r) for r in old), "json": to_json(old) + "\n", "csv": to_csv(old)},
            "diff": {"md": diff_markdown(changes), "json": diff_json(changes)}}


def _flat(d: dict, prefix: str = "") -> dict[str, str | None]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {prefix + k: v})
    return out


def test_publish_leaderboard_and_diff_match_the_golden_output(tmp_path):
    want, got = _flat(json.loads(GOLDEN.read_text())), _flat(produce(tmp_path))
    assert sorted(got) == sorted(want), "a different set of files / outputs"
    for name in want:
        if want[name] != got[name]:
            delta = "".join(difflib.unified_diff(want[name].splitlines(True), got[name].splitlines(True), "golden", "now", n=1))
            raise AssertionError(f"{name} differs from {GOLDEN.name}:\n{delta[:4000]}")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Path(sys.argv[1]).write_text(json.dumps(produce(Path(tmp)), indent=1, sort_keys=True, ensure_ascii=False) + "\n")
