"""What the CLI prints, read as a user reads it: help with every default, plugin listings and
leaderboards that split no word at 80 columns, no rich markup in a pipe, no library warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

REPO = Path(__file__).resolve().parents[1]
ROBENCH = [sys.executable, "-m", "robench.cli"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cli(*args, env=None, check: int | None = 0) -> subprocess.CompletedProcess:
    env = dict(env or os.environ)
    env.setdefault("COLUMNS", "80")
    proc = subprocess.run(ROBENCH + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=REPO)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"robench {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def words(text: str) -> set[str]:
    return set(text.split())


def assert_fits(text: str, width: int = 80) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"{len(long)} line(s) wider than {width}:\n" + "\n".join(long[:5])


# -- help ----------------------------------------------------------------------------------------


def test_help_shows_every_default_and_no_bool_metavar():
    from typer.testing import CliRunner

    from robench import docgen
    from robench.cli import app

    runner = CliRunner()
    for name, cmd in docgen.cli_commands():
        result = runner.invoke(app, name.split()[1:] + ["--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, (name, result.output)
        out = result.output
        flat = " ".join(out.split())
        assert "<bool>" not in out, f"{name}: a flag shows as <bool>"
        assert_fits(out)
        for p in cmd.params:
            if not getattr(p, "opts", None) or not p.opts[0].startswith("-"):
                continue
            for stated in re.findall(r"\[default: [^\]]*\]", p.help or ""):  # a default the help text states
                assert stated in flat, f"{name} {p.opts[0]}: {stated} is missing from --help:\n{out}"
            if p.default not in (None, [], False) and not getattr(p, "is_flag", False):  # a default typer shows
                assert f"[default: {p.default}]" in flat, f"{name} {p.opts[0]}: [default: {p.default}] missing:\n{out}"


def test_run_help_names_the_defaults_the_issue_lists():
    out = " ".join(cli("run", "--help").stdout.split())
    for stated in ("[default: runs/<suite name>]", "[default: $ROBENCH_DATA, else ~/.cache/robench/data]",
                   "[default: $ROBENCH_CACHE, else ~/.cache/robench/models]", "[default: the cluster's CPUs]",
                   "[default: $RAY_ADDRESS, else start a local one]", "[default: 1 when the device is cuda, else 0]",
                   "[default: local]"):
        assert stated in out, stated
    # a docstring's hard line breaks are not kept: its paragraph is rewrapped as one
    assert "an interrupted one continues from its last stored batch" in out


# -- plugins -------------------------------------------------------------------------------------


def test_plugins_at_80_columns_split_no_word(registry):
    out = cli("plugins", "--verbose").stdout
    assert_fits(out)
    from robench.terminal import _capabilities

    source: set[str] = set()
    for spec in registry.all():
        source |= words(spec.name) | words(spec.origin) | words(spec.description) | words(_capabilities(spec.capabilities()))
        for n, f in spec.params.model_fields.items():
            source |= words(f"{n} = {f.default!r}: {f.description or ''}")
    source |= {"plugins", "(", ")"} | {f"({n})" for n in range(1000)} | {"model", "attack", "dataset"}
    broken = sorted(words(out) - source)
    assert not broken, f"words in the output that no plugin text has (split across lines?): {broken[:10]}"
    flat = " ".join(out.split())
    assert "needs robench[tf]" in flat  # not eaten as a markup tag


def test_plugins_rejects_an_unknown_kind():
    proc = cli("plugins", "--kind", "defense", check=2)
    assert "--kind must be one of model, attack, dataset" in proc.stderr


# -- leaderboards and run output -----------------------------------------------------------------

SUITE = """name: term
dataset: {name: digits, split: test, limit: 30}
seed: 3
batch_size: 10
device: cpu
models:
  - {name: lsq-model-with-a-long-name, plugin: fault-linear, params: {}}
attacks:
  - {name: noise, plugin: fault-noise, params: {}}
  - {name: noise-l2, plugin: fault-noise, params: {norm: L2}}
  - {name: broken, plugin: fault-noise, params: {fault: cuda_error}}
epsilons: {Linf: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3], L2: [0.5]}
"""


@pytest.fixture(scope="module")
def term_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("term")
    (tmp / "term.yaml").write_text(SUITE)
    env = dict(os.environ, ROBENCH_CACHE=str(tmp / "cache"), COLUMNS="80",
               PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    proc = cli("run", tmp / "term.yaml", "--out", tmp / "out", "--plugin", "reliability_plugins", env=env, check=1)
    return tmp, proc, env


def test_run_in_a_pipe_prints_no_markup_and_markdown(term_run):
    _, proc, _ = term_run
    for stream in (proc.stdout, proc.stderr):
        assert "[red]" not in stream and "[/red]" not in stream and "\x1b[" not in stream
    assert "# Leaderboard: term" in proc.stdout  # a pipe gets markdown
    assert re.search(r"^lsq-model-with-a-long-name / broken @ Linf 0\.01: failed \(\d+\.\d+s\)", proc.stderr, re.M), proc.stderr
    assert "cell lsq-model-with-a-long-name / broken @ Linf 0.01 failed:" in proc.stderr
    assert "Warning" not in proc.stderr  # no library warning leaks into the log


def test_leaderboard_table_fits_80_columns_without_splitting_words(term_run):
    tmp, _, env = term_run
    out = cli("leaderboard", tmp / "out", "--format", "table", env=env).stdout
    assert_fits(out)
    assert "|---" not in out and "Leaderboard: term" in out
    from robench.report import load_results
    from robench.report.tables import attack_table, ranking_table

    res = load_results(tmp / "out")[0]
    shown = words(out)
    for table in (ranking_table(res, "Linf"), attack_table(res, "Linf")):
        for row in table.rows:
            for cell in row[:2]:  # identity columns: every word of each appears whole
                assert words(cell.text) <= shown, (cell.text, out)
    # 6 eps do not fit beside the other columns at 80: the ranking continues in a second table that
    # repeats the model column
    assert out.count("lsq-model-with-a-long-name") >= 4, out


def test_leaderboard_defaults_to_tables_on_a_terminal_and_markdown_in_a_pipe(term_run):
    tmp, _, env = term_run
    piped = cli("leaderboard", tmp / "out", env=env).stdout
    assert piped.startswith("# Leaderboard: term")
    tty = ANSI.sub("", cli("leaderboard", tmp / "out", env=dict(env, TTY_COMPATIBLE="1")).stdout)
    assert tty.startswith("Leaderboard: term") and "Linf: ranking" in tty and "|---" not in tty


# -- the building blocks -------------------------------------------------------------------------


def test_message_keeps_brackets_that_are_not_style_tags():
    from robench.terminal import message, plain

    text = "[red]model m failed[/red]: needs robench[tf]; x[0] = [1, 2]"
    assert plain(text) == "model m failed: needs robench[tf]; x[0] = [1, 2]"
    styled = message(text)
    assert any(span.style == "red" and styled.plain[span.start:span.end] == "model m failed" for span in styled.spans)


def test_fitted_tables_cut_a_wide_table_into_parts_that_fit():
    from robench.terminal import fitted_tables

    headers = ["Model"] + [f"column-{i}" for i in range(12)]
    rows = [[Text("some-model")] + [Text(f"{i}.{j}5 [{i}.1, {j}.9]") for i in range(12)] for j in range(3)]
    console = Console(width=60, file=open(os.devnull, "w"), color_system=None)
    tables = fitted_tables(console, "wide", headers, rows, keep=1)
    assert len(tables) > 1
    console = Console(width=60, record=True, color_system=None, file=open(os.devnull, "w"))
    for t in tables:
        console.print(t)
    out = console.export_text()
    assert_fits(out, 60)
    assert out.count("some-model") == 3 * len(tables)  # the identity column is repeated in each part
    for i in range(12):
        assert f"column-{i}" in out and f"{i}.1," in out


def test_library_warnings_are_counted_not_printed():
    from robench.terminal import quiet_library_warnings

    if sys.warnoptions:
        pytest.skip("an explicit -W option is respected")
    shown = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: shown.append(str(msg))  # what would reach stderr
        with quiet_library_warnings() as hidden:
            warnings.warn_explicit("x.T on 3 dims is deprecated", UserWarning,
                                   "/venv/lib/python3.11/site-packages/eagerpy/tensor/pytorch.py", 10)
            warnings.warn_explicit("robench's own warning", UserWarning, str(REPO / "robench" / "cell.py"), 1)
    assert shown == ["robench's own warning"]
    assert hidden.count == 1 and "1 library warning(s) hidden" in hidden.summary()


# -- the run plan, the estimate, Ray's log ---------------------------------------------------------


def test_run_prints_its_plan_before_it_starts(term_run):
    _, proc, _ = term_run
    lines = proc.stderr.splitlines()
    plan = lines.index("plan: 13 cell(s) x 30 sample(s); 390 sample-attack(s) to run")
    assert lines[plan + 1] == "models: lsq-model-with-a-long-name to train"
    first_cell = next(i for i, line in enumerate(lines) if line.startswith("lsq-model-with-a-long-name / "))
    assert plan < first_cell
    # once an attack has run, each cell's end line says how long the rest should take
    assert any(re.search(r"\[cell \d+/13; (~\d+ s|<1 s) left", line) for line in lines), proc.stderr
    assert any(line.endswith("[cell 13/13]") for line in lines)  # nothing left: no estimate


def test_rerun_plan_counts_stored_cells(term_run):
    tmp, _, env = term_run
    proc = cli("run", tmp / "term.yaml", "--out", tmp / "out", "--plugin", "reliability_plugins", "--no-leaderboard",
               env=env, check=1)
    lines = proc.stderr.splitlines()
    assert "plan: 13 cell(s) x 30 sample(s), 7 cell(s) already stored; 180 sample-attack(s) to run" in lines, proc.stderr
    assert "models: lsq-model-with-a-long-name cached" in lines
    stored = [line for line in lines if ": stored [cell" in line]
    assert len(stored) == 7  # one line per stored cell: no "started", no duration
    assert not any(line.startswith(s.split(": stored")[0] + ": started") for s in stored for line in lines)


def test_extended_run_estimates_from_stored_timing(isolated_env):
    tmp = isolated_env
    (tmp / "term.yaml").write_text(SUITE)
    args = ["run", tmp / "term.yaml", "--out", tmp / "out", "--plugin", "reliability_plugins", "--no-leaderboard"]
    cli(*args, "--limit", "10", check=1)
    lines = cli(*args, check=1).stderr.splitlines()
    assert "plan: 13 cell(s) x 30 sample(s); 320 sample-attack(s) to run" in lines
    assert any(re.fullmatch(r"estimate: (~\d+ s|<1 s) of attacks for 7 cell\(s\), from the timing of stored samples; "
                            r"6 cell\(s\) not timed yet", line) for line in lines), lines
    assert any(re.search(r": started \(10/30 stored before\)$", line) for line in lines)


def test_plan_lines_and_eta():
    from robench.run import PlannedCell, RunPlan
    from robench.terminal import RunEta, plan_lines

    plan = RunPlan("s", 100, [PlannedCell("m / a @ 1", "m", "a", 100, 0.5), PlannedCell("m / a @ 2", "m", "a", 40, 0.5),
                              PlannedCell("m / b", "m", "b", 100), PlannedCell("m / c", "m", "c", 0)],
                   {"m": "cached"}, estimate="about 2 min", suite_samples=1000)
    lines = plan_lines(plan)
    assert lines[0] == "plan: 4 cell(s) x 100 sample(s), 1 cell(s) already stored; 240 sample-attack(s) to run"
    assert lines[1] == "models: m cached"
    assert lines[2] == "estimate (the suite's, for 1000 samples): about 2 min"
    assert lines[3] == "estimate: ~70 s of attacks for 2 cell(s), from the timing of stored samples; 1 cell(s) not timed yet"
    eta = RunEta()
    eta.set_plan(plan)
    assert eta.text() == "~70 s left for 2 timed cell(s), 1 not timed yet"
    eta.measured("m / b", 100, 200.0)  # b runs at 2 s per sample
    eta.finish("m / b")
    assert eta.text() == "~70 s left"
    eta.measured("m / a @ 1", 100, 100.0)  # a turns out slower than stored: 1 s per sample
    eta.finish("m / a @ 1")
    assert eta.text() == "~40 s left"


def test_ray_cells_log_in_order_with_their_attack_time(isolated_env):
    pytest.importorskip("ray")
    tmp = isolated_env
    (tmp / "ray.yaml").write_text(SUITE.replace("name: term", "name: term-ray").replace(
        "  - {name: broken, plugin: fault-noise, params: {fault: cuda_error}}\n", "").replace(
        "[0.01, 0.02, 0.05, 0.1, 0.2, 0.3]", "[0.1]"))
    proc = cli("run", tmp / "ray.yaml", "--out", tmp / "out", "--plugin", "reliability_plugins", "--no-leaderboard",
               "--executor", "ray", "--workers", "2", env=dict(os.environ), check=0)
    lines = [line for line in proc.stderr.splitlines() if " / noise" in line]
    for cell in ("lsq-model-with-a-long-name / noise @ Linf 0.1", "lsq-model-with-a-long-name / noise-l2 @ L2 0.5"):
        mine = [line for line in lines if line.startswith(cell + ":")]
        assert mine[0].startswith(f"{cell}: running on a Ray worker (0/30 samples stored)"), mine
        assert re.fullmatch(rf"{re.escape(cell)}: done \(\d+\.\d+s of attack time\) \[cell \d/2\]", mine[-1]), mine
        assert not any(line.endswith("started") for line in mine)  # no "started" after the cell ran
    assert "Started a local Ray instance" not in proc.stderr and "authentication" not in proc.stderr


def test_file_names_with_brackets_print_as_they_are(tmp_path):
    (tmp_path / "cifar10 [copy].npz").write_bytes(b"")
    out = cli("data", "where", "--data-dir", tmp_path).stdout
    assert "  cifar10 [copy].npz" in out.splitlines()


def test_top_level_help_keeps_the_typical_use_lines():
    out = cli("--help").stdout.splitlines()
    i = out.index("  Typical use:")
    assert out[i + 1:i + 3] == ["    robench run suites/quickstart.yaml", "    robench publish runs/quickstart"]
