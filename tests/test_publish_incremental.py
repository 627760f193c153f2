"""Incremental publishing: adding a model to a suite and rerunning computes only the new cells, the
stored ones are reused untouched, and ``robench diff`` shows exactly the added rows."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from robench.report import diff_results, load_results
from robench.plugins import load_registry
from robench.run import RunOptions, run_suite
from robench.suite import load_suite

SUITE = """
name: grow
dataset: {{name: digits, split: test, limit: 24}}
seed: 3
models:
{models}
attacks:
  - {{name: fgsm, plugin: fgsm, params: {{norm: Linf}}}}
  - {{name: pgd, plugin: pgd, params: {{norm: Linf, steps: 3}}}}
epsilons: {{Linf: [0.05, 0.2]}}
"""
MODEL_A = "  - {name: a, plugin: mlp, params: {hidden: 16, layers: 1, epochs: 2}}"
MODEL_B = "  - {name: b, plugin: mlp, params: {hidden: 24, layers: 1, epochs: 2}}"


def _run(tmp: Path, models: list[str]):
    text = SUITE.format(models="\n".join(models))
    path = tmp / "grow.yaml"
    path.write_text(text)
    reg = load_registry()
    resolved = load_suite(path, reg)
    return run_suite(resolved, reg, RunOptions(out_dir=tmp / "run", data_dir=tmp / "data", cache_dir=tmp / "cache"))


def _samples(db: Path, model: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(
            "SELECT s.rowid, c.key, s.idx, s.success, s.linf, s.seconds FROM samples s JOIN cells c ON s.cell = c.key "
            "WHERE c.model = ? ORDER BY c.key, s.idx", (model,)).fetchall()


def test_adding_a_model_runs_only_its_cells(tmp_path):
    first = _run(tmp_path, [MODEL_A])
    assert first.ok and (first.cells_total, first.cells_done, first.cells_skipped) == (4, 4, 0)
    store = tmp_path / "run" / "results.sqlite"
    before = tmp_path / "before.sqlite"
    shutil.copy(store, before)
    a_rows = _samples(store, "a")
    assert len(a_rows) == 4 * 24

    second = _run(tmp_path, [MODEL_A, MODEL_B])
    # a's 4 cells (2 attacks x 2 eps for fgsm and pgd) come from the store; only b's are computed
    assert second.ok and (second.cells_total, second.cells_done, second.cells_skipped) == (8, 4, 4)
    assert _samples(store, "a") == a_rows  # same rows, same rowids: nothing of a was rewritten
    assert len(_samples(store, "b")) == 4 * 24

    changes = diff_results(load_results(before), load_results(store))
    assert {(c.model, c.attack, c.what) for c in changes} == {
        ("b", "fgsm", "added"), ("b", "pgd", "added"), ("b", "best", "added")}

    # and a third run with nothing new computes nothing
    third = _run(tmp_path, [MODEL_A, MODEL_B])
    assert (third.cells_done, third.cells_skipped) == (0, 8)
    assert diff_results(load_results(before), load_results(store)) == changes
