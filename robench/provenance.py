"""What a run records about where its numbers came from: versions, plugins, device, host, commit."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from . import __version__
from .plugins import Registry, plugin_version
from .suite import Resolved


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(resolved: Resolved, registry: Registry, device: torch.device) -> dict[str, Any]:
    s = resolved.suite
    used = {("dataset", s.dataset.name)} | {("model", m.plugin) for m in s.models} | {("attack", a.plugin) for a in s.attacks}
    versions: dict[str, Any] = {"robench": __version__, "torch": torch.__version__, "numpy": np.__version__,
                                "python": platform.python_version()}
    try:
        import importlib.metadata as md

        for dist in ("foolbox", "adversarial-robustness-toolbox", "tensorflow", "larq"):
            try:
                versions[dist] = md.version(dist)
            except md.PackageNotFoundError:
                pass
    except ImportError:  # pragma: no cover
        pass
    return {
        "versions": versions,
        "plugins": {f"{k}:{n}": plugin_version(registry.get(k, n)) for k, n in sorted(used)},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "host": platform.node(),
        "platform": platform.platform(),
        "seed": s.seed,
        "suite_hash": s.content_hash(),
        "suite_path": resolved.path,
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def run_cards(runs: list[dict]) -> Iterator[tuple[dict, str, dict]]:
    """(run, model name, card) for every model card the runs recorded in their provenance
    (``"models"``: the cards :class:`robench.models.ModelPool` writes), in run order; the
    provenance may be a dict or its JSON text (a store row)."""
    for r in runs:
        prov = r.get("provenance")
        prov = json.loads(prov) if isinstance(prov, str) else prov
        for name, card in ((prov or {}).get("models") or {}).items():
            if isinstance(card, dict):
                yield r, name, card


def recorded_weights(runs: list[dict]) -> dict[tuple[str, str], dict[str, int]]:
    """(model name, model key) -> {weights SHA-256: the first run that recorded it}. Models without a
    weights file (complete at construction, no file) record no hash and are absent."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for r, name, card in run_cards(runs):
        if card.get("weights_sha256") and card.get("key"):
            out.setdefault((name, card["key"]), {}).setdefault(card["weights_sha256"], r["id"])
    return out


def weights_mismatch(model: str, card: dict, recorded: dict[tuple[str, str], dict[str, int]]) -> str | None:
    """Why the weights this run loaded for ``model`` (its card) may not be attacked into this store: they
    are not the weights its stored results were computed on. None when they are, or nothing is recorded.

    Training is deterministic on one machine but not across CPUs (BLAS kernels round differently), so a
    model retrained elsewhere is another model under the same name and key; its results must not be
    stored beside the first one's (the board would show cells of two networks as one)."""
    known = recorded.get((model, card.get("key"))) or {}
    sha = card.get("weights_sha256")
    if not sha or not known or sha in known:
        return None
    other, run_id = next(iter(known.items()))
    return (f"model {model}: its weights ({card.get('weights_origin', 'loaded')}, SHA-256 {sha[:12]}) are not the weights the "
            f"results already stored for it were computed on ({other[:12]}, run {run_id} of this store); robench does not mix "
            "results of two weight files under one model. Attack the original weights (their file in the cache, or in the "
            "model zoo: docs/zoo.md), or run into a new --out")
