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
import math
from dataclasses import dataclass, field
from typing import Iterable

import torch

from .api import Norm
from .store import SampleRow, Store
from .verify import within_eps

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


def suite_curves(store: Store, cells: Iterable[dict]) -> dict[tuple[str, str, str], list[list[list[float]]]]:
    """(model, attack, norm) -> one curve per sample, for the minimal-attack cells (``eps`` None) whose every
    stored sample kept a curve (a cell run without tracking, or a store from before curves, gives none)."""
    if not _has_table(store):
        return {}
    out = {}
    for c in cells:
        if c["eps"] is not None:
            continue
        curves = read_curves(store, c["key"])
        idx = [s["idx"] for s in store.samples(c["key"])]
        if idx and all(i in curves for i in idx):
            out[(c["model"], c["attack"], c["norm"])] = [curves[i] for i in idx]
    return out


def copy_curves(src: Store, dest: Store, cell: str, idxs: Iterable[int]) -> int:
    """Copy the curves of ``cell``'s samples ``idxs`` from ``src`` to ``dest`` (inside the caller's transaction,
    as ``robench merge`` runs); returns how many were copied. A source without curves copies none."""
    have = read_curves(src, cell)
    data = [(cell, i, json.dumps(have[i])) for i in idxs if i in have]
    if data:
        dest.db.execute(DDL)
        dest.db.executemany("INSERT OR REPLACE INTO curves VALUES (?, ?, ?)", data)
    return len(data)


def best_at(curve: list[list[float]], passes: float, *, backward: bool = False, total: bool = False) -> float:
    """The sample's best norm once it had spent ``passes`` forward (or backward, or with ``total`` forward +
    backward) passes; inf if not yet broken."""
    best = math.inf
    for f, b, v in curve:
        if (f + b if total else b if backward else f) > passes:
            break
        best = v
    return best


def strength_at(curves: Iterable[list[list[float]]], passes: float, norm: Norm | str, eps: float | None = None,
                *, backward: bool = False, total: bool = False) -> dict[str, float]:
    """Over samples (one curve each, unbroken ones empty): the median best ``norm`` after ``passes`` passes
    (inf while at most half are broken) and, with ``eps``, the fraction still robust at eps (no adversarial
    within eps yet, by the verifier's tolerance rule)."""
    values = sorted(best_at(c, passes, backward=backward, total=total) for c in curves)
    if not values:
        return {"n": 0, "median_norm": math.nan, **({"robust": math.nan} if eps is not None else {})}
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    out = {"n": len(values), "median_norm": median}
    if eps is not None:
        broken = within_eps(torch.tensor(values, dtype=torch.float64), eps, Norm(norm))
        out["robust"] = float((~broken).double().mean())
    return out


__all__ = ["DDL", "TrackedRow", "best_at", "copy_curves", "suite_curves", "read_curves", "strength_at", "write_curves"]
