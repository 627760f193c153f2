"""The leaderboards committed under ``leaderboard/`` still match the suites and code that would write
them today (issue 22: a committed page had drifted from what its suite gives).

For every ``leaderboard/<suite>.md`` whose suite file is ``suites/<suite>.yaml``: the suite hash and
the robench version in its provenance footer equal what a run today would record, and the committed
site's ``robench.css`` / ``robench.js`` equal what ``publish --html`` writes. A mismatch means:
re-run and republish (docs/publishing.md, "Committed leaderboards").

``STALE`` lists the boards that cannot be refreshed here, with the reason; the test fails as well
when one of them matches again (then remove it from the list).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from robench import __version__
from robench.report.html import CSS, JS
from robench.suite import load_suite

ROOT = Path(__file__).resolve().parent.parent
BOARD = ROOT / "leaderboard"
#: Boards whose results stores are not shipped (hours of CPU time), published from an older suite file.
_NO_MATCH = "its suite hash no longer matches today's (the suite file, or what the hash covers, changed since)"
STALE = {
}
#: Every committed board with its suite file: ``leaderboard/<x>.md`` <- ``suites/<x>.yaml``, likewise under papers/.
BOARDS = sorted(p.relative_to(BOARD).with_suffix("").as_posix() for p in [*BOARD.glob("*.md"), *BOARD.glob("papers/*.md")]
                if p.name != "README.md" and (ROOT / "suites" / p.relative_to(BOARD).with_suffix(".yaml")).exists())
#: The paper replications (leaderboard/papers): published from stores that are not shipped, by older suite files.
#: Paper replications rerun under the papers' protocols (issue 24) and republished with their per-sample export.
REFRESHED = {"papers/01loss-transfer-mnist", "papers/01loss-transfer-cifar10", "papers/01loss-substitute-mnist-single",
             "papers/01loss-substitute-cifar10-single", "papers/01loss-transfer-cifar10-saturated",
             "papers/01loss-substitute-mnist", "papers/01loss-substitute-fashion-mnist", "papers/01loss-substitute-cifar10",
             "papers/01loss-substitute-cnn-cifar10"}
STALE.update({b: f"a paper replication whose results store is not shipped; {_NO_MATCH}" for b in BOARDS
              if b.startswith("papers/") and b not in REFRESHED})


def footer(md: str) -> tuple[str, str]:
    """(robench version, suite hash) from a leaderboard's provenance footer."""
    version = re.search(r"<sub>robench (\S+) ·", md)
    suite_hash = re.search(r"· suite hash ([0-9a-f]+) ·", md)
    assert version and suite_hash, "no provenance footer"
    return version.group(1), suite_hash.group(1)


def test_there_are_committed_boards_to_check():
    assert "quickstart" in BOARDS and len(BOARDS) >= 14 and set(STALE) <= set(BOARDS)


@pytest.mark.parametrize("suite", BOARDS)
def test_committed_board_matches_its_suite_and_code(suite, registry):
    version, suite_hash = footer((BOARD / f"{suite}.md").read_text())
    now = load_suite(ROOT / "suites" / f"{suite}.yaml", registry).suite.content_hash()
    fresh = (version, suite_hash) == (__version__, now)
    if suite in STALE:
        assert not fresh, f"leaderboard/{suite}.md matches its suite again: remove it from STALE"
        pytest.xfail(f"known stale: {STALE[suite]}")
    assert fresh, (f"leaderboard/{suite}.md was published by robench {version} from suite hash {suite_hash}; today: "
                   f"robench {__version__}, suite hash {now}. Re-run and republish (docs/publishing.md, 'Committed leaderboards').")


def test_committed_site_assets_are_todays():
    assert (BOARD / "site" / "robench.css").read_text() == CSS.lstrip()
    assert (BOARD / "site" / "robench.js").read_text() == JS.lstrip()
