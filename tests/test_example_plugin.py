"""The documented out-of-tree plugin, installed as a real distribution, works without touching robench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "robench-example-defense"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example package (its own pyproject, entry point and all) into a target dir."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    assert list(target.glob("robench_example_defense-0.1.0.dist-info/entry_points.txt"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]), COLUMNS="250")
    return env


def test_plugins_lists_the_installed_distribution(installed):
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "plugins", "--kind", "model"], capture_output=True, text=True, env=installed)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if "bit-depth-mlp" in l)
    assert "robench-example-defense 0.1.0" in line


def test_suite_using_the_plugin_runs(installed, tmp_path):
    env = dict(installed, ROBENCH_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "robench.cli", "run", str(EXAMPLE / "suite.yaml"), "--out", str(tmp_path / "out"), "-q", "--limit", "40"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(subprocess.run(
        [sys.executable, "-m", "robench.cli", "leaderboard", str(tmp_path / "out"), "-f", "json"], capture_output=True, text=True, env=env
    ).stdout)
    squeezed = next(r for r in rows if r["model"] == "squeezed" and r["attack"] == "pgd")
    assert squeezed["via_surrogate"] is True and squeezed["n"] == 40
    assert squeezed["clean_accuracy"] > 0.7
    # the straight-through surrogate finds adversarials that the verifier accepts on the real model
    assert squeezed["robust_accuracy"]["0.2"] < squeezed["clean_accuracy"]
    assert "via surrogate" in proc.stdout
