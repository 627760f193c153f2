"""What a run records about where its numbers came from: versions, plugins, device, host, commit."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any

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
