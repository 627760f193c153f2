"""One network per model in a store: a run whose weights differ from those the store's results were
computed on (a model retrained on another machine, whose BLAS rounds differently, or a replaced cache
file) is refused for that model, and a merge of runs on two weight files is refused too."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from robench.cli import app
from robench.plugins import get_registry
from robench.run import RunOptions, run_suite
from robench.suite import load_suite

from fault_suites import two_ridge_models

PLUGINS = ("reliability_plugins",)


def rows(db_path: Path):
    db = sqlite3.connect(db_path)
    out = (db.execute("SELECT c.key, c.status, s.idx, s.success, s.l2, s.linf FROM samples s JOIN cells c ON s.cell=c.key "
                      "ORDER BY 1, 3").fetchall(),
           db.execute("SELECT model, model_key, idx, pred FROM clean ORDER BY 1, 3").fetchall())
    db.close()
    return out


def last_cards(db_path: Path) -> dict:
    db = sqlite3.connect(db_path)
    prov = json.loads(db.execute("SELECT provenance FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
    db.close()
    return prov.get("models") or {}


@pytest.fixture()
def setup(tmp_path):
    (tmp_path / "suite.yaml").write_text(two_ridge_models("weights", limit=20, seed=0))
    reg = get_registry(PLUGINS)
    resolved = load_suite(tmp_path / "suite.yaml", reg)

    def run(out: str, cache: str):
        return run_suite(resolved, reg, RunOptions(out_dir=tmp_path / out, data_dir=tmp_path, cache_dir=tmp_path / cache,
                                                   plugins=PLUGINS))

    assert run("first", "cache").ok
    # "another machine": the same model key, other weights (model a's file in a copy of the cache, changed)
    key_a = last_cards(tmp_path / "first" / "results.sqlite")["a"]["key"]
    shutil.copytree(tmp_path / "cache", tmp_path / "elsewhere")
    f = tmp_path / "elsewhere" / key_a / "weights.safetensors"
    state = load_file(str(f))
    state["weight"] = state["weight"] + 0.01
    save_file(state, str(f), metadata={"robench_model_key": key_a})
    return tmp_path, run


def test_a_run_on_other_weights_is_refused_for_that_model_and_stores_nothing(setup):
    tmp, run = setup
    store = tmp / "first" / "results.sqlite"
    before = rows(store)
    summary = run("first", "elsewhere")
    assert not summary.ok
    failed = dict(summary.models_failed)
    assert set(failed) == {"a"}, failed  # model b's weights are the stored ones
    msg = " ".join(failed["a"].split())
    assert "are not the weights the results already stored for it were computed on" in msg and "new --out" in msg
    assert rows(store) == before, "nothing stored changed"
    assert set(last_cards(store)) == {"b"}, "the refused weights leave no card behind"
    # the original weights are still accepted, and into a fresh store the other ones are too
    assert run("first", "cache").ok
    assert rows(store) == before
    assert run("second", "elsewhere").ok


def test_merging_runs_on_two_weight_files_is_refused(setup):
    tmp, run = setup
    assert run("second", "elsewhere").ok
    into = tmp / "merged.sqlite"
    res = CliRunner().invoke(app, ["merge", str(tmp / "first" / "results.sqlite"), str(tmp / "second" / "results.sqlite"),
                                   "--into", str(into)])
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "model a of suite weights" in out and "attacked different weights" in out, out
    assert not into.exists()
    # the same weights merge (the first store with itself as a copy)
    shutil.copy(tmp / "first" / "results.sqlite", tmp / "copy.sqlite")
    res = CliRunner().invoke(app, ["merge", str(tmp / "first" / "results.sqlite"), str(tmp / "copy.sqlite"), "--into", str(into)])
    assert res.exit_code == 0, res.output
