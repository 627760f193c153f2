"""AutoAttack: its robust accuracy is no higher than that of any component run alone, it records
which component broke each sample, and its settings follow the original protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("torchattacks")

from robench.plugins import get_registry  # noqa: E402
from robench.results import load_results  # noqa: E402
from robench.run import RunOptions, run_suite  # noqa: E402
from robench.suite import Suite, resolve  # noqa: E402

FAST = {"steps": 20, "n_queries": 300}  # the protocol's 100 steps / 5000 queries cost minutes on CPU; same code


@pytest.mark.parametrize("norm,eps", [("Linf", 0.1), ("L2", 0.8)])
def test_autoattack_is_at_least_as_strong_as_each_component(tmp_path, norm, eps):
    components = ("apgd-ce", "apgd-t", "fab-t", "square")
    doc = {
        "name": "aa", "dataset": {"name": "digits", "limit": 30}, "device": "cpu", "batch_size": 15,
        "models": [{"name": "mlp", "plugin": "mlp"}],
        "attacks": [{"name": "aa", "plugin": "autoattack", "params": {"norm": norm, **FAST}}]
        + [{"name": c, "plugin": "autoattack", "params": {"norm": norm, **FAST, "components": [c]}} for c in components],
        "epsilons": {norm: [eps]},
    }
    reg = get_registry()
    summary = run_suite(resolve(Suite.model_validate(doc), reg), reg,
                        RunOptions(out_dir=tmp_path / "out", data_dir=tmp_path, cache_dir=tmp_path / "cache"))
    assert summary.ok, summary.cells_failed
    [res] = load_results(tmp_path / "out")
    rows = {r.attack: r for r in res.rows}
    aa = rows["aa"].robust_accuracy[eps]
    for c in components:
        assert aa <= rows[c].robust_accuracy[eps] + 1e-9, (c, aa, rows[c].robust_accuracy)
    assert aa < rows["aa"].clean_accuracy, "the attack breaks something"
    rec = rows["aa"].records
    broken = sum(rec.get(f"broken_by_{c}", 0) for c in components)
    correct = round(rows["aa"].clean_accuracy * 30)
    assert rec["attacked"] == correct
    assert broken + rec["robust_after_all"] == correct  # every attacked sample is accounted for once
    assert round(aa * 30) == rec["robust_after_all"], "the harness verified exactly what AutoAttack reports"


def test_versions_and_defaults_follow_the_original():
    from robench_plugins.autoattack import VERSIONS, AutoAttack, AutoAttackParams

    p = AutoAttackParams()
    assert (p.version, p.steps, p.n_queries, p.n_target_classes) == ("standard", 100, 5000, 9)
    assert VERSIONS["standard"] == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert set(VERSIONS["plus"]) == {"apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"}
    assert AutoAttack(AutoAttackParams(norm="L2")).norm.value == "L2"
    spec = get_registry().get("attack", "art-square")
    assert spec.params().max_iter == 5000  # Square's budget in the AutoAttack protocol


def test_components_are_built_with_the_protocol_settings():
    from robench_plugins.autoattack import AutoAttackParams, _component, _Net

    class Lin(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10]

    class M:
        def scores(self, x):
            return Lin()(x)

    net = _Net(M(), torch.device("cpu"))
    p = AutoAttackParams()
    apgdt = _component("apgd-t", net, p, 0.03, 10, 0, eot=False)
    assert (apgdt.steps, apgdt.n_target_classes, apgdt.n_restarts) == (100, 9, 1)
    fabt = _component("fab-t", net, p, 0.03, 10, 0, eot=False)
    assert (fabt.steps, fabt.multi_targeted, fabt.n_target_classes) == (100, True, 9)
    sq = _component("square", net, p, 0.03, 10, 0, eot=False)
    assert (sq.n_queries, sq.p_init) == (5000, 0.8)
    plus = _component("apgd-ce", net, AutoAttackParams(version="plus"), 0.03, 10, 0, eot=False)
    assert plus.n_restarts == 5
    rand = _component("apgd-dlr", net, AutoAttackParams(version="rand"), 0.03, 10, 0, eot=True)
    assert (rand.eot_iter, rand.loss) == (20, "dlr")
    three = _component("apgd-t", net, p, 0.03, 3, 0, eot=False)
    assert three.n_target_classes == 2  # capped at classes - 1


@pytest.mark.parametrize("isolate", ["none", "process"])
def test_each_broken_sample_names_the_component_that_broke_it(tmp_path, isolate):
    from robench.report.markdown import to_markdown
    from robench.store import Store

    doc = {
        "name": "aa-notes", "dataset": {"name": "digits", "limit": 30}, "device": "cpu", "batch_size": 15,
        "models": [{"name": "mlp", "plugin": "mlp", "params": {"epochs": 5}}],
        "attacks": [{"name": "aa", "plugin": "autoattack", "params": {"norm": "Linf", **FAST}}],
        "epsilons": {"Linf": [0.1]},
    }
    reg = get_registry()
    summary = run_suite(resolve(Suite.model_validate(doc), reg), reg,
                        RunOptions(out_dir=tmp_path / "out", data_dir=tmp_path, cache_dir=tmp_path / "cache", isolate=isolate))
    assert summary.ok, summary.cells_failed
    with Store(tmp_path / "out" / "results.sqlite", create=False) as st:
        [cell] = [r[0] for r in st.db.execute("SELECT key FROM cells")]
        notes = st.notes(cell)
        samples = {s["idx"]: s for s in st.samples(cell)}
    components = ("apgd-ce", "apgd-t", "fab-t", "square")
    assert notes and set(notes.values()) <= {f"broken by {c}" for c in components}
    broken = {i for i, s in samples.items() if s["success"] and s["clean_pred"] == s["label"]}
    assert set(notes) == broken  # every verified break is attributed, and only those
    [res] = load_results(tmp_path / "out")
    rec = res.rows[0].records
    for c in components:
        assert rec.get(f"broken by {c} (verified)", 0) == sum(n == f"broken by {c}" for n in notes.values()) == rec.get(f"broken_by_{c}", 0)
    md = to_markdown(res)
    first = notes[min(notes)]
    assert f"{first} (verified) = " in md  # shown with the cell's details in the leaderboard
