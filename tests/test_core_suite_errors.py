"""Malformed suites exit 2 with a message that names the location, the bad value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robench.errors import SuiteError
from robench.suite import load_suite

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
dataset: {name: digits, limit: 20}
models:
  - {name: m, plugin: mlp, params: {hidden: 8, epochs: 1}}
attacks:
  - {name: a, plugin: pgd, params: {norm: Linf, steps: 5}}
  - {name: b, plugin: fgsm}
epsilons: {Linf: [0.1]}
"""


def problems(text, registry):
    with pytest.raises(SuiteError) as info:
        load_suite("suite.yaml", registry, text=text)
    return str(info.value)


def test_good_suite_validates(registry):
    resolved = load_suite("suite.yaml", registry, text=GOOD)
    assert resolved.attack_params["a"].steps == 5


# One edit of GOOD each, and what the message must say: the location, the bad value, what is allowed.
EDITS = {
    "unknown plugin lists the available ones": (
        "plugin: pgd", "plugin: pgdd", ["attacks[0].plugin", "unknown attack plugin 'pgdd'", "fgsm", "(line 6)"]),
    "wrong type names location and value": (
        "steps: 5", "steps: many", ["attacks[0].params.steps (line 6)", '"many"', "integer"]),
    "negative eps": ("[0.1]", "[-0.1]", ["epsilons", "must be >= 0"]),
    "missing field": (
        "  - {name: m, plugin: mlp, params: {hidden: 8, epochs: 1}}\n", "  - {name: m, params: {}}\n",
        ["models[0].plugin", "required field is missing"]),
    "unknown param lists the accepted ones": ("steps: 5", "stepz: 5", ["attacks[0].params.stepz", "unknown field", "steps"]),
    "bounded attack without epsilons": ("epsilons: {Linf: [0.1]}", "epsilons: {L2: [0.5]}", ["attacks[0]", "no Linf list"]),
}


@pytest.mark.parametrize("old, new, expected", EDITS.values(), ids=EDITS.keys())
def test_each_problem_is_named_with_its_location(registry, old, new, expected):
    assert old in GOOD
    msg = problems(GOOD.replace(old, new), registry)
    for text in expected:
        assert text in msg, f"{text!r} not in {msg!r}"


def test_duplicate_names_and_bad_refs(registry):
    assert "used twice" in problems(GOOD.replace("name: b,", "name: a,"), registry)
    assert "refers to model 'nope'" in problems(GOOD.replace("plugin: fgsm}", "plugin: fgsm, models: [nope]}"), registry)


def test_yaml_syntax_error_has_line(registry):
    msg = problems(GOOD.replace("models:", "models: [oops"), registry)
    assert "YAML syntax (line" in msg


def test_all_problems_reported_at_once(registry):
    bad = GOOD.replace("steps: 5", "steps: -1").replace("hidden: 8", "hidden: 0")
    msg = problems(bad, registry)
    assert "attacks[0].params.steps" in msg and "models[0].params.hidden" in msg


@pytest.mark.parametrize(
    "mutation",
    [
        ("plugin: pgd", "plugin: nope"),
        ("steps: 5", "steps: x"),
        ("[0.1]", "[-1]"),
        ("name: t\n", ""),
        ("models:", "models: [oops"),
    ],
)
def test_validate_cli_exits_2(tmp_path, mutation):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(*mutation))
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr


def test_validate_cli_ok(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout


def test_run_missing_suite_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "run", str(tmp_path / "none.yaml")], capture_output=True, text=True)
    assert proc.returncode == 2 and "file not found" in proc.stderr


def test_every_shipped_suite_validates(registry):
    suites = sorted((REPO / "suites").rglob("*.yaml"))
    assert suites
    for path in suites:
        load_suite(path, registry)
