"""A published run's per-sample results as text files: one suite of a results store exported to a
folder (``leaderboard/runs/<suite>/``) and imported back into a store.

The folder holds ``manifest.json`` (format, robench and schema version, the suite and its hash, per
table its columns, row count and SHA-256, and per model its key and the SHA-256 of its weights from
the model cards) and one ``<table>.jsonl`` per store table: a JSON array per row, in a fixed order
(cells and runs as stored, samples by cell and index, ...), so an unchanged store exports identical
bytes and a grown one shows as added lines. JSON keeps integers, floats (exactly: shortest repr),
NULL and text apart; git compresses the text itself, so the files stay plain.

``import_export`` rebuilds a store that holds exactly the exported rows, so the leaderboard computed
from it equals the published one byte for byte, and ``robench merge`` can take an export as a source
(add an attack or more samples without rerunning the rest).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Iterator

from . import __version__
from .errors import StoreError, UserInputError
from .store import _COPY_TABLES, SCHEMA_VERSION, Store

FORMAT = "robench-store-export"
VERSION = 1
MANIFEST = "manifest.json"
#: tables whose line order is the stored one (the leaderboard lists cells in that order); others: by primary key
AS_STORED = {"runs": "id", "cells": "rowid"}


def _additive_ddl() -> dict[str, str]:
    """Tables a store gains at their first write (not in the base schema), by name: their DDL."""
    from .curves import DDL as CURVES_DDL
    from .store import CERTIFICATES_DDL, NOTES_DDL

    return {"curves": CURVES_DDL, "certificates": CERTIFICATES_DDL, "sample_notes": NOTES_DDL}


def is_export(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`export_suite`."""
    m = Path(path) / MANIFEST
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("format") == FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def iter_exports(path: Path) -> Iterator[Path]:
    """An export folder, or every export folder under ``path``."""
    p = Path(path)
    if is_export(p):
        yield p
    elif p.is_dir():
        yield from (m.parent for m in sorted(p.rglob(MANIFEST)) if is_export(m.parent))


def _tables(store: Store) -> list[str]:
    names = store.db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
    return [r[0] for r in names if r[0] != "meta" and not r[0].startswith("sqlite_")]  # sqlite_sequence: SQLite's own


def _select(store: Store, table: str, suite: str) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of ``table`` that belong to ``suite``, in the export's order."""
    info = list(store.db.execute("SELECT name, pk FROM pragma_table_info(?)", (table,)))
    names = [n for n, _ in info]
    if table == "suites":
        where = "name=?"
    elif "suite" in names:
        where = "suite=?"
    elif "cell" in names:
        where = "cell IN (SELECT key FROM cells WHERE suite=?)"
    else:
        raise StoreError(f"{store.path}: table {table!r} belongs to no suite; this robench cannot export it")
    pk = [n for n, k in sorted(info, key=lambda t: t[1]) if k]
    order = AS_STORED.get(table) or ", ".join(pk) or "rowid"
    cur = store.db.execute(f'SELECT * FROM "{table}" WHERE {where} ORDER BY {order}', (suite,))
    return [d[0] for d in cur.description], [list(r) for r in cur]


def _models(runs: list[dict]) -> dict[str, dict]:
    """Per model, the card the latest run recorded (key, SHA-256 of the weights, where they came from)."""
    from .provenance import run_cards

    out: dict[str, dict] = {}
    for _, name, card in run_cards(runs):  # by id: later runs win
        out[name] = {k: card.get(k) for k in ("key", "weights_sha256", "weights_origin", "weights_file") if card.get(k) is not None}
    return dict(sorted(out.items()))


def _sha_of_clean(cells: list[list], cell_cols: list[str], clean: list[list], clean_cols: list[str]) -> dict[tuple[str, int], str]:
    """(cell key, idx) -> the SHA-256 the clean table holds for that cell's model and sample."""
    model_of = {c[cell_cols.index("key")]: c[cell_cols.index("model")] for c in cells}
    sha = {(r[clean_cols.index("model")], r[clean_cols.index("idx")]): r[clean_cols.index("sha256")] for r in clean}
    return {(key, idx): h for key, m in model_of.items() for (model, idx), h in sha.items() if model == m}


def _drop_clean_sha(store: Store, suite: str, columns: list[str], rows: list[list]) -> list[list]:
    """A sample's SHA-256 is the clean table's for the same model and sample (random hex: most of a
    compressed row): written as null where equal, and filled back in by :func:`import_export`."""
    sha = _sha_of_clean(*_select(store, "cells", suite)[::-1], *_select(store, "clean", suite)[::-1])
    k, c, i = columns.index("sha256"), columns.index("cell"), columns.index("idx")
    return [r[:k] + [None] + r[k + 1:] if sha.get((r[c], r[i])) == r[k] else r for r in rows]


def export_suite(store: Store, suite: str, folder: Path) -> list[Path]:
    """Write ``suite``'s rows of ``store`` into ``folder`` (created; files of an earlier export replaced)."""
    if suite not in store.suites():
        raise UserInputError(f"{store.path}: no suite {suite!r} to export")
    folder.mkdir(parents=True, exist_ok=True)
    tables, written = {}, []
    for old in folder.glob("*.jsonl"):  # tables an earlier export had and this store lacks
        old.unlink()
    for table in _tables(store):
        columns, rows = _select(store, table, suite)
        if table == "samples":
            rows = _drop_clean_sha(store, suite, columns, rows)
        path = folder / f"{table}.jsonl"
        text = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in rows)
        path.write_text(text, encoding="utf-8")
        written.append(path)
        tables[table] = {"columns": columns, "rows": len(rows), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    suite_row = store.rows("suites", name=suite)[0]
    manifest = {"format": FORMAT, "version": VERSION, "schema_version": SCHEMA_VERSION, "robench": __version__,
                "suite": suite, "suite_hash": suite_row["suite_hash"], "models": _models(store.rows("runs", order="id", suite=suite)),
                "tables": tables}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return [folder / MANIFEST] + written


def read_manifest(folder: Path) -> dict:
    m = Path(folder) / MANIFEST
    try:
        manifest = json.loads(m.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{m}: cannot read the export's manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{m} is not a robench store export (format {FORMAT!r})")
    if manifest.get("version") != VERSION or manifest.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{m}: export version {manifest.get('version')} of store schema {manifest.get('schema_version')}; "
                         f"this robench reads version {VERSION} of schema {SCHEMA_VERSION}")
    return manifest


def import_export(folder: Path, into: Path) -> Path:
    """A new store at ``into`` holding exactly the rows of the export ``folder`` (each file checked
    against the SHA-256 and row count in its manifest first)."""
    folder, into = Path(folder), Path(into)
    manifest = read_manifest(folder)
    if into.exists():
        raise UserInputError(f"{into} exists; import an export into a new store (then robench merge it into yours)")
    data: dict[str, tuple[list[str], list[list]]] = {}
    additive = _additive_ddl()
    for table, info in manifest.get("tables", {}).items():
        if table not in _COPY_TABLES and table not in additive:
            raise StoreError(f"{folder / MANIFEST}: table {table!r} is unknown to this robench (written by a newer one?)")
        path = folder / f"{table}.jsonl"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        if hashlib.sha256(text.encode()).hexdigest() != info.get("sha256"):
            raise StoreError(f"{path} does not match the SHA-256 in {MANIFEST}: the export was changed or damaged")
        columns = info["columns"]
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise StoreError(f"{path}, line {n}: not JSON ({exc})") from None
            if not isinstance(row, list) or len(row) != len(columns):
                raise StoreError(f"{path}, line {n}: expected a list of {len(columns)} values ({', '.join(columns)})")
            rows.append(row)
        if len(rows) != info.get("rows"):
            raise StoreError(f"{path}: {len(rows)} rows, the manifest says {info.get('rows')}")
        data[table] = (columns, rows)
    if "samples" in data and "cells" in data and "clean" in data:  # the SHA-256 left out as the clean table's
        columns, rows = data["samples"]
        sha = _sha_of_clean(data["cells"][1], data["cells"][0], data["clean"][1], data["clean"][0])
        k, c, i = columns.index("sha256"), columns.index("cell"), columns.index("idx")
        for r in rows:
            if r[k] is None:
                r[k] = sha.get((r[c], r[i]))
    store = Store(into)
    try:
        with store.transaction():
            for table, (columns, rows) in data.items():
                if table in additive:  # outside the row-copy methods: create it, then insert named columns
                    store.db.execute(additive[table])
                    known = {r[0] for r in store.db.execute("SELECT name FROM pragma_table_info(?)", (table,))}
                    if set(columns) - known:
                        raise StoreError(f"{folder / (table + '.jsonl')}: columns {sorted(set(columns) - known)} unknown to this robench")
                    store.db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
                    continue
                store.insert_rows(table, [dict(zip(columns, r)) for r in rows])
    except BaseException:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(into) + suffix).unlink(missing_ok=True)
        raise
    store.close()
    return into


@contextlib.contextmanager
def imported(folder: Path) -> Iterator[Path]:
    """The export ``folder`` as a temporary store file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="robench-import-") as tmp:
        yield import_export(folder, Path(tmp) / "results.sqlite")
