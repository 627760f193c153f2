"""Files named by plugin parameters: anchoring them to the suite's folder, and hashing their bytes.

Two kinds of path parameters exist (see :func:`is_path_field`):

* *data paths* (the default): relative values are taken from the data dir, and every value must
  stay inside it (``robench.paths.confine_paths``);
* *suite paths*, marked ``json_schema_extra={"robench_path": "suite"}`` (e.g. the weights file of
  the ``torch-file`` loader): relative values are taken from the folder of the suite file, the
  file must exist when the suite is validated, and the value must stay inside the suite's folder
  or the data dir.

Content, not names, decides what is reused: the SHA-256 of every existing file a model's
parameters name (plus the files its plugin lists in :meth:`robench.Model.content_files`, e.g. an
architecture's source) enters the model key, and with it every cell key. Overwriting a weights
file therefore gives new cells; the results of the old bytes are not shown as current.
"""

from __future__ import annotations

import hashlib
import os
import typing
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

SUITE = "suite"


def suite_folder(resolved: Any) -> Path | None:
    """The folder of a resolved suite's file (None for a suite built in memory)."""
    path = getattr(resolved, "path", None)
    if not path or str(path).startswith("<"):
        return None
    return Path(path).resolve().parent


def is_path_field(annotation: Any) -> bool:
    """``pathlib.Path`` (or an optional / list of one) anywhere in the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, os.PathLike):
        return True
    return any(is_path_field(a) for a in typing.get_args(annotation))


def _extra(field) -> dict:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def path_fields(params: BaseModel) -> Iterator[tuple[str, str | bool, list[Any]]]:
    """(field name, kind, values) of each path parameter; kind is "suite" or "data"."""
    for name, f in type(params).model_fields.items():
        extra = _extra(f)
        if not (is_path_field(f.annotation) or extra.get("robench_path")):
            continue
        value = getattr(params, name)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        yield name, SUITE if extra.get("robench_path") == SUITE else "data", [v for v in values if v is not None]


def anchor(params: BaseModel, base: Path) -> BaseModel:
    """Suite paths made absolute against ``base`` (the suite's folder); other fields unchanged."""
    updates: dict[str, Any] = {}
    for name, kind, values in path_fields(params):
        if kind != SUITE:
            continue
        fixed = [v if Path(v).expanduser().is_absolute() else base / Path(v) for v in values]
        fixed = [Path(v).expanduser() for v in fixed]
        value = getattr(params, name)
        updates[name] = fixed if isinstance(value, (list, tuple)) else fixed[0] if fixed else value
    if not updates:
        return params
    return params.model_copy(update=updates)


def missing(params: BaseModel) -> list[tuple[str, Path]]:
    """Suite paths (already anchored) that do not exist: (field name, path)."""
    out = []
    for name, kind, values in path_fields(params):
        if kind == SUITE:
            out += [(name, Path(v)) for v in values if not Path(v).exists()]
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _digest(path: Path) -> str:
    """A file's SHA-256; a folder's: the hash of its files' relative names and hashes."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def key_view(params: BaseModel, base: Path | None) -> dict[str, Any]:
    """``params.model_dump(mode="json")`` with suite paths written relative to ``base`` where they
    lie inside it, so a key does not depend on where the suite's folder is on this machine."""
    dump = params.model_dump(mode="json")
    if base is None:
        return dump
    root = Path(base).resolve()
    for name, kind, values in path_fields(params):
        if kind != SUITE:
            continue
        rel = []
        for v in values:
            full = Path(v).expanduser().resolve()
            rel.append(full.relative_to(root).as_posix() if full.is_relative_to(root) else str(v))
        dump[name] = rel if isinstance(dump[name], list) else rel[0] if rel else dump[name]
    return dump


def content_digests(params: BaseModel, factory: type | None = None, data_dir: Path | None = None,
                    base: Path | None = None) -> dict[str, str]:
    """``{field or file: sha256}`` of the files that determine a plugin instance.

    Path parameters that name an existing file or folder (suite paths as anchored; data paths
    against ``data_dir`` when given), plus ``factory.content_files(params)``. Empty when there
    are none, so keys of plugins without files do not change.
    """
    out: dict[str, str] = {}
    for name, kind, values in path_fields(params):
        for i, v in enumerate(values):
            p = Path(v).expanduser()
            if not p.is_absolute() and kind != SUITE and data_dir is not None:
                p = Path(data_dir) / p
            if p.exists():
                out[name if len(values) == 1 else f"{name}[{i}]"] = _digest(p)
    hook = getattr(factory, "content_files", None)
    if hook is not None:
        for p in hook(params) or []:
            p = Path(p)
            if p.exists():
                full = p.resolve()
                shown = full.relative_to(Path(base).resolve()).as_posix() if base is not None and full.is_relative_to(Path(base).resolve()) else p.name
                out[f"file:{shown}"] = _digest(p)
    return out
