"""Report details that are easy to get wrong: a tie for the strongest attack, the CDF panels' axes."""

from __future__ import annotations

from robench.report import load_results
from robench.report.tables import ranking_table
from test_publish_leaderboard import build_store


def test_a_tie_for_the_strongest_attack_names_every_tied_attack(tmp_path):
    res = load_results(build_store(tmp_path / "results.sqlite"))[0]
    table = ranking_table(res, "L2")
    col = next(i for i, h in enumerate(table.headers) if h.startswith("Strongest attack"))
    rows = {ids["model"]: row for ids, row in zip(table.row_ids, table.rows)}
    # model A: cw and pgd both leave 60% robust at the headline eps 1 (suite order: cw, then pgd)
    assert rows["A"][col].text == "cw, pgd (60.0)"
    assert rows["A"][col].value == 0.6
    assert rows["B"][col].text.startswith("cw (")  # no tie: one name


def test_cdf_panels_of_one_norm_share_their_x_axis(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import importlib

    plots = importlib.import_module("robench.report.plots")  # the module (robench.report.plots is also a function)

    limits = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: limits.extend(ax.get_xlim() for ax in fig.axes if ax.get_visible()) or path)
    res = load_results(build_store(tmp_path / "results.sqlite"))[0]
    plots.plot_norm_cdf(res, tmp_path / "cdf.png")
    assert len(limits) >= 2 and len(set(limits)) == 1, limits  # cw, pgd and best panels: one x range
    assert limits[0][1] >= 2.0  # the largest eps (2) and norm are inside it
