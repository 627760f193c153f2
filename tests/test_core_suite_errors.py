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


def test_unknown_plugin_lists_available(registry):
    msg = problems(GOOD.replace("plugin: pgd", "plugin: pgdd"), registry)
    assert "attacks[0].plugin" in msg and "unknown attack plugin 'pgdd'" in msg and "fgsm" in msg and "(line 6)" in msg


def test_wrong_type_names_location_and_value(registry):
    msg = problems(GOOD.replace("steps: 5", "steps: many"), registry)
    assert "attacks[0].params.steps (line 6)" in msg and '"many"' in msg and "integer" in msg


def test_negative_eps(registry):
    msg = problems(GOOD.replace("[0.1]", "[-0.1]"), registry)
    assert "epsilons" in msg and "must be >= 0" in msg


def test_missing_field(registry):
    msg = problems(GOOD.replace("  - {name: m, plugin: mlp, params: {hidden: 8, epochs: 1}}\n", "  - {name: m, params: {}}\n"), registry)
    assert "models[0].plugin" in msg and "required field is missing" in msg


def test_unknown_param_lists_accepted(registry):
    msg = problems(GOOD.replace("steps: 5", "stepz: 5"), registry)
    assert "attacks[0].params.stepz" in msg and "unknown field" in msg and "steps" in msg


def test_bounded_attack_without_epsilons(registry):
    msg = problems(GOOD.replace("epsilons: {Linf: [0.1]}", "epsilons: {L2: [0.5]}"), registry)
    assert "attacks[0]" in msg and "no Linf list" in msg


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
