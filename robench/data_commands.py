"""``robench data import | where``: the local dataset files (robench never downloads at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import RobenchError

DataDirOpt = typer.Option(None, "--data-dir", help="Folder with dataset files [default: $ROBENCH_DATA, else ~/.cache/robench/data]")

_console = Console()


def register_cli(app, fail) -> None:
    """``robench data import | where``; ``fail`` reports a RobenchError and exits."""
    data_app = typer.Typer(help="Manage local dataset files (robench never downloads at run time).", no_args_is_help=True,
                           rich_markup_mode=None)
    app.add_typer(data_app, name="data")

    @data_app.command("import")
    def data_import(
        file: Path = typer.Argument(..., help="A dataset file, e.g. cifar10.npz, mnist.npz or cifar-10-python.tar.gz"),
        data_dir: Optional[Path] = DataDirOpt,
    ) -> None:
        """Copy a dataset file into the data folder."""
        from .data import import_file, resolve_data_dir

        try:
            dest = import_file(file, resolve_data_dir(data_dir))
        except RobenchError as exc:
            fail(exc)
        _console.print(f"imported {file} -> {dest}", markup=False, soft_wrap=True)

    @data_app.command("where")
    def data_where(data_dir: Optional[Path] = DataDirOpt) -> None:
        """Print the data folder robench reads, and what is in it."""
        from .data import resolve_data_dir

        d = resolve_data_dir(data_dir)
        _console.print(str(d), markup=False, soft_wrap=True)
        if d.is_dir():
            for p in sorted(d.iterdir()):
                _console.print(f"  {p.name}", markup=False, soft_wrap=True)
