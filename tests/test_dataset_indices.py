"""Samples by index: dataset.indices / indices_file, alone or with classes, in keys and provenance."""

from __future__ import annotations

import sqlite3
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.errors import SuiteError, UserInputError
from robench.plugins import get_registry
from robench.results import load_results
from robench.run import RunOptions, run_suite
from robench.suite import load_suite


def _suite(tmp_path, dataset: str, name: str = "s.yaml"):
    (tmp_path / name).write_text(textwrap.dedent(f"""
        name: idx
        dataset: {dataset}
        device: cpu
        models: [{{name: m, plugin: svm}}]
        attacks: [{{name: fgsm, plugin: fgsm, params: {{norm: Linf}}}}]
        epsilons: {{Linf: [0.1]}}
    """))
    return tmp_path / name


def _run(tmp_path, path, out="out"):
    reg = get_registry()
    summary = run_suite(load_suite(path, reg), reg, RunOptions(out_dir=tmp_path / out, data_dir=tmp_path, cache_dir=tmp_path / "cache"))
    assert summary.ok, (summary.models_failed, summary.cells_failed)
    db = sqlite3.connect(tmp_path / out / "results.sqlite")
    return db, [r for r in load_results(tmp_path / out) if r.suite == "idx"][0]


def _labels():
    from robench_plugins.datasets.digits import Digits, DigitsParams

    _, y = Digits(DigitsParams()).load("test", None)
    return y


def test_indices_select_those_samples_keeping_their_index(tmp_path):
    y = _labels()
    db, res = _run(tmp_path, _suite(tmp_path, "{name: digits, indices: [17, 3, 250, 42]}"))
    rows = db.execute("SELECT idx, label FROM clean ORDER BY rowid").fetchall()
    assert sorted(rows) == sorted((i, int(y[i])) for i in (17, 3, 250, 42))
    assert {r[0] for r in db.execute("SELECT idx FROM samples")} == {17, 3, 250, 42}
    # The selection is part of the provenance: another selection, another samples digest.
    _, other = _run(tmp_path, _suite(tmp_path, "{name: digits, indices: [17, 3, 250, 43]}", "t.yaml"), "out2")
    assert res.sample_digest != other.sample_digest


def test_indices_with_classes_and_limit(tmp_path):
    y = _labels()
    picks = [int(i) for i in np.arange(60)]
    db, _ = _run(tmp_path, _suite(tmp_path, f"{{name: digits, indices: {picks}, classes: [3, 5], limit: 4}}"))
    rows = db.execute("SELECT idx, label FROM clean").fetchall()
    want = [i for i in picks if int(y[i]) in (3, 5)][:4]
    assert sorted(i for i, _ in rows) == sorted(want)
    assert {lbl for _, lbl in rows} <= {0, 1}  # relabelled 0..k-1 in the order of classes
    assert all((lbl == 0) == (int(y[i]) == 3) for i, lbl in rows)


@pytest.mark.parametrize("kind", ["npy", "txt"])
def test_indices_file_matches_inline_indices(tmp_path, kind):
    sel = [9, 2, 33]
    if kind == "npy":
        np.save(tmp_path / "sel.npy", np.array(sel, dtype=np.int64))
    else:
        (tmp_path / "sel.txt").write_text("9\n2, 33\n")
    reg = get_registry()
    from_file = load_suite(_suite(tmp_path, f"{{name: digits, indices_file: sel.{kind}}}"), reg)
    inline = load_suite(_suite(tmp_path, "{name: digits, indices: [9, 2, 33]}", "i.yaml"), reg)
    assert from_file.suite.dataset.indices == sel == inline.suite.dataset.indices
    # the file's content, not its name, is in the suite hash: change the file, change the hash
    before = from_file.suite.content_hash()
    if kind == "npy":
        np.save(tmp_path / "sel.npy", np.array([9, 2, 34], dtype=np.int64))
    else:
        (tmp_path / "sel.txt").write_text("9 2 34")
    assert load_suite(tmp_path / "s.yaml", reg).suite.content_hash() != before


def test_bad_selections_are_located_errors(tmp_path):
    reg = get_registry()
    with pytest.raises(SuiteError, match="indices must be distinct, got \\[3, 3\\] \\(repeated: \\[3\\]\\)"):
        load_suite(_suite(tmp_path, "{name: digits, indices: [3, 3]}"), reg)
    with pytest.raises(SuiteError, match="give indices or indices_file, not both"):
        load_suite(_suite(tmp_path, "{name: digits, indices: [3], indices_file: x.txt}"), reg)
    (tmp_path / "bad.txt").write_text("1 2 x")
    res = CliRunner().invoke(app, ["validate", str(_suite(tmp_path, "{name: digits, indices_file: bad.txt}"))])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "dataset.indices_file (line 3):" in out and "not a non-negative integer: 'x'" in out
    res = CliRunner().invoke(app, ["validate", str(_suite(tmp_path, "{name: digits, indices_file: none.npy}"))])
    assert res.exit_code == 2 and "file not found" in res.output
    with pytest.raises(UserInputError, match=r"dataset.indices: \[100000\] beyond the 540 samples"):
        _run(tmp_path, _suite(tmp_path, "{name: digits, indices: [1, 100000]}"))
