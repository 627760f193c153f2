"""Where datasets live on disk, and how files get there (``robench data import``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import DataMissingError, UserInputError

ENV_VAR = "ROBENCH_DATA"
DEFAULT_DIR = Path("~/.cache/robench/data")


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``--data-dir`` if given, else ``$ROBENCH_DATA``, else ``~/.cache/robench/data``."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().resolve()
    return DEFAULT_DIR.expanduser().resolve()


def find_file(data_dir: Path, candidates: list[str], dataset: str) -> Path:
    """The first of ``candidates`` (file names) present in ``data_dir``; else a clear error."""
    for name in candidates:
        path = data_dir / name
        if path.is_file():
            return path
    wanted = " or ".join(str(data_dir / c) for c in candidates)
    raise DataMissingError(
        f"dataset {dataset!r}: no data file found; expected {wanted}.\n"
        f"  Put the file there with:  robench data import PATH/TO/{candidates[0]}\n"
        f"  (or point --data-dir / ${ENV_VAR} at the folder that holds it)"
    )


def import_file(src: str | os.PathLike, data_dir: Path) -> Path:
    """Copy a dataset file into the data dir (refuses to overwrite a different file)."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise UserInputError(f"robench data import: {src} is not a file")
    data_dir.mkdir(parents=True, exist_ok=True)
    dest = data_dir / src.name
    if dest.exists() and dest.resolve() == src.resolve():
        return dest
    tmp = dest.with_suffix(dest.suffix + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)  # atomic: a half-copied file never looks like data
    return dest
