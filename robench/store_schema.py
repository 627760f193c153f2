"""The results store's schema: the SQLite tables a store holds and the version a store records.

The schema changes only additively (a new table, such as ``certificates``, that an older store lacks and
reads as empty); anything else raises :data:`SCHEMA_VERSION`, and :class:`robench.store.Store` refuses
a store of another version.
"""

from .api import Norm

SCHEMA_VERSION = 1

#: The ``samples`` column that holds each norm of a verified adversarial.
NORM_COLUMN = {Norm.L0: "l0", Norm.L1: "l1", Norm.L2: "l2", Norm.Linf: "linf"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    suite TEXT NOT NULL,
    suite_hash TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    provenance TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    model TEXT NOT NULL,
    model_plugin TEXT NOT NULL,
    attack TEXT NOT NULL,
    attack_plugin TEXT NOT NULL,
    norm TEXT NOT NULL,
    kind TEXT NOT NULL,
    eps REAL,
    source TEXT,
    needs TEXT NOT NULL,
    via_surrogate INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL,
    n_total INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    records TEXT NOT NULL DEFAULT '{}',
    run_id INTEGER,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    cell TEXT NOT NULL REFERENCES cells(key),
    idx INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    label INTEGER NOT NULL,
    clean_pred INTEGER NOT NULL,
    success INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    reject_reason TEXT,
    l0 REAL, l1 REAL, l2 REAL, linf REAL,
    forward REAL NOT NULL,
    backward REAL NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (cell, idx)
);
CREATE TABLE IF NOT EXISTS clean (
    suite TEXT NOT NULL,
    model TEXT NOT NULL,
    model_key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    label INTEGER NOT NULL,
    pred INTEGER NOT NULL,
    PRIMARY KEY (suite, model, idx)
);
CREATE TABLE IF NOT EXISTS noise (
    suite TEXT NOT NULL,
    model TEXT NOT NULL,
    model_key TEXT NOT NULL,
    sigma REAL NOT NULL,
    idx INTEGER NOT NULL,
    label INTEGER NOT NULL,
    pred INTEGER NOT NULL,
    PRIMARY KEY (suite, model, model_key, sigma, idx)
);
CREATE TABLE IF NOT EXISTS suites (
    name TEXT PRIMARY KEY,
    suite_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    updated REAL NOT NULL
);
"""

#: Per-sample certificates (Context.certify). Additive: a store written before it has no such table and
#: reads as "no certificates"; a writable store gets it with its first certificate (schema_version unchanged).
CERTIFICATES_DDL = """CREATE TABLE IF NOT EXISTS certificates (
    cell TEXT NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    lower REAL,
    upper REAL,
    PRIMARY KEY (cell, idx)
)"""

#: Per-sample notes (Context.note), e.g. which AutoAttack component broke a sample. Additive, as certificates.
NOTES_DDL = """CREATE TABLE IF NOT EXISTS sample_notes (
    cell TEXT NOT NULL,
    idx INTEGER NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (cell, idx)
)"""

#: The tables whose rows merge and the export copy (robench.merge, robench.store_export).
COPY_TABLES = ("suites", "runs", "cells", "samples", "clean", "noise")
