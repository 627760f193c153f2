"""Filesystem checks before a run: the output folder is usable, and plugin path parameters stay
inside the data dir (a suite cannot point a plugin at files elsewhere on the machine)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UserInputError
from .suite import Resolved

MIN_FREE_ENV = "ROBENCH_MIN_FREE_MB"


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work when results could not be stored: the folder must be creatable and
    writable (tested by writing, since permission bits do not tell for root or read-only mounts) and
    its disk must have room ($ROBENCH_MIN_FREE_MB, default 50)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"output folder {out_dir}: cannot create it ({exc.strerror or exc})") from None
    probe = out_dir / f".robench-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"robench")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise UserInputError(f"output folder {out_dir}: not writable ({exc.strerror or exc})") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    try:
        need = float(os.environ.get(MIN_FREE_ENV, "50"))
    except ValueError:
        raise UserInputError(f"${MIN_FREE_ENV} must be a number of MiB, not {os.environ[MIN_FREE_ENV]!r}") from None
    free = shutil.disk_usage(out_dir).free / 2**20
    if free < need:
        raise UserInputError(f"output folder {out_dir}: only {free:.0f} MiB free on its disk, robench wants at least {need:g} MiB "
                             f"(free some space, use another --out, or lower ${MIN_FREE_ENV})")


def confine_paths(resolved: Resolved, data_dir: Path, allow: tuple[Path, ...] = ()) -> None:
    """Plugin parameters that are paths must stay inside the data dir (suite paths: inside the
    suite's folder or the data dir); ``allow`` adds folders the user named (``--allow-dir``).

    A parameter is a path when its annotation is ``pathlib.Path`` (or a list / optional of one) or
    its Field carries ``json_schema_extra={"robench_path": True}``. Relative values are taken from
    the data dir, those of fields marked ``{"robench_path": "suite"}`` from the suite file's folder
    (``robench.content``); every value is resolved (``..`` and symlinks included) before the check,
    so a suite cannot point a plugin at files elsewhere on the machine.
    """
    from .content import SUITE, path_fields, suite_folder

    base = Path(data_dir).expanduser().resolve()
    extra_roots = [Path(a).expanduser().resolve() for a in allow]
    folder = suite_folder(resolved)
    s = resolved.suite
    entries = [("dataset.params", resolved.dataset_params)]
    entries += [(f"models[{i}].params", resolved.model_params.get(m.name)) for i, m in enumerate(s.models)]
    entries += [(f"attacks[{i}].params", resolved.attack_params.get(a.name)) for i, a in enumerate(s.attacks)]
    for loc, params in entries:
        if params is None:
            continue
        for name, kind, values in path_fields(params):
            roots = ([folder] if kind == SUITE and folder is not None else []) + [base] + extra_roots
            for v in values:
                p = Path(v).expanduser()
                full = (p if p.is_absolute() else base / p).resolve()
                if not any(full.is_relative_to(r) for r in roots):
                    if kind == SUITE:
                        where = " or ".join(str(r) for r in roots)
                        raise UserInputError(f"{loc}.{name}: {str(v)!r} resolves to {full}, outside the suite's folder and the data dir "
                                             f"({where}); put the file beside the suite, or allow its folder with --allow-dir")
                    raise UserInputError(f"{loc}.{name}: {str(v)!r} resolves to {full}, outside the data dir {base}; "
                                         "put the file under the data dir (or point --data-dir / $ROBENCH_DATA at its folder)")
