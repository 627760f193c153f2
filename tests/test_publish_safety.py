"""Safe publishing (issue 21): names read from a results store are validated like names in a suite
before any file is named after them, publish never writes outside ``--to`` nor over files it did not
write, and every text from a suite, a store or an error is as inert in markdown as in HTML."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from robench.errors import UserInputError
from robench.report import load_results, publish, to_markdown
from robench.report.markdown import md_text
from test_publish_leaderboard import build_store

XSS = "<script>alert(1)</script> <img src=x onerror=alert(2)> [click](javascript:alert(3)) <javascript:alert(4)>"


def _crafted(tmp_path: Path, *, suite: str | None = None, description: str | None = None, model: str | None = None) -> Path:
    path = build_store(tmp_path / "crafted" / "results.sqlite")
    con = sqlite3.connect(path)
    with con:
        if suite is not None:
            for table, col in (("runs", "suite"), ("cells", "suite"), ("clean", "suite"), ("noise", "suite"), ("suites", "name")):
                con.execute(f"UPDATE {table} SET {col} = ?", (suite,))
        if description is not None:
            (config,), = con.execute("SELECT config FROM suites").fetchall()
            cfg = json.loads(config)
            cfg["description"] = description
            con.execute("UPDATE suites SET config = ?", (json.dumps(cfg),))
        if model is not None:
            for table in ("cells", "clean"):
                con.execute(f"UPDATE {table} SET model = ? WHERE model = 'A'", (model,))
    con.close()
    return path


@pytest.mark.parametrize("name", ["../../evil", "/tmp/evil", "..", "a/b", "README", "index", "x" * 101, "ok\nname"])
def test_a_crafted_suite_name_writes_nothing(tmp_path, name):
    results = load_results(_crafted(tmp_path, suite=name))
    assert [r.suite for r in results] == [name]
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(UserInputError, match="not a valid suite name"):
        publish(results, tmp_path / "pub" / "to", html=True)
    assert {p for p in tmp_path.rglob("*")} == before  # not one file, not even --to itself


def test_publish_cli_on_a_crafted_store_exits_2(tmp_path):
    from typer.testing import CliRunner

    from robench.cli import app

    store = _crafted(tmp_path, suite="../escaped")
    res = CliRunner().invoke(app, ["publish", str(store), "--to", str(tmp_path / "pub")])
    assert res.exit_code == 2 and "not a valid suite name" in " ".join(res.output.split()), res.output
    assert not list(tmp_path.glob("escaped*")) and not (tmp_path / "pub").exists()


def test_publish_does_not_write_through_symlinks(tmp_path):
    results = load_results(build_store(tmp_path / "run" / "results.sqlite"))
    to = tmp_path / "pub"
    to.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    os.symlink(outside, to / "toy.csv")
    with pytest.raises(UserInputError, match="symbolic link"):
        publish(results, to)
    assert outside.read_text() == "precious"


def test_publish_does_not_overwrite_files_it_did_not_write(tmp_path):
    results = load_results(build_store(tmp_path / "run" / "results.sqlite"))
    to = tmp_path / "project"
    to.mkdir()
    (to / "README.md").write_text("# My project\n\nhand-written\n")
    with pytest.raises(UserInputError, match="was not written by robench publish"):
        publish(results, to)
    assert (to / "README.md").read_text() == "# My project\n\nhand-written\n" and not (to / "toy.md").exists()
    (to / "README.md").unlink()
    written = publish(results, to)
    assert to / "toy.md" in written
    assert publish(results, to) == written  # its own files are updated in place


def test_publish_into_a_file_or_read_only_folder_is_one_line(tmp_path):
    results = load_results(build_store(tmp_path / "run" / "results.sqlite"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="is not a folder"):
        publish(results, tmp_path / "file")
    import shutil
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    immutable = False
    try:
        if os.access(ro, os.W_OK):  # root: permission bits do not stop it; an immutable folder does
            immutable = shutil.which("chattr") is not None and subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("running as root without chattr +i: no way to make a folder unwritable here")
        with pytest.raises(UserInputError, match="cannot write into"):
            publish(results, ro)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
        ro.chmod(0o700)


def test_markdown_escapes_text_from_the_store(tmp_path):
    store = _crafted(tmp_path, description=XSS, model="<img src=x onerror=alert(5)>")
    results = load_results(store)
    written = publish(results, tmp_path / "pub")
    for p in written:
        if p.suffix == ".md":
            text = p.read_text()
            for raw in ("<script", "<img", "<javascript:", "](javascript:"):
                assert raw not in text, (p.name, raw)
    md = (tmp_path / "pub" / "toy.md").read_text()
    assert "&lt;script>alert(1)&lt;/script>" in md and "&lt;img src=x onerror=alert(5)>" in md
    assert "<sub>" in md  # robench's own markup is kept
    assert to_markdown(results[0]).count("&lt;img src=x onerror=alert(5)>") >= 2  # ranking and per-attack tables


@pytest.mark.parametrize("text, inert", [
    ("C&W", "C&W"), ("a <-> b", "a <-> b"), ("x < 0.1", "x < 0.1"), ("[95% interval]", "[95% interval]"),
    ("**bold**", "**bold**"), ("<b>", "&lt;b>"), ("</p>", "&lt;/p>"), ("<!-- c -->", "&lt;!-- c -->"),
    ("&lt;", "&amp;lt;"), ("&#60;", "&amp;#60;"), ("[a](b)", "[a]\\(b)"), ("![i](x.png)", "![i]\\(x.png)"),
    ("[r]: javascript:x", "[r]\\: javascript:x"),
])
def test_md_text(text, inert):
    assert md_text(text) == inert


def test_leaderboard_of_a_store_on_a_read_only_file_system_is_read(tmp_path):
    """A valid store that cannot be written (made immutable with chattr +i, as on a read-only mount)
    is read: not "is not a robench results store", and the file is not changed."""
    import shutil
    import subprocess

    path = build_store(tmp_path / "ro" / "results.sqlite")
    expected = [r.suite for r in load_results(path)]
    for extra in path.parent.glob("results.sqlite-*"):
        extra.unlink()
    before = path.read_bytes()
    targets = [str(path), str(path.parent)]
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", *targets], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs an ext2/3/4 file system and CAP_LINUX_IMMUTABLE)")
    try:
        assert [r.suite for r in load_results(path)] == expected
        assert path.read_bytes() == before
    finally:
        subprocess.run(["chattr", "-i", *targets], check=True)


def test_cells_of_attacks_and_models_no_longer_in_the_suite_are_not_shown_as_incomplete(tmp_path):
    """The suite saved last (a resumed run after removing attack pgd and model B) decides what the
    leaderboard shows; the other stored cells are listed as not in the current suite."""
    from test_publish_leaderboard import CONFIG

    path = build_store(tmp_path / "run" / "results.sqlite")
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE cells SET status = 'running' WHERE attack = 'pgd'")  # interrupted before the edit
        cfg = {**CONFIG, "models": [{"name": "A", "plugin": "mlp"}], "attacks": [{"name": "cw", "plugin": "fb-cw-l2"}]}
        con.execute("UPDATE suites SET config = ?", (json.dumps(cfg),))
    con.close()
    res, = load_results(path)
    assert {(r.model, r.attack) for r in res.rows} == {("A", "cw"), ("A", "best")}
    assert all(r.status == "done" for r in res.rows)
    assert set(res.clean) == {"A"}
    text = " ".join(res.warnings)
    assert "3 stored cells of attack pgd: not in the current suite" in text and "1 stored cell of model B" in text
    md = to_markdown(res)
    assert "incomplete" not in md and "not in the current suite" in md
