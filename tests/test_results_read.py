"""robench.results, the public way to read results back (used by the margin plugin's rho report)."""

from __future__ import annotations

import math

import pytest
import torch

from robench.results import evaluation_data, load_results, read_cells
from robench_plugins.margin.losses import rho_adv_from_norms
from robench_plugins.margin.report import rho_table
from test_publish_leaderboard import build_store

SUITE = """name: toy
dataset: {name: digits, split: test, limit: 10}
models: [{name: A, plugin: mlp}, {name: B, plugin: mlp}]
attacks: [{name: cw, plugin: pgd, params: {norm: L2}}]
epsilons: {L2: [0.5, 1.0, 2.0]}
"""


@pytest.fixture()
def toy(tmp_path):
    suite = tmp_path / "toy.yaml"
    suite.write_text(SUITE)
    return build_store(tmp_path / "run" / "results.sqlite"), suite


def test_read_cells_returns_every_cell_with_its_samples(toy):
    store, _ = toy
    cells = read_cells(store, "toy")
    assert [(c["model"], c["attack"], c["eps"]) for c in cells] == [
        ("A", "cw", None), ("A", "pgd", 0.5), ("A", "pgd", 1.0), ("A", "pgd", 2.0), ("B", "cw", None)]
    assert [s["idx"] for s in cells[0]["samples"]] == list(range(10))
    assert cells[0]["samples"][3]["l2"] == pytest.approx(0.9)
    assert read_cells(store, "another") == []
    assert len(load_results(store)) == 1


def test_evaluation_data_is_the_suites_slice(toy):
    _, suite = toy
    data = evaluation_data(suite)
    assert data.x.shape == (10, 1, 8, 8) and data.indices == list(range(10)) and len(data.sha256) == 10


def test_margin_rho_report_reads_the_store_through_the_public_api(toy):
    store, suite = toy
    rows = {(r["model"], r["attack"]): r for r in rho_table(store, suite, "/nonexistent")}  # digits ship with robench
    assert set(rows) == {("A", "cw"), ("B", "cw")}  # the minimal L2 cells only (pgd is bounded)
    x = evaluation_data(suite).x.flatten(1).double().norm(dim=1)
    a = rows[("A", "cw")]
    # A: sample 0 misclassified, 1..8 broken at 0.3 i, 9 not broken (counted as failed)
    want, n = rho_adv_from_norms(torch.tensor([0.3 * i for i in range(1, 9)], dtype=torch.float64), x[1:9])
    assert (a["n"], a["failed"], a["clean_error"]) == (8, 1, pytest.approx(0.1))
    assert a["rho"] == pytest.approx(want) and not math.isnan(a["rho"])
    assert rows[("B", "cw")]["n"] == 10 and rows[("B", "cw")]["failed"] == 0
