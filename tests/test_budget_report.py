"""Budgets end to end: tracking is opt-in, the surrogate is refused under a budget (the harness's via-surrogate
path is charged), curves survive merge, and the report's budget points and AUC (robench.report.budgets)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
import torch

from robench.api import NoParams
from robench.budget import BatchTracker, Budget
from robench.cell import attack_cell
from robench.counting import CountingModel
from robench.curves import read_curves
from robench.errors import RobenchError
from robench.merge import merge_stores
from robench.plugins import get_registry
from robench.report import build_site, publish, to_markdown
from robench.report.budgets import AUC_POINTS, auc, budget_table
from robench.results import load_results
from robench.run import RunOptions, run_suite
from robench.store import Store
from robench.suite import load_suite

from fault_suites import suite_text
from test_budget import D, INFO, Linear, RandomSearch, make_data, make_job

PLUGINS = ("reliability_plugins", "budget_plugins")


def suite(curves: bool) -> str:
    """One least-squares model and the budget-walk attack at L2 0.5, 1 and 2, curves kept when ``curves``."""
    return suite_text("budgets", "name: digits, split: test, limit: 8", ["name: lin, plugin: fault-linear, params: {ridge: 1.0}"],
                      ["name: walk, plugin: budget-walk"], "L2: [0.5, 1.0, 2.0]", tail="headline: {L2: 1.0}\n",
                      settings=("seed: 1", "batch_size: 8", "device: cpu") + (("curves: true",) if curves else ()))


def run(tmp, name: str, curves: bool):
    folder = tmp / name
    folder.mkdir()
    (folder / "suite.yaml").write_text(suite(curves))
    reg = get_registry(PLUGINS)
    resolved = load_suite(folder / "suite.yaml", reg)
    assert run_suite(resolved, reg, RunOptions(out_dir=folder / "out", data_dir=tmp, cache_dir=tmp / "cache", plugins=PLUGINS)).ok
    return folder / "out" / "results.sqlite", resolved


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budgets")
    return run(tmp, "plain", False), run(tmp, "tracked", True)


def walk_cell(path):
    with Store(path, create=False) as store:
        (cell,) = [c for c in store.cells("budgets") if c["attack"] == "walk"]
        return cell["key"], [s["idx"] for s in store.samples(cell["key"])]


def test_tracking_is_opt_in(runs):
    (plain, plain_suite), (tracked, tracked_suite) = runs
    assert plain_suite.suite.content_hash() != tracked_suite.suite.content_hash()
    key_p, idx = walk_cell(plain)
    key_t, _ = walk_cell(tracked)
    assert key_p != key_t  # tracking can improve a result, so it is part of the cell
    with Store(plain, create=False) as store:
        assert read_curves(store, key_p) == {}  # the default cell path keeps no curves
    with Store(tracked, create=False) as store:
        curves = read_curves(store, key_t)
    assert sorted(curves) == sorted(idx) and any(len(c) > 1 or (c and c[0][0] > 0) for c in curves.values())
    (res_p,), (res_t,) = load_results(plain), load_results(tracked)
    assert "attacks at equal cost" not in to_markdown(res_p)
    assert "attacks at equal cost" in to_markdown(res_t)


def test_default_cell_carries_no_tracker():
    model = Linear()
    data = make_data(model)
    seen = []

    class Peek(RandomSearch):
        def run(self, model, x, y, *, eps, ctx, source=None):
            seen.append(model.tracker)
            return super().run(model, x, y, eps=eps, ctx=ctx)

    job = make_job(data, model, curves=False)
    rows = [r for b in attack_cell(job, Peek, NoParams(), model, None, data, torch.device("cpu"), None, lambda m: None) for r in b.rows]
    assert seen == [None] and not any(hasattr(r, "curve") for r in rows)


class NotDifferentiable(Linear):
    differentiable = False

    def surrogate(self):
        return Linear()


def test_surrogate_is_refused_under_a_budget():
    model = NotDifferentiable()
    c = CountingModel(model, "toy")
    assert isinstance(c.surrogate(), Linear)  # no budget: as before
    x = torch.rand(2, *INFO.input_shape)
    zeros = torch.zeros(2, dtype=torch.long)
    c.tracker = BatchTracker(x, zeros, zeros, "L2", None, Budget(forward=5))
    with pytest.raises(RobenchError, match="surrogate.*query budget"):
        c.surrogate()
    c.tracker = BatchTracker(x, zeros, zeros, "L2", None, None)  # tracking alone does not refuse
    assert isinstance(c.surrogate(), Linear)


def test_the_via_surrogate_path_is_charged_under_a_budget():
    model = NotDifferentiable()
    data = make_data(model)
    RandomSearch.log = []
    job = make_job(data, model, budget={"forward": 5})
    job.via_surrogate = True
    batches = list(attack_cell(job, RandomSearch, NoParams(), model, None, data, torch.device("cpu"), None, lambda m: None))
    assert batches[-1].records["budget_blanked_rows"] == (RandomSearch.steps - 5) * len(data.x)
    assert all((s == 0).all() for s in RandomSearch.log[5:]) and all((s != 0).any(1).all() for s in RandomSearch.log[:5])


def test_curves_survive_merge(runs, tmp_path):
    (plain, _), (tracked, _) = runs
    key, _ = walk_cell(tracked)
    with Store(tracked, create=False) as store:
        want = read_curves(store, key)
    merge_stores([tracked], tmp_path / "m.sqlite")
    with Store(tmp_path / "m.sqlite", create=False) as store:
        assert read_curves(store, key) == want
    from robench.store_export import export_suite

    with Store(tracked, create=False) as store:  # a published export carries them too
        export_suite(store, "budgets", tmp_path / "export")
    (from_store,), (from_export,) = load_results(tracked), load_results(tmp_path / "export")
    assert from_export.curves == from_store.curves and from_store.curves
    merge_stores([plain], tmp_path / "p.sqlite")  # a source without curves merges as before
    with Store(tmp_path / "p.sqlite", create=False) as store:
        assert read_curves(store, walk_cell(plain)[0]) == {}


# Hand-made curves for the 8 samples: s0 broken at 0; s1 at 2.0 after 50 passes, 0.5 after 300 + 200;
# s2 at 0.8 after 5000; the rest never. Headline eps 1.0.
KNOWN = [[[0, 0, 0.0]], [[50, 0, 2.0], [300, 200, 0.5]], [[5000, 0, 0.8]]] + [[]] * 5


def test_budget_points_and_auc_on_known_curves(runs, tmp_path):
    (_, _), (tracked, _) = runs
    path = tmp_path / "known.sqlite"
    path.write_bytes(tracked.read_bytes())
    key, idx = walk_cell(path)
    db = sqlite3.connect(path)
    db.executemany("UPDATE curves SET points=? WHERE cell=? AND idx=?", [(json.dumps(c), key, i) for c, i in zip(KNOWN, idx)])
    db.commit()
    db.close()
    (res,) = load_results(path)
    assert res.curves[("lin", "walk", "L2")] == KNOWN
    t = budget_table(res, "L2")
    (row,) = t.rows
    assert [c.text for c in row] == ["lin", "walk", "87.5", "75.0", "62.5", "–", "–", "–", "79.8"]
    # AUC: 13 points 10..10 000; robust 7/8 below 500 passes (k = 0..6), 6/8 from 562 (k = 7..10), 5/8 from 5623
    assert len(AUC_POINTS) == 13 and AUC_POINTS[0] == 10 and AUC_POINTS[-1] == pytest.approx(10000)
    assert auc(KNOWN, "L2", 1.0) == pytest.approx((7 * 7 + 4 * 6 + 2 * 5) / 8 / 13)
    assert auc(KNOWN, "L2", 2.0) == pytest.approx((3 * 7 + 8 * 6 + 2 * 5) / 8 / 13)  # at eps 2, s1 is broken from 56 passes
    md = to_markdown(res)
    assert "### L2: attacks at equal cost" in md and "| lin | walk | 87.5 | 75.0 | 62.5 |" in md
    written = publish([res], tmp_path / "board", html=True)
    names = {p.name for p in written}
    assert {"budgets-budget.png", "budgets-budget.svg"} <= names
    page = (tmp_path / "board" / "site" / "budgets.html").read_text()
    assert 'id="budget-L2"' in page and "79.8" in page


def test_tracking_keeps_only_in_box_finite_rows():
    x = torch.full((3, *INFO.input_shape), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    t = BatchTracker(x, y, y, "L2", None, None)
    q = x.clone()
    q[0] += 0.1  # in the box: kept
    q[1] += 0.7  # out of the box (1.2): not kept, though its norm is the smallest improvement
    q[2, 0, 0, 0] = float("nan")
    t.forward_call(q, torch.tensor([[0.0, 1.0]] * 3))  # every row misclassified
    assert t.best[0] == pytest.approx(0.1 * D ** 0.5, rel=1e-5)
    assert math.isinf(t.best[1]) and math.isinf(t.best[2])
    assert [len(c) for c in t.curves] == [1, 0, 0]


def test_cifar_l0_budget_suite_on_a_small_model(tmp_path):
    """The shipped suite: the plain VGG entry of cifar_l0 (same weights), one budget for all; its attacks (but the
    slow B&B) at its budget on the digits MLP: every attack ranked; the foolbox one, whose adapter runs the library in
    sub-batches of 10, tracked per sample in a batch of 12 (robench.adapters.focus)."""
    import yaml

    from robench.suite import Suite

    root = Path(__file__).resolve().parents[1] / "suites"
    budget = yaml.safe_load((root / "cifar_l0_budget.yaml").read_text())
    plain = yaml.safe_load((root / "cifar_l0.yaml").read_text())
    assert budget["models"][0] == plain["models"][0] and budget["dataset"] == plain["dataset"]
    assert Suite(**budget).budget == Suite(**plain, budget={"forward": 10000, "backward": 10000}).budget
    small = dict(budget, name="l0_budget_small", dataset={"name": "digits", "split": "test", "limit": 12}, device="cpu",
                 batch_size=12, models=[{"name": "mlp", "plugin": "mlp", "params": {"epochs": 2}}],
                 attacks=[a for a in budget["attacks"] if a["name"] != "bb-l0"])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(small))
    reg = get_registry(())
    resolved = load_suite(tmp_path / "s.yaml", reg)
    assert run_suite(resolved, reg, RunOptions(out_dir=tmp_path / "out", data_dir=tmp_path, cache_dir=tmp_path / "cache")).ok
    (res,) = load_results(tmp_path / "out" / "results.sqlite")
    t = budget_table(res, "L0")
    assert sorted(c[1].text for c in t.rows) == sorted(a["name"] for a in small["attacks"])
    fmn = res.curves[("mlp", "fmn-l0", "L0")]
    assert any(len(c) > 1 or (c and 0 < c[0][0] < 500) for c in fmn), fmn  # tracked per call, not one closing point


def test_rejections_under_a_binding_budget_are_explained():
    """Past its budget an attack sees constant scores and may return a point it took for adversarial: the
    board's rejection warning says so when the budget bound the cell, and only then."""
    from robench.metrics import Row, masking_warnings

    def row(blanked: float) -> Row:
        return Row(suite="s", model="m", attack="pixel", norm="L0", kind="minimal", n=10, clean_accuracy=1.0,
                   robust_accuracy={}, robust_ci={}, mean_norm=1.0, median_norm=1.0, success_rate=1.0, rejected=3,
                   records={"budget_blanked_rows": blanked})

    (bound,) = [w for w in masking_warnings([row(120.0)], {}) if "rejected" in w]
    assert "the budget bound it" in bound and "3 adversarial(s)" in bound
    (free,) = [w for w in masking_warnings([row(0.0)], {}) if "rejected" in w]
    assert "budget" not in free
