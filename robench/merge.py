"""``robench merge``: combine results stores (e.g. the shards of one suite) into one.

Rows present in more than one store are checked for equality (a cell's rows are deterministic, so
two stores that disagree hold results of different code, data or hardware); any disagreement
aborts the whole merge and leaves the destination as it was. Every source run is copied with its
provenance plus where it came from, and each merge adds a run of status ``merged`` listing its
sources.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import RobenchError, StoreError, UserInputError
from .store import Store
from .curves import copy_curves

# Columns that define a cell (must agree), and sample/clean/noise columns that are results (must agree).
CELL_IDENTITY = ("suite", "model", "model_plugin", "attack", "attack_plugin", "norm", "kind", "eps", "source", "needs",
                 "via_surrogate", "config")
SAMPLE_RESULT = ("sha256", "label", "clean_pred", "success", "rejected", "reject_reason", "l0", "l1", "l2", "linf",
                 "forward", "backward")  # not `seconds`: timings differ between machines and runs
STATUS_RANK = {"done": 3, "failed": 2, "running": 1, "pending": 0}
MAX_SHOWN = 5


class MergeConflict(RobenchError):
    """Two stores disagree about the same cell, sample, model or suite."""


@dataclass
class MergeReport:
    into: Path
    runs: int = 0
    cells_new: int = 0
    samples_new: int = 0
    samples_checked: int = 0  # duplicates found equal
    clean_checked: int = 0
    per_source: list[tuple[str, int, int]] = field(default_factory=list)  # (store, cells, samples) read


def samples_digest(store: Store) -> str:
    """A digest of a store's results (every sample row but timings), independent of file layout."""
    return store.samples_digest(SAMPLE_RESULT)


def _open_source(path: Path) -> Store:
    """A source store, validated as a robench store (and its schema version), opened read-only."""
    from .store_files import check_store_file

    check_store_file(path)  # read-only: a foreign file is left untouched
    try:
        return Store(path, create=False, read_only=True)
    except StoreError as exc:
        raise StoreError(f"{path}: cannot read it as a robench results store ({exc})") from None


def _differences(a: dict, b: dict, columns: tuple[str, ...]) -> list[str]:
    return [f"{c} {a[c]!r} vs {b[c]!r}" for c in columns if a[c] != b[c]]


def merge_stores(sources: list[Path], into: Path) -> MergeReport:
    """Merge ``sources`` (store files, or published exports: folders with a manifest.json) into ``into``."""
    import contextlib

    from .store_export import imported, is_export

    with contextlib.ExitStack() as stack:
        # an export is imported into a temporary store first (its files checked against its manifest)
        named = [Path(p) for p in sources]
        if len({p.resolve() for p in named}) != len(named):
            raise UserInputError("robench merge: a store is named twice")
        files = {p: stack.enter_context(imported(p)) if is_export(p) else p for p in named}
        return _merge_files(named, files, Path(into))


def _merge_files(sources: list[Path], files: dict[Path, Path], into: Path) -> MergeReport:
    from .paths import check_output_dir
    from .store_files import StoreLock

    if not sources:
        raise UserInputError("robench merge: give at least one store to merge")
    for p in sources:
        if not files[p].is_file():
            raise UserInputError(f"robench merge: {p} is not a file (nor a published export with a manifest.json)")
        if into.exists() and p.resolve() == into.resolve():
            raise UserInputError(f"robench merge: {p} is also the destination (--into); merge into a new file")
    conns = [(p, _open_source(files[p])) for p in sources]  # validate every source before touching the destination
    existed = into.exists()
    check_output_dir(into.parent)
    report = MergeReport(into)
    try:
        with StoreLock(into):
            dest = Store(into)
            try:
                with dest.transaction():
                    for path, src in conns:
                        _merge_one(dest, path, src, report)
                    _check_one_network_per_model(dest)
                    _record_merge(dest, conns)
            finally:
                dest.close()
    except BaseException:
        if not existed:  # leave no half-made destination behind (the transaction rolled back anyway)
            for suffix in ("", "-wal", "-shm"):
                Path(str(into) + suffix).unlink(missing_ok=True)
        raise
    finally:
        for _, src in conns:
            src.close()
    return report


def _check_one_network_per_model(dest: Store) -> None:
    """Every model of a suite was attacked with one weight file in all the merged runs (their cards'
    SHA-256); two (e.g. a model retrained on another machine) would put two networks under one name."""
    from .provenance import recorded_weights

    for suite in {r["suite"] for r in dest.rows("runs")}:
        for (model, _), shas in recorded_weights(dest.rows("runs", order="id", suite=suite)).items():
            if len(shas) > 1:
                seen = ", ".join(f"{sha[:12]} (run {run})" for sha, run in shas.items())
                raise MergeConflict(f"model {model} of suite {suite}: the stores' runs attacked different weights under one "
                                    f"model ({seen}); merging would mix the results of two networks. Merge runs of one "
                                    "weight file only (docs/zoo.md: the zoo gives every machine the same weights)")


def _merge_one(dest: Store, path: Path, src: Store, report: MergeReport) -> None:
    # suites: one definition per name
    for s in src.rows("suites"):
        have = dest.rows("suites", name=s["name"])
        if not have:
            dest.insert_rows("suites", [s])
        elif have[0]["suite_hash"] != s["suite_hash"]:
            raise MergeConflict(f"{path}: suite {s['name']!r} has hash {s['suite_hash']}, the destination {have[0]['suite_hash']}: "
                                "these are different versions of the suite; merge them into separate stores")

    # runs, with where they came from; a run merged before (same start, suite, host) is not copied twice
    run_ids: dict[int, int] = {}
    for r in src.rows("runs", order="id"):
        prov = json.loads(r["provenance"])
        origin = prov.get("merged_from") or {"store": str(path.resolve()), "run_id": r["id"]}
        same = [row for row in dest.rows("runs", order="id", suite=r["suite"], suite_hash=r["suite_hash"], started=r["started"])
                if json.loads(row["provenance"]).get("host") == prov.get("host")]
        if same:
            run_ids[r["id"]] = same[0]["id"]
            dest.close_running_run(same[0]["id"], r["finished"], r["status"])
            continue
        prov["merged_from"] = origin
        copy = {k: r[k] for k in ("suite", "suite_hash", "started", "finished", "status")}
        run_ids[r["id"]] = dest.insert_rows("runs", [dict(copy, provenance=json.dumps(prov, sort_keys=True))])
        report.runs += 1

    # cells: same key must mean the same cell; keep the most finished status
    cells = src.rows("cells", order="rowid")
    for c in cells:
        have = dest.rows("cells", key=c["key"])
        run_id = run_ids.get(c["run_id"]) if c["run_id"] is not None else None
        if not have:
            dest.insert_rows("cells", [dict(c, run_id=run_id)])
            report.cells_new += 1
            continue
        d = have[0]
        diff = _differences(c, d, CELL_IDENTITY)
        if diff:
            raise MergeConflict(f"{path}: cell {c['key']} ({c['model']} / {c['attack']}) is defined differently in the destination: "
                                + "; ".join(diff))
        if STATUS_RANK.get(c["status"], 0) > STATUS_RANK.get(d["status"], 0):
            dest.update_cell(c["key"], status=c["status"], error=c["error"], records=c["records"], run_id=run_id, updated=c["updated"])
        if c["n_total"] > d["n_total"]:
            dest.update_cell(c["key"], n_total=c["n_total"])

    # samples: duplicates must be equal
    n_samples = 0
    conflicts: list[str] = []
    labels = {c["key"]: f"{c['model']} / {c['attack']}" + (f" @ {c['norm']} {c['eps']:g}" if c["eps"] is not None else "") for c in cells}
    for key in labels:
        rows = src.rows("samples", cell=key)
        n_samples += len(rows)
        have = {r["idx"]: r for r in dest.rows("samples", cell=key)}
        new = []
        for r in rows:
            d = have.get(r["idx"])
            if d is None:
                new.append(r)
                continue
            diff = _differences(r, d, SAMPLE_RESULT)
            if diff:
                conflicts.append(f"cell {labels[key]}, sample {r['idx']}: " + "; ".join(diff))
            else:
                report.samples_checked += 1
        dest.insert_rows("samples", new)
        copy_curves(src, dest, key, [r["idx"] for r in new])  # best-so-far curves (robench.curves) go with their rows
        dest.copy_annotations(src, key, [r["idx"] for r in new])  # and so do certificates and notes
        report.samples_new += len(new)
    if conflicts:
        raise MergeConflict(f"{path}: {len(conflicts)} sample(s) differ from the destination's (values: this store vs destination):\n  "
                            + "\n  ".join(conflicts[:MAX_SHOWN]) + ("\n  ..." if len(conflicts) > MAX_SHOWN else ""))

    # clean predictions: one model version per (suite, model), equal rows
    for r in src.rows("clean"):
        d = dest.rows("clean", suite=r["suite"], model=r["model"], idx=r["idx"])
        if not d:
            dest.insert_rows("clean", [r])
            continue
        diff = _differences(r, d[0], ("model_key", "sha256", "label", "pred"))
        if diff:
            raise MergeConflict(f"{path}: model {r['model']} of suite {r['suite']}, sample {r['idx']}: clean prediction differs from the "
                                f"destination's ({'; '.join(diff)}); were the models trained with different settings or devices?")
        report.clean_checked += 1
    for r in src.rows("noise"):
        d = dest.rows("noise", suite=r["suite"], model=r["model"], model_key=r["model_key"], sigma=r["sigma"], idx=r["idx"])
        if not d:
            dest.insert_rows("noise", [r])
        elif (d[0]["label"], d[0]["pred"]) != (r["label"], r["pred"]):
            raise MergeConflict(f"{path}: noise prediction of model {r['model']} at sigma {r['sigma']:g}, sample {r['idx']} differs "
                                "from the destination's")
    report.per_source.append((str(path), len(cells), n_samples))


def _record_merge(dest: Store, conns: list[tuple[Path, Store]]) -> None:
    """One run of status 'merged' per suite involved: which files, with their digests, went in."""
    suites = sorted({s["name"] for _, src in conns for s in src.rows("suites")})
    listing = [{"store": str(p.resolve()), "samples_digest": samples_digest(src)} for p, src in conns]
    now = time.time()
    for name in suites:
        suite_hash = dest.rows("suites", name=name)[0]["suite_hash"]
        prov = {"merged_from": listing, "robench": __version__, "host": platform.node(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        dest.insert_rows("runs", [{"suite": name, "suite_hash": suite_hash, "started": now, "finished": now, "status": "merged",
                                   "provenance": json.dumps(prov, sort_keys=True)}])
