"""Best-so-far curves in the results store: one JSON list per attacked sample, in the table ``curves``.

A curve is the list of ``[forward, backward, norm]`` points at which the sample's best adversarial
improved while its attack ran (see :mod:`robench.budget`): ``forward``/``backward`` are the passes that
sample had spent, ``norm`` the best norm so far in the cell's norm; its last point is the stored result.
A sample the attack did not break has an empty curve.

Schema: the table is additive (stores written before it have none and read as "no curves"); a
writable store gets it at its first curve, so the store's ``schema_version`` is unchanged and older
robench versions read such stores as before (they ignore the table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

from .store import SampleRow, Store

DDL = """CREATE TABLE IF NOT EXISTS curves (
    cell TEXT NOT NULL,
    idx INTEGER NOT NULL,
    points TEXT NOT NULL,
    PRIMARY KEY (cell, idx)
)"""


@dataclass
class TrackedRow(SampleRow):
    """A sample row with the best-so-far curve the harness tracked for it."""

    curve: list[list[float]] = field(default_factory=list)


def _has_table(store: Store) -> bool:
    return store.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='curves'").fetchone() is not None


def write_curves(store: Store, cell: str, rows: Iterable[SampleRow]) -> int:
    """Store the curves of ``rows`` that carry one (:class:`TrackedRow`); returns how many were written."""
    data = [(cell, r.idx, json.dumps(r.curve)) for r in rows if isinstance(r, TrackedRow)]
    if not data:
        return 0
    with store.transaction():
        store.db.execute(DDL)
        store.db.executemany("INSERT OR REPLACE INTO curves VALUES (?, ?, ?)", data)
    return len(data)


def read_curves(store: Store, cell: str) -> dict[int, list[list[float]]]:
    """idx -> curve for one cell ({} for a store without curves)."""
    if not _has_table(store):
        return {}
    return {int(i): json.loads(p) for i, p in store.db.execute("SELECT idx, points FROM curves WHERE cell=? ORDER BY idx", (cell,))}


__all__ = ["DDL", "TrackedRow", "read_curves", "write_curves"]
