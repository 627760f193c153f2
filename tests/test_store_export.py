"""Published per-sample results (robench.store_export): publish writes leaderboard/runs/<suite>/, the
leaderboard re-aggregated from that export alone is byte for byte the published one, robench merge
takes an export as a source, and a run resumes from an imported export computing only new cells."""

from __future__ import annotations

import filecmp
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.errors import StoreError
from robench.plugins import get_registry
from robench.run import RunOptions, run_suite
from robench.store_export import import_export, is_export
from robench.suite import load_suite

from fault_suites import two_ridge_models

PLUGINS = ("reliability_plugins",)
SUITE = two_ridge_models("grow", limit=40, seed=3, norms=("Linf",))
GROWN = two_ridge_models("grow", limit=40, seed=3)  # the same suite with an L2 attack added


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def tables(db_path: Path) -> dict[str, list]:
    """Every row of every table (runs without their id-independent order aside), for equality checks."""
    db = sqlite3.connect(db_path)
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    out = {n: sorted(map(repr, db.execute(f"SELECT * FROM {n}"))) for n in names}
    db.close()
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    (tmp / "suite.yaml").write_text(SUITE)
    reg = get_registry(PLUGINS)
    opts = dict(data_dir=tmp, cache_dir=tmp / "cache", plugins=PLUGINS)
    assert run_suite(load_suite(tmp / "suite.yaml", reg), reg, RunOptions(out_dir=tmp / "run", **opts)).ok
    return tmp, reg, opts


def test_publish_writes_the_export_and_it_reaggregates_byte_for_byte(run, tmp_path):
    tmp, _, _ = run
    store = tmp / "run" / "results.sqlite"
    res = cli("publish", store, "--to", tmp_path / "pub", "--html")
    assert res.exit_code == 0, res.output
    export = tmp_path / "pub" / "runs" / "grow"
    assert is_export(export)
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["suite"] == "grow" and manifest["tables"]["samples"]["rows"] == 2 * 2 * 40
    assert set(manifest["models"]) == {"a", "b"} and all(len(m["weights_sha256"]) == 64 for m in manifest["models"].values())
    # the import holds exactly the store's rows (the samples' SHA-256, left out of the file, filled back in)
    assert tables(import_export(export, tmp_path / "imported.sqlite")) == tables(store)
    # publishing from the export alone writes the same bytes, leaderboard, site and export alike
    res = cli("publish", export, "--to", tmp_path / "again", "--html")
    assert res.exit_code == 0, res.output
    cmp = filecmp.dircmp(tmp_path / "pub", tmp_path / "again")
    files = [p.relative_to(tmp_path / "pub") for p in (tmp_path / "pub").rglob("*") if p.is_file()]
    assert len(files) > 10
    for rel in files:
        assert (tmp_path / "pub" / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    assert not cmp.left_only and not cmp.right_only
    # and republishing the export into its own folder leaves it as it is
    before = {p: p.read_bytes() for p in export.iterdir()}
    assert cli("publish", export, "--to", tmp_path / "pub").exit_code == 0
    assert {p: p.read_bytes() for p in export.iterdir()} == before


def test_an_export_imported_by_merge_grows_by_a_new_attack_only(run, tmp_path):
    tmp, reg, opts = run
    assert cli("publish", tmp / "run" / "results.sqlite", "--to", tmp_path / "pub").exit_code == 0
    mine = tmp_path / "mine" / "results.sqlite"
    res = cli("merge", tmp_path / "pub" / "runs" / "grow", "--into", mine)
    assert res.exit_code == 0, res.output
    assert "4 new cells, 160 new samples" in " ".join(res.output.split())
    (tmp_path / "suite.yaml").write_text(GROWN)
    summary = run_suite(load_suite(tmp_path / "suite.yaml", reg), reg, RunOptions(out_dir=mine.parent, **opts))
    assert summary.ok and summary.cells_skipped == 4 and summary.cells_done == 2  # only l2 on a and b ran
    rows = json.loads(cli("leaderboard", mine, "--format", "json").stdout)
    assert {(r["model"], r["attack"]) for r in rows if r["attack"] != "best"} == {(m, a) for m in "ab" for a in ("linf", "l2")}
    # the published rows were not recomputed: equal to the original store's
    db_a, db_b = sqlite3.connect(tmp / "run" / "results.sqlite"), sqlite3.connect(mine)
    q = "SELECT cell, idx, success, l0, l1, l2, linf, forward, seconds FROM samples ORDER BY cell, idx"
    old = db_a.execute(q).fetchall()
    assert set(old) <= set(db_b.execute(q).fetchall()) and len(db_b.execute(q).fetchall()) == len(old) + 2 * 40


def test_a_changed_export_is_refused(run, tmp_path):
    tmp, _, _ = run
    assert cli("publish", tmp / "run" / "results.sqlite", "--to", tmp_path / "pub").exit_code == 0
    export = tmp_path / "pub" / "runs" / "grow"
    text = (export / "samples.jsonl").read_text().splitlines(keepends=True)
    row = json.loads(text[5])
    row[5] = 1 - row[5]  # flip one sample's success
    text[5] = json.dumps(row, separators=(",", ":")) + "\n"
    (export / "samples.jsonl").write_text("".join(text))
    with pytest.raises(StoreError, match="does not match the SHA-256"):
        import_export(export, tmp_path / "x.sqlite")
    assert not (tmp_path / "x.sqlite").exists()
    res = cli("merge", export, "--into", tmp_path / "m.sqlite")
    assert res.exit_code != 0 and "does not match the SHA-256" in " ".join(res.output.split())


def test_sample_shards_merged_with_a_published_shard_equal_the_full_run(run, tmp_path):
    """Sample shards 1/3 (published: its export only), 2/3 and 3/3 (stores): merged, every sample row,
    clean prediction and leaderboard number equals the full run's."""
    tmp, reg, opts = run
    resolved = load_suite(tmp / "suite.yaml", reg)
    for i in (1, 2, 3):
        assert run_suite(resolved, reg, RunOptions(out_dir=tmp_path / f"s{i}", shard=(i, 3), **opts)).ok
    db = sqlite3.connect(tmp_path / "s2" / "results.sqlite")  # blocks of batch_size 10 dealt round-robin: 10..19
    assert [r[0] for r in db.execute("SELECT DISTINCT idx FROM samples ORDER BY idx")] == list(range(10, 20))
    assert [r[0] for r in db.execute("SELECT DISTINCT idx FROM clean ORDER BY idx")] == list(range(10, 20))
    lb_s2 = json.loads(cli("leaderboard", tmp_path / "s2" / "results.sqlite", "--format", "json").stdout)
    assert {r["n"] for r in lb_s2} == {10}  # a shard's leaderboard covers its samples, "best" rows too
    assert cli("publish", tmp_path / "s1" / "results.sqlite", "--to", tmp_path / "pub").exit_code == 0
    into = tmp_path / "all.sqlite"
    res = cli("merge", tmp_path / "pub" / "runs" / "grow", tmp_path / "s2" / "results.sqlite", tmp_path / "s3" / "results.sqlite",
              "--into", into)
    assert res.exit_code == 0, res.output
    q = ("SELECT c.key, s.idx, s.sha256, s.success, s.rejected, s.l0, s.l1, s.l2, s.linf, s.forward, s.backward "
         "FROM samples s JOIN cells c ON s.cell = c.key ORDER BY 1, 2")
    assert sqlite3.connect(into).execute(q).fetchall() == sqlite3.connect(tmp / "run" / "results.sqlite").execute(q).fetchall()
    q = "SELECT model, model_key, idx, sha256, label, pred FROM clean ORDER BY 1, 3"
    assert sqlite3.connect(into).execute(q).fetchall() == sqlite3.connect(tmp / "run" / "results.sqlite").execute(q).fetchall()
    lb = lambda p: [{k: v for k, v in r.items() if k != "seconds_per_sample"}  # noqa: E731 (timings differ)
                    for r in json.loads(cli("leaderboard", p, "--format", "json").stdout)]
    assert lb(into) == lb(tmp / "run" / "results.sqlite")


def test_the_committed_quickstart_is_what_its_committed_export_gives(tmp_path):
    """leaderboard/quickstart.{md,json,csv} re-aggregated from leaderboard/runs/quickstart alone."""
    board = Path(__file__).parent.parent / "leaderboard"
    res = cli("publish", board / "runs" / "quickstart", "--to", tmp_path)
    assert res.exit_code == 0, res.output
    for name in ("quickstart.md", "quickstart.json", "quickstart.csv"):
        assert (tmp_path / name).read_bytes() == (board / name).read_bytes(), f"{name}: republish leaderboard/quickstart (docs/publishing.md)"
    for p in (board / "runs" / "quickstart").iterdir():
        assert (tmp_path / "runs" / "quickstart" / p.name).read_bytes() == p.read_bytes(), p.name
