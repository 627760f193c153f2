"""Reading a results store back in tests, one way everywhere (the store's own SQL schema, read-only)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def snapshot(db_path: Path, columns: str, order: str) -> tuple[list[tuple], int]:
    """``SELECT <columns>`` over every stored sample joined with its cell (``s.`` and ``c.``),
    ordered by ``order``; and how many (cell, idx) pairs are stored more than once. The file must
    pass SQLite's integrity check."""
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(f"SELECT {columns} FROM samples s JOIN cells c ON s.cell=c.key ORDER BY {order}").fetchall()
        dup = db.execute("SELECT COUNT(*) FROM (SELECT cell, idx FROM samples GROUP BY cell, idx HAVING COUNT(*) > 1)").fetchone()[0]
    finally:
        db.close()
    return rows, dup
