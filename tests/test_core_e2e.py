"""The quick start end to end through the CLI, with the leaderboard recomputed from raw SQLite rows."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROBENCH = [sys.executable, "-m", "robench.cli"]


def run_cli(*args, env=None, check=True, cwd=REPO):
    proc = subprocess.run(ROBENCH + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"robench {args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    import os

    tmp = tmp_path_factory.mktemp("quickstart")
    env = dict(os.environ, ROBENCH_CACHE=str(tmp / "cache"))
    proc = run_cli("run", REPO / "suites" / "quickstart.yaml", "--out", tmp / "run", "--quiet", env=env)
    return tmp, proc, env


def test_quickstart_prints_a_leaderboard(quickstart):
    _, proc, _ = quickstart
    assert "# Leaderboard: quickstart" in proc.stdout
    assert "| 1 | " in proc.stdout and "## Linf" in proc.stdout and "## L2" in proc.stdout


def independent_robust_accuracy(db_path: Path, suite: str) -> dict[tuple[str, str, str, float], float]:
    """(model, attack or 'best', norm, eps) -> robust accuracy, from the raw rows only."""
    db = sqlite3.connect(db_path)
    cfg = json.loads(db.execute("SELECT config FROM suites WHERE name=?", (suite,)).fetchone()[0])
    clean = {(m, i): (lbl, pred) for m, i, lbl, pred in db.execute("SELECT model, idx, label, pred FROM clean WHERE suite=?", (suite,))}
    col = {"L0": "l0", "L1": "l1", "L2": "l2", "Linf": "linf"}
    smallest: dict[tuple, float] = {}
    for model, attack, norm, idx, success, l0, l1, l2, linf in db.execute(
        "SELECT c.model, c.attack, c.norm, s.idx, s.success, s.l0, s.l1, s.l2, s.linf FROM samples s JOIN cells c ON s.cell = c.key WHERE c.suite=?",
        (suite,),
    ):
        value = {"l0": l0, "l1": l1, "l2": l2, "linf": linf}[col[norm]]
        if success:
            for a in (attack, "best"):
                k = (model, a, norm, idx)
                smallest[k] = min(smallest.get(k, float("inf")), value)
    out = {}
    models = {m for m, _ in clean}
    attacks = {(a, n) for a, n in db.execute("SELECT DISTINCT attack, norm FROM cells WHERE suite=?", (suite,))}
    attacks |= {("best", n) for _, n in attacks}
    for model in models:
        idxs = [i for m, i in clean if m == model]
        for attack, norm in attacks:
            for eps in cfg["epsilons"][norm]:
                robust = 0
                for i in idxs:
                    lbl, pred = clean[(model, i)]
                    v = smallest.get((model, attack, norm, i))
                    broken = lbl != pred or (v is not None and v <= eps * (1 + 1e-5) + 1e-6)
                    robust += not broken
                out[(model, attack, norm, float(eps))] = robust / len(idxs)
    return out


def test_leaderboard_numbers_match_the_raw_rows(quickstart):
    tmp, _, env = quickstart
    db = tmp / "run" / "results.sqlite"
    rows = json.loads(run_cli("leaderboard", db, "--format", "json", env=env).stdout)
    expected = independent_robust_accuracy(db, "quickstart")
    checked = 0
    for row in rows:
        for eps, value in row["robust_accuracy"].items():
            assert value == pytest.approx(expected[(row["model"], row["attack"], row["norm"], float(eps))]), row
            checked += 1
        assert {"model", "attack", "norm", "clean_accuracy", "mean_norm", "median_norm", "success_rate", "n", "rejected"} <= set(row)
    # 2 models x (3 Linf + 2 L2 per attack row: fgsm, pgd-linf, pgd-l2, best Linf, best L2)
    assert checked == 2 * (3 + 3 + 2 + 3 + 2)
    # PGD is at least as strong as FGSM on every model and eps (same norm, more steps)
    by = {(r["model"], r["attack"]): r for r in rows}
    for model in ("mlp-plain", "mlp-wide"):
        for eps in ("0.01", "0.03", "0.1"):
            assert by[(model, "pgd-linf")]["robust_accuracy"][eps] <= by[(model, "fgsm")]["robust_accuracy"][eps] + 0.02


def test_rerun_skips_finished_cells_and_changes_nothing(quickstart):
    tmp, _, env = quickstart
    db = tmp / "run" / "results.sqlite"
    before = sqlite3.connect(db).execute("SELECT COUNT(*), SUM(success) FROM samples").fetchone()
    proc = run_cli("run", REPO / "suites" / "quickstart.yaml", "--out", tmp / "run", "--quiet", "--no-leaderboard", env=env)
    assert "0 run, 16 already stored" in proc.stderr
    after = sqlite3.connect(db).execute("SELECT COUNT(*), SUM(success) FROM samples").fetchone()
    assert before == after


def test_publish_writes_markdown_json_and_plot(quickstart, tmp_path):
    tmp, _, env = quickstart
    run_cli("publish", tmp / "run", "--to", tmp_path / "lb", env=env)
    md = (tmp_path / "lb" / "quickstart.md").read_text()
    assert "# Leaderboard: quickstart" in md and "quickstart.png" in md
    png = (tmp_path / "lb" / "quickstart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "quickstart" in (tmp_path / "lb" / "README.md").read_text()


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(quickstart, tmp_path):
    """In a log or a pipe rich draws no bars; the run must still say what it is doing."""
    tmp, _, env = quickstart
    proc = run_cli("run", REPO / "suites" / "quickstart.yaml", "--out", tmp_path / "run", "--no-leaderboard", env=env)
    lines = proc.stderr.splitlines()
    assert "\x1b[" not in proc.stderr  # no terminal control sequences in a log
    assert any(line.endswith(": started") for line in lines)
    assert any(line.endswith("[cell 16/16]") for line in lines), proc.stderr
    assert any("clean accuracy" in line for line in lines)
