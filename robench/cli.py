"""The `robench` command line (typer + rich)."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from . import __version__
from .data_commands import DataDirOpt, register_cli as _register_data
from .errors import RobenchError
from .progress import LineReporter, RichReporter
from .terminal import HiddenWarnings, quiet_library_warnings

app = typer.Typer(
    help="robench: benchmark the adversarial robustness of models with plugin defenses, attacks and datasets.\n\n"
    "\b\nTypical use:\n  robench run suites/quickstart.yaml\n  robench publish runs/quickstart",  # \b: kept as written
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich markup mode would eat every "[default: ...]" and "robench[tf]" as markup tags,
    # print flags as <bool> and keep the docstrings' hard line breaks; click rewraps paragraphs to the terminal.
    rich_markup_mode=None,
)

console = Console()
err_console = Console(stderr=True)

PluginOpt = typer.Option(None, "--plugin", "-p", metavar="MODULE", help="Import this module as an extra plugin (repeatable), e.g. my_pkg.robench_plugin")


def _registry(plugins: Optional[List[str]]):
    from .plugins import get_registry

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = get_registry(plugins or [])
    for origin, error in reg.broken:
        err_console.print(Text.assemble(("warning:", "yellow"), f" plugin {origin} failed to load: {error}"), soft_wrap=True)
    return reg


def _warn_inert(resolved) -> None:
    """One line per suite parameter that cannot affect the run (it is valid, so this is not an error)."""
    for loc, reason in resolved.warnings:
        err_console.print(Text.assemble(("warning:", "yellow"), f" {resolved.path}: {loc}: {reason}"), highlight=False, soft_wrap=True)


def _fail(exc: RobenchError) -> None:
    err_console.print(Text.assemble(("error:", "red"), f" {exc}"), highlight=False)  # a Text: brackets in exc stay
    raise typer.Exit(exc.exit_code)


_hidden_warnings: list[HiddenWarnings] = []  # the warnings kept out of the output by the running command


def _print_hidden_warnings() -> None:
    """One line saying how many library warnings were kept out of the output (if any)."""
    if _hidden_warnings and _hidden_warnings[-1].summary():
        err_console.print(Text(_hidden_warnings[-1].summary(), style="dim"), soft_wrap=True)


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context, version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    # eagerpy's, foolbox's, torch's UserWarnings are counted, not printed into tables and logs
    _hidden_warnings[:] = [ctx.with_resource(quiet_library_warnings())]
    if version:
        console.print(f"robench {__version__}")
        raise typer.Exit(0)


@app.command()
def run(
    suite: Path = typer.Argument(..., help="Suite YAML file"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder for results.sqlite [default: runs/<suite name>]"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Evaluate only the first N samples (a rerun with a larger N extends the run)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto (overrides the suite)"),
    data_dir: Optional[Path] = DataDirOpt,
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Trained-model cache [default: $ROBENCH_CACHE, else ~/.cache/robench/models]"),
    retrain: bool = typer.Option(False, "--retrain", help="Ignore cached model weights and train again"),
    plugin: Optional[List[str]] = PluginOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (bars on a terminal, plain lines in a log or pipe)"),
    leaderboard: bool = typer.Option(True, "--leaderboard/--no-leaderboard", help="Print the leaderboard at the end"),
    executor: str = typer.Option("local", "--executor", help="local (this process) or ray (Ray workers; needs the ray extra)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Ray: cells in flight at once [default: the cluster's CPUs]"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray: join this cluster (e.g. auto, ray://head:10001) [default: $RAY_ADDRESS, else start a local one]"),
    gpus_per_cell: Optional[float] = typer.Option(None, "--gpus-per-cell", min=0, help="Ray: GPUs each cell asks for [default: 1 when the device is cuda, else 0]"),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help="Run only share i of n of the samples (i/n, e.g. 2/4: blocks of batch_size dealt round-robin), or of the cells (cells:i/n); merge the stores with robench merge"),
    isolate: str = typer.Option("none", "--isolate", metavar="none|process", help="process: run each cell in a fresh child process, so a plugin that crashes the interpreter (segfault, os._exit) fails only its cell [default: none, in this process]"),
    allow_dir: Optional[List[Path]] = typer.Option(None, "--allow-dir", metavar="DIR", help="Let path parameters of the suite name files in this folder too (repeatable); by default only the suite's folder and the data dir"),
) -> None:
    """Run every model of a suite against every attack; store per-sample results; print the leaderboard.

    Rerunning the same command resumes: finished cells are skipped, an interrupted one continues
    from its last stored batch. Exit code: 0 all cells done, 1 some cell or model failed,
    2 invalid input, 130 interrupted.
    """
    from .data import resolve_data_dir
    from .models import default_cache_dir
    from .run import RunOptions, run_suite
    from .suite import load_suite

    from .errors import UserInputError

    try:
        if device is not None and device not in ("cpu", "cuda", "auto"):
            raise UserInputError(f"--device must be cpu, cuda or auto, not {device!r}")
        reg = _registry(plugin)
        resolved = load_suite(suite, reg, data_dir=resolve_data_dir(data_dir))  # dataset facts checked with the rest
        _warn_inert(resolved)
        out_dir = out or Path("runs") / resolved.suite.name
        from .executors import make_executor
        from .plan import parse_shard, shard_unit

        options = RunOptions(out_dir=out_dir, data_dir=resolve_data_dir(data_dir), cache_dir=cache_dir or default_cache_dir(),
                             limit=limit, device=device, retrain=retrain, shard=parse_shard(shard) if shard else None,
                             shard_by=shard_unit(shard) if shard else "samples",
                             executor=make_executor(executor, workers=workers, address=ray_address, gpus_per_cell=gpus_per_cell,
                                                    plugins=tuple(plugin or ()), isolate=isolate),
                             plugins=tuple(plugin or ()), isolate=isolate, allow_dirs=tuple(allow_dir or ()))
        t0 = time.perf_counter()
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        if quiet:
            summary = run_suite(resolved, reg, options, None)
        elif not err_console.is_terminal:  # a log file or a pipe: rich would draw nothing until the end
            summary = run_suite(resolved, reg, options, LineReporter(err_console))
        else:
            with Progress(*columns, console=err_console, transient=False) as progress:
                summary = run_suite(resolved, reg, options, RichReporter(progress))
        wall = time.perf_counter() - t0
    except RobenchError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]: results stored so far are kept; run the same command again to resume.",
                          soft_wrap=True)
        raise typer.Exit(130)
    _interrupt_after_the_run(summary.store_path)
    err_console.print(
        f"{summary.cells_total} cells: {summary.cells_done} run, {summary.cells_skipped} already stored, "
        f"{len(summary.cells_failed)} failed · {wall:.1f}s · results in {summary.store_path}", markup=False, soft_wrap=True,
    )
    if leaderboard:
        from .report import load_results, to_markdown

        for res in load_results(summary.store_path):
            if res.suite == resolved.suite.name:
                if console.is_terminal:  # tables on a terminal, markdown in a pipe or a file
                    from .terminal import print_leaderboard

                    print_leaderboard(console, res, str(summary.store_path))
                else:
                    sys.stdout.write(to_markdown(res))
    for name, err in summary.models_failed:
        err_console.print(Text.assemble((f"model {name} failed:", "red"), f"\n{err}"))
    for label, err in summary.cells_failed:
        err_console.print(Text.assemble((f"cell {label} failed:", "red"), f"\n{err}"))
    _print_hidden_warnings()
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def validate(
    suite: Path = typer.Argument(..., help="Suite YAML file"),
    plugin: Optional[List[str]] = PluginOpt,
    data_dir: Optional[Path] = DataDirOpt,
) -> None:
    """Check a suite without running it: YAML syntax, fields, plugin names and their parameters, eps against
    the input box, and the dataset's split, classes and offset (its files are read when present, not
    loaded). Every problem is listed at once, with its YAML line (exit 2 if invalid)."""
    from .data import resolve_data_dir
    from .suite import load_suite

    try:
        resolved = load_suite(suite, _registry(plugin), data_dir=resolve_data_dir(data_dir))
    except RobenchError as exc:
        _fail(exc)
    _warn_inert(resolved)
    s = resolved.suite
    console.print(Text.assemble(("ok", "green"), f": {suite} — suite {s.name!r}: {len(s.models)} model(s), {len(s.attacks)} attack(s), dataset {s.dataset.name}"), soft_wrap=True)
    for d in s.deviations:
        console.print(f"deviation: {d.what}: paper {d.paper}; ours {d.ours} ({d.why})", soft_wrap=True, markup=False, highlight=False)


@app.command()
def plugins(
    plugin: Optional[List[str]] = PluginOpt,
    kind: Optional[str] = typer.Option(None, "--kind", help="Only model, attack or dataset plugins"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list every parameter with its default"),
) -> None:
    """List every plugin robench can use, with kind, origin (built-in or distribution + version) and description."""
    from .errors import UserInputError
    from .terminal import KIND_ORDER, plugin_listing

    try:
        if kind is not None and kind not in KIND_ORDER:
            raise UserInputError(f"--kind must be one of {', '.join(KIND_ORDER)}, not {kind!r}")
        reg = _registry(plugin)
    except RobenchError as exc:
        _fail(exc)
    # one block per plugin (wrapped at spaces, at any width) rather than a table whose columns fold words
    for line in plugin_listing(console, [s for s in reg.all() if kind is None or s.kind == kind], verbose=verbose):
        console.print(line, soft_wrap=True)
    for origin, error in reg.broken:
        console.print(Text.assemble(("broken", "red"), f" {origin}: {error}"))


@app.command()
def merge(
    stores: List[Path] = typer.Argument(..., help="results.sqlite files to merge (e.g. the shards of one suite), or published exports (leaderboard/runs/<suite>/)"),
    into: Path = typer.Option(..., "--into", help="Destination store (created if missing; existing results are kept and checked)"),
) -> None:
    """Merge results stores: rows present in several stores must be equal, else nothing is merged (exit 1).

    Every source run is kept with its provenance and where it came from; the merge itself is
    recorded as a run of status 'merged'.
    """
    from .merge import merge_stores

    try:
        report = merge_stores(list(stores), into)
    except RobenchError as exc:
        _fail(exc)
    for path, cells, samples in report.per_source:
        console.print(f"read {path}: {cells} cells, {samples} samples", markup=False, soft_wrap=True)
    console.print(f"merged into {report.into}: {report.runs} runs, {report.cells_new} new cells, {report.samples_new} new samples, "
                  f"{report.samples_checked} duplicate samples checked equal", markup=False, soft_wrap=True)


@app.command("leaderboard")
def leaderboard_cmd(
    source: Path = typer.Argument(..., help="A results.sqlite file, or a folder holding runs"),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="table, md, json or csv [default: table on a terminal, else md]"),
    suite: Optional[str] = typer.Option(None, "--suite", help="Only this suite"),
) -> None:
    """Print the leaderboard of stored results."""
    from .errors import UserInputError
    from .report import load_results, to_csv, to_json, to_markdown

    try:
        if format is None:
            format = "table" if console.is_terminal else "md"
        if format not in ("table", "md", "json", "csv"):
            raise UserInputError(f"--format must be table, md, json or csv, not {format!r}")
        results = [r for r in load_results(source) if suite is None or r.suite == suite]
        if not results:
            raise UserInputError(f"no suite {suite!r} in {source}")
    except RobenchError as exc:
        _fail(exc)
    if format == "table":
        from .terminal import print_leaderboard

        for r in results:
            print_leaderboard(console, r, str(source))
    elif format == "md":
        sys.stdout.write("\n".join(to_markdown(r) for r in results))
    elif format == "json":
        sys.stdout.write(to_json(results) + "\n")
    else:
        sys.stdout.write(to_csv(results))


@app.command()
def publish(
    source: Path = typer.Argument(..., help="A results.sqlite file, or a folder holding runs"),
    to: Path = typer.Option(Path("leaderboard"), "--to", help="Output folder"),
    suite: Optional[str] = typer.Option(None, "--suite", help="Only this suite"),
    html: bool = typer.Option(False, "--html", help="Also write the static HTML site (index + one page per suite) into <to>/site"),
) -> None:
    """Write leaderboard markdown, JSON, CSV and plots (PNG + SVG) per suite, plus an index README.

    Publishing into a folder that already holds other suites keeps them: the index lists every
    suite published there.
    """
    from .errors import UserInputError
    from .report import load_results, publish as do_publish

    try:
        results = [r for r in load_results(source) if suite is None or r.suite == suite]
        if not results:
            raise UserInputError(f"no suite {suite!r} in {source}")
        written = do_publish(results, to, html=html)
    except RobenchError as exc:
        _fail(exc)
    for p in written:
        console.print(f"wrote {p}", markup=False, highlight=False, soft_wrap=True)  # a path is text, never markup


@app.command()
def diff(
    old: Path = typer.Argument(..., help="The earlier results (a results.sqlite file or a folder holding runs)"),
    new: Path = typer.Argument(..., help="The later results"),
    format: str = typer.Option("md", "--format", "-f", help="md or json"),
    suite: Optional[str] = typer.Option(None, "--suite", help="Only this suite"),
    exit_code: bool = typer.Option(False, "--exit-code", help="Exit with 1 when anything changed (for scripts and CI)"),
) -> None:
    """Show what changed between two result stores: leaderboard rows added or removed, and every value that moved."""
    from .errors import UserInputError
    from .report import diff_json, diff_markdown, diff_results, load_results

    try:
        if format not in ("md", "json"):
            raise UserInputError(f"--format must be md or json, not {format!r}")
        before = [r for r in load_results(old) if suite is None or r.suite == suite]
        after = [r for r in load_results(new) if suite is None or r.suite == suite]
        if suite is not None and not before and not after:
            raise UserInputError(f"no suite {suite!r} in {old} or {new}")
    except RobenchError as exc:
        _fail(exc)
    changes = diff_results(before, after)
    sys.stdout.write(diff_markdown(changes) if format == "md" else diff_json(changes) + "\n")
    if exit_code and changes:
        raise typer.Exit(1)


_register_data(app, _fail)  # robench data import | where

from .evaluation import register_cli as _register_evaluate  # noqa: E402  (robench evaluate lives with robench.evaluate)

_register_evaluate(app, _fail)

from .zoo_commands import register_cli as _register_zoo  # noqa: E402

_register_zoo(app, _fail)

from .report.reproduction import register_cli as _register_reproductions  # noqa: E402

_register_reproductions(app, _fail)


_AS_PROGRAM = False  # set by main(): the process is the robench program (not a test calling the app)


def _interrupt_after_the_run(store_path: Path) -> None:
    """From the end of a run to the process exit (printing the leaderboard, the interpreter shutting
    down), a Ctrl-C says that everything is stored and exits 130 at once: never a silent -2."""
    if not _AS_PROGRAM:
        return
    import os
    import signal

    def handler(signum, frame):
        try:
            sys.stdout.flush()
        except Exception:
            pass
        err_console.print(f"interrupted after the run finished: every result is stored in {store_path}; "
                          f"robench leaderboard {store_path} prints the leaderboard.", markup=False, highlight=False, soft_wrap=True)
        os._exit(130)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        pass


def _ignore_interrupts() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main() -> None:
    global _AS_PROGRAM
    _AS_PROGRAM = True
    import atexit

    # Registered first, so it runs last: after every other exit handler, only the interpreter's own
    # teardown is left, which would turn a Ctrl-C into a silent death by signal (-2).
    atexit.register(_ignore_interrupts)
    app()


if __name__ == "__main__":
    main()
