"""Reading results back, for reports and scripts: every suite of a store computed into leaderboard
numbers (:func:`load_results`), the stored cells with their per-sample rows (:func:`read_cells`),
and the evaluation slice a suite was run on (:func:`evaluation_data`).
Both only read; the SQL stays in :mod:`robench.store`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import UserInputError
from .metrics import SuiteResults, compute
from .store import Store, iter_stores

if TYPE_CHECKING:
    from .data import EvalData


def load_results(path: str | Path) -> list[SuiteResults]:
    """Every suite of every store under ``path`` (a store file or a folder of runs), and of every
    published export under it (``leaderboard/runs/<suite>/``, :mod:`robench.store_export`)."""
    from .store_export import imported, is_export, iter_exports

    out = []
    stores = [] if is_export(Path(path)) else list(iter_stores(path))
    exports = list(iter_exports(Path(path)))
    if not stores and not exports:
        raise UserInputError(f"no results store found at {path} (expected a results.sqlite file, a folder holding one, "
                             "or a published export with a manifest.json)")
    for p in stores:
        with Store(p, create=False) as store:
            for suite in store.suites():
                out.append(compute(store, suite))
    for folder in exports:
        with imported(folder) as p, Store(p, create=False) as store:
            for suite in store.suites():
                res = compute(store, suite)
                res.source = folder
                out.append(res)
    return out


def read_cells(path: str | Path, suite: str | None = None) -> list[dict]:
    """Every cell stored in the store file ``path`` (only ``suite``'s if given), in stored order: the
    cell's fields (key, model, attack, norm, kind, eps, status, ...) and its per-sample rows under
    ``"samples"`` (idx, label, clean_pred, success, rejected, l0, l1, l2, linf, ...)."""
    with Store(path, create=False) as store:
        return [{**c, "samples": store.samples(c["key"])} for c in store.cells(suite)]


def evaluation_data(suite: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                    plugins: Iterable[str] = ()) -> EvalData:
    """The samples a suite file is evaluated on (its dataset, split, classes, offset and limit),
    as ``robench run`` loads them: ``x``, ``y`` and each sample's ``indices`` and ``sha256``.

    ``data_dir`` defaults as for ``robench run`` ($ROBENCH_DATA, else ~/.cache/robench/data);
    ``plugins`` are extra plugin modules, as ``--plugin`` names them.
    """
    from .data import load_eval_data, resolve_data_dir
    from .plugins import get_registry
    from .suite import load_suite

    registry = get_registry(list(plugins))
    resolved = load_suite(Path(suite), registry)
    return load_eval_data(resolved, registry, resolve_data_dir(data_dir), None)


__all__ = ["evaluation_data", "load_results", "read_cells"]
