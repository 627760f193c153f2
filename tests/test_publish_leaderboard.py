"""Leaderboard markdown, JSON, CSV, plots and the index, on a hand-written store with known answers.

``build_store`` writes a tiny suite straight through :class:`robench.store.Store` (two models, a
minimal and a bounded L2 attack, ten samples), so every number below is worked out by hand.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest

from robench.report import (
    WARN, diff_markdown, diff_results, load_results, plot, plot_norm_cdf, plot_transfer, publish, to_csv, to_json,
    to_markdown,
)
from robench.store import SampleRow, Store

EPS = [0.5, 1.0, 2.0]
CONFIG = {"name": "toy", "description": "A hand-written store.", "dataset": {"name": "digits", "split": "test", "offset": 0},
          "seed": 7, "epsilons": {"L2": EPS}, "headline": {}}
PROVENANCE = {"versions": {"robench": "0.1.0", "torch": "2.x", "numpy": "1.x", "python": "3.x"}, "device": "cpu", "seed": 7,
              "suite_hash": "feedfacecafe0001", "git_commit": "0123456789abcdef", "date": "2030-01-02 03:04:05 +0000",
              "plugins": {"model:mlp": "robench 0.1.0"}}


def _cell(store: Store, run_id: int, model: str, attack: str, kind: str, eps, rows: list[tuple[int, bool, float | None]],
          labels: dict[int, tuple[int, int]], seconds: float = 0.01) -> None:
    key = f"{model}|{attack}|{eps}"
    store.ensure_cell(key, run_id, suite="toy", model=model, model_plugin="mlp", attack=attack, attack_plugin=attack,
                      norm="L2", kind=kind, eps=eps, source=None, needs=["gradients"], via_surrogate=0,
                      config={"model_key": f"key-{model}"}, n_total=10)
    samples = []
    for idx, success, l2 in rows:
        label, pred = labels[idx]
        samples.append(SampleRow(idx=idx, sha256=f"sha{idx}", label=label, clean_pred=pred, success=success, rejected=False,
                                 reject_reason=None, l0=None, l1=None, l2=l2, linf=None, forward=10.0, backward=5.0, seconds=seconds))
    store.write_samples(key, samples)
    store.set_cell_status(key, "done")


def build_store(path: Path, *, with_b: bool = True, b_norm: float = 1.5) -> Path:
    """Model A: sample 0 misclassified; cw finds L2 = 0.3 * i on samples 1..8, nothing on 9; pgd
    (bounded, eps 0.5 / 1 / 2) breaks 1, 2 at 0.5 (norms 0.5, 0.45), 1..3 at 1, and 1..8 at 2.
    Model B: all correct, cw finds ``b_norm`` on every sample."""
    with Store(path) as store:
        run_id = store.start_run("toy", "feedfacecafe0001", PROVENANCE)
        store.save_suite("toy", "feedfacecafe0001", CONFIG)
        a_labels = {i: (0, 1 if i == 0 else 0) for i in range(10)}
        store.write_clean("toy", "A", "key-A", [(i, f"sha{i}", *a_labels[i]) for i in range(10)])
        cw_a = [(0, True, 0.0)] + [(i, True, round(0.3 * i, 10)) for i in range(1, 9)] + [(9, False, None)]
        _cell(store, run_id, "A", "cw", "minimal", None, cw_a, a_labels, seconds=0.02)
        pgd = {0.5: {1: 0.5, 2: 0.45}, 1.0: {1: 0.9, 2: 0.9, 3: 1.0}, 2.0: {i: 2.0 for i in range(1, 9)}}
        for eps, found in pgd.items():
            rows = [(0, True, 0.0)] + [(i, i in found, found.get(i)) for i in range(1, 10)]
            _cell(store, run_id, "A", "pgd", "bounded", eps, rows, a_labels)
        if with_b:
            b_labels = {i: (0, 0) for i in range(10)}
            store.write_clean("toy", "B", "key-B", [(i, f"sha{i}", *b_labels[i]) for i in range(10)])
            _cell(store, run_id, "B", "cw", "minimal", None, [(i, True, b_norm) for i in range(10)], b_labels)
        store.finish_run(run_id, "done")
    return path


@pytest.fixture()
def store_path(tmp_path) -> Path:
    return build_store(tmp_path / "run" / "results.sqlite")


def _rows(results) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["attack"]): r for r in json.loads(to_json(results))}


def test_json_has_the_hand_computed_numbers(store_path):
    rows = _rows(load_results(store_path))
    assert set(rows) == {("A", "cw"), ("A", "pgd"), ("A", "best"), ("B", "cw"), ("B", "best")}
    for r in rows.values():  # the documented minimum of every row
        assert {"model", "attack", "norm", "clean_accuracy", "robust_accuracy", "mean_norm", "median_norm",
                "success_rate", "n", "rejected"} <= set(r)
    assert rows[("A", "cw")]["robust_accuracy"] == {"0.5": 0.8, "1": 0.6, "2": 0.3}
    assert rows[("A", "pgd")]["robust_accuracy"] == {"0.5": 0.7, "1": 0.6, "2": 0.1}
    assert rows[("A", "best")]["robust_accuracy"] == {"0.5": 0.7, "1": 0.6, "2": 0.1}
    assert rows[("A", "cw")]["mean_norm"] == pytest.approx(1.35) and rows[("A", "cw")]["median_norm"] == pytest.approx(1.35)
    assert rows[("A", "cw")]["success_rate"] == pytest.approx(8 / 9)
    assert rows[("A", "best")]["clean_accuracy"] == 0.9
    assert rows[("B", "best")]["robust_accuracy"] == {"0.5": 1.0, "1": 1.0, "2": 0.0}
    assert rows[("B", "best")]["headline"] == 1.0


# -- markdown against JSON, cell by cell ---------------------------------------------------------


def parse_tables(md: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Every markdown table, keyed by the nearest heading above it."""
    tables, heading, lines = {}, None, md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in line.strip("|").split(" | ")]
            body = []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                body.append([c.strip() for c in lines[i].strip().strip("|").split(" | ")])
                i += 1
            tables[heading] = (header, body)
            continue
        i += 1
    return tables


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def num(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def test_markdown_agrees_with_json_cell_by_cell(store_path):
    results = load_results(store_path)
    md = to_markdown(results[0])
    rows = _rows(results)
    tables = parse_tables(md)
    header, body = tables["L2"]
    # key columns first (issue 22: at 1400 px the strongest attack and success hid behind a scroll), other eps after
    assert header[:8] == ["#", "Model", "Clean", "ε=1", "Strongest attack @1", "Success", "ε=0.5", "ε=2"]
    assert [r[1].split()[0] for r in body] == ["B", "A"]  # ranked at the headline eps 1 (100% vs 60%)
    checked = 0
    for line in body:
        model = line[1].split()[0]
        best = rows[(model, "best")]
        cells = dict(zip(header, line))
        # clean accuracy with its 95% Wilson interval: A 9/10, B 10/10 (worked out by hand)
        assert cells["Clean"] == {"A": "90.0 [59.6, 98.2]", "B": "100.0 [72.2, 100.0]"}[model]
        assert cells["Clean"].startswith(pct(best["clean_accuracy"]) + " [")
        for e in ("0.5", "1", "2"):
            lo, hi = best["robust_ci"][e]
            assert cells[f"ε={e}"] == f"{pct(best['robust_accuracy'][e])} [{pct(lo)}, {pct(hi)}]"
            checked += 1
        assert cells["cw mean L2"] == num(rows[(model, "cw")]["mean_norm"])
        pgd = rows.get((model, "pgd"))
        assert cells["pgd @1"] == (pct(pgd["robust_accuracy"]["1"]) if pgd else "n/a")
        assert cells["Success"] == pct(best["success_rate"])
        assert cells["Rejected"] == str(best["rejected"])
        checked += 4
    header, body = tables["L2: per attack"]
    assert len(body) == 3
    for line in body:
        cells = dict(zip(header, line))
        r = rows[(cells["Model"], cells["Attack"])]
        assert cells["Kind"] == r["kind"]
        for e in ("0.5", "1", "2"):
            assert cells[f"ε={e}"] == pct(r["robust_accuracy"][e])
        assert cells["Mean L2"] == num(r["mean_norm"]) and cells["Median L2"] == num(r["median_norm"])
        assert cells["Success"] == pct(r["success_rate"]) and cells["Rejected"] == str(r["rejected"])
        assert cells["Fwd/sample"] == num(r["forward_per_sample"]) and cells["Bwd/sample"] == num(r["backward_per_sample"])
        assert cells["s/sample"] == num(r["seconds_per_sample"]) and cells["Status"] == r["status"]
        checked += 13
    assert checked == 2 * 7 + 3 * 13


def test_strongest_attack_time_warnings_and_provenance(store_path):
    res = load_results(store_path)[0]
    md = to_markdown(res)
    header, body = parse_tables(md)["L2"]
    a = dict(zip(header, next(line for line in body if line[1].startswith("A"))))
    # at eps 1 cw and pgd tie at 60%: both are named (issue 22: naming only the first hid pgd)
    assert a["Strongest attack @1"] == "cw, pgd (60.0)"
    # cw once (0.02 s) + pgd at three eps (0.01 s each), per sample attacked: A's 9 correct of 10
    assert float(a["s/sample (all attacks)"]) == pytest.approx(0.05 * 10 / 9, rel=1e-3)
    # cw failed on 1 of 9 correct samples of A: a masking / budget warning, flagged on A only
    assert a["Model"] == f"A {WARN}"
    assert next(line for line in body if line[1].startswith("B"))[1] == "B"
    assert "the minimal attack failed on 11% of correctly classified samples" in md
    for text in ("suite hash feedfacecafe0001", f"samples digest {res.sample_digest}", "seed 7", "device cpu",
                 "2030-01-02 03:04:05", "git 0123456789", "torch 2.x"):
        assert text in md


def test_markdown_for_one_norm_only(store_path):
    res = load_results(store_path)[0]
    assert "## L2" in to_markdown(res, norms=["L2"])
    assert "## L2" not in to_markdown(res, norms=["Linf"])


def test_csv_matches_json(store_path):
    results = load_results(store_path)
    rows = _rows(results)
    for line in csv.DictReader(io.StringIO(to_csv(results))):
        r = rows[(line["model"], line["attack"])]
        assert float(line["clean_accuracy"]) == r["clean_accuracy"]
        for e in ("0.5", "1", "2"):
            assert float(line[f"robust_L2_{e}"]) == r["robust_accuracy"][e]
            # the 95% interval beside each robust accuracy (issue 22: the CSV had none)
            assert [float(line[f"robust_L2_{e}_ci_low"]), float(line[f"robust_L2_{e}_ci_high"])] == r["robust_ci"][e]
        # and on clean accuracy: A 9 of 10, B 10 of 10
        lo, hi = float(line["clean_ci_low"]), float(line["clean_ci_high"])
        assert (round(100 * lo, 1), round(100 * hi, 1)) == {"A": (59.6, 98.2), "B": (72.2, 100.0)}[line["model"]]


def test_attack_ranking_over_the_models_every_attack_ran_on(store_path):
    header, body = parse_tables(to_markdown(load_results(store_path)[0]))["L2: attacks ranked"]
    rows = [dict(zip(header, line)) for line in body]
    # pgd ran on A only, so both are scored on A: a 60% tie at eps 1, cw first by its mean norm (pgd has none)
    assert [(r["Attack"], r["Models"], r["Mean robust @1"], r["Mean L2"]) for r in rows] == [
        ("cw", "1", "60.0", "1.35"), ("pgd", "1", "60.0", "–")]
    # strongest on: cw on A (tie) and B (alone), pgd on A (tie)
    assert [r["Strongest on"] for r in rows] == ["2", "1"]


def _as_l0(res, plugins: dict[str, str]):
    """The toy results as if they were an L0 suite whose attacks are the given plugins."""
    import dataclasses

    res = dataclasses.replace(res, rows=[dataclasses.replace(r, norm="L0") for r in res.rows],
                              config=dict(res.config, epsilons={"L0": EPS},
                                          attacks=[{"name": a, "plugin": p} for a, p in plugins.items()]))
    return res


def test_a_run_with_fewer_samples_than_the_suite_says_so(store_path):
    import dataclasses

    res = load_results(store_path)[0]
    assert "--limit" not in to_markdown(res)  # the toy suite sets no limit
    short = dataclasses.replace(res, config=dict(res.config, dataset=dict(res.config["dataset"], limit=1000)))
    md = to_markdown(short)
    # issue 22: cifar_l0.md said "the first 1000 test images" above a table of 100 samples
    assert "10 samples from offset 0); seed 7. This run has 10 of the suite's 1000 samples (a run with --limit)" in md
    full = dataclasses.replace(res, config=dict(res.config, dataset=dict(res.config["dataset"], limit=10)))
    assert "--limit" not in to_markdown(full)


def test_models_table_lists_each_model_as_the_suite_defines_it(store_path):
    import dataclasses

    res = load_results(store_path)[0]
    assert "## Models" not in to_markdown(res)  # the toy config lists no models
    models = [{"name": "A", "plugin": "mlp", "params": {"hidden": 8}}, {"name": "B", "plugin": "mlp"}]
    header, body = parse_tables(to_markdown(dataclasses.replace(res, config=dict(res.config, models=models))))["Models"]
    assert header == ["Model", "Plugin", "Parameters", "Samples", "Clean", "Rank L2",
                      "Weights SHA-256", "Weights from", "Training", "Description"]
    # the hand-written store's run recorded no model cards: their columns show –
    assert body == [["A", "mlp (robench 0.1.0)", '{"hidden": 8}', "10", "90.0 [59.6, 98.2]", "2", "–", "–", "–", "–"],
                    ["B", "mlp (robench 0.1.0)", "{}", "10", "100.0 [72.2, 100.0]", "1", "–", "–", "–", "–"]]


def test_l0_attacks_that_minimise_changed_values_are_marked():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = _as_l0(load_results(build_store(Path(tmp) / "r.sqlite"))[0], {"cw": "fb-bb", "pgd": "pdpgd"})
    md = to_markdown(res)
    tables = parse_tables(md)
    header, _ = tables["L0"]
    assert "cw ‡ mean L0" in header and "pgd @1" in header  # pdpgd's grouped threshold counts pixels: no mark
    assert [line[1] for line in tables["L0: per attack"][1]] == ["cw ‡", "pgd", "cw ‡"]
    note = "‡ cw (fb-bb) minimises the number of changed channel values, not of changed pixels"
    assert md.count(note) == 2  # under the ranking and under the per-attack table
    # the terminal leaderboard too
    from rich.console import Console

    from robench.terminal import print_leaderboard

    console = Console(width=200, record=True, color_system=None)
    print_leaderboard(console, res)
    shown = console.export_text()
    assert note in shown and "cw ‡" in shown
    # an L2 suite, or an L0 one of pixel attacks only, has no such note
    assert "‡" not in to_markdown(_as_l0(res, {"cw": "pixel", "pgd": "pdpgd"}))


# -- plots --------------------------------------------------------------------------------------


def test_plots_write_png_and_svg(store_path, tmp_path):
    res = load_results(store_path)[0]
    for fn, name in ((plot, "eps.png"), (plot_norm_cdf, "cdf.png")):
        p = fn(res, tmp_path / name)
        assert p is not None and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = p.with_suffix(".svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # the CDF has one panel per attack and norm, each with a legend naming found / correct
    svg = (tmp_path / "cdf.svg").read_text()
    assert "cw (L2)" in svg and "pgd (L2)" in svg and "best (L2)" in svg
    assert plot_transfer(res, tmp_path / "t.png") is None  # no transfer cells in this suite


def test_transfer_heat_map(store_path, tmp_path):
    res = load_results(store_path)[0]
    res.transfer = [{"norm": "L2", "eps": 1.0, "sources": ["A", "B"], "targets": ["A", "B"],
                     "accuracy": {"A->A": 0.1, "A->B": 0.8, "B->A": 0.7, "B->B": 0.05}}]
    p = plot_transfer(res, tmp_path / "t.png")
    assert p is not None and p.with_suffix(".svg").exists()
    svg = p.with_suffix(".svg").read_text()
    assert "80.0" in svg and "70.0" in svg and "L2 eps = 1" in svg  # cell annotations and title
    assert "Transfer: L2 eps = 1" in to_markdown(res)


def test_unchanged_results_republish_byte_identical(store_path, tmp_path):
    results = load_results(store_path)
    publish(results, tmp_path / "a")
    publish(results, tmp_path / "b")
    files = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert "toy.svg" in files and "toy-cdf.png" in files and "runs/toy/samples.jsonl" in files  # the export too
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


# -- publishing and the index -------------------------------------------------------------------


def test_publish_index_lists_every_suite_published_there(store_path, tmp_path):
    out = tmp_path / "lb"
    publish(load_results(store_path), out)
    # a second suite, published later into the same folder, joins the index
    other = tmp_path / "other.sqlite"
    build_store(other, with_b=False)
    with Store(other) as s:
        s.db.execute("UPDATE suites SET name='toy2'")
        for table in ("cells", "clean", "runs"):
            s.db.execute(f"UPDATE {table} SET suite='toy2'")
    publish(load_results(other), out)
    index = (out / "README.md").read_text()
    assert "| toy | 2 | L2 | L2: B (100.0 @ 1) | [toy.md](toy.md)" in index
    assert "| toy2 | 1 | L2 | L2: A (60.0 @ 1) | [toy2.md](toy2.md)" in index
    md = (out / "toy.md").read_text()
    assert "![robust accuracy vs eps (best of attacks, 95% bands)](toy.png)" in md and "(toy-cdf.png)" in md
    # the site, published for toy only, still lists toy2 (markdown only: its store is not given) linked to its .md
    publish(load_results(store_path), out, html=True)
    site = (out / "site" / "index.html").read_text()
    assert '<a href="toy.html">toy</a>' in site and '<a href="../toy2.md">toy2</a>' in site
    assert site.count("markdown only") == 3  # the row (value and text) and the note


# -- diff ---------------------------------------------------------------------------------------


def test_diff_reports_added_rows_and_moved_values(tmp_path):
    old = load_results(build_store(tmp_path / "old.sqlite", with_b=False))
    new = load_results(build_store(tmp_path / "new.sqlite", b_norm=0.8))
    changes = diff_results(old, new)
    assert {(c.model, c.attack, c.what) for c in changes} == {("B", "cw", "added"), ("B", "best", "added")}
    assert diff_results(new, new) == []
    moved = load_results(build_store(tmp_path / "moved.sqlite", b_norm=1.5))
    changes = diff_results(new, moved)
    # B's cw norm moved from 0.8 to 1.5: robust accuracy at eps 1 goes 0 -> 100 %, means move
    what = {(c.attack, c.what): (c.old, c.new) for c in changes}
    assert what[("cw", "robust_accuracy@1")] == (0.0, 1.0)
    assert what[("best", "robust_accuracy@1")] == (0.0, 1.0)
    assert what[("cw", "mean_norm")] == (pytest.approx(0.8), pytest.approx(1.5))
    assert ("cw", "robust_accuracy@0.5") not in what  # 100% before and after
    md = diff_markdown(changes)
    assert "| toy | B | cw | L2 | robust_accuracy@1 | 0.0 | 100.0 | +100.0 |" in md
    assert re.search(r"0 row\(s\) added, 0 removed, \d+ value\(s\) changed", md)


def test_cli_diff_and_publish_html(tmp_path):
    from typer.testing import CliRunner

    from robench.cli import app

    old = build_store(tmp_path / "old" / "results.sqlite", with_b=False)
    new = build_store(tmp_path / "new" / "results.sqlite")
    runner = CliRunner()
    out = runner.invoke(app, ["diff", str(old.parent), str(new.parent), "--exit-code"])
    assert out.exit_code == 1, out.output
    assert "2 row(s) added" in out.output and "toy / B / cw / L2: clean 100.0" in out.output
    out = runner.invoke(app, ["diff", str(new), str(new), "--format", "json"])
    assert out.exit_code == 0 and json.loads(out.output) == []
    out = runner.invoke(app, ["publish", str(new), "--to", str(tmp_path / "lb"), "--html"])
    assert out.exit_code == 0, out.output
    for name in ("toy.md", "toy.json", "toy.csv", "toy.png", "toy.svg", "README.md", "site/index.html", "site/toy.html",
                 "site/toy.json", "site/robench.js", "site/toy.svg"):
        assert (tmp_path / "lb" / name).is_file(), name
    assert not math.isnan(json.loads((tmp_path / "lb" / "site" / "toy.json").read_text())[0]["clean_accuracy"])
