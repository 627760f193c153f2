"""Suite -> cells (model x attack x eps), the key of each cell, and shards of the plan.

A cell is the unit of resume and of failure isolation: its key hashes everything that determines
its results (dataset slice, model key, attack config, eps, seed, plugin versions, batch size),
but not ``limit``, so a larger ``--limit`` extends a run instead of restarting it.
"""

from __future__ import annotations

from typing import Any

from .api import Context, construct
from .content import SUITE, content_digests, key_view, path_fields, suite_folder
from .errors import UserInputError
from .plugins import Registry, plugin_version
from .seeds import stable_hash
from .suite import Resolved


def plan_cells(resolved: Resolved, registry: Registry) -> list[dict[str, Any]]:
    """Every cell of the suite, in run order: dicts of model and attack entry, spec, norm, eps, kind."""
    suite = resolved.suite
    cells = []
    for m in suite.models:
        for a in suite.attacks:
            if a.models is not None and m.name not in a.models:
                continue
            spec = registry.get("attack", a.plugin)
            attack = construct(spec.factory, resolved.attack_params[a.name], Context(registry=registry))
            # the instance's kind: a wrapper (e.g. transfer) takes the kind of the attack it wraps
            eps_list = suite.eps_for(attack.norm) if attack.kind == "bounded" else [None]
            for eps in eps_list:
                cells.append({"model": m, "attack": a, "spec": spec, "norm": attack.norm, "eps": eps, "kind": attack.kind})
    return cells


def cell_key(resolved: Resolved, c: dict[str, Any], model_keys: dict[str, str]) -> str:
    a = c["attack"]
    s = resolved.suite
    return stable_hash({
        "suite": s.name,
        "dataset": {k: v for k, v in s.dataset.model_dump(mode="json").items() if k != "limit"},
        # Names too: two entries with the same configuration are two rows of the leaderboard.
        "model_name": c["model"].name,
        "attack_name": a.name,
        "model": model_keys[c["model"].name],
        "attack": a.plugin,
        "attack_version": plugin_version(c["spec"]),
        # suite paths relative to the suite's folder, so a key does not depend on where it lies
        "attack_params": key_view(resolved.attack_params[a.name], suite_folder(resolved)),
        "eps": c["eps"],
        "source": model_keys.get(a.source) if a.source else None,
        # the zoo's CPU weights attacked on another device type (robench.models.ModelKeys)
        **({"run_device": run_devices[c["model"].name]} if c["model"].name in (run_devices := getattr(model_keys, "run_devices", {})) else {}),
        "seed": s.seed,
        "batch_size": a.batch_size or s.batch_size,
        # Only when set, so the keys of unbudgeted cells (every store before budgets) are unchanged.
        **({"budget": s.budget_for(a)} if s.budget_for(a) else {}),
        **({"curves": True} if s.curves else {}),  # tracking can improve a result (its best-so-far is kept)
        # Content, not names: the bytes of files the attack or the dataset reads (only when there are any).
        **_file_digests(resolved, c["spec"].factory, resolved.attack_params[a.name]),
    })


def _file_digests(resolved: Resolved, attack_factory: type, attack_params: Any) -> dict[str, Any]:
    """SHA-256 of the suite files (``robench_path: "suite"``) an attack's or the dataset's
    parameters name, and of an attack's ``content_files``."""
    base = suite_folder(resolved)
    out = {}
    for field, params, factory in (("attack_files", attack_params, attack_factory), ("dataset_files", resolved.dataset_params, None)):
        if params is None:
            continue
        suite_fields = {name for name, kind, _ in path_fields(params) if kind == SUITE}
        digests = {k: v for k, v in content_digests(params, factory, base=base).items()
                   if k.startswith("file:") or k.split("[")[0] in suite_fields}
        if digests:
            out[field] = digests
    return out


def cell_label(c: dict[str, Any]) -> str:
    """How a cell is named in progress output and errors: ``model / attack @ norm eps``."""
    eps = c["eps"]
    return f"{c['model'].name} / {c['attack'].name}" + (f" @ {c['norm']} {eps:g}" if eps is not None else "")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 1 <= i <= n (``"cells:i/n"``: see :func:`shard_unit`)."""
    try:
        i, n = (int(part) for part in text.removeprefix("cells:").split("/"))
    except ValueError:
        raise UserInputError(f"--shard must look like i/n or cells:i/n (e.g. 1/4), not {text!r}") from None
    if not 1 <= i <= n:
        raise UserInputError(f"--shard {text}: need 1 <= i <= n")
    return i, n


def shard_unit(text: str) -> str:
    """What ``--shard`` splits: ``"samples"`` (``i/n``) or ``"cells"`` (``cells:i/n``)."""
    return "cells" if text.startswith("cells:") else "samples"


def shard_positions(n_samples: int, block: int, shard: tuple[int, int]) -> list[int]:
    """Share i of n of the evaluation samples (positions 0..n_samples-1): blocks of ``block`` (the
    suite's batch_size) dealt round-robin, so a shard's batches are the unsharded run's batches (the
    same rows, also for randomised attacks) and a larger --limit keeps every sample in its shard."""
    i, n = shard
    return [p for p in range(n_samples) if (p // block) % n == i - 1]


def select_shard(cells: list, shard: tuple[int, int] | None) -> list:
    """Share i of n: the suite's cells dealt round-robin in plan order, so shards differ by at most one cell."""
    if shard is None:
        return cells
    i, n = shard
    return cells[i - 1 :: n]
