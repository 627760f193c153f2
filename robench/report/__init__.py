"""Leaderboards from results: each output is one module, and none imports another's internals.

- :mod:`~robench.report.tables`: results to tables as data (:class:`~robench.report.tables.Table`),
  provenance lines;
- :mod:`~robench.report.export`: JSON and CSV rows, the index entries of a published folder;
- :mod:`~robench.report.markdown`: tables as markdown;
- :mod:`~robench.report.html`: the static site (sortable HTML tables);
- :mod:`~robench.report.plots`: PNG + SVG plots;
- :mod:`~robench.report.publish`: a leaderboard folder (``robench publish``);
- :mod:`~robench.report.diff`: what changed between two sets of results (``robench diff``).

Imports go one way: tables <- export, markdown, plots <- html <- publish; diff uses tables and export. The numbers
come from :func:`robench.results.load_results` (the store, through :mod:`robench.metrics`).
"""

from __future__ import annotations

from ..results import load_results
from .diff import Change, diff_json, diff_markdown, diff_results
from .html import build_site
from .markdown import to_markdown
from .plots import plot, plot_norm_cdf, plot_transfer, plots
from .publish import publish
from .export import rows_json, to_csv, to_json
from .tables import WARN, Cell, Table

__all__ = [
    "Cell", "Change", "Table", "WARN", "build_site", "diff_json", "diff_markdown", "diff_results", "load_results", "plot",
    "plot_norm_cdf", "plot_transfer", "plots", "publish", "rows_json", "to_csv", "to_json", "to_markdown",
]
