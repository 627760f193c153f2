"""The results store: one SQLite file (stdlib sqlite3, WAL), written one transaction per batch.

Tables: ``runs`` (provenance of each invocation), ``cells`` (one model x attack x eps), ``samples``
(one row per cell and sample), ``clean`` (each model's clean prediction per sample) and ``noise``
(predictions under Gaussian noise). A killed run loses at most the batch in flight; a rerun skips
what is stored. :class:`StoreLock` keeps one writer per store; :func:`check_store_file` refuses a
file that is not a robench store before anything opens it. The tables' definitions and the schema
version are in :mod:`robench.store_schema`.
"""

from __future__ import annotations

import json
import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import StoreError
from .store_files import StoreLock, check_store_file  # noqa: F401  (the store's file checks, re-exported)
from .store_schema import CERTIFICATES_DDL, NOTES_DDL, SCHEMA, SCHEMA_VERSION  # noqa: F401  (re-exported)
from .store_schema import COPY_TABLES as _COPY_TABLES


@dataclass
class SampleRow:
    idx: int
    sha256: str
    label: int
    clean_pred: int
    success: bool
    rejected: bool
    reject_reason: str | None
    l0: float | None
    l1: float | None
    l2: float | None
    linf: float | None
    forward: float
    backward: float
    seconds: float
    #: (status, lower, upper) a solver or verifier certified for this sample (robench.cell checks it); None: none
    certificate: tuple[str, float | None, float | None] | None = None
    #: what the attack said about this sample (Context.note), e.g. "broken by apgd-t"; None: nothing
    note: str | None = None




def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes: ``mode=ro``; ``immutable=1`` where SQLite cannot even create the
    shared-memory file a WAL store needs (a read-only file system)."""
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=60, isolation_level=None)


def _nan_to_none(v):
    return None if v is None or v != v else float(v)


class Store:
    """A robench results store; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"no results store at {self.path}")
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the output folder {self.path.parent}: {exc}") from None
        # A store that cannot be written (a read-only file system, or permissions) can still be read:
        # it is opened read-only instead of failing as "not a robench results store".
        self.read_only = read_only or (not create and not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)))
        try:
            self.db = _open_read_only(self.path) if self.read_only else sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open it ({exc})") from None
        try:
            self.db.execute("PRAGMA busy_timeout=60000")
            if self.read_only and not self.db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                raise StoreError(f"{self.path} is an empty file on a read-only file system, not a robench results store")
            self._check_or_init()  # before WAL: a foreign SQLite file must be left untouched
            if not self.read_only:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path} is not a robench results store ({exc})") from None
        except StoreError:
            self.db.close()
            raise

    def _check_or_init(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite file but not a robench results store (tables: {sorted(tables)})")
        if "meta" in tables:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None or int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: unsupported store schema version {row and row[0]} (this robench reads {SCHEMA_VERSION})")
            return
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    # -- plumbing ---------------------------------------------------------------------------
    def transaction(self):
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------------
    def start_run(self, suite: str, suite_hash: str, provenance: dict[str, Any]) -> int:
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO runs (suite, suite_hash, started, status, provenance) VALUES (?, ?, ?, 'running', ?)",
                (suite, suite_hash, time.time(), json.dumps(provenance, sort_keys=True)),
            )
        return int(cur.lastrowid)

    def add_run_provenance(self, run_id: int, key: str, value: Any) -> None:
        """Set ``key`` of a run's provenance JSON to ``value`` (what is known only once the run is
        under way, e.g. the weights each model used)."""
        with self.transaction():
            row = self.db.execute("SELECT provenance FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: no run {run_id} to add provenance to")
            prov = json.loads(row[0])
            prov[key] = value
            self.db.execute("UPDATE runs SET provenance=? WHERE id=?", (json.dumps(prov, sort_keys=True), run_id))

    def finish_run(self, run_id: int, status: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE runs SET finished=?, status=? WHERE id=?", (time.time(), status, run_id))

    def save_suite(self, name: str, suite_hash: str, config: dict) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO suites VALUES (?, ?, ?, ?)",
                (name, suite_hash, json.dumps(config, sort_keys=True), time.time()),
            )

    def suites(self) -> dict[str, dict]:
        return {r[0]: json.loads(r[1]) for r in self.db.execute("SELECT name, config FROM suites ORDER BY name")}

    def runs(self, suite: str | None = None) -> list[dict]:
        q = "SELECT id, suite, suite_hash, started, finished, status, provenance FROM runs"
        rows = self.db.execute(q + (" WHERE suite=?" if suite else "") + " ORDER BY id", (suite,) if suite else ())
        return [
            dict(id=r[0], suite=r[1], suite_hash=r[2], started=r[3], finished=r[4], status=r[5], provenance=json.loads(r[6]))
            for r in rows
        ]

    # -- cells ------------------------------------------------------------------------------
    def ensure_cell(self, key: str, run_id: int, **fields: Any) -> str:
        """Create the cell if new; return its status ('pending', 'running', 'done', 'failed')."""
        with self.transaction():
            row = self.db.execute("SELECT status FROM cells WHERE key=?", (key,)).fetchone()
            if row is not None:
                return row[0]
            cols = ["key", "run_id", "status", "updated"] + list(fields)
            vals = [key, run_id, "pending", time.time()] + [
                json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for v in fields.values()
            ]
            self.db.execute(f"INSERT INTO cells ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
        return "pending"

    def set_cell_status(self, key: str, status: str, *, error: str | None = None, run_id: int | None = None,
                        records: dict | None = None) -> None:
        with self.transaction():
            if records is not None:
                records = self._with_note_counts(key, records)
            self.db.execute(
                "UPDATE cells SET status=?, error=?, updated=?, run_id=COALESCE(?, run_id), records=COALESCE(?, records) WHERE key=?",
                (status, error, time.time(), run_id, json.dumps(records, sort_keys=True) if records is not None else None, key),
            )

    def cells(self, suite: str | None = None) -> list[dict]:
        cur = self.db.execute("SELECT * FROM cells" + (" WHERE suite=?" if suite else "") + " ORDER BY rowid", (suite,) if suite else ())
        names = [d[0] for d in cur.description]
        out = []
        for r in cur:
            row = dict(zip(names, r))
            row["config"] = json.loads(row["config"])
            row["needs"] = json.loads(row["needs"])
            row["records"] = json.loads(row["records"] or "{}")
            out.append(row)
        return out

    def done_indices(self, cell: str) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT idx FROM samples WHERE cell=?", (cell,))}

    def write_samples(self, cell: str, rows: Iterable[SampleRow], records: dict | None = None) -> None:
        """One batch, one transaction: either all its rows are stored or none."""
        rows = list(rows)
        with self.transaction():
            self.db.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (cell, r.idx, r.sha256, r.label, r.clean_pred, int(r.success), int(r.rejected), r.reject_reason,
                     _nan_to_none(r.l0), _nan_to_none(r.l1), _nan_to_none(r.l2), _nan_to_none(r.linf),
                     r.forward, r.backward, r.seconds)
                    for r in rows
                ],
            )
            certs = [(cell, r.idx, *r.certificate) for r in rows if getattr(r, "certificate", None) is not None]
            if certs:
                self.db.execute(CERTIFICATES_DDL)
                self.db.executemany("INSERT OR REPLACE INTO certificates VALUES (?, ?, ?, ?, ?)",
                                    [(c, i, st, _nan_to_none(lo), _nan_to_none(up)) for c, i, st, lo, up in certs])
            notes = [(cell, r.idx, r.note) for r in rows if getattr(r, "note", None)]
            if notes:
                self.db.execute(NOTES_DDL)
                self.db.executemany("INSERT OR REPLACE INTO sample_notes VALUES (?, ?, ?)", notes)
                records = self._with_note_counts(cell, records or {})
            if records:
                self.db.execute("UPDATE cells SET records=?, updated=? WHERE key=?", (json.dumps(records, sort_keys=True), time.time(), cell))

    def copy_annotations(self, src: Store, cell: str, idxs: Iterable[int]) -> int:
        """Copy the certificates and notes of ``cell``'s samples ``idxs`` from ``src`` (``robench merge``, with
        their rows, inside its transaction); returns how many were copied."""
        wanted = set(idxs)
        certs = [(cell, i, c["status"], c["lower"], c["upper"]) for i, c in src.certificates(cell).items() if i in wanted]
        if certs:
            self.db.execute(CERTIFICATES_DDL)
            self.db.executemany("INSERT OR REPLACE INTO certificates VALUES (?, ?, ?, ?, ?)", certs)
        notes = [(cell, i, text) for i, text in src.notes(cell).items() if i in wanted]
        if notes:
            self.db.execute(NOTES_DDL)
            self.db.executemany("INSERT OR REPLACE INTO sample_notes VALUES (?, ?, ?)", notes)
        return len(certs) + len(notes)

    def certificates(self, cell: str) -> dict[int, dict]:
        """idx -> {status, lower, upper} for one cell ({} for a store or cell without certificates)."""
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='certificates'").fetchone() is None:
            return {}
        cur = self.db.execute("SELECT idx, status, lower, upper FROM certificates WHERE cell=? ORDER BY idx", (cell,))
        return {int(i): {"status": st, "lower": lo, "upper": up} for i, st, lo, up in cur}

    def _with_note_counts(self, cell: str, records: dict) -> dict:
        """``records`` plus, per note, the samples the harness verified as broken (all batches so far)."""
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sample_notes'").fetchone() is None:
            return records
        return {**records, **{f"{note} (verified)": float(k) for note, k in self.db.execute(
            "SELECT n.note, COUNT(*) FROM sample_notes n JOIN samples s ON s.cell = n.cell AND s.idx = n.idx "
            "WHERE n.cell = ? AND s.success = 1 GROUP BY n.note", (cell,))}}

    def notes(self, cell: str) -> dict[int, str]:
        """idx -> the attack's note on that sample, for one cell ({} for a store or cell without notes)."""
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sample_notes'").fetchone() is None:
            return {}
        return {int(i): n for i, n in self.db.execute("SELECT idx, note FROM sample_notes WHERE cell=? ORDER BY idx", (cell,))}

    def samples(self, cell: str) -> list[dict]:
        cur = self.db.execute("SELECT * FROM samples WHERE cell=? ORDER BY idx", (cell,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    # -- clean and noise predictions --------------------------------------------------------
    def clean_indices(self, suite: str, model: str, model_key: str) -> set[int]:
        return {r[0] for r in self.db.execute(
            "SELECT idx FROM clean WHERE suite=? AND model=? AND model_key=?", (suite, model, model_key))}

    def write_clean(self, suite: str, model: str, model_key: str, rows: list[tuple[int, str, int, int]]) -> None:
        with self.transaction():
            # Rows of another version of this model are stale; rows of this one are kept (a smaller
            # --limit must not forget samples stored by an earlier, larger run).
            self.db.execute("DELETE FROM clean WHERE suite=? AND model=? AND model_key<>?", (suite, model, model_key))
            self.db.executemany(
                "INSERT OR REPLACE INTO clean VALUES (?, ?, ?, ?, ?, ?, ?)", [(suite, model, model_key, *r) for r in rows]
            )

    def clean(self, suite: str) -> dict[str, dict[int, tuple[int, int, str]]]:
        """model -> idx -> (label, pred, sha256)."""
        out: dict[str, dict[int, tuple[int, int, str]]] = {}
        for model, idx, label, pred, sha in self.db.execute(
            "SELECT model, idx, label, pred, sha256 FROM clean WHERE suite=? ORDER BY idx", (suite,)
        ):
            out.setdefault(model, {})[idx] = (label, pred, sha)
        return out

    def clean_model_keys(self, suite: str) -> dict[str, str]:
        """model -> the model key (version) its stored clean predictions belong to."""
        return dict(self.db.execute("SELECT DISTINCT model, model_key FROM clean WHERE suite=? ORDER BY model", (suite,)))

    def noise_done(self, suite: str, model: str, model_key: str, sigma: float) -> bool:
        return self.db.execute(
            "SELECT 1 FROM noise WHERE suite=? AND model=? AND model_key=? AND sigma=? LIMIT 1", (suite, model, model_key, sigma)
        ).fetchone() is not None

    def write_noise(self, suite: str, model: str, model_key: str, sigma: float, rows: list[tuple[int, int, int]]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO noise VALUES (?, ?, ?, ?, ?, ?, ?)", [(suite, model, model_key, sigma, *r) for r in rows]
            )

    def noise(self, suite: str) -> dict[str, dict[float, tuple[int, int]]]:
        """model -> sigma -> (correct, total)."""
        out: dict[str, dict[float, tuple[int, int]]] = {}
        for model, sigma, correct, total in self.db.execute(
            "SELECT model, sigma, SUM(label = pred), COUNT(*) FROM noise WHERE suite=? GROUP BY model, sigma ORDER BY model, sigma", (suite,)
        ):
            out.setdefault(model, {})[sigma] = (int(correct), int(total))
        return out

    # -- rows as stored, for copying between stores (robench.merge); call inside transaction() ----
    def _columns(self, table: str, names: Iterable[str], also: tuple[str, ...] = ()) -> list[str]:
        if table not in _COPY_TABLES:
            raise StoreError(f"{self.path}: no table {table!r} to copy rows of (tables: {', '.join(_COPY_TABLES)})")
        known = {r[0] for r in self.db.execute("SELECT name FROM pragma_table_info(?)", (table,))} | set(also)
        names = list(names)
        if not known.issuperset(names):
            raise StoreError(f"{self.path}: no columns {sorted(set(names) - known)} in a table {table!r} of the store")
        return names

    def rows(self, table: str, order: str | None = None, **where: Any) -> list[dict]:
        """Rows of ``table`` as stored (JSON columns left as text), those whose columns equal ``where``."""
        self._columns(table, list(where) + ([order] if order else []), also=("rowid",))
        cur = self.db.execute(f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(f"{c}=?" for c in where) if where else "")
                              + (f" ORDER BY {order}" if order else ""), tuple(where.values()))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def insert_rows(self, table: str, rows: list[dict]) -> int | None:
        """Insert rows as stored (all with the same columns); the rowid of the last one."""
        if not rows:
            return None
        cols = self._columns(table, rows[0])
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        if len(rows) == 1:
            return int(self.db.execute(sql, [rows[0][c] for c in cols]).lastrowid)
        self.db.executemany(sql, [[r[c] for c in cols] for r in rows])
        return None

    def update_cell(self, key: str, **values: Any) -> None:
        cols = self._columns("cells", values)
        self.db.execute(f"UPDATE cells SET {', '.join(f'{c}=?' for c in cols)} WHERE key=?", (*values.values(), key))

    def close_running_run(self, run_id: int, finished: float | None, status: str) -> None:
        """A run still marked 'running' takes the end another store recorded for it."""
        self.db.execute("UPDATE runs SET finished=COALESCE(?, finished), status=? WHERE id=? AND status='running'",
                        (finished, status, run_id))

    def samples_digest(self, columns: Iterable[str]) -> str:
        """A digest of the store's sample rows (``columns`` of each, by cell and index), independent of file layout."""
        h = hashlib.sha256()
        for row in self.db.execute(f"SELECT cell, idx, {', '.join(self._columns('samples', columns))} FROM samples ORDER BY cell, idx"):
            h.update(repr(row).encode())
        return h.hexdigest()[:20]


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
        return False


def iter_stores(path: str | Path) -> Iterator[Path]:
    """A store file, or every ``results.sqlite`` under a folder."""
    p = Path(path)
    if p.is_file():
        yield p
    elif p.is_dir():
        yield from sorted(p.rglob("results.sqlite"))
