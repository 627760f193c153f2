"""A suite's ``deviations:`` from its paper: validated with their YAML line, left out of the suite hash,
listed by ``robench validate`` and under the leaderboard's tables."""

from __future__ import annotations

import pytest

from robench.errors import SuiteError
from robench.metrics import SuiteResults
from robench.report import to_markdown
from robench.suite import load_suite

BASE = """\
name: t
description: a reproduction
{deviations}dataset: {{name: digits, limit: 20}}
models:
  - {{name: m, plugin: mlp, params: {{hidden: 8, epochs: 1}}}}
attacks:
  - {{name: a, plugin: fgsm}}
epsilons: {{Linf: [0.1]}}
"""
DEVS = """\
deviations:
  - what: SVM ensemble
    paper: 32 bootstrapped votes (§III.C)
    ours: 8 votes
    why: 4x the cost on 2 CPU cores
"""


def _suite(registry, deviations: str):
    return load_suite("suite.yaml", registry, text=BASE.format(deviations=deviations)).suite


def test_deviations_parse_and_leave_the_hash_alone(registry):
    plain, with_devs = _suite(registry, ""), _suite(registry, DEVS)
    assert [d.model_dump() for d in with_devs.deviations] == [
        {"what": "SVM ensemble", "paper": "32 bootstrapped votes (§III.C)", "ours": "8 votes", "why": "4x the cost on 2 CPU cores"}]
    assert plain.deviations == []
    assert plain.content_hash() == with_devs.content_hash()  # a note on the suite, not what is measured


@pytest.mark.parametrize("edit, expected", [
    (("    why: 4x the cost on 2 CPU cores\n", ""), ["deviations[0].why", "required field is missing", "line 4"]),
    (("    ours: 8 votes", "    ours: 8 votes\n    where: here"), ["deviations[0].where", "unknown field"]),
    (("    paper: 32 bootstrapped votes (§III.C)", "    paper: ''"), ["deviations[0].paper (line 5)", "at least 1 character"]),
])
def test_bad_deviation_names_field_and_line(registry, edit, expected):
    with pytest.raises(SuiteError) as info:
        _suite(registry, DEVS.replace(*edit))
    for part in expected:
        assert part in str(info.value), (part, str(info.value))


def _results(config: dict) -> SuiteResults:
    return SuiteResults("t", config, [], {"m": (9, 10)}, {}, [], [], [], "")


def test_markdown_lists_deviations_under_the_tables(registry):
    cfg = _suite(registry, DEVS).model_dump(mode="json")
    md = to_markdown(_results(cfg))
    assert "## Deviations from the paper" in md
    assert "| what | paper | ours | why |" in md
    assert "| SVM ensemble | 32 bootstrapped votes (§III.C) | 8 votes | 4x the cost on 2 CPU cores |" in md
    assert md.index("## Deviations from the paper") < md.index("\n---\n")
    assert "Deviations" not in to_markdown(_results(_suite(registry, "").model_dump(mode="json")))


def test_validate_prints_the_deviations(registry, tmp_path):
    from typer.testing import CliRunner

    from robench.cli import app

    path = tmp_path / "s.yaml"
    path.write_text(BASE.format(deviations=DEVS))
    out = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    assert "deviation: SVM ensemble: paper 32 bootstrapped votes (§III.C); ours 8 votes (4x the cost on 2 CPU cores)" in out.output
