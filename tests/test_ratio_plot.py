"""The ratio-distribution plot (robench.report.plots.plot_ratios): publish writes
``<suite>-ratios.png/.svg`` beside the other plots, linked from the markdown and the site, for a
suite whose solver certified optimal samples, and none for a suite without certificates."""

from __future__ import annotations

from robench.certified import _ratio_stats
from robench.metrics import SuiteResults
from robench.report.publish import publish


def _results(suite: str, certified: dict) -> SuiteResults:
    return SuiteResults(suite=suite, config={"name": suite, "epsilons": {}}, rows=[], clean={}, noise={}, transfer=[],
                        warnings=[], runs=[], sample_digest="", certified=certified)


def _solver_entry():
    return {"model": "mlp", "norm": "L2", "solver": "exact-l2", "optimal": 4, "counts": {"optimal": 4, "bracket": 1},
            "attacks": {"pdpgd": _ratio_stats([1.0, 1.002, 1.3, 1.04], 0), "fab": _ratio_stats([1.0 - 1e-9, 1.01, 1.2], 1),
                        "never": _ratio_stats([], 4)}}


def test_ratio_stats_keep_the_sorted_ratios():
    s = _ratio_stats([1.3, 1.0, 1.04], 2)
    assert s["ratios"] == [1.0, 1.04, 1.3] and s["n"] == 3 and s["missed"] == 2 and s["worst"] == 1.3


def test_publish_writes_the_ratio_plot_for_a_suite_with_certificates(tmp_path):
    with_certs = _results("withcerts", {"solver": [_solver_entry()], "verified": [], "warnings": []})
    without = _results("nocerts", {})
    only_missed = _results("onlymissed", {"solver": [{**_solver_entry(), "attacks": {"never": _ratio_stats([], 4)}}],
                                          "verified": [], "warnings": []})
    board = tmp_path / "board"
    names = {p.name for p in publish([with_certs, without, only_missed], board, html=True)}
    assert {"withcerts-ratios.png", "withcerts-ratios.svg"} <= names
    assert (board / "withcerts-ratios.png").stat().st_size > 1000
    assert "](withcerts-ratios.png)" in (board / "withcerts.md").read_text()
    assert 'src="withcerts-ratios.svg"' in (board / "site" / "withcerts.html").read_text()
    assert (board / "site" / "withcerts-ratios.png").exists()
    for suite in ("nocerts", "onlymissed"):  # no certificates, or no ratio to draw: no plot
        assert not list(board.glob(f"{suite}-ratios.*")) and not list((board / "site").glob(f"{suite}-ratios.*"))
        assert "-ratios" not in (board / f"{suite}.md").read_text()
    # republishing unchanged results rewrites the same bytes
    before = (board / "withcerts-ratios.svg").read_bytes()
    publish([with_certs], board)
    assert (board / "withcerts-ratios.svg").read_bytes() == before
