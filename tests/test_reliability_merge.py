"""--shard cells:i/n and robench merge: shards partition the cells, their merge equals one full run,
duplicates are checked, conflicts abort the merge, provenance is kept."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.plugins import get_registry
from robench.plan import parse_shard, select_shard, shard_positions, shard_unit
from robench.run import RunOptions, run_suite
from robench.suite import load_suite
from robench.errors import UserInputError

from fault_suites import two_ridge_models

PLUGINS = ("reliability_plugins",)
SUITE = two_ridge_models("merge", limit=30, seed=1)


def snapshot(db_path: Path):
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT c.key, c.model, c.attack, c.eps, c.status, s.idx, s.success, s.rejected, s.l0, s.l1, s.l2, s.linf, "
                      "s.forward, s.backward FROM samples s JOIN cells c ON s.cell=c.key ORDER BY 1, 6").fetchall()
    clean = db.execute("SELECT model, model_key, idx, label, pred FROM clean ORDER BY 1, 3").fetchall()
    db.close()
    return rows, clean


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("merge")
    (tmp / "suite.yaml").write_text(SUITE)
    reg = get_registry(PLUGINS)
    resolved = load_suite(tmp / "suite.yaml", reg)
    opts = dict(data_dir=tmp, cache_dir=tmp / "cache", plugins=PLUGINS)
    assert run_suite(resolved, reg, RunOptions(out_dir=tmp / "full", **opts)).ok
    cells = {}
    for i in (1, 2, 3):
        summary = run_suite(resolved, reg, RunOptions(out_dir=tmp / f"shard{i}", shard=(i, 3), shard_by="cells", **opts))
        assert summary.ok
        cells[i] = {r[0] for r in sqlite3.connect(tmp / f"shard{i}" / "results.sqlite").execute("SELECT key FROM cells")}
    return tmp, cells


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_shards_partition_the_cells(stores):
    tmp, cells = stores
    full = {r[0] for r in sqlite3.connect(tmp / "full" / "results.sqlite").execute("SELECT key FROM cells")}
    assert len(full) == 6
    assert cells[1] | cells[2] | cells[3] == full
    assert sum(len(c) for c in cells.values()) == 6 and all(len(c) == 2 for c in cells.values())  # balanced, disjoint
    assert select_shard(list(range(7)), (2, 3)) == [1, 4]
    # sample shards: blocks of the batch size dealt round-robin, partitioning the samples
    assert shard_positions(25, 5, (2, 3)) == [5, 6, 7, 8, 9, 20, 21, 22, 23, 24]
    assert sorted(sum((shard_positions(25, 5, (i, 3)) for i in (1, 2, 3)), [])) == list(range(25))
    assert parse_shard("2/3") == (2, 3) == parse_shard("cells:2/3")
    assert (shard_unit("2/3"), shard_unit("cells:2/3")) == ("samples", "cells")
    for bad in ("0/3", "4/3", "x", "1/0", "1/2/3", "rows:1/2"):
        with pytest.raises(UserInputError, match="--shard"):
            parse_shard(bad)


def test_merged_shards_equal_the_full_run_and_keep_provenance(stores, tmp_path):
    tmp, _ = stores
    into = tmp_path / "merged.sqlite"
    res = cli("merge", *[tmp / f"shard{i}" / "results.sqlite" for i in (1, 2, 3)], "--into", into)
    assert res.exit_code == 0, res.output
    assert snapshot(into) == snapshot(tmp / "full" / "results.sqlite")
    runs = sqlite3.connect(into).execute("SELECT status, provenance FROM runs ORDER BY id").fetchall()
    assert [r[0] for r in runs] == ["done", "done", "done", "merged"]
    provs = [json.loads(p) for _, p in runs]
    assert [p["shard"] for p in provs[:3]] == ["cells:1/3", "cells:2/3", "cells:3/3"]
    assert [p["merged_from"]["store"] for p in provs[:3]] == [str((tmp / f"shard{i}" / "results.sqlite").resolve()) for i in (1, 2, 3)]
    assert len(provs[3]["merged_from"]) == 3
    # merging the full run on top: every sample is a duplicate, checked equal; nothing new
    res = cli("merge", tmp / "full" / "results.sqlite", "--into", into)
    assert res.exit_code == 0, res.output
    assert "0 new samples, 180 duplicate samples checked equal" in " ".join(res.output.split())
    assert snapshot(into) == snapshot(tmp / "full" / "results.sqlite")
    # and the leaderboard reads the merged store; its footer names the last run that computed,
    # not the merge's own record (which has no versions or suite hash)
    res = cli("leaderboard", into, "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)
    res = cli("leaderboard", into, "--format", "md")
    assert res.exit_code == 0
    footer = next(line for line in res.stdout.splitlines() if line.startswith("<sub>robench "))
    assert "None" not in footer and f"suite hash {provs[2]['suite_hash']}" in footer, footer


def tampered_copy(src: Path, dest: Path, sql: str) -> Path:
    """A copy of the store ``src`` at ``dest`` with one SQL change applied (a shard that disagrees)."""
    shutil.copy(src, dest)
    db = sqlite3.connect(dest)
    db.execute(sql)
    db.commit()
    db.close()
    return dest


def test_conflicting_duplicate_aborts_the_merge(stores, tmp_path):
    tmp, _ = stores
    tampered = tampered_copy(tmp / "shard1" / "results.sqlite", tmp_path / "tampered.sqlite",
                             "UPDATE samples SET success = 1 - success, l2 = 0.123 WHERE idx = 7")
    into = tmp_path / "merged.sqlite"
    res = cli("merge", tmp / "full" / "results.sqlite", tampered, "--into", into)
    assert res.exit_code == 1
    out = " ".join(res.output.split())
    assert "sample(s) differ from the destination's" in out and "sample 7: success" in out
    assert not into.exists(), "a failed merge leaves no destination behind"
    # into an existing store: it is left exactly as it was
    shutil.copy(tmp / "shard2" / "results.sqlite", into)
    before = snapshot(into)
    assert cli("merge", tmp / "full" / "results.sqlite", tampered, "--into", into).exit_code == 1
    assert snapshot(into) == before


def test_merge_refuses_bad_sources(stores, tmp_path):
    tmp, _ = stores
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(5000))
    into = tmp_path / "m.sqlite"
    res = cli("merge", tmp / "full" / "results.sqlite", junk, "--into", into)
    assert res.exit_code == 1 and "not a robench results store" in " ".join(res.output.split())
    assert not into.exists()
    src = tmp / "full" / "results.sqlite"
    assert cli("merge", src, "--into", src).exit_code == 2
    assert cli("merge", src, src, "--into", into).exit_code == 2
    assert cli("merge", tmp_path / "missing.sqlite", "--into", into).exit_code == 2


def test_models_that_differ_between_stores_conflict(stores, tmp_path):
    """A shard whose model was trained differently (another model key) must not be mixed in."""
    tmp, _ = stores
    other = tampered_copy(tmp / "shard1" / "results.sqlite", tmp_path / "other.sqlite",
                          "UPDATE clean SET pred = (pred + 1) % 10 WHERE idx = 3")
    res = cli("merge", tmp / "full" / "results.sqlite", other, "--into", tmp_path / "m.sqlite")
    assert res.exit_code == 1 and "clean prediction differs" in " ".join(res.output.split())
